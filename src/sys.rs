//! The only module with `unsafe`: thin, checked wrappers over the few syscalls std does not
//! offer (`poll`, `sendfile`, signal masking and waiting, `statvfs`).
//!
//! Each wrapper converts the C return convention into `io::Result` and documents why the call
//! is sound. `lib.rs` denies unsafe code elsewhere; the one other exception is the AVX2 dispatch
//! of line counting in `storage/wc.rs`, a single call guarded by a CPU feature check.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

/// Interest in readability, as `poll(2)` spells it.
pub const POLL_IN: i16 = libc::POLLIN;

/// One entry of a `poll(2)` set: the fd, what we wait for, and what happened.
pub type PollFd = libc::pollfd;

/// Makes a poll entry waiting for `fd` to become readable.
pub fn poll_entry(fd: RawFd) -> PollFd {
    libc::pollfd {
        fd,
        events: POLL_IN,
        revents: 0,
    }
}

/// True when `entry` is readable, hung up or in error: all mean "look at this fd now".
pub fn poll_ready(entry: &PollFd) -> bool {
    entry.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

/// Waits up to `timeout_ms` for any fd in `fds` to become ready; returns how many are.
/// `EINTR` is reported as zero ready fds so callers simply loop.
pub fn poll(fds: &mut [PollFd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, exclusively borrowed slice of `pollfd` for the whole call, and
    // its length is passed alongside, so the kernel reads and writes only inside it.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(err);
    }
    Ok(n as usize)
}

/// Copies up to `count` bytes from `file` at `*offset` to `socket` inside the kernel, advancing
/// `*offset`. Returns the bytes sent (0 at end of file).
pub fn sendfile(socket: &impl AsRawFd, file: &impl AsRawFd, offset: &mut u64, count: usize) -> io::Result<usize> {
    let mut off: libc::off_t = libc::off_t::try_from(*offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset out of range"))?;
    // SAFETY: both fds are owned by live Rust objects borrowed for the call; `off` is a valid
    // local the kernel updates in place.
    let n = unsafe { libc::sendfile(socket.as_raw_fd(), file.as_raw_fd(), &mut off, count) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    *offset = off as u64;
    Ok(n as usize)
}

/// The termination signals the server stops gracefully on.
const STOP_SIGNALS: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGINT];

fn stop_signal_set() -> libc::sigset_t {
    // SAFETY: `sigset_t` is plain data; `sigemptyset` initialises it before `sigaddset` adds
    // valid signal numbers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in STOP_SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Blocks SIGTERM and SIGINT in the calling thread and every thread it spawns afterwards, so
/// that only [`wait_for_stop_signal`] receives them. Call first thing in `main`. Also ignores
/// SIGPIPE so a vanished client is an `EPIPE` error, not a dead process.
pub fn block_stop_signals() -> io::Result<()> {
    let set = stop_signal_set();
    // SAFETY: `set` is initialised; a null old-mask pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: installing SIG_IGN for SIGPIPE has no memory-safety preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    Ok(())
}

/// Waits until SIGTERM or SIGINT arrives and returns its number.
pub fn wait_for_stop_signal() -> io::Result<i32> {
    let set = stop_signal_set();
    let mut sig: libc::c_int = 0;
    loop {
        // SAFETY: `set` is initialised and `sig` is a valid out-pointer.
        let rc = unsafe { libc::sigwait(&set, &mut sig) };
        match rc {
            0 => return Ok(sig),
            libc::EINTR => continue,
            err => return Err(io::Error::from_raw_os_error(err)),
        }
    }
}

/// Free bytes available to an unprivileged writer on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: `statvfs` is plain data, fully written by the kernel on success; `c_path` is a
    // valid NUL-terminated string for the duration of the call.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c_path.as_ptr(), &mut st) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
}
