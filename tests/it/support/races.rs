//! Races made deterministic: a server under `strace` delay injection (so it sleeps exactly
//! where a protocol had a window), two replicas sharing one root, raw requests started and
//! left part-way, and the `.http-nas-*` internal files a test waits for.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use crate::support::raw::Conn;
use crate::support::{RESERVED_PREFIX, Server, TempDir, random_bytes, strace_injecting, wait_until};

/// How long a test waits for the server to reach a state it can see on disk.
pub const VISIBLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A wrapper running the server under strace with every `syscalls` call delayed by `delay`
/// on entry, or `None` (after printing why) where strace is missing or ptrace is refused.
pub fn delayed(syscalls: &str, delay: Duration) -> Option<Vec<String>> {
    strace_injecting(syscalls, &format!("{syscalls}:delay_enter={}", delay.as_micros()))
}

/// A fresh storage root (`<temp>/root`) for servers started with `Server::start_on`.
pub fn shared_root() -> (TempDir, PathBuf) {
    let home = TempDir::new();
    let root = home.path().join("root");
    fs::create_dir(&root).expect("create storage root");
    (home, root)
}

/// The service's own files (`.http-nas-*`) directly in `dir` whose name contains `kind`.
pub fn internal_files(dir: &Path, kind: &str) -> Vec<String> {
    let names = fs::read_dir(dir).into_iter().flatten().flatten();
    names
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(RESERVED_PREFIX) && n.contains(kind))
        .collect()
}

/// Waits until some `.http-nas-*` file whose name contains `kind` exists in `dir`.
#[track_caller]
pub fn wait_for_internal_file(dir: &Path, kind: &str) {
    let seen = wait_until(VISIBLE_TIMEOUT, || !internal_files(dir, kind).is_empty());
    assert!(
        seen,
        "no .http-nas-*{kind}* file appeared in {} within {VISIBLE_TIMEOUT:?}",
        dir.display()
    );
}

/// Sends a request head with `Content-Length: body.len()` and the first `sent` bytes of
/// `body`, keeping the connection open (the request stays in flight).
pub fn start_request(s: &Server, method: &str, path: &str, headers: &[&str], body: &[u8], sent: usize) -> Conn {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut conn = s.connect();
    conn.send(head.as_bytes()).send(&body[..sent]);
    conn
}

/// A record of `len` bytes that names itself: `index` in its first bytes, `\n` only at its end.
pub fn record(index: usize, len: usize) -> Vec<u8> {
    let mut out = format!("{index:06}:").into_bytes();
    out.extend(
        random_bytes(len - out.len() - 1, index as u64)
            .iter()
            .map(|b| b'a' + b % 26),
    );
    out.push(b'\n');
    out
}

/// strace attached to a running server, delaying `syscalls` by `delay`; detached on drop.
pub struct Attached(std::process::Child);

impl Attached {
    pub fn delay(pid: libc::pid_t, syscalls: &str, delay: Duration) -> Attached {
        Attached::inject(pid, syscalls, &format!("delay_enter={}", delay.as_micros()))
    }

    /// strace attached to `pid`, injecting `how` (`delay_enter=US:when=N`, ...) into `syscalls`.
    pub fn inject(pid: libc::pid_t, syscalls: &str, how: &str) -> Attached {
        let inject = format!("inject={syscalls}:{how}");
        let child = Command::new("strace")
            .args(["-f", "-qq", "-o", "/dev/null", "-p", &pid.to_string()])
            .args(["-e", &format!("trace={syscalls}"), "-e", &inject])
            .spawn()
            .expect("run strace");
        thread::sleep(Duration::from_millis(500)); // attached to every thread
        Attached(child)
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Descriptors the server may hold in the tests of bounded walks (`prlimit --nofile`).
pub const FEW_FDS: &str = "--nofile=96:96";

/// Whether `/proc/locks` lists a lock on inode `ino`.
pub fn locked_in_proc(ino: u64) -> bool {
    lock_holder(ino).is_some()
}

/// The pid holding a lock on inode `ino`, from `/proc/locks`.
pub fn lock_holder(ino: u64) -> Option<i32> {
    let text = fs::read_to_string("/proc/locks").unwrap_or_default();
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let id = fields.get(5)?.rsplit(':').next()?.parse::<u64>().ok()?;
        (id == ino).then(|| fields.get(4)?.parse().ok()).flatten()
    })
}

/// The size of the file at `path`, 0 if there is none.
pub fn size_of(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// Replica A (every fsync slowed 1 s by strace) is frozen (SIGSTOP) in the middle of three
/// appends to three files of one directory: each has written its bytes and holds its file's
/// lock, its crash record beside it. Replica B has `--lock-timeout 2`.
pub fn frozen_with_three_appends_in_d() -> (TempDir, Server, Server, Vec<Conn>) {
    let slow_sync = strace_injecting("fsync,fdatasync", "fsync,fdatasync:delay_enter=1000000").expect("strace");
    let home = TempDir::new();
    let root = home.path().join("root");
    fs::create_dir_all(root.join("d")).unwrap();
    for i in 1..=3 {
        fs::write(root.join(format!("d/f{i}")), b"one\n").unwrap();
    }
    fs::write(root.join("other.txt"), b"other\n").unwrap();
    let a = Server::start_wrapped_on(&root, &slow_sync, &[]);
    let b = Server::start_on(&root, &["--lock-timeout", "2"]);
    let mut appends = Vec::new();
    for i in 1..=3 {
        let mut conn = a.connect();
        conn.send(format!("PUT /file/d/f{i} HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\ntwo\n").as_bytes());
        appends.push(conn);
    }
    let all_written = wait_until(Duration::from_secs(15), || {
        (1..=3).all(|i| size_of(&root.join(format!("d/f{i}"))) == 8)
    });
    assert!(all_written, "A's appends never wrote their bytes");
    a.signal(libc::SIGSTOP);
    (home, a, b, appends)
}
