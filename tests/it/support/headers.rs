//! Headers a test needs from a response: a file's current ETag, a header that must be there,
//! how long to wait for an access-log record, and an HTTP date made without the server's code.

use std::process::Command;
use std::time::Duration;

use crate::support::{Response, Server};

/// How long the server may take to count a finished request in its metrics or log it: both
/// happen after the response has been written, so after curl has returned.
pub const RECORD_TIMEOUT: Duration = Duration::from_secs(5);

/// The ETag a HEAD of `path` reports.
#[track_caller]
pub fn etag(s: &Server, path: &str) -> String {
    let response = s.head(path);
    let etag = response.assert_status(200).header("ETag");
    etag.unwrap_or_else(|| response.fail("no ETag")).to_string()
}

/// The header `name`, or a failure naming the response.
#[track_caller]
pub fn required<'a>(response: &'a Response, name: &str) -> &'a str {
    response
        .header(name)
        .unwrap_or_else(|| response.fail(&format!("no {name} header")))
}

/// `secs` since the epoch as an HTTP date, by GNU `date -u` (independent of the server's
/// formatter).
pub fn http_date(secs: i64) -> String {
    let out = Command::new("date")
        .env("LC_ALL", "C")
        .args(["-u", "-d", &format!("@{secs}"), "+%a, %d %b %Y %H:%M:%S GMT"])
        .output()
        .expect("run date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
