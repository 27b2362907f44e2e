//! Bounded waits. Nothing in the harness asserts on time: every wait is a generous upper bound,
//! so that a hang fails the test instead of blocking the suite, and a slow machine is not a failure.

use std::thread;
use std::time::{Duration, Instant};

/// How long the server may take to clean up after a client that vanished mid-upload.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a test waits for an upload to visibly start (its temp file under the root, or the
/// target changing) before it goes on, abandons or stalls it. One bound for every test (some
/// once waited 2 s, others 10 s): the wait ends as soon as the upload shows, so a shorter one never
/// makes a test stricter, only flaky on a loaded machine; hence the longer.
pub const UPLOAD_START_TIMEOUT: Duration = Duration::from_secs(10);

/// Polls `done` every 20 ms until it holds or `timeout` passes; returns its last value.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
