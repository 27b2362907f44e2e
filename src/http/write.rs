//! Responses: the value handlers return, and the one function that puts it on the wire.
//!
//! Handlers never set framing headers: this module alone writes the status line,
//! `Content-Length` (or, for a [streamed](ResponseBody::Stream) body of unknown length,
//! `Transfer-Encoding: chunked` on a kept-alive connection and a body that ends with the
//! connection otherwise), `Connection` and `Date`; and on every response, whatever answered it
//! (a handler, a refusal, an overload), `X-Content-Type-Options: nosniff`, so no browser ever
//! guesses a type the service did not state (a stored file without one sniffed as HTML). Header
//! values are checked for CR/LF here, so no handler can split a response. File bodies go out
//! with `sendfile(2)`, straight from the page cache to the socket.

use crate::sys;
use crate::time::http_date;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::time::SystemTime;

/// Largest single `sendfile` call, in bytes; the loop repeats until the range is sent.
const SENDFILE_CHUNK_BYTES: usize = 1 << 30;
/// Buffer for the read/write fallback when `sendfile` is unsupported, in bytes.
const FALLBACK_BUF_BYTES: usize = 256 * 1024;
/// File bodies up to this size are read behind the head and sent with it in one write, in
/// bytes: one syscall and one segment instead of a write plus a `sendfile` (4 KiB GETs with
/// wrk, alternating A/B: median ~40k -> ~44k req/s; noisy on 2 cores).
const INLINE_FILE_BYTES: u64 = 16 * 1024;

/// Bytes of a [streamed](ResponseBody::Stream) body read and sent at a time (one chunk).
const STREAM_CHUNK_BYTES: usize = 64 * 1024;

/// A response body.
pub enum ResponseBody {
    /// No body (`Content-Length: 0`).
    Empty,
    /// A body held in memory (small: JSON, counts, errors).
    Bytes(Vec<u8>),
    /// `len` bytes of `file` from `offset`, streamed from the file.
    File { file: File, offset: u64, len: u64 },
    /// A body produced while it is sent, of a length not known before (a directory listing):
    /// read [`STREAM_CHUNK_BYTES`] at a time, so its memory does not grow with its size.
    Stream(Box<dyn Read + Send>),
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResponseBody::Empty => write!(f, "Empty"),
            ResponseBody::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            ResponseBody::File { offset, len, .. } => write!(f, "File {{ offset: {offset}, len: {len} }}"),
            ResponseBody::Stream(_) => write!(f, "Stream"),
        }
    }
}

impl ResponseBody {
    /// The body's length in bytes, which becomes `Content-Length`; `None` for a stream.
    pub fn known_len(&self) -> Option<u64> {
        match self {
            ResponseBody::Empty => Some(0),
            ResponseBody::Bytes(b) => Some(b.len() as u64),
            ResponseBody::File { len, .. } => Some(*len),
            ResponseBody::Stream(_) => None,
        }
    }
}

/// Fields [`encode_head`] writes itself from the body and the connection's state; a handler
/// cannot set them ([`Response::with_header`]).
pub const FRAMING_FIELDS: [&str; 5] = [
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Date",
    "Keep-Alive",
];

/// The field every response carries: browsers take the `Content-Type` as stated (or, with
/// none, do not run the body as a page or script).
const NOSNIFF: (&str, &str) = ("X-Content-Type-Options", "nosniff");

/// What a handler answers: status, its own headers, and a body.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers other than the framing ones; set only through [`Response::with_header`].
    headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: ResponseBody,
    /// When true the connection is closed after this response even if the client would keep it.
    pub close: bool,
    /// What the handler served, a fixed label the HTTP layer hands back in the
    /// [`super::Exchange`] (for metrics) and never interprets.
    pub label: Option<&'static str>,
}

impl Response {
    /// A response with `status`, no headers and `body`.
    pub fn new(status: u16, body: ResponseBody) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body,
            close: false,
            label: None,
        }
    }

    /// A response with a text body and `Content-Type: text/plain; charset=utf-8`.
    pub fn text(status: u16, text: impl Into<String>) -> Self {
        Response::new(status, ResponseBody::Bytes(text.into().into_bytes()))
            .with_header("Content-Type", "text/plain; charset=utf-8")
    }

    /// A response with a JSON body.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        let mut body = value.to_string().into_bytes();
        body.push(b'\n');
        Response::new(status, ResponseBody::Bytes(body)).with_header("Content-Type", "application/json")
    }

    /// The error shape every failure uses: `{"error": kind, "message": message}`.
    pub fn error(status: u16, kind: &str, message: &str) -> Self {
        Response::json(status, &serde_json::json!({ "error": kind, "message": message }))
    }

    /// Sets a header, replacing any earlier value of the same name (`Content-Type` of a
    /// [`Response::text`] body, say), so a response never carries one field twice. The
    /// framing fields ([`FRAMING_FIELDS`]) are the HTTP layer's alone: one set here is dropped
    /// (and logged as the bug it is), so it can never go out twice or contradict the body.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        if FRAMING_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(name)) {
            log::error!("a handler set the framing field {name}; dropped (the HTTP layer sets it)");
            return self;
        }
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name, value.into()));
        self
    }

    /// The value of header `name`, if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Labels the response with what it answered (see [`Response::label`]).
    pub fn labelled(mut self, label: &'static str) -> Self {
        self.label = Some(label);
        self
    }

    /// Marks the connection to be closed after this response.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }
}

/// The standard reason phrase for `status`.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

/// Replaces CR and LF in a header value with spaces, so a value can never end the header.
fn clean_value(value: &str) -> std::borrow::Cow<'_, str> {
    if value.bytes().any(|b| b == b'\r' || b == b'\n') {
        value.replace(['\r', '\n'], " ").into()
    } else {
        value.into()
    }
}

/// Bytes a head is given room for; a longer one grows.
const HEAD_CAPACITY: usize = 512;

/// Serialises the status line and headers, including the framing ones, into a buffer with
/// room for `room` more bytes (a small file's body, sent with the head in one write). Written
/// piece by piece: `write!` per field was about 2% of a 4 KiB GET's CPU.
pub fn encode_head(resp: &Response, keep_alive: bool, room: usize) -> Vec<u8> {
    let mut head = Vec::with_capacity(HEAD_CAPACITY + room);
    head.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(&mut head, u64::from(resp.status));
    head.push(b' ');
    head.extend_from_slice(reason(resp.status).as_bytes());
    head.extend_from_slice(b"\r\nDate: ");
    head.extend_from_slice(http_date(SystemTime::now()).as_bytes());
    head.extend_from_slice(b"\r\n");
    // RFC 9110 §8.6: never on a 204; on a 304 only if it were the 200's length, so not at all.
    match (resp.status, resp.body.known_len()) {
        (204 | 304, _) => {}
        (_, Some(len)) => {
            head.extend_from_slice(b"Content-Length: ");
            push_decimal(&mut head, len);
            head.extend_from_slice(b"\r\n");
        }
        // Of unknown length: chunked where the connection stays open, else it ends the body.
        (_, None) if keep_alive => head.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        (_, None) => {}
    }
    for (name, value) in &resp.headers {
        push_field(&mut head, name, &clean_value(value));
    }
    if resp.header(NOSNIFF.0).is_none() {
        push_field(&mut head, NOSNIFF.0, NOSNIFF.1);
    }
    head.extend_from_slice(if keep_alive {
        b"Connection: keep-alive\r\n\r\n"
    } else {
        b"Connection: close\r\n\r\n"
    });
    head
}

/// Appends `name: value` and its line end.
fn push_field(head: &mut Vec<u8>, name: &str, value: &str) {
    head.extend_from_slice(name.as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value.as_bytes());
    head.extend_from_slice(b"\r\n");
}

/// Appends `v` in decimal.
fn push_decimal(head: &mut Vec<u8>, v: u64) {
    let mut digits = [0u8; U64_DIGITS];
    let n = decimal(&mut digits, v);
    head.extend_from_slice(&digits[..n]);
}

/// Most decimal digits of a `u64`.
const U64_DIGITS: usize = 20;

/// Writes `v` in decimal at the start of `out` (room for its digits); returns how many.
pub(super) fn decimal(out: &mut [u8], v: u64) -> usize {
    let digits = v.checked_ilog10().map_or(1, |l| l as usize + 1);
    let mut rest = v;
    for slot in out[..digits].iter_mut().rev() {
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    digits
}

/// A response that could not be written whole: the body bytes that went out, and why it stopped
/// (the client went away or stopped reading; the file shrank).
#[derive(Debug)]
pub struct CutShort {
    /// Body bytes written before the failure.
    pub body_bytes: u64,
    /// What failed.
    pub error: io::Error,
}

/// A failure before any body byte went out.
fn cut_at_start(error: io::Error) -> CutShort {
    CutShort { body_bytes: 0, error }
}

/// Writes `resp` to `stream`; the body is omitted when `head_only` (a HEAD request). Returns
/// the body bytes written.
pub fn write_response(stream: &TcpStream, resp: Response, keep_alive: bool, head_only: bool) -> Result<u64, CutShort> {
    let mut out = stream;
    let room = match resp.body {
        ResponseBody::File { len, .. } if len <= INLINE_FILE_BYTES && !head_only => len as usize,
        _ => 0,
    };
    let mut head = encode_head(&resp, keep_alive, room);
    if head_only {
        return out.write_all(&head).map(|()| 0).map_err(cut_at_start);
    }
    match resp.body {
        ResponseBody::Empty => out.write_all(&head).map(|()| 0).map_err(cut_at_start),
        ResponseBody::Bytes(bytes) => {
            head.extend_from_slice(&bytes);
            out.write_all(&head).map(|()| bytes.len() as u64).map_err(cut_at_start)
        }
        ResponseBody::File { file, offset, len } if len <= INLINE_FILE_BYTES => {
            // The head was given room for the body: one allocation of the final size.
            let start = head.len();
            head.resize(start + len as usize, 0);
            // A file that shrank since its length was taken fails here, before anything is sent.
            file.read_exact_at(&mut head[start..], offset).map_err(cut_at_start)?;
            out.write_all(&head).map(|()| len).map_err(cut_at_start)
        }
        ResponseBody::File { file, offset, len } => {
            let _corked = Corked::on(stream);
            out.write_all(&head).map_err(cut_at_start)?;
            send_file(stream, file, offset, len)
        }
        ResponseBody::Stream(body) => send_stream(stream, head, body, keep_alive),
    }
}

/// Sends a body of unknown length behind `head`: as chunks when `chunked`, else raw (the
/// connection's close ends it). A failure to produce the body cuts the response short, so the
/// client sees an incomplete body, never a complete-looking wrong one.
fn send_stream(
    stream: &TcpStream,
    head: Vec<u8>,
    mut body: Box<dyn Read + Send>,
    chunked: bool,
) -> Result<u64, CutShort> {
    let mut out = stream;
    let mut sent = 0u64;
    let mut buf = head;
    let mut chunk = vec![0u8; STREAM_CHUNK_BYTES];
    loop {
        let n = match body.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                let _ = out.write_all(&buf);
                return Err(CutShort {
                    body_bytes: sent,
                    error,
                });
            }
        };
        if chunked {
            let _ = write!(buf, "{n:x}\r\n");
        }
        buf.extend_from_slice(&chunk[..n]);
        if chunked {
            buf.extend_from_slice(b"\r\n");
        }
        out.write_all(&buf).map_err(|error| CutShort {
            body_bytes: sent,
            error,
        })?;
        sent += n as u64;
        buf.clear();
        if n == 0 {
            return Ok(sent);
        }
    }
}

/// `TCP_CORK` held on a socket for a head and the file sent after it, cleared on drop. The
/// connection's `TCP_NODELAY` otherwise pushes each piece `sendfile` queues as its own
/// segment: a 1 GiB GET to curl measured 2.36–2.71 GB/s without, 2.92–3.03 with (nginx, which
/// corks the same way: 2.93–2.96), medians of 5, three alternating rounds. Best effort: a
/// socket that refuses it is only slower.
struct Corked<'a>(&'a TcpStream);

impl<'a> Corked<'a> {
    fn on(stream: &'a TcpStream) -> Corked<'a> {
        let _ = sys::set_cork(stream.as_fd(), true);
        Corked(stream)
    }
}

impl Drop for Corked<'_> {
    fn drop(&mut self) {
        let _ = sys::set_cork(self.0.as_fd(), false);
    }
}

/// Sends `len` bytes of `file` from `offset`; falls back to read/write where `sendfile` is not
/// supported for this file. A file that shrank meanwhile is an error (the client's
/// Content-Length cannot be met, so the connection must close).
fn send_file(stream: &TcpStream, mut file: File, offset: u64, len: u64) -> Result<u64, CutShort> {
    let mut pos = offset;
    let end = offset + len;
    let cut = |pos: u64, error: io::Error| CutShort {
        body_bytes: pos - offset,
        error,
    };
    while pos < end {
        let want = usize::try_from(end - pos)
            .unwrap_or(usize::MAX)
            .min(SENDFILE_CHUNK_BYTES);
        match sys::sendfile(stream, &file, &mut pos, want) {
            Ok(0) => {
                let shrank = io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while sending");
                return Err(cut(pos, shrank));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
                file.seek(SeekFrom::Start(pos)).map_err(|e| cut(pos, e))?;
                let mut sent = 0;
                return copy_fallback(stream, file.take(end - pos), &mut sent)
                    .map(|()| len)
                    .map_err(|e| cut(pos + sent, e));
            }
            Err(e) => return Err(cut(pos, e)),
        }
    }
    Ok(len)
}

/// Copies `src` to `stream` through a buffer, counting the bytes written in `sent`.
fn copy_fallback(stream: &TcpStream, mut src: impl Read, sent: &mut u64) -> io::Result<()> {
    let mut buf = vec![0u8; FALLBACK_BUF_BYTES];
    let mut out = stream;
    loop {
        // A read interrupted by a stop and continue of the process is made again.
        let n = super::body::read_retrying(&mut src, &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(&buf[..n])?;
        *sent += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_written_piece_by_piece_is_the_formatted_one() {
        for v in [0u64, 7, 10, 99, 4096, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, v);
            assert_eq!(out, v.to_string().into_bytes());
        }
        let resp = Response::text(404, "Not Found")
            .with_header("ETag", "\"g1-2-3-4\"")
            .with_header("Cache-Control", "no-cache");
        let head = String::from_utf8(encode_head(&resp, true, 4096)).unwrap();
        let date = head.lines().nth(1).unwrap();
        let mut expected = format!("HTTP/1.1 404 {}\r\n{date}\r\nContent-Length: 9\r\n", reason(404));
        for (name, value) in &resp.headers {
            expected += &format!("{name}: {value}\r\n");
        }
        if resp.header(NOSNIFF.0).is_none() {
            expected += &format!("{}: {}\r\n", NOSNIFF.0, NOSNIFF.1);
        }
        expected += "Connection: keep-alive\r\n\r\n";
        assert!(date.starts_with("Date: "), "{head}");
        assert_eq!(head, expected);
    }

    #[test]
    fn head_has_framing_and_no_injected_lines() {
        let resp = Response::text(200, "hi").with_header("X-Name", "a\r\nSet-Cookie: evil");
        let head = String::from_utf8(encode_head(&resp, false, 0)).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(head.contains("\r\nContent-Length: 2\r\n"));
        assert!(head.contains("\r\nX-Name: a  Set-Cookie: evil\r\n"));
        assert!(head.contains("\r\nX-Content-Type-Options: nosniff\r\n"));
        assert!(head.ends_with("Connection: close\r\n\r\n"));
        assert_eq!(head.matches("\r\n").count(), 8);
    }

    #[test]
    fn every_head_says_nosniff_once() {
        for resp in [
            Response::new(304, ResponseBody::Empty),
            Response::error(503, "busy", "try later"),
            Response::text(200, "x").with_header("x-content-type-options", "nosniff"),
        ] {
            let head = String::from_utf8(encode_head(&resp, true, 0))
                .unwrap()
                .to_ascii_lowercase();
            assert_eq!(head.matches("x-content-type-options: nosniff\r\n").count(), 1, "{head}");
        }
    }

    #[test]
    fn a_header_set_twice_is_sent_once_with_the_last_value() {
        let resp = Response::text(200, "x").with_header("content-type", "text/csv");
        let head = String::from_utf8(encode_head(&resp, true, 0)).unwrap();
        assert_eq!(
            head.to_ascii_lowercase().matches("\r\ncontent-type:").count(),
            1,
            "{head}"
        );
        assert!(head.contains("content-type: text/csv\r\n"), "{head}");
    }

    #[test]
    fn a_handler_cannot_set_framing_fields() {
        let resp = Response::text(200, "hi")
            .with_header("content-length", "999")
            .with_header("Transfer-Encoding", "chunked")
            .with_header("Connection", "keep-alive")
            .with_header("Date", "yesterday");
        let head = String::from_utf8(encode_head(&resp, false, 0))
            .unwrap()
            .to_ascii_lowercase();
        assert_eq!(head.matches("content-length").count(), 1, "{head}");
        assert!(head.contains("content-length: 2\r\n"), "{head}");
        assert!(
            !head.contains("transfer-encoding") && !head.contains("yesterday"),
            "{head}"
        );
        assert_eq!(head.matches("connection").count(), 1, "{head}");
        assert!(head.contains("connection: close"), "{head}");
    }
}
