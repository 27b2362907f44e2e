//! Micro-benchmarks of the hot paths, without a server: `make bench-micro` (`cargo bench --bench
//! micro`). They drive the production code through `http_nas::entry`, not copies of it.
//!
//! Every input is built in the benchmark function before `bencher` is called, so only the
//! closure handed to divan is timed. Each timed closure checks its result (line count, body
//! length) or its input was checked before timing, so `cargo test --all-targets`, which runs
//! every benchmark once, is also a smoke test of the inputs.

use divan::Bencher;
use divan::counter::BytesCount;
use std::fmt;

fn main() {
    divan::main();
}

/// `count_lines` (the `/wc` counter) over an in-memory `&[u8]`: the copy into its read buffer
/// plus the vectorised count, without the file system.
mod wc {
    use super::*;
    use http_nas::entry::count_lines;

    #[derive(Clone, Copy, Debug)]
    pub struct Text {
        mib: usize,
        /// Length of every line, `\n` included.
        line: usize,
    }

    impl fmt::Display for Text {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{} MiB, {} B lines", self.mib, self.line)
        }
    }

    const TEXTS: [Text; 4] = [
        Text { mib: 1, line: 40 },
        Text { mib: 1, line: 8192 },
        Text { mib: 64, line: 40 },
        Text { mib: 64, line: 8192 },
    ];

    /// `bytes` of lines of `line` bytes each (the last one cut short), and its `\n` count.
    fn text(bytes: usize, line: usize) -> (Vec<u8>, u64) {
        let mut one = b"2026-01-01,4711,alpha,0.25,".repeat(line / 27 + 1);
        one.truncate(line - 1);
        one.push(b'\n');
        let mut data = one.repeat(bytes / line + 1);
        data.truncate(bytes);
        (data, (bytes / line) as u64)
    }

    #[divan::bench(args = TEXTS)]
    fn count_lines_in_memory(bencher: Bencher, text: Text) {
        let (data, lines) = self::text(text.mib << 20, text.line);
        bencher.counter(BytesCount::of_slice(&data)).bench(|| {
            let n = count_lines(data.as_slice()).unwrap();
            assert_eq!(n, lines);
            n
        });
    }
}

/// The production request-body reader (`Body`) over an in-memory transport, read into a
/// 256 KiB buffer as a handler does: chunked with big and with tiny chunks, and a plain
/// Content-Length body for comparison. Throughput counts decoded body bytes.
mod body {
    use super::*;
    use http_nas::entry::{Body, Framing, ReadBuf};
    use std::io::{self, Read, Write};

    const BODY_BYTES: usize = 1 << 20;
    const OUT_BYTES: usize = 256 * 1024;

    /// A client that has sent everything already: each read takes as much as fits. Writes
    /// (`100 Continue`, never sent here) are discarded.
    struct Wire<'a> {
        input: &'a [u8],
    }

    impl Read for Wire<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = out.len().min(self.input.len());
            out[..n].copy_from_slice(&self.input[..n]);
            self.input = &self.input[n..];
            Ok(n)
        }
    }

    impl Write for Wire<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[derive(Clone, Copy, Debug)]
    pub enum Shape {
        /// `Transfer-Encoding: chunked` in chunks of this many bytes.
        Chunked(usize),
        /// `Content-Length`.
        Length,
    }

    impl fmt::Display for Shape {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Shape::Chunked(size) if size % 1024 == 0 => write!(f, "chunked, {} KiB chunks", size / 1024),
                Shape::Chunked(size) => write!(f, "chunked, {size} B chunks"),
                Shape::Length => f.write_str("content-length"),
            }
        }
    }

    impl Shape {
        fn framing(self) -> Framing {
            match self {
                Shape::Chunked(_) => Framing::Chunked,
                Shape::Length => Framing::Length(BODY_BYTES as u64),
            }
        }

        /// The bytes on the wire for a body of `data`.
        fn encode(self, data: &[u8]) -> Vec<u8> {
            let Shape::Chunked(size) = self else {
                return data.to_vec();
            };
            let mut wire = Vec::with_capacity(data.len() + data.len() / size * 16 + 8);
            for chunk in data.chunks(size) {
                wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                wire.extend_from_slice(chunk);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            wire
        }
    }

    const SHAPES: [Shape; 3] = [Shape::Chunked(16 * 1024), Shape::Chunked(64), Shape::Length];

    #[divan::bench(args = SHAPES)]
    fn read_1_mib_body(bencher: Bencher, shape: Shape) {
        let data: Vec<u8> = (0..BODY_BYTES).map(|i| (i % 251) as u8).collect();
        let wire = shape.encode(&data);
        let mut out = vec![0u8; OUT_BYTES];
        bencher
            .counter(BytesCount::new(BODY_BYTES))
            // The connection's read buffer (16 KiB) outlives a request, so it is not timed.
            .with_inputs(|| ReadBuf::with_bytes(b""))
            .bench_local_refs(|pending| {
                let transport = Wire { input: &wire };
                let mut body = Body::new(transport, pending, shape.framing(), false, None);
                let mut total = 0;
                loop {
                    match body.read(&mut out) {
                        Ok(0) => break,
                        Ok(n) => total += n,
                        Err(e) => panic!("{shape}: {e}"),
                    }
                }
                assert!(total == BODY_BYTES && body.is_complete());
                total
            });
    }
}

/// Request heads: `check_head` (is a whole head buffered?) and `parse_head` (the owned `Head`),
/// both wrappers of the one httparse pass (`read_head`, 64-header array) the reactor runs on
/// every read until a head is whole; `parse` is what that pass costs a complete head.
mod head {
    use super::*;
    use http_nas::entry::{HeadStatus, check_head, parse_head};

    const CURL: &[u8] = b"PUT /file/a/b.csv HTTP/1.1\r\n\
        Host: 127.0.0.1:3000\r\n\
        User-Agent: curl/8.5.0\r\n\
        Accept: */*\r\n\
        Content-Length: 1048576\r\n\
        Expect: 100-continue\r\n\
        \r\n";

    /// 30 header fields, as a browser behind two proxies might send.
    const MANY: &[u8] = b"GET /file/reports/2026/q1/summary.csv HTTP/1.1\r\n\
        Host: nas.storage.svc.cluster.local:3000\r\n\
        User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
        Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
        Accept-Language: en-GB,en;q=0.7,de;q=0.3\r\n\
        Accept-Encoding: gzip, deflate, br, zstd\r\n\
        Authorization: Bearer 0123456789abcdef0123456789abcdef0123456789abcdef\r\n\
        Cache-Control: no-cache\r\n\
        Pragma: no-cache\r\n\
        Connection: keep-alive\r\n\
        Upgrade-Insecure-Requests: 1\r\n\
        Sec-Fetch-Dest: document\r\n\
        Sec-Fetch-Mode: navigate\r\n\
        Sec-Fetch-Site: none\r\n\
        Sec-Fetch-User: ?1\r\n\
        DNT: 1\r\n\
        Referer: http://nas.storage.svc.cluster.local:3000/file/reports/2026/q1/\r\n\
        Cookie: session=4f2c1e8a9b7d6c5e; theme=dark; lang=en\r\n\
        If-None-Match: \"5f3a-61c2b9e4\"\r\n\
        If-Modified-Since: Wed, 01 Apr 2026 08:00:00 GMT\r\n\
        Range: bytes=0-1048575\r\n\
        X-Forwarded-For: 10.1.2.3, 10.4.5.6\r\n\
        X-Forwarded-Proto: http\r\n\
        X-Forwarded-Host: nas.storage.svc.cluster.local\r\n\
        X-Real-IP: 10.1.2.3\r\n\
        X-Request-ID: 7d1c5b2e-3f4a-4b6c-9d8e-0a1b2c3d4e5f\r\n\
        Traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
        Via: 1.1 proxy-a, 1.1 proxy-b\r\n\
        Forwarded: for=10.1.2.3;proto=http;by=10.4.5.6\r\n\
        Sec-CH-UA-Platform: \"Linux\"\r\n\
        TE: trailers\r\n\
        \r\n";

    #[derive(Clone, Copy, Debug)]
    pub enum Kind {
        Curl,
        Many,
    }

    impl fmt::Display for Kind {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(match self {
                Kind::Curl => "curl upload (5 fields)",
                Kind::Many => "30 fields",
            })
        }
    }

    impl Kind {
        /// The head, checked to be complete and to parse with `fields` header fields.
        fn bytes(self) -> &'static [u8] {
            let (head, fields) = match self {
                Kind::Curl => (CURL, 5),
                Kind::Many => (MANY, 30),
            };
            assert!(matches!(check_head(head), Ok(HeadStatus::Complete(n)) if n == head.len()));
            let (parsed, len) = parse_head(head).unwrap();
            assert_eq!((parsed.headers.len(), len), (fields, head.len()));
            head
        }
    }

    const KINDS: [Kind; 2] = [Kind::Curl, Kind::Many];

    #[divan::bench(args = KINDS)]
    fn check(bencher: Bencher, kind: Kind) {
        let head = kind.bytes();
        bencher.bench(|| check_head(divan::black_box(head)));
    }

    #[divan::bench(args = KINDS)]
    fn parse(bencher: Bencher, kind: Kind) {
        let head = kind.bytes();
        bencher.bench(|| parse_head(divan::black_box(head)));
    }
}

/// `app::url::parse` (`entry::parse_url`): method and request target to an `Op`,
/// percent-decoding and the path jail included.
mod api {
    use super::*;
    use http_nas::entry::parse_url;

    #[derive(Clone, Copy, Debug)]
    pub struct Request(&'static str, &'static str);

    impl fmt::Display for Request {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{} {}", self.0, self.1)
        }
    }

    const REQUESTS: [Request; 5] = [
        Request("GET", "/file/a/b/c.csv"),
        Request("POST", "/file/a/b/c.csv"),
        Request("GET", "/file/caf%C3%A9%20menu/na%C3%AFve%2C%20r%C3%A9sum%C3%A9.csv"),
        Request("GET", "/file/x/wc"),
        Request("GET", "/healthz"),
    ];

    #[divan::bench(args = REQUESTS)]
    fn parse_url_to_op(bencher: Bencher, Request(method, target): Request) {
        assert!(parse_url(method, target, None).is_ok(), "{method} {target}");
        bencher.bench(|| parse_url(divan::black_box(method), divan::black_box(target), None));
    }
}

/// The digests every write computes as its body streams in (`storage/digest.rs`): crc32c alone
/// (every upload and append), with the resumable sha-256 (requests that use or ask for it; the
/// SHA-NI instructions where the CPU has them) and with sha-512, over 64 MiB in 256 KiB reads.
mod digests {
    use super::*;
    use http_nas::entry::{DigestHasher, DigestsWanted};

    const LENGTH: usize = 64 << 20;
    const READ: usize = 256 << 10;

    #[divan::bench(args = ["crc32c", "crc32c+sha-256", "crc32c+sha-512"])]
    fn hash_a_body(bencher: Bencher, which: &str) {
        let data: Vec<u8> = (0..LENGTH).map(|i| (i * 31 + 7) as u8).collect();
        let wanted = DigestsWanted {
            sha256: which.contains("256"),
            sha512: which.contains("512"),
        };
        bencher.counter(BytesCount::of_slice(&data)).bench(|| {
            let mut hasher = DigestHasher::new(wanted);
            for read in data.chunks(READ) {
                hasher.update(read);
            }
            hasher.sums()
        });
    }
}
