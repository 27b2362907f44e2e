//! Accepting connections so that the accept loop never dies.
//!
//! `accept(2)` fails for reasons that concern one connection (it was reset before we took it,
//! a signal interrupted us) and for reasons that concern the process (out of file descriptors
//! or memory). The first kind is skipped; the second pauses accepting for [`ACCEPT_BACKOFF`]
//! so the loop does not spin while, for example, idle connections are timed out and free fds.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// How long accepting pauses after the process ran out of descriptors or memory.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Most connections taken per wake-up, so a flood of connects cannot starve parked clients.
pub const MAX_ACCEPTS_PER_WAKE: usize = 256;

/// What one `accept` attempt gave.
#[derive(Debug)]
pub enum Accepted {
    /// A new connection, already non-blocking with Nagle off.
    Conn(TcpStream, SocketAddr),
    /// Nothing more to accept right now.
    Drained,
    /// This connection failed; try the next.
    Skip,
    /// Out of resources: stop accepting for [`ACCEPT_BACKOFF`].
    Backoff(io::Error),
}

/// Accepts one connection from a non-blocking `listener` and classifies the outcome.
pub fn accept_one(listener: &TcpListener) -> Accepted {
    match listener.accept() {
        Ok((stream, remote)) => {
            // Left in blocking mode, as the workers use it: the reactor reads it with
            // `sys::recv_now`, which never waits.
            let _ = stream.set_nodelay(true);
            Accepted::Conn(stream, remote)
        }
        Err(e) => classify(e),
    }
}

fn classify(e: io::Error) -> Accepted {
    if e.kind() == io::ErrorKind::WouldBlock {
        return Accepted::Drained;
    }
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => Accepted::Backoff(e),
        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM | libc::ENETDOWN | libc::ENOPROTOOPT)
        | Some(libc::EHOSTDOWN | libc::ENONET | libc::EHOSTUNREACH | libc::EOPNOTSUPP | libc::ENETUNREACH) => {
            Accepted::Skip
        }
        _ => Accepted::Backoff(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_errors() {
        let os = io::Error::from_raw_os_error;
        assert!(matches!(classify(os(libc::EMFILE)), Accepted::Backoff(_)));
        assert!(matches!(classify(os(libc::ENFILE)), Accepted::Backoff(_)));
        assert!(matches!(classify(os(libc::ECONNABORTED)), Accepted::Skip));
        assert!(matches!(classify(os(libc::EINTR)), Accepted::Skip));
        assert!(matches!(classify(os(libc::EAGAIN)), Accepted::Drained));
    }
}
