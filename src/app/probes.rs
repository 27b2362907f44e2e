//! The state the probes answer from, kept fresh off the request path.
//!
//! A probe must answer within the kubelet's timeout (1 s in the original's charts) whatever the
//! load: with every worker busy, the queue full, or the volume hung. So no probe touches the
//! disk itself. A checker thread looks at the storage every [`CHECK_INTERVAL`] (the root still
//! there, a file can be created and removed in it) and records the outcome here; the probes,
//! answered by the reactor from the request head alone, read it. A check that has not come back
//! for [`STALE_AFTER`] (a hung NFS server, say) counts as failed, so readiness never reports a
//! volume as fine because the last answer, long ago, was. [`answer`] is the probes' handler:
//! `/healthz`, `/readyz` and the seed's `GET /file`.

use super::App;
use super::error::Error;
use super::url::Op;
use crate::http::Response;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the checker looks at the storage.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// A last successful check older than this does not count.
pub const STALE_AFTER: Duration = Duration::from_secs(5);

/// What the last storage check found.
#[derive(Debug)]
pub struct ProbeState {
    started: Instant,
    /// Milliseconds after `started` of the last check that found the storage usable (0: none).
    writable_at_ms: AtomicU64,
    /// Whether the root was still the directory the service opened, at the last check.
    root_there: AtomicBool,
    /// Why the last check failed, if it did.
    failure: Mutex<Option<String>>,
    /// Why the service must not take requests even though the storage works (several replicas
    /// on a volume whose client caches make that unsafe), if it must not.
    refusal: Mutex<Option<String>>,
}

impl Default for ProbeState {
    fn default() -> Self {
        ProbeState {
            started: Instant::now(),
            writable_at_ms: AtomicU64::new(0),
            root_there: AtomicBool::new(false),
            failure: Mutex::new(Some("the storage has not been checked yet".into())),
            refusal: Mutex::new(None),
        }
    }
}

impl ProbeState {
    /// Records one check: whether the root is still there, and whether a file could be created
    /// and removed in it.
    pub fn record(&self, root_there: bool, writable: Result<(), String>) {
        self.root_there.store(root_there, Ordering::Relaxed);
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        match writable {
            Ok(()) => {
                let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
                self.writable_at_ms.store(now.max(1), Ordering::Relaxed);
                *failure = None;
            }
            Err(why) => {
                self.writable_at_ms.store(0, Ordering::Relaxed);
                *failure = Some(why);
            }
        }
    }

    /// Records why readiness must be refused however the storage is (`None`: it need not);
    /// logs each change.
    pub fn refuse(&self, why: Option<String>) {
        let mut refusal = self.refusal.lock().unwrap_or_else(|p| p.into_inner());
        match (&*refusal, &why) {
            (None, Some(why)) => log::error!("not ready: {why}"),
            (Some(_), None) => log::info!("ready again: the replica guard refuses no more"),
            _ => {}
        }
        *refusal = why;
    }

    /// Why readiness is refused however the storage is, if it is.
    pub fn refusal(&self) -> Option<String> {
        self.refusal.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// True while the root is still there (the original's `GET /file` answer).
    pub fn root_there(&self) -> bool {
        self.root_there.load(Ordering::Relaxed) && self.fresh()
    }

    /// `Ok` while the storage was found writable recently; else why not.
    pub fn writable(&self) -> Result<(), String> {
        if self.fresh() {
            return Ok(());
        }
        let failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        Err(failure.clone().unwrap_or_else(|| {
            format!(
                "the storage check has not come back for over {} s (a hung volume?)",
                STALE_AFTER.as_secs()
            )
        }))
    }

    fn fresh(&self) -> bool {
        let at = self.writable_at_ms.load(Ordering::Relaxed);
        let now = self.started.elapsed().as_millis();
        at > 0 && now.saturating_sub(u128::from(at)) <= STALE_AFTER.as_millis()
    }
}

/// The answer to a probe, from the state the checker keeps (never the disk); `None` for
/// any other operation.
pub(super) fn answer(app: &App, op: &Op) -> Option<Result<Response, Error>> {
    Some(match op {
        Op::Alive => Ok(Response::text(200, "ok")),
        Op::Ready => readiness(app),
        Op::StorageHealth if app.probes.root_there() => Ok(Response::text(200, "OK")),
        Op::StorageHealth => Err(Error::Unavailable {
            message: "the storage root is not a directory".into(),
        }),
        _ => return None,
    })
}

/// `/readyz`: the storage was found writable recently, and a new request would be taken
/// now (a worker is free or the queue has room) and not just wait (not every worker is
/// stuck waiting for a lock another replica holds, or copying a concatenation).
fn readiness(app: &App) -> Result<Response, Error> {
    app.probes
        .writable()
        .map_err(|message| Error::Unavailable { message })?;
    if let Some(message) = app.probes.refusal() {
        return Err(Error::Unavailable { message });
    }
    if !app.stats.pool.has_room() {
        return Err(Error::Unavailable {
            message: "every worker is busy and the queue is full".into(),
        });
    }
    let workers = app.stats.pool.workers.load(std::sync::atomic::Ordering::Relaxed);
    if crate::storage::lock::waiters() + crate::storage::concat::running() >= workers.max(1) {
        return Err(Error::Unavailable {
            message: "every worker is waiting for a file locked by another request or replica, or copying \
                      a concatenation"
                .into(),
        });
    }
    Ok(Response::text(200, "ready"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_check_is_reported_until_one_succeeds() {
        let state = ProbeState::default();
        assert!(state.writable().is_err(), "nothing checked yet");
        state.record(true, Ok(()));
        assert!(state.writable().is_ok() && state.root_there());
        state.record(false, Err("read-only file system".into()));
        assert_eq!(state.writable(), Err("read-only file system".into()));
        assert!(!state.root_there());
        state.record(true, Ok(()));
        assert!(state.writable().is_ok());
    }
}
