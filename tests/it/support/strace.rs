//! Whether `strace` can run the server here, for the tests that inject delays and faults with
//! it (they skip, saying why, where it cannot).

use std::process::Command;

/// True when `strace` is installed and may trace (ptrace is not refused); otherwise prints the
/// reason the calling test is skipped.
pub fn strace_usable() -> bool {
    let probe = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "true"])
        .output();
    let usable = probe.is_ok_and(|out| out.status.success());
    if !usable {
        eprintln!("skipped: strace is missing or cannot trace here (apt-get install strace)");
    }
    usable
}
