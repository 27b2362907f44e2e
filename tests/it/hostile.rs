//! Clients that misbehave, over raw TCP: vanishing mid-upload, lying about lengths, broken or
//! ambiguous framing, oversized heads, idle and half-sent connections.
//!
//! Each test checks the two promises docs/API.md makes about such clients. First, the data: an upload
//! that fails leaves the target byte-identical and no `.http-nas-` temp file behind (the server
//! notices a vanished client asynchronously, so that is polled for, up to a few seconds). Second,
//! the framing: a request the server cannot frame gets one error response and a closed
//! connection, so a request smuggled behind its body is never answered. And after every case the
//! server still answers `GET /healthz`.

use std::fmt::Write as _;
use std::fs;
use std::net::TcpStream;
use std::time::Duration;

use crate::support::raw::{Conn, only_response, parse_responses, raw};
use crate::support::{
    RESERVED_PREFIX, SETTLE_TIMEOUT, Server, UPLOAD_START_TIMEOUT, assert_same_bytes, random_bytes, wait_until,
};

/// The file the hostile uploads aim at, and what it holds before they start.
const TARGET: &str = "target";
const ORIGINAL: &[u8] = b"original contents\n";
/// A complete request placed right after a body the server must reject; never to be answered.
const SMUGGLED: &str = "GET /file HTTP/1.1\r\nHost: t\r\n\r\n";

/// A server whose root holds `TARGET` with `ORIGINAL`.
fn with_target(args: &[&str]) -> Server {
    let s = Server::start_with(args);
    s.write(TARGET, ORIGINAL);
    s
}

/// Sends `head` and `body`, waits until the server has visibly started on them (a temp file
/// exists or the target changed), then drops the connection mid-body.
fn abandon_upload(s: &Server, head: &str, body: &[u8]) {
    let mut conn = s.connect();
    conn.send(head.as_bytes()).send(body);
    let started = || !s.temp_files().is_empty() || s.read(TARGET) != ORIGINAL;
    wait_until(UPLOAD_START_TIMEOUT, started);
    drop(conn);
}

/// `data` as chunks of `size` bytes, without the last-chunk: a body cut between chunks.
fn chunks_without_end(data: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in data.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `count` distinct header lines (`X-Header-0: v` ...), to add to a `Host` header.
fn numbered_headers(count: usize) -> String {
    (0..count).fold(String::new(), |mut out, i| {
        let _ = write!(out, "X-Header-{i}: v\r\n");
        out
    })
}

/// Once the server has cleaned up, the target is byte-identical and no temp file remains.
#[track_caller]
fn assert_target_untouched(s: &Server) {
    s.expect_no_temp_files();
    wait_until(SETTLE_TIMEOUT, || s.read(TARGET) == ORIGINAL);
    assert_same_bytes(&s.read(TARGET), ORIGINAL, "target after a failed upload");
}

/// POSTs `body` to the target with `framing` headers and a request smuggled behind it: the
/// server answers `status` exactly once, closes, and leaves the target alone.
#[track_caller]
fn assert_rejected_once(framing: &str, body: &str, status: u16) {
    let s = with_target(&[]);
    let request = format!("POST /file/{TARGET} HTTP/1.1\r\nHost: t\r\n{framing}\r\n{body}{SMUGGLED}");
    only_response(&raw(s.addr(), request.as_bytes(), false)).assert_error(status);
    assert_target_untouched(&s);
    s.assert_healthy();
}

// ---- clients that vanish mid-upload ----

#[test]
fn post_abandoned_mid_body_leaves_target_and_no_temp_file() {
    let s = with_target(&[]);
    let head = "POST /file/target HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n";
    abandon_upload(&s, head, &random_bytes(1 << 20, 1));
    assert_target_untouched(&s);
    s.assert_healthy();
}

#[test]
fn chunked_post_abandoned_between_chunks_is_not_committed() {
    let s = with_target(&[]);
    let head = "POST /file/target HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    abandon_upload(&s, head, &chunks_without_end(&random_bytes(1 << 20, 2), 64 << 10));
    assert_target_untouched(&s);
    s.assert_healthy();
}

#[test]
fn append_abandoned_mid_body_appends_nothing() {
    let s = with_target(&[]);
    let head = "PUT /file/target HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n";
    abandon_upload(&s, head, &random_bytes(1 << 20, 3));
    assert_target_untouched(&s);
    s.assert_healthy();
}

#[test]
fn chunked_append_abandoned_between_chunks_appends_nothing() {
    let s = with_target(&[]);
    let head = "PUT /file/target HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    abandon_upload(&s, head, &chunks_without_end(&random_bytes(1 << 20, 4), 64 << 10));
    assert_target_untouched(&s);
    s.assert_healthy();
}

#[test]
fn append_retried_at_same_offset_after_disconnect_appends_once() {
    let s = with_target(&[]);
    let head = "PUT /file/target HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n";
    abandon_upload(&s, head, &random_bytes(1 << 20, 5));
    assert_target_untouched(&s);
    let offset = format!("Upload-Offset: {}", ORIGINAL.len());
    let url = s.url("/file/target");
    let retry = s.curl(&["-X", "PUT", "-H", &offset, "--data-binary", "retried", &url]);
    retry.assert_ok_json();
    assert_eq!(retry.header("Upload-Offset"), Some(&*(ORIGINAL.len() + 7).to_string()));
    assert_eq!(s.read(TARGET), [ORIGINAL, b"retried"].concat());
}

#[test]
fn huge_content_length_then_close_leaves_server_serving() {
    let s = Server::start();
    let mut conn = s.connect();
    conn.send(b"POST /file/big HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000000\r\n\r\n");
    drop(conn);
    s.assert_healthy();
    s.get("/file").assert_ok_body("OK");
    s.expect_no_temp_files();
    assert!(!s.exists("big"));
}

#[test]
fn stale_temp_files_are_removed_on_start() {
    let s = Server::start_prepared(
        |root| {
            fs::create_dir(root.join("sub")).unwrap();
            fs::write(root.join(format!("{RESERVED_PREFIX}stale")), "partial").unwrap();
            fs::write(root.join(format!("sub/{RESERVED_PREFIX}stale")), "partial").unwrap();
            fs::write(root.join("sub/keep"), "kept").unwrap();
        },
        &[],
    );
    s.expect_no_temp_files();
    assert_eq!(s.read("sub/keep"), b"kept");
}

#[test]
fn listing_hides_temp_file_of_upload_in_progress() {
    let s = Server::start();
    let mut conn = s.connect();
    conn.send(b"POST /file/inprogress HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n");
    conn.send(&random_bytes(1 << 20, 6));
    let has_temp = wait_until(UPLOAD_START_TIMEOUT, || !s.temp_files().is_empty());
    assert!(
        has_temp,
        "no {RESERVED_PREFIX} temp file under the root while uploading"
    );
    for accept in ["Accept: */*", "Accept: application/json"] {
        let listing = s.curl(&["-H", accept, &s.url("/file/")]);
        if listing.assert_status(200).text().contains(RESERVED_PREFIX) {
            listing.fail("the listing shows an upload temp file");
        }
    }
    drop(conn);
    s.expect_no_temp_files();
}

// ---- bodies that do not match their framing ----

#[test]
fn body_shorter_than_content_length_is_400() {
    let s = with_target(&[]);
    let request = "POST /file/target HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly twenty bytes...";
    only_response(&raw(s.addr(), request.as_bytes(), true)).assert_error(400);
    assert_target_untouched(&s);
    s.assert_healthy();
}

#[test]
fn append_shorter_than_content_length_is_400() {
    let s = with_target(&[]);
    let request = "PUT /file/target HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly twenty bytes...";
    only_response(&raw(s.addr(), request.as_bytes(), true)).assert_error(400);
    assert_target_untouched(&s);
    s.assert_healthy();
}

#[test]
fn chunk_size_not_hex_is_400() {
    assert_rejected_once("Transfer-Encoding: chunked\r\n", "zz\r\nhello\r\n0\r\n\r\n", 400);
}

#[test]
fn chunk_data_not_followed_by_crlf_is_400() {
    assert_rejected_once("Transfer-Encoding: chunked\r\n", "5\r\nhelloXX\r\n0\r\n\r\n", 400);
}

#[test]
fn chunk_size_of_17_hex_digits_is_400() {
    let body = "fffffffffffffffff\r\nhello\r\n0\r\n\r\n";
    assert_rejected_once("Transfer-Encoding: chunked\r\n", body, 400);
}

#[test]
fn content_length_not_a_number_is_400() {
    assert_rejected_once("Content-Length: abc\r\n", "hello", 400);
}

#[test]
fn negative_content_length_is_400() {
    assert_rejected_once("Content-Length: -5\r\n", "hello", 400);
}

#[test]
fn conflicting_content_lengths_are_400() {
    assert_rejected_once("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!", 400);
}

#[test]
fn content_length_with_transfer_encoding_is_400() {
    let framing = "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n";
    assert_rejected_once(framing, "5\r\nhello\r\n0\r\n\r\n", 400);
}

#[test]
fn unknown_transfer_encoding_is_501() {
    assert_rejected_once("Transfer-Encoding: gzip\r\n", "hello", 501);
}

#[test]
fn body_over_max_body_is_413_and_target_untouched() {
    let s = with_target(&["--max-body", "1000"]);
    s.post("/file/target", vec![b'x'; 2000]).assert_error(413);
    assert_target_untouched(&s);
    s.assert_healthy();
}

#[test]
fn chunked_body_over_max_body_is_413_and_target_untouched() {
    let s = with_target(&["--max-body", "1000"]);
    let file = s.scratch_file("big", vec![b'x'; 2000]);
    let (data, url) = (format!("@{}", file.display()), s.url("/file/target"));
    let chunked = "Transfer-Encoding: chunked";
    s.curl(&["-X", "POST", "-H", chunked, "--data-binary", &data, &url])
        .assert_error(413);
    assert_target_untouched(&s);
    s.assert_healthy();
}

// ---- heads the server must refuse ----

#[test]
fn http_2_request_line_is_505_and_closes() {
    let s = Server::start();
    let request = format!("GET /file HTTP/2.0\r\nHost: t\r\n\r\n{SMUGGLED}");
    only_response(&raw(s.addr(), request.as_bytes(), false)).assert_error(505);
    s.assert_healthy();
}

#[test]
fn head_over_16_kib_is_431() {
    let s = Server::start();
    let filler = "a".repeat(17 << 10);
    let request = format!("GET /file HTTP/1.1\r\nHost: t\r\nX-Filler: {filler}\r\n\r\n");
    only_response(&raw(s.addr(), request.as_bytes(), true)).assert_error(431);
    s.assert_healthy();
}

#[test]
fn head_of_15_kib_is_accepted() {
    let s = Server::start();
    let filler = "a".repeat(15 << 10);
    let request = format!("GET /file HTTP/1.1\r\nHost: t\r\nX-Filler: {filler}\r\n\r\n");
    only_response(&raw(s.addr(), request.as_bytes(), true)).assert_ok_body("OK");
}

#[test]
fn more_than_64_headers_is_431() {
    let s = Server::start();
    let headers = numbered_headers(64);
    let request = format!("GET /file HTTP/1.1\r\nHost: t\r\n{headers}\r\n");
    only_response(&raw(s.addr(), request.as_bytes(), true)).assert_error(431);
    s.assert_healthy();
}

#[test]
fn exactly_64_headers_are_accepted() {
    let s = Server::start();
    let headers = numbered_headers(63);
    let request = format!("GET /file HTTP/1.1\r\nHost: t\r\n{headers}\r\n");
    only_response(&raw(s.addr(), request.as_bytes(), true)).assert_ok_body("OK");
}

// ---- Expect: 100-continue ----

#[test]
fn expect_100_continue_gets_interim_response_before_body() {
    let s = Server::start();
    let mut conn = s.connect();
    conn.send(b"POST /file/cont HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    conn.response().assert_status(100);
    conn.send(b"hello");
    conn.response().assert_ok_json();
    assert_eq!(s.read("cont"), b"hello");
}

#[test]
fn expect_100_continue_to_bad_path_is_400_without_interim_response() {
    let s = Server::start();
    let mut conn = s.connect();
    conn.send(b"POST /file/..%2Fx HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    conn.response().assert_error(400);
    assert!(!s.outside().join("x").exists());
    s.assert_healthy();
}

// ---- connections ----

#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = Server::start();
    s.write("a", "A");
    s.write("b", "B");
    let request = "GET /file/a HTTP/1.1\r\nHost: t\r\n\r\nGET /file/b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let answers: Vec<_> = parse_responses(&raw(s.addr(), request.as_bytes(), false))
        .iter()
        .map(|r| (r.status, r.text()))
        .collect();
    assert_eq!(answers, [(200, "A".to_string()), (200, "B".to_string())]);
}

#[test]
fn keep_alive_serves_a_post_then_a_get_on_one_connection() {
    let s = Server::start();
    let mut conn = s.connect();
    conn.send(b"POST /file/kept HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nkept");
    conn.response().assert_ok_json();
    conn.send(b"GET /file/kept HTTP/1.1\r\nHost: t\r\n\r\n");
    conn.response().assert_ok_body("kept");
}

#[test]
fn idle_connections_do_not_block_other_clients() {
    let s = Server::start_with(&["--workers", "2"]);
    let idle: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(s.addr()).unwrap()).collect();
    s.get("/file").assert_ok_body("OK");
    drop(idle);
    s.assert_healthy();
}

#[test]
fn half_sent_heads_do_not_block_other_clients() {
    let s = Server::start_with(&["--workers", "2"]);
    let slow: Vec<Conn> = (0..50)
        .map(|_| {
            let mut conn = s.connect();
            conn.send(b"GET /file HTTP/1.1\r\nHost: t\r\n");
            conn
        })
        .collect();
    s.get("/file").assert_ok_body("OK");
    drop(slow);
    s.assert_healthy();
}

// ---- review findings: RFC details of the wire ----

#[test]
fn no_content_and_not_modified_carry_no_content_length() {
    let s = with_target(&[]);
    let mut conn = s.connect();
    conn.send(b"OPTIONS /file/target HTTP/1.1\r\nHost: t\r\n\r\n");
    let options = conn.response();
    options.assert_status(204);
    let etag = s.head("/file/target").header("ETag").map(str::to_string);
    let etag = etag.unwrap_or_else(|| options.fail("no ETag on HEAD"));
    conn.send(format!("GET /file/target HTTP/1.1\r\nHost: t\r\nIf-None-Match: {etag}\r\n\r\n").as_bytes());
    let not_modified = conn.response();
    not_modified.assert_status(304);
    for response in [&options, &not_modified] {
        if response.header("Content-Length").is_some() {
            response.fail("RFC 9110 §8.6: no Content-Length on a 204 or a 304");
        }
    }
}

#[test]
fn absolute_form_targets_are_served_like_their_path() {
    let s = with_target(&[]);
    let text = raw(
        s.addr(),
        b"GET http://nas:3000/file/target HTTP/1.1\r\nHost: nas\r\nConnection: close\r\n\r\n",
        false,
    );
    only_response(&text).assert_ok_body(ORIGINAL);
}

#[test]
fn a_crlf_after_a_body_leaves_the_connection_idle_not_timed_out() {
    let s = Server::start_with(&["--head-timeout", "1", "--idle-timeout", "30"]);
    let mut conn = s.connect();
    conn.send(b"POST /file/crlf HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi\r\n");
    conn.response().assert_ok_json();
    std::thread::sleep(Duration::from_millis(2500));
    conn.send(b"GET /file/crlf HTTP/1.1\r\nHost: t\r\n\r\n");
    conn.response().assert_ok_body("hi");
}

#[test]
fn a_refused_request_line_gets_an_access_line() {
    let s = Server::start();
    let mut conn = s.connect();
    conn.send(b"GET /file HTTP/2.0\r\nHost: t\r\n\r\n");
    let client = conn.local_addr().to_string();
    conn.read_to_close();
    let line = format!("{client} - - 505 in=0");
    let logged = wait_until(SETTLE_TIMEOUT, || s.log().contains(&line));
    assert!(logged, "no access line {line:?} in:\n{}", s.log());
}

#[test]
fn failed_writes_leave_no_new_directories_behind() {
    let s = Server::start();
    let text = raw(
        s.addr(),
        b"POST /file/np1/np2/f HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nshort",
        true,
    );
    only_response(&text).assert_error(400);
    s.send("PUT", "/file/np3/np4/f", b"x", &["Upload-Offset: 7"])
        .assert_error(409);
    let gone = wait_until(SETTLE_TIMEOUT, || !s.exists("np1") && !s.exists("np3"));
    assert!(
        gone,
        "empty directories left behind: {:?}",
        fs::read_dir(s.root()).map(|d| d.count())
    );
    s.get("/file/").assert_ok_body("");
}

#[test]
fn a_name_ending_in_a_multibyte_character_never_stops_the_server() {
    // Found by fuzzing api::parse: slicing the last three bytes of "éé" as a str panicked, in
    // the reactor, the one thread every client needs.
    let s = Server::start();
    s.write("\u{e9}\u{e9}", "accents\n");
    let mut conn = s.connect();
    conn.send("GET /file/\u{e9}\u{e9} HTTP/1.1\r\nHost: t\r\n\r\n".as_bytes());
    conn.response().assert_ok_body("accents\n");
    let mut conn = s.connect();
    conn.send("POST /file/x\u{e9}\u{e9}%2F HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx".as_bytes());
    assert_eq!(conn.response().status, 400);
    s.assert_healthy();
}
