//! Every answer the HTTP layer gives on its own, instead of the handler's: a head it cannot
//! parse, framing it will not read, a body that broke, a server too busy to take the request.
//!
//! One type, so each such answer's status code, machine-readable kind and message are chosen
//! in one place; `app/error.rs` reuses it for the body errors a handler meets while reading.

use super::Response;
use super::body::{BodyError, FramingError};
use super::head::HeadError;
use std::fmt;

/// Seconds a client is told to wait before retrying when the server is full (every 503 that
/// means "busy, try again").
pub const RETRY_AFTER_SECS: u32 = 1;

/// Why the HTTP layer refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The request head is malformed or too large.
    Head(HeadError),
    /// The head's body framing is refused (RFC 9112 §6.3).
    Framing(FramingError),
    /// The body broke while being read: ended early, bad chunking, too large, too slow.
    Body(BodyError),
    /// `Content-Length` announces a body over the limit: refused before reading it.
    DeclaredTooLarge { length: u64, limit: u64 },
    /// An `Expect` other than `100-continue`.
    Expectation,
    /// A head was started but not finished within the head timeout.
    HeadTimeout,
    /// The server cannot take this request now; the client may retry.
    Overloaded(Overload),
    /// A bug on our side (a panic) while answering.
    Internal,
}

/// What the server ran out of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overload {
    /// `--max-connections` (and the probe reserve) are all open.
    Connections,
    /// Every worker is busy and the queue is full.
    Workers,
    /// The request waited longer than `--queue-timeout` for a worker.
    QueueWait,
    /// A system resource (file descriptors, memory), with what it was.
    Exhausted(&'static str),
}

impl Refusal {
    /// The status code answering this refusal.
    pub fn status(self) -> u16 {
        match self {
            Refusal::Head(HeadError::TooLarge | HeadError::TooManyHeaders) => 431,
            Refusal::Head(HeadError::Version) => 505,
            Refusal::Head(HeadError::Malformed | HeadError::Host) => 400,
            Refusal::Framing(FramingError::UnsupportedCoding) => 501,
            Refusal::Framing(_) => 400,
            Refusal::Body(BodyError::TooLarge { .. }) | Refusal::DeclaredTooLarge { .. } => 413,
            Refusal::Body(BodyError::TimedOut { .. }) | Refusal::HeadTimeout => 408,
            Refusal::Body(_) => 400,
            Refusal::Expectation => 417,
            Refusal::Overloaded(_) => 503,
            Refusal::Internal => 500,
        }
    }

    /// The machine-readable kind in the JSON error body.
    pub fn kind(self) -> &'static str {
        match self {
            Refusal::Head(HeadError::TooLarge | HeadError::TooManyHeaders) => "head_too_large",
            Refusal::Head(HeadError::Version) => "version_not_supported",
            Refusal::Head(HeadError::Malformed | HeadError::Host) => "bad_request",
            Refusal::Framing(_) => "bad_framing",
            Refusal::Body(BodyError::TooLarge { .. }) | Refusal::DeclaredTooLarge { .. } => "too_large",
            Refusal::Body(BodyError::TimedOut { .. }) | Refusal::HeadTimeout => "timeout",
            Refusal::Body(_) => "bad_body",
            Refusal::Expectation => "expectation_failed",
            Refusal::Overloaded(_) => "overloaded",
            Refusal::Internal => "internal",
        }
    }

    /// The answer: `{"error": kind, "message": …}` with the status, and `Retry-After` where the
    /// client may simply retry. The caller closes the connection after it.
    pub fn response(self) -> Response {
        let resp = Response::error(self.status(), self.kind(), &self.to_string());
        match self {
            Refusal::Overloaded(_) => resp.with_header("Retry-After", RETRY_AFTER_SECS.to_string()),
            _ => resp,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Head(e) => write!(f, "{e}"),
            Refusal::Framing(e) => write!(f, "{e}"),
            Refusal::Body(e) => write!(f, "{e}"),
            Refusal::DeclaredTooLarge { length, limit } => {
                write!(
                    f,
                    "request body of {length} bytes is larger than the {limit}-byte limit"
                )
            }
            Refusal::Expectation => write!(f, "the only expectation this server meets is 100-continue"),
            Refusal::HeadTimeout => write!(f, "request head not received in time"),
            Refusal::Overloaded(Overload::Connections) => write!(f, "too many open connections"),
            Refusal::Overloaded(Overload::Workers) => write!(f, "all workers are busy; retry shortly"),
            Refusal::Overloaded(Overload::QueueWait) => {
                write!(f, "waited too long for a free worker; retry shortly")
            }
            Refusal::Overloaded(Overload::Exhausted(what)) => write!(f, "{what}"),
            Refusal::Internal => write!(f, "the server failed on this request"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::chunked::ChunkError;

    #[test]
    fn statuses_and_kinds() {
        let cases = [
            (Refusal::Head(HeadError::TooLarge), 431, "head_too_large"),
            (Refusal::Head(HeadError::TooManyHeaders), 431, "head_too_large"),
            (Refusal::Head(HeadError::Version), 505, "version_not_supported"),
            (Refusal::Head(HeadError::Malformed), 400, "bad_request"),
            (Refusal::Head(HeadError::Host), 400, "bad_request"),
            (Refusal::Framing(FramingError::UnsupportedCoding), 501, "bad_framing"),
            (
                Refusal::Framing(FramingError::DuplicateContentLength),
                400,
                "bad_framing",
            ),
            (Refusal::Body(BodyError::TooLarge { limit: 1 }), 413, "too_large"),
            (Refusal::DeclaredTooLarge { length: 2, limit: 1 }, 413, "too_large"),
            (
                Refusal::Body(BodyError::TimedOut {
                    received: 0,
                    expected: Some(1),
                }),
                408,
                "timeout",
            ),
            (Refusal::HeadTimeout, 408, "timeout"),
            (Refusal::Body(BodyError::Incomplete { received: 0 }), 400, "bad_body"),
            (Refusal::Body(BodyError::Chunk(ChunkError::BadSize)), 400, "bad_body"),
            (Refusal::Expectation, 417, "expectation_failed"),
            (Refusal::Overloaded(Overload::Workers), 503, "overloaded"),
            (Refusal::Internal, 500, "internal"),
        ];
        for (refusal, status, kind) in cases {
            assert_eq!((refusal.status(), refusal.kind()), (status, kind), "{refusal:?}");
        }
    }

    #[test]
    fn only_overload_invites_a_retry() {
        let retry = |r: Refusal| r.response().header("Retry-After").is_some();
        assert!(retry(Refusal::Overloaded(Overload::QueueWait)));
        assert!(!retry(Refusal::Head(HeadError::Malformed)));
    }
}
