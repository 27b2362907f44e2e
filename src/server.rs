//! Wiring: opens the storage, sweeps crash leftovers, builds the application and starts the
//! HTTP server with the configured limits.

use crate::auth::Tokens;
use crate::config::Config;
use crate::handlers::App;
use crate::http::{HttpConfig, Server, Stats};
use crate::probes;
use crate::storage::Storage;
use std::fmt;
use std::sync::Arc;

/// Why the service could not start.
#[derive(Debug)]
pub enum StartError {
    /// The storage root is missing, not a directory, or not writable.
    Storage { root: String, source: std::io::Error },
    /// The listen address could not be bound.
    Listen { addr: String, source: std::io::Error },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Storage { root, source } => {
                write!(
                    f,
                    "storage root {root} must be an existing, writable directory: {source}"
                )
            }
            StartError::Listen { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
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

/// Starts the service described by `config`.
pub fn start(config: &Config) -> Result<Server, StartError> {
    let root = config.storage.display().to_string();
    let storage =
        Storage::open(&config.storage, config.fsync).map_err(|source| StartError::Storage { root, source })?;
    let removed = storage.sweep();
    if removed > 0 {
        log::warn!("removed {removed} temp file(s) left by an interrupted upload");
    }
    let stats = Arc::new(Stats::default());
    let tokens = Tokens::new(config.token.clone(), config.read_token.clone());
    let auth = if tokens.enabled() {
        "bearer tokens required"
    } else {
        "open (no token set)"
    };
    let app = Arc::new(App::new(storage, tokens, Arc::clone(&stats)));
    app.check_storage();
    start_storage_checker(Arc::clone(&app));
    let http = HttpConfig {
        workers: config.workers,
        queue: config.queue,
        queue_timeout: config.queue_timeout,
        max_connections: config.max_connections,
        idle_timeout: config.idle_timeout,
        head_timeout: config.head_timeout,
        io_timeout: config.io_timeout,
        max_body: config.max_body,
    };
    let server = Server::start(&config.listen, http, app, stats).map_err(|source| StartError::Listen {
        addr: config.listen.clone(),
        source,
    })?;
    log::info!(
        "listening on {} storage={} workers={} queue={} fsync={} access={auth}",
        server.local_addr(),
        config.storage.display(),
        config.workers,
        config.queue,
        config.fsync
    );
    Ok(server)
}
