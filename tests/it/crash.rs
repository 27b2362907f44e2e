//! Crash consistency at length: `kill -9` at random moments while clients append (small and
//! large bodies, two clients per file, some with `Upload-Offset`), upload, move, delete and
//! read; then a restart on the same root, and a check that every file holds exactly whole
//! acknowledged writes, no byte of an unacknowledged one, and that readers only ever saw
//! whole writes. Run on a plain directory and on a writeback-throttled disk: a loop-mounted
//! ext4 whose backing device may hold only 256 KiB of dirty pages (`strict_limit`), so
//! `write(2)` sleeps between pages and a kill lands inside one (skipped, with the reason, where
//! the kernel refuses the mount). `HTTP_NAS_CRASH_ROUNDS` sets the rounds (default 3 per disk;
//! `make crash-test` runs more).
//!
//! Every client keeps a ledger per file: writes answered 2xx (must be there, once), and the one
//! write in flight when the server died (may be there, whole, at most once). Records name
//! themselves (`lane:seq:len:`), contain no `\n` but their last byte, and their bytes are
//! derived from their name, so a torn, duplicated or foreign record cannot pass.

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::mounts::Mounted;
use crate::support::raw::Conn;
use crate::support::{JOURNAL_PREFIX, RESERVED_PREFIX, Response, Server, TempDir, b64, random_bytes, skip};

/// The seed of the kill moments: `HTTP_NAS_CRASH_SEED`, else the clock (so every run tries
/// other moments; the seed is printed, so a failure can be repeated).
fn crash_seed() -> u64 {
    std::env::var("HTTP_NAS_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs() ^ u64::from(d.subsec_nanos()))
        })
}

/// Rounds per disk: `HTTP_NAS_CRASH_ROUNDS`, else 3.
fn rounds() -> usize {
    std::env::var("HTTP_NAS_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

// ---- records and ledgers ----

/// Record `seq` of `lane`, `len` bytes: `lane:seq:len:` then letters, then `\n`.
fn record(lane: usize, seq: usize, len: usize) -> Vec<u8> {
    let mut out = format!("{lane}:{seq}:{len}:").into_bytes();
    let fill = len.saturating_sub(out.len() + 1);
    out.extend(
        random_bytes(fill, (lane * 1_000_003 + seq) as u64)
            .iter()
            .map(|b| b'a' + b % 26),
    );
    out.push(b'\n');
    out
}

/// Splits `bytes` into whole records, or says where it stops being whole records.
fn parse_records(bytes: &[u8]) -> Result<Vec<(usize, usize)>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let head: Vec<&[u8]> = bytes[at..bytes.len().min(at + 64)].splitn(4, |&b| b == b':').collect();
        let num = |i: usize| {
            head.get(i)
                .and_then(|f| std::str::from_utf8(f).ok()?.parse::<usize>().ok())
        };
        let (Some(lane), Some(seq), Some(len)) = (num(0), num(1), num(2)) else {
            return Err(format!("no record header at byte {at} of {}", bytes.len()));
        };
        if bytes.len() < at + len || bytes[at..at + len] != record(lane, seq, len)[..] {
            return Err(format!(
                "record {lane}:{seq} ({len} bytes) at byte {at} of {} is torn",
                bytes.len()
            ));
        }
        out.push((lane, seq));
        at += len;
    }
    Ok(out)
}

/// What one client knows of its writes to one file.
#[derive(Default, Debug)]
struct Ledger {
    /// Records answered 2xx.
    acked: Vec<usize>,
    /// The record whose answer never came (the server died), if any.
    in_flight: Option<usize>,
}

/// Checks that `found` (this lane's records in a file, in order) holds every acknowledged
/// record once and nothing but those and the one in flight (at most once).
fn check_ledger(what: &str, lane: usize, ledger: &Ledger, found: &[usize]) -> Result<(), String> {
    let mut count: HashMap<usize, usize> = HashMap::new();
    for &seq in found {
        *count.entry(seq).or_default() += 1;
    }
    for &seq in &ledger.acked {
        if count.remove(&seq) != Some(1) {
            return Err(format!(
                "{what}: acknowledged record {lane}:{seq} is not there exactly once"
            ));
        }
    }
    if let Some(seq) = ledger.in_flight
        && count.remove(&seq).unwrap_or(0) > 1
    {
        return Err(format!("{what}: unacknowledged record {lane}:{seq} is there twice"));
    }
    match count.keys().next() {
        Some(seq) => Err(format!("{what}: record {lane}:{seq} was never written or was refused")),
        None => Ok(()),
    }
}

// ---- a tiny client ----

/// One keep-alive connection; every call returns `None` once the server is gone.
struct Client {
    conn: Option<Conn>,
    addr: SocketAddr,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        Client { conn: None, addr }
    }

    fn request(&mut self, method: &str, path: &str, headers: &[String], body: &[u8]) -> Option<Response> {
        if self.conn.is_none() {
            self.conn = Some(Conn::try_open(self.addr)?);
        }
        let conn = self.conn.as_mut()?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n",
            body.len()
        );
        for h in headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        conn.send(head.as_bytes()).send(body);
        let response = if method == "HEAD" {
            conn.try_head_response()
        } else {
            conn.try_response()
        };
        if response.is_none() {
            self.conn = None;
        }
        response
    }
}

/// How one round's clients stop: the server died, or the round is over.
struct Round<'a> {
    stop: &'a AtomicBool,
    problems: &'a Mutex<Vec<String>>,
    dir: String,
}

impl Round<'_> {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn problem(&self, text: String) {
        self.problems.lock().unwrap_or_else(|p| p.into_inner()).push(text);
    }
}

/// Sizes of appended records: mostly small, some a few pages, a few larger than the server's
/// in-memory limit (64 KiB) and its copy buffer (256 KiB).
fn record_len(lane: usize, seq: usize) -> usize {
    match (lane * 7 + seq * 13) % 20 {
        0 => 1 << 20,
        1 | 2 => 300 << 10,
        3..=7 => 60_000,
        8..=12 => 32 << 10,
        _ => 100,
    }
}

/// Appends records to `file` until stopped; with `offsets`, each with `Upload-Offset` from a
/// HEAD first (a 409 means another lane appended meanwhile: read again, same record).
fn append_lane(round: &Round, addr: SocketAddr, lane: usize, file: &str, offsets: bool) -> Ledger {
    let mut client = Client::new(addr);
    let mut ledger = Ledger::default();
    let url = format!("/file/{}/{file}", round.dir);
    let mut seq = 0;
    while !round.stopped() {
        // Kept digests (the sha-256 state too) are extended by every append and checked after
        // the restart ([`check_kept_digests`]).
        let mut headers = vec![WANT_DIGESTS.to_string()];
        if offsets {
            let Some(head) = client.request("HEAD", &url, &[], b"") else {
                break;
            };
            let size = match head.status {
                404 => 0,
                _ => head.header("Content-Length").and_then(|v| v.parse().ok()).unwrap_or(0),
            };
            headers.push(format!("Upload-Offset: {size}"));
        }
        let body = record(lane, seq, record_len(lane, seq));
        match client.request("PUT", &url, &headers, &body).map(|r| r.status) {
            Some(200) => ledger.acked.push(seq),
            Some(409) if offsets => continue,
            Some(status) => round.problem(format!("append {lane}:{seq} to {file} answered {status}")),
            None => {
                ledger.in_flight = Some(seq);
                break;
            }
        }
        seq += 1;
    }
    ledger
}

/// Uploads new versions of `file` until stopped; returns the last acknowledged one and the one
/// in flight.
fn post_lane(round: &Round, addr: SocketAddr, lane: usize, file: &str) -> Ledger {
    let mut client = Client::new(addr);
    let mut ledger = Ledger::default();
    let url = format!("/file/{}/{file}", round.dir);
    for seq in 0.. {
        if round.stopped() {
            break;
        }
        let len = [32, 5000, 70_000, 2 << 20][seq % 4];
        match client
            .request("POST", &url, &[WANT_DIGESTS.to_string()], &record(lane, seq, len))
            .map(|r| r.status)
        {
            Some(200) => ledger.acked = vec![seq],
            Some(status) => round.problem(format!("POST {lane}:{seq} answered {status}")),
            None => {
                ledger.in_flight = Some(seq);
                break;
            }
        }
    }
    ledger
}

/// Moves `cur` to `old-N` again and again while other lanes append to `cur`.
fn move_lane(round: &Round, addr: SocketAddr) {
    let mut client = Client::new(addr);
    for n in 0.. {
        if round.stopped() {
            return;
        }
        let target = format!("{{\"path\": \"{}/moves/old-{n}\"}}", round.dir);
        let url = format!("/file/{}/moves/cur/mv", round.dir);
        match client.request(
            "PUT",
            &url,
            &["Content-Type: application/json".into()],
            target.as_bytes(),
        ) {
            Some(r) if r.status == 200 || r.status == 404 => {}
            Some(r) => round.problem(format!("move answered {}", r.status)),
            None => return,
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Creates directories of five files and deletes them; returns, per directory, whether its
/// delete was acknowledged (`Some(true)`), in flight (`None`) or never sent (`Some(false)`).
fn delete_lane(round: &Round, addr: SocketAddr, lane: usize) -> Vec<Option<bool>> {
    let mut client = Client::new(addr);
    let mut dirs = Vec::new();
    'dirs: for n in 0.. {
        if round.stopped() {
            break;
        }
        dirs.push(Some(false));
        for i in 0..5 {
            let url = format!("/file/{}/del/d{n}/f{i}", round.dir);
            if client
                .request("POST", &url, &[], &record(lane, n * 5 + i, 20_000))
                .map(|r| r.status)
                != Some(200)
            {
                dirs.pop();
                break 'dirs;
            }
        }
        match client
            .request("DELETE", &format!("/file/{}/del/d{n}", round.dir), &[], b"")
            .map(|r| r.status)
        {
            Some(200) => dirs[n] = Some(true),
            Some(status) => round.problem(format!("DELETE d{n} answered {status}")),
            None => {
                dirs[n] = None;
                break;
            }
        }
    }
    dirs
}

/// Reads the appended files while they are written; every read must be whole records.
fn reader_lane(round: &Round, addr: SocketAddr, files: &[&str]) {
    let mut client = Client::new(addr);
    for n in 0.. {
        if round.stopped() {
            return;
        }
        let url = format!("/file/{}/{}", round.dir, files[n % files.len()]);
        match client.request("GET", &url, &[], b"") {
            Some(r) if r.status == 200 => {
                if let Err(e) = parse_records(&r.body) {
                    round.problem(format!("a reader of {url} saw a partial write: {e}"));
                }
            }
            Some(r) if r.status == 404 => {}
            Some(r) => round.problem(format!("GET {url} answered {}", r.status)),
            None => return,
        }
    }
}

/// Lanes of a round: 0–3 append to two files (two lanes each, 1 and 3 with offsets), 4 uploads,
/// 5 appends to a file that lane 6 keeps moving, 7 creates and deletes directories.
fn crash_round(s: &mut Server, round_no: usize, seed: u64) -> Result<(), String> {
    let stop = AtomicBool::new(false);
    let problems = Mutex::new(Vec::new());
    let round_dir = format!("r{round_no}");
    let round = Round {
        stop: &stop,
        problems: &problems,
        dir: round_dir.clone(),
    };
    let addr = s.addr();
    let kill_after = Duration::from_millis(150 + seed % 1200);
    let (appends, post, moved, deletes) = thread::scope(|scope| {
        let r = &round;
        let appends: Vec<_> = (0..4)
            .map(|lane| scope.spawn(move || append_lane(r, addr, lane, &format!("log{}", lane / 2), lane % 2 == 1)))
            .collect();
        let post = scope.spawn(move || post_lane(r, addr, 4, "upload"));
        let moved = scope.spawn(move || append_lane(r, addr, 5, "moves/cur", false));
        scope.spawn(move || move_lane(r, addr));
        let deletes = scope.spawn(move || delete_lane(r, addr, 7));
        scope.spawn(move || reader_lane(r, addr, &["log0", "log1"]));
        thread::sleep(kill_after);
        s.signal(libc::SIGKILL);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(1) && !appends.iter().all(|h| h.is_finished()) {
            thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
        let join = |h: thread::ScopedJoinHandle<'_, Ledger>| h.join().unwrap_or_default();
        (
            appends.into_iter().map(join).collect::<Vec<_>>(),
            join(post),
            join(moved),
            deletes.join().unwrap_or_default(),
        )
    });
    s.restart();
    let dir = s.root().join(&round.dir);
    drop(round);
    let mut problems = problems.into_inner().unwrap_or_default();
    let mut check = |result: Result<(), String>| {
        if let Err(e) = result {
            problems.push(e);
        }
    };
    for file in 0..2 {
        let bytes = fs::read(dir.join(format!("log{file}"))).unwrap_or_default();
        match parse_records(&bytes) {
            Ok(found) => {
                for lane in [file * 2, file * 2 + 1] {
                    let mine: Vec<usize> = found.iter().filter(|(l, _)| *l == lane).map(|(_, s)| *s).collect();
                    check(check_ledger(&format!("log{file}"), lane, &appends[lane], &mine));
                }
            }
            Err(e) => check(Err(format!("log{file}: {e}"))),
        }
    }
    check(check_upload(&dir.join("upload"), &post));

    let mut moved_records = Vec::new();
    for entry in fs::read_dir(dir.join("moves")).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(JOURNAL_PREFIX) {
            continue;
        }
        match parse_records(&fs::read(entry.path()).unwrap_or_default()) {
            Ok(found) => moved_records.extend(found.into_iter().map(|(_, s)| s)),
            Err(e) => check(Err(format!("moves/{name}: {e}"))),
        }
    }
    check(check_ledger("moves/*", 5, &moved, &moved_records));
    let mut digested = vec![
        format!("{}/log0", round_dir),
        format!("{}/log1", round_dir),
        format!("{}/upload", round_dir),
    ];
    for entry in fs::read_dir(dir.join("moves")).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(RESERVED_PREFIX) {
            digested.push(format!("{round_dir}/moves/{name}"));
        }
    }
    check(check_kept_digests(s.addr(), &digested).map(drop));
    for (n, deleted) in deletes.iter().enumerate() {
        let files = fs::read_dir(dir.join(format!("del/d{n}"))).map_or(0, |d| d.count());
        match deleted {
            Some(true) if files > 0 => check(Err(format!("del/d{n}: acknowledged delete left {files} files"))),
            None if files != 0 && files != 5 => check(Err(format!("del/d{n}: interrupted delete left {files} of 5"))),
            _ => {}
        }
    }
    let leftovers = internal_files(&s.root());
    if !leftovers.is_empty() {
        check(Err(format!("internal files left after the restart: {leftovers:?}")));
    }
    eprintln!(
        "round {round_no}: killed after {kill_after:?}; acknowledged appends {:?}, upload {:?}, moved-file appends {}, deletes {}",
        appends.iter().map(|l| l.acked.len()).collect::<Vec<_>>(),
        post.acked,
        moved.acked.len(),
        deletes.len()
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// Asks every file for its kept digests: `Want-Repr-Digest` on every write of the rounds.
const WANT_DIGESTS: &str = "Want-Repr-Digest: sha-256=1, crc32c=1";

/// Every one of `files` that answers a `Repr-Digest` (the digests kept at its last commit)
/// answers the digests of the bytes it serves: a crash may leave a file without one, never with
/// a wrong one. Returns how many answered one.
fn check_kept_digests(addr: SocketAddr, files: &[String]) -> Result<usize, String> {
    let mut client = Client::new(addr);
    let mut answered = 0;
    for file in files {
        let Some(r) = client.request("GET", &format!("/file/{file}"), &[WANT_DIGESTS.to_string()], b"") else {
            return Err(format!("{file}: no answer after the restart"));
        };
        if r.status == 404 {
            continue;
        }
        let Some(got) = r.header("repr-digest") else { continue };
        let crc = format!("crc32c=:{}:", b64(&crc32c::crc32c(&r.body).to_be_bytes()));
        let sha = format!(
            "sha-256=:{}:",
            b64(&sha2::Digest::finalize(sha2::Digest::chain_update(
                sha2::Sha256::default(),
                &r.body
            )))
        );
        let right = got == crc || got == format!("{sha}, {crc}");
        if !right {
            return Err(format!(
                "{file} ({} bytes): kept digest {got} disagrees with its data ({sha}, {crc})",
                r.body.len()
            ));
        }
        answered += 1;
    }
    Ok(answered)
}

/// The uploaded file is absent (nothing acknowledged) or exactly the last acknowledged or the
/// in-flight version.
fn check_upload(path: &Path, ledger: &Ledger) -> Result<(), String> {
    let Ok(bytes) = fs::read(path) else {
        return if ledger.acked.is_empty() {
            Ok(())
        } else {
            Err("upload: acknowledged file missing".into())
        };
    };
    let found = parse_records(&bytes).map_err(|e| format!("upload: {e}"))?;
    let allowed: Vec<usize> = ledger.acked.iter().copied().chain(ledger.in_flight).collect();
    match found[..] {
        [(4, seq)] if allowed.contains(&seq) => Ok(()),
        _ => Err(format!("upload holds {found:?}, expected one of {allowed:?}")),
    }
}

/// Every `.http-nas-*` entry anywhere under `root`, but record slots: they stay beside files
/// appended to (idle between batches; the sweep settles any that a dead batch left armed,
/// which the content checks see).
fn internal_files(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(RESERVED_PREFIX) && !name.starts_with(JOURNAL_PREFIX) {
                found.push(entry.path().display().to_string());
            } else if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    found
}

/// Runs the rounds on `root`, fsync alternating on and off.
fn crash_rounds_on(root: &Path, what: &str) {
    let base = crash_seed();
    eprintln!("{what}: kill moments from seed {base} (HTTP_NAS_CRASH_SEED={base} repeats them)");
    let mut failures = Vec::new();
    for round in 0..rounds() {
        let fsync = if round % 2 == 0 { "false" } else { "true" };
        let mut s = Server::start_on(root, &["--fsync", fsync, "--workers", "12"]);
        let seed = (base ^ (round as u64 + 1)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
        if let Err(e) = crash_round(&mut s, round, seed) {
            failures.push(format!("{what}, round {round}:\n{e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} round(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn kill9_at_random_moments_on_plain_disk_loses_nothing_acknowledged() {
    let home = TempDir::new();
    let root = home.path().join("root");
    fs::create_dir(&root).expect("create root");
    crash_rounds_on(&root, "plain disk");
}

#[test]
fn kill9_at_random_moments_on_a_throttled_disk_loses_nothing_acknowledged() {
    match Mounted::throttled_disk() {
        Ok(disk) => crash_rounds_on(&disk.root(), "throttled disk"),
        Err(reason) => skip(&reason),
    }
}

/// Appends (two clients, large and small bodies) and uploads of files whose sha-256 state and
/// crc32c are kept, killed at random moments, round after round on one root: after each
/// restart every kept digest agrees with the file's bytes (or is absent), and the files keep
/// getting digests (the check is not vacuous).
#[test]
fn kill9_during_commits_never_leaves_a_kept_digest_that_disagrees_with_the_data() {
    let home = TempDir::new();
    let root = home.path().join("root");
    fs::create_dir(&root).expect("create root");
    let base = crash_seed();
    eprintln!("kill moments from seed {base} (HTTP_NAS_CRASH_SEED={base} repeats them)");
    let mut answered = 0;
    for round_no in 0..rounds() * 2 {
        let fsync = if round_no % 2 == 0 { "false" } else { "true" };
        let mut s = Server::start_on(&root, &["--fsync", fsync]);
        let stop = AtomicBool::new(false);
        let problems = Mutex::new(Vec::new());
        // The same files every round: digests kept before a crash must hold after it.
        let round = Round {
            stop: &stop,
            problems: &problems,
            dir: "d".into(),
        };
        let addr = s.addr();
        let seed = (base ^ (round_no as u64 + 1)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
        thread::scope(|scope| {
            let r = &round;
            scope.spawn(move || append_lane(r, addr, 0, "log", false));
            scope.spawn(move || append_lane(r, addr, 1, "log", false));
            scope.spawn(move || post_lane(r, addr, 4, "upload"));
            thread::sleep(Duration::from_millis(100 + seed % 700));
            s.signal(libc::SIGKILL);
            thread::sleep(Duration::from_millis(200));
            stop.store(true, Ordering::Relaxed);
        });
        s.restart();
        let files = ["d/log".to_string(), "d/upload".to_string()];
        match check_kept_digests(s.addr(), &files) {
            Ok(n) => answered += n,
            Err(e) => panic!("round {round_no}: {e}"),
        }
        // The next round appends to what this one left: a file left without a kept digest
        // gets one again when it is replaced.
        if round_no % 3 == 2 {
            let _ = fs::remove_file(root.join("d/log"));
        }
    }
    eprintln!("{answered} kept digests checked after restarts");
    assert!(
        answered > 0,
        "no file kept a digest across the rounds: the check proved nothing"
    );
}

/// Restarts of the sweeping replica per run: `HTTP_NAS_RESTART_ROUNDS`, else 150.
fn restart_rounds() -> usize {
    std::env::var("HTTP_NAS_RESTART_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150)
}

#[test]
fn a_replica_restarting_in_a_loop_never_undoes_another_replicas_appends() {
    // Replica A appends 256 KiB records (larger than what is held in memory, so they go
    // through a temp file and the commit takes longest) to three files; replica B starts again
    // and again on the same root, and every start sweeps it while A's commits are in flight.
    const RECORD: usize = 256 << 10;
    let home = TempDir::new();
    let root = home.path().join("root");
    fs::create_dir(&root).expect("create root");
    let a = Server::start_on(&root, &["--fsync", "true"]);
    let mut b = Server::start_on(&root, &[]);
    let stop = AtomicBool::new(false);
    let round = Round {
        stop: &stop,
        problems: &Mutex::new(Vec::new()),
        dir: "shared".into(),
    };
    let ledgers = thread::scope(|scope| {
        let lanes: Vec<_> = (0..3)
            .map(|lane| {
                let (round, addr) = (&round, a.addr());
                scope.spawn(move || {
                    let mut client = Client::new(addr);
                    let mut ledger = Ledger::default();
                    for seq in 0.. {
                        if round.stopped() {
                            break;
                        }
                        let url = format!("/file/shared/f{lane}");
                        match client
                            .request("PUT", &url, &[], &record(lane, seq, RECORD))
                            .map(|r| r.status)
                        {
                            Some(200) => ledger.acked.push(seq),
                            other => round.problem(format!("append {lane}:{seq} answered {other:?}")),
                        }
                    }
                    ledger
                })
            })
            .collect();
        for _ in 0..restart_rounds() {
            b.restart();
        }
        stop.store(true, Ordering::Relaxed);
        lanes
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect::<Vec<_>>()
    });
    let problems = round.problems.lock().map(|p| p.clone()).unwrap_or_default();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for (lane, ledger) in ledgers.iter().enumerate() {
        let bytes = fs::read(root.join(format!("shared/f{lane}"))).unwrap_or_default();
        let found = parse_records(&bytes).unwrap_or_else(|e| panic!("f{lane}: {e}"));
        let seqs: Vec<usize> = found.iter().map(|(_, s)| *s).collect();
        check_ledger(&format!("f{lane}"), lane, ledger, &seqs).unwrap_or_else(|e| panic!("{e}"));
        assert!(!ledger.acked.is_empty(), "lane {lane} appended nothing");
    }
    eprintln!(
        "{} restarts of the other replica during {:?} acknowledged appends",
        restart_rounds(),
        ledgers.iter().map(|l| l.acked.len()).collect::<Vec<_>>()
    );
}

/// `kill -9` while a concatenation gathers its sources (on the throttled disk, so the copy is
/// slow and the kill lands inside it), at a moment from the seed: after a restart the target is
/// exactly its last committed version (the old one, or the whole concatenation if its commit
/// came first), never part of one, and the sweep has removed the temp file.
#[test]
fn kill9_during_a_concatenation_leaves_the_target_as_before() {
    let disk = match Mounted::throttled_disk() {
        Ok(disk) => disk,
        Err(reason) => return skip(&reason),
    };
    let root = disk.root();
    let mut whole = Vec::new();
    for i in 0..4 {
        let part = random_bytes(8 << 20, i);
        fs::write(root.join(format!("part-{i}")), &part).expect("write a part");
        whole.extend(part);
    }
    let body = br#"{"sources": ["part-0", "part-1", "part-2", "part-3"]}"#;
    let base = crash_seed();
    eprintln!("concatenation kills from seed {base} (HTTP_NAS_CRASH_SEED={base} repeats them)");
    let mut s = Server::start_on(&root, &[]);
    let (mut cut, mut finished) = (0, 0);
    for round in 0..rounds().max(4) {
        let old = format!("old target {round}\n");
        s.post("/file/t", &old).assert_status(200);
        let mut conn = s.connect();
        let head = format!(
            "POST /file/t/concat HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        conn.send(head.as_bytes()).send(body);
        // Until the gathering shows (its temp file) or the target changed, then the seed's delay.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10)
            && internal_files(&root).is_empty()
            && fs::read(root.join("t")).is_ok_and(|t| t == old.as_bytes())
        {
            thread::sleep(Duration::from_millis(2));
        }
        let seed = (base ^ (round as u64 + 1)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
        thread::sleep(Duration::from_millis(seed % 300));
        s.signal(libc::SIGKILL);
        drop(conn);
        s.restart();
        let got = fs::read(root.join("t")).expect("read the target");
        if got == old.as_bytes() {
            cut += 1;
        } else if got == whole {
            finished += 1;
        } else {
            panic!(
                "round {round}: the target is {} bytes, neither its old version nor the whole concatenation",
                got.len()
            );
        }
        s.expect_no_temp_files();
    }
    eprintln!("concatenations cut by kill -9: {cut}, finished before it: {finished}");
    // Left alone, the same concatenation completes.
    s.send("POST", "/file/t/concat", body, &[]).assert_status(200);
    assert!(
        fs::read(root.join("t")).is_ok_and(|t| t == whole),
        "the concatenation is not whole"
    );
}
