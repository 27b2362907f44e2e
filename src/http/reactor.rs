//! The reactor: one thread that accepts connections and parks them in `poll(2)` until a whole
//! request head has arrived, so that idle and slow clients hold a file descriptor and a few
//! bytes, never a worker.
//!
//! A parked connection is read without blocking into its own small buffer (grown only by the
//! bytes that arrive, at most [`MAX_HEAD_BYTES`]), and the buffer parsed ([`read_head`]) after
//! each read. Once it holds a complete head, an early answer ([`super::Handler::answer_early`])
//! is sent from here; otherwise the connection goes to the worker pool carrying the parsed
//! head and the bytes after it, so no request is parsed twice. If the pool and its queue are
//! full, the client gets `503` with `Retry-After` at once. Deadlines: a connection with no
//! bytes of a request waits at most the idle timeout; once a head has started it must finish
//! within the head timeout.
//! Refusals written from here are tiny and written without blocking: a client that does not
//! read them simply loses them. Every answer leaves through [`exchange::send`].

use super::accept::{self, ACCEPT_BACKOFF, Accepted, MAX_ACCEPTS_PER_WAKE};
use super::exchange::{self, Answered, Delivery};
use super::head::{Head, MAX_HEAD_BYTES, read_head};
use super::refusal::{Overload, Refusal};
use super::{Conn, Idle, PROBE_RESERVE, Shared};
use crate::pool::Pool;
use crate::sys;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, RawFd};
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
    /// A complete head was read: the head, parsed, and its length in the buffer.
    Ready(Head, usize),
    /// The connection is finished (closed, refused or broken).
    Gone,
}

/// The accept-and-park loop; see the module docs.
pub(crate) struct Reactor {
    listener: Option<TcpListener>,
    wake: UnixStream,
    returned: Receiver<Idle>,
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
        returned: Receiver<Idle>,
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
                    // Once per connection, not per hand-over to a worker: the read and write
                    // timeouts of its blocking calls there (a non-blocking read here ignores them).
                    let timeout = Some(self.shared.config.io_timeout);
                    if stream.set_read_timeout(timeout).is_err() || stream.set_write_timeout(timeout).is_err() {
                        continue;
                    }
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
                            &self.shared,
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
            Readiness::Ready(head, head_len) => {
                let mut p = self.unpark(index);
                let started = Instant::now();
                // The reactor is the one thread every client needs: a bug in the handler's early
                // answer costs this request a 500, never the reactor.
                let early = self.shared.answer_early(&head);
                if let Some(resp) = early {
                    let to = Answered::head(p.remote, &head, started).noting("answered from the head");
                    exchange::send(&p.stream, resp, to, Delivery::NonBlocking, &self.shared);
                    return;
                }
                if p.over_limit {
                    refuse(
                        &p.stream,
                        p.remote,
                        Refusal::Overloaded(Overload::Connections),
                        "connection limit",
                        &self.shared,
                    );
                    return;
                }
                p.pending.drain(..head_len);
                let conn = Conn {
                    stream: p.stream,
                    remote: p.remote,
                    head,
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
                        &self.shared,
                    );
                }
            }
        }
    }

    fn read_parked(&mut self, index: usize) -> Readiness {
        let head_timeout = self.shared.config.head_timeout;
        let p = &mut self.parked[index];
        let room = MAX_HEAD_BYTES.saturating_sub(p.pending.len()).max(1);
        match sys::recv_now(p.stream.as_fd(), &mut self.scratch[..room]) {
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
        match read_head(&p.pending) {
            Ok(Some((head, len))) => Readiness::Ready(head, len),
            Ok(None) => Readiness::Waiting,
            Err(e) => {
                refuse(&p.stream, p.remote, Refusal::Head(e), &e.to_string(), &self.shared);
                Readiness::Gone
            }
        }
    }

    /// Answers 503 to requests that waited longer than the queue timeout for a worker (every
    /// worker held by slow clients, say), so none waits without end.
    fn refuse_expired_in_queue(&mut self) {
        for conn in self.pool.take_expired(self.shared.config.queue_timeout) {
            refuse_waited_too_long(&conn, &self.shared);
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
                    &self.shared,
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
pub(crate) fn refuse_waited_too_long(conn: &Conn, shared: &Shared) {
    let why = format!("waited {} s in the queue", conn.queued_at.elapsed().as_secs());
    let to = Answered {
        started: conn.queued_at,
        ..Answered::unread(conn.remote, &why)
    };
    let resp = Refusal::Overloaded(Overload::QueueWait).response();
    exchange::send(&conn.stream, resp, to, Delivery::NonBlocking, shared);
}

/// Refuses a connection the server did not take in (see [`exchange`]) with `refusal`, logged
/// with `why`, without blocking, and closes it.
fn refuse(stream: &TcpStream, remote: SocketAddr, refusal: Refusal, why: &str, shared: &Shared) {
    let to = Answered::unread(remote, why);
    exchange::send(stream, refusal.response(), to, Delivery::NonBlocking, shared);
}
