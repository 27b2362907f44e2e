//! Issue 15, "nothing acknowledged is ever lost": one write protocol across replicas, crashes,
//! moves and readers. One test per finding of the issue, each written to fail on the protocol
//! it replaced (checked with `HTTP_NAS_TEST_BIN` pointing at that build).
//!
//! Races that need an unlucky schedule are made deterministic with `strace` delay injection:
//! the server runs under `strace -e inject=SYSCALL:delay_enter=...`, so one replica sleeps
//! exactly where the old protocol had a window (between reading a journal and locking its
//! file, between creating a temp file and locking it) while the test drives the other replica
//! through that window. Without strace (or where ptrace is refused) those tests say `skipped:`.
//! Two replicas are two server processes on one root. Every wait is a generous bound.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use crate::support::raw::Conn;
use crate::support::{
    RESERVED_PREFIX, Server, TempDir, assert_same_bytes, random_bytes, skip, strace_injecting, wait_until,
};

/// What a file holds before the write a test races.
const ORIGINAL: &[u8] = b"committed before the test\n";
/// How long a test waits for the server to reach a state it can see on disk.
const VISIBLE_TIMEOUT: Duration = Duration::from_secs(10);

// ---- helpers ----

/// A wrapper running the server under strace with every `syscalls` call delayed by `delay`
/// on entry, or `None` (after printing why) where strace is missing or ptrace is refused.
fn delayed(syscalls: &str, delay: Duration) -> Option<Vec<String>> {
    strace_injecting(syscalls, &format!("{syscalls}:delay_enter={}", delay.as_micros()))
}

/// `wrapper` (from [`delayed`]) with the delay after the call instead of before it.
fn on_exit(wrapper: Vec<String>) -> Vec<String> {
    wrapper
        .into_iter()
        .map(|a| a.replace("delay_enter", "delay_exit"))
        .collect()
}

/// A fresh storage root (`<temp>/root`) for servers started with `Server::start_on`.
fn shared_root() -> (TempDir, PathBuf) {
    let home = TempDir::new();
    let root = home.path().join("root");
    fs::create_dir(&root).expect("create storage root");
    (home, root)
}

/// The service's own files (`.http-nas-*`) directly in `dir` whose name contains `kind`.
fn internal_files(dir: &Path, kind: &str) -> Vec<String> {
    let names = fs::read_dir(dir).into_iter().flatten().flatten();
    names
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(RESERVED_PREFIX) && n.contains(kind))
        .collect()
}

/// Waits until some `.http-nas-*` file whose name contains `kind` exists in `dir`.
#[track_caller]
fn wait_for_internal_file(dir: &Path, kind: &str) {
    let seen = wait_until(VISIBLE_TIMEOUT, || !internal_files(dir, kind).is_empty());
    assert!(
        seen,
        "no .http-nas-*{kind}* file appeared in {} within {VISIBLE_TIMEOUT:?}",
        dir.display()
    );
}

/// Sends a request head with `Content-Length: body.len()` and the first `sent` bytes of
/// `body`, keeping the connection open (the request stays in flight).
fn start_request(s: &Server, method: &str, path: &str, headers: &[&str], body: &[u8], sent: usize) -> Conn {
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
fn record(index: usize, len: usize) -> Vec<u8> {
    let mut out = format!("{index:06}:").into_bytes();
    out.extend(
        random_bytes(len - out.len() - 1, index as u64)
            .iter()
            .map(|b| b'a' + b % 26),
    );
    out.push(b'\n');
    out
}

// ---- 1. a starting replica's sweep never undoes an append that finished meanwhile ----

#[test]
fn issue15_a_starting_replicas_sweep_never_rolls_back_an_append_that_finished_meanwhile() {
    // Replica A's commit is slow (its data sync sleeps 2 s), so its crash record is on disk
    // when replica B starts; B's lock calls sleep 4 s, so A finishes while B's sweep is between
    // reading that record and locking the file. The sweep must then leave the file alone.
    let (Some(slow_sync), Some(slow_lock)) = (
        delayed("fdatasync", Duration::from_secs(2)),
        delayed("flock", Duration::from_secs(4)),
    ) else {
        return;
    };
    let (_home, root) = shared_root();
    fs::write(root.join("f"), ORIGINAL).unwrap();
    let a = Server::start_wrapped_on(&root, &slow_sync, &["--fsync", "true"]);
    let body = random_bytes(1 << 20, 1501);
    thread::scope(|scope| {
        let appender = scope.spawn(|| a.append("/file/f", &body));
        wait_for_internal_file(&root, "journal");
        let b = Server::start_wrapped_on(&root, &slow_lock, &[]);
        appender.join().unwrap().assert_ok_json();
        let mut want = ORIGINAL.to_vec();
        want.extend_from_slice(&body);
        assert_same_bytes(&b.get("/file/f").body, &want, "the append after B's start-up sweep");
        assert_same_bytes(&fs::read(root.join("f")).unwrap(), &want, "the file on disk");
    });
}

// ---- 2. kill -9 never tears a small append (also in `crash`, on a throttled disk) ----

#[test]
fn issue15_kill9_during_small_appends_on_a_throttled_disk_leaves_only_whole_records() {
    // Records of 33,000 bytes: a few pages, not page-aligned, so the dirty-page throttle can
    // put a writer to sleep inside one write(2), where a SIGKILL cuts it short.
    const RECORD: usize = 33_000;
    const LANES: usize = 6;
    const KILLS: usize = 4;
    let disk = match crate::crash::LoopDisk::throttled() {
        Ok(disk) => disk,
        Err(reason) => return skip(&reason),
    };
    let mut s = Server::start_on(&disk.root(), &["--fsync", "false"]);
    let mut acked = [0usize; LANES];
    for kill in 0..KILLS {
        let stop = AtomicBool::new(false);
        let counts: Vec<AtomicUsize> = acked.iter().map(|&n| AtomicUsize::new(n)).collect();
        thread::scope(|scope| {
            for (lane, count) in counts.iter().enumerate() {
                let (addr, stop) = (s.addr(), &stop);
                scope.spawn(move || {
                    let mut conn = Conn::open(addr);
                    while !stop.load(Ordering::Relaxed) {
                        let index = count.load(Ordering::SeqCst);
                        let head =
                            format!("PUT /file/lane{lane} HTTP/1.1\r\nHost: t\r\nContent-Length: {RECORD}\r\n\r\n");
                        conn.send(head.as_bytes()).send(&record(index, RECORD));
                        match conn.try_response() {
                            Some(r) if r.status == 200 => count.store(index + 1, Ordering::SeqCst),
                            _ => return,
                        }
                    }
                });
            }
            thread::sleep(Duration::from_millis(300 + 150 * kill as u64));
            s.signal(libc::SIGKILL);
            stop.store(true, Ordering::Relaxed);
        });
        s.restart();
        for (lane, count) in counts.iter().enumerate() {
            let bytes = s.get(&format!("/file/lane{lane}")).body;
            let acknowledged = count.load(Ordering::SeqCst);
            let what = format!(
                "kill {kill}, lane {lane}: {} bytes, {acknowledged} records acknowledged",
                bytes.len()
            );
            assert_eq!(bytes.len() % RECORD, 0, "{what}: not whole records");
            let whole = bytes.len() / RECORD;
            assert!(
                whole == acknowledged || whole == acknowledged + 1,
                "{what}: {whole} records"
            );
            for (index, got) in bytes.chunks(RECORD).enumerate() {
                assert!(got == record(index, RECORD), "{what}: record {index} is torn");
            }
            acked[lane] = whole;
        }
    }
    eprintln!("records per lane after {KILLS} kills: {acked:?}");
}

// ---- 3. crash records never outlive their file (ext4 reuses inode numbers) ----

#[test]
fn issue15_an_interrupted_append_never_truncates_a_later_file_that_reuses_its_inode() {
    let Some(slow_sync) = delayed("fdatasync", Duration::from_secs(60)) else {
        return;
    };
    // A filesystem of its own reuses a freed inode number at once (where it cannot be had, a
    // temp dir still checks the rest).
    let disk = crate::crash::LoopDisk::plain()
        .inspect_err(|e| eprintln!("no disk of its own: {e}"))
        .ok();
    let (_home, temp_root) = shared_root();
    let root = disk.as_ref().map_or(temp_root, |d| d.root());
    fs::write(root.join("f"), ORIGINAL).unwrap();
    let b = Server::start_on(&root, &[]);
    let a = Server::start_wrapped_on(&root, &slow_sync, &["--fsync", "true"]);
    let body = random_bytes(1 << 20, 1503);
    let _conn = start_request(&a, "PUT", "/file/f", &[], &body, body.len());
    wait_for_internal_file(&root, "journal");
    let mut a = a;
    a.signal(libc::SIGKILL);
    assert!(
        a.wait_exit(VISIBLE_TIMEOUT).is_some(),
        "the killed replica did not exit"
    );
    assert_same_bytes(
        &b.get("/file/f").body,
        ORIGINAL,
        "a reader of an append killed mid-commit",
    );
    let old_ino = fs::metadata(root.join("f")).unwrap().ino();
    let mut reused = false;
    let mut version = Vec::new();
    for attempt in 0..50 {
        version = random_bytes(43_000, 15_030 + attempt);
        if attempt % 2 == 1 {
            b.delete("/file/f").assert_ok_json();
        }
        b.post("/file/f", &version).assert_ok_json();
        if fs::metadata(root.join("f")).unwrap().ino() == old_ino {
            reused = true;
            break;
        }
    }
    eprintln!("inode {old_ino} reused by a later upload: {reused}");
    assert_same_bytes(&b.get("/file/f").body, &version, "the uploaded file");
    let mut b = b;
    b.restart();
    assert_same_bytes(
        &b.get("/file/f").body,
        &version,
        "the uploaded file after a start-up sweep",
    );
}

// ---- 4. a move during an append ----

#[test]
fn issue15_a_move_during_an_append_never_exposes_or_keeps_its_unfinished_body() {
    let mut s = Server::start_with(&["--io-timeout", "120"]);
    s.write("f", ORIGINAL);
    s.write("same", ORIGINAL);
    let body = random_bytes(4 << 20, 1504);
    let _across = start_request(&s, "PUT", "/file/f", &[], &body, 1 << 20);
    let _within = start_request(&s, "PUT", "/file/same", &[], &body, 1 << 20);
    // Give the old protocol time to stream part of each body into its file.
    wait_until(Duration::from_secs(2), || {
        s.read("f").len() > ORIGINAL.len() && s.read("same").len() > ORIGINAL.len()
    });
    s.put_json("/file/f", r#"{"path": "moved/g"}"#).assert_ok_json();
    s.put_json("/file/same", r#"{"path": "renamed"}"#).assert_ok_json();
    s.get("/file/moved/g").assert_ok_body(ORIGINAL);
    s.get("/file/renamed").assert_ok_body(ORIGINAL);
    s.signal(libc::SIGKILL);
    s.restart();
    s.get("/file/moved/g").assert_ok_body(ORIGINAL);
    s.get("/file/renamed").assert_ok_body(ORIGINAL);
    s.get("/file/f").assert_status(404);
    s.get("/file/same").assert_status(404);
    s.expect_no_temp_files();
}

// ---- 5. readers see whole appends only ----

#[test]
fn issue15_readers_never_see_part_of_a_small_append() {
    const RECORD: usize = 60_000;
    const APPENDS: usize = 600;
    let s = Server::start_with(&["--fsync", "false"]);
    s.write("f", b"");
    // Reader 1 reads through another replica on the same root.
    let replica = Server::start_on(&s.root(), &[]);
    let done = AtomicBool::new(false);
    let torn = AtomicUsize::new(0);
    let checks = AtomicUsize::new(0);
    thread::scope(|scope| {
        let (addr, done_ref) = (s.addr(), &done);
        scope.spawn(move || {
            let mut conn = Conn::open(addr);
            for index in 0..APPENDS {
                let head = format!("PUT /file/f HTTP/1.1\r\nHost: t\r\nContent-Length: {RECORD}\r\n\r\n");
                conn.send(head.as_bytes()).send(&record(index, RECORD));
                conn.response().assert_status(200);
            }
            done_ref.store(true, Ordering::SeqCst);
        });
        for (reader, reader_addr) in [s.addr(), replica.addr()].into_iter().enumerate() {
            let (torn, checks, done) = (&torn, &checks, &done);
            scope.spawn(move || {
                let mut conn = Conn::open(reader_addr);
                let mut round = 0;
                while !done.load(Ordering::SeqCst) {
                    round += 1;
                    let (method, path) = match (round + reader) % 10 {
                        0 => ("GET", "/file/f"),
                        1..=4 => ("GET", "/file/f/wc"),
                        _ => ("HEAD", "/file/f"),
                    };
                    conn.send(format!("{method} {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
                    let r = if method == "HEAD" {
                        conn.head_response()
                    } else {
                        conn.response()
                    };
                    let whole = match (method, path) {
                        ("HEAD", _) => r
                            .header("Content-Length")
                            .and_then(|l| l.parse::<usize>().ok())
                            .is_some_and(|l| l % RECORD == 0),
                        (_, "/file/f/wc") => r.status == 200,
                        _ => {
                            let starts = |(i, c): (usize, &[u8])| c.starts_with(format!("{i:06}:").as_bytes());
                            r.body.len() % RECORD == 0
                                && r.body
                                    .chunks(RECORD)
                                    .enumerate()
                                    .all(|(i, c)| starts((i, c)) && c.ends_with(b"\n"))
                        }
                    };
                    checks.fetch_add(1, Ordering::Relaxed);
                    if !whole {
                        torn.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let (torn, checks) = (torn.load(Ordering::Relaxed), checks.load(Ordering::Relaxed));
    eprintln!("{checks} reads during {APPENDS} appends of {RECORD} bytes");
    assert_eq!(torn, 0, "{torn} of {checks} reads saw part of an append");
}

// ---- 6. preconditions hold at the instant of the commit ----

#[test]
fn issue15_if_match_is_checked_at_commit_so_only_one_of_two_racing_writers_wins() {
    let s = Server::start();
    for method in ["POST", "PUT"] {
        s.post("/file/f", ORIGINAL).assert_ok_json();
        let etag = s.head("/file/f").header("ETag").expect("an ETag").to_string();
        let if_match = format!("If-Match: {etag}");
        let bodies = [random_bytes(300_000, 1506), random_bytes(300_000, 1507)];
        let mut conns: Vec<Conn> = bodies
            .iter()
            .map(|b| start_request(&s, method, "/file/f", &[&if_match], b, 100_000))
            .collect();
        thread::sleep(Duration::from_millis(200));
        for (conn, body) in conns.iter_mut().zip(&bodies) {
            conn.send(&body[100_000..]);
        }
        let mut statuses: Vec<u16> = conns.iter_mut().map(|c| c.response().status).collect();
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 412], "{method} with the same If-Match from two writers");
    }
}

// ---- 7. one slow appender never stalls the others ----

#[test]
fn issue15_a_slow_appender_never_blocks_other_appends_to_the_same_file() {
    let s = Server::start_with(&["--workers", "4", "--io-timeout", "120"]);
    s.write("f", b"");
    let big = random_bytes(1 << 20, 1508);
    let mut slow = start_request(&s, "PUT", "/file/f", &[], &big, 100 << 10);
    thread::sleep(Duration::from_millis(200));
    thread::scope(|scope| {
        for i in 0..3 {
            let s = &s;
            scope.spawn(move || s.append("/file/f", format!("line {i}\n")).assert_ok_json());
        }
    });
    s.get("/healthz").assert_status(200);
    slow.send(&big[100 << 10..]);
    slow.response().assert_status(200);
    let content = s.read("f");
    assert_eq!(content.len(), big.len() + 3 * 7, "three lines and the big body");
    for i in 0..3 {
        let line = format!("line {i}\n");
        assert!(content.windows(7).any(|w| w == line.as_bytes()), "{line:?} missing");
    }
    assert!(
        content.windows(1024).any(|w| w == &big[..1024]),
        "the big body is missing"
    );
}

// ---- 8. a refused append never removes another writer's bytes ----

#[test]
fn issue15_a_refused_offset_append_never_removes_another_writers_acknowledged_bytes() {
    let Some(slow_lock) = delayed("flock", Duration::from_secs(3)) else {
        return;
    };
    let (_home, root) = shared_root();
    let a = Server::start_wrapped_on(&root, &slow_lock, &[]);
    let b = Server::start_on(&root, &[]);
    thread::scope(|scope| {
        let refused = scope.spawn(|| a.send("PUT", "/file/f", b"abcdefg", &["Upload-Offset: 7"]));
        wait_until(Duration::from_secs(1), || root.join("f").exists());
        b.append("/file/f", "hello").assert_ok_json();
        refused.join().unwrap().assert_status(409);
    });
    b.get("/file/f").assert_ok_body("hello");
}

// ---- 9. smaller: temp files, probe names, deletes, 100 Continue ----

#[test]
fn issue15_a_starting_replica_never_deletes_a_live_uploads_temp_file() {
    let Some(slow_lock) = delayed("flock", Duration::from_secs(3)) else {
        return;
    };
    let (_home, root) = shared_root();
    let a = Server::start_wrapped_on(&root, &slow_lock, &[]);
    thread::scope(|scope| {
        let upload = scope.spawn(|| a.post("/file/f", "the upload"));
        wait_for_internal_file(&root, "tmp");
        let _b = Server::start_on(&root, &[]);
        upload.join().unwrap().assert_ok_json();
    });
    a.get("/file/f").assert_ok_body("the upload");
}

#[test]
fn issue15_replicas_that_are_all_pid_1_never_fail_each_others_readiness_probes() {
    let pid1 = ["unshare", "--pid", "--fork", "--kill-child"].map(String::from);
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "true"])
        .output();
    if !probe.is_ok_and(|out| out.status.success()) {
        return skip("cannot run a process as pid 1 in a new pid namespace (unshare, needs root)");
    }
    let Some(slow_unlink) = delayed("unlink,unlinkat", Duration::from_secs(2)) else {
        return;
    };
    // strace outside, so that the server (not strace) is the namespace's pid 1.
    let mut slow_pid1 = slow_unlink;
    slow_pid1.extend(pid1.iter().cloned());
    let (_home, root) = shared_root();
    let a = Server::start_wrapped_on(&root, &slow_pid1, &[]);
    let b = Server::start_wrapped_on(&root, &pid1, &[]);
    thread::scope(|scope| {
        let slow = scope.spawn(|| a.get("/readyz"));
        thread::sleep(Duration::from_millis(500));
        b.get("/readyz").assert_status(200);
        slow.join().unwrap().assert_status(200);
    });
}

#[test]
fn issue15_a_directory_delete_racing_a_writer_never_fails_half_way() {
    let s = Server::start();
    for i in 0..3000 {
        s.write(&format!("d/old-{i}"), "x");
    }
    let done = AtomicBool::new(false);
    thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut i = 0;
            while !done.load(Ordering::SeqCst) {
                s.post(&format!("/file/d/new-{i}"), "y");
                i += 1;
            }
        });
        thread::sleep(Duration::from_millis(100));
        let deleted = s.delete("/file/d");
        done.store(true, Ordering::SeqCst);
        writer.join().unwrap();
        deleted.assert_ok_json();
    });
    let left: Vec<String> = fs::read_dir(s.root().join("d"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let old: Vec<&String> = left.iter().filter(|n| n.starts_with("old-")).collect();
    assert!(
        old.is_empty(),
        "{} files of the deleted tree are left: {:?}",
        old.len(),
        &old[..old.len().min(5)]
    );
}

#[test]
fn issue15_a_directory_delete_killed_half_way_leaves_all_or_nothing() {
    let Some(slow_unlink) = delayed("unlink,unlinkat", Duration::from_millis(10)) else {
        return;
    };
    let (_home, root) = shared_root();
    for i in 0..300 {
        let dir = root.join("d").join(format!("sub{}", i % 3));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("f{i}")), "x").unwrap();
    }
    let s = Server::start_wrapped_on(&root, &slow_unlink, &[]);
    thread::scope(|scope| {
        scope.spawn(|| s.delete("/file/d"));
        thread::sleep(Duration::from_millis(1000));
        s.signal(libc::SIGKILL);
    });
    let s = Server::start_on(&root, &[]);
    let mut files = 0;
    for sub in 0..3 {
        files += fs::read_dir(root.join("d").join(format!("sub{sub}"))).map_or(0, |d| d.count());
    }
    assert!(files == 0 || files == 300, "a killed delete left {files} of 300 files");
    if files == 0 {
        s.get("/file/d").assert_status(404);
    }
    s.expect_no_temp_files();
}

#[test]
fn issue15_a_stale_upload_offset_is_refused_before_100_continue_invites_the_body() {
    let s = Server::start();
    s.write("f", "abc");
    let mut conn = s.connect();
    conn.send(b"PUT /file/f HTTP/1.1\r\nHost: t\r\nUpload-Offset: 5\r\nExpect: 100-continue\r\nContent-Length: 67000000\r\n\r\n");
    let first = conn.response();
    first.assert_status(409);
    assert_eq!(first.header("Upload-Offset"), Some("3"));
}

// ---- an independent review's findings against the first cut of this protocol ----

/// strace attached to a running server, delaying `syscalls` by `delay`; detached on drop.
struct Attached(std::process::Child);

impl Attached {
    fn delay(pid: libc::pid_t, syscalls: &str, delay: Duration) -> Attached {
        Attached::inject(pid, syscalls, &format!("delay_enter={}", delay.as_micros()))
    }

    /// strace attached to `pid`, injecting `how` (`delay_enter=US:when=N`, ...) into `syscalls`.
    fn inject(pid: libc::pid_t, syscalls: &str, how: &str) -> Attached {
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

/// A wrapper running the server as uid/gid 65534 (as in a container), or `None` (after
/// printing why) where that is not possible.
fn unprivileged() -> Option<Vec<String>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 || Command::new("setpriv").arg("--help").output().is_err() {
        skip("needs root and setpriv to run the server as another uid");
        return None;
    }
    Some(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            .map(String::from)
            .to_vec(),
    )
}

#[test]
fn review_a_reader_whose_file_moves_while_it_waits_never_serves_a_dead_appends_bytes() {
    // R opens d1/f and waits for its shared lock; meanwhile the file moves to d2/f, an append to
    // it is killed half way (its crash record in d2). R must not serve those bytes.
    let Some(slow_writes) = delayed("copy_file_range,pwrite64", Duration::from_secs(2)) else {
        return;
    };
    let (_home, root) = shared_root();
    fs::create_dir_all(root.join("d1")).unwrap();
    fs::create_dir_all(root.join("d2")).unwrap();
    fs::write(root.join("d1/f"), ORIGINAL).unwrap();
    let r = Server::start_on(&root, &[]);
    let mut a = Server::start_wrapped_on(&root, &slow_writes, &[]);
    let _slow_lock = Attached::delay(r.pid(), "flock", Duration::from_secs(5));
    let body = random_bytes(768 << 10, 1601);
    thread::scope(|scope| {
        let reader = scope.spawn(|| r.get("/file/d1/f"));
        thread::sleep(Duration::from_millis(500));
        a.put_json("/file/d1/f/mv", r#"{"path": "d2/f"}"#).assert_ok_json();
        let _append = start_request(&a, "PUT", "/file/d2/f", &[], &body, body.len());
        wait_for_internal_file(&root.join("d2"), "journal");
        thread::sleep(Duration::from_millis(2500));
        a.signal(libc::SIGKILL);
        assert!(
            a.wait_exit(VISIBLE_TIMEOUT).is_some(),
            "the killed replica did not exit"
        );
        let got = reader.join().unwrap();
        assert!(
            got.status == 404 || got.body == ORIGINAL,
            "the reader served {} bytes with status {}",
            got.body.len(),
            got.status
        );
    });
}

#[test]
fn review_a_starting_replica_never_removes_a_live_appends_crash_record() {
    // A dead append leaves a record for f. Replica S starts; its second look at the directory
    // is slowed so that f is away (moved to E/f and back) when it looks. Then a live append on
    // A1 writes a new record under the same name and is killed before it answers. The sweep
    // must not have removed that record: after a restart, f is as before the dead append.
    // Delays on the way out of pwrite: the bytes are in the file when the replica is killed.
    let (Some(slow_a0), Some(slow_a1)) = (
        delayed("pwrite64", Duration::from_secs(3)).map(on_exit),
        delayed("pwrite64", Duration::from_secs(6)).map(on_exit),
    ) else {
        return;
    };
    let (_home, root) = shared_root();
    fs::create_dir(root.join("E")).unwrap();
    fs::write(root.join("f"), b"base\n").unwrap();
    let mut a0 = Server::start_wrapped_on(&root, &slow_a0, &["--fsync", "false"]);
    let mut a1 = Server::start_wrapped_on(&root, &slow_a1, &["--fsync", "false"]);
    let _dead = start_request(&a0, "PUT", "/file/f", &[], b"crash0\n", 7);
    wait_for_internal_file(&root, "journal");
    a0.signal(libc::SIGKILL);
    assert!(a0.wait_exit(VISIBLE_TIMEOUT).is_some());
    let sweeper = [
        "strace",
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=getdents64,unlinkat",
        "-e",
        "inject=getdents64:delay_enter=3000000:when=3",
        "-e",
        "inject=unlinkat:delay_enter=4000000:when=2",
    ]
    .map(String::from);
    thread::scope(|scope| {
        let started = std::time::Instant::now();
        let s = scope.spawn(|| Server::start_wrapped_on(&root, &sweeper, &[]));
        thread::sleep(Duration::from_millis(700));
        a1.put_json("/file/f/mv", r#"{"path": "E/f"}"#).assert_ok_json();
        thread::sleep(Duration::from_millis(3200).saturating_sub(started.elapsed()));
        a1.put_json("/file/E%2Ff/mv", r#"{"path": "f"}"#).assert_ok_json();
        let _live = start_request(&a1, "PUT", "/file/f", &[], b"live-but-never-acknowledged\n", 28);
        thread::sleep(Duration::from_millis(8000).saturating_sub(started.elapsed()));
        a1.signal(libc::SIGKILL);
        assert!(a1.wait_exit(VISIBLE_TIMEOUT).is_some());
        drop(s.join().unwrap());
    });
    let b = Server::start_on(&root, &[]);
    b.get("/file/f").assert_ok_body("base\n");
}

#[test]
fn review_moving_an_in_root_symlink_during_an_upload_never_writes_outside_the_root() {
    // x/y/s -> ../outside points inside the root; moved to b2 (while an upload into b2 is in
    // flight and b2 itself was moved away), the same relative link points outside.
    let s = Server::start();
    let root = s.root();
    fs::create_dir_all(root.join("b2")).unwrap();
    fs::create_dir_all(root.join("x/y")).unwrap();
    fs::create_dir_all(root.join("x/outside")).unwrap();
    std::os::unix::fs::symlink("../outside", root.join("x/y/s")).unwrap();
    let escaped = s.outside().join("outside");
    fs::create_dir_all(&escaped).unwrap();
    for (method, path) in [("POST", "/file/b2/secret.txt"), ("PUT", "/file/b2/appended.txt")] {
        fs::create_dir_all(root.join("b2")).unwrap();
        let body = b"uploaded through the API\n";
        let mut conn = start_request(&s, method, path, &[], body, 5);
        thread::sleep(Duration::from_millis(200));
        s.put_json("/file/b2/mv", r#"{"path": "b3"}"#).assert_ok_json();
        s.put_json("/file/x%2Fy%2Fs/mv", r#"{"path": "b2"}"#).assert_ok_json();
        conn.send(&body[5..]);
        let answer = conn.response();
        let outside: Vec<_> = fs::read_dir(&escaped)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            outside.is_empty(),
            "{method} wrote outside the root: {outside:?} (answered {})",
            answer.status
        );
        assert_eq!(answer.status, 403, "{method}: {}", answer.text());
        fs::remove_file(root.join("b2")).unwrap();
        fs::rename(root.join("b3"), root.join("b2")).unwrap();
        std::os::unix::fs::symlink("../outside", root.join("x/y/s")).unwrap();
    }
}

#[test]
fn review_a_directory_delete_that_cannot_remove_everything_still_answers_that_it_deleted() {
    let Some(as_nobody) = unprivileged() else { return };
    let (_home, root) = shared_root();
    fs::create_dir_all(root.join("d/locked")).unwrap();
    fs::write(root.join("d/a.txt"), "a").unwrap();
    fs::write(root.join("d/locked/kept"), "k").unwrap();
    for dir in [&root, &root.join("d")] {
        std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
    }
    let s = Server::start_wrapped_on(&root, &as_nobody, &[]);
    s.delete("/file/d").assert_ok_json();
    s.get("/file/d").assert_status(404);
    s.get("/file/").assert_ok_body("");
}

#[test]
fn review_files_the_service_may_not_write_can_still_be_replaced_moved_and_deleted() {
    let Some(as_nobody) = unprivileged() else { return };
    let (_home, root) = shared_root();
    std::os::unix::fs::chown(&root, Some(65534), Some(65534)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for (name, owner, mode) in [("ro-own.txt", 65534, 0o444), ("other-uid.txt", 0, 0o644)] {
        fs::write(root.join(name), "old\n").unwrap();
        std::os::unix::fs::chown(root.join(name), Some(owner), Some(owner)).unwrap();
        fs::set_permissions(root.join(name), fs::Permissions::from_mode(mode)).unwrap();
    }
    let s = Server::start_wrapped_on(&root, &as_nobody, &[]);
    for name in ["ro-own.txt", "other-uid.txt"] {
        s.get(&format!("/file/{name}")).assert_ok_body("old\n");
        s.append(&format!("/file/{name}"), "x").assert_error(403);
        s.post(&format!("/file/{name}"), "new\n").assert_ok_json();
        s.get(&format!("/file/{name}")).assert_ok_body("new\n");
    }
    for (name, owner, mode) in [("ro2.txt", 65534, 0o444), ("other2.txt", 0, 0o644)] {
        fs::write(root.join(name), "old\n").unwrap();
        std::os::unix::fs::chown(root.join(name), Some(owner), Some(owner)).unwrap();
        fs::set_permissions(root.join(name), fs::Permissions::from_mode(mode)).unwrap();
        s.put_json(&format!("/file/{name}/mv"), &format!(r#"{{"path": "{name}.moved"}}"#))
            .assert_ok_json();
        s.delete(&format!("/file/{name}.moved")).assert_ok_json();
    }
}

#[test]
fn review_a_write_whose_directory_is_deleted_at_commit_creates_it_again() {
    let Some(slow_link) = delayed("linkat", Duration::from_secs(2)) else {
        return;
    };
    let (_home, root) = shared_root();
    let a = Server::start_on(&root, &[]);
    let b = Server::start_wrapped_on(&root, &slow_link, &[]);
    for method in ["POST", "PUT"] {
        fs::create_dir_all(root.join("d")).unwrap();
        thread::scope(|scope| {
            let write = scope.spawn(|| b.send(method, "/file/d/new.txt", b"hello\n", &[]));
            thread::sleep(Duration::from_millis(700));
            a.delete("/file/d").assert_ok_json();
            write.join().unwrap().assert_ok_json();
        });
        a.get("/file/d/new.txt").assert_ok_body("hello\n");
        a.delete("/file/d").assert_ok_json();
    }
}

#[test]
fn review_new_parent_directories_appear_only_when_the_write_commits() {
    let mut s = Server::start();
    let body = random_bytes(200_000, 1607);
    let _post = start_request(&s, "POST", "/file/new1/new2/f.txt", &[], &body, 100_000);
    let _append = start_request(&s, "PUT", "/file/p1/p2/log", &[], &body, 100_000);
    wait_for_internal_file(&s.root(), "tmp");
    s.get("/file/").assert_ok_body("");
    s.signal(libc::SIGKILL);
    s.restart();
    s.get("/file/").assert_ok_body("");
    assert!(
        !s.exists("new1") && !s.exists("p1"),
        "directories left by writes that never committed"
    );
    s.expect_no_temp_files();
}

// ---- a second review's findings ----

/// Descriptors the server may hold in the tests of bounded walks (`prlimit --nofile`).
const FEW_FDS: &str = "--nofile=96:96";

#[test]
fn review2_a_listing_or_stat_never_shows_a_directory_outside_the_root() {
    // a/secretdir is listed while another replica moves `a` away and an in-root link
    // `q/l -> ../releases` to `a`, where it points outside. Every directory is opened by handle
    // from the root, so the listing is of the in-root directory or refused, never the outside.
    let (home, root) = shared_root();
    let outside = home.path().join("releases/secretdir/OUTSIDE-private-dir");
    fs::create_dir_all(&outside).unwrap();
    fs::create_dir_all(root.join("releases")).unwrap();
    fs::create_dir_all(root.join("q")).unwrap();
    // One worker, whose third openat (the listing) or statx (the stat) is slowed: after the
    // checks of the path, where a re-walk of it by name would follow the moved link.
    let a = Server::start_on(&root, &["--workers", "1"]);
    let b = Server::start_on(&root, &[]);
    for (i, (path, call)) in [("/file/a/secretdir/", "openat"), ("/file/a/secretdir/check", "statx")]
        .into_iter()
        .enumerate()
    {
        fs::create_dir_all(root.join("a/secretdir/inroot-dir")).unwrap();
        std::os::unix::fs::symlink("../releases", root.join("q/l")).unwrap();
        let slow = Attached::inject(a.pid(), call, "delay_enter=1500000:when=3");
        thread::scope(|scope| {
            let read = scope.spawn(|| a.get_with(path, &["Accept: application/json"]));
            thread::sleep(Duration::from_millis(500));
            b.put_json("/file/a/mv", &format!(r#"{{"path": "a.old{i}"}}"#))
                .assert_ok_json();
            b.put_json("/file/q%2Fl/mv", r#"{"path": "a"}"#).assert_ok_json();
            let got = read.join().unwrap();
            assert!(
                !got.text().contains("OUTSIDE"),
                "{path} showed the outside: {}",
                got.text()
            );
            let outside_ino = fs::metadata(&outside).unwrap().ino().to_string();
            assert!(
                !got.text().contains(&format!("\"ino\":{outside_ino}")),
                "{path} stat the outside"
            );
        });
        drop(slow);
        fs::remove_file(root.join("a")).unwrap();
    }
}

#[test]
fn review2_the_start_up_sweep_clears_leftovers_in_more_directories_than_it_has_descriptors() {
    let (_home, root) = shared_root();
    for i in 0..300 {
        let dir = root.join(format!("d{i:03}"));
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join(".http-nas-tmp-0123456789abcdef"), "partial").unwrap();
    }
    let limited = ["prlimit", FEW_FDS].map(String::from);
    let s = Server::start_wrapped_on(&root, &limited, &[]);
    s.expect_no_temp_files();
}

#[test]
fn review2_deleting_a_tree_deeper_than_the_descriptor_limit_leaves_nothing() {
    let (_home, root) = shared_root();
    let limited = ["prlimit", FEW_FDS].map(String::from);
    let s = Server::start_wrapped_on(&root, &limited, &[]);
    let deep = format!("/file/top/{}leaf.txt", "d/".repeat(300));
    s.post(&deep, "deep").assert_ok_json();
    s.delete("/file/top").assert_ok_json();
    let left: Vec<_> = fs::read_dir(&root).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "left in the root after the delete: {left:?}");
}

#[test]
fn review2_a_new_file_whose_directory_is_deleted_while_its_temp_file_is_made_is_still_created() {
    let (_home, root) = shared_root();
    let a = Server::start_on(&root, &[]);
    let b = Server::start_on(&root, &["--workers", "1"]);
    for method in ["PUT", "POST"] {
        fs::create_dir_all(root.join("d")).unwrap();
        let slow = Attached::delay(b.pid(), "getrandom", Duration::from_millis(1500));
        thread::scope(|scope| {
            let write = scope.spawn(|| b.send(method, "/file/d/new.txt", b"hello\n", &[]));
            thread::sleep(Duration::from_millis(400));
            a.delete("/file/d").assert_ok_json();
            write.join().unwrap().assert_ok_json();
        });
        drop(slow);
        a.get("/file/d/new.txt").assert_ok_body("hello\n");
        a.delete("/file/d").assert_ok_json();
    }
}

#[test]
fn review2_an_append_whose_commit_cannot_be_made_durable_is_undone_so_a_retry_appends_once() {
    // The third fsync of the append (the directory, after its crash record is removed) fails.
    let Some(failing) = delayed("fsync", Duration::ZERO).map(|w| {
        w.into_iter()
            .map(|a| {
                if a.starts_with("inject=") {
                    "inject=fsync:error=EIO:when=3".to_string()
                } else {
                    a
                }
            })
            .collect::<Vec<_>>()
    }) else {
        return;
    };
    let (_home, root) = shared_root();
    fs::write(root.join("f"), "base\n").unwrap();
    let s = Server::start_wrapped_on(&root, &failing, &["--fsync", "true", "--workers", "1"]);
    s.append("/file/f", "appended\n").assert_status(500);
    s.get("/file/f").assert_ok_body("base\n");
    s.append("/file/f", "appended\n").assert_ok_json();
    s.get("/file/f").assert_ok_body("base\nappended\n");
}

#[test]
fn review2_an_append_creating_directories_makes_them_only_after_its_body_is_on_disk() {
    let (_home, root) = shared_root();
    let mut s = Server::start_on(&root, &["--fsync", "true"]);
    let body = random_bytes(1 << 20, 1610);
    {
        let _slow = Attached::delay(s.pid(), "fsync", Duration::from_secs(3));
        let _append = start_request(&s, "PUT", "/file/new1/new2/big.bin", &[], &body, body.len());
        wait_for_internal_file(&root, "tmp");
        thread::sleep(Duration::from_millis(500));
        let seen = Server::start_on(&root, &[]);
        seen.get("/file/").assert_ok_body("");
        s.signal(libc::SIGKILL);
    }
    s.restart();
    s.get("/file/").assert_ok_body("");
    assert!(!s.exists("new1"), "directories of an append that never committed");
}

#[test]
fn review2_links_inside_the_root_work_like_their_targets_even_when_dangling() {
    let s = Server::start();
    let root = s.root();
    s.write("sub/inner.txt", "in");
    std::os::unix::fs::symlink("sub", root.join("dlink")).unwrap();
    s.get("/file/dlink").assert_ok_body("inner.txt\n");
    s.get("/file/dlink/").assert_ok_body("inner.txt\n");
    std::os::unix::fs::symlink("target.txt", root.join("dangling")).unwrap();
    s.get("/file/dangling").assert_status(404).assert_error(404);
    s.get("/file/dangling/check").assert_error(404);
    s.put_json("/file/dangling/mv", r#"{"path": "moved-link"}"#)
        .assert_ok_json();
    assert!(fs::symlink_metadata(root.join("moved-link")).is_ok_and(|m| m.file_type().is_symlink()));
    s.delete("/file/moved-link").assert_ok_json();
    assert!(!s.exists("moved-link"));
}

#[test]
fn review2_a_path_through_a_file_names_nothing() {
    let s = Server::start();
    s.write("plain.txt", "x");
    for path in ["/file/plain.txt/x", "/file/plain.txt/x/check", "/file/plain.txt/x/wc"] {
        let got = s.get(path);
        assert_eq!((got.status, got.text().as_str()), (404, "Not Found"), "GET {path}");
    }
    let deleted = s.delete("/file/plain.txt/x");
    assert_eq!((deleted.status, deleted.text().as_str()), (404, "Not Found"));
    s.post("/file/plain.txt/x", "y").assert_error(409);
}

#[test]
fn review2_check_answers_what_node_fs_stats_serialises() {
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return skip("node is not installed");
    }
    let s = Server::start();
    s.write("dir/data.csv", "a,b\n1,2\n");
    for (rel, url) in [
        ("dir/data.csv", "/file/dir%2Fdata.csv/check"),
        ("dir", "/file/dir/check"),
    ] {
        let script = "process.stdout.write(JSON.stringify(require('fs').statSync(process.argv[1])))";
        let path = s.root().join(rel);
        let out = Command::new("node")
            .args(["-e", script])
            .arg(&path)
            .output()
            .expect("run node");
        let ours = s.get(url);
        ours.assert_status(200);
        assert_eq!(ours.text().trim_end(), String::from_utf8_lossy(&out.stdout), "{rel}");
    }
}

#[test]
fn review_crash_records_planted_by_another_writer_are_never_followed_blocked_on_or_read_unbounded() {
    // Another writer of the volume puts a FIFO, a symlink to a file outside the root, an
    // oversized file or a directory at the record name of `f` (its inode is in every ETag).
    let s = Server::start();
    let root = s.root();
    let outside = s.outside().join("outside.txt");
    fs::write(&outside, "http-nas append journal v2\n").unwrap();
    s.write("f", ORIGINAL);
    let record = root.join(format!(
        ".http-nas-journal-{}",
        fs::metadata(root.join("f")).unwrap().ino()
    ));
    let plant = |kind: &str| {
        let _ = fs::remove_file(&record);
        let _ = fs::remove_dir(&record);
        match kind {
            "fifo" => {
                let c = std::ffi::CString::new(record.as_os_str().as_encoded_bytes()).unwrap();
                // SAFETY: mkfifo takes a NUL-terminated path and a mode.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
            }
            "symlink" => std::os::unix::fs::symlink(&outside, &record).unwrap(),
            "oversized" => fs::write(&record, vec![b'9'; 8 << 20]).unwrap(),
            _ => fs::create_dir(&record).unwrap(),
        }
    };
    let mut want = ORIGINAL.to_vec();
    for kind in ["fifo", "symlink", "oversized", "directory"] {
        plant(kind);
        s.get("/file/f").assert_ok_body(&want);
        let head = s.head("/file/f");
        assert_eq!(
            head.header("Content-Length"),
            Some(want.len().to_string().as_str()),
            "HEAD with a planted {kind}"
        );
        if kind != "directory" {
            s.append("/file/f", format!("{kind}\n")).assert_ok_json();
            want.extend_from_slice(format!("{kind}\n").as_bytes());
            s.get("/file/f").assert_ok_body(&want);
        }
    }
    assert_eq!(
        fs::read(&outside).unwrap(),
        b"http-nas append journal v2\n",
        "the outside file"
    );
}
