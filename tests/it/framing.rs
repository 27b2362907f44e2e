//! HTTP/1.1 framing over raw TCP: `Content-Length` and chunked bodies, `Expect: 100-continue`,
//! head and header-count limits, `MAX_BODY`, pipelining and keep-alive, HTTP/1.0 and /2 request
//! lines, absolute-form targets, and which responses carry no length.
//!
//! A request the server cannot frame gets one error response and a closed connection, so a
//! request smuggled behind its body is never answered; an upload refused for its framing leaves
//! the target byte-identical; and after every case the server still answers `GET /healthz`.

use std::fmt::Write as _;
use std::time::Duration;

use crate::support::Server;
use crate::support::abandon::{ORIGINAL, TARGET, assert_target_untouched, with_target};
use crate::support::probe::send_raw;
use crate::support::raw::{only_response, parse_responses, raw};

/// A complete request placed right after a body the server must reject; never to be answered.
const SMUGGLED: &str = "GET /file HTTP/1.1\r\nHost: t\r\n\r\n";

/// `count` distinct header lines (`X-Header-0: v` ...), to add to a `Host` header.
fn numbered_headers(count: usize) -> String {
    (0..count).fold(String::new(), |mut out, i| {
        let _ = write!(out, "X-Header-{i}: v\r\n");
        out
    })
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
fn body_shorter_than_content_length_is_400() {
    let s = with_target(&[]);
    let request = "POST /file/target HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly twenty bytes...";
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
fn request_heads_follow_rfc_9110_and_9112() {
    let s = Server::start();
    let cases: [(&str, u16); 6] = [
        ("GET /healthz HTTP/1.1\r\n\r\n", 400),
        ("GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("GET /file/a b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (
            "PUT /file/x HTTP/1.1\r\nHost: t\r\nExpect: foo\r\nContent-Length: 1\r\n\r\nx",
            417,
        ),
        ("OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n", 204),
        ("GET /healthz HTTP/1.0\r\n\r\n", 200),
    ];
    for (request, status) in cases {
        let r = send_raw(&s, request);
        assert_eq!(r.status, status, "{request:?}: {}", r.text());
    }
    let options = send_raw(&s, "OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(options.header("Allow").is_some_and(|a| a.contains("DELETE")));
    assert!(!s.exists("x"), "the 417 stored nothing");
}
