//! Request bodies: choosing the framing (RFC 9112 §6.3) and reading the body as a plain
//! [`Read`] that ends exactly where the body ends.
//!
//! Bytes already read past the head sit in a [`ReadBuf`]; the body reader drains them first,
//! then reads the socket directly into the caller's (large) buffer, so bulk data is copied once.
//! A body that ends early is an error ([`BodyError::Incomplete`]), never a short success: the
//! storage layer relies on that to discard partial uploads. `100 Continue` is sent on the
//! first read, so a request refused before its body is read never invites the body.

use super::chunked::{self, ChunkError, ChunkState};
use super::head::{Head, MAX_HEAD_BYTES};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;

/// How the request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
}

/// Why the body framing of a request head was refused; the connection is closed after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramingError {
    /// Content-Length is not a single run of decimal digits fitting a `u64`.
    BadContentLength,
    /// Content-Length appears more than once.
    DuplicateContentLength,
    /// Both Content-Length and Transfer-Encoding are present (a smuggling vector).
    LengthAndTransferEncoding,
    /// Transfer-Encoding names a coding other than exactly `chunked`.
    UnsupportedCoding,
    /// Transfer-Encoding in an HTTP/1.0 request, which predates it.
    TransferEncodingInHttp10,
}

impl FramingError {
    /// Status code answering this refusal.
    pub fn status(self) -> u16 {
        match self {
            FramingError::UnsupportedCoding => 501,
            _ => 400,
        }
    }
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FramingError::BadContentLength => "Content-Length must be one decimal number",
            FramingError::DuplicateContentLength => "Content-Length given more than once",
            FramingError::LengthAndTransferEncoding => "both Content-Length and Transfer-Encoding given",
            FramingError::UnsupportedCoding => "only Transfer-Encoding: chunked is supported",
            FramingError::TransferEncodingInHttp10 => "Transfer-Encoding is not allowed in HTTP/1.0",
        })
    }
}

/// Decides how the body of a request is framed, following RFC 9112 §6.3 for requests:
/// - rule 3: Transfer-Encoding with Content-Length is refused outright rather than letting one
///   override the other, because two parsers disagreeing on it is how requests get smuggled;
/// - rule 4: Transfer-Encoding must be exactly `chunked` (we implement no other coding: 501);
/// - rule 5: Content-Length must be one valid number (a list or a repeat is refused);
/// - rule 6: neither present means no body.
pub fn choose_framing(head: &Head) -> Result<Framing, FramingError> {
    let mut lengths = head.values("content-length");
    let length = lengths.next();
    if lengths.next().is_some() {
        return Err(FramingError::DuplicateContentLength);
    }
    let mut codings = head.values("transfer-encoding").peekable();
    if codings.peek().is_some() {
        if length.is_some() {
            return Err(FramingError::LengthAndTransferEncoding);
        }
        if head.minor_version == 0 {
            return Err(FramingError::TransferEncodingInHttp10);
        }
        let mut count = 0;
        for value in codings {
            for coding in value.split(|&b| b == b',') {
                count += 1;
                if !coding.trim_ascii().eq_ignore_ascii_case(b"chunked") || count > 1 {
                    return Err(FramingError::UnsupportedCoding);
                }
            }
        }
        return Ok(Framing::Chunked);
    }
    match length {
        None => Ok(Framing::Empty),
        Some(value) => parse_content_length(value).map(Framing::Length),
    }
}

fn parse_content_length(value: &[u8]) -> Result<u64, FramingError> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(FramingError::BadContentLength);
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(d - b'0')))
            .ok_or(FramingError::BadContentLength)
    })
}

/// A connection's read buffer: bytes received but not yet consumed (the rest of a head, body
/// bytes, or a pipelined next request).
#[derive(Debug)]
pub struct ReadBuf {
    buf: Box<[u8]>,
    pos: usize,
    filled: usize,
}

impl ReadBuf {
    /// A buffer of [`MAX_HEAD_BYTES`] (or more, to fit `initial`) holding `initial`.
    pub fn with_bytes(initial: &[u8]) -> Self {
        let mut buf = vec![0u8; MAX_HEAD_BYTES.max(initial.len())].into_boxed_slice();
        buf[..initial.len()].copy_from_slice(initial);
        ReadBuf {
            buf,
            pos: 0,
            filled: initial.len(),
        }
    }

    /// Bytes received and not yet consumed.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.pos..self.filled]
    }

    /// Marks the first `n` pending bytes as consumed.
    pub fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.filled);
    }

    /// Reads more bytes from `src` after the pending ones; returns how many (0 at EOF).
    pub(crate) fn fill_from(&mut self, src: &mut impl Read) -> io::Result<usize> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.filled, 0);
            self.filled -= self.pos;
            self.pos = 0;
        }
        if self.filled == self.buf.len() {
            return Ok(0);
        }
        let n = src.read(&mut self.buf[self.filled..])?;
        self.filled += n;
        Ok(n)
    }

    /// Reads into `out` from pending bytes if any, else straight from `src`.
    fn read_into(&mut self, src: &mut impl Read, out: &mut [u8]) -> io::Result<usize> {
        let pending = self.pending();
        if pending.is_empty() {
            return src.read(out);
        }
        let n = pending.len().min(out.len());
        out[..n].copy_from_slice(&pending[..n]);
        self.consume(n);
        Ok(n)
    }

    /// Returns the next byte, reading from `src` when none is pending; `None` at EOF.
    fn next_byte(&mut self, src: &mut impl Read) -> io::Result<Option<u8>> {
        if self.pending().is_empty() && self.fill_from(src)? == 0 {
            return Ok(None);
        }
        let byte = self.buf[self.pos];
        self.pos += 1;
        Ok(Some(byte))
    }
}

/// Why reading a request body failed. Carried inside the `io::Error` the body reader returns,
/// so code that only sees `io::Error` can still tell what went wrong ([`BodyError::of`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// The client closed or reset the connection before the body ended.
    Incomplete { received: u64 },
    /// The chunked framing was invalid.
    Chunk(ChunkError),
    /// The body exceeded the configured maximum, in bytes.
    TooLarge { limit: u64 },
    /// The client sent nothing for longer than the I/O timeout.
    TimedOut,
}

impl BodyError {
    /// The body error inside `err`, if `err` came from a body reader.
    pub fn of(err: &io::Error) -> Option<BodyError> {
        err.get_ref()
            .and_then(|inner| inner.downcast_ref::<BodyError>())
            .copied()
    }

    fn into_io(self) -> io::Error {
        let kind = match self {
            BodyError::TimedOut => io::ErrorKind::TimedOut,
            BodyError::Incomplete { .. } => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, self)
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Incomplete { received } => {
                write!(f, "request body ended early, after {received} bytes")
            }
            BodyError::Chunk(e) => write!(f, "broken chunked body: {e}"),
            BodyError::TooLarge { limit } => write!(f, "request body larger than the {limit}-byte limit"),
            BodyError::TimedOut => write!(f, "timed out waiting for the request body"),
        }
    }
}

impl std::error::Error for BodyError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Progress {
    Length { remaining: u64 },
    Chunked(ChunkState),
    Done,
    Failed,
}

/// The request body as a [`Read`]: returns `Ok(0)` only after the whole body arrived.
pub struct Body<'a> {
    stream: &'a TcpStream,
    input: &'a mut ReadBuf,
    progress: Progress,
    send_continue: bool,
    received: u64,
    limit: Option<u64>,
}

impl<'a> Body<'a> {
    /// A reader for a body with `framing`, on `stream` after the bytes pending in `input`.
    /// `send_continue` sends `100 Continue` before the first read; `limit` caps the body size.
    pub fn new(
        stream: &'a TcpStream,
        input: &'a mut ReadBuf,
        framing: Framing,
        send_continue: bool,
        limit: Option<u64>,
    ) -> Self {
        let progress = match framing {
            Framing::Empty | Framing::Length(0) => Progress::Done,
            Framing::Length(n) => Progress::Length { remaining: n },
            Framing::Chunked => Progress::Chunked(ChunkState::START),
        };
        let send_continue = send_continue && progress != Progress::Done;
        Body {
            stream,
            input,
            progress,
            send_continue,
            received: 0,
            limit,
        }
    }

    /// True once the whole body has been read, so the connection can carry another request.
    pub fn is_complete(&self) -> bool {
        self.progress == Progress::Done
    }

    /// True when the handler stopped reading a body the client is still sending (it answered
    /// early: a failed precondition, a full disk) rather than the body failing on the wire.
    pub fn abandoned(&self) -> bool {
        matches!(self.progress, Progress::Length { .. } | Progress::Chunked(_))
    }

    /// Body bytes received so far (decoded, without chunk framing).
    pub fn received(&self) -> u64 {
        self.received
    }

    fn fail(&mut self, err: BodyError) -> io::Error {
        self.progress = Progress::Failed;
        err.into_io()
    }

    fn socket_error(&mut self, err: io::Error) -> io::Error {
        if BodyError::of(&err).is_some() {
            return err;
        }
        let body_err = match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => BodyError::TimedOut,
            _ => BodyError::Incomplete {
                received: self.received,
            },
        };
        self.fail(body_err)
    }

    fn count(&mut self, n: usize) -> io::Result<usize> {
        self.received += n as u64;
        match self.limit {
            Some(limit) if self.received > limit => Err(self.fail(BodyError::TooLarge { limit })),
            _ => Ok(n),
        }
    }

    fn read_chunked(&mut self, mut state: ChunkState, out: &mut [u8]) -> io::Result<usize> {
        let mut stream = self.stream;
        loop {
            match state {
                ChunkState::Done => {
                    self.progress = Progress::Done;
                    return Ok(0);
                }
                ChunkState::Data { remaining } => {
                    let want = out.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    let n = self.input.read_into(&mut stream, &mut out[..want])?;
                    if n == 0 {
                        return Err(self.fail(BodyError::Incomplete {
                            received: self.received,
                        }));
                    }
                    let left = remaining - n as u64;
                    let next = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data { remaining: left }
                    };
                    self.progress = Progress::Chunked(next);
                    return self.count(n);
                }
                _ => {
                    let Some(byte) = self.input.next_byte(&mut stream)? else {
                        return Err(self.fail(BodyError::Incomplete {
                            received: self.received,
                        }));
                    };
                    state = chunked::step(state, byte).map_err(|e| self.fail(BodyError::Chunk(e)))?;
                    self.progress = Progress::Chunked(state);
                }
            }
        }
    }
}

impl Read for Body<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if self.send_continue {
            self.send_continue = false;
            let mut stream = self.stream;
            stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .map_err(|e| self.socket_error(e))?;
        }
        let result = match self.progress {
            Progress::Done => return Ok(0),
            Progress::Failed => {
                return Err(BodyError::Incomplete {
                    received: self.received,
                }
                .into_io());
            }
            Progress::Length { remaining } => {
                let want = out.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
                let mut stream = self.stream;
                match self.input.read_into(&mut stream, &mut out[..want]) {
                    Ok(0) => Err(self.fail(BodyError::Incomplete {
                        received: self.received,
                    })),
                    Ok(n) => {
                        let left = remaining - n as u64;
                        self.progress = if left == 0 {
                            Progress::Done
                        } else {
                            Progress::Length { remaining: left }
                        };
                        self.count(n)
                    }
                    Err(e) => Err(e),
                }
            }
            Progress::Chunked(state) => self.read_chunked(state, out),
        };
        result.map_err(|e| self.socket_error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::super::head::parse_head;
    use super::*;

    fn framing_of(raw: &str) -> Result<Framing, FramingError> {
        // Every case is a request line and its fields; a Host makes it a valid HTTP/1.1 head.
        let raw = raw.replacen("\r\n", "\r\nHost: t\r\n", 1);
        let (head, _) = parse_head(raw.as_bytes()).unwrap();
        choose_framing(&head)
    }

    #[test]
    fn framing_rules() {
        use FramingError::*;
        let cases: &[(&str, Result<Framing, FramingError>)] = &[
            ("GET / HTTP/1.1\r\n\r\n", Ok(Framing::Empty)),
            ("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", Ok(Framing::Length(5))),
            ("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", Ok(Framing::Length(0))),
            (
                "POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n",
                Ok(Framing::Length(u64::MAX)),
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n",
                Err(BadContentLength),
            ),
            ("POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", Err(BadContentLength)),
            ("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", Err(BadContentLength)),
            ("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", Err(BadContentLength)),
            ("POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", Err(BadContentLength)),
            (
                "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                Err(DuplicateContentLength),
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Ok(Framing::Chunked),
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: Chunked \r\n\r\n",
                Ok(Framing::Chunked),
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                Err(UnsupportedCoding),
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Err(UnsupportedCoding),
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                Err(UnsupportedCoding),
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(UnsupportedCoding),
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(LengthAndTransferEncoding),
            ),
            (
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(TransferEncodingInHttp10),
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(framing_of(raw), *want, "{raw:?}");
        }
    }
}
