//! Serving requests on connections, on a worker thread.
//!
//! A worker gets a connection with the request head already parsed and the bytes that
//! followed it (the start of the body): from the pool's queue (the reactor read it), or from
//! the parked set it waits on when idle. We choose the body framing, run the handler, and send
//! its response (or our refusal) through [`exchange::send`], which logs and counts it. Then
//! either the connection closes, another pipelined request already in the buffer is parsed and
//! served at once, or the connection is parked again to wait, and the worker takes the next
//! connection that became readable meanwhile, if any, without sleeping (see [`take_ready`]).
//! Any framing or body error closes the connection: bytes after a broken body are never
//! parsed as a request.

use super::body::{Body, Framing, ReadBuf, choose_framing};
use super::exchange::{self, Answered, Delivery};
use super::head::{Head, read_head};
use super::reactor::{self, Parked, Readiness};
use super::refusal::Refusal;
use super::write::Response;
use super::{Conn, Counted, Request, Shared};
use crate::sys;
use std::io::Read;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long an idle worker waits on the parked set for a connection to become readable before
/// it goes back to sleep on the pool's queue, in milliseconds (see [`take_ready`]). Only as
/// long as a job queued meanwhile may wait for it: the queue is looked at between waits.
const LINGER_MS: i32 = 5;

/// What to do with the connection after one exchange.
enum Next {
    Close,
    KeepAlive,
}

/// Serves the request on `conn` and the ones that follow it on the connection, then, while
/// nothing waits in the pool's queue, the connections of the parked set that become readable.
pub(crate) fn serve(conn: Conn, shared: &Shared) {
    if conn.queued_at.elapsed() > shared.config.queue_timeout {
        reactor::refuse_waited_too_long(&conn, shared);
        return;
    }
    let kept = serve_conn(conn, shared);
    take_ready(kept, shared);
}

/// A connection served until it had no complete request buffered, to be parked; it stays
/// counted in service until it is, so the connection limit never misses it.
type Kept<'a> = (Parked, Counted<'a>);

/// Serves `conn` until it closes or has no complete request buffered; returns it then, to be
/// parked.
fn serve_conn(conn: Conn, shared: &Shared) -> Option<Kept<'_>> {
    let Conn {
        stream,
        remote,
        head,
        pending,
        ..
    } = conn;
    // The socket's read and write timeouts (the io timeout) were set once, when the reactor
    // accepted it: they apply to the blocking calls here.
    let mut input = ReadBuf::with_bytes(&pending);
    drop(pending);
    // Registered while served (not per request), so shutdown can see and cut it off;
    // unregistered by the guard's drop, even if serving panics.
    let service = shared.begin_service(&stream);
    let pending = serve_buffered(&stream, remote, head, &mut input, shared)?;
    let counted = service.unregister();
    Some((Parked::kept_alive(stream, remote, pending, shared), counted))
}

/// Parks a kept-alive connection, then counts it out of service.
fn park((conn, counted): Kept<'_>, shared: &Shared) {
    shared.parked.park(conn, shared);
    drop(counted);
}

/// Takes and serves the parked connections that become readable, waiting at most
/// [`LINGER_MS`] each time for one, counted idle meanwhile; returns when none came in time, a
/// job waits in the pool's queue (the pool hands it to this worker next), enough other workers
/// wait on the set already (it then sleeps on the pool's queue) or the server stops.
/// A keep-alive client that sends its next request at once (a loop of small GETs), or any of
/// hundreds doing so, is so served by a worker already running, with no hand-over between
/// threads. A connection whose head is still partial is parked again: slow clients never hold
/// a worker.
fn take_ready<'a>(kept: Option<Kept<'a>>, shared: &'a Shared) {
    let mut kept = kept;
    loop {
        let wait = !shared.stopping.load(Ordering::Relaxed) && shared.stats.pool.queued.load(Ordering::Relaxed) == 0;
        // Counted idle from before the served connection is parked, so a request the reactor
        // takes now (the next on it, say) is queued for a worker (this one, once it looks
        // again) rather than refused as if every worker were busy.
        let ready = shared.stats.pool.idle_while(|| {
            if let Some(k) = kept.take() {
                park(k, shared);
            }
            wait.then(|| shared.parked.wait(LINGER_MS, shared)).flatten()
        });
        let Some(p) = ready else { return };
        match reactor::advance(p, shared) {
            Readiness::Waiting(p) => shared.parked.park(p, shared),
            Readiness::Gone => {}
            Readiness::Ready(p, head, len) => {
                if let Some(conn) = reactor::dispatch(p, head, len, Delivery::BlockingThenClose, shared) {
                    kept = serve_conn(conn, shared);
                }
            }
        }
    }
}

/// Serves the request of `head`, then every request whose head is already buffered; returns
/// the bytes of an unfinished next head if the connection stays open, `None` if it must close.
fn serve_buffered(
    stream: &TcpStream,
    remote: SocketAddr,
    head: Head,
    input: &mut ReadBuf,
    shared: &Shared,
) -> Option<Vec<u8>> {
    let mut head = head;
    loop {
        if matches!(serve_one(stream, remote, head, input, shared), Next::Close) {
            return None;
        }
        let parsed = match input.pending() {
            [] => Ok(None),
            bytes => read_head(bytes),
        };
        head = match parsed {
            Ok(Some((next, len))) => {
                input.consume(len);
                next
            }
            Ok(None) => return Some(input.pending().to_vec()),
            Err(e) => {
                let why = e.to_string();
                let to = Answered::unread(remote, &why);
                let resp = Refusal::Head(e).response();
                exchange::send(stream, resp, to, Delivery::BlockingThenClose, shared);
                return None;
            }
        };
    }
}

/// Serves the request of `head` (taken from the buffer, which holds what follows it).
fn serve_one(stream: &TcpStream, remote: SocketAddr, head: Head, input: &mut ReadBuf, shared: &Shared) -> Next {
    let started = Instant::now();
    if let Some(resp) = shared.answer_early(&head) {
        let to = Answered::head(remote, &head, started).noting("answered from the head");
        exchange::send(stream, resp, to, Delivery::BlockingThenClose, shared);
        return Next::Close;
    }
    let expectation = head.header("expect");
    // A refusal decided from the head alone: answered before any body is read, then closed.
    let refuse = |refusal| {
        let resp = refusal_of(&head, refusal, shared);
        exchange::send(
            stream,
            resp,
            Answered::head(remote, &head, started),
            Delivery::BlockingThenClose,
            shared,
        );
        Next::Close
    };
    if expectation.is_some_and(|v| !v.eq_ignore_ascii_case("100-continue")) {
        return refuse(Refusal::Expectation);
    }
    let framing = match choose_framing(&head) {
        Ok(f) => f,
        Err(e) => return refuse(Refusal::Framing(e)),
    };
    if let (Framing::Length(n), Some(limit)) = (framing, shared.config.max_body)
        && n > limit
    {
        let resp = refusal_of(&head, Refusal::DeclaredTooLarge { length: n, limit }, shared);
        let to = Answered::head(remote, &head, started);
        if exchange::send(stream, resp, to, Delivery::Blocking { keep_alive: false }, shared) {
            drain_before_close(stream);
        }
        return Next::Close;
    }
    let expects_continue = head.minor_version == 1
        && head
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let trailers = std::cell::RefCell::new(Vec::new());
    let mut body = Body::new(stream, input, framing, expects_continue, shared.config.max_body).keep_trailers(&trailers);
    let trailer = |name: &str| super::chunked::trailer_field(&trailers.borrow(), name);
    // A stopping server counts as a gone client: long work (a line count, a concatenation)
    // stops rather than holding shutdown up to its deadline.
    let client_gone = || shared.stopping.load(Ordering::Relaxed) || sys::peer_gone(std::os::fd::AsFd::as_fd(stream));
    let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        shared.handler.handle(&mut Request {
            head: &head,
            body: &mut body,
            trailer: &trailer,
            remote,
            client_gone: &client_gone,
        })
    }));
    let Ok(resp) = handled else {
        // A bug in the handler costs this request a 500 (and its connection), like any answer.
        log::error!("serving {} {} panicked", head.method, head.logged_path());
        let to = Answered {
            bytes_in: body.received(),
            ..Answered::head(remote, &head, started)
        };
        let resp = refusal_of(&head, Refusal::Internal, shared);
        exchange::send(stream, resp, to, Delivery::BlockingThenClose, shared);
        return Next::Close;
    };
    let body_done = body.is_complete();
    let abandoned = body.abandoned();
    let bytes_in = body.received();
    let keep_alive = body_done && !resp.close && !head.wants_close() && !shared.stopping.load(Ordering::Relaxed);
    let to = Answered {
        bytes_in,
        ..Answered::head(remote, &head, started)
    };
    let written = exchange::send(stream, resp, to, Delivery::Blocking { keep_alive }, shared);
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
