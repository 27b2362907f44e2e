//! Request heads: decide whether a buffer holds a complete head and parse it into an owned
//! [`Head`], in one pass ([`read_head`]): the reactor parses a head once and the worker serves
//! that value.
//!
//! `httparse` does the byte-level parsing; this module adds the limits `httparse` leaves to its
//! callers (its docs say so): a head is at most [`MAX_HEAD_BYTES`] and carries at most
//! [`MAX_HEADERS`] fields, beyond which the client gets 431. Running out of input is not an
//! error ([`HeadStatus::Partial`]); the caller bounds the time it waits for more.

use std::fmt;

/// Largest request head (request line + fields + blank line) accepted, in bytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header fields accepted in one request head.
pub const MAX_HEADERS: usize = 64;

/// Why a request head was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The head did not end within [`MAX_HEAD_BYTES`].
    TooLarge,
    /// The head has more than [`MAX_HEADERS`] fields.
    TooManyHeaders,
    /// The request line names an HTTP version other than 1.0 or 1.1.
    Version,
    /// The head is not valid HTTP/1.x syntax.
    Malformed,
    /// An HTTP/1.1 request without a `Host` field, or any request with two (RFC 9112 §3.2).
    Host,
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::TooLarge => write!(f, "request head larger than {MAX_HEAD_BYTES} bytes"),
            HeadError::TooManyHeaders => write!(f, "request has more than {MAX_HEADERS} header fields"),
            HeadError::Version => write!(f, "only HTTP/1.0 and HTTP/1.1 are supported"),
            HeadError::Malformed => write!(f, "malformed request head"),
            HeadError::Host => write!(f, "an HTTP/1.1 request needs exactly one Host header"),
        }
    }
}

/// Whether a buffer starts with a complete request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadStatus {
    /// The head is complete and is this many bytes long; body bytes may follow.
    Complete(usize),
    /// More bytes are needed.
    Partial,
}

/// One header field, name lower-cased for lookups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Field name, ASCII lower case.
    pub name: String,
    /// Field value as sent (it may not be UTF-8).
    pub value: Vec<u8>,
}

/// A parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// Request method, e.g. `GET`.
    pub method: String,
    /// Request target as sent (origin form, still percent-encoded).
    pub target: String,
    /// Minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Header fields in order.
    pub headers: Vec<Header>,
}

/// A target in absolute form (`http://` or `https://`, any letter case) split into its
/// authority and the rest (path, query), which is empty when the target has no path.
fn absolute_form(target: &str) -> Option<(&str, &str)> {
    let n = ["http://", "https://"]
        .iter()
        .find(|s| target.get(..s.len()).is_some_and(|t| t.eq_ignore_ascii_case(s)))?
        .len();
    let rest = &target[n..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(rest.split_at(end))
}

impl Head {
    /// The target's path only, for the access log: without a query (`?token=...`) and, for
    /// the absolute form, without scheme and authority, whose user info may be credentials
    /// (`http://user:password@host/x`). Logs name paths only.
    pub fn logged_path(&self) -> &str {
        let path = match absolute_form(&self.target) {
            Some((_, rest)) => rest,
            None => self.target.as_str(),
        };
        let path = path.split(['?', '#']).next().unwrap_or_default();
        if path.is_empty() { "/" } else { path }
    }

    /// The authority (`[userinfo@]host[:port]`) of a target in absolute form (RFC 9112
    /// §3.2.2: `http://host/file/x`, as sent to proxies), which names the host the request is
    /// for in place of `Host`; `None` for the origin form.
    pub fn target_authority(&self) -> Option<&str> {
        absolute_form(&self.target).map(|(authority, _)| authority)
    }

    /// Iterates the values of every field called `name` (lower case).
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name == name)
            .map(|h| h.value.as_slice())
    }

    /// The first value of field `name` (lower case) as text, if present and valid UTF-8.
    pub fn header<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.values(name)
            .next()
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
    }

    /// True when the client asked to close the connection after this request, or speaks
    /// HTTP/1.0 without asking to keep it alive.
    pub fn wants_close(&self) -> bool {
        let has_token = |token: &str| {
            self.values("connection")
                .filter_map(|v| std::str::from_utf8(v).ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        if self.minor_version == 0 {
            !has_token("keep-alive")
        } else {
            has_token("close")
        }
    }
}

/// Reads the head at the start of `buf`, if it is complete: the head and its length in bytes
/// (body bytes or a pipelined request may follow), or `None` while more bytes are needed. The
/// server's one way of parsing a head: the reactor calls it as bytes arrive and hands the head
/// to the worker, which calls it only for the requests that follow on the same connection.
pub fn read_head(buf: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    let parsed = parse_syntax(buf)?;
    if let Some((head, _)) = &parsed {
        match head.values("host").count() {
            0 if head.minor_version >= 1 => return Err(HeadError::Host),
            0 | 1 => {}
            _ => return Err(HeadError::Host),
        }
    }
    Ok(parsed)
}

/// Checks whether `buf` begins with a complete head, by its syntax and size alone; the `Host`
/// rules are checked by `read_head` only.
pub fn check_head(buf: &[u8]) -> Result<HeadStatus, HeadError> {
    Ok(match parse_syntax(buf)? {
        Some((_, len)) => HeadStatus::Complete(len),
        None => HeadStatus::Partial,
    })
}

/// Parses the complete head at the start of `buf`; returns it and its length in bytes. A head
/// not complete yet is malformed here.
pub fn parse_head(buf: &[u8]) -> Result<(Head, usize), HeadError> {
    read_head(buf)?.ok_or(HeadError::Malformed)
}

/// Runs `httparse` once over `buf` and applies our size limits: the head and its length if
/// complete, `None` if more bytes are needed.
fn parse_syntax(buf: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    #[cfg(test)]
    tests::count_parse();
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => len,
        Ok(httparse::Status::Complete(_)) => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(map_error(e, buf)),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed);
    };
    let headers = req
        .headers
        .iter()
        .map(|h| Header {
            name: h.name.to_ascii_lowercase(),
            value: h.value.to_vec(),
        })
        .collect();
    let head = Head {
        method: method.to_string(),
        target: target.to_string(),
        minor_version: version,
        headers,
    };
    Ok(Some((head, len)))
}

/// `httparse`'s error as ours. It reports any request line whose third word is not a version
/// as a version error; only a line of exactly three words ending in `HTTP/x.y` is one (a space
/// inside the target is a malformed request, 400, not an unsupported version, 505).
fn map_error(e: httparse::Error, buf: &[u8]) -> HeadError {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or(buf);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let words: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let names_a_version = words.len() == 3 && words[2].starts_with(b"HTTP/");
    match e {
        httparse::Error::Version if names_a_version => HeadError::Version,
        httparse::Error::Version => HeadError::Malformed,
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        _ => HeadError::Malformed,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// `httparse` calls made by the server's own threads (reactor and workers), so the
    /// server's tests can count them per request; parsing in test threads is not counted.
    pub(crate) static SERVER_PARSES: AtomicUsize = AtomicUsize::new(0);

    pub(crate) fn count_parse() {
        if std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("http-nas-"))
        {
            SERVER_PARSES.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn complete_partial_and_refused_heads() {
        let cases: &[(&[u8], Result<HeadStatus, HeadError>)] = &[
            (b"GET / HTTP/1.1\r\n\r\n", Ok(HeadStatus::Complete(18))),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY", Ok(HeadStatus::Complete(27))),
            (b"GET / HTTP/1.1\r\nHost: x\r\n", Ok(HeadStatus::Partial)),
            (b"GE", Ok(HeadStatus::Partial)),
            (b"GET / HTTP/2.0\r\n\r\n", Err(HeadError::Version)),
            (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", Err(HeadError::Malformed)),
            (b"\x00\x01 / HTTP/1.1\r\n\r\n", Err(HeadError::Malformed)),
            (b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", Err(HeadError::Malformed)),
            (b"GET / HTTP/3\r\n\r\n", Err(HeadError::Version)),
        ];
        for (input, want) in cases {
            assert_eq!(check_head(input), *want, "input {:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn head_size_limit_at_and_over() {
        let mut at = b"GET / HTTP/1.1\r\nX: ".to_vec();
        at.resize(MAX_HEAD_BYTES - 4, b'a');
        at.extend_from_slice(b"\r\n\r\n");
        assert_eq!(check_head(&at), Ok(HeadStatus::Complete(MAX_HEAD_BYTES)));
        let mut over = b"GET / HTTP/1.1\r\nX: ".to_vec();
        over.resize(MAX_HEAD_BYTES, b'a');
        assert_eq!(check_head(&over), Err(HeadError::TooLarge));
    }

    #[test]
    fn header_count_limit_at_and_over() {
        let build = |n: usize| {
            let mut h = b"GET / HTTP/1.1\r\n".to_vec();
            for i in 0..n {
                h.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
            }
            h.extend_from_slice(b"\r\n");
            h
        };
        assert!(matches!(check_head(&build(MAX_HEADERS)), Ok(HeadStatus::Complete(_))));
        assert_eq!(check_head(&build(MAX_HEADERS + 1)), Err(HeadError::TooManyHeaders));
    }

    #[test]
    fn parse_lowercases_names_and_finds_values() {
        let (head, len) = parse_head(b"PUT /file/a HTTP/1.0\r\nContent-Type: text/plain \r\n\r\n").unwrap();
        assert_eq!(len, 51);
        assert_eq!(head.method, "PUT");
        assert_eq!(head.target, "/file/a");
        assert_eq!(head.minor_version, 0);
        assert_eq!(head.header("content-type"), Some("text/plain"));
        assert!(head.wants_close());
    }

    #[test]
    fn host_rules() {
        let parse = |raw: &[u8]| parse_head(raw).map(|_| ());
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Err(HeadError::Host));
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Err(HeadError::Host)
        );
        assert_eq!(
            parse(b"GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n"),
            Err(HeadError::Host)
        );
        assert_eq!(parse(b"GET / HTTP/1.0\r\n\r\n"), Ok(()));
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost:\r\n\r\n"),
            Ok(()),
            "an empty Host is allowed"
        );
    }

    #[test]
    fn connection_close_rules() {
        let parse = |raw: &[u8]| parse_head(raw).unwrap().0;
        assert!(!parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").wants_close());
        assert!(parse(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").wants_close());
        assert!(!parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").wants_close());
    }

    #[test]
    fn logged_paths_carry_no_query_and_no_authority() {
        let logged = |target: &str| {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
            parse_head(raw.as_bytes()).unwrap().0.logged_path().to_string()
        };
        assert_eq!(logged("/file/a.txt?token=s3cret"), "/file/a.txt");
        assert_eq!(logged("http://user:s3cret@127.0.0.1/file/a.txt"), "/file/a.txt");
        assert_eq!(logged("HTTPS://user:s3cret@nas:3000/file/a?x#y"), "/file/a");
        assert_eq!(logged("http://user:s3cret@nas?q=1"), "/");
        assert_eq!(logged("http://user:s3cret@nas"), "/");
        let head = parse_head(b"GET http://u:p@nas:3000/x HTTP/1.1\r\nHost: y\r\n\r\n")
            .unwrap()
            .0;
        assert_eq!(head.target_authority(), Some("u:p@nas:3000"));
        let origin = parse_head(b"GET /http://nas/x HTTP/1.1\r\nHost: y\r\n\r\n").unwrap().0;
        assert_eq!(origin.target_authority(), None);
    }
}
