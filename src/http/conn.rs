//! Serving requests on one connection, on a worker thread.
//!
//! The reactor hands over a connection with the request head it parsed and the bytes that
//! followed it (the start of the body). We choose the body framing, run the handler, and send
//! its response (or our refusal) through [`exchange::send`], which logs and counts it. Then
//! either the connection closes, another pipelined request already in the buffer is parsed and
//! served at once, or the connection goes back to the reactor to wait. Any framing or body error closes the connection: bytes after a
//! broken body are never parsed as a request.

use super::body::{Body, Framing, ReadBuf, choose_framing};
use super::exchange::{self, Answered, Delivery};
use super::head::{Head, read_head};
use super::refusal::Refusal;
use super::write::Response;
use super::{Conn, Idle, Request, Shared, reactor};
use crate::sys;
use std::io::Read;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a worker waits for a keep-alive client's next request before handing the
/// connection back to the reactor, in milliseconds (see [`linger`]). Long enough that a client
/// behind hundreds of other connections on a loaded machine still sends its next request in
/// time (wrk -c256 on 2 cores: 1 ms sent most requests through the reactor, 5 ms raised
/// requests/s by about a sixth; 10 ms did better there but worse at 16 connections); short
/// enough that a request queued meanwhile waits at most this long for a lingering worker.
const LINGER_MS: i32 = 5;

/// What to do with the connection after one exchange.
enum Next {
    Close,
    KeepAlive,
}

/// Serves the request on `conn`, then the ones that follow it on the connection, until it
/// closes or has no complete request buffered.
pub(crate) fn serve(conn: Conn, shared: &Shared) {
    if conn.queued_at.elapsed() > shared.config.queue_timeout {
        reactor::refuse_waited_too_long(&conn, shared);
        return;
    }
    let Conn {
        stream,
        remote,
        head,
        pending,
        ..
    } = conn;
    // The socket's read and write timeouts (the io timeout) were set once, when the reactor
    // accepted it: they apply to the blocking calls here and never to the reactor's.
    let mut input = ReadBuf::with_bytes(&pending);
    drop(pending);
    // Registered once per hand-over (not per request), so shutdown can see and cut it off;
    // unregistered by the guard's drop, even if serving panics.
    let service = shared.begin_service(&stream);
    let leftover = serve_buffered(&stream, remote, head, &mut input, shared);
    if let Some(pending) = leftover {
        // Idle before the connection is back at the reactor, whose next request may come at
        // once and must not find this worker counted busy (a 503 with only as many requests
        // in flight as workers and queue hold).
        shared.stats.pool.done_early();
        shared.repark(Idle {
            stream,
            remote,
            pending,
        });
    }
    // Only now: a connection on its way back to the reactor stays counted (as in service)
    // until the reactor parks it, so the connection limit never misses it.
    drop(service);
}

/// Serves the request of `head`, then every request whose head is already buffered (or
/// arrives during one short wait); returns the bytes of an unfinished next head if the
/// connection stays open, `None` if it must close.
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
        head = match next_head(stream, remote, input, shared) {
            Following::Head(next) => next,
            Following::Park => return Some(input.pending().to_vec()),
            Following::Close => return None,
        };
    }
}

/// What follows a served request on its connection.
enum Following {
    /// The next request's head, complete and taken from the buffer.
    Head(Head),
    /// Nothing complete yet: the connection goes back to the reactor to wait.
    Park,
    /// The connection closes (the client went, or its next head was refused).
    Close,
}

/// Parses the next request's head from the buffer (an empty buffer holds none: no need to ask
/// the parser). A partial one gets one short wait here before the connection goes back; a
/// refused one is answered and the connection closes.
fn next_head(stream: &TcpStream, remote: SocketAddr, input: &mut ReadBuf, shared: &Shared) -> Following {
    let mut lingered = false;
    loop {
        let parsed = match input.pending() {
            [] => Ok(None),
            bytes => read_head(bytes),
        };
        match parsed {
            Ok(Some((head, len))) => {
                input.consume(len);
                return Following::Head(head);
            }
            Err(e) => {
                let why = e.to_string();
                let to = Answered::unread(remote, &why);
                let resp = Refusal::Head(e).response();
                exchange::send(stream, resp, to, Delivery::BlockingThenClose, shared);
                return Following::Close;
            }
            Ok(None) if lingered => return Following::Park,
            Ok(None) => match linger(stream, input, shared) {
                Linger::Closed => return Following::Close,
                Linger::Quiet => return Following::Park,
                Linger::MoreBytes => lingered = true,
            },
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
/// are queued for a worker or the server is stopping, so an idle client holds a worker only
/// while nobody waits for one, and then for at most [`LINGER_MS`]; one read at most, so a slow
/// sender still goes back to the reactor and its head timeout.
fn linger(stream: &TcpStream, input: &mut ReadBuf, shared: &Shared) -> Linger {
    if shared.stopping.load(Ordering::Relaxed) || shared.stats.pool.queued.load(Ordering::Relaxed) > 0 {
        return Linger::Quiet;
    }
    let mut fds = [sys::poll_entry(stream.as_raw_fd())];
    // Counted idle meanwhile, so a request that comes to the reactor now is queued for a
    // worker (this one, once it looks again) rather than refused as if every worker were busy.
    let polled = shared.stats.pool.idle_while(|| sys::poll(&mut fds, LINGER_MS));
    if !matches!(polled, Ok(n) if n > 0 && sys::poll_ready(&fds[0])) {
        return Linger::Quiet;
    }
    match input.fill_from(&mut &*stream) {
        Ok(0) | Err(_) => Linger::Closed,
        Ok(_) => Linger::MoreBytes,
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
