//! The parked connections and the reactor thread.
//!
//! A connection waiting for (the rest of) a request head is parked in the [`ParkedSet`]: a slot
//! in a slab and an `epoll` registration armed for one readiness event (`EPOLLONESHOT`), so
//! idle and slow clients hold a file descriptor and a few bytes, never a thread. Whoever gets a
//! parked connection's event takes it out of the slab and owns it: an idle worker waiting on
//! the set ([`ParkedSet::wait`]), which then serves the request itself with no hand-over, or
//! this reactor when no worker waits. The taker reads what arrived without blocking
//! ([`advance`]) into the connection's own small buffer (grown only by the bytes that arrive,
//! at most [`MAX_HEAD_BYTES`]) and parses it ([`read_head`]); a head still partial is parked
//! again, so a slow client never holds a worker.
//!
//! The reactor thread accepts connections and parks them, enforces the deadlines (a
//! connection with no bytes of a request waits at most the idle timeout; once a head has
//! started it must finish within the head timeout) and, whenever no worker waits on the set,
//! watches it itself: an early answer ([`super::Handler::answer_early`], probes) is sent from
//! here, any other complete head goes to the worker pool's queue carrying the parsed head and
//! the bytes after it (so no request is parsed twice), or `503` with `Retry-After` at once if
//! the pool and its queue are full. So probes are answered under any load.
//! Refusals written from here are tiny and written without blocking: a client that does not
//! read them simply loses them. Every answer leaves through [`exchange::send`].

use super::accept::{self, ACCEPT_BACKOFF, Accepted, MAX_ACCEPTS_PER_WAKE};
use super::exchange::{self, Answered, Delivery};
use super::head::{Head, MAX_HEAD_BYTES, read_head};
use super::refusal::{Overload, Refusal};
use super::{Conn, PROBE_RESERVE, Shared};
use crate::pool::Pool;
use crate::sys;
use std::cell::RefCell;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// Longest the reactor sleeps in `poll` without checking deadlines, in milliseconds.
const MAX_POLL_WAIT_MS: u64 = 1000;
/// Longest the reactor leaves the parked set to the workers waiting on it before it looks
/// whether any still waits, in milliseconds: a probe arriving while every worker is busy
/// is answered within about this long, and so is a request that becomes ready when every
/// waiter has just taken a request that then blocks (a withheld body, a lock wait) while other
/// workers are idle. 10 ms made such a GET wait ~10 ms (p50, 2 CPUs, 4 blocking requests:
/// `benches/experiments/ready_while_workers_block.py`); 1 ms: p50 0.85 ms, at no measurable cost
/// to 4 KiB GETs per second.
const WATCH_CHECK_MS: u64 = 1;
/// Longest a connection accepted into the probe reserve may take to send its head.
const RESERVE_WAIT: Duration = Duration::from_secs(2);
/// Most events the reactor takes from the parked set per wake.
const REACTOR_EVENTS: usize = 64;
/// Most workers waiting on the parked set at once, per CPU. Each event wakes one sleeping
/// waiter, so every waiter beyond what the CPUs can run only turns a request that a worker
/// finishing its last one would have taken without sleeping into a wake-up of another thread.
/// Measured with `wrk -t2 -c16` on 4 KiB GETs (2 CPUs): no cap 0.94 context switches per
/// request and 20 µs of CPU, 2 per CPU 0.28 and 18 µs; 1 per CPU left a CPU idle while its
/// worker served (-30% requests/s).
const WAITERS_PER_CPU: usize = 2;

/// A connection waiting, on no thread, for (the rest of) a request head.
pub(crate) struct Parked {
    pub(crate) stream: TcpStream,
    pub(crate) remote: SocketAddr,
    /// Bytes received of the next head (perhaps none).
    pub(crate) pending: Vec<u8>,
    /// When it is closed if no complete head has come (idle or head timeout).
    pub(crate) deadline: Instant,
    /// Accepted beyond the connection limit, into the [`PROBE_RESERVE`]: only an early answer
    /// (a probe) is served on it.
    pub(crate) over_limit: bool,
}

impl Parked {
    /// A kept-alive connection between requests, with the bytes of its next head read so far:
    /// it waits the idle timeout if none, else the head timeout from now.
    pub(crate) fn kept_alive(stream: TcpStream, remote: SocketAddr, pending: Vec<u8>, shared: &Shared) -> Parked {
        let timeout = if is_idle(&pending) {
            shared.config.idle_timeout
        } else {
            shared.config.head_timeout
        };
        Parked {
            stream,
            remote,
            pending,
            deadline: Instant::now() + timeout,
            over_limit: false,
        }
    }
}

/// The parked connections: a slab of slots, each armed in one `epoll` set with a token naming
/// its slot and the slot's generation (so an event that comes after its connection was taken
/// out by the deadline sweep never reaches the connection parked there since).
pub(crate) struct ParkedSet {
    epoll: sys::Epoll,
    slab: Mutex<Slab>,
    /// Workers waiting on the set right now ([`ParkedSet::wait`]).
    waiting: AtomicUsize,
    /// Most workers that wait on the set at once ([`WAITERS_PER_CPU`]).
    most_waiting: usize,
}

#[derive(Default)]
struct Slab {
    slots: Vec<Slot>,
    free: Vec<usize>,
    len: usize,
    /// No parked connection's deadline is earlier (it may be later: the bound is made exact
    /// by each deadline sweep).
    earliest: Option<Instant>,
    /// Set at shutdown: nothing is parked any more.
    closed: bool,
}

#[derive(Default)]
struct Slot {
    generation: u32,
    conn: Option<Parked>,
}

/// Whether a connection is in the epoll set yet.
enum Arming {
    /// Just accepted: added to the set.
    First,
    /// Taken out after an event: armed again (added if it never was).
    Again,
}

fn token(index: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | index as u64
}

impl ParkedSet {
    pub(crate) fn new() -> io::Result<ParkedSet> {
        Ok(ParkedSet {
            epoll: sys::Epoll::new()?,
            slab: Mutex::new(Slab::default()),
            waiting: AtomicUsize::new(0),
            most_waiting: thread::available_parallelism().map_or(1, |n| n.get()) * WAITERS_PER_CPU,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Slab> {
        // Only slab bookkeeping and one epoll_ctl run under the lock; a poisoned one still
        // holds a consistent slab.
        self.slab.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections parked now.
    pub(crate) fn len(&self) -> usize {
        self.lock().len
    }

    /// Parks `conn` and arms it for its next readiness event. Closed at once if the server is
    /// stopping or the kernel refuses to watch it.
    pub(crate) fn park(&self, conn: Parked, shared: &Shared) {
        self.put(conn, Arming::Again, shared);
    }

    /// Parks `conn`, just accepted (see [`ParkedSet::park`]).
    fn park_new(&self, conn: Parked, shared: &Shared) {
        self.put(conn, Arming::First, shared);
    }

    fn put(&self, conn: Parked, arming: Arming, shared: &Shared) {
        let mut slab = self.lock();
        if slab.closed {
            return;
        }
        let index = match slab.free.pop() {
            Some(i) => i,
            None => {
                slab.slots.push(Slot::default());
                slab.slots.len() - 1
            }
        };
        let slot = &mut slab.slots[index];
        slot.generation = slot.generation.wrapping_add(1);
        // Armed under the lock: the deadline sweep cannot close the socket in between.
        let token = token(index, slot.generation);
        let armed = match arming {
            Arming::First => self.epoll.add(conn.stream.as_fd(), token),
            Arming::Again => self.epoll.rearm(conn.stream.as_fd(), token),
        };
        if let Err(e) = armed {
            log::warn!("cannot watch the connection of {}: {e}", conn.remote);
            slab.free.push(index);
            return;
        }
        let deadline = conn.deadline;
        slab.slots[index].conn = Some(conn);
        let earlier = slab.earliest.is_none_or(|e| deadline < e);
        if earlier {
            slab.earliest = Some(deadline);
        }
        slab.len += 1;
        shared.stats.parked.store(slab.len, Ordering::Relaxed);
        drop(slab);
        // A deadline before any the reactor sleeps towards (a head begun on a worker, with a
        // head timeout shorter than the idle timeout): it must wake for it.
        if earlier {
            shared.wake_reactor();
        }
    }

    /// No parked connection's deadline is earlier than this.
    fn earliest(&self) -> Option<Instant> {
        self.lock().earliest
    }

    /// Takes out the connection an event of `token` was for, unless it is no longer there.
    fn take(&self, token: u64, shared: &Shared) -> Option<Parked> {
        let index = (token & u64::from(u32::MAX)) as usize;
        let generation = (token >> 32) as u32;
        let mut slab = self.lock();
        let slot = slab.slots.get_mut(index).filter(|s| s.generation == generation)?;
        let conn = slot.conn.take()?;
        slab.free.push(index);
        slab.len -= 1;
        shared.stats.parked.store(slab.len, Ordering::Relaxed);
        Some(conn)
    }

    /// Takes out the connections whose deadline passed.
    fn take_expired(&self, now: Instant, shared: &Shared) -> Vec<Parked> {
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        let mut slab = self.lock();
        let slab = &mut *slab;
        for (index, slot) in slab.slots.iter_mut().enumerate() {
            let Some(conn) = &slot.conn else { continue };
            if conn.deadline > now {
                next = Some(next.map_or(conn.deadline, |n| n.min(conn.deadline)));
                continue;
            }
            if let Some(conn) = slot.conn.take() {
                expired.push(conn);
                slab.free.push(index);
                slab.len -= 1;
            }
        }
        slab.earliest = next;
        shared.stats.parked.store(slab.len, Ordering::Relaxed);
        expired
    }

    /// Closes every parked connection and parks none from now on (shutdown).
    fn close(&self, shared: &Shared) {
        let mut slab = self.lock();
        slab.closed = true;
        let all: Vec<Parked> = slab.slots.iter_mut().filter_map(|s| s.conn.take()).collect();
        slab.len = 0;
        shared.stats.parked.store(0, Ordering::Relaxed);
        drop(slab);
        drop(all);
    }

    /// Waits up to `timeout_ms` on a worker for a parked connection to become readable and
    /// takes it out (now owned by the caller). One at a time, so a ready connection never
    /// waits behind another on a busy worker while an idle one could take it (taking up to 4
    /// per wait measured no better at 256 connections). While any worker waits here the
    /// reactor leaves the set to it; the last one to stop waiting with nothing found tells
    /// the reactor, which watches the set again at once. When [`WAITERS_PER_CPU`] workers per
    /// CPU wait already, returns `None` at once: the caller goes back to the pool's queue.
    pub(crate) fn wait(&self, timeout_ms: i32, shared: &Shared) -> Option<Parked> {
        let mut events = [sys::epoll_event_slot()];
        let joined = self.waiting.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < self.most_waiting).then_some(n + 1)
        });
        if joined.is_err() {
            return None;
        }
        let got = self.epoll.wait(&mut events, timeout_ms);
        let others = self.waiting.fetch_sub(1, Ordering::SeqCst) - 1;
        let taken = match got {
            Ok(1) => self.take(sys::epoll_token(&events[0]), shared),
            Ok(_) => None,
            Err(e) => {
                log::error!("epoll_wait failed: {e}");
                None
            }
        };
        if taken.is_none() && others == 0 {
            shared.wake_reactor();
        }
        taken
    }
}

thread_local! {
    /// Each thread's buffer for reading parked connections, so reading one costs no allocation.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; MAX_HEAD_BYTES].into_boxed_slice());
}

/// What became of a parked connection after it was readable.
pub(crate) enum Readiness {
    /// Still waiting for (more of) a head: park it again.
    Waiting(Parked),
    /// A complete head was read: the head, parsed, and its length in the buffer.
    Ready(Parked, Head, usize),
    /// The connection is finished (closed, refused or broken).
    Gone,
}

/// Reads what a connection taken from the set holds, without blocking, and parses the head.
pub(crate) fn advance(mut p: Parked, shared: &Shared) -> Readiness {
    let room = MAX_HEAD_BYTES.saturating_sub(p.pending.len()).max(1);
    let read = SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let got = sys::recv_now(p.stream.as_fd(), &mut scratch[..room]);
        if let Ok(n) = got {
            let was_idle = is_idle(&p.pending);
            p.pending.extend_from_slice(&scratch[..n]);
            if n > 0 && was_idle && !is_idle(&p.pending) {
                p.deadline = Instant::now() + shared.config.head_timeout;
            }
        }
        got
    });
    match read {
        Ok(0) => return Readiness::Gone,
        Ok(_) => {}
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
            return Readiness::Waiting(p);
        }
        Err(_) => return Readiness::Gone,
    }
    match read_head(&p.pending) {
        Ok(Some((head, len))) => Readiness::Ready(p, head, len),
        Ok(None) => Readiness::Waiting(p),
        Err(e) => {
            refuse(&p.stream, p.remote, Refusal::Head(e), &e.to_string(), shared);
            Readiness::Gone
        }
    }
}

/// Answers a complete head that needs no worker (an early answer, or 503 on a connection
/// of the probe reserve), sending with `delivery`; otherwise gives the request back to be
/// served, the bytes after its head kept.
pub(crate) fn dispatch(
    mut p: Parked,
    head: Head,
    head_len: usize,
    delivery: Delivery,
    shared: &Shared,
) -> Option<Conn> {
    let started = Instant::now();
    // A bug in the handler's early answer costs this request a 500, never the thread.
    if let Some(resp) = shared.answer_early(&head) {
        let to = Answered::head(p.remote, &head, started).noting("answered from the head");
        exchange::send(&p.stream, resp, to, delivery, shared);
        return None;
    }
    if p.over_limit {
        refuse(
            &p.stream,
            p.remote,
            Refusal::Overloaded(Overload::Connections),
            "connection limit",
            shared,
        );
        return None;
    }
    p.pending.drain(..head_len);
    Some(Conn {
        stream: p.stream,
        remote: p.remote,
        head,
        pending: p.pending,
        queued_at: started,
    })
}

/// The accept-and-watch loop; see the module docs.
pub(crate) struct Reactor {
    listener: Option<TcpListener>,
    wake: UnixStream,
    pool: Arc<Pool<Conn>>,
    shared: Arc<Shared>,
    paused_until: Option<Instant>,
}

impl Reactor {
    pub(crate) fn new(listener: TcpListener, wake: UnixStream, pool: Arc<Pool<Conn>>, shared: Arc<Shared>) -> Self {
        Reactor {
            listener: Some(listener),
            wake,
            pool,
            shared,
            paused_until: None,
        }
    }

    /// Runs until the server is told to stop; then closes the listener and every parked
    /// connection and returns (queued requests are still served by the pool).
    pub(crate) fn run(mut self) {
        let mut fds: Vec<sys::PollFd> = Vec::with_capacity(3);
        let mut events = [sys::epoll_event_slot(); REACTOR_EVENTS];
        while !self.shared.stopping.load(Ordering::SeqCst) {
            let now = Instant::now();
            let accepting = self.paused_until.is_none_or(|t| now >= t);
            // Left to the workers while any waits on it (the kernel wakes one of them per
            // event; were the reactor polling the set too, it would wake for every event).
            let watching = self.shared.parked.waiting.load(Ordering::SeqCst) == 0;
            fds.clear();
            fds.push(sys::poll_entry(self.wake.as_raw_fd()));
            let listener = self.listener.as_ref().filter(|_| accepting).map(|l| l.as_raw_fd());
            fds.extend(listener.map(sys::poll_entry));
            if watching {
                fds.push(sys::poll_entry(self.shared.parked.epoll.as_raw_fd()));
            }
            if let Err(e) = sys::poll(&mut fds, self.poll_wait_ms(now, watching)) {
                log::error!("poll failed: {e}");
                std::thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
            if sys::poll_ready(&fds[0]) {
                self.drain_wake();
            }
            if watching && fds.last().is_some_and(sys::poll_ready) {
                self.serve_ready(&mut events);
            }
            if listener.is_some() && sys::poll_ready(&fds[1]) {
                self.accept_new();
            }
            self.expire(Instant::now());
            self.refuse_expired_in_queue();
        }
        self.listener = None;
        self.shared.parked.close(&self.shared);
    }

    fn poll_wait_ms(&self, now: Instant, watching: bool) -> i32 {
        let mut wait = Duration::from_millis(if watching { MAX_POLL_WAIT_MS } else { WATCH_CHECK_MS });
        if let Some(next) = self.shared.parked.earliest() {
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

    /// Takes the ready parked connections (no worker waits for them): reads their heads,
    /// answers what needs no worker and queues the rest for the pool.
    fn serve_ready(&mut self, events: &mut [sys::EpollEvent]) {
        let shared = &*self.shared;
        let n = match shared.parked.epoll.wait(events, 0) {
            Ok(n) => n,
            Err(e) => {
                log::error!("epoll_wait failed: {e}");
                return;
            }
        };
        for event in &events[..n] {
            let Some(p) = shared.parked.take(sys::epoll_token(event), shared) else {
                continue;
            };
            let (p, head, head_len) = match advance(p, shared) {
                Readiness::Waiting(p) => {
                    shared.parked.park(p, shared);
                    continue;
                }
                Readiness::Gone => continue,
                Readiness::Ready(p, head, len) => (p, head, len),
            };
            self.hand_over(p, head, head_len);
        }
    }

    /// A parked connection whose whole head has come: answered here (an early answer), or
    /// given to the pool, or refused when the pool and its queue are full.
    fn hand_over(&self, p: Parked, head: Head, head_len: usize) {
        let shared = &*self.shared;
        let Some(conn) = dispatch(p, head, head_len, Delivery::NonBlocking, shared) else {
            return;
        };
        if let Err(conn) = self.pool.try_submit(conn) {
            log::warn!("refusing {}: all workers busy and the queue is full", conn.remote);
            let _ = conn.stream.set_nonblocking(true);
            refuse(
                &conn.stream,
                conn.remote,
                Refusal::Overloaded(Overload::Workers),
                "workers and queue full",
                shared,
            );
        }
    }

    fn accept_new(&mut self) {
        for _ in 0..MAX_ACCEPTS_PER_WAKE {
            let Some(listener) = &self.listener else { return };
            match accept::accept_one(listener) {
                Accepted::Conn(stream, remote) => {
                    // Once per connection, not per request: the read and write timeouts of
                    // its blocking calls on workers (a non-blocking read ignores them).
                    let timeout = Some(self.shared.config.io_timeout);
                    if stream.set_read_timeout(timeout).is_err() || stream.set_write_timeout(timeout).is_err() {
                        continue;
                    }
                    let stats = &self.shared.stats;
                    let open = self.shared.parked.len()
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
                    let parked = Parked {
                        stream,
                        remote,
                        pending: Vec::new(),
                        deadline: Instant::now() + wait,
                        over_limit,
                    };
                    self.shared.parked.park_new(parked, &self.shared);
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

    /// Answers 503 to requests that waited longer than the queue timeout for a worker (every
    /// worker held by slow clients, say), so none waits without end.
    fn refuse_expired_in_queue(&mut self) {
        for conn in self.pool.take_expired(self.shared.config.queue_timeout) {
            refuse_waited_too_long(&conn, &self.shared);
        }
    }

    /// Closes the parked connections whose deadline passed (refusing an unfinished head),
    /// when one may have: the sweep walks every parked connection.
    fn expire(&mut self, now: Instant) {
        if self.shared.parked.earliest().is_none_or(|d| d > now) {
            return;
        }
        let expired = self.shared.parked.take_expired(now, &self.shared);
        for p in expired {
            // What came in meanwhile is read first: a deadline that passed while the process
            // was paused (SIGSTOP, a container freeze) or while its event waited in the set
            // must not cost a request the client finished in time.
            let p = match advance(p, &self.shared) {
                Readiness::Ready(p, head, len) => {
                    self.hand_over(p, head, len);
                    continue;
                }
                Readiness::Gone => continue,
                Readiness::Waiting(p) => p,
            };
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
