//! Uploads and appends whose client goes away: a target with known contents, a body abandoned
//! once the server has visibly started on it, chunks with no end, and the check that the
//! target is untouched.

use crate::support::{SETTLE_TIMEOUT, Server, UPLOAD_START_TIMEOUT, assert_same_bytes, wait_until};

/// The file the abandoned uploads aim at, and what it holds before they start.
pub const TARGET: &str = "target";
pub const ORIGINAL: &[u8] = b"original contents\n";

/// A server whose root holds `TARGET` with `ORIGINAL`.
pub fn with_target(args: &[&str]) -> Server {
    let s = Server::start_with(args);
    s.write(TARGET, ORIGINAL);
    s
}

/// Sends `head` and `body`, waits until the server has visibly started on them (a temp file
/// exists or the target changed), then drops the connection mid-body.
pub fn abandon_upload(s: &Server, head: &str, body: &[u8]) {
    let mut conn = s.connect();
    conn.send(head.as_bytes()).send(body);
    let started = || !s.temp_files().is_empty() || s.read(TARGET) != ORIGINAL;
    wait_until(UPLOAD_START_TIMEOUT, started);
    drop(conn);
}

/// `data` as chunks of `size` bytes, without the last-chunk: a body cut between chunks.
pub fn chunks_without_end(data: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in data.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Once the server has cleaned up, the target is byte-identical and no temp file remains.
#[track_caller]
pub fn assert_target_untouched(s: &Server) {
    s.expect_no_temp_files();
    wait_until(SETTLE_TIMEOUT, || s.read(TARGET) == ORIGINAL);
    assert_same_bytes(&s.read(TARGET), ORIGINAL, "target after a failed upload");
}
