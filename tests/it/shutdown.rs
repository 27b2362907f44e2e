//! Graceful shutdown: on `SIGTERM` the server refuses new connections, lets an upload in flight
//! finish, and cuts off one stalled past the shutdown timeout, leaving the target untouched.

use crate::support::raw::{Attempt, attempt};
use crate::support::writes::{
    EXIT_TIMEOUT, ORIGINAL, PARTIAL_BODY_BYTES, TARGET, start_raw_upload, wait_for_temp_file, with_target,
};
use crate::support::{SETTLE_TIMEOUT, Server, assert_same_bytes, random_bytes, wait_until};

/// Waits for the server to exit and asserts it exited 0.
#[track_caller]
fn assert_exits_cleanly(s: &mut Server) {
    let status = s.wait_exit(EXIT_TIMEOUT);
    let status = status.unwrap_or_else(|| panic!("the server did not exit within {EXIT_TIMEOUT:?}"));
    assert!(status.success(), "the server exited with {status}");
}

/// Whether a new connection now goes unserved: refused, or closed without an answer.
fn new_connections_refused(s: &Server) -> bool {
    let probe = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    matches!(attempt(s.addr(), probe), Attempt::Refused | Attempt::ClosedUnanswered)
}

#[test]
fn sigterm_lets_upload_in_flight_finish_and_refuses_new_connections() {
    let mut s = with_target(&["--shutdown-timeout", "10"]);
    let body = random_bytes(8 << 20, 81);
    let mut upload = start_raw_upload(&s, "POST", &body, PARTIAL_BODY_BYTES);
    wait_for_temp_file(&s);
    s.signal(libc::SIGTERM);

    let refused = wait_until(SETTLE_TIMEOUT, || new_connections_refused(&s));
    assert!(
        refused,
        "new connections were still served {SETTLE_TIMEOUT:?} after SIGTERM"
    );
    upload.send(&body[PARTIAL_BODY_BYTES..]);
    upload.response().assert_ok_json();
    assert_exits_cleanly(&mut s);
    assert_same_bytes(&s.read(TARGET), &body, "upload finished during shutdown");
    assert!(s.temp_files().is_empty(), "temp files after exit: {:?}", s.temp_files());
}

#[test]
fn sigterm_cuts_off_stalled_upload_after_shutdown_timeout() {
    let mut s = with_target(&["--shutdown-timeout", "1"]);
    let body = random_bytes(4 << 20, 82);
    let stalled = start_raw_upload(&s, "POST", &body, PARTIAL_BODY_BYTES);
    wait_for_temp_file(&s);
    s.signal(libc::SIGTERM);
    assert_exits_cleanly(&mut s);
    drop(stalled);
    assert_same_bytes(&s.read(TARGET), ORIGINAL, "target of an upload cut off by shutdown");
    assert!(s.temp_files().is_empty(), "temp files after exit: {:?}", s.temp_files());
}

/// The access lines of every request answered before a SIGTERM are in the log, before the line
/// saying the signal came: access lines still gathering for the log writer go out before any
/// other line, and before the process ends.
#[test]
fn every_answered_request_is_logged_before_the_server_stops() {
    let mut s = Server::start();
    s.write("f.txt", b"x\n");
    const REQUESTS: usize = 300;
    let mut conn = s.connect();
    conn.get_ok_times("/file/f.txt", "x\n", REQUESTS - 1);
    // The server closes a connection after it logged the last answer on it: once the close
    // is seen, every access line was logged.
    conn.send(b"GET /file/f.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let last = conn.read_to_close();
    assert!(last.ends_with("\r\n\r\nx\n"), "the last answer: {last:?}");
    s.signal(libc::SIGTERM);
    assert_exits_cleanly(&mut s);
    let stopped = wait_until(SETTLE_TIMEOUT, || s.log().contains("] stopped"));
    let log = s.log();
    assert!(stopped, "no `stopped` line:\n{log}");
    let before_signal = log.split("] signal ").next().unwrap_or_default();
    let logged = before_signal.matches("GET /file/f.txt 200").count();
    assert_eq!(logged, REQUESTS, "access lines before the signal's line:\n{log}");
}
