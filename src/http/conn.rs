//! Serving requests on one connection, on a worker thread.
//!
//! The reactor hands over a connection whose buffer starts with a complete request head. We
//! parse it, choose the body framing, run the handler, write its response, and log one access
//! line. Then either the connection closes, another pipelined request already in the buffer is
//! served at once, or the connection goes back to the reactor to wait. Any framing or body
//! error closes the connection: bytes after a broken body are never parsed as a request.

use super::body::{Body, Framing, ReadBuf, choose_framing};
use super::head::{Head, HeadStatus, check_head, parse_head};
use super::refusal::Refusal;
use super::write::{Response, write_response};
use super::{Conn, Exchange, Request, Shared, reactor};
use crate::sys;
use std::io::Read;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a worker waits for a keep-alive client's next request before handing the
/// connection back to the reactor, in milliseconds (see [`linger`]).
const LINGER_MS: i32 = 1;

/// What to do with the connection after one exchange.
enum Next {
    Close,
    KeepAlive,
}

/// Serves requests on `conn` until it closes or has no complete request buffered.
pub(crate) fn serve(conn: Conn, shared: &Shared) {
    if conn.queued_at.elapsed() > shared.config.queue_timeout {
        reactor::refuse_waited_too_long(&conn);
        return;
    }
    let Conn {
        stream,
        remote,
        pending,
        ..
    } = conn;
    let timeout = Some(shared.config.io_timeout);
    if stream.set_read_timeout(timeout).is_err() || stream.set_write_timeout(timeout).is_err() {
        return;
    }
    let mut input = ReadBuf::with_bytes(&pending);
    drop(pending);
    // Registered once per hand-over (not per request), so shutdown can see and cut it off;
    // unregistered by the guard's drop, even if serving panics.
    let service = shared.begin_service(&stream);
    let leftover = serve_buffered(&stream, remote, &mut input, shared);
    if let Some(pending) = leftover {
        shared.repark(Conn {
            stream,
            remote,
            pending,
            queued_at: Instant::now(),
        });
    }
    // Only now: a connection on its way back to the reactor stays counted (as in service)
    // until the reactor parks it, so the connection limit never misses it.
    drop(service);
}

/// Serves every request whose head is already buffered; returns the bytes of an unfinished
/// next head if the connection stays open, `None` if it must close.
fn serve_buffered(stream: &TcpStream, remote: SocketAddr, input: &mut ReadBuf, shared: &Shared) -> Option<Vec<u8>> {
    loop {
        if matches!(serve_one(stream, remote, input, shared), Next::Close) {
            return None;
        }
        // A complete head is served now; a refused one by the next round, which answers the
        // refusal and closes. A partial one gets one short wait here before going back.
        if let Ok(HeadStatus::Partial) = check_head(input.pending()) {
            match linger(stream, input, shared) {
                Linger::Closed => return None,
                Linger::MoreBytes if !matches!(check_head(input.pending()), Ok(HeadStatus::Partial)) => {}
                Linger::MoreBytes | Linger::Quiet => return Some(input.pending().to_vec()),
            }
        }
    }
}

/// What a short wait on the worker for the next request brought.
enum Linger {
    /// Nothing arrived in time (or waiting was not worth it): park the connection.
    Quiet,
    /// More bytes were read into the buffer.
    MoreBytes,
    /// The client closed the connection or it failed.
    Closed,
}

/// Waits up to [`LINGER_MS`] on this worker for the client's next bytes. A keep-alive client
/// that sends its next request at once (a loop of small GETs) then skips the round trip through
/// the reactor: two thread hand-offs and a poll over every parked socket. Skipped when requests
/// are queued for a worker or the server is stopping, so lingering never delays anyone else;
/// one read at most, so a slow sender still goes back to the reactor and its head timeout.
fn linger(stream: &TcpStream, input: &mut ReadBuf, shared: &Shared) -> Linger {
    if shared.stopping.load(Ordering::Relaxed) || shared.stats.pool.queued.load(Ordering::Relaxed) > 0 {
        return Linger::Quiet;
    }
    let mut fds = [sys::poll_entry(stream.as_raw_fd())];
    if !matches!(sys::poll(&mut fds, LINGER_MS), Ok(n) if n > 0 && sys::poll_ready(&fds[0])) {
        return Linger::Quiet;
    }
    match input.fill_from(&mut &*stream) {
        Ok(0) | Err(_) => Linger::Closed,
        Ok(_) => Linger::MoreBytes,
    }
}

fn serve_one(stream: &TcpStream, remote: SocketAddr, input: &mut ReadBuf, shared: &Shared) -> Next {
    let started = Instant::now();
    let (head, head_len) = match parse_head(input.pending()) {
        Ok(parsed) => parsed,
        Err(e) => {
            let refusal = Refusal::Head(e);
            let _ = write_response(stream, refusal.response(), false, false);
            log::info!(target: "access", "{remote} - - {} 0 0 0ms ({e})", refusal.status());
            return Next::Close;
        }
    };
    input.consume(head_len);
    if let Some(resp) = shared.handler.answer_early(&head) {
        reactor::answer_and_close(stream, remote, &head, resp, shared, reactor::Writing::Blocking);
        return Next::Close;
    }
    let expectation = head.header("expect");
    if expectation.is_some_and(|v| !v.eq_ignore_ascii_case("100-continue")) {
        let resp = refusal_of(&head, Refusal::Expectation, shared);
        finish(stream, remote, &head, resp, Served::refused(started), shared);
        return Next::Close;
    }
    let framing = match choose_framing(&head) {
        Ok(f) => f,
        Err(e) => {
            let resp = refusal_of(&head, Refusal::Framing(e), shared);
            finish(stream, remote, &head, resp, Served::refused(started), shared);
            return Next::Close;
        }
    };
    if let (Framing::Length(n), Some(limit)) = (framing, shared.config.max_body)
        && n > limit
    {
        let resp = refusal_of(&head, Refusal::DeclaredTooLarge { length: n, limit }, shared);
        if finish(stream, remote, &head, resp, Served::refused(started), shared) {
            drain_before_close(stream);
        }
        return Next::Close;
    }
    let expects_continue = head.minor_version == 1
        && head
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let mut body = Body::new(stream, input, framing, expects_continue, shared.config.max_body);
    let client_gone = || sys::peer_gone(std::os::fd::AsFd::as_fd(stream));
    let resp = shared.handler.handle(&mut Request {
        head: &head,
        body: &mut body,
        remote,
        client_gone: &client_gone,
    });
    let body_done = body.is_complete();
    let abandoned = body.abandoned();
    let bytes_in = body.received();
    let keep_alive = body_done && !resp.close && !head.wants_close() && !shared.stopping.load(Ordering::Relaxed);
    let written = finish(
        stream,
        remote,
        &head,
        resp,
        Served {
            keep_alive,
            bytes_in,
            started,
        },
        shared,
    );
    if keep_alive && written {
        return Next::KeepAlive;
    }
    if abandoned && written {
        drain_before_close(stream);
    }
    Next::Close
}

/// Longest a closing connection spends draining a body the handler did not read.
const DRAIN_MAX: Duration = Duration::from_secs(2);
/// Most body bytes drained before closing anyway.
const DRAIN_MAX_BYTES: u64 = 64 << 20;
/// A pause this long in what the client sends ends the drain (it has seen our answer).
const DRAIN_QUIET: Duration = Duration::from_millis(250);

/// Closes gracefully after answering a request whose body was not read to the end (a 409 or
/// 507 in the middle of an upload): half-close, then read and discard what the client still
/// sends, bounded in time and bytes. Closing with unread input makes the kernel send a reset,
/// which can destroy the answer before the client reads it, and the README's retry loop
/// depends on seeing that 409.
fn drain_before_close(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    if stream.set_read_timeout(Some(DRAIN_QUIET)).is_err() {
        return;
    }
    let deadline = Instant::now() + DRAIN_MAX;
    let mut sink = [0u8; 16 * 1024];
    let mut drained = 0u64;
    while drained < DRAIN_MAX_BYTES && Instant::now() < deadline {
        match (&*stream).read(&mut sink) {
            Ok(0) => return,
            Ok(n) => drained += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The HTTP layer's own answer to a request whose head parsed, labelled with what the
/// request asked for.
fn refusal_of(head: &Head, refusal: Refusal, shared: &Shared) -> Response {
    let resp = refusal.response();
    match shared.handler.label(head) {
        Some(label) => resp.labelled(label),
        None => resp,
    }
}

/// How a request was served, for the response that ends it.
struct Served {
    /// The connection may carry another request after this response.
    keep_alive: bool,
    /// Body bytes received.
    bytes_in: u64,
    /// When the head was complete.
    started: Instant,
}

impl Served {
    /// A request refused before its body was read: the connection closes after the answer.
    fn refused(started: Instant) -> Self {
        Served {
            keep_alive: false,
            bytes_in: 0,
            started,
        }
    }
}

/// Writes the response, logs the access line and reports the exchange; true if written.
fn finish(
    stream: &TcpStream,
    remote: SocketAddr,
    head: &Head,
    resp: Response,
    served: Served,
    shared: &Shared,
) -> bool {
    let Served {
        keep_alive,
        bytes_in,
        started,
    } = served;
    let status = resp.status;
    let label = resp.label;
    let head_only = head.method == "HEAD";
    let result = write_response(stream, resp, keep_alive, head_only);
    let duration = started.elapsed();
    let (bytes_out, outcome) = match &result {
        Ok(n) => (*n, String::new()),
        Err(cut) => (cut.body_bytes, format!(" (response cut short: {})", cut.error)),
    };
    log::info!(
        target: "access",
        "{remote} {} {} {status} in={bytes_in} out={bytes_out} {}ms{outcome}",
        head.method,
        head.logged_path(),
        duration.as_millis()
    );
    shared.handler.completed(&Exchange {
        method: &head.method,
        label,
        status,
        bytes_in,
        bytes_out,
        duration,
    });
    result.is_ok()
}
