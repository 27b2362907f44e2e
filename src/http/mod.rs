//! Our HTTP/1.1 server layer: the only code that knows the wire format, and nothing of files.
//!
//! Flow of a connection: [`reactor`] accepts it and parks it (in an `epoll` set, holding no
//! thread) until a complete request head has arrived; the idle worker of the bounded
//! [`crate::pool`] that sees it readable first (or, when none waits, the reactor, which queues
//! it for one) then serves it ([`conn`]), reading the body through [`body`] and writing the
//! reply with [`write`]; if the connection stays open the worker parks it again and takes the
//! next ready connection.
//! A [`Handler`] sees a parsed head and a body reader, and returns a [`Response`] value. Every
//! answer, the handler's or the HTTP layer's own refusal, leaves through [`exchange::send`]:
//! one place that writes it, logs its access line and reports it to [`Handler::completed`].

pub mod accept;
pub mod body;
pub mod chunked;
pub mod conn;
pub mod exchange;
pub mod head;
pub mod reactor;
pub mod refusal;
pub mod write;

pub use body::BodyError;
pub use head::Head;
pub use refusal::{Overload, Refusal};
pub use write::{Response, ResponseBody};

use crate::pool::{Pool, PoolGauges};
use crate::sys;
use std::collections::HashMap;
use std::io;
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Limits and timeouts of the HTTP layer.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Worker threads serving requests.
    pub workers: usize,
    /// Requests with a complete head that may wait for a free worker.
    pub queue: usize,
    /// Longest a request waits in that queue; after it, the worker that finally takes it
    /// answers 503 with `Retry-After` instead of serving it.
    pub queue_timeout: Duration,
    /// Open connections at most (parked and in service); more are answered 503 and closed.
    pub max_connections: usize,
    /// How long an idle connection (new, or between requests) is kept open.
    pub idle_timeout: Duration,
    /// How long a client may take to send a whole request head once it started.
    pub head_timeout: Duration,
    /// Read and write timeout on a socket while a request is served.
    pub io_timeout: Duration,
    /// Largest request body accepted, in bytes (`None`: no limit).
    pub max_body: Option<u64>,
}

/// Connections accepted beyond `max_connections` only so that a probe among them is answered
/// ([`Handler::answer_early`]); anything else on them gets 503 once its head is read.
pub const PROBE_RESERVE: usize = 32;

/// One request as a handler sees it.
pub struct Request<'a> {
    /// The parsed head.
    pub head: &'a Head,
    /// The body ([`body::Body`] on the connection); read it to the end to accept it. A read error
    /// carries a [`BodyError`] saying why.
    pub body: &'a mut dyn std::io::Read,
    /// A trailer field of a chunked body by name (`None` if absent, or before the body ended:
    /// read the body to its end first).
    pub trailer: &'a dyn Fn(&str) -> Option<String>,
    /// The client's address.
    pub remote: SocketAddr,
    /// True once the client has gone (closed or reset its connection): asks the socket without
    /// waiting, cheap enough to call every few mebibytes of long work (a line count) so the
    /// work stops when nobody waits for its answer. A client that only shut down its sending
    /// side counts as gone too (as nginx counts it): a socket cannot tell that from a close.
    pub client_gone: &'a dyn Fn() -> bool,
}

/// What the HTTP layer reports about each finished exchange (for metrics and logs).
#[derive(Debug)]
pub struct Exchange<'a> {
    /// Request method; `-` for a request the server never took in (its head did not parse or
    /// did not come in time, or load refused it first: see [`exchange`]).
    pub method: &'a str,
    /// What the handler said it served ([`Response::labelled`]); `None` for a request the
    /// HTTP layer refused itself.
    pub label: Option<&'static str>,
    /// Status sent.
    pub status: u16,
    /// Body bytes received.
    pub bytes_in: u64,
    /// Body bytes sent.
    pub bytes_out: u64,
    /// Time from a complete head to the last byte written.
    pub duration: Duration,
}

/// The application: turns a request into a response.
pub trait Handler: Send + Sync + 'static {
    /// Serves one request. Framing headers are added by the HTTP layer.
    fn handle(&self, req: &mut Request<'_>) -> Response;
    /// The answer to a request that its head alone decides, if any: probes (from state kept
    /// fresh elsewhere), refusals of a missing or wrong token, unknown URLs. Called by the
    /// reactor for every complete head and by workers for every request, it must never block
    /// or touch the disk. The answer is sent without reading the body and the connection is
    /// closed, so such a request never holds a worker or waits for a worker.
    fn answer_early(&self, _head: &Head) -> Option<Response> {
        None
    }
    /// The label of what `head` asks for ([`Response::labelled`]), for the answers the HTTP
    /// layer gives itself after a head parsed (refused framing, say), so they are counted
    /// under the request's own operation.
    fn label(&self, _head: &Head) -> Option<&'static str> {
        None
    }
    /// Called after each response is written (or failed to be).
    fn completed(&self, _exchange: &Exchange<'_>) {}
}

/// Live connection counts, for metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Load of the worker pool.
    pub pool: Arc<PoolGauges>,
    /// Connections parked waiting for a request head.
    pub parked: AtomicUsize,
    /// Requests being served right now (one per connection on a worker).
    pub in_flight: AtomicUsize,
}

/// A connection with a complete request head, on its way from the reactor to a worker: the head
/// is parsed once, by the reactor, and travels here.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// The client's address.
    pub remote: SocketAddr,
    /// The request's head.
    pub head: Head,
    /// Bytes received after the head: the start of its body (perhaps more requests after it).
    pub pending: Vec<u8>,
    /// When it was queued for a worker (see [`HttpConfig::queue_timeout`]).
    pub queued_at: Instant,
}

/// State shared by the reactor and the workers.
pub(crate) struct Shared {
    pub config: HttpConfig,
    pub handler: Arc<dyn Handler>,
    pub stats: Arc<Stats>,
    pub stopping: AtomicBool,
    /// Sockets being served, so a deadline at shutdown can cut them off: each open while it
    /// is here, as the [`InService`] guard that removes it borrows its socket.
    in_service: Mutex<HashMap<u64, RawFd>>,
    next_id: AtomicU64,
    /// Connections waiting for a request head, watched by idle workers and the reactor.
    pub(crate) parked: reactor::ParkedSet,
    /// Wakes the reactor (shutdown; no worker waits on the parked set any more).
    wake: UnixStream,
}

impl Shared {
    /// Registers a socket as in service until the returned guard is dropped (or unregisters
    /// it, [`InService::unregister`]). The socket's number is kept, not a duplicate of it: no
    /// `dup` and `close` per connection taken.
    pub(crate) fn begin_service<'c>(&self, stream: &'c TcpStream) -> InService<'_, 'c> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        self.in_service_map().insert(id, stream.as_raw_fd());
        InService {
            shared: self,
            id,
            _socket: PhantomData,
        }
    }

    fn in_service_map(&self) -> MutexGuard<'_, HashMap<u64, RawFd>> {
        // A poisoned lock (a panic while it was held) still holds a usable map.
        self.in_service.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The handler's early answer to `head` ([`Handler::answer_early`]), if any. A panic in it
    /// is logged and answered 500, so a bug there costs one request, never a thread.
    pub(crate) fn answer_early(&self, head: &Head) -> Option<Response> {
        let early = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handler.answer_early(head)));
        early.unwrap_or_else(|_| {
            log::error!(
                "answering {} {} from its head panicked",
                head.method,
                head.logged_path()
            );
            Some(Refusal::Internal.response())
        })
    }

    pub(crate) fn wake_reactor(&self) {
        use std::io::Write;
        let _ = (&self.wake).write(&[1]);
    }
}

/// A connection registered as in service (see [`Shared::begin_service`]); dropping it
/// unregisters the connection, also when serving it panicked. It borrows the socket, which
/// therefore stays open while registered.
pub(crate) struct InService<'s, 'c> {
    shared: &'s Shared,
    id: u64,
    _socket: PhantomData<&'c TcpStream>,
}

impl<'s> InService<'s, '_> {
    /// Unregisters the socket before it is parked (where the deadline sweep may close it),
    /// keeping the connection counted in service until the returned guard is dropped, after
    /// it is parked: so the connection limit never misses it.
    pub(crate) fn unregister(self) -> Counted<'s> {
        let shared = self.shared;
        shared.in_service_map().remove(&self.id);
        std::mem::forget(self);
        Counted { shared }
    }
}

impl Drop for InService<'_, '_> {
    fn drop(&mut self) {
        self.shared.in_service_map().remove(&self.id);
        self.shared.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection still counted in service, no longer registered ([`InService::unregister`]).
pub(crate) struct Counted<'s> {
    shared: &'s Shared,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.shared.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running server: the reactor thread and its worker pool.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    reactor: Option<JoinHandle<()>>,
    pool: Arc<Pool<Conn>>,
}

/// How a shutdown went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Requests still running at the deadline, whose connections were cut.
    pub cut_off: usize,
}

impl Server {
    /// Binds `addr` and starts serving with `handler`.
    pub fn start(addr: &str, config: HttpConfig, handler: Arc<dyn Handler>, stats: Arc<Stats>) -> io::Result<Server> {
        Server::start_on(TcpListener::bind(addr)?, config, handler, stats)
    }

    /// Starts serving with `handler` on `listener`, bound beforehand (so that an address that
    /// cannot be bound stops the service before it does any other work).
    pub fn start_on(
        listener: TcpListener,
        config: HttpConfig,
        handler: Arc<dyn Handler>,
        stats: Arc<Stats>,
    ) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (wake, wake_rx) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            config: config.clone(),
            handler,
            stats: Arc::clone(&stats),
            stopping: AtomicBool::new(false),
            in_service: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            parked: reactor::ParkedSet::new()?,
            wake,
        });
        let worker_shared = Arc::clone(&shared);
        let pool = Arc::new(Pool::start(
            "http-nas-worker",
            config.workers,
            config.queue,
            Arc::clone(&stats.pool),
            move |c| conn::serve(c, &worker_shared),
        )?);
        let reactor_pool = Arc::clone(&pool);
        let reactor_shared = Arc::clone(&shared);
        let reactor = thread::Builder::new()
            .name("http-nas-reactor".into())
            .spawn(move || reactor::Reactor::new(listener, wake_rx, reactor_pool, reactor_shared).run())?;
        Ok(Server {
            addr,
            shared,
            reactor: Some(reactor),
            pool,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes idle connections, and waits up to `timeout` for requests in
    /// service to finish; any still running then have their sockets shut down, which makes
    /// their body reads fail so handlers roll back, and are waited for a little longer.
    pub fn shutdown(mut self, timeout: Duration) -> ShutdownReport {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.wake_reactor();
        if let Some(reactor) = self.reactor.take() {
            let _ = reactor.join();
        }
        let pool = &self.pool;
        pool.close();
        if pool.join_until(Instant::now() + timeout) {
            return ShutdownReport { cut_off: 0 };
        }
        let cut_off = self.in_service();
        // Under the map's lock no guard can unregister, so every socket listed is open.
        for fd in self.shared.in_service_map().values() {
            sys::shutdown_socket(*fd);
        }
        pool.join_until(Instant::now() + Duration::from_secs(5));
        ShutdownReport { cut_off }
    }

    /// Requests in service plus those queued for a worker: all must finish before exit.
    fn in_service(&self) -> usize {
        let stats = &self.shared.stats;
        stats.in_flight.load(Ordering::SeqCst) + stats.pool.queued.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Answers every request with a short 200, except `/panic` (its handler panics) and
    /// `/panic-early` (its early answer panics); keeps the status of each exchange reported.
    #[derive(Default)]
    struct Hello {
        completed: Mutex<Vec<u16>>,
    }

    impl Handler for Hello {
        fn handle(&self, req: &mut Request<'_>) -> Response {
            assert!(req.head.target != "/panic", "a handler bug, on purpose");
            Response::text(200, "hello")
        }

        fn answer_early(&self, head: &Head) -> Option<Response> {
            assert!(head.target != "/panic-early", "an early-answer bug, on purpose");
            None
        }

        fn completed(&self, exchange: &Exchange<'_>) {
            self.completed.lock().unwrap().push(exchange.status);
        }
    }

    /// Held by each test that runs a server, so `httparse` calls are counted for one at a time.
    static ONE_SERVER: Mutex<()> = Mutex::new(());

    fn start_with(handler: Arc<Hello>) -> Server {
        let config = HttpConfig {
            workers: 1,
            queue: 4,
            queue_timeout: Duration::from_secs(10),
            max_connections: 16,
            idle_timeout: Duration::from_secs(10),
            head_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(10),
            max_body: None,
        };
        Server::start("127.0.0.1:0", config, handler, Arc::default()).expect("start a server")
    }

    fn start() -> Server {
        start_with(Arc::default())
    }

    /// Sends `request` on a new connection and returns all the server sent until it closed.
    fn exchange(server: &Server, request: &[u8]) -> String {
        let mut conn = TcpStream::connect(server.local_addr()).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set a read timeout");
        conn.write_all(request).expect("send a request");
        let mut got = Vec::new();
        let _ = conn.read_to_end(&mut got);
        String::from_utf8_lossy(&got).into_owned()
    }

    #[test]
    fn a_panicking_handler_or_early_answer_is_answered_500_and_reported() {
        let _alone = ONE_SERVER.lock().unwrap_or_else(|p| p.into_inner());
        let hello = Arc::new(Hello::default());
        let server = start_with(Arc::clone(&hello));
        for target in ["/panic", "/panic-early"] {
            let request = format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n");
            let got = exchange(&server, request.as_bytes());
            assert!(got.starts_with("HTTP/1.1 500 "), "{target}: {got:?}");
        }
        // Still serving, on the same single worker.
        let got = exchange(&server, b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert!(got.starts_with("HTTP/1.1 200 "), "{got:?}");
        server.shutdown(Duration::from_secs(5));
        assert_eq!(*hello.completed.lock().unwrap(), [500, 500, 200]);
    }

    /// Reads one whole `hello` response from `conn`.
    fn read_hello(conn: &mut TcpStream) {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"\r\n\r\nhello") {
            let n = conn.read(&mut buf).expect("read a response");
            assert!(n > 0, "closed before the response: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert!(
            got.starts_with(b"HTTP/1.1 200 OK\r\n"),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
    }

    /// How often the server ran `httparse` for a request (the head arrives in one read).
    #[test]
    fn a_request_head_is_parsed_once() {
        use head::tests::SERVER_PARSES;
        const REQUESTS: usize = 3;
        let _alone = ONE_SERVER.lock().unwrap_or_else(|p| p.into_inner());
        let server = start();
        let mut conn = TcpStream::connect(server.local_addr()).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set a read timeout");
        let before = SERVER_PARSES.load(Ordering::SeqCst);
        for _ in 0..REQUESTS {
            conn.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
                .expect("send a request");
            read_hello(&mut conn);
        }
        conn.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .expect("send the last request");
        read_hello(&mut conn);
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest);
        let parses = SERVER_PARSES.load(Ordering::SeqCst) - before;
        eprintln!("{parses} httparse calls for {} requests", REQUESTS + 1);
        assert_eq!(parses, REQUESTS + 1, "each request head should be parsed once");
        server.shutdown(Duration::from_secs(5));
    }
}
