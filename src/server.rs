//! Wiring: opens the storage, sweeps crash leftovers, builds the application and starts the
//! HTTP server with the configured limits.

use crate::app::App;
use crate::app::auth::Tokens;
use crate::app::auth::browser::BrowserRules;
use crate::app::probes;
use crate::config::Config;
use crate::http::{HttpConfig, Server, Stats};
use crate::storage::Storage;
use std::fmt;
use std::sync::Arc;

/// Why the service could not start.
#[derive(Debug)]
pub enum StartError {
    /// The storage root is missing, not a directory, or not writable. `setting` names where
    /// the root was given (`--storage`, or `STORAGE_PATH (--storage)`).
    Storage {
        root: String,
        setting: String,
        source: std::io::Error,
    },
    /// The listen address could not be bound.
    Listen { addr: String, source: std::io::Error },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Storage { root, setting, source } => {
                write!(
                    f,
                    "storage root {root} from {setting} must be an existing, writable directory: {source}"
                )?;
                if self.is_misconfigured() {
                    write!(
                        f,
                        "; set {setting} to the directory the volume is mounted on, or create it first"
                    )?;
                }
                Ok(())
            }
            StartError::Listen { addr, source } => write!(f, "cannot listen on {addr} (--listen): {source}"),
        }
    }
}

impl StartError {
    /// True when the settings are at fault rather than the system: a storage root that does not
    /// exist or is not a directory (a typo, a volume not mounted where it was said to be).
    pub fn is_misconfigured(&self) -> bool {
        match self {
            StartError::Storage { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ),
            StartError::Listen { .. } => false,
        }
    }
}

impl std::error::Error for StartError {}

/// Runs [`App::check_storage`] every [`probes::CHECK_INTERVAL`] on a thread of its own, for
/// the life of the process: the probes answer from what it finds, so a hung volume stalls this
/// thread, never a probe.
fn start_storage_checker(app: Arc<App>) {
    let spawned = std::thread::Builder::new()
        .name("http-nas-checker".into())
        .spawn(move || {
            loop {
                std::thread::sleep(probes::CHECK_INTERVAL);
                app.check_storage();
            }
        });
    if let Err(e) = spawned {
        log::error!("could not start the storage checker (readiness will fail): {e}");
    }
}

/// Runs retention passes ([`App::expire`]) on a thread of its own, one every `interval`, for
/// the life of the process; the first right away. Never on a worker: a pass over a large tree
/// or a slow volume delays only the next pass.
fn start_retention(app: Arc<App>, rules: Vec<crate::storage::expire::Rule>, interval: std::time::Duration) {
    use crate::storage::expire::TEMP_WALK_EVERY;
    let spawned = std::thread::Builder::new()
        .name("http-nas-expire".into())
        .spawn(move || {
            for pass in 0u64.. {
                app.expire(&rules, pass % TEMP_WALK_EVERY == 0);
                std::thread::sleep(interval);
            }
        });
    if let Err(e) = spawned {
        log::error!("could not start the retention thread (--expire does nothing): {e}");
    }
}

/// Descriptors a request in service may hold at once beyond its socket (the socket's clone for
/// shutdown, the file, directory handles of a walk, a temp file, a crash record).
const FDS_PER_REQUEST: u64 = 8;
/// Descriptors the process holds whatever the load (root, listener, wake pipe, logs...).
const FDS_BASE: u64 = 64;

/// `--max-connections`, lowered (with a warning) to what the descriptor limit can carry with
/// every worker busy, so that running out of descriptors is not how the limit is found; the
/// soft limit is raised to the hard one first.
fn connection_budget(config: &Config) -> usize {
    let limit = match crate::sys::raise_fd_limit() {
        Ok(limit) => limit,
        Err(e) => {
            log::warn!("cannot read the open-file limit ({e}); keeping --max-connections");
            return config.max_connections;
        }
    };
    let reserved = FDS_BASE + config.workers as u64 * FDS_PER_REQUEST + crate::http::PROBE_RESERVE as u64;
    let budget = usize::try_from(limit.saturating_sub(reserved))
        .unwrap_or(usize::MAX)
        .max(1);
    if config.max_connections > budget {
        log::warn!(
            "--max-connections {} lowered to {budget}: the open-file limit is {limit}, and {reserved} \
             descriptors are kept for {} busy workers (raise `ulimit -n` or lower --workers)",
            config.max_connections,
            config.workers
        );
        return budget;
    }
    config.max_connections
}

/// Starts the service described by `config`.
pub fn start(config: &Config) -> Result<Server, StartError> {
    // Bound first: an address that cannot be had stops the service before the sweep and the
    // storage check touch the volume.
    let listen_error = |source| StartError::Listen {
        addr: config.listen.clone(),
        source,
    };
    let listener = std::net::TcpListener::bind(&config.listen).map_err(listen_error)?;
    let storage = Storage::open(&config.storage, config.fsync).map_err(|source| StartError::Storage {
        root: config.storage.display().to_string(),
        setting: config.named("--storage"),
        source,
    })?;
    crate::storage::lock::set_timeout(config.lock_timeout);
    let volume = crate::volume::log_volume(storage.root());
    let removed = storage.sweep();
    if removed > 0 {
        log::warn!("start-up sweep: settled {removed} leftover(s) of interrupted uploads, appends and deletes");
    }
    // After the sweep, whose system calls fault-injection tests count.
    storage.probe_timestamps(volume.fuse);
    let stats = Arc::new(Stats::default());
    let tokens = Tokens::new(
        config.token.clone(),
        config.read_token.clone(),
        config.scoped_tokens.clone(),
    );
    let browser = BrowserRules::new(config.allowed_hosts.clone());
    if !browser.hosts_configured() {
        log::warn!(
            "--allowed-hosts (HTTP_NAS_ALLOWED_HOSTS) is not set: a web page using DNS rebinding can \
             still read files through a user's browser (only requests with browser markers are held to \
             IP addresses and localhost); set it to the names clients call this service by"
        );
    }
    let auth = if tokens.enabled() {
        "bearer tokens required"
    } else {
        "open (no token set)"
    };
    let mut app = App::new(storage, tokens, browser, Arc::clone(&stats));
    if let Some(juicefs) = volume.juicefs {
        app.guard_replicas(juicefs.hazard, juicefs.at_mount_root);
    }
    let app = Arc::new(app);
    app.check_storage();
    start_storage_checker(Arc::clone(&app));
    if !config.expire.is_empty() {
        for rule in &config.expire {
            log::info!(
                "retention: files under {}/ unmodified for {} s are deleted",
                rule.prefix,
                rule.age.as_secs()
            );
        }
        start_retention(Arc::clone(&app), config.expire.clone(), config.expire_interval);
    }
    let max_connections = connection_budget(config);
    let http = HttpConfig {
        workers: config.workers,
        queue: config.queue,
        queue_timeout: config.queue_timeout,
        max_connections,
        idle_timeout: config.idle_timeout,
        head_timeout: config.head_timeout,
        io_timeout: config.io_timeout,
        max_body: config.max_body,
    };
    let server = Server::start_on(listener, http, app, stats).map_err(listen_error)?;
    log::info!(
        "listening on {} storage={} workers={} queue={} max-connections={max_connections} fsync={} access={auth}",
        server.local_addr(),
        config.storage.display(),
        config.workers,
        config.queue,
        config.fsync
    );
    Ok(server)
}
