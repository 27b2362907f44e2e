//! Probing a server under load: a probe through curl with a bounded `--max-time`, and one raw
//! request on a fresh connection.

use crate::support::Server;

/// Bound on a probe's answer in these tests: far below what a held worker would make it wait.
pub const PROBE_MAX_TIME: &str = "5";

/// `curl` of `path` bounded by [`PROBE_MAX_TIME`]: status and body.
pub fn probe(s: &Server, path: &str) -> (u16, String) {
    let r = s.curl(&["--max-time", PROBE_MAX_TIME, &s.url(path)]);
    (r.status, r.text())
}

/// Sends `request` as exact bytes on a fresh connection and reads one response.
pub fn send_raw(s: &Server, request: &str) -> crate::support::Response {
    let mut conn = s.connect();
    conn.send(request.as_bytes());
    conn.response()
}
