//! Raw HTTP/1.1 over a `TcpStream`, for the requests curl would never send.
//!
//! The framing tests, and those of clients that vanish mid-body, need exact bytes on the wire
//! (lying lengths, broken chunks, a request smuggled behind a body) and need to see exactly what
//! comes back, including interim `100 Continue` responses and whether the server closes the
//! connection. [`Conn`] keeps the unparsed bytes between responses; [`parse_responses`] splits
//! a whole stream into responses, so "exactly one response" is a count. Heads are parsed by
//! `httparse`; bodies are framed here (Content-Length, chunked, or up to EOF). Every read is
//! bounded by [`RAW_TIMEOUT`], so a server that hangs fails the test instead of blocking it.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::bytes::preview;
use super::response::Response;
use super::server::Server;

/// Upper bound on any raw-socket read: a server that hangs fails the test.
pub const RAW_TIMEOUT: Duration = Duration::from_secs(10);

impl Server {
    /// A raw connection to the server.
    pub fn connect(&self) -> Conn {
        Conn::open(self.addr())
    }
}

/// A raw client connection that keeps whatever it has read but not yet parsed.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    sent: Vec<u8>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        // A head and a body sent as two writes must not wait for a delayed ACK (Nagle).
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            buf: Vec::new(),
            sent: Vec::new(),
        }
    }

    /// Connects, or `None` when nobody listens (a server that was killed).
    pub fn try_open(addr: SocketAddr) -> Option<Conn> {
        let stream = TcpStream::connect_timeout(&addr, RAW_TIMEOUT).ok()?;
        let _ = stream.set_nodelay(true);
        Some(Conn {
            stream,
            buf: Vec::new(),
            sent: Vec::new(),
        })
    }

    /// Another handle on the socket, for a thread that keeps sending while this one reads.
    pub fn try_clone_stream(&self) -> TcpStream {
        self.stream.try_clone().expect("clone a connected socket")
    }

    /// The client side's address, as the server sees it (and logs it).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local address of a connected socket")
    }

    /// Writes `bytes`. A write error is ignored: a server may rightly close the connection
    /// before reading everything, and the test judges what it answered, not our write.
    pub fn send(&mut self, bytes: &[u8]) -> &mut Self {
        let _ = self.stream.write_all(bytes);
        if self.sent.len() < 4096 {
            self.sent.extend_from_slice(&bytes[..bytes.len().min(4096)]);
        }
        self
    }

    /// Half-closes: the server reads EOF after what was sent.
    pub fn shutdown_write(&mut self) -> &mut Self {
        let _ = self.stream.shutdown(Shutdown::Write);
        self
    }

    /// Reads the next complete response (a `100 Continue` counts as one).
    #[track_caller]
    pub fn response(&mut self) -> Response {
        let deadline = Instant::now() + RAW_TIMEOUT;
        loop {
            if let Some((mut response, used)) = parse_one(&self.buf, false) {
                response.context = self.context();
                self.buf.drain(..used);
                return response;
            }
            if !self.fill(deadline) {
                if let Some((mut response, used)) = parse_one(&self.buf, true) {
                    response.context = self.context();
                    self.buf.drain(..used);
                    return response;
                }
                panic!("connection closed before a complete response\n{}", self.context());
            }
        }
    }

    /// Sends `count` kept-alive GETs of `path`, each answered 200 with `body` before the next.
    #[track_caller]
    pub fn get_ok_times(&mut self, path: &str, body: &str, count: usize) -> &mut Self {
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        for _ in 0..count {
            self.send(request.as_bytes());
            self.response().assert_ok_body(body);
        }
        self
    }

    /// Reads the next complete response, or `None` if the connection fails or closes first
    /// (a server killed mid-request); never panics on the connection, only on a bad response.
    pub fn try_response(&mut self) -> Option<Response> {
        self.try_read(|buf| parse_one(buf, false))
    }

    /// Reads the response to a `HEAD` (its `Content-Length` describes a body that is not sent).
    #[track_caller]
    pub fn head_response(&mut self) -> Response {
        match self.try_head_response() {
            Some(response) => response,
            None => panic!("connection closed before a complete HEAD response\n{}", self.context()),
        }
    }

    /// [`Conn::head_response`], or `None` if the connection fails or closes first.
    pub fn try_head_response(&mut self) -> Option<Response> {
        self.try_read(|buf| {
            let (status, headers, head_len) = parse_head(buf)?;
            let body = Vec::new();
            let context = String::new();
            Some((
                Response {
                    status,
                    headers,
                    body,
                    context,
                },
                head_len,
            ))
        })
    }

    /// Reads until `parse` finds a response at the front of what arrived; `None` if the
    /// connection fails, closes or stays silent for [`RAW_TIMEOUT`] first.
    fn try_read(&mut self, parse: impl Fn(&[u8]) -> Option<(Response, usize)>) -> Option<Response> {
        let deadline = Instant::now() + RAW_TIMEOUT;
        loop {
            if let Some((mut response, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                response.context = self.context();
                return Some(response);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                return None;
            }
            let mut chunk = [0; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(n) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                _ => return None,
            }
        }
    }

    /// Reads exactly `out.len()` bytes of what the server sends (headers included).
    #[track_caller]
    pub fn read_exact_some(&mut self, out: &mut [u8]) {
        self.stream
            .set_read_timeout(Some(RAW_TIMEOUT))
            .expect("set read timeout");
        self.stream
            .read_exact(out)
            .unwrap_or_else(|e| panic!("read {} bytes: {e}\n{}", out.len(), self.context()));
    }

    /// Reads until the server closes the connection; panics if it has not within 10 s.
    #[track_caller]
    pub fn read_to_close(&mut self) -> String {
        let deadline = Instant::now() + RAW_TIMEOUT;
        while self.fill(deadline) {}
        String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned()
    }

    /// Reads more into `buf`; false at EOF (a reset counts as EOF: what arrived before it stays).
    #[track_caller]
    fn fill(&mut self, deadline: Instant) -> bool {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        self.stream.set_read_timeout(Some(left)).expect("set read timeout");
        let mut chunk = [0; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => false,
            // A read with a timeout fails with EINTR when a signal wakes this thread (a child's
            // SIGCHLD while another thread is spawning one, say): read again.
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "server neither answered nor closed within {RAW_TIMEOUT:?}\n{}",
                    self.context()
                )
            }
            Err(e) => panic!("read: {e}\n{}", self.context()),
        }
    }

    fn context(&self) -> String {
        format!(
            "raw request (first bytes): {}\nreceived: {}",
            preview(&self.sent),
            preview(&self.buf)
        )
    }
}

/// Sends `request` on a new connection, half-closes if `shutdown_write`, and returns everything
/// the server sent until it closed the connection (panics if it has not within 10 s).
#[track_caller]
pub fn raw(addr: SocketAddr, request: &[u8], shutdown_write: bool) -> String {
    let mut conn = Conn::open(addr);
    conn.send(request);
    if shutdown_write {
        conn.shutdown_write();
    }
    conn.read_to_close()
}

/// What a fresh connection got, in [`attempt`].
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The connection could not be made (nobody listening).
    Refused,
    /// Connected, but closed (or reset) without a byte of response.
    ClosedUnanswered,
    /// Answered with this status.
    Answered(u16),
}

/// Opens a new connection, sends `request` and reports what became of it; panics if the
/// server neither answers nor closes within [`RAW_TIMEOUT`].
#[track_caller]
pub fn attempt(addr: SocketAddr, request: &[u8]) -> Attempt {
    let Ok(stream) = TcpStream::connect_timeout(&addr, RAW_TIMEOUT) else {
        return Attempt::Refused;
    };
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
        sent: Vec::new(),
    };
    let text = conn.send(request).read_to_close();
    if text.is_empty() {
        return Attempt::ClosedUnanswered;
    }
    let status = text.split(' ').nth(1).and_then(|code| code.parse().ok());
    Attempt::Answered(status.unwrap_or_else(|| panic!("not an HTTP response: {}", preview(text.as_bytes()))))
}

/// Parses a whole stream of responses; panics on trailing bytes that are not one.
#[track_caller]
pub fn parse_responses(text: &str) -> Vec<Response> {
    let mut rest = text.as_bytes();
    let mut responses = Vec::new();
    while !rest.is_empty() {
        let Some((mut response, used)) = parse_one(rest, true) else {
            panic!(
                "incomplete response after {} complete one(s): {}",
                responses.len(),
                preview(rest)
            );
        };
        response.context = format!("raw response stream: {}", preview(text.as_bytes()));
        responses.push(response);
        rest = &rest[used..];
    }
    responses
}

/// The one response in `text`; panics if there are none or several (a smuggled request).
#[track_caller]
pub fn only_response(text: &str) -> Response {
    let mut responses = parse_responses(text);
    assert!(
        responses.len() == 1,
        "expected exactly one response, got {}: {}",
        responses.len(),
        preview(text.as_bytes())
    );
    responses.remove(0)
}

/// One response from the front of `buf` and the bytes it used, or `None` if incomplete.
/// A chunked body is decoded; without Content-Length the body runs to EOF (`at_eof`); 1xx,
/// 204 and 304 have none.
fn parse_one(buf: &[u8], at_eof: bool) -> Option<(Response, usize)> {
    let (status, headers, head_len) = parse_head(buf)?;
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("Transfer-Encoding") && v.eq_ignore_ascii_case("chunked"));
    if chunked && !matches!(status, 100..=199 | 204 | 304) {
        let (body, used) = decode_chunked(&buf[head_len..])?;
        let response = Response {
            status,
            headers,
            body,
            context: String::new(),
        };
        return Some((response, head_len + used));
    }
    let length = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"));
    let body_len = match (status, length) {
        (100..=199 | 204 | 304, _) => 0,
        (_, Some((_, len))) => len.parse().unwrap_or_else(|_| panic!("bad Content-Length {len:?}")),
        (_, None) if at_eof => buf.len() - head_len,
        (_, None) => return None,
    };
    let body = buf.get(head_len..head_len + body_len)?.to_vec();
    Some((
        Response {
            status,
            headers,
            body,
            context: String::new(),
        },
        head_len + body_len,
    ))
}

/// A whole chunked body at the front of `buf` (no trailers): the data and the bytes it used,
/// or `None` if incomplete; panics on a malformed one.
fn decode_chunked(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&buf[at..line_end]);
        let size =
            usize::from_str_radix(size_text.trim(), 16).unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
        let data = line_end + 2;
        if size == 0 {
            let end = data + 2;
            assert!(
                buf.len() < end || &buf[data..end] == b"\r\n",
                "trailers are not expected"
            );
            return (buf.len() >= end).then_some((body, end));
        }
        let chunk = buf.get(data..data + size)?;
        body.extend_from_slice(chunk);
        let crlf = buf.get(data + size..data + size + 2)?;
        assert_eq!(crlf, b"\r\n", "chunk data not followed by CRLF");
        at = data + size + 2;
    }
}

/// Response headers, in order.
type Headers = Vec<(String, String)>;

/// More header lines than any response of the server carries; a head with more is a bug worth
/// a panic, not a reason to wait for more bytes.
const MAX_RESPONSE_HEADERS: usize = 128;

/// The status, headers and length of the response head at the front of `buf`, if complete
/// (parsed by `httparse`); panics on a head that is not HTTP/1.x with CRLF line ends.
fn parse_head(buf: &[u8]) -> Option<(u16, Headers, usize)> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut head = httparse::Response::new(&mut slots);
    let head_len = match head.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return None,
        // Judged once the head is complete, as a partial one might still turn out well-formed:
        // until then, a connection that closes has merely not answered.
        Err(_) if !buf.windows(4).any(|w| w == b"\r\n\r\n") => return None,
        Err(e) => panic!("not an HTTP/1.x response head ({e}): {}", preview(buf)),
    };
    // httparse skips empty lines before a status line and accepts a bare LF as a line end; the
    // server must send neither, so a stray CRLF between pipelined responses still fails here.
    let bare_lf = buf[..head_len]
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || buf[i - 1] != b'\r'));
    assert!(
        buf.starts_with(b"HTTP/") && !bare_lf,
        "not an HTTP/1.x status line and CRLF-ended head: {}",
        preview(&buf[..head_len])
    );
    let status = head
        .code
        .unwrap_or_else(|| panic!("a complete head has a status: {}", preview(buf)));
    let headers = head
        .headers
        .iter()
        .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).trim().to_string()))
        .collect();
    Some((status, headers, head_len))
}
