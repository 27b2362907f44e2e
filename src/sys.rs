//! The only module with `unsafe`: thin, checked wrappers over the few syscalls std does not
//! offer (`poll`, `epoll`, `sendfile`, `lseek` for holes, signal masking and waiting, `statvfs`, and the directory-handle
//! calls the storage layer acts through: `openat`, `fstatat`, `unlinkat`, `renameat`,
//! `linkat`, `readdir` on a handle, `copy_file_range`, `getrandom`, the inode generation ioctl).
//!
//! Each wrapper converts the C return convention into `io::Result` and documents why the call
//! is sound. `lib.rs` denies unsafe code elsewhere; the one other exception is the AVX2 dispatch
//! of line counting in `storage/wc.rs`, a single call guarded by a CPU feature check.
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
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

/// An epoll set whose members are each armed for one readiness event at a time
/// (`EPOLLIN | EPOLLONESHOT`): the one thread that receives a member's event owns it until it
/// arms the member again, so several threads may wait on the set without two taking the same
/// connection.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

/// One event from [`Epoll::wait`]: the token its member was armed with.
pub type EpollEvent = libc::epoll_event;

/// An empty event slot for [`Epoll::wait`] to fill.
pub fn epoll_event_slot() -> EpollEvent {
    libc::epoll_event { events: 0, u64: 0 }
}

/// The token an event carries (the one given to [`Epoll::add`] or [`Epoll::rearm`]).
pub fn epoll_token(event: &EpollEvent) -> u64 {
    event.u64
}

impl Epoll {
    /// Creates an empty set (close-on-exec).
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall with a flag argument; no memory is passed.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn ctl(&self, op: libc::c_int, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
            u64: token,
        };
        // SAFETY: `event` is a valid, exclusively borrowed epoll_event for the call; both fds
        // are open for its duration (borrowed).
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd.as_raw_fd(), &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Adds `fd` to the set, armed for one readability event carrying `token`.
    pub fn add(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token)
    }

    /// Arms `fd`, already in the set (its last event taken), for one more event carrying
    /// `token`; adds it if it is not in the set.
    pub fn rearm(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        match self.ctl(libc::EPOLL_CTL_MOD, fd, token) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.add(fd, token),
            done => done,
        }
    }

    /// Waits up to `timeout_ms` (0: not at all) for events, filling the front of `events`;
    /// returns how many. `EINTR` is reported as none, so callers simply loop.
    pub fn wait(&self, events: &mut [EpollEvent], timeout_ms: i32) -> io::Result<usize> {
        let max = events.len().min(i32::MAX as usize) as libc::c_int;
        // SAFETY: `events` is a valid, exclusively borrowed slice of epoll_event for the whole
        // call and at most its length is passed, so the kernel writes only inside it.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(err);
        }
        Ok(n as usize)
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Writes all of `buf` to `fd` with `write(2)`, retrying after a signal or a short write, and
/// waiting for room where `fd` is non-blocking (a pipe another process made so): what was
/// begun is finished, never left cut in the middle.
pub fn write_all_fd(fd: RawFd, buf: &[u8]) -> io::Result<()> {
    let mut left = buf;
    while !left.is_empty() {
        // SAFETY: the pointer and length describe `left`, which lives across the call.
        let n = unsafe { libc::write(fd, left.as_ptr().cast(), left.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    let mut entry = [PollFd {
                        events: libc::POLLOUT,
                        ..poll_entry(fd)
                    }];
                    poll(&mut entry, -1)?;
                    continue;
                }
                _ => return Err(e),
            }
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        left = &left[n as usize..];
    }
    Ok(())
}

/// Shuts down both directions of the socket `fd` (a blocked read or write on it fails at
/// once); errors are ignored. The caller keeps `fd` open for the call (the server's registry
/// of sockets in service lists only sockets whose guard, borrowing them, is alive).
pub fn shutdown_socket(fd: RawFd) {
    // SAFETY: no memory is passed; on a number that is not an open socket the call only fails.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

/// True when the peer of the connected socket `fd` has gone: it closed or shut down its side
/// (`POLLRDHUP`), or the connection hung up or failed. Asks without waiting (a zero-timeout
/// `poll(2)`), so long work can call it every few mebibytes to stop for a client that left.
pub fn peer_gone(fd: BorrowedFd<'_>) -> bool {
    let mut entry = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: `entry` is a valid, exclusively borrowed `pollfd` for the call, and the count
    // passed is 1.
    let n = unsafe { libc::poll(&mut entry, 1, 0) };
    n > 0 && entry.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

/// Reads what the connected socket `fd` already holds into `buf` without waiting
/// (`recv(2)` with `MSG_DONTWAIT`), whether or not the socket is in non-blocking mode:
/// `WouldBlock` when nothing is there. Lets the reactor read a socket that workers use in
/// blocking mode without switching the mode back and forth (an `ioctl` each way).
pub fn recv_now(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, exclusively borrowed byte slice for the whole call and its
    // length is passed alongside, so the kernel writes only inside it.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Where the next data (not a hole) of `file` starts at or after `offset` (`lseek(2)` with
/// `SEEK_DATA`); `None` when only a hole follows up to the end. A filesystem that does not
/// track holes reports the whole file as data, which is right, only slower.
pub fn seek_data(file: &impl AsRawFd, offset: u64) -> io::Result<Option<u64>> {
    seek_whence(file, offset, libc::SEEK_DATA)
}

/// Where the hole after `offset` starts (`lseek(2)` with `SEEK_HOLE`): the end of the file if
/// no hole comes before it. `None` past the end.
pub fn seek_hole(file: &impl AsRawFd, offset: u64) -> io::Result<Option<u64>> {
    seek_whence(file, offset, libc::SEEK_HOLE)
}

fn seek_whence(file: &impl AsRawFd, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let off = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset out of range"))?;
    // SAFETY: the fd is borrowed from a live file for the call; lseek takes plain integers.
    // It moves the file's own offset, which the callers (positional reads only) never use.
    let at = unsafe { libc::lseek(file.as_raw_fd(), off, whence) };
    if at < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(err),
        };
    }
    Ok(Some(at as u64))
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

/// Sets or clears `TCP_CORK` on `socket`: while set, the kernel sends only full segments, so a
/// head and the file data `sendfile` queues after it leave together. Clearing it sends what
/// is left at once.
pub fn set_cork(socket: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let value = libc::c_int::from(on);
    // SAFETY: `value` is a live c_int whose size is passed; the fd is borrowed for the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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

/// Raises this process's soft limit on open file descriptors to its hard limit (which an
/// unprivileged process may do) and returns the limit now in force.
pub fn raise_fd_limit() -> io::Result<u64> {
    // SAFETY: `rlimit` is plain data, fully written by getrlimit on success, and passed by
    // pointer to setrlimit, which only reads it.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
        Ok(lim.rlim_cur as u64)
    }
}

/// Free bytes available to an unprivileged writer on the filesystem holding the open `dir`.
pub fn free_bytes(dir: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: `statvfs` is plain data, fully written by the kernel on success; `dir` is a live
    // fd borrowed for the call.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::fstatvfs(dir.as_raw_fd(), &mut st) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
}

/// A filesystem's size and use, in bytes and inodes, as `df` and `df -i` report them: used is
/// total less free (what root may still use), free is what an unprivileged writer may use for
/// bytes (`f_bavail`) and what is left for inodes (`f_ffree`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolumeUsage {
    pub size_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
    pub inodes: u64,
    pub used_inodes: u64,
    pub free_inodes: u64,
}

/// The size and use of the filesystem holding the open `dir` (`fstatvfs`).
pub fn volume_usage(dir: BorrowedFd<'_>) -> io::Result<VolumeUsage> {
    // SAFETY: `statvfs` is plain data, fully written by the kernel on success; `dir` is a live
    // fd borrowed for the call.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::fstatvfs(dir.as_raw_fd(), &mut st) != 0 {
            return Err(io::Error::last_os_error());
        }
        st
    };
    let frsize = st.f_frsize as u64;
    let (total, free, available) = (st.f_blocks as u64, st.f_bfree as u64, st.f_bavail as u64);
    Ok(VolumeUsage {
        size_bytes: total.saturating_mul(frsize),
        used_bytes: total.saturating_sub(free).saturating_mul(frsize),
        free_bytes: available.saturating_mul(frsize),
        inodes: st.f_files as u64,
        used_inodes: (st.f_files as u64).saturating_sub(st.f_ffree as u64),
        free_inodes: st.f_ffree as u64,
    })
}

// ---- directory handles and calls relative to them ----

/// A name as the C string the `*at` calls take.
fn c_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))
}

/// Converts a C return value (`-1` and `errno` on failure) into `io::Result`.
fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Opens `path` as a directory handle (`O_DIRECTORY`, readable so it can be fsynced and listed).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c_path = c_name(path.as_os_str())?;
    // SAFETY: `c_path` is a valid NUL-terminated string for the duration of the call.
    let fd = check(unsafe { libc::open(c_path.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by open(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat2(2)` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`: opens the
/// directory `rel` (a relative path of plain names) beneath `dir` in one call, the kernel
/// refusing any symlink (`ELOOP`) and any step out of `dir` (`EXDEV`). `None` where the kernel
/// lacks the call (before 5.6) or a seccomp filter refuses it (`ENOSYS`, `EPERM`): the caller
/// then walks one component at a time.
pub fn open_dir_beneath(dir: BorrowedFd<'_>, rel: &OsStr) -> Option<io::Result<OwnedFd>> {
    let c_rel = match c_name(rel) {
        Ok(c) => c,
        Err(e) => return Some(Err(e)),
    };
    // SAFETY: open_how is plain data; zeroed is a valid value before the fields are set.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    // No O_NOFOLLOW: with O_DIRECTORY it turns a final symlink into ENOTDIR, which would look
    // like a file; RESOLVE_NO_SYMLINKS refuses the final component too, as ELOOP.
    how.flags = (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    let call = || {
        // SAFETY: `dir` is a live fd borrowed for the call; `c_rel` is NUL-terminated; `how`
        // is a valid open_how whose size is passed with it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                c_rel.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    };
    let rc = match retry_stale(call) {
        Ok(rc) => rc,
        Err(e) => {
            return match e.raw_os_error() {
                Some(libc::ENOSYS | libc::EPERM) => None,
                _ => Some(Err(e)),
            };
        }
    };
    // SAFETY: `rc` is an fd just returned by openat2(2), owned by nobody else.
    Some(Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) }))
}

/// `readlinkat(2)`: the target of the symlink `name` in `dir`, read with a fixed bound (a
/// target longer than `PATH_MAX` is refused, never truncated).
pub fn read_link_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<std::ffi::OsString> {
    use std::os::unix::ffi::OsStringExt;
    let c_name = c_name(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: `dir` is live, `c_name` NUL-terminated, `buf` writable for `buf.len()` bytes.
    let n = unsafe { libc::readlinkat(dir.as_raw_fd(), c_name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    if n >= buf.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    buf.truncate(n);
    Ok(std::ffi::OsString::from_vec(buf))
}

/// Most times a lookup that failed with `ESTALE` is tried again.
const MAX_STALE_RETRIES: usize = 8;

/// Runs `call` again while it fails with `ESTALE`, at most [`MAX_STALE_RETRIES`] times. A
/// distributed filesystem (GlusterFS, NFS) answers `ESTALE` when a name it had cached was
/// renamed or replaced on another client (about one open in 1,000-2,500 right after a rename
/// on GlusterFS): looking the name up again finds the new file.
pub fn retry_stale<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut tries = 0;
    loop {
        match call() {
            Err(e) if e.raw_os_error() == Some(libc::ESTALE) && tries < MAX_STALE_RETRIES => tries += 1,
            other => return other,
        }
    }
}

/// `openat(2)`: opens `name` in the directory `dir` with `flags` (`O_CLOEXEC` is added), and
/// `mode` for a file it creates; a stale lookup (`ESTALE`) is tried again.
pub fn open_at(dir: BorrowedFd<'_>, name: &OsStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    let c_name = c_name(name)?;
    // SAFETY: `dir` is a live fd borrowed for the call; `c_name` is NUL-terminated; `mode` is
    // passed as the variadic argument open(2) reads when O_CREAT is set.
    let fd = retry_stale(|| {
        check(unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c_name.as_ptr(),
                flags | libc::O_CLOEXEC,
                libc::c_uint::from(mode),
            )
        })
    })?;
    // SAFETY: `fd` was just returned by openat(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What `fstatat(2)` tells of a name, without following a symlink.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    /// Device of the filesystem.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Type and permission bits (`S_IFMT` etc.).
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, seconds and nanoseconds since the epoch.
    pub mtime: (i64, i64),
}

impl Stat {
    /// True for a regular file.
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// True for a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// True for a symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFLNK
    }

    /// True when the name this describes is the open file with metadata `meta` (same device
    /// and inode): the check every lock holder makes that its name still points to its file.
    pub fn is(&self, meta: &std::fs::Metadata) -> bool {
        use std::os::unix::fs::MetadataExt;
        self.dev == meta.dev() && self.ino == meta.ino()
    }
}

/// `fstatat(2)` with `AT_SYMLINK_NOFOLLOW`: the name itself, never a link's target.
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Stat> {
    let c_name = c_name(name)?;
    // SAFETY: `stat` is plain data that fstatat fully writes on success; `dir` and `c_name` are
    // valid for the call.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        retry_stale(|| {
            check(libc::fstatat(
                dir.as_raw_fd(),
                c_name.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            ))
        })?;
        Ok(Stat {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            mode: st.st_mode as u32,
            size: st.st_size as u64,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
        })
    }
}

/// `unlinkat(2)`: removes the name `name` in `dir` (a directory, which must be empty, when
/// `is_dir`). A symlink is removed itself, never followed.
pub fn unlink_at(dir: BorrowedFd<'_>, name: &OsStr, is_dir: bool) -> io::Result<()> {
    let c_name = c_name(name)?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: `dir` and `c_name` are valid for the call.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c_name.as_ptr(), flags) }).map(drop)
}

/// `renameat(2)`: moves `from` in `from_dir` to `to` in `to_dir`, replacing `to` atomically.
pub fn rename_at(from_dir: BorrowedFd<'_>, from: &OsStr, to_dir: BorrowedFd<'_>, to: &OsStr) -> io::Result<()> {
    let (c_from, c_to) = (c_name(from)?, c_name(to)?);
    // SAFETY: both fds and both strings are valid for the call.
    check(unsafe { libc::renameat(from_dir.as_raw_fd(), c_from.as_ptr(), to_dir.as_raw_fd(), c_to.as_ptr()) }).map(drop)
}

/// `renameat2(2)` with `RENAME_NOREPLACE`: like [`rename_at`], but fails with `EEXIST` if `to`
/// exists, atomically (`EINVAL` where the filesystem cannot do it). By raw syscall number, as
/// not every libc wraps it.
pub fn rename_noreplace_at(
    from_dir: BorrowedFd<'_>,
    from: &OsStr,
    to_dir: BorrowedFd<'_>,
    to: &OsStr,
) -> io::Result<()> {
    /// `RENAME_NOREPLACE` from `<linux/fs.h>`.
    const RENAME_NOREPLACE: libc::c_uint = 1;
    let (c_from, c_to) = (c_name(from)?, c_name(to)?);
    // SAFETY: both fds and both strings are valid for the call; the flags are plain integers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            from_dir.as_raw_fd(),
            c_from.as_ptr(),
            to_dir.as_raw_fd(),
            c_to.as_ptr(),
            RENAME_NOREPLACE,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `linkat(2)`: gives the file `from` in `from_dir` the new name `to` in `to_dir`; fails with
/// `EEXIST` if `to` exists, atomically (which `rename(2)` cannot do).
pub fn link_at(from_dir: BorrowedFd<'_>, from: &OsStr, to_dir: BorrowedFd<'_>, to: &OsStr) -> io::Result<()> {
    let (c_from, c_to) = (c_name(from)?, c_name(to)?);
    // SAFETY: both fds and both strings are valid for the call; flags 0 never follows a link.
    check(unsafe {
        libc::linkat(
            from_dir.as_raw_fd(),
            c_from.as_ptr(),
            to_dir.as_raw_fd(),
            c_to.as_ptr(),
            0,
        )
    })
    .map(drop)
}

/// `copy_file_range(2)`: copies up to `len` bytes from `src` at `*src_off` to `dst` at
/// `*dst_off` inside the kernel, advancing both offsets. Returns the bytes copied (0 at the end
/// of `src`). Neither file's own offset is used or moved.
pub fn copy_file_range(
    src: &impl AsRawFd,
    src_off: &mut u64,
    dst: &impl AsRawFd,
    dst_off: &mut u64,
    len: usize,
) -> io::Result<usize> {
    let to_off = |v: u64| {
        libc::loff_t::try_from(v).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset out of range"))
    };
    let (mut off_in, mut off_out) = (to_off(*src_off)?, to_off(*dst_off)?);
    // SAFETY: both fds are borrowed from live files; the offsets are valid locals the kernel
    // updates in place.
    let n = unsafe { libc::copy_file_range(src.as_raw_fd(), &mut off_in, dst.as_raw_fd(), &mut off_out, len, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    (*src_off, *dst_off) = (off_in as u64, off_out as u64);
    Ok(n as usize)
}

/// `ioctl(FICLONERANGE)`: makes `len` bytes of `dst` at `dst_off` share the extents of `src`
/// at `src_off` (a reflink: no data copied) where the filesystem can (XFS with reflink, btrfs);
/// `EOPNOTSUPP`, `EXDEV`, `EINVAL` (unaligned ranges) and the like where it cannot.
pub fn clone_range(src: &impl AsRawFd, src_off: u64, dst: &impl AsRawFd, dst_off: u64, len: u64) -> io::Result<()> {
    let range = libc::file_clone_range {
        src_fd: i64::from(src.as_raw_fd()),
        src_offset: src_off,
        src_length: len,
        dest_offset: dst_off,
    };
    // SAFETY: both fds are borrowed from live files; `range` is a valid local the kernel only
    // reads, of the type FICLONERANGE takes.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONERANGE, &range) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Fills `buf` with random bytes from the kernel (`getrandom(2)`), for names and ids no other
/// process or replica can guess or repeat.
pub fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is a valid, exclusively borrowed buffer of the given length.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
            continue;
        }
        filled += n as usize;
    }
    Ok(())
}

/// When the open file `fd` was created, where the filesystem records it: `statx` with
/// `STATX_BTIME`, called directly because Rust's standard library asks `statx` only when linked
/// with glibc, so `Metadata::created` fails in the static musl binary. `None` where the
/// filesystem keeps no birth time (ext4 with 128-byte inodes, tmpfs before 5.18, most NFS).
pub fn birth_time(fd: BorrowedFd<'_>) -> Option<std::time::SystemTime> {
    // SAFETY: statx is plain data; all-zero is a valid value.
    let mut buf: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor, an empty NUL-terminated path with AT_EMPTY_PATH (the
    // descriptor itself), and a buffer of the kernel's statx layout that outlives the call.
    let done = unsafe {
        libc::syscall(
            libc::SYS_statx,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_BTIME,
            &mut buf as *mut libc::statx,
        )
    };
    if done != 0 || buf.stx_mask & libc::STATX_BTIME == 0 {
        return None;
    }
    let since_epoch = std::time::Duration::new(u64::try_from(buf.stx_btime.tv_sec).ok()?, buf.stx_btime.tv_nsec);
    std::time::UNIX_EPOCH.checked_add(since_epoch)
}

/// When the file `fd` (metadata `meta`) was created: from `meta` where the standard library
/// read it (glibc builds), else [`birth_time`] (one more system call).
pub fn created(fd: BorrowedFd<'_>, meta: &std::fs::Metadata) -> Option<std::time::SystemTime> {
    meta.created().ok().or_else(|| birth_time(fd))
}

/// The filesystem type of the open `fd` (`fstatfs(2)`'s `f_type`, a magic number from
/// `linux/magic.h`): tells a local filesystem from a network or FUSE one.
pub fn fs_magic(fd: BorrowedFd<'_>) -> io::Result<i64> {
    // SAFETY: an all-zero statfs is a valid value of the plain C struct.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `buf` is a valid, writable statfs and `fd` is open for the call.
    check(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut buf) })?;
    #[allow(clippy::unnecessary_cast)] // f_type is i64 on glibc x86_64, c_ulong or u32 elsewhere
    Ok(buf.f_type as i64)
}

/// `FS_IOC_GETVERSION` (`_IOR('v', 1, long)` in `linux/fs.h`), as x86 and Arm encode ioctls
/// (read direction 2 in bits 30-31, argument size in bits 16-29).
const FS_IOC_GETVERSION: libc::c_ulong =
    (2 << 30) | ((std::mem::size_of::<libc::c_long>() as libc::c_ulong) << 16) | ((b'v' as libc::c_ulong) << 8) | 1;

/// The inode generation of the open file `fd` (`ioctl(FS_IOC_GETVERSION)`): a number ext4, XFS,
/// btrfs and f2fs give each inode afresh when it is allocated, so a reused inode number comes
/// with another generation (it is what NFS file handles carry for that reason). Fails with
/// `ENOTTY` (or `EOPNOTSUPP`, `ENOSYS`) where the filesystem keeps none it shows: tmpfs, NFS
/// and FUSE clients.
pub fn inode_generation(fd: BorrowedFd<'_>) -> io::Result<u32> {
    if !cfg!(any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm"
    )) {
        return Err(io::Error::from_raw_os_error(libc::ENOTTY));
    }
    let mut generation: libc::c_int = 0;
    // SAFETY: the filesystems that answer FS_IOC_GETVERSION write one int through the pointer
    // (`put_user(inode->i_generation, (int __user *)arg)`); `generation` is a valid int and `fd`
    // is open for the call. Others return an error without touching it.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            FS_IOC_GETVERSION as _,
            &mut generation as *mut libc::c_int,
        )
    })?;
    Ok(generation as u32)
}

/// The kind of a directory entry, as `readdir` reports it (`Unknown` where the filesystem does
/// not say; then ask `stat_at`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryType {
    File,
    Dir,
    Symlink,
    Other,
    Unknown,
}

/// The entries of a directory handle, one at a time (`fdopendir` + `readdir` on a duplicate of
/// the handle), without `.` and `..`: memory does not grow with the directory's size.
pub struct DirStream {
    dir: std::ptr::NonNull<libc::DIR>,
}

impl DirStream {
    /// Reads the directory `dir` from its first entry. `dir` must be a description of its own
    /// (opened, never `dup`ed from a handle others read through): the read position lives in
    /// the open file description, so two streams over duplicates of one descriptor would take
    /// each other's entries (see `Dir::entries`).
    pub fn open(dir: OwnedFd) -> io::Result<DirStream> {
        let fd = dir.into_raw_fd();
        // SAFETY: `fd` is an open directory fd we own; on success fdopendir takes it over.
        let ptr = unsafe { libc::fdopendir(fd) };
        let Some(dir) = std::ptr::NonNull::new(ptr) else {
            let err = io::Error::last_os_error();
            // SAFETY: fdopendir failed, so `fd` is still ours to close.
            unsafe { libc::close(fd) };
            return Err(err);
        };
        Ok(DirStream { dir })
    }
}

impl Iterator for DirStream {
    type Item = io::Result<(std::ffi::OsString, EntryType, u64)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            // SAFETY: errno is thread-local; clearing it tells end-of-directory (NULL, errno 0)
            // from an error (NULL, errno set). `self.dir` is a valid DIR* until drop, and the
            // dirent it returns is valid until the next readdir on it, which is after we copy
            // the name out.
            let entry = unsafe {
                *libc::__errno_location() = 0;
                let ptr = libc::readdir(self.dir.as_ptr());
                if ptr.is_null() {
                    let err = io::Error::last_os_error();
                    return if err.raw_os_error() == Some(0) {
                        None
                    } else {
                        Some(Err(err))
                    };
                }
                let d = &*ptr;
                let name = std::ffi::CStr::from_ptr(d.d_name.as_ptr());
                let kind = match d.d_type {
                    libc::DT_REG => EntryType::File,
                    libc::DT_DIR => EntryType::Dir,
                    libc::DT_LNK => EntryType::Symlink,
                    libc::DT_UNKNOWN => EntryType::Unknown,
                    _ => EntryType::Other,
                };
                (
                    std::ffi::OsStr::from_bytes(name.to_bytes()).to_owned(),
                    kind,
                    d.d_ino as u64,
                )
            };
            if entry.0 != "." && entry.0 != ".." {
                return Some(Ok(entry));
            }
        }
    }
}

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: `self.dir` came from fdopendir and is closed exactly once, here.
        unsafe { libc::closedir(self.dir.as_ptr()) };
    }
}

// SAFETY: a DIR* may move between threads; it is only ever used through `&mut self`.
unsafe impl Send for DirStream {}

/// `mkdirat(2)`: creates the directory `name` in `dir` with `mode` (before the umask).
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &OsStr, mode: libc::mode_t) -> io::Result<()> {
    let c_name = c_name(name)?;
    // SAFETY: `dir` and `c_name` are valid for the call.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c_name.as_ptr(), mode) }).map(drop)
}

/// The value of the extended attribute `name` of the open file `fd` (`fgetxattr(2)`), read into
/// `buf`; returns its length. `ENODATA` when the file has none of that name, `ENOTSUP` where
/// the filesystem keeps no `user.*` attributes, `ERANGE` when the value is longer than `buf`.
pub fn get_xattr(fd: BorrowedFd<'_>, name: &std::ffi::CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `name` is NUL-terminated; `buf` is a valid, exclusively borrowed buffer whose
    // length is passed alongside, so the kernel writes only inside it; `fd` is open for the call.
    let n = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast::<libc::c_void>(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Sets the extended attribute `name` of the open file `fd` to `value` (`fsetxattr(2)`),
/// creating or replacing it. `ENOTSUP` where the filesystem keeps no `user.*` attributes.
pub fn set_xattr(fd: BorrowedFd<'_>, name: &std::ffi::CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated; `value` is a valid slice whose length is passed
    // alongside, which the kernel only reads; `fd` is open for the call.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast::<libc::c_void>(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// Removes the extended attribute `name` of the open file `fd` (`fremovexattr(2)`); `ENODATA`
/// when it has none.
pub fn remove_xattr(fd: BorrowedFd<'_>, name: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `fd` is open for the call.
    check(unsafe { libc::fremovexattr(fd.as_raw_fd(), name.as_ptr()) }).map(drop)
}
