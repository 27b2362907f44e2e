//! The one error type requests can end in, and its mapping to a status code and the JSON body
//! `{"error": kind, "message": text}` that docs/API.md promises.
//!
//! Messages name what went wrong and why, never an absolute server path, a token or a body.
//!
//! The answers the HTTP layer defines itself (a body that broke, a server out of a resource)
//! are carried as its [`Refusal`], whole: their status, kind, message and `Retry-After` are
//! chosen in `http/refusal.rs` alone, so a handler that meets one answers exactly as the HTTP
//! layer would, and changing one of those statuses means knowing one file.

use crate::app::auth::{Denial, Grant, OUT_OF_SCOPE};
use crate::app::digest_fields::{WANT_DIGEST, WANT_REPR_DIGEST};
use crate::http::{BodyError, Overload, Refusal, Response};
use crate::path::{PathError, RelPath};
use crate::storage::StorageError;
use crate::storage::digest::Refused;
use std::fmt;

/// `Retry-After` of a write refused by the replica guard ([`Error::Standby`]), in seconds: a
/// few of its checks, after which the load balancer may have moved the client elsewhere.
const STANDBY_RETRY_SECS: u64 = 5;

/// Everything a request can fail with.
#[derive(Debug)]
pub enum Error {
    /// The path is malformed or unsafe.
    BadPath(PathError),
    /// The request is malformed (a header or a move body).
    BadRequest { message: String },
    /// An answer the HTTP layer defines ([`Refusal`]): a request body that broke (ended early,
    /// bad chunking, too large, too slow), or a server out of a resource for now (file
    /// descriptors, a lock held too long). Its status, kind, message and headers are chosen
    /// there, once.
    Refused(Refusal),
    /// A token is configured and the request has none, a wrong one, or a header that is not
    /// a token's form: which one, so the message says what to fix.
    Unauthorized(Denial),
    /// Access is refused: a write with the read-only token, or a symlink out of the root.
    Forbidden { message: &'static str },
    /// A scoped token used on `path`, outside its `directories` (as [`Grant::directories`]
    /// shows them); `symlink` when the path as spelled is inside but a symlink leads out.
    ///
    /// [`Grant::directories`]: crate::app::auth::Grant::directories
    OutOfScope {
        path: String,
        directories: String,
        symlink: bool,
    },
    /// No such file or directory.
    NotFound,
    /// A path spelled with a trailing `/` (a directory only) names a file: answered like
    /// [`Error::NotFound`], with a message, for a JSON client, saying to drop the `/`.
    FileNotDirectory { path: String },
    /// A concatenation's source `path` does not exist: answered 404 with a JSON body naming it
    /// (a new operation, so no client compares its body with the seed's `Not Found`).
    MissingSource { path: String },
    /// No route has this URL (a typo such as `/files/x`): answered like [`Error::NotFound`],
    /// with a message, for a JSON client, naming the URLs that exist.
    NoSuchUrl,
    /// The URL does not take this method.
    MethodNotAllowed { allow: &'static str },
    /// The target is in the wrong state: a directory where a file is needed, or the reverse.
    /// `path` is the path at fault when it is not the request's own (a move's target).
    Conflict { message: String, path: Option<String> },
    /// The name is a FIFO, socket or device (made by another writer of the volume): only
    /// regular files and directories are served.
    NotRegularFile,
    /// An append's `Upload-Offset` differs from the file's size.
    OffsetMismatch { current: u64 },
    /// A precondition (`If-None-Match: *`) failed.
    PreconditionFailed { message: &'static str },
    /// The requested byte range lies outside a file of `size` bytes.
    RangeNotSatisfiable { size: u64 },
    /// The storage volume is full.
    InsufficientStorage,
    /// The storage volume is mounted read-only.
    ReadOnlyStorage,
    /// The storage is not ready (readiness probe).
    Unavailable { message: String },
    /// This replica refuses writes for now (another replica is live beside client caches that
    /// make that unsafe): a 503 with `Retry-After`.
    Standby { message: String },
    /// Something failed on our side.
    Internal { message: String },
    /// A write's digest fields were refused (RFC 9530): a mismatch, only unknown algorithms,
    /// or a malformed value; nothing was stored.
    Digest(Refused),
}

impl Error {
    /// The server is out of a resource for now; the client may retry shortly (a 503 with
    /// `Retry-After`, as the HTTP layer answers when it is full).
    pub fn busy(message: &'static str) -> Self {
        Error::Refused(Refusal::Overloaded(Overload::Exhausted(message)))
    }

    /// A storage error met acting on `path` (the request's path, or a move's target): where a
    /// directory or a file is in the way, the message names the path and what to do, and the
    /// JSON body's `path` field names it.
    pub fn at(path: &RelPath, e: StorageError) -> Self {
        match e {
            StorageError::IsADirectory => Error::Conflict {
                message: format!(
                    "{e}: {path} is a directory where a file is needed; name a file (such as {path}/NAME)"
                ),
                path: Some(path.to_string()),
            },
            StorageError::NotADirectory => Error::Conflict {
                message: format!("{e}: a parent of {path} is a file; name a path whose parents are directories"),
                path: Some(path.to_string()),
            },
            e => Error::from(e).with_path(path),
        }
    }

    /// A path `grant` does not reach (the path as spelled).
    pub fn out_of_scope(path: &RelPath, grant: &Grant<'_>) -> Self {
        Error::OutOfScope {
            path: shown(path),
            directories: grant.directories().unwrap_or_default(),
            symlink: false,
        }
    }

    /// This error, if it is the storage's refusal of a path out of `grant`'s scope (a symlink
    /// leading out), naming `path` (the request's) and the directories the token reaches.
    pub fn in_scope_of(self, path: Option<&RelPath>, grant: &Grant<'_>) -> Self {
        match (self, path, grant.directories()) {
            (Error::Forbidden { message }, Some(path), Some(directories)) if message == OUT_OF_SCOPE => {
                Error::OutOfScope {
                    path: shown(path),
                    directories,
                    symlink: true,
                }
            }
            (e, _, _) => e,
        }
    }

    /// This error with `path` as the path at fault, if it is a conflict that names none yet.
    pub fn with_path(self, at: &RelPath) -> Self {
        match self {
            Error::Conflict { message, path: None } => Error::Conflict {
                message,
                path: Some(at.to_string()),
            },
            e => e,
        }
    }

    /// The path the JSON body's `path` field names: the one this error carries, else
    /// `request_path` (the path the request named), for a missing path (404) and a path in
    /// the wrong state (409) only.
    fn path_field(&self, request_path: Option<&RelPath>) -> Option<String> {
        match self {
            Error::FileNotDirectory { path }
            | Error::Conflict { path: Some(path), .. }
            | Error::MissingSource { path } => Some(path.clone()),
            Error::NotFound | Error::Conflict { .. } | Error::NotRegularFile | Error::OffsetMismatch { .. } => {
                request_path.filter(|p| !p.is_root()).map(RelPath::to_string)
            }
            _ => None,
        }
    }

    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::Refused(refusal) => refusal.status(),
            Error::BadPath(_) | Error::BadRequest { .. } | Error::Digest(_) => 400,
            Error::Unauthorized(_) => 401,
            Error::Forbidden { .. } | Error::OutOfScope { .. } => 403,
            Error::NotFound | Error::FileNotDirectory { .. } | Error::NoSuchUrl | Error::MissingSource { .. } => 404,
            Error::MethodNotAllowed { .. } => 405,
            Error::Conflict { .. } | Error::NotRegularFile | Error::OffsetMismatch { .. } => 409,
            Error::PreconditionFailed { .. } => 412,
            Error::RangeNotSatisfiable { .. } => 416,
            Error::InsufficientStorage | Error::ReadOnlyStorage => 507,
            Error::Unavailable { .. } | Error::Standby { .. } => 503,
            Error::Internal { .. } => 500,
        }
    }

    /// The machine-readable kind in the JSON body.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Refused(refusal) => refusal.kind(),
            Error::BadPath(_) => "bad_path",
            Error::BadRequest { .. } => "bad_request",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden { .. } | Error::OutOfScope { .. } => "forbidden",
            Error::NotFound | Error::FileNotDirectory { .. } | Error::NoSuchUrl | Error::MissingSource { .. } => {
                "not_found"
            }
            Error::MethodNotAllowed { .. } => "method_not_allowed",
            Error::Conflict { .. } => "conflict",
            Error::NotRegularFile => "not_regular_file",
            Error::OffsetMismatch { .. } => "offset_mismatch",
            Error::PreconditionFailed { .. } => "precondition_failed",
            Error::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            Error::InsufficientStorage => "insufficient_storage",
            Error::ReadOnlyStorage => "read_only_storage",
            Error::Unavailable { .. } | Error::Standby { .. } => "unavailable",
            Error::Internal { .. } => "internal",
            Error::Digest(Refused::Mismatch(_)) => "digest_mismatch",
            Error::Digest(Refused::Unsupported(_) | Refused::UnsupportedRepr(_)) => "unsupported_digest",
            Error::Digest(Refused::Malformed(_)) => "bad_request",
        }
    }

    /// The error as a response, with the headers its status calls for. A 404 is the seed's
    /// exact `text/plain` body `Not Found` (Express's `sendStatus(404)`, which clients compare
    /// with), unless `wants_json` (the request's `Accept` names `application/json`).
    pub fn into_response(self, wants_json: bool) -> Response {
        self.into_response_at(wants_json, None)
    }

    /// [`into_response`](Self::into_response) for a request that named `request_path`: a 404
    /// or 409 JSON body then also names the path at fault, as `{"error", "message", "path"}`
    /// (the contract's body with one more field).
    pub fn into_response_at(self, wants_json: bool, request_path: Option<&RelPath>) -> Response {
        if matches!(
            self,
            Error::NotFound | Error::FileNotDirectory { .. } | Error::NoSuchUrl | Error::MissingSource { .. }
        ) && !wants_json
        {
            return Response::text(404, "Not Found");
        }
        if let Error::Refused(refusal) = self {
            let resp = refusal.response();
            // After a broken body the connection's framing is unknown: close it.
            return if matches!(refusal, Refusal::Body(_)) {
                resp.closing()
            } else {
                resp
            };
        }
        let resp = match self.path_field(request_path) {
            Some(path) => Response::json(
                self.status(),
                &serde_json::json!({ "error": self.kind(), "message": self.to_string(), "path": path }),
            ),
            None => Response::error(self.status(), self.kind(), &self.to_string()),
        };
        match &self {
            Error::MethodNotAllowed { allow } => resp.with_header("Allow", *allow),
            Error::OffsetMismatch { current } => resp.with_header("Upload-Offset", current.to_string()),
            Error::Unauthorized(_) => resp.with_header("WWW-Authenticate", "Bearer realm=\"http-nas\""),
            Error::RangeNotSatisfiable { size } => resp.with_header("Content-Range", format!("bytes */{size}")),
            Error::Digest(Refused::Unsupported(_)) => resp.with_header("Want-Content-Digest", WANT_DIGEST),
            // Want-Repr-Digest as RFC 9530 §4 pairs it with Repr-Digest; Want-Content-Digest
            // too, as the contract (docs/API.md) promises it for every unsupported digest.
            Error::Digest(Refused::UnsupportedRepr(_)) => resp
                .with_header("Want-Repr-Digest", WANT_REPR_DIGEST)
                .with_header("Want-Content-Digest", WANT_DIGEST),
            Error::Standby { .. } => resp.with_header("Retry-After", STANDBY_RETRY_SECS.to_string()),
            _ => resp,
        }
    }
}

/// A path as a message names it: the root as `/`, which would otherwise show as nothing.
fn shown(path: &RelPath) -> String {
    if path.is_root() {
        "/".to_string()
    } else {
        path.to_string()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadPath(e) => write!(f, "{e}"),
            Error::BadRequest { message } => write!(f, "{message}"),
            Error::Digest(
                Refused::Mismatch(m) | Refused::Unsupported(m) | Refused::UnsupportedRepr(m) | Refused::Malformed(m),
            ) => write!(f, "{m}"),
            Error::Refused(refusal) => write!(f, "{refusal}"),
            Error::Unauthorized(Denial::Missing) => write!(
                f,
                "a valid bearer token is required: send it as the header `Authorization: Bearer <token>`"
            ),
            Error::Unauthorized(Denial::NotAccepted) => write!(
                f,
                "this token is not accepted here (check for a typo or an old token): send the current \
                 token this service's operator gave you, as the header `Authorization: Bearer <token>`"
            ),
            Error::Unauthorized(Denial::Malformed) => write!(
                f,
                "the Authorization header must be `Bearer <token>` (or `Basic` with the token as the \
                 password, as a browser's login sends it); this one is neither, so no token was read"
            ),
            Error::Forbidden { message } => write!(f, "{message}"),
            Error::OutOfScope {
                path,
                directories,
                symlink: false,
            } => write!(
                f,
                "`{path}` is outside this token's directories: {directories} ({OUT_OF_SCOPE}); \
                 name a path under one of them, or use a token that reaches `{path}`"
            ),
            Error::OutOfScope {
                path,
                directories,
                symlink: true,
            } => write!(
                f,
                "`{path}` leads through a symlink outside this token's directories: {directories} \
                 ({OUT_OF_SCOPE}); name a path under one of them, or use a token that reaches \
                 where the link points"
            ),
            Error::NotFound => write!(f, "no such file or directory"),
            Error::FileNotDirectory { path } => write!(
                f,
                "`{path}` is a file, not a directory (leave out the trailing /): a path ending in / \
                 names a directory only"
            ),
            Error::MissingSource { path } => write!(
                f,
                "the source `{path}` does not exist; name only files that are on the volume (nothing was written)"
            ),
            Error::NoSuchUrl => write!(
                f,
                "no such URL: files and directories are under /file/{{path}} (GET / lists every entry point)"
            ),
            Error::MethodNotAllowed { allow } => write!(f, "method not allowed here; allowed: {allow}"),
            Error::Conflict { message, .. } => write!(f, "{message}"),
            Error::NotRegularFile => write!(
                f,
                "not a regular file or directory (a FIFO, socket or device): only those are served"
            ),
            Error::OffsetMismatch { current } => {
                write!(
                    f,
                    "Upload-Offset does not match the file's current size of {current} bytes"
                )
            }
            Error::PreconditionFailed { message } => write!(f, "{message}"),
            Error::RangeNotSatisfiable { size } => write!(f, "the range is outside the file's {size} bytes"),
            Error::InsufficientStorage => write!(f, "no space left on the storage volume"),
            Error::ReadOnlyStorage => write!(f, "{}", StorageError::ReadOnly),
            Error::Unavailable { message } | Error::Standby { message } => write!(f, "{message}"),
            Error::Internal { message } => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<PathError> for Error {
    fn from(e: PathError) -> Self {
        Error::BadPath(e)
    }
}

impl From<BodyError> for Error {
    fn from(e: BodyError) -> Self {
        Error::Refused(Refusal::Body(e))
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::BadPath(p) => Error::BadPath(p),
            StorageError::OutsideRoot => Error::Forbidden {
                message: "path leads outside the storage root through a symlink",
            },
            StorageError::OutOfScope => Error::Forbidden { message: OUT_OF_SCOPE },
            StorageError::NotFound => Error::NotFound,
            StorageError::IsADirectory
            | StorageError::NotADirectory
            | StorageError::MoveIntoSelf
            | StorageError::SameFile
            | StorageError::SourceIsTarget
            | StorageError::MoveBelowFile { .. }
            | StorageError::NoTargetDir { .. } => Error::Conflict {
                message: e.to_string(),
                path: None,
            },
            StorageError::MoveTooDeep { .. } => Error::BadRequest { message: e.to_string() },
            StorageError::ReadOnly => {
                log::warn!("the storage volume is read-only: answering 507");
                Error::ReadOnlyStorage
            }
            StorageError::Exists => Error::PreconditionFailed {
                message: "the file already exists (If-None-Match: *)",
            },
            StorageError::VersionMismatch => Error::PreconditionFailed {
                message: "the file changed (If-Match does not match its ETag)",
            },
            StorageError::ModifiedSince => Error::PreconditionFailed {
                message: "the file changed after the If-Unmodified-Since date",
            },
            StorageError::UnchangedVersion => Error::PreconditionFailed {
                message: "the file is still a version If-None-Match lists",
            },
            StorageError::NotRegular => Error::NotRegularFile,
            StorageError::InSource { error, .. } => Error::from(*error),
            StorageError::PermissionDenied => Error::Forbidden {
                message: "permission denied on the storage volume",
            },
            StorageError::OffsetMismatch { current } => Error::OffsetMismatch { current },
            StorageError::NoSpace => Error::InsufficientStorage,
            StorageError::Exhausted => {
                log::warn!("out of file descriptors or memory: answering 503");
                Error::busy("the server is out of file descriptors for now; retry shortly")
            }
            StorageError::Locked => Error::busy(
                "the file is locked by another request or replica (frozen or cut off?) for longer than \
                 --lock-timeout; retry shortly",
            ),
            // Nobody reads this answer; it is logged and counted.
            StorageError::ClientGone => Error::Unavailable { message: e.to_string() },
            StorageError::RootGone => {
                log::error!("{e}");
                Error::Unavailable { message: e.to_string() }
            }
            StorageError::RootRefused => Error::BadPath(PathError::Empty),
            StorageError::Digest(refused) => Error::Digest(refused),
            StorageError::Source(io) => BodyError::of(&io)
                .unwrap_or(BodyError::Incomplete { received: 0 })
                .into(),
            StorageError::Io(io) => {
                log::error!("storage I/O error: {io}");
                Error::Internal {
                    message: format!("storage error: {}", io.kind()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_kinds() {
        let cases: Vec<(Error, u16, &str)> = vec![
            (Error::BadPath(PathError::DotSegment), 400, "bad_path"),
            (Error::from(BodyError::Incomplete { received: 3 }), 400, "bad_body"),
            (Error::from(BodyError::TooLarge { limit: 9 }), 413, "too_large"),
            (Error::from(StorageError::NoSpace), 507, "insufficient_storage"),
            (Error::from(StorageError::ReadOnly), 507, "read_only_storage"),
            (Error::from(StorageError::MoveTooDeep { limit: 9 }), 400, "bad_request"),
            (Error::from(StorageError::OutsideRoot), 403, "forbidden"),
            (
                Error::from(StorageError::OffsetMismatch { current: 4 }),
                409,
                "offset_mismatch",
            ),
            (Error::from(StorageError::Exists), 412, "precondition_failed"),
            (Error::from(StorageError::NotRegular), 409, "not_regular_file"),
            (Error::from(StorageError::Exhausted), 503, "overloaded"),
            (Error::from(StorageError::Locked), 503, "overloaded"),
            (Error::MethodNotAllowed { allow: "GET" }, 405, "method_not_allowed"),
        ];
        for (err, status, kind) in cases {
            assert_eq!((err.status(), err.kind()), (status, kind), "{err:?}");
        }
    }

    #[test]
    fn headers_for_statuses() {
        let resp = Error::OffsetMismatch { current: 7 }.into_response(false);
        assert_eq!(resp.header("Upload-Offset"), Some("7"));
        let resp = Error::MethodNotAllowed { allow: "GET, HEAD" }.into_response(false);
        assert_eq!(resp.header("Allow"), Some("GET, HEAD"));
        let resp = Error::from(StorageError::Exhausted).into_response(false);
        assert_eq!((resp.status, resp.header("Retry-After")), (503, Some("1")));
        let resp = Error::from(StorageError::Locked).into_response(false);
        assert_eq!((resp.status, resp.header("Retry-After")), (503, Some("1")));
        let resp = Error::from(BodyError::TimedOut {
            received: 1,
            expected: None,
        })
        .into_response(false);
        assert!(resp.close, "after a broken body the connection closes");
    }
}
