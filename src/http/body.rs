//! Request bodies: choosing the framing (RFC 9112 §6.3) and reading the body as a plain
//! [`Read`] that ends exactly where the body ends.
//!
//! Bytes already read past the head sit in a [`ReadBuf`]; the body reader drains them first,
//! then reads the socket directly into the caller's (large) buffer, so a `Content-Length`
//! body is copied once. A chunked body's framing is read through the buffer, so the data that
//! arrives in the same read as a size line is copied once more (`make bench-micro` measures it).
//! A body that ends early is an error ([`BodyError::Incomplete`]), never a short success: the
//! storage layer relies on that to discard partial uploads. `100 Continue` is sent on the
//! first read, so a request refused before its body is read never invites the body.

use super::chunked::{self, ChunkError, ChunkState};
use super::head::{Head, MAX_HEAD_BYTES};
use std::cell::RefCell;
use std::fmt;
use std::io::{self, Read, Write};

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
    /// A buffer holding `initial`, grown to [`MAX_HEAD_BYTES`] (or more, to fit `initial`)
    /// only when it first reads: a request without a body (most GETs) reads nothing more, so
    /// it costs no zeroed 16 KiB allocation.
    pub fn with_bytes(initial: &[u8]) -> Self {
        ReadBuf {
            buf: Box::from(initial),
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
        if self.buf.len() < MAX_HEAD_BYTES {
            let mut grown = vec![0u8; MAX_HEAD_BYTES].into_boxed_slice();
            let pending = self.pending();
            grown[..pending.len()].copy_from_slice(pending);
            self.filled = pending.len();
            self.pos = 0;
            self.buf = grown;
        }
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.filled, 0);
            self.filled -= self.pos;
            self.pos = 0;
        }
        if self.filled == self.buf.len() {
            return Ok(0);
        }
        let n = read_retrying(src, &mut self.buf[self.filled..])?;
        self.filled += n;
        Ok(n)
    }

    /// Reads into `out` from pending bytes if any, else straight from `src`.
    fn read_into(&mut self, src: &mut impl Read, out: &mut [u8]) -> io::Result<usize> {
        let pending = self.pending();
        if pending.is_empty() {
            return read_retrying(src, out);
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

/// One `read` that is tried again while it fails with `Interrupted` (`EINTR`). Linux fails a
/// blocked socket read that has a timeout (`SO_RCVTIMEO`, which every socket in service has)
/// with `EINTR` when the process is stopped and continued (SIGSTOP/SIGCONT: a container pause,
/// a freezer, a debugger), even with no signal handler installed (signal(7)). That is no end of
/// the body and no error of the client: the read is simply made again.
pub(crate) fn read_retrying(src: &mut impl Read, out: &mut [u8]) -> io::Result<usize> {
    loop {
        match src.read(out) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
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
    /// The client sent nothing for longer than the I/O timeout, after `received` body bytes
    /// of the `expected` a `Content-Length` announced (`None` for a chunked body).
    TimedOut { received: u64, expected: Option<u64> },
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
            BodyError::TimedOut { .. } => io::ErrorKind::TimedOut,
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
            BodyError::TimedOut { received: 0, .. } => write!(
                f,
                "timed out waiting for the request body: no byte of it came for --io-timeout; \
                 a request that announces a body (Content-Length or chunked) must send it \
                 (curl -T FILE, or --data-binary @FILE; with -T - the data comes from stdin)"
            ),
            BodyError::TimedOut { received, expected } => {
                write!(f, "timed out waiting for the rest of the request body: received ")?;
                match expected {
                    Some(total) => write!(f, "{received} of {total} bytes")?,
                    None => write!(f, "{received} bytes of a chunked body")?,
                }
                write!(
                    f,
                    ", then nothing for --io-timeout; nothing was stored. Check that the sender \
                     is still running and its Content-Length matches the data it sends, then \
                     send the whole request again"
                )
            }
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
///
/// Generic over its transport `S` (a `&TcpStream` in the server; a scripted reader in tests,
/// fuzz targets and benchmarks), so what those drive is the reader that ships. `S` is also
/// written to, once, for `100 Continue`.
pub struct Body<'a, S: Read + Write> {
    transport: S,
    input: &'a mut ReadBuf,
    progress: Progress,
    send_continue: bool,
    received: u64,
    /// The body's size when `Content-Length` announced it (`None` for a chunked body).
    expected: Option<u64>,
    limit: Option<u64>,
    /// Where a chunked body's trailer section is kept, raw, if the handler wants it.
    trailers: Option<&'a RefCell<Vec<u8>>>,
}

impl<'a, S: Read + Write> Body<'a, S> {
    /// Keeps the trailer section of a chunked body in `sink` (raw field lines, at most
    /// `chunked::MAX_TRAILER_BYTES` of fields), for the handler to read once the body ended
    /// (`chunked::trailer_field`).
    pub fn keep_trailers(mut self, sink: &'a RefCell<Vec<u8>>) -> Self {
        self.trailers = Some(sink);
        self
    }

    /// A reader for a body with `framing`, on `transport` after the bytes pending in `input`.
    /// `send_continue` sends `100 Continue` before the first read; `limit` caps the body size.
    pub fn new(
        transport: S,
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
        let expected = match framing {
            Framing::Empty => Some(0),
            Framing::Length(n) => Some(n),
            Framing::Chunked => None,
        };
        Body {
            transport,
            input,
            progress,
            send_continue,
            received: 0,
            expected,
            limit,
            trailers: None,
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

    fn incomplete(&mut self) -> io::Error {
        self.fail(BodyError::Incomplete {
            received: self.received,
        })
    }

    fn transport_error(&mut self, err: io::Error) -> io::Error {
        if BodyError::of(&err).is_some() {
            return err;
        }
        let body_err = match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => BodyError::TimedOut {
                received: self.received,
                expected: self.expected,
            },
            _ => BodyError::Incomplete {
                received: self.received,
            },
        };
        self.fail(body_err)
    }

    /// The one copy step: up to `remaining` data bytes into `out`, pending bytes first. Returns
    /// how many, and how many of `remaining` are left; a transport at EOF is an early end.
    fn copy_data(&mut self, remaining: u64, out: &mut [u8]) -> io::Result<(usize, u64)> {
        let want = out.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let n = self.input.read_into(&mut self.transport, &mut out[..want])?;
        if n == 0 {
            return Err(self.incomplete());
        }
        self.received += n as u64;
        if let Some(limit) = self.limit.filter(|&limit| self.received > limit) {
            return Err(self.fail(BodyError::TooLarge { limit }));
        }
        Ok((n, remaining - n as u64))
    }

    fn read_chunked(&mut self, mut state: ChunkState, out: &mut [u8]) -> io::Result<usize> {
        loop {
            match state {
                ChunkState::Done => {
                    self.progress = Progress::Done;
                    return Ok(0);
                }
                ChunkState::Data { remaining } => {
                    let (n, left) = self.copy_data(remaining, out)?;
                    self.progress = Progress::Chunked(ChunkState::after_data(left));
                    return Ok(n);
                }
                _ => {
                    let Some(byte) = self.input.next_byte(&mut self.transport)? else {
                        return Err(self.incomplete());
                    };
                    if let Some(sink) = self.trailers
                        && matches!(
                            state,
                            ChunkState::TrailerStart { .. }
                                | ChunkState::TrailerName { .. }
                                | ChunkState::TrailerLine { .. }
                                | ChunkState::TrailerLf { .. }
                        )
                    {
                        sink.borrow_mut().push(byte);
                    }
                    state = chunked::step(state, byte).map_err(|e| self.fail(BodyError::Chunk(e)))?;
                    self.progress = Progress::Chunked(state);
                }
            }
        }
    }

    fn read_framed(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.send_continue {
            self.send_continue = false;
            self.transport.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        match self.progress {
            Progress::Done => Ok(0),
            Progress::Failed => Err(BodyError::Incomplete {
                received: self.received,
            }
            .into_io()),
            Progress::Length { remaining } => {
                let (n, left) = self.copy_data(remaining, out)?;
                self.progress = if left == 0 {
                    Progress::Done
                } else {
                    Progress::Length { remaining: left }
                };
                Ok(n)
            }
            Progress::Chunked(state) => self.read_chunked(state, out),
        }
    }
}

impl<S: Read + Write> Read for Body<'_, S> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        self.read_framed(out).map_err(|e| self.transport_error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::super::chunked::{MAX_EXTENSION_BYTES, MAX_TRAILER_BYTES};
    use super::super::head::parse_head;
    use super::*;

    /// A scripted client: hands out its input in reads that stop at each of `cuts` (offsets
    /// into the input), then reports EOF; keeps what the reader wrote (`100 Continue`).
    struct Scripted<'a> {
        input: &'a [u8],
        at: usize,
        cuts: Vec<usize>,
        written: Vec<u8>,
    }

    impl<'a> Scripted<'a> {
        fn new(input: &'a [u8], cuts: Vec<usize>) -> Self {
            Scripted {
                input,
                at: 0,
                cuts,
                written: Vec::new(),
            }
        }
    }

    impl Read for Scripted<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let stop = self
                .cuts
                .iter()
                .copied()
                .find(|&c| c > self.at)
                .unwrap_or(self.input.len());
            let n = out.len().min(stop - self.at);
            out[..n].copy_from_slice(&self.input[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    impl Write for Scripted<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What reading a body to its end gave: the data or why it failed, and how many input
    /// bytes the body used (the rest is left for the next request).
    #[derive(Debug, PartialEq, Eq)]
    struct Outcome {
        data: Result<Vec<u8>, BodyError>,
        used: usize,
    }

    const LIMIT: u64 = 1 << 20;

    /// Reads a body framed `framing` from `input` through the production reader: the first
    /// `pending` bytes already buffered (as bytes read past a head are), the rest arriving
    /// in reads that stop at `cuts`, into a `read_size`-byte buffer.
    fn read_body(input: &[u8], framing: Framing, pending: usize, cuts: Vec<usize>, read_size: usize) -> Outcome {
        let mut buffered = ReadBuf::with_bytes(&input[..pending]);
        let cuts = cuts.into_iter().filter_map(|c| c.checked_sub(pending)).collect();
        let mut client = Scripted::new(&input[pending..], cuts);
        let mut body = Body::new(&mut client, &mut buffered, framing, false, Some(LIMIT));
        let mut data = Vec::new();
        let mut buf = vec![0u8; read_size];
        let data = loop {
            match body.read(&mut buf) {
                Ok(0) => break Ok(data),
                Ok(n) => data.extend_from_slice(&buf[..n]),
                Err(e) => break Err(BodyError::of(&e).expect("a body error")),
            }
        };
        assert_eq!(data.is_ok(), body.is_complete());
        let unread = client.input.len() - client.at + buffered.pending().len();
        Outcome {
            data,
            used: input.len() - unread,
        }
    }

    /// Every way the input can arrive: whole; split at every offset, both as a second read
    /// and as bytes already buffered; one byte per read; read into a one-byte buffer. All must
    /// agree (hyper's decoder tests feed input the same ways).
    fn read_every_way(input: &[u8], framing: Framing) -> Outcome {
        let whole = read_body(input, framing, 0, vec![], 64 * 1024);
        for split in 0..=input.len() {
            let what = format!("split at {split} of {:?}", String::from_utf8_lossy(input));
            assert_eq!(
                read_body(input, framing, 0, vec![split], 64 * 1024),
                whole,
                "read {what}"
            );
            assert_eq!(
                read_body(input, framing, split, vec![], 64 * 1024),
                whole,
                "buffered {what}"
            );
        }
        let bytewise = (1..input.len()).collect();
        assert_eq!(
            read_body(input, framing, 0, bytewise, 64 * 1024),
            whole,
            "one byte per read"
        );
        assert_eq!(read_body(input, framing, 0, vec![], 1), whole, "one-byte buffer");
        whole
    }

    fn chunked(input: &[u8]) -> Outcome {
        read_every_way(input, Framing::Chunked)
    }

    #[test]
    fn decodes_valid_chunked_bodies_however_they_arrive() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"0\r\n\r\n", b""),
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
            (b"5 ;a=b\r\nhello\r\n0\t ; last\r\n\r\n", b"hello"),
            (b"A\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n", b"0123456789"),
            (b"000000000000000a\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
        ];
        for (input, want) in cases {
            let want = Outcome {
                data: Ok(want.to_vec()),
                used: input.len(),
            };
            assert_eq!(chunked(input), want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn stops_at_the_end_of_the_body_leaving_the_next_request() {
        let body = b"3\r\nabc\r\n0\r\n\r\n";
        let input = [&body[..], b"GET / HTTP/1.1\r\n"].concat();
        let want = Outcome {
            data: Ok(b"abc".to_vec()),
            used: body.len(),
        };
        assert_eq!(chunked(&input), want);
        let want = Outcome {
            data: Ok(b"hello".to_vec()),
            used: 5,
        };
        assert_eq!(read_every_way(b"helloGET / HTTP/1.1\r\n", Framing::Length(5)), want);
    }

    #[test]
    fn refuses_broken_chunked_framing() {
        let cases: &[(&[u8], ChunkError)] = &[
            (b"x\r\n", ChunkError::BadSize),
            (b"\r\n", ChunkError::BadSize),
            (b" 5\r\n", ChunkError::BadSize),
            (b"5 \r\n", ChunkError::BadSize),
            (b"5 x\r\n", ChunkError::BadSize),
            (b"-1\r\n", ChunkError::BadSize),
            (b"5\nhello", ChunkError::BadSize),
            (b"5\r\nhelloXX0\r\n\r\n", ChunkError::MissingCrlf),
            (b"5\r\nhello\rX", ChunkError::MissingCrlf),
            (b"10000000000000000\r\n", ChunkError::SizeTooLong),
            (b"fffffffffffffffff", ChunkError::SizeTooLong),
            (b"0\r\n\rX", ChunkError::MissingCrlf),
            (b"0\r\nX: y\nZ", ChunkError::MissingCrlf),
            (b"0\r\nContent-Digest : x\r\n\r\n", ChunkError::TrailerName),
            (b"0\r\nContent-Digest\t: x\r\n\r\n", ChunkError::TrailerName),
            (b"0\r\nX: y\r\n folded\r\n\r\n", ChunkError::TrailerName),
        ];
        for (input, want) in cases {
            let got = chunked(input).data;
            assert_eq!(
                got,
                Err(BodyError::Chunk(*want)),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn a_body_cut_short_is_never_complete() {
        let incomplete = |outcome: Outcome| matches!(outcome.data, Err(BodyError::Incomplete { .. }));
        let body = b"5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n";
        for end in 0..body.len() {
            assert!(incomplete(chunked(&body[..end])), "chunked prefix of {end} bytes");
        }
        assert!(
            incomplete(chunked(b"ffffffffffffffff\r\n")),
            "sixteen digits are a valid size"
        );
        for end in 0..5 {
            let outcome = read_every_way(&b"hello"[..end], Framing::Length(5));
            let received = end as u64;
            assert_eq!(
                outcome.data,
                Err(BodyError::Incomplete { received }),
                "{end} of 5 bytes"
            );
        }
    }

    #[test]
    fn extension_and_trailer_limits_at_and_over() {
        let read = |input: &[u8]| read_body(input, Framing::Chunked, 0, vec![], 4096).data;
        let ext = |n: usize| format!("1;{}\r\na\r\n0\r\n\r\n", "e".repeat(n)).into_bytes();
        assert_eq!(read(&ext(MAX_EXTENSION_BYTES)), Ok(b"a".to_vec()));
        let over = read(&ext(MAX_EXTENSION_BYTES + 1));
        assert_eq!(over, Err(BodyError::Chunk(ChunkError::ExtensionTooLong)));
        let trailer = |n: usize| format!("0\r\n{}\r\n\r\n", "t".repeat(n)).into_bytes();
        assert_eq!(read(&trailer(MAX_TRAILER_BYTES)), Ok(Vec::new()));
        let over = read(&trailer(MAX_TRAILER_BYTES + 1));
        assert_eq!(over, Err(BodyError::Chunk(ChunkError::TrailerTooLong)));
    }

    #[test]
    fn a_body_over_the_limit_is_refused_in_either_framing() {
        let read = |input: &[u8], framing| read_body(input, framing, 0, vec![], 64 * 1024).data;
        let big = vec![b'x'; LIMIT as usize + 1];
        let too_large = Err(BodyError::TooLarge { limit: LIMIT });
        assert_eq!(read(&big, Framing::Length(LIMIT + 1)), too_large);
        let as_chunks = [format!("{:x}\r\n", big.len()).as_bytes(), &big, b"\r\n0\r\n\r\n"].concat();
        assert_eq!(read(&as_chunks, Framing::Chunked), too_large);
        let at_limit = read(&big[1..], Framing::Length(LIMIT));
        assert_eq!(at_limit.map(|d| d.len() as u64), Ok(LIMIT));
    }

    #[test]
    fn continue_is_sent_once_on_the_first_read_and_never_for_no_body() {
        let cases: [(Framing, &[u8], &[u8]); 3] = [
            (Framing::Length(2), b"ab", b"HTTP/1.1 100 Continue\r\n\r\n"),
            (Framing::Empty, b"", b""),
            (Framing::Length(0), b"", b""),
        ];
        for (framing, input, want) in cases {
            let mut buffered = ReadBuf::with_bytes(b"");
            let mut client = Scripted::new(input, vec![1]);
            let mut body = Body::new(&mut client, &mut buffered, framing, true, None);
            let mut data = Vec::new();
            body.read_to_end(&mut data).unwrap();
            assert_eq!(data, input);
            assert_eq!(client.written, want, "{framing:?}");
        }
    }

    #[test]
    fn a_silent_client_is_a_timeout_and_a_reset_an_early_end() {
        struct Failing(io::ErrorKind);
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(self.0.into())
            }
        }
        impl Write for Failing {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        for (kind, want) in [
            (
                io::ErrorKind::WouldBlock,
                BodyError::TimedOut {
                    received: 2,
                    expected: Some(5),
                },
            ),
            (
                io::ErrorKind::TimedOut,
                BodyError::TimedOut {
                    received: 2,
                    expected: Some(5),
                },
            ),
            (io::ErrorKind::ConnectionReset, BodyError::Incomplete { received: 2 }),
        ] {
            let mut buffered = ReadBuf::with_bytes(b"ab");
            let mut body = Body::new(Failing(kind), &mut buffered, Framing::Length(5), false, None);
            let mut data = Vec::new();
            let err = body.read_to_end(&mut data).unwrap_err();
            assert_eq!(BodyError::of(&err), Some(want), "{kind:?}");
            assert_eq!(data, b"ab");
            assert!(!body.is_complete() && !body.abandoned());
        }
    }

    #[test]
    fn an_interrupted_read_is_made_again_not_an_early_end() {
        /// Fails every other read with `EINTR`, as a socket read with a timeout does when the
        /// process is stopped and continued, and hands out one byte per other read.
        struct Interrupting<'a> {
            input: &'a [u8],
            interrupt: bool,
        }
        impl Read for Interrupting<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                self.interrupt = !self.interrupt;
                if self.interrupt {
                    return Err(io::ErrorKind::Interrupted.into());
                }
                let n = out.len().min(self.input.len()).min(1);
                out[..n].copy_from_slice(&self.input[..n]);
                self.input = &self.input[n..];
                Ok(n)
            }
        }
        impl Write for Interrupting<'_> {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let cases: [(Framing, &[u8], &[u8]); 2] = [
            (Framing::Length(5), b"hello", b"hello"),
            (Framing::Chunked, b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", b"abcde"),
        ];
        for (framing, input, want) in cases {
            let mut buffered = ReadBuf::with_bytes(b"");
            let client = Interrupting {
                input,
                interrupt: false,
            };
            let mut body = Body::new(client, &mut buffered, framing, false, None);
            let mut data = Vec::new();
            let mut buf = [0u8; 16];
            // By hand, not read_to_end (which retries EINTR itself): the loops the server's
            // own code writes see exactly what Body::read returns.
            loop {
                match body.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => data.extend_from_slice(&buf[..n]),
                    Err(e) => panic!("{framing:?}: {e}"),
                }
            }
            assert_eq!(data, want, "{framing:?}");
            assert!(body.is_complete());
        }
    }

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
