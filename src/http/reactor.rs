//! The reactor: one thread that accepts connections and parks them in `poll(2)` until a whole
//! request head has arrived, so that idle and slow clients hold a file descriptor and a few
//! bytes, never a worker.
//!
//! A parked connection is read without blocking into its own small buffer (grown only by the
//! bytes that arrive, at most [`MAX_HEAD_BYTES`]). When the buffer holds a complete head, the
//! connection goes to the worker pool; if the pool and its queue are full, the client gets
//! `503` with `Retry-After` at once. Deadlines: a connection with no bytes of a request waits
//! at most the idle timeout; once a head has started it must finish within the head timeout.
//! Refusals written from here are tiny and written without blocking: a client that does not
//! read them simply loses them.

use super::accept::{self, ACCEPT_BACKOFF, Accepted, MAX_ACCEPTS_PER_WAKE};
use super::head::Head;
use super::head::{HeadStatus, MAX_HEAD_BYTES, check_head, parse_head};
use super::refusal::{Overload, Refusal};
use super::write::{Response, encode_head};
use super::{Conn, Exchange, PROBE_RESERVE, Shared};
use crate::pool::Pool;
use crate::sys;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// Longest the reactor sleeps in `poll` without checking deadlines, in milliseconds.
const MAX_POLL_WAIT_MS: u64 = 1000;
/// Longest a connection accepted into the probe reserve may take to send its head.
const RESERVE_WAIT: Duration = Duration::from_secs(2);

/// The reactor's poll set, its slots named: the wake socket, then the listener while accepting,
/// then each parked connection in the order of `Reactor::parked` at the time of the poll.
#[derive(Default)]
struct PollSet {
    fds: Vec<sys::PollFd>,
    listening: bool,
}

impl PollSet {
    fn fill(&mut self, wake: RawFd, listener: Option<RawFd>, parked: impl Iterator<Item = RawFd>) {
        self.fds.clear();
        self.fds.push(sys::poll_entry(wake));
        self.listening = listener.is_some();
        self.fds.extend(listener.map(sys::poll_entry));
        self.fds.extend(parked.map(sys::poll_entry));
    }

    fn first_parked(&self) -> usize {
        1 + usize::from(self.listening)
    }

    fn wake_ready(&self) -> bool {
        sys::poll_ready(&self.fds[0])
    }

    fn listener_ready(&self) -> bool {
        self.listening && sys::poll_ready(&self.fds[1])
    }

    /// How many parked connections were polled.
    fn parked_len(&self) -> usize {
        self.fds.len() - self.first_parked()
    }

    /// Whether the `i`th polled parked connection is readable (or closed).
    fn parked_ready(&self, i: usize) -> bool {
        sys::poll_ready(&self.fds[self.first_parked() + i])
    }
}

struct Parked {
    stream: TcpStream,
    remote: SocketAddr,
    pending: Vec<u8>,
    deadline: Instant,
    /// Accepted beyond the connection limit, into the [`PROBE_RESERVE`]: only an early answer
    /// (a probe) is served on it.
    over_limit: bool,
}

/// What became of a parked connection after it was readable.
enum Readiness {
    /// Still waiting for (more of) a head.
    Waiting,
    /// A complete head is buffered.
    Ready,
    /// The connection is finished (closed, refused or broken).
    Gone,
}

/// The accept-and-park loop; see the module docs.
pub(crate) struct Reactor {
    listener: Option<TcpListener>,
    wake: UnixStream,
    returned: Receiver<Conn>,
    pool: Arc<Pool<Conn>>,
    shared: Arc<Shared>,
    parked: Vec<Parked>,
    paused_until: Option<Instant>,
    scratch: Box<[u8]>,
}

impl Reactor {
    pub(crate) fn new(
        listener: TcpListener,
        wake: UnixStream,
        returned: Receiver<Conn>,
        pool: Arc<Pool<Conn>>,
        shared: Arc<Shared>,
    ) -> Self {
        Reactor {
            listener: Some(listener),
            wake,
            returned,
            pool,
            shared,
            parked: Vec::new(),
            paused_until: None,
            scratch: vec![0u8; MAX_HEAD_BYTES].into_boxed_slice(),
        }
    }

    /// Runs until the server is told to stop; then closes the listener and every parked
    /// connection and returns (queued requests are still served by the pool).
    pub(crate) fn run(mut self) {
        let mut polled = PollSet::default();
        while !self.shared.stopping.load(Ordering::SeqCst) {
            let now = Instant::now();
            let accepting = self.paused_until.is_none_or(|t| now >= t);
            let listener = self.listener.as_ref().filter(|_| accepting).map(|l| l.as_raw_fd());
            let parked = self.parked.iter().map(|p| p.stream.as_raw_fd());
            polled.fill(self.wake.as_raw_fd(), listener, parked);
            if let Err(e) = sys::poll(&mut polled.fds, self.poll_wait_ms(now)) {
                log::error!("poll failed: {e}");
                std::thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
            if polled.wake_ready() {
                self.drain_wake();
            }
            self.take_returned();
            // Serve readable parked connections, walking backwards so swap_remove is safe
            // (connections parked since the poll come after the ones polled).
            for i in (0..polled.parked_len()).rev() {
                if polled.parked_ready(i) {
                    self.on_readable(i);
                }
            }
            if polled.listener_ready() {
                self.accept_new();
            }
            self.expire(Instant::now());
            self.refuse_expired_in_queue();
        }
        self.listener = None;
        self.parked.clear();
        self.shared.stats.parked.store(0, Ordering::Relaxed);
        while self.returned.try_recv().is_ok() {}
    }

    fn poll_wait_ms(&self, now: Instant) -> i32 {
        let mut wait = Duration::from_millis(MAX_POLL_WAIT_MS);
        if let Some(next) = self.parked.iter().map(|p| p.deadline).min() {
            wait = wait.min(next.saturating_duration_since(now));
        }
        if let Some(t) = self.paused_until {
            wait = wait.min(t.saturating_duration_since(now));
        }
        // Round up so we do not wake just before a deadline and spin.
        (wait.as_millis() as i32).saturating_add(1)
    }

    fn drain_wake(&mut self) {
        let mut buf = [0u8; 256];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
    }

    fn take_returned(&mut self) {
        while let Ok(conn) = self.returned.try_recv() {
            if conn.stream.set_nonblocking(true).is_err() {
                continue;
            }
            let timeout = if is_idle(&conn.pending) {
                self.shared.config.idle_timeout
            } else {
                self.shared.config.head_timeout
            };
            self.park(Parked {
                stream: conn.stream,
                remote: conn.remote,
                pending: conn.pending,
                deadline: Instant::now() + timeout,
                over_limit: false,
            });
        }
    }

    fn park(&mut self, parked: Parked) {
        self.parked.push(parked);
        self.shared.stats.parked.store(self.parked.len(), Ordering::Relaxed);
    }

    fn unpark(&mut self, index: usize) -> Parked {
        let parked = self.parked.swap_remove(index);
        self.shared.stats.parked.store(self.parked.len(), Ordering::Relaxed);
        parked
    }

    fn accept_new(&mut self) {
        for _ in 0..MAX_ACCEPTS_PER_WAKE {
            let Some(listener) = &self.listener else { return };
            match accept::accept_one(listener) {
                Accepted::Conn(stream, remote) => {
                    let stats = &self.shared.stats;
                    let open = self.parked.len()
                        + stats.in_flight.load(Ordering::Relaxed)
                        + stats.pool.queued.load(Ordering::Relaxed);
                    let limit = self.shared.config.max_connections;
                    if open >= limit + PROBE_RESERVE {
                        log::warn!("refusing {remote}: {open} connections open, the limit and its probe reserve");
                        refuse(
                            &stream,
                            remote,
                            Refusal::Overloaded(Overload::Connections),
                            "connection limit",
                        );
                        continue;
                    }
                    // Beyond the limit, a connection is kept only for the short time a probe
                    // takes to send its head.
                    let over_limit = open >= limit;
                    let wait = if over_limit {
                        self.shared.config.head_timeout.min(RESERVE_WAIT)
                    } else {
                        self.shared.config.idle_timeout
                    };
                    self.park(Parked {
                        stream,
                        remote,
                        pending: Vec::new(),
                        deadline: Instant::now() + wait,
                        over_limit,
                    });
                }
                Accepted::Drained => return,
                Accepted::Skip => {}
                Accepted::Backoff(e) => {
                    log::warn!("accept failed, pausing {} ms: {e}", ACCEPT_BACKOFF.as_millis());
                    self.paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    fn on_readable(&mut self, index: usize) {
        match self.read_parked(index) {
            Readiness::Waiting => {}
            Readiness::Gone => {
                self.unpark(index);
            }
            Readiness::Ready => {
                let p = self.unpark(index);
                let head = match parse_head(&p.pending) {
                    Ok((head, _)) => head,
                    Err(e) => {
                        refuse(&p.stream, p.remote, Refusal::Head(e), &e.to_string());
                        return;
                    }
                };
                // The reactor is the one thread every client needs: a bug in the handler's early
                // answer costs this request a 500, never the reactor.
                let early =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.shared.handler.answer_early(&head)));
                let early = early.unwrap_or_else(|_| {
                    log::error!(
                        "answering {} {} from its head panicked",
                        head.method,
                        head.logged_path()
                    );
                    Some(Refusal::Internal.response())
                });
                if let Some(resp) = early {
                    answer_and_close(&p.stream, p.remote, &head, resp, &self.shared, Writing::NonBlocking);
                    return;
                }
                if p.over_limit {
                    refuse(
                        &p.stream,
                        p.remote,
                        Refusal::Overloaded(Overload::Connections),
                        "connection limit",
                    );
                    return;
                }
                if p.stream.set_nonblocking(false).is_err() {
                    return;
                }
                let conn = Conn {
                    stream: p.stream,
                    remote: p.remote,
                    pending: p.pending,
                    queued_at: Instant::now(),
                };
                if let Err(conn) = self.pool.try_submit(conn) {
                    log::warn!("refusing {}: all workers busy and the queue is full", conn.remote);
                    let _ = conn.stream.set_nonblocking(true);
                    refuse(
                        &conn.stream,
                        conn.remote,
                        Refusal::Overloaded(Overload::Workers),
                        "workers and queue full",
                    );
                }
            }
        }
    }

    fn read_parked(&mut self, index: usize) -> Readiness {
        let head_timeout = self.shared.config.head_timeout;
        let p = &mut self.parked[index];
        let room = MAX_HEAD_BYTES.saturating_sub(p.pending.len()).max(1);
        match (&p.stream).read(&mut self.scratch[..room]) {
            Ok(0) => return Readiness::Gone,
            Ok(n) => {
                let was_idle = is_idle(&p.pending);
                p.pending.extend_from_slice(&self.scratch[..n]);
                if was_idle && !is_idle(&p.pending) {
                    p.deadline = Instant::now() + head_timeout;
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                return Readiness::Waiting;
            }
            Err(_) => return Readiness::Gone,
        }
        match check_head(&p.pending) {
            Ok(HeadStatus::Complete(_)) => Readiness::Ready,
            Ok(HeadStatus::Partial) => Readiness::Waiting,
            Err(e) => {
                refuse(&p.stream, p.remote, Refusal::Head(e), &e.to_string());
                Readiness::Gone
            }
        }
    }

    /// Answers 503 to requests that waited longer than the queue timeout for a worker (every
    /// worker held by slow clients, say), so none waits without end.
    fn refuse_expired_in_queue(&mut self) {
        for conn in self.pool.take_expired(self.shared.config.queue_timeout) {
            refuse_waited_too_long(&conn);
        }
    }

    fn expire(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.parked.len() {
            if self.parked[i].deadline > now {
                i += 1;
                continue;
            }
            let p = self.unpark(i);
            if !is_idle(&p.pending) {
                refuse(
                    &p.stream,
                    p.remote,
                    Refusal::HeadTimeout,
                    "request head not finished in time",
                );
            }
        }
    }
}

/// True when a connection has sent nothing of a request yet: no bytes, or only the empty
/// lines RFC 9112 §2.2 lets a client send before a request line (some send CRLF after a body).
fn is_idle(pending: &[u8]) -> bool {
    pending.iter().all(|b| matches!(b, b'\r' | b'\n'))
}

/// Refuses `conn`, which waited longer than the queue timeout for a worker: 503 with
/// `Retry-After`, by the reactor's sweep or by the worker that took it just past the bound.
pub(crate) fn refuse_waited_too_long(conn: &Conn) {
    let why = format!("waited {} s in the queue", conn.queued_at.elapsed().as_secs());
    refuse(
        &conn.stream,
        conn.remote,
        Refusal::Overloaded(Overload::QueueWait),
        &why,
    );
}

/// How an early answer may be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Writing {
    /// Without blocking: the reactor, which serves everyone, never waits on one client (the
    /// answer is small and the connection fresh, so it fits the socket's buffer).
    NonBlocking,
    /// Blocking, bounded by the socket's write timeout: a worker, whose connection may still
    /// be sending an earlier pipelined response the client has not read yet.
    Blocking,
}

/// Sends a handler's early answer to `head` ([`super::Handler::answer_early`]) without
/// reading the body, logs and reports it like any exchange, and closes the connection. Used
/// by the reactor and by workers alike.
pub(crate) fn answer_and_close(
    stream: &TcpStream,
    remote: SocketAddr,
    head: &Head,
    resp: Response,
    shared: &Shared,
    writing: Writing,
) {
    let started = Instant::now();
    let _ = stream.set_nonblocking(writing == Writing::NonBlocking);
    let (status, label) = (resp.status, resp.label);
    let (bytes, body_len) = closing_bytes(&resp, head.method == "HEAD");
    let sent = (&*stream).write_all(&bytes).is_ok();
    let _ = stream.set_nonblocking(true);
    let outcome = if sent { "" } else { " (response cut short)" };
    log::info!(
        target: "access",
        "{remote} {} {} {status} in=0 out={body_len} 0ms (answered from the head){outcome}",
        head.method,
        head.logged_path()
    );
    shared.handler.completed(&Exchange {
        method: &head.method,
        label,
        status,
        bytes_in: 0,
        bytes_out: if sent { body_len } else { 0 },
        duration: started.elapsed(),
    });
    close_gently(stream);
}

/// Writes a refusal without blocking, logs it as an access line with `why` (the request, if
/// any, was never parsed: `- -` stands for method and target) and closes the connection.
fn refuse(stream: &TcpStream, remote: SocketAddr, refusal: Refusal, why: &str) {
    let resp = refusal.response();
    let out = resp.body.known_len().unwrap_or(0);
    log::info!(target: "access", "{remote} - - {} in=0 out={out} 0ms ({why})", resp.status);
    let _ = stream.set_nonblocking(true);
    let _ = (&*stream).write_all(&closing_bytes(&resp, false).0);
    close_gently(stream);
}

/// A small in-memory response as the bytes of one write, with `Connection: close`, its body
/// left out for a HEAD; and the body's length as sent.
fn closing_bytes(resp: &Response, head_only: bool) -> (Vec<u8>, u64) {
    let mut bytes = encode_head(resp, false);
    match &resp.body {
        super::ResponseBody::Bytes(body) if !head_only => {
            bytes.extend_from_slice(body);
            (bytes, body.len() as u64)
        }
        _ => (bytes, 0),
    }
}

/// Half-closes a non-blocking socket after a final answer and takes what the client already
/// sent (bounded), never waiting for more.
fn close_gently(stream: &TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Closing with unread input makes the kernel send RST, which can destroy the response
    // before the client reads it; take what is already there (bounded) first.
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        if !matches!((&*stream).read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
}
