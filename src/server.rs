//! Wiring: opens the storage, sweeps crash leftovers, builds the application and starts the
//! HTTP server with the configured limits.

use crate::auth::Tokens;
use crate::config::Config;
use crate::handlers::App;
use crate::http::{HttpConfig, Server, Stats};
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
    let app = App::new(storage, tokens, Arc::clone(&stats));
    let http = HttpConfig {
        workers: config.workers,
        queue: config.queue,
        max_connections: config.max_connections,
        idle_timeout: config.idle_timeout,
        head_timeout: config.head_timeout,
        io_timeout: config.io_timeout,
        max_body: config.max_body,
        liveness_target: Some("/healthz"),
    };
    let server = Server::start(&config.listen, http, Arc::new(app), stats).map_err(|source| StartError::Listen {
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
