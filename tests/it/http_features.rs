//! Issue 4, the HTTP features curl users and operators rely on: resumed downloads and ranges,
//! validators and conditional writes, listings, bearer tokens, probes, metrics, `Allow`, and
//! the access log.
//!
//! Requests go through the real `curl` wherever a user would use it (`curl -C -` must really
//! resume, `curl -I` must really show the headers), and through a raw socket only where the
//! bytes themselves matter (a HEAD response must carry no body). Expected values come from
//! outside the server: the bytes the test wrote, `date -u` for listing times, the metric names
//! docs/API.md documents.

use std::fs;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use crate::support::raw::raw;
use crate::support::{
    RESERVED_PREFIX, Response, SETTLE_TIMEOUT, Server, TempDir, assert_same_bytes, random_bytes, wait_until,
};

/// How long the server may take to count a finished request in its metrics or log it: both
/// happen after the response has been written, so after curl has returned.
const RECORD_TIMEOUT: Duration = Duration::from_secs(5);
/// Tokens of the token tests; distinct enough that a log line can be searched for them.
const RW_TOKEN: &str = "rw-token-3f9a1c77e2";
const RO_TOKEN: &str = "ro-token-8b06d45e91";
const WRONG_TOKEN: &str = "wrong-token-51c2aa0d";

// ---- helpers ----

/// `Authorization: Bearer TOKEN`.
fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// The ETag a HEAD of `path` reports.
#[track_caller]
fn etag(s: &Server, path: &str) -> String {
    let response = s.head(path);
    let etag = response.assert_status(200).header("ETag");
    etag.unwrap_or_else(|| response.fail("no ETag")).to_string()
}

/// The header `name`, or a failure naming the response.
#[track_caller]
fn required<'a>(response: &'a Response, name: &str) -> &'a str {
    response
        .header(name)
        .unwrap_or_else(|| response.fail(&format!("no {name} header")))
}

/// `secs` since the epoch in RFC 3339 UTC, as GNU `date -u` writes it.
fn rfc3339_by_date(secs: u64) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("run date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The modification time of `root/rel` in whole seconds since the epoch.
fn mtime_secs(s: &Server, rel: &str) -> u64 {
    let modified = fs::metadata(s.root().join(rel))
        .and_then(|m| m.modified())
        .expect("mtime");
    modified.duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

// ---- resume and HEAD ----

#[test]
fn issue4_curl_resume_completes_partial_download() {
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
fn issue4_curl_head_shows_file_headers() {
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
fn issue11_a_file_without_a_well_known_extension_has_no_content_type() {
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

// ---- ranges ----

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
fn issue4_range_requests_follow_the_table() {
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

// ---- validators ----

#[test]
fn issue4_if_none_match_current_etag_is_304_and_changed_file_is_200() {
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
fn issue4_if_range_with_old_etag_sends_whole_new_file() {
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

// ---- conditional writes ----

#[test]
fn issue4_post_if_none_match_star_creates_only() {
    let s = Server::start();
    let create_only = ["If-None-Match: *"];
    s.send("POST", "/file/once.txt", b"first", &create_only)
        .assert_ok_json();
    s.send("POST", "/file/once.txt", b"second", &create_only)
        .assert_error(412);
    assert_eq!(s.read("once.txt"), b"first");
}

#[test]
fn issue4_post_if_match_replaces_only_the_expected_version() {
    let s = Server::start();
    s.write("doc.txt", "v1");
    let wrong = s.send("POST", "/file/doc.txt", b"lost", &["If-Match: \"not-the-etag\""]);
    wrong.assert_error(412);
    assert_eq!(s.read("doc.txt"), b"v1");

    let right = format!("If-Match: {}", etag(&s, "/file/doc.txt"));
    s.send("POST", "/file/doc.txt", b"v2", &[&right]).assert_ok_json();
    assert_eq!(s.read("doc.txt"), b"v2");

    s.send("POST", "/file/doc.txt", b"v3", &[&right]).assert_error(412);
    assert_eq!(s.read("doc.txt"), b"v2", "the ETag of v1 must not match v2");
}

#[test]
fn issue4_post_if_match_on_missing_file_is_412() {
    let s = Server::start();
    s.send("POST", "/file/absent.txt", b"x", &["If-Match: \"any\""])
        .assert_error(412);
    assert!(!s.exists("absent.txt"));
}

#[test]
fn issue4_append_if_match_appends_only_to_the_expected_version() {
    let s = Server::start();
    s.write("log.csv", "a\n");
    let wrong = s.send("PUT", "/file/log.csv", b"lost\n", &["If-Match: \"not-the-etag\""]);
    wrong.assert_error(412);
    assert_eq!(s.read("log.csv"), b"a\n");

    let right = format!("If-Match: {}", etag(&s, "/file/log.csv"));
    s.send("PUT", "/file/log.csv", b"b\n", &[&right]).assert_ok_json();
    assert_eq!(s.read("log.csv"), b"a\nb\n");
}

// ---- listings ----

/// A server whose root holds `list/{a.csv, b.txt, c, sub/inner}`, plus reserved-name files a
/// listing must never show (planted after the start-up sweep).
fn with_listing() -> Server {
    let s = Server::start();
    for (name, body) in [
        ("list/b.txt", "bb"),
        ("list/a.csv", "a,1\n"),
        ("list/c", ""),
        ("list/sub/inner", "i"),
    ] {
        s.write(name, body);
    }
    s.write("list/.http-nas-tmp-999-1", "partial upload");
    s.write("list/.http-nas-journal-12345", "journal");
    s
}

#[test]
fn issue11_plain_listing_is_sorted_bare_names_as_the_seed_printed() {
    let s = with_listing();
    let response = s.get("/file/list");
    let text = response.assert_status(200).text();
    assert_eq!(
        text.split_whitespace().collect::<Vec<_>>(),
        ["a.csv", "b.txt", "c", "sub"],
        "{}",
        response.context
    );
}

#[test]
fn issue4_json_listing_has_name_type_size_and_modified() {
    let s = with_listing();
    let response = s.get_with("/file/list", &["Accept: application/json"]);
    let entries: Value = serde_json::from_slice(&response.assert_status(200).body).expect("JSON listing");
    let expected = [
        ("a.csv", "file", 4),
        ("b.txt", "file", 2),
        ("c", "file", 0),
        ("sub", "directory", 0),
    ];
    let entries = entries
        .as_array()
        .unwrap_or_else(|| response.fail("the listing is not an array"));
    assert_eq!(entries.len(), expected.len(), "{entries:?}");
    for (entry, (name, kind, size)) in entries.iter().zip(expected) {
        assert_eq!(entry["name"], name, "{entry}");
        assert_eq!(entry["type"], kind, "{entry}");
        assert!(entry["size"].is_u64(), "size must be a number: {entry}");
        if kind == "file" {
            assert_eq!(entry["size"], size, "{entry}");
        }
        let modified = rfc3339_by_date(mtime_secs(&s, &format!("list/{name}")));
        assert_eq!(entry["modified"], modified.as_str(), "{entry}");
    }
}

#[test]
fn issue4_listings_never_show_temp_files_or_journals() {
    let s = with_listing();
    for accept in ["Accept: */*", "Accept: application/json"] {
        let response = s.get_with("/file/list", &[accept]);
        if response.assert_status(200).text().contains(RESERVED_PREFIX) {
            response.fail("the listing shows a reserved .http-nas- file");
        }
    }
}

#[test]
fn issue4_root_listing_lists_top_level_entries() {
    let s = Server::start();
    s.write("top.txt", "t");
    s.write("dir/inner.txt", "i");
    s.write(".http-nas-tmp-999-2", "partial upload");
    let response = s.get("/file/");
    let text = response.assert_status(200).text();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        ["dir", "top.txt"],
        "{}",
        response.context
    );
}

// ---- tokens ----

/// A server with both tokens from the environment and `doc.txt` holding `v1`.
fn with_tokens() -> Server {
    let s = Server::start_with_env(&[("HTTP_NAS_TOKEN", RW_TOKEN), ("HTTP_NAS_READ_TOKEN", RO_TOKEN)], &[]);
    s.write("doc.txt", "v1");
    s
}

#[test]
fn issue4_missing_or_wrong_token_is_401_with_www_authenticate() {
    let s = with_tokens();
    let wrong = bearer(WRONG_TOKEN);
    for response in [s.get("/file/doc.txt"), s.get_with("/file/doc.txt", &[&wrong])] {
        response.assert_error(401);
        if !required(&response, "WWW-Authenticate").starts_with("Bearer") {
            response.fail("WWW-Authenticate must name the Bearer scheme");
        }
    }
    s.send("POST", "/file/doc.txt", b"v2", &[&wrong]).assert_error(401);
    assert_eq!(s.read("doc.txt"), b"v1");
}

#[test]
fn issue4_read_write_token_reads_and_writes() {
    let s = with_tokens();
    let rw = bearer(RW_TOKEN);
    s.get_with("/file/doc.txt", &[&rw]).assert_ok_body("v1");
    s.send("POST", "/file/doc.txt", b"v2", &[&rw]).assert_ok_json();
    s.send("PUT", "/file/doc.txt", b"+", &[&rw]).assert_ok_json();
    assert_eq!(s.read("doc.txt"), b"v2+");
    s.curl(&["-X", "DELETE", "-H", &rw, &s.url("/file/doc.txt")])
        .assert_ok_json();
    assert!(!s.exists("doc.txt"));
}

#[test]
fn issue4_read_only_token_reads_but_every_write_is_403() {
    let s = with_tokens();
    let ro = bearer(RO_TOKEN);
    s.get_with("/file/doc.txt", &[&ro]).assert_ok_body("v1");
    s.curl(&["-I", "-H", &ro, &s.url("/file/doc.txt")]).assert_status(200);
    let url = s.url("/file/doc.txt");
    let move_body = r#"{"path": "moved.txt"}"#;
    let json = "Content-Type: application/json";
    let writes = [
        s.send("POST", "/file/doc.txt", b"v2", &[&ro]),
        s.send("PUT", "/file/doc.txt", b"+", &[&ro]),
        s.curl(&["-X", "PUT", "-H", &ro, "-H", json, "--data-binary", move_body, &url]),
        s.curl(&["-X", "DELETE", "-H", &ro, &url]),
    ];
    for response in &writes {
        response.assert_error(403);
    }
    assert_eq!(s.read("doc.txt"), b"v1");
    assert!(!s.exists("moved.txt"));
}

#[test]
fn issue4_token_files_with_trailing_newline_work() {
    let secrets = TempDir::new();
    let (rw_file, ro_file) = (secrets.path().join("token"), secrets.path().join("read-token"));
    fs::write(&rw_file, format!("{RW_TOKEN}\n")).unwrap();
    fs::write(&ro_file, format!("{RO_TOKEN}\n")).unwrap();
    let (rw_path, ro_path) = (rw_file.to_string_lossy(), ro_file.to_string_lossy());
    let s = Server::start_with(&["--token-file", &rw_path, "--read-token-file", &ro_path]);
    s.send("POST", "/file/doc.txt", b"v1", &[&bearer(RW_TOKEN)])
        .assert_ok_json();
    s.get_with("/file/doc.txt", &[&bearer(RO_TOKEN)]).assert_ok_body("v1");
    s.send("POST", "/file/doc.txt", b"v2", &[&bearer(RO_TOKEN)])
        .assert_error(403);
    s.get("/file/doc.txt").assert_error(401);
}

#[test]
fn issue4_probes_and_metrics_need_no_token() {
    let s = with_tokens();
    s.get("/healthz").assert_status(200);
    s.get("/readyz").assert_status(200);
    s.get("/metrics").assert_status(200);
    s.get("/file/doc.txt").assert_error(401);
}

#[test]
fn issue4_tokens_never_appear_in_the_log() {
    let s = Server::start_with_env(
        &[("HTTP_NAS_TOKEN", RW_TOKEN), ("HTTP_NAS_READ_TOKEN", RO_TOKEN)],
        &["--log-level", "trace"],
    );
    let tokens = [RW_TOKEN, RO_TOKEN, WRONG_TOKEN];
    for token in tokens {
        let auth = bearer(token);
        s.get_with("/file/doc.txt", &[&auth]);
        s.send("POST", "/file/doc.txt", b"v", &[&auth]);
    }
    let all_logged = wait_until(RECORD_TIMEOUT, || {
        s.log().matches("/file/doc.txt").count() >= 2 * tokens.len()
    });
    assert!(all_logged, "not every request was logged:\n{}", s.log());
    let log = s.log();
    for token in tokens {
        assert!(!log.contains(token), "the log shows token {token:?}:\n{log}");
    }
}

// ---- probes ----

#[test]
fn issue4_probes_answer_200_while_storage_is_there() {
    let s = Server::start();
    s.get("/healthz").assert_status(200);
    s.get("/readyz").assert_status(200);
}

#[test]
fn issue4_readyz_is_503_once_storage_root_is_gone_but_healthz_stays_200() {
    let s = Server::start();
    fs::rename(s.root(), s.outside().join("moved-away")).expect("rename the root away");
    // The probes answer from a check made every second, off the request path.
    let failed = wait_until(SETTLE_TIMEOUT, || s.get("/readyz").status == 503);
    assert!(failed, "readyz still 200 with the root gone");
    s.get("/readyz").assert_error(503);
    s.get("/healthz").assert_status(200);
}

#[test]
fn seed_health_probe_get_file_is_503_once_storage_root_is_gone() {
    let s = Server::start();
    s.get("/file").assert_ok_body("OK");
    fs::rename(s.root(), s.outside().join("moved-away")).expect("rename the root away");
    let failed = wait_until(SETTLE_TIMEOUT, || s.get("/file").status == 503);
    assert!(failed, "GET /file still 200 with the root gone");
    s.get("/file").assert_error(503);
}

// ---- metrics ----

/// The counters a successful upload and a missing-file read must move.
const UPLOADS_2XX: &str = r#"http_nas_requests_total{op="upload",status="2xx"}"#;
const READS_4XX: &str = r#"http_nas_requests_total{op="read",status="4xx"}"#;
const BYTES_IN: &str = r#"http_nas_body_bytes_total{direction="in"}"#;

/// Metric families docs/API.md promises, by name prefix.
const METRIC_FAMILIES: &[&str] = &[
    "http_nas_requests_total",
    "http_nas_body_bytes_total",
    "http_nas_request_duration_seconds_",
    "http_nas_in_flight_requests",
    "http_nas_busy_workers",
    "http_nas_queued_requests",
    "http_nas_parked_connections",
    "http_nas_overload_rejections_total",
    "http_nas_storage_free_bytes",
];

#[test]
fn issue4_metrics_count_requests_and_bytes_but_name_no_file() {
    const NAME: &str = "metrics-probe-name";
    let s = Server::start();
    let before = s.scrape();
    let missing: Vec<_> = METRIC_FAMILIES
        .iter()
        .filter(|family| !before.keys().any(|k| k.starts_with(*family)))
        .collect();
    assert!(missing.is_empty(), "metric families missing: {missing:?}");

    s.post(&format!("/file/{NAME}.bin"), vec![b'x'; 1000]).assert_ok_json();
    s.get(&format!("/file/{NAME}-missing.txt")).assert_error(404);
    let value = |m: &std::collections::HashMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    let counted = wait_until(RECORD_TIMEOUT, || {
        let after = s.scrape();
        value(&after, UPLOADS_2XX) > value(&before, UPLOADS_2XX)
            && value(&after, READS_4XX) > value(&before, READS_4XX)
            && value(&after, BYTES_IN) >= value(&before, BYTES_IN) + 1000.0
    });
    let text = s.get("/metrics").text();
    assert!(counted, "counters did not move: before {before:?}\nafter:\n{text}");
    assert!(!text.contains(NAME), "the metrics name a file:\n{text}");
}

#[test]
fn metrics_response_has_one_content_type() {
    let s = Server::start();
    let response = s.get("/metrics");
    let types: Vec<_> = response
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .collect();
    if types.len() != 1 || !types[0].1.starts_with("text/plain; version=0.0.4") {
        response.fail(&format!("expected one Prometheus Content-Type, got {types:?}"));
    }
}

#[test]
fn requests_refused_for_their_framing_are_counted_as_their_own_op_not_the_previous_one() {
    let s = Server::start_with(&["--workers", "1"]);
    s.write("w.txt", "a\n");
    s.get("/file/w.txt/wc").assert_ok_body("1");
    let mut conn = s.connect();
    conn.send(b"POST /file/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n");
    conn.response().assert_error(501);
    let upload_5xx = r#"http_nas_requests_total{op="upload",status="5xx"}"#;
    let wc_5xx = r#"http_nas_requests_total{op="wc",status="5xx"}"#;
    let counted = wait_until(RECORD_TIMEOUT, || s.scrape().get(upload_5xx).copied() == Some(1.0));
    let after = s.scrape();
    assert!(
        counted && after.get(wc_5xx).copied().unwrap_or(0.0) == 0.0,
        "the 501 should count as op=upload: {after:?}"
    );
}

// ---- methods ----

#[test]
fn issue4_wrong_method_is_405_with_allow() {
    let s = Server::start();
    s.write("x", "x");
    for (method, path) in [("PATCH", "/file/x"), ("POST", "/healthz"), ("DELETE", "/file/x/wc")] {
        let response = s.curl(&["-X", method, &s.url(path)]);
        response.assert_error(405);
        let allow = required(&response, "Allow");
        let listed: Vec<&str> = allow.split(',').map(str::trim).collect();
        if !listed.contains(&"GET") || listed.contains(&method) {
            response.fail(&format!(
                "{method} {path}: Allow {allow:?} should list GET and not {method}"
            ));
        }
    }
}

#[test]
fn options_on_the_root_lists_only_what_the_root_takes() {
    let s = Server::start();
    let response = s.curl(&["-X", "OPTIONS", &s.url("/file/")]);
    response.assert_status(204);
    assert_eq!(
        required(&response, "Allow"),
        "GET, HEAD, OPTIONS",
        "{}",
        response.context
    );
}

#[test]
fn issue4_options_is_204_with_allow() {
    let s = Server::start();
    let response = s.curl(&["-X", "OPTIONS", &s.url("/file/x")]);
    response.assert_status(204);
    let allow = required(&response, "Allow");
    for method in ["GET", "HEAD", "POST", "PUT", "DELETE"] {
        if !allow.split(',').any(|m| m.trim() == method) {
            response.fail(&format!("Allow {allow:?} lacks {method}"));
        }
    }
}

// ---- access log ----

#[test]
fn issue4_access_log_names_client_method_path_and_status() {
    let s = Server::start();
    s.write("logged.txt", "hello");
    let mut conn = s.connect();
    conn.send(b"GET /file/logged.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    conn.response().assert_ok_body("hello");
    let client = conn.local_addr().to_string();
    let logged = |line: &str| {
        let words: Vec<&str> = line.split_whitespace().collect();
        [client.as_str(), "GET", "/file/logged.txt", "200"]
            .iter()
            .all(|w| words.contains(w))
    };
    let found = wait_until(RECORD_TIMEOUT, || s.log().lines().any(logged));
    assert!(
        found,
        "no access line with {client} GET /file/logged.txt 200 in:\n{}",
        s.log()
    );
}
