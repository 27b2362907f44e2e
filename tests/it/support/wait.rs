//! Bounded waits. Nothing in the harness asserts on time: every wait is a generous upper bound,
//! so that a hang fails the test instead of blocking the suite, and a slow machine is not a failure.

use std::thread;
use std::time::{Duration, Instant};

/// How long the server may take to clean up after a client that vanished mid-upload.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

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
