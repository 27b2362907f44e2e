//! The one way out: every answer the server gives leaves through [`send`], which writes it,
//! logs one access line and reports the exchange to the handler
//! ([`Handler::completed`](super::Handler::completed)), so the metrics count it. That covers a
//! handler's reply, an early answer from the head, and each answer the HTTP layer gives itself:
//! a head it cannot parse, a head not finished in time, refused framing, the connection limit,
//! full workers and queue, a request that waited too long for a worker, a panicking handler.
//!
//! The access line, in one format for every answer:
//!
//! ```text
//! {client} {method} {path} {status} in={body bytes received} out={body bytes sent} {ms}ms
//! ```
//!
//! followed by notes in parentheses: why the HTTP layer answered itself (`connection limit`,
//! `workers and queue full`, `waited 2 s in the queue`, `request head not finished in time`,
//! a head error), `answered from the head`, `response cut short: …`. The path never carries
//! the query (tokens) or an authority ([`Head::logged_path`]). Method and path are `- -` for a
//! request the server never took in: its head did not parse or did not come in time, or load
//! refused it before anything looked at it. Such a request has no operation, so it is counted
//! under `op="other"`.

use super::head::Head;
use super::write::{Response, decimal, write_response};
use super::{Exchange, Shared};
use std::fmt;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

/// Most reads made to take what a client already sent before closing (see [`close_gently`]).
const CLOSE_READS: usize = 16;
/// Size of each of those reads, in bytes.
const CLOSE_READ_BYTES: usize = 4096;

/// The request an answer ends, as far as the server read it.
pub(crate) struct Answered<'a> {
    /// The client's address.
    pub remote: SocketAddr,
    /// The request's head, if the server took it in (see the module docs).
    pub head: Option<&'a Head>,
    /// Body bytes received.
    pub bytes_in: u64,
    /// When the head was complete (for a refusal: when the server took the connection up).
    pub started: Instant,
    /// Why or how the HTTP layer answered, logged in parentheses after the line.
    pub note: Option<&'a str>,
}

impl<'a> Answered<'a> {
    /// A request whose head was taken in and whose body was not read.
    pub(crate) fn head(remote: SocketAddr, head: &'a Head, started: Instant) -> Self {
        Answered {
            remote,
            head: Some(head),
            bytes_in: 0,
            started,
            note: None,
        }
    }

    /// A request the server never took in, refused now for `why`.
    pub(crate) fn unread(remote: SocketAddr, why: &'a str) -> Self {
        Answered {
            remote,
            head: None,
            bytes_in: 0,
            started: Instant::now(),
            note: Some(why),
        }
    }

    /// The same, logged with `note`.
    pub(crate) fn noting(self, note: &'a str) -> Self {
        Answered {
            note: Some(note),
            ..self
        }
    }
}

/// How an answer is written and what becomes of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Without blocking, then the connection is closed: the reactor, which serves everyone,
    /// never waits on one client (the answer is small and the connection fresh, so it fits
    /// the socket's buffer; a client that does not read it simply loses it).
    NonBlocking,
    /// Blocking, bounded by the socket's write timeout, then the connection is closed: a
    /// worker, whose connection may still be sending an earlier pipelined response.
    BlockingThenClose,
    /// Blocking, bounded by the socket's write timeout; the caller keeps the connection for
    /// the next request (`keep_alive`) or closes it (draining an unread body first).
    Blocking {
        /// Say `Connection: keep-alive` (and frame a body of unknown length as chunks).
        keep_alive: bool,
    },
}

/// Writes `resp` to the request `to` on `stream` as `delivery` says, logs its access line and
/// reports the exchange to the handler; true if the whole answer was written.
pub(crate) fn send(stream: &TcpStream, resp: Response, to: Answered<'_>, delivery: Delivery, shared: &Shared) -> bool {
    let keep_alive = match delivery {
        Delivery::NonBlocking => {
            let _ = stream.set_nonblocking(true);
            false
        }
        Delivery::BlockingThenClose => {
            let _ = stream.set_nonblocking(false);
            false
        }
        Delivery::Blocking { keep_alive } => keep_alive,
    };
    let (status, label) = (resp.status, resp.label);
    let head_only = to.head.is_some_and(|h| h.method == "HEAD");
    let result = write_response(stream, resp, keep_alive, head_only);
    let duration = to.started.elapsed();
    let (bytes_out, cut) = match &result {
        Ok(n) => (*n, String::new()),
        Err(cut) => (cut.body_bytes, format!(" (response cut short: {})", cut.error)),
    };
    let (method, path) = to.head.map_or(("-", "-"), |h| (h.method.as_str(), h.logged_path()));
    let note = to.note.map(|n| format!(" ({n})")).unwrap_or_default();
    log::info!(
        target: crate::logging::ACCESS_TARGET,
        "{} {method} {path} {status} in={} out={bytes_out} {}ms{note}{cut}",
        Peer(to.remote),
        to.bytes_in,
        duration.as_millis()
    );
    shared.handler.completed(&Exchange {
        method,
        label,
        status,
        bytes_in: to.bytes_in,
        bytes_out,
        duration,
    });
    if !matches!(delivery, Delivery::Blocking { .. }) {
        close_gently(stream);
    }
    result.is_ok()
}

/// Half-closes a socket after a final answer and takes what the client already sent
/// (bounded), never waiting for more.
fn close_gently(stream: &TcpStream) {
    let _ = stream.set_nonblocking(true);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Closing with unread input makes the kernel send RST, which can destroy the response
    // before the client reads it; take what is already there (bounded) first.
    let mut sink = [0u8; CLOSE_READ_BYTES];
    for _ in 0..CLOSE_READS {
        if !matches!((&*stream).read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
}

/// A peer's address as the access log shows it: the same text as `SocketAddr`'s, an IPv4 one
/// written digit by digit into one `write_str` (the standard one pads through a buffer of its
/// own, about 1% of a small GET's CPU).
struct Peer(SocketAddr);

/// Longest IPv4 address and port: `255.255.255.255:65535`.
const PEER_V4_BYTES: usize = 21;

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let SocketAddr::V4(v4) = self.0 else {
            return self.0.fmt(f);
        };
        let mut buf = [0u8; PEER_V4_BYTES];
        let mut n = 0;
        for (i, octet) in v4.ip().octets().into_iter().enumerate() {
            if i > 0 {
                buf[n] = b'.';
                n += 1;
            }
            n += decimal(&mut buf[n..], u64::from(octet));
        }
        buf[n] = b':';
        n += 1;
        n += decimal(&mut buf[n..], u64::from(v4.port()));
        f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_logged_as_the_standard_form_writes_it() {
        for addr in [
            "0.0.0.0:0",
            "127.0.0.1:3000",
            "10.20.30.40:8",
            "255.255.255.255:65535",
            "[::1]:443",
            "[fe80::1%2]:80",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(Peer(addr).to_string(), addr.to_string());
        }
    }
}
