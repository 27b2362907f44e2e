//! Reads: `GET` and `HEAD` of a file, `Range` (the table of docs/API.md), `curl -C -` resuming
//! a download, `If-None-Match` and `If-Range` against the current ETag, and `Content-Type`.
//!
//! Requests go through the real `curl` wherever a user would use it (`curl -C -` must really
//! resume, `curl -I` must really show the headers), and through a raw socket only where the
//! bytes themselves matter (a HEAD response must carry no body).

use std::fs;

use crate::support::headers::{etag, required};
use crate::support::raw::raw;
use crate::support::{Response, Server, assert_same_bytes, random_bytes};

#[test]
fn curl_resume_completes_partial_download() {
    let s = Server::start();
    let data = random_bytes(3 << 20, 101);
    s.write("big.bin", &data);
    let local = s.scratch_file("big.bin.part", &data[..(1 << 20) + 123]);
    let url = s.url("/file/big.bin");
    s.sh(&format!("curl -sS -f -C - -o '{}' '{url}'", local.display()))
        .assert_success();
    assert_same_bytes(&fs::read(&local).unwrap(), &data, "resumed download");
}

#[test]
fn curl_head_shows_file_headers() {
    let s = Server::start();
    s.write("table.csv", "a,1\nb,2\n");
    let response = s.head("/file/table.csv");
    response.assert_status(200);
    assert_eq!(required(&response, "Content-Length"), "8");
    assert_eq!(required(&response, "Content-Type"), "text/csv");
    assert_eq!(required(&response, "Accept-Ranges"), "bytes");
    assert!(required(&response, "ETag").starts_with('"'), "ETag must be quoted");
    assert!(
        required(&response, "Last-Modified").ends_with(" GMT"),
        "Last-Modified is an HTTP date"
    );
}

#[test]
fn head_response_carries_no_body() {
    let s = Server::start();
    s.write("table.csv", "a,1\nb,2\n");
    let reply = raw(
        s.addr(),
        b"HEAD /file/table.csv HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        false,
    );
    let (head, body) = reply.split_once("\r\n\r\n").expect("a complete response head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.is_empty(), "HEAD response has a body: {body:?}");
}

#[test]
fn a_file_without_a_well_known_extension_has_no_content_type() {
    // The seed sent none, and Node clients (superagent) then read the body as text.
    let s = Server::start();
    s.write("blob.xyz123", "?");
    s.write("dump", "?");
    for path in ["/file/blob.xyz123", "/file/dump"] {
        let response = s.get(path);
        response.assert_ok_body("?");
        assert_eq!(response.header("Content-Type"), None, "{}", response.context);
    }
}

const RANGE_FILE_BYTES: usize = 1000;

/// The range table on a 1000-byte file: the `Range` header, then the status, `Content-Range`
/// and body slice it must produce.
type RangeCase = (&'static str, u16, Option<&'static str>, std::ops::Range<usize>);
const RANGE_CASES: &[RangeCase] = &[
    ("bytes=0-9", 206, Some("bytes 0-9/1000"), 0..10),
    ("bytes=10-", 206, Some("bytes 10-999/1000"), 10..1000),
    ("bytes=-5", 206, Some("bytes 995-999/1000"), 995..1000),
    ("bytes=5-1000000", 206, Some("bytes 5-999/1000"), 5..1000),
    ("bytes=1000-", 416, Some("bytes */1000"), 0..0),
    ("bytes=0-1,5-6", 200, None, 0..1000),
];

/// Why `response` does not match the expected `status`, `Content-Range` and `body` slice of
/// `data`, if it does not.
fn range_problem(
    &(_, status, content_range, ref body): &RangeCase,
    response: &Response,
    data: &[u8],
) -> Option<String> {
    if response.status != status {
        return Some(format!("status {}, expected {status}", response.status));
    }
    if response.header("Content-Range") != content_range {
        let got = response.header("Content-Range");
        return Some(format!("Content-Range {got:?}, expected {content_range:?}"));
    }
    if status == 416 {
        return response.error_problem(416);
    }
    (response.body != data[body.clone()]).then(|| format!("body is not bytes {body:?}"))
}

#[test]
fn range_requests_follow_the_table() {
    let s = Server::start();
    let data = random_bytes(RANGE_FILE_BYTES, 102);
    s.write("r.bin", &data);
    let failures: Vec<String> = RANGE_CASES
        .iter()
        .filter_map(|case| {
            let response = s.get_with("/file/r.bin", &[&format!("Range: {}", case.0)]);
            let problem = range_problem(case, &response, &data)?;
            Some(format!("{}: {problem}\n  {}", case.0, response.context))
        })
        .collect();
    assert!(failures.is_empty(), "range cases failed:\n{}", failures.join("\n"));
}

#[test]
fn if_none_match_current_etag_is_304_and_changed_file_is_200() {
    let s = Server::start();
    s.write("v.txt", "version one");
    let old = etag(&s, "/file/v.txt");
    let not_modified = s.get_with("/file/v.txt", &[&format!("If-None-Match: {old}")]);
    not_modified.assert_status(304);
    assert!(
        not_modified.body.is_empty(),
        "a 304 has no body: {}",
        not_modified.text()
    );

    s.post("/file/v.txt", "version two").assert_ok_json();
    s.get_with("/file/v.txt", &[&format!("If-None-Match: {old}")])
        .assert_ok_body("version two");
}

#[test]
fn if_range_with_old_etag_sends_whole_new_file() {
    let s = Server::start();
    s.write("v.txt", "version one");
    let old = etag(&s, "/file/v.txt");
    s.post("/file/v.txt", "version two, longer").assert_ok_json();
    let stale = [format!("If-Range: {old}"), "Range: bytes=0-3".to_string()];
    s.get_with("/file/v.txt", &[&stale[0], &stale[1]])
        .assert_ok_body("version two, longer");

    let current = format!("If-Range: {}", etag(&s, "/file/v.txt"));
    let partial = s.get_with("/file/v.txt", &[&current, "Range: bytes=0-3"]);
    assert_eq!(
        (partial.status, partial.text()),
        (206, "vers".to_string()),
        "{}",
        partial.context
    );
}

/// A file body sent with `sendfile` goes out corked and the cork is cleared after it, for a
/// whole file and a range alike: every `TCP_CORK` set is cleared again (a cork left set would
/// hold the tail of every later answer on the connection for 200 ms).
#[test]
fn a_corked_file_body_is_uncorked_after_it() {
    if !crate::support::strace_usable() {
        return;
    }
    let home = crate::support::TempDir::new();
    let trace = home.path().join("cork.strace");
    let wrapper: Vec<String> = [
        "strace",
        "-f",
        "-qq",
        "-e",
        "trace=setsockopt",
        "-o",
        trace.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let root = home.path().join("root");
    fs::create_dir(&root).unwrap();
    let big = random_bytes(64 << 10, 7);
    fs::write(root.join("big.bin"), &big).unwrap();
    let s = Server::start_wrapped_on(&root, &wrapper, &[]);
    let mut conn = s.connect();
    conn.send(b"GET /file/big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_same_bytes(&conn.response().assert_status(200).body, &big, "the whole file");
    conn.send(b"GET /file/big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=1-40000\r\n\r\n");
    assert_same_bytes(&conn.response().assert_status(206).body, &big[1..=40000], "the range");
    drop(conn);
    s.get("/healthz").assert_status(200);
    let traced = fs::read_to_string(&trace).unwrap_or_default();
    let set = traced.matches("TCP_CORK, [1]").count();
    let cleared = traced.matches("TCP_CORK, [0]").count();
    assert_eq!((set, cleared), (2, 2), "corks set and cleared:\n{traced}");
}
