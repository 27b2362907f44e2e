//! Stored files never run as pages of the service's origin (docs/API.md "Security"): a page,
//! image or XML document someone uploaded, opened in a browser from the service, could
//! otherwise read and change everything the user's browser may reach there.
//!
//! Checked on the headers curl sees (the browser side is the browser tests'): every response,
//! whoever answered it, says `X-Content-Type-Options: nosniff` exactly once; every file
//! response (200, 206, 304, HEAD) carries `Content-Security-Policy: sandbox`; HTML, SVG and XML
//! files come as attachments named by their last segment, quoted so no name can break the
//! field; other files stay inline; the browse page keeps its own policy.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;

use crate::support::raw::only_response;
use crate::support::raw::raw;
use crate::support::{Response, Server};

/// How many times `name` appears among the response's header fields.
fn count(response: &Response, name: &str) -> usize {
    response
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .count()
}

/// Asserts the response carries `X-Content-Type-Options: nosniff`, once.
#[track_caller]
fn assert_nosniff(response: &Response) {
    if count(response, "X-Content-Type-Options") != 1 || response.header("X-Content-Type-Options") != Some("nosniff") {
        response.fail("expected exactly one X-Content-Type-Options: nosniff");
    }
}

/// The responses a browser could get for the file at `url`: GET, HEAD, a range, and a 304.
fn file_responses(s: &Server, url: &str) -> Vec<(&'static str, Response)> {
    let get = s.get(url);
    let etag = get.header("ETag").unwrap_or_else(|| get.fail("no ETag")).to_string();
    let if_none_match = format!("If-None-Match: {etag}");
    vec![
        ("GET", s.get(url)),
        ("HEAD", s.head(url)),
        ("range", s.get_with(url, &["Range: bytes=0-3"])),
        ("304", s.get_with(url, &[&if_none_match])),
    ]
}

/// Asserts every response of the file at `url` is sandboxed, says nosniff, has the status its
/// request asks for, and is (or is not) an attachment named `filename`.
#[track_caller]
fn assert_file_headers(s: &Server, url: &str, attachment: Option<&str>) {
    for (what, response) in file_responses(s, url) {
        let status = match what {
            "range" => 206,
            "304" => 304,
            _ => 200,
        };
        response.assert_status(status);
        assert_nosniff(&response);
        if response.header("Content-Security-Policy") != Some("sandbox")
            || count(&response, "Content-Security-Policy") != 1
        {
            response.fail(&format!("{what} {url}: expected Content-Security-Policy: sandbox"));
        }
        match (attachment, response.header("Content-Disposition")) {
            (Some(want), Some(got)) if got == want => {}
            (None, None) => {}
            (want, _) => response.fail(&format!("{what} {url}: expected Content-Disposition {want:?}")),
        }
    }
}

#[test]
fn stored_html_svg_and_xml_are_sandboxed_attachments() {
    let s = Server::start();
    let files = [
        ("page.html", "<script>alert(document.domain)</script>"),
        ("PAGE.HTM", "<script>alert(1)</script>"),
        (
            "pic.svg",
            "<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>",
        ),
        (
            "feed.xml",
            "<x xmlns:h=\"http://www.w3.org/1999/xhtml\"><h:script>alert(1)</h:script></x>",
        ),
        (
            "doc.xhtml",
            "<html xmlns=\"http://www.w3.org/1999/xhtml\"><script>alert(1)</script></html>",
        ),
    ];
    for (name, body) in files {
        s.post(&format!("/file/site/{name}"), body).assert_ok_json();
        let want = format!("attachment; filename=\"{name}\"; filename*=UTF-8''{name}");
        assert_file_headers(&s, &format!("/file/site/{name}"), Some(&want));
        // The seed's encoded spelling of the same file is the same file.
        assert_file_headers(&s, &format!("/file/site%2F{name}"), Some(&want));
    }
}

#[test]
fn other_stored_files_are_sandboxed_but_inline() {
    let s = Server::start();
    for name in [
        "notes.txt",
        "data.json",
        "table.csv",
        "no-extension",
        "image.png",
        "html",
    ] {
        s.post(&format!("/file/d/{name}"), "<script>alert(1)</script>")
            .assert_ok_json();
        assert_file_headers(&s, &format!("/file/d/{name}"), None);
    }
}

#[test]
fn attachment_names_are_quoted_so_no_name_breaks_the_field() {
    let s = Server::start();
    // POSTed through the API: quotes, a semicolon, spaces, `%` and a non-ASCII letter.
    s.post("/file/d/we%22ird%3B%20name%20100%25.html", "x").assert_ok_json();
    assert_file_headers(
        &s,
        "/file/d/we%22ird%3B%20name%20100%25.html",
        Some("attachment; filename=\"we_ird; name 100_.html\"; filename*=UTF-8''we%22ird%3B%20name%20100%25.html"),
    );
    s.post("/file/caf%C3%A9.svg", "x").assert_ok_json();
    assert_file_headers(
        &s,
        "/file/caf%C3%A9.svg",
        Some("attachment; filename=\"caf_.svg\"; filename*=UTF-8''caf%C3%A9.svg"),
    );
    // Made by another writer: a name that is not UTF-8, with a backslash.
    fs::write(s.root().join(OsStr::from_bytes(b"b\\ad\xff.xml")), "x").unwrap();
    assert_file_headers(
        &s,
        "/file/b%5Cad%FF.xml",
        Some("attachment; filename=\"b_ad_.xml\"; filename*=UTF-8''b%5Cad%EF%BF%BD.xml"),
    );
}

#[test]
fn every_response_says_nosniff_once() {
    let s = Server::start();
    s.write("d/a.txt", "a\n");
    let mut responses = vec![
        s.get("/"),
        s.get("/healthz"),
        s.get("/readyz"),
        s.get("/metrics"),
        s.get("/file"),
        s.get("/file/"),
        s.get_with("/file/d/", &["Accept: application/json"]),
        s.get_with("/file/d/", &["Accept: text/html"]),
        s.get("/file/d/a.txt/wc"),
        s.get("/file/d/a.txt/check"),
        s.get("/file/missing"),
        s.get_with("/file/missing", &["Accept: application/json"]),
        s.get("/file/..%2Fx"),
        s.get("/nowhere"),
        s.curl(&["-X", "PATCH", &s.url("/file/d/a.txt")]),
        s.curl(&["-X", "OPTIONS", &s.url("/file/d/a.txt")]),
        s.post("/file/d/b.txt", "b"),
        s.append("/file/d/b.txt", "b"),
        s.put_json("/file/d/b.txt", r#"{"path":"d/c.txt"}"#),
        s.delete("/file/d/c.txt"),
        s.get_with("/file/d/a.txt", &["Range: bytes=9-"]),
    ];
    // Refused by the HTTP layer before any handler: a malformed head, an unsupported version.
    for request in [
        &b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n"[..],
        b"GET / HTTP/2.0\r\nHost: t\r\n\r\n",
    ] {
        responses.push(only_response(&raw(s.addr(), request, true)));
    }
    let tokens = Server::start_with_env(&[("HTTP_NAS_TOKEN", "secret-token")], &[]);
    responses.push(tokens.get("/file/"));
    let mut statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    for response in &responses {
        assert_nosniff(response);
    }
    statuses.sort_unstable();
    statuses.dedup();
    eprintln!("nosniff on statuses {statuses:?}");
}

#[test]
fn the_browse_page_keeps_its_own_policy() {
    let s = Server::start();
    s.write("d/page.html", "<p>x</p>");
    let page = s.get_with("/file/d/", &["Accept: text/html"]);
    page.assert_status(200);
    assert_nosniff(&page);
    let policy = page.header("Content-Security-Policy").unwrap_or_default();
    if !policy.contains("default-src 'none'") || page.header("Content-Disposition").is_some() {
        page.fail("the browse page must keep its own policy and stay inline");
    }
}
