//! The application layer: what the service does with a request once `http` has read its head.
//! It sits between the two wings and is the only place they meet: [`url`] turns the method and
//! URL into an [`Op`] (pure, no disk), [`App::gate`] decides whether the head alone allows it
//! (host, cross-site, token, scope), and [`App::route`] hands it to the one handler function
//! that owns it, which calls one storage operation and returns a [`Response`] value (framing
//! is the HTTP layer's job). A handler's failure is an [`Error`], answered in one place.
//!
//! Adding a route touches [`url`] (its `Op`) and the one `match` in [`App::route`]; each
//! concern's handlers live in a file named after it: [`files`], [`listings`], [`writes`],
//! [`moves`], [`concat`], [`stat`], [`index`], [`probes`], [`metrics`].

pub mod auth;
mod concat;
pub mod conditional;
pub mod digest_fields;
pub mod error;
mod files;
mod index;
pub mod listings;
pub mod metrics;
mod moves;
pub mod probes;
pub mod range;
mod stat;
pub mod url;
mod writes;

use crate::http::{Exchange, Handler, Head, Request, Response, ResponseBody, Stats};
use crate::path::RelPath;
use crate::storage::Storage;
use auth::browser::{self, BrowserRules};
use auth::{Access, Denial, Grant, Tokens};
use error::Error;
use metrics::Metrics;
use probes::ProbeState;
use std::sync::Arc;
use url::{Op, OpKind};

/// Files and listings change under one URL: a cache may keep them but must ask (cheaply, by
/// ETag) before every use, so it never shows a version from before a write. A listing has no
/// validator (it is streamed as the directory is read, so nothing sums it up beforehand): a
/// cache then fetches it anew every time, which is what it must do.
const CACHE_CONTROL: &str = "no-cache";

/// The application: storage, tokens and metrics behind the HTTP layer.
pub struct App {
    storage: Storage,
    tokens: Tokens,
    browser: BrowserRules,
    metrics: Metrics,
    stats: Arc<Stats>,
    probes: ProbeState,
    /// This replica's presence on a JuiceFS volume, and why several replicas are unsafe on it,
    /// where they are: readiness and writes then wait for it to be the only live one.
    replica_guard: Option<crate::volume::ReplicaGuard>,
}

impl App {
    /// Creates the application over `storage`.
    pub fn new(storage: Storage, tokens: Tokens, browser: BrowserRules, stats: Arc<Stats>) -> Self {
        App {
            storage,
            tokens,
            browser,
            metrics: Metrics::default(),
            stats,
            probes: ProbeState::default(),
            replica_guard: None,
        }
    }

    /// Registers this replica's presence on the storage (every replica on JuiceFS does, so
    /// each sees the others) and, where `hazard` says why several are unsafe, makes readiness
    /// and writes refuse while another replica is live on it. At a JuiceFS mount's root, its
    /// `.trash` is not served.
    pub fn guard_replicas(&mut self, hazard: Option<String>, at_mount_root: bool) {
        if at_mount_root {
            self.storage.hide_at_root(crate::volume::JUICEFS_TRASH);
        }
        self.replica_guard = Some(crate::volume::ReplicaGuard::new(self.storage.root(), hazard));
    }

    /// Looks at the storage once and records what the probes should say (run by the checker
    /// thread every [`probes::CHECK_INTERVAL`], never on a request).
    pub fn check_storage(&self) {
        let writable = self.storage.check_writable().map_err(|e| {
            let why = format!("storage is not writable: {e}");
            log::warn!("{why}");
            why
        });
        self.probes.record(self.storage.root_is_dir(), writable);
        if let Some(guard) = &self.replica_guard {
            self.probes.refuse(guard.check());
        }
    }

    /// One retention pass over the storage (run by the retention thread, never on a request),
    /// counting what it removes in the metrics.
    pub fn expire(&self, rules: &[crate::storage::expire::Rule], temp_walk: bool) {
        self.storage.expire(rules, temp_walk, &mut |removed| {
            self.metrics.record_expired(removed.size)
        });
    }

    /// The operation a head asks for, if the head alone allows it: a parseable URL, a host
    /// this service serves, no write a browser marks as from another site, and, where tokens
    /// protect it, a token that may do it there. Also the operation's kind, whatever the
    /// outcome, so the answer (a 401 too) is counted under it; and the token's grant, for the
    /// checks only the body allows (a move's target).
    fn gate(&self, head: &Head) -> (Option<OpKind>, Result<(Op, Grant<'_>), Error>) {
        let op = match url::parse(&head.method, &head.target, head.header("content-type")) {
            Ok(op) => op,
            Err(e) => return (None, Err(e)),
        };
        let kind = Some(op.kind());
        let probe = matches!(op, Op::Alive | Op::Ready | Op::Metrics | Op::StorageHealth);
        if let Err(message) = self.browser.check(head, op.writes(), probe) {
            return (kind, Err(Error::Forbidden { message }));
        }
        if !op.needs_auth() {
            return (kind, Ok((op, Grant::everything())));
        }
        let authorization = head.header("authorization");
        let grant = self.tokens.check(authorization);
        match grant.access {
            Access::Denied => return (kind, Err(Error::Unauthorized(Denial::of(authorization)))),
            Access::ReadOnly if op.writes() => {
                let message = "the read-only token cannot write";
                return (kind, Err(Error::Forbidden { message }));
            }
            _ => {}
        }
        if let Some(path) = op_path(&op).filter(|path| !grant.reaches(path)) {
            return (kind, Err(Error::out_of_scope(path, &grant)));
        }
        if op_path(&op).is_some_and(|path| self.storage.is_hidden(path)) {
            let message = "the JuiceFS mount's own .trash is not served (deleted files are not the service's to show)";
            return (kind, Err(Error::Forbidden { message }));
        }
        (kind, Ok((op, grant)))
    }

    /// Every operation to the one function that answers it.
    fn route(&self, op: Op, grant: Grant<'_>, req: &mut Request<'_>) -> Result<Response, Error> {
        let head = req.head;
        if op.writes()
            && let Some(message) = self.probes.refusal()
        {
            // An unready replica still reached directly (its pod IP, a port-forward) must not
            // write: that is what its readiness guards.
            return Err(Error::Standby { message });
        }
        match op {
            Op::Alive | Op::Ready | Op::StorageHealth => probes::answer(self, &op).unwrap_or(Err(Error::NotFound)),
            Op::Read { path } => files::read(self, head, &path, grant),
            Op::LineCount { path } => stat::line_count(self, &path, grant, req),
            Op::Stat { path } => stat::stat(self, &path, grant),
            Op::Index => index::front_page(self, head),
            Op::Upload { path } => writes::upload(self, &path, grant, req),
            Op::Append { path } => writes::append(self, &path, grant, req),
            Op::Move { path } => moves::move_file(self, &path, grant, req),
            Op::Delete { path } => moves::delete(self, head, &path, grant),
            Op::Concat { path, append } => concat::concat(self, &path, append, grant, req),
            Op::Options { allow } => Ok(Response::new(204, ResponseBody::Empty).with_header("Allow", allow)),
            Op::Metrics => Ok(metrics::exposition(self)),
        }
    }
}

impl Handler for App {
    fn handle(&self, req: &mut Request<'_>) -> Response {
        let head = req.head;
        let (kind, op) = self.gate(head);
        // The path the request names, for an error body that names it (a 404, a 409).
        let path = op.as_ref().ok().and_then(|(op, _)| op_path(op)).cloned();
        let answer = op.and_then(|(op, grant)| {
            self.route(op, grant, req)
                .map_err(|e| e.in_scope_of(path.as_ref(), &grant))
        });
        labelled(kind, answer.unwrap_or_else(|e| refusal(e, head, path.as_ref())))
    }

    /// Probes, from the state the checker keeps; refusals a head alone decides (no such URL,
    /// no or a wrong token), so an unauthenticated client never holds a worker.
    fn answer_early(&self, head: &Head) -> Option<Response> {
        let (kind, op) = self.gate(head);
        let answer = match op {
            Err(e) => Err(e),
            Ok((op, _)) => probes::answer(self, &op)?,
        };
        Some(labelled(kind, answer.unwrap_or_else(|e| refusal(e, head, None))))
    }

    fn label(&self, head: &Head) -> Option<&'static str> {
        let op = url::parse(&head.method, &head.target, head.header("content-type")).ok()?;
        Some(op.kind().label())
    }

    fn completed(&self, x: &Exchange<'_>) {
        let op = x.label.and_then(OpKind::from_label);
        self.metrics.record(op, x.status, x.bytes_in, x.bytes_out, x.duration);
    }
}

/// `resp` labelled with the kind of operation it answered, if the URL named one.
fn labelled(kind: Option<OpKind>, resp: Response) -> Response {
    match kind {
        Some(kind) => resp.labelled(kind.label()),
        None => resp,
    }
}

/// An error as its response, naming `path` (the request's) where it is at fault; a 401 to a
/// browser is its login prompt (a Basic challenge).
fn refusal(e: Error, head: &Head, path: Option<&RelPath>) -> Response {
    match e {
        Error::Unauthorized(_) if wants_html(head) => browser::login_required(),
        e => e.into_response_at(wants_json(head), path),
    }
}

/// The path an operation reads, writes, lists or moves away, which a scoped token must reach.
fn op_path(op: &Op) -> Option<&RelPath> {
    match op {
        Op::Read { path }
        | Op::LineCount { path }
        | Op::Stat { path }
        | Op::Upload { path }
        | Op::Append { path }
        | Op::Move { path }
        | Op::Delete { path }
        | Op::Concat { path, .. } => Some(path),
        Op::StorageHealth | Op::Index | Op::Options { .. } | Op::Alive | Op::Ready | Op::Metrics => None,
    }
}

/// True when the client asked for HTML (a browser): directories then come as a browse page.
fn wants_html(head: &Head) -> bool {
    head.header("accept").is_some_and(|a| a.contains("text/html"))
}

/// True when the client asked for JSON (errors then come as JSON, 404s too).
fn wants_json(head: &Head) -> bool {
    head.header("accept").is_some_and(|a| a.contains("application/json"))
}
