//! `strace` as the server's wrapper, for the tests that inject delays and faults with it (they
//! skip, saying why, where it cannot run).

use std::process::Command;

/// True when `strace` is installed and may trace (ptrace is not refused); otherwise prints the
/// reason the calling test is skipped.
pub fn strace_usable() -> bool {
    let probe = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "true"])
        .output();
    let usable = probe.is_ok_and(|out| out.status.success());
    if !usable {
        super::skip("strace is missing or cannot trace here (apt-get install strace)");
    }
    usable
}

/// The wrapper that runs the server under strace, tracing the system calls `trace` and applying
/// strace's `inject` expression to them (`openat:error=ESTALE:when=10+3`), its own output
/// discarded; `None` (after printing why) where strace cannot run.
pub fn strace_injecting(trace: &str, inject: &str) -> Option<Vec<String>> {
    if !strace_usable() {
        return None;
    }
    // No `--seccomp-bpf`: strace 6.1 (Debian 12) under load sometimes stops with "dispatch_event:
    // pid N has delayed wait data set already" in that mode, and since `--seccomp-bpf` implies
    // `--kill-on-exit` the server dies with it (an empty reply, a flaky test). Stopping on
    // every system call is slower but does not fail that way.
    let args = ["strace", "-f", "-qq", "-o", "/dev/null", "-e"];
    let mut wrapper: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    wrapper.extend([format!("trace={trace}"), "-e".into(), format!("inject={inject}")]);
    Some(wrapper)
}
