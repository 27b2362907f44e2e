//! Writes shared by the upload, append, recovery, limits and shutdown tests: a target file with
//! known contents, raw uploads left hanging part-way, appenders writing self-describing lines,
//! and how much room a volume has left.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use crate::support::raw::Conn;
use crate::support::{RESERVED_PREFIX, Server, UPLOAD_START_TIMEOUT, assert_same_bytes, random_bytes, wait_until};

/// The file every write test aims at, and what it holds before a write that must not land.
pub const TARGET: &str = "target.dat";
pub const TARGET_URL: &str = "/file/target.dat";
pub const ORIGINAL: &[u8] = b"committed before the test\n";

pub const LOG_URL: &str = "/file/jobs.log";

/// Every how many lines one is large, its size (above the server's 256 KiB copy buffer,
/// `COPY_BUF_BYTES`), and the rate curl sends it at (`--limit-rate`, bytes per second).
pub const LARGE_LINE_EVERY: usize = 20;
pub const LARGE_LINE_BYTES: usize = 300 << 10;
pub const LARGE_LINE_RATE: &str = "8M";

/// How much of a body a raw upload sends before it stalls or is cut: more than the server's
/// 256 KiB copy buffer (`COPY_BUF_BYTES`), so part of it has reached the file.
pub const PARTIAL_BODY_BYTES: usize = 1 << 20;
/// How long a stopped or killed server may take to exit.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// Line `index` of appender `appender`: an `AA-III:` id, letters derived from the id, and
/// `\n`; so a torn or interleaved line can never pass for a whole one. Lines are 8–16 KiB,
/// except every [`LARGE_LINE_EVERY`]th, which is larger than the server's 256 KiB copy buffer
/// (see [`append_line`] for why).
pub fn line(appender: usize, index: usize) -> Vec<u8> {
    let spread = (appender * 131 + index * 977) % 8192;
    let len = if is_large(index) {
        LARGE_LINE_BYTES + spread
    } else {
        8192 + spread
    };
    let seed = (appender * 1000 + index) as u64;
    let mut out = format!("{appender:02}-{index:03}:").into_bytes();
    out.extend(random_bytes(len, seed).iter().map(|b| b'a' + b % 26));
    out.push(b'\n');
    out
}

pub fn is_large(index: usize) -> bool {
    index % LARGE_LINE_EVERY == LARGE_LINE_EVERY - 1
}

/// Appends line `index` of `appender` with curl and expects a 200.
///
/// A small body reaches the file in one `write(2)`, which `O_APPEND` keeps whole even on a
/// server that does not serialise appends. A large line needs several writes, and curl sends
/// it at a limited rate so that the other appenders have time to write between them: only
/// then can a missing lock show as a torn line.
#[track_caller]
pub fn append_line(s: &Server, appender: usize, index: usize) {
    let file = s.scratch_file(&format!("line-{appender}-{index}"), line(appender, index));
    let (data, url) = (format!("@{}", file.display()), s.url(LOG_URL));
    let mut args = vec!["-X", "PUT", "-H", "Content-Type: application/octet-stream"];
    if is_large(index) {
        args.extend(["--limit-rate", LARGE_LINE_RATE]);
    }
    args.extend(["--data-binary", &data, &url]);
    s.curl(&args).assert_ok_json();
    let _ = fs::remove_file(file);
}

/// A server whose root holds `TARGET` with `ORIGINAL`.
pub fn with_target(args: &[&str]) -> Server {
    let s = Server::start_with(args);
    s.write(TARGET, ORIGINAL);
    s
}

/// Opens a raw connection and sends a `method` request head for `body` plus its first `sent`
/// bytes, keeping the connection open: the request stays in flight until the test finishes
/// sending or drops the connection.
pub fn start_raw_upload(s: &Server, method: &str, body: &[u8], sent: usize) -> Conn {
    let head = format!(
        "{method} {TARGET_URL} HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    let mut conn = s.connect();
    conn.send(head.as_bytes()).send(&body[..sent]);
    conn
}

/// Waits until an upload's temp file exists: the server has started receiving the body (a
/// POST's, or an append's larger than what is held in memory).
#[track_caller]
pub fn wait_for_temp_file(s: &Server) {
    let started = wait_until(UPLOAD_START_TIMEOUT, || !s.temp_files().is_empty());
    assert!(
        started,
        "no {RESERVED_PREFIX} temp file appeared within {UPLOAD_START_TIMEOUT:?}"
    );
}

/// The target holds `ORIGINAL` and no `.http-nas-` temp file or journal is left.
#[track_caller]
pub fn assert_untouched(s: &Server) {
    s.expect_no_temp_files();
    assert_same_bytes(&s.read(TARGET), ORIGINAL, "target after an interrupted write");
}

/// Free bytes for unprivileged users on the filesystem holding `path`.
#[track_caller]
pub fn free_bytes(path: &Path) -> u64 {
    let c_path = CString::new(path.as_os_str().as_bytes()).expect("no NUL in a temp path");
    // SAFETY: statvfs is plain old data, so all-zero is a valid value to be overwritten.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a NUL-terminated string and `stats` a valid, writable statvfs.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stats) };
    assert_eq!(rc, 0, "statvfs {}: {}", path.display(), std::io::Error::last_os_error());
    stats.f_bavail * stats.f_frsize
}
