//! Issue 3, "nothing lost": acknowledged data survives concurrency, a full disk, a crash and a
//! shutdown, and unacknowledged data leaves no trace.
//!
//! Each test is built to fail on a server without the feature it covers, and was checked
//! against such mutants of this server: appends that are not serialised tear the lines of
//! concurrent appenders (some lines are larger than the server's copy buffer and sent slowly,
//! since a body written in one `O_APPEND` `write(2)` stays whole even without a lock); a POST
//! that writes in place shows a concurrent reader half a file; a server that does not journal
//! or sweep keeps what a `kill -9` left behind; a thread-per-connection server grows with idle
//! sockets; a failed append that is not rolled back leaves the bytes that did arrive.
//!
//! Crashes and signals are real: `kill(2)` on the server process, then [`Server::restart`] on
//! the same root. The ENOSPC test mounts a 2 MiB tmpfs, so it only runs as root and says
//! `skipped:` otherwise. Every wait is a generous bound (see `support::wait`), never a timing
//! assertion.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use crate::support::raw::{Attempt, Conn, attempt, only_response};
use crate::support::{
    RESERVED_PREFIX, SETTLE_TIMEOUT, Server, TempDir, UPLOAD_START_TIMEOUT, assert_same_bytes, preview, random_bytes,
    skip, wait_until,
};

/// The file every write test aims at, and what it holds before a write that must not land.
const TARGET: &str = "target.dat";
const TARGET_URL: &str = "/file/target.dat";
const ORIGINAL: &[u8] = b"committed before the test\n";
/// The log file of the concurrent appenders.
const LOG: &str = "jobs.log";
const LOG_URL: &str = "/file/jobs.log";
/// Concurrent appenders, and lines each appends (one curl per line).
const APPENDERS: usize = 8;
const APPENDS_EACH: usize = 100;
/// Every how many lines one is large, its size (above the server's 256 KiB copy buffer,
/// `COPY_BUF_BYTES`), and the rate curl sends it at (`--limit-rate`, bytes per second).
const LARGE_LINE_EVERY: usize = 20;
const LARGE_LINE_BYTES: usize = 300 << 10;
const LARGE_LINE_RATE: &str = "8M";
/// Size of each of the two versions raced by concurrent POSTs.
const VERSION_BYTES: usize = 32 << 20;
/// How much of a body a raw upload sends before it stalls or is cut: more than the server's
/// 256 KiB copy buffer (`COPY_BUF_BYTES`), so part of it has reached the file.
const PARTIAL_BODY_BYTES: usize = 1 << 20;
/// How long a stopped or killed server may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

// ---- helpers ----

/// Line `index` of appender `appender`: an `AA-III:` id, letters derived from the id, and
/// `\n`; so a torn or interleaved line can never pass for a whole one. Lines are 8–16 KiB,
/// except every [`LARGE_LINE_EVERY`]th, which is larger than the server's 256 KiB copy buffer
/// (see [`append_line`] for why).
fn line(appender: usize, index: usize) -> Vec<u8> {
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

fn is_large(index: usize) -> bool {
    index % LARGE_LINE_EVERY == LARGE_LINE_EVERY - 1
}

/// Appends line `index` of `appender` with curl and expects a 200.
///
/// A small body reaches the file in one `write(2)`, which `O_APPEND` keeps whole even on a
/// server that does not serialise appends. A large line needs several writes, and curl sends
/// it at a limited rate so that the other appenders have time to write between them: only
/// then can a missing lock show as a torn line.
#[track_caller]
fn append_line(s: &Server, appender: usize, index: usize) {
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

/// Runs the appenders at once, each on its own thread appending its lines one curl at a time;
/// appender `i` talks to `servers[i % servers.len()]`.
fn run_appenders(servers: &[&Server]) {
    thread::scope(|scope| {
        for appender in 0..APPENDERS {
            let s = servers[appender % servers.len()];
            scope.spawn(move || {
                for index in 0..APPENDS_EACH {
                    append_line(s, appender, index);
                }
            });
        }
    });
}

/// Every appender's every line is in `log` exactly once and whole, and nothing else is.
#[track_caller]
fn assert_every_line_once(log: &[u8]) {
    let mut seen: HashMap<(usize, usize), usize> = HashMap::new();
    let mut problems = Vec::new();
    let mut offset = 0;
    for got in log.split_inclusive(|&b| b == b'\n') {
        let id = std::str::from_utf8(&got[..got.len().min(6)]).unwrap_or("");
        let parsed = id
            .split_once('-')
            .and_then(|(a, i)| Some((a.parse().ok()?, i.parse().ok()?)));
        match parsed.filter(|&(a, i)| a < APPENDERS && i < APPENDS_EACH && got == line(a, i)) {
            Some(key) => *seen.entry(key).or_default() += 1,
            None => problems.push(format!("torn line at byte {offset}: {}", preview(got))),
        }
        offset += got.len();
    }
    for appender in 0..APPENDERS {
        for index in 0..APPENDS_EACH {
            match seen.get(&(appender, index)).copied().unwrap_or(0) {
                1 => {}
                n => problems.push(format!("line {appender:02}-{index:03} present {n} times")),
            }
        }
    }
    let shown = problems.iter().take(10).cloned().collect::<Vec<_>>().join("\n");
    assert!(
        problems.is_empty(),
        "{} problem(s) in the {}-byte log, first ones:\n{shown}",
        problems.len(),
        log.len()
    );
}

/// A server whose root holds `TARGET` with `ORIGINAL`.
fn with_target(args: &[&str]) -> Server {
    let s = Server::start_with(args);
    s.write(TARGET, ORIGINAL);
    s
}

/// Opens a raw connection and sends a `method` request head for `body` plus its first `sent`
/// bytes, keeping the connection open: the request stays in flight until the test finishes
/// sending or drops the connection.
fn start_raw_upload(s: &Server, method: &str, body: &[u8], sent: usize) -> Conn {
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
fn wait_for_temp_file(s: &Server) {
    let started = wait_until(UPLOAD_START_TIMEOUT, || !s.temp_files().is_empty());
    assert!(
        started,
        "no {RESERVED_PREFIX} temp file appeared within {UPLOAD_START_TIMEOUT:?}"
    );
}

/// The target holds `ORIGINAL` and no `.http-nas-` temp file or journal is left.
#[track_caller]
fn assert_untouched(s: &Server) {
    s.expect_no_temp_files();
    assert_same_bytes(&s.read(TARGET), ORIGINAL, "target after an interrupted write");
}

/// Waits for the server to exit and asserts it exited 0.
#[track_caller]
fn assert_exits_cleanly(s: &mut Server) {
    let status = s.wait_exit(EXIT_TIMEOUT);
    let status = status.unwrap_or_else(|| panic!("the server did not exit within {EXIT_TIMEOUT:?}"));
    assert!(status.success(), "the server exited with {status}");
}

/// Free bytes for unprivileged users on the filesystem holding `path`.
#[track_caller]
fn free_bytes(path: &Path) -> u64 {
    let c_path = CString::new(path.as_os_str().as_bytes()).expect("no NUL in a temp path");
    // SAFETY: statvfs is plain old data, so all-zero is a valid value to be overwritten.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a NUL-terminated string and `stats` a valid, writable statvfs.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stats) };
    assert_eq!(rc, 0, "statvfs {}: {}", path.display(), std::io::Error::last_os_error());
    stats.f_bavail * stats.f_frsize
}

/// A small tmpfs mounted for one test; unmounted on drop, also when the test panics.
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`"2m"`) on `<fresh temp dir>/root`, or says why it cannot.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root, cannot mount a tmpfs".into());
        }
        let dir = TempDir::new();
        let root = dir.path().join("root");
        fs::create_dir(&root).map_err(|e| format!("mkdir {}: {e}", root.display()))?;
        let options = format!("size={size}");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
            .arg(&root)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(format!("mount -t tmpfs failed ({}): {}", out.status, stderr.trim()));
        }
        Ok(Tmpfs { dir })
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(self.root()).status();
        if !unmounted.is_ok_and(|s| s.success()) {
            // Still busy (a process we could not stop): detach it so the temp dir can go.
            let _ = Command::new("umount").arg("-l").arg(self.root()).status();
        }
    }
}

// ---- concurrent appends ----

#[test]
fn issue3_concurrent_appenders_lose_and_tear_no_line() {
    let s = Server::start();
    run_appenders(&[&s]);
    assert_every_line_once(&s.read(LOG));
}

#[test]
fn issue3_appenders_on_two_servers_sharing_a_root_lose_and_tear_no_line() {
    let first = Server::start();
    let second = Server::start_on(&first.root(), &[]);
    run_appenders(&[&first, &second]);
    assert_every_line_once(&first.read(LOG));
}

// ---- Upload-Offset ----

#[test]
fn append_at_matching_offset_returns_new_size() {
    let s = with_target(&[]);
    let offset = format!("Upload-Offset: {}", ORIGINAL.len());
    let response = s.send("PUT", TARGET_URL, b"more", &[&offset]);
    response.assert_ok_json();
    let new_size = (ORIGINAL.len() + 4).to_string();
    assert_eq!(
        response.header("Upload-Offset"),
        Some(&*new_size),
        "{}",
        response.context
    );
    assert_eq!(s.read(TARGET), [ORIGINAL, b"more"].concat());
}

#[test]
fn append_at_stale_offset_is_409_with_current_size_and_changes_nothing() {
    let s = with_target(&[]);
    let response = s.send("PUT", TARGET_URL, b"late", &["Upload-Offset: 3"]);
    response.assert_error(409);
    let current = ORIGINAL.len().to_string();
    assert_eq!(
        response.header("Upload-Offset"),
        Some(&*current),
        "{}",
        response.context
    );
    assert_same_bytes(&s.read(TARGET), ORIGINAL, "target after a stale append");
}

#[test]
fn append_at_offset_zero_creates_missing_file() {
    let s = Server::start();
    let response = s.send("PUT", "/file/new/log.csv", b"a,1\n", &["Upload-Offset: 0"]);
    response.assert_ok_json();
    assert_eq!(response.header("Upload-Offset"), Some("4"), "{}", response.context);
    assert_eq!(s.read("new/log.csv"), b"a,1\n");
}

// ---- concurrent replacement ----

/// Which of `versions` `body` is, if any.
fn version_of(body: &[u8], versions: &[Vec<u8>]) -> Option<usize> {
    versions.iter().position(|v| v.as_slice() == body)
}

/// GETs `TARGET` at least once and until `done`, checking each answer is one whole version
/// (or, while `may_be_missing` and before any version was seen, a 404).
#[track_caller]
fn read_until_done(s: &Server, done: &AtomicBool, versions: &[Vec<u8>], may_be_missing: bool) {
    const MAX_READS: usize = 200;
    let mut seen_a_version = !may_be_missing;
    for _ in 0..MAX_READS {
        let response = s.get(TARGET_URL);
        match response.status {
            404 if !seen_a_version => {}
            200 if version_of(&response.body, versions).is_some() => seen_a_version = true,
            _ => response.fail("a reader saw neither whole version during concurrent POSTs"),
        }
        if done.load(Ordering::SeqCst) {
            return;
        }
    }
}

#[test]
fn issue3_concurrent_posts_leave_one_whole_version_and_readers_never_see_a_mix() {
    let s = &Server::start();
    let versions = [random_bytes(VERSION_BYTES, 31), random_bytes(VERSION_BYTES, 32)];
    for round in 0..3 {
        let done = AtomicBool::new(false);
        thread::scope(|scope| {
            let reader = scope.spawn(|| read_until_done(s, &done, &versions, round == 0));
            let writers: Vec<_> = versions
                .iter()
                .map(|version| scope.spawn(move || s.post(TARGET_URL, version)))
                .collect();
            for writer in writers {
                writer.join().expect("writer thread").assert_ok_json();
            }
            done.store(true, Ordering::SeqCst);
            reader.join().expect("reader thread");
        });
        let stored = s.read(TARGET);
        assert!(
            version_of(&stored, &versions).is_some(),
            "round {round}: the file is neither version ({} bytes, starts {})",
            stored.len(),
            preview(&stored[..stored.len().min(32)])
        );
        s.expect_no_temp_files();
    }
}

// ---- disk full ----

#[test]
fn issue15_a_large_append_needs_its_size_free_twice_and_else_changes_nothing() {
    // The body is received whole before the lock, then copied into the file: while it commits,
    // both are on the disk. An append that would fit once but not twice is a 507.
    let tmpfs = match Tmpfs::mount("4m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => return skip(&reason),
    };
    let s = Server::start_on(&tmpfs.root(), &[]);
    let base = random_bytes(1 << 20, 42);
    s.post("/file/log", &base).assert_ok_json();
    let free = free_bytes(&s.root());
    let fits_once = random_bytes(usize::try_from(free * 2 / 3).unwrap(), 43);
    s.append("/file/log", &fits_once).assert_error(507);
    assert_same_bytes(&s.read("log"), &base, "the file after a refused append");
    s.expect_no_temp_files();
    let fits_twice = random_bytes(usize::try_from(free / 3).unwrap(), 44);
    s.append("/file/log", &fits_twice).assert_ok_json();
    assert_eq!(s.read("log").len(), base.len() + fits_twice.len());
}

#[test]
fn issue3_disk_full_is_507_and_leaves_no_trace() {
    let tmpfs = match Tmpfs::mount("2m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            skip(&reason);
            return;
        }
    };
    let s = Server::start_on(&tmpfs.root(), &[]);
    let free = free_bytes(&s.root());

    s.post("/file/big.bin", random_bytes(4 << 20, 41)).assert_error(507);
    s.expect_no_temp_files();
    assert!(!s.exists("big.bin"), "a failed POST left its target");
    let recovered = wait_until(SETTLE_TIMEOUT, || free_bytes(&s.root()) == free);
    assert!(
        recovered,
        "free space {} after the 507, {free} before",
        free_bytes(&s.root())
    );

    let existing = random_bytes(1 << 20, 42);
    s.post(TARGET_URL, &existing).assert_ok_json();
    let free = free_bytes(&s.root());
    s.append(TARGET_URL, random_bytes(2 << 20, 43)).assert_error(507);
    s.expect_no_temp_files();
    assert_same_bytes(&s.read(TARGET), &existing, "target after an append that overflowed");
    let recovered = wait_until(SETTLE_TIMEOUT, || free_bytes(&s.root()) == free);
    assert!(
        recovered,
        "free space {} after the 507, {free} before",
        free_bytes(&s.root())
    );

    s.post("/file/small.txt", "still works").assert_ok_json();
    s.get("/file/small.txt").assert_ok_body("still works");
}

// ---- kill -9 ----

#[test]
fn issue3_post_killed_mid_upload_leaves_old_content_after_restart() {
    let mut s = with_target(&[]);
    let body = random_bytes(64 << 20, 51);
    let conn = start_raw_upload(&s, "POST", &body, PARTIAL_BODY_BYTES);
    wait_for_temp_file(&s);
    s.signal(libc::SIGKILL);
    s.wait_exit(EXIT_TIMEOUT).expect("SIGKILLed server exits");
    drop(conn);
    assert!(
        !s.temp_files().is_empty(),
        "the killed upload left no temp file to clean up"
    );
    s.restart();
    assert_untouched(&s);
    s.assert_healthy();
}

#[test]
fn issue3_append_killed_mid_body_is_rolled_back_at_restart() {
    let mut s = with_target(&[]);
    let body = random_bytes(64 << 20, 52);
    let conn = start_raw_upload(&s, "PUT", &body, PARTIAL_BODY_BYTES);
    wait_for_temp_file(&s);
    s.signal(libc::SIGKILL);
    s.wait_exit(EXIT_TIMEOUT).expect("SIGKILLed server exits");
    drop(conn);
    s.restart();
    assert_untouched(&s);
    s.append(TARGET_URL, "next\n").assert_ok_json();
    assert_eq!(s.read(TARGET), [ORIGINAL, b"next\n"].concat());
}

// ---- idle connections ----

#[test]
fn issue3_hundreds_of_idle_connections_cost_no_threads_and_little_memory() {
    const IDLE: usize = 300;
    const HALF_HEADS: usize = 50;
    const MAX_RSS_KIB: u64 = 64 << 10;
    let s = Server::start_with(&["--workers", "4"]);
    s.assert_healthy();
    let threads_before = s.proc_status("Threads");

    let idle: Vec<TcpStream> = (0..IDLE)
        .map(|_| TcpStream::connect(s.addr()).expect("connect"))
        .collect();
    let half: Vec<Conn> = (0..HALF_HEADS)
        .map(|_| {
            let mut conn = s.connect();
            conn.send(b"GET /file HTTP/1.1\r\nHost: t\r\n");
            conn
        })
        .collect();
    let all_parked = wait_until(SETTLE_TIMEOUT, || {
        s.scrape().get("http_nas_parked_connections").copied().unwrap_or(0.0) >= (IDLE + HALF_HEADS) as f64
    });
    assert!(
        all_parked,
        "the server did not accept all {} connections",
        IDLE + HALF_HEADS
    );

    s.curl(&["--max-time", "10", &s.url("/file")]).assert_ok_body("OK");
    // The server has a fixed set of threads (main, reactor, workers): waiting connections are
    // parked in one poll loop, so their number must not show in the thread count.
    assert_eq!(
        s.proc_status("Threads"),
        threads_before,
        "threads grew with idle connections"
    );
    let rss = s.proc_status("VmRSS");
    assert!(rss < MAX_RSS_KIB, "VmRSS {rss} KiB with {IDLE} idle connections");
    drop((idle, half));
}

// ---- overload ----

#[test]
fn issue3_busy_worker_and_full_queue_answer_503_at_once_then_recover() {
    let s = with_target(&["--workers", "1", "--queue", "0"]);
    let body = random_bytes(4 << 20, 61);
    let mut slow = start_raw_upload(&s, "POST", &body, PARTIAL_BODY_BYTES);
    wait_for_temp_file(&s);

    // Not a probe: those are answered from the head without a worker (see `bounds`).
    let refused = s.curl(&["--max-time", "10", &s.url("/file/target")]);
    refused.assert_error(503);
    let retry_after = refused.header("Retry-After").and_then(|v| v.parse::<u64>().ok());
    if retry_after.is_none() {
        refused.fail("a 503 for overload needs a Retry-After in seconds");
    }

    let client = "- - 503 in=0";
    let logged = wait_until(SETTLE_TIMEOUT, || s.log().contains(client));
    assert!(logged, "no access line for the 503 in:\n{}", s.log());

    slow.send(&body[PARTIAL_BODY_BYTES..]);
    slow.response().assert_ok_json();
    s.get("/file").assert_ok_body("OK");
    assert_same_bytes(&s.read(TARGET), &body, "the upload that held the worker");
}

#[test]
fn liveness_probe_is_answered_while_every_worker_is_busy() {
    let s = with_target(&["--workers", "1"]);
    let body = random_bytes(4 << 20, 64);
    let mut slow = start_raw_upload(&s, "POST", &body, PARTIAL_BODY_BYTES);
    wait_for_temp_file(&s);
    // Without the reactor's answer this waits in the queue behind the stalled upload.
    s.curl(&["--max-time", "5", &s.url("/healthz")]).assert_ok_body("ok");
    slow.send(&body[PARTIAL_BODY_BYTES..]);
    slow.response().assert_ok_json();
}

#[test]
fn a_download_cut_short_is_logged_with_the_bytes_that_went_out() {
    let s = Server::start();
    s.write("big.bin", random_bytes(64 << 20, 65));
    let mut conn = s.connect();
    conn.send(b"GET /file/big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut first = [0u8; 1 << 20];
    conn.read_exact_some(&mut first);
    drop(conn);
    let cut_line = |log: &str| {
        log.lines()
            .find(|l| l.contains("GET /file/big.bin") && l.contains("cut short"))
            .map(str::to_string)
    };
    let found = wait_until(SETTLE_TIMEOUT, || cut_line(&s.log()).is_some());
    let line = cut_line(&s.log()).unwrap_or_default();
    assert!(
        found && !line.contains(" out=0 "),
        "the cut-short download should log the bytes sent:\n{}",
        s.log()
    );
}

// ---- timeouts ----

#[test]
fn idle_connection_is_closed_after_idle_timeout() {
    let s = Server::start_with(&["--idle-timeout", "1"]);
    let mut conn = s.connect();
    conn.read_to_close();
    s.assert_healthy();
}

#[test]
fn unfinished_head_gets_408_after_head_timeout() {
    let s = Server::start_with(&["--head-timeout", "1"]);
    let mut conn = s.connect();
    conn.send(b"GET /file HTTP/1.1\r\nHost: t\r\n");
    only_response(&conn.read_to_close()).assert_error(408);
    s.assert_healthy();
}

#[test]
fn issue3_append_stalled_past_io_timeout_is_rolled_back_and_unlocked() {
    let s = with_target(&["--io-timeout", "1"]);
    let body = random_bytes(4 << 20, 71);
    let mut stalled = start_raw_upload(&s, "PUT", &body, PARTIAL_BODY_BYTES);
    wait_for_temp_file(&s);
    stalled.read_to_close();
    assert_untouched(&s);
    let offset = format!("Upload-Offset: {}", ORIGINAL.len());
    s.send("PUT", TARGET_URL, b"next\n", &[&offset]).assert_ok_json();
    assert_eq!(s.read(TARGET), [ORIGINAL, b"next\n"].concat());
}

// ---- graceful shutdown ----

/// Whether a new connection now goes unserved: refused, or closed without an answer.
fn new_connections_refused(s: &Server) -> bool {
    let probe = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    matches!(attempt(s.addr(), probe), Attempt::Refused | Attempt::ClosedUnanswered)
}

#[test]
fn issue3_sigterm_lets_upload_in_flight_finish_and_refuses_new_connections() {
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
fn issue3_sigterm_cuts_off_stalled_upload_after_shutdown_timeout() {
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

// ---- review findings: appends racing other writers, readers, early answers ----

#[test]
fn failed_append_that_created_a_file_never_removes_a_file_posted_over_it() {
    let s = Server::start();
    let body = random_bytes(4 << 20, 61);
    let head = format!(
        "PUT /file/fresh.csv HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut conn = s.connect();
    conn.send(head.as_bytes()).send(&body[..PARTIAL_BODY_BYTES]);
    wait_for_temp_file(&s);
    assert!(!s.exists("fresh.csv"), "a new file appears only whole");
    s.post("/file/fresh.csv", "posted while the append streamed")
        .assert_ok_json();
    drop(conn);
    s.expect_no_temp_files();
    s.get("/file/fresh.csv")
        .assert_ok_body("posted while the append streamed");
}

#[test]
fn readers_never_see_a_streamed_append_before_it_commits() {
    let s = with_target(&[]);
    let body = random_bytes(4 << 20, 62);
    let conn = start_raw_upload(&s, "PUT", &body, PARTIAL_BODY_BYTES);
    wait_for_temp_file(&s);
    s.get(TARGET_URL).assert_ok_body(ORIGINAL);
    let head = s.head(TARGET_URL);
    assert_eq!(
        head.header("Content-Length"),
        Some(ORIGINAL.len().to_string().as_str()),
        "{}",
        head.context
    );
    s.get(&format!("{TARGET_URL}/wc")).assert_ok_body("1");
    let listing = s.get_with("/file/", &["Accept: application/json"]).assert_ok_json();
    assert_eq!(
        listing[0]["size"],
        ORIGINAL.len(),
        "listing during the append: {listing}"
    );
    drop(conn);
    assert_untouched(&s);
}

#[test]
fn stale_offset_409_reaches_a_client_still_streaming_its_body() {
    let s = with_target(&[]);
    fs::write(s.outside().join("big.bin"), random_bytes(32 << 20, 63)).expect("write the body file");
    let script = format!(
        "for i in 1 2 3; do cat {}/big.bin | curl -s -o /dev/null -D - -w 'status=%{{http_code}}\\n' \
         -X PUT -H 'Transfer-Encoding: chunked' -H 'Upload-Offset: 1' -T - {}; done",
        s.outside().display(),
        s.url(TARGET_URL)
    );
    let out = s.sh(&script);
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let answered = text.matches("status=409").count();
    let offsets = text.matches(&format!("upload-offset: {}", ORIGINAL.len())).count();
    assert!(
        answered == 3 && offsets == 3,
        "every attempt should see 409 with Upload-Offset {}:\n{text}\nstderr: {}",
        ORIGINAL.len(),
        out.stderr
    );
    assert_untouched(&s);
}

/// The README's `append_once` shell function, verbatim.
fn readme_append_once() -> String {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("read README.md");
    let start = readme.find("append_once() {").expect("README defines append_once");
    let len = readme[start..].find("\n}\n").expect("append_once ends with a lone }") + 3;
    readme[start..start + len].to_string()
}

#[test]
fn readme_retry_loop_appends_once_to_a_missing_and_to_an_existing_file() {
    let s = Server::start();
    s.scratch_file("batch.csv", "a,1\nb,2\n");
    let script = format!(
        "{}\nappend_once batch.csv {url} && append_once batch.csv {url}",
        readme_append_once(),
        url = s.url("/file/new/data.csv")
    );
    s.sh(&script).assert_success();
    assert_eq!(s.read("new/data.csv"), b"a,1\nb,2\na,1\nb,2\n");
}
