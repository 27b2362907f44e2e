//! Several replicas of the real binary on one real distributed filesystem: the write protocol
//! promises hold across machines only if they hold on a filesystem that is really shared.
//!
//! `make test-replicas` (`.ci/test-replicas`) runs them twice: on a GlusterFS volume on loopback
//! (`.ci/gluster`) and on a JuiceFS volume on loopback (`.ci/juicefs`), each under the strict
//! profile and mounted three times (each mount stands for one pod's view of the ReadWriteMany
//! volume), with `HTTP_NAS_REPLICA_MOUNTS` naming the mounts and `HTTP_NAS_REPLICA_FS` the
//! filesystem (`glusterfs` or `juicefs`). Each test gets a fresh directory of the volume as every
//! replica's storage root, one replica per mount. Without the variable (a plain `make test`)
//! each test prints why it skipped.
//!
//! Appended records name their writer and sequence number and end in `\n`, so a file can be
//! checked record by record: every acknowledged record is there exactly once and whole, and no
//! record is ever torn or interleaved with another.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::raw::Conn;
use crate::support::{JOURNAL_PREFIX, RESERVED_PREFIX, Response, SETTLE_TIMEOUT, Server, skip, wait_until};

/// The mounts of the test volume, if `make test-replicas` set them up.
fn mounts() -> Option<Vec<PathBuf>> {
    let Some(list) = std::env::var_os("HTTP_NAS_REPLICA_MOUNTS").filter(|v| !v.is_empty()) else {
        skip("no shared volume (run `make test-replicas`, which sets up GlusterFS and JuiceFS)");
        return None;
    };
    Some(std::env::split_paths(&list).collect())
}

/// The start-up log line each replica writes about the volume under test: the one for its
/// filesystem, named by `HTTP_NAS_REPLICA_FS` (GlusterFS when unset).
fn volume_log_line() -> &'static str {
    match std::env::var("HTTP_NAS_REPLICA_FS").as_deref() {
        Ok("juicefs") => "storage is on JuiceFS",
        _ => "storage is on GlusterFS",
    }
}

static NEXT_ROOT: AtomicUsize = AtomicUsize::new(0);

/// `n` replicas, each on its own mount of one fresh directory of the volume.
struct Replicas {
    servers: Vec<Server>,
    roots: Vec<PathBuf>,
}

impl Replicas {
    fn start(n: usize, args: &[&str]) -> Option<Replicas> {
        let mounts = mounts()?;
        assert!(mounts.len() >= n, "need {n} mounts, have {mounts:?}");
        let name = format!(
            "t-{}-{}-{}",
            std::process::id(),
            NEXT_ROOT.fetch_add(1, Ordering::Relaxed),
            Instant::now().elapsed().as_nanos()
        );
        fs::create_dir(mounts[0].join(&name)).expect("create a root on the volume");
        let roots: Vec<PathBuf> = mounts[..n].iter().map(|m| m.join(&name)).collect();
        for root in &roots {
            assert!(
                wait_until(SETTLE_TIMEOUT, || root.is_dir()),
                "{} not visible",
                root.display()
            );
        }
        let servers = roots.iter().map(|root| Server::start_on(root, args)).collect();
        Some(Replicas { servers, roots })
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        self.servers.clear();
        let _ = fs::remove_dir_all(&self.roots[0]);
    }
}

/// One appended record: writer, sequence number, filler; `\n` only at its end.
fn record(writer: &str, seq: usize, len: usize) -> Vec<u8> {
    let mut out = format!("{writer}:{seq:06}:").into_bytes();
    while out.len() + 1 < len {
        out.push(b'a' + (out.len() % 26) as u8);
    }
    out.push(b'\n');
    out
}

/// Starts a `method` of `path` on `server` whose client sends `sent` of its `len` body bytes
/// and then stalls (the connection stays open until the returned value is dropped).
fn stalled(server: &Server, method: &str, path: &str, len: usize, sent: usize) -> Conn {
    let mut conn = server.connect();
    let head = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n");
    conn.send(head.as_bytes()).send(&vec![b'z'; sent]);
    conn
}

/// Appends `body` over `conn` (kept alive); the response, or `None` if the connection broke.
fn append_on(conn: &mut Conn, path: &str, body: &[u8], extra: &str) -> Option<Response> {
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    );
    conn.send(head.as_bytes()).send(body);
    conn.try_response()
}

/// Checks `file` record by record: each line is a whole record, none twice, every one in
/// `acked` present. Returns how many records it holds.
#[track_caller]
fn check_records(file: &[u8], acked: &BTreeSet<Vec<u8>>) -> usize {
    assert!(
        file.is_empty() || file.ends_with(b"\n"),
        "the file ends in a torn record"
    );
    let mut seen = BTreeMap::new();
    let mut previous: &[u8] = b"";
    let mut offset = 0;
    for line in file.split_inclusive(|&b| b == b'\n') {
        let text = String::from_utf8_lossy(line);
        let mut parts = text.trim_end().splitn(3, ':');
        let (Some(_), Some(seq), Some(fill)) = (parts.next(), parts.next(), parts.next()) else {
            panic!("not a whole record at byte {offset}: {text:?}");
        };
        let whole = seq.len() == 6 && fill.bytes().all(|b| b.is_ascii_lowercase());
        assert!(
            whole,
            "torn or mixed at byte {offset} of {}: {text:?}, after {:?}",
            file.len(),
            String::from_utf8_lossy(previous)
        );
        previous = line;
        offset += line.len();
        *seen.entry(line.to_vec()).or_insert(0) += 1;
    }
    let twice: Vec<_> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(r, _)| String::from_utf8_lossy(r))
        .collect();
    assert!(
        twice.is_empty(),
        "{} records appended twice, e.g. {:?}",
        twice.len(),
        twice.first()
    );
    let lost: Vec<_> = acked
        .iter()
        .filter(|r| !seen.contains_key(*r))
        .map(|r| String::from_utf8_lossy(r))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged records lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    seen.len()
}

/// Appends records to `path` on `server` from `clients` connections until `stop`; returns the
/// acknowledged ones.
fn appender(server: &Server, writer: &str, path: &str, stop: &AtomicBool, limit: usize) -> BTreeSet<Vec<u8>> {
    let mut acked = BTreeSet::new();
    let mut conn = server.connect();
    for seq in 0..limit {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let body = record(writer, seq, 60 + seq % 40);
        match append_on(&mut conn, path, &body, "") {
            Some(r) if r.status == 200 => {
                acked.insert(body);
            }
            Some(r) => panic!("append on {writer} answered {}: {}", r.status, r.text()),
            None => conn = server.connect(),
        }
    }
    acked
}

// ---- appends through every replica ----

fn interleaved_appends(n: usize) {
    let Some(r) = Replicas::start(n, &[]) else { return };
    let stop = AtomicBool::new(false);
    let acked: BTreeSet<Vec<u8>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..n * 2)
            .map(|c| {
                let server = &r.servers[c % n];
                let stop = &stop;
                scope.spawn(move || appender(server, &format!("r{}c{c}", c % n), "/file/shared.log", stop, 40))
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let file = r.servers[0].get("/file/shared.log").assert_status(200).body.clone();
    assert_eq!(check_records(&file, &acked), acked.len(), "records nobody acknowledged");
    // Every replica serves the same bytes.
    for s in &r.servers[1..] {
        assert_eq!(s.get("/file/shared.log").body, file);
    }
}

#[test]
fn two_replicas_interleave_appends_whole_and_once() {
    interleaved_appends(2);
}

#[test]
fn three_replicas_interleave_appends_whole_and_once() {
    interleaved_appends(3);
}

#[test]
fn an_upload_offset_read_on_one_replica_holds_on_another() {
    let Some(r) = Replicas::start(2, &[]) else { return };
    let (a, b) = (&r.servers[0], &r.servers[1]);
    let first = a.append("/file/o.log", "abc\n");
    first.assert_status(200);
    assert_eq!(first.header("Upload-Offset"), Some("4"));
    b.send("PUT", "/file/o.log", b"def\n", &["Upload-Offset: 4"])
        .assert_status(200);
    let stale = b.send("PUT", "/file/o.log", b"xyz\n", &["Upload-Offset: 4"]);
    stale.assert_error(409);
    assert_eq!(stale.header("Upload-Offset"), Some("8"));
    a.get("/file/o.log").assert_ok_body("abc\ndef\n");
    assert_eq!(a.head("/file/o.log").header("Content-Length"), Some("8"));
}

#[test]
fn every_replica_gives_a_file_the_same_etag_and_honours_another_ones() {
    // A client may read a file's ETag from one replica and send If-Match to another.
    let Some(r) = Replicas::start(2, &[]) else { return };
    let (a, b) = (&r.servers[0], &r.servers[1]);
    for step in ["v1", "v2 longer", "v3 same.."] {
        a.post("/file/e.txt", step).assert_ok_json();
        let etag = a.head("/file/e.txt").header("ETag").map(str::to_owned);
        let on_b = b.head("/file/e.txt").header("ETag").map(str::to_owned);
        assert!(etag.is_some(), "no ETag after {step}");
        assert_eq!(etag, on_b, "replicas disagree on the ETag after {step}");
    }
    let etag = a.head("/file/e.txt").header("ETag").unwrap_or_default().to_owned();
    let if_match = format!("If-Match: {etag}");
    b.send("PUT", "/file/e.txt", b"+b\n", &[&if_match]).assert_status(200);
    // The append changed the file: the old ETag no longer matches on either replica.
    a.send("PUT", "/file/e.txt", b"+a\n", &[&if_match]).assert_error(412);
    b.send("PUT", "/file/e.txt", b"+a\n", &[&if_match]).assert_error(412);
    a.get("/file/e.txt").assert_ok_body("v3 same..+b\n");
}

#[test]
fn readers_on_one_replica_see_only_whole_appends_made_on_another() {
    let Some(r) = Replicas::start(2, &[]) else { return };
    let (a, b) = (&r.servers[0], &r.servers[1]);
    a.append("/file/read.log", record("seed", 0, 80)).assert_status(200);
    let stop = AtomicBool::new(false);
    thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let acked = appender(a, "w", "/file/read.log", &stop, 150);
            stop.store(true, Ordering::Relaxed);
            acked
        });
        let mut reads = 0;
        let mut last_len = 0;
        while !stop.load(Ordering::Relaxed) {
            let body = b.get("/file/read.log").assert_status(200).body.clone();
            check_records(&body, &BTreeSet::new());
            assert!(body.len() >= last_len, "a read went back in time");
            last_len = body.len();
            reads += 1;
        }
        let acked = writer.join().unwrap();
        eprintln!("{reads} reads on the other replica during {} appends", acked.len());
    });
}

// ---- crashes ----

#[test]
fn a_replica_killed_mid_append_loses_nothing_acknowledged_elsewhere() {
    let Some(mut r) = Replicas::start(2, &[]) else { return };
    let big: Vec<u8> = (0..40_000).flat_map(|i| record("big", i, 100)).collect();
    let stop = AtomicBool::new(false);
    let acked = thread::scope(|scope| {
        let (a, b) = r.servers.split_at_mut(1);
        let b = &b[0];
        let steady = scope.spawn(|| appender(b, "b", "/file/crash.log", &stop, 100_000));
        for round in 0..5u64 {
            let mut conn = a[0].connect();
            let head = format!(
                "PUT /file/crash.log HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
                big.len()
            );
            conn.send(head.as_bytes()).send(&big);
            thread::sleep(Duration::from_millis(20 + round * 60));
            a[0].restart();
        }
        stop.store(true, Ordering::Relaxed);
        steady.join().unwrap()
    });
    let file = r.servers[1].get("/file/crash.log").assert_status(200).body.clone();
    // The big append is the same body every round, so its records may repeat (a round that
    // finished before its kill); B's records are each there once.
    check_records_allowing(&file, &acked, b"big:");
    // The killed appends are each whole or absent: "big" records come in runs of 40,000.
    let big_lines = file.split(|&b| b == b'\n').filter(|l| l.starts_with(b"big:")).count();
    assert_eq!(big_lines % 40_000, 0, "a killed append left part of itself");
}

#[test]
fn a_replica_restarted_again_and_again_loses_nothing_acknowledged() {
    let Some(mut r) = Replicas::start(3, &[]) else { return };
    let stop = AtomicBool::new(false);
    let acked = Mutex::new(BTreeSet::new());
    thread::scope(|scope| {
        let (a, rest) = r.servers.split_at_mut(1);
        for (i, s) in rest.iter().enumerate() {
            let (stop, acked) = (&stop, &acked);
            scope.spawn(move || {
                let got = appender(s, &format!("s{i}"), "/file/restart.log", stop, 100_000);
                acked.lock().unwrap().extend(got);
            });
        }
        for _ in 0..20 {
            a[0].restart();
            // The restarted replica appends too, between its restarts.
            let mut conn = a[0].connect();
            if let Some(resp) = append_on(&mut conn, "/file/restart.log", &record("again", 0, 50), "") {
                assert!(resp.status == 200, "{}", resp.text());
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let acked = acked.into_inner().unwrap();
    let file = r.servers[1].get("/file/restart.log").assert_status(200).body.clone();
    let _ = check_records_allowing(&file, &acked, b"again:");
}

/// [`check_records`], but records starting with `repeated` may appear more than once (the same
/// record sent by design on every round).
fn check_records_allowing(file: &[u8], acked: &BTreeSet<Vec<u8>>, repeated: &[u8]) -> usize {
    let others: Vec<u8> = file
        .split_inclusive(|&b| b == b'\n')
        .filter(|l| !l.starts_with(repeated))
        .flatten()
        .copied()
        .collect();
    assert!(
        file.is_empty() || file.ends_with(b"\n"),
        "the file ends in a torn record"
    );
    check_records(&others, acked)
}

// ---- no replica waits on another's client ----

#[test]
fn an_append_on_one_replica_never_waits_for_a_slow_client_of_another() {
    let Some(r) = Replicas::start(2, &[]) else { return };
    let (a, b) = (&r.servers[0], &r.servers[1]);
    a.append("/file/slow.log", "first\n").assert_status(200);
    // A's client sends half its body and stalls.
    let stalled = stalled(a, "PUT", "/file/slow.log", 2_000_000, 1_000_000);
    thread::sleep(Duration::from_millis(300));
    // Bounded by curl's --max-time in the harness: a wait for A's client would exceed it.
    b.append("/file/slow.log", "second\n").assert_status(200);
    drop(stalled);
    let settled = wait_until(SETTLE_TIMEOUT, || a.get("/file/slow.log").body == b"first\nsecond\n");
    assert!(settled, "{:?}", a.get("/file/slow.log").text());
}

// ---- what one replica does, every replica shows ----

#[test]
fn uploads_moves_and_deletes_are_visible_on_every_replica() {
    let Some(r) = Replicas::start(3, &[]) else { return };
    let (a, b, c) = (&r.servers[0], &r.servers[1], &r.servers[2]);
    // Each replica said at start what it runs on, and what that needs.
    assert!(a.log().contains(volume_log_line()), "{}", a.log());
    a.post("/file/dir/report.csv", "v1\n").assert_status(200);
    b.get("/file/dir/report.csv").assert_ok_body("v1\n");
    c.post("/file/dir/report.csv", "v2\n").assert_status(200);
    a.get("/file/dir/report.csv").assert_ok_body("v2\n");
    b.put_json("/file/dir/report.csv/mv", r#"{"path":"published/report.csv"}"#)
        .assert_status(200);
    assert_eq!(a.get("/file/dir/report.csv").status, 404);
    c.get("/file/published/report.csv").assert_ok_body("v2\n");
    a.get("/file/published").assert_ok_body("report.csv\n");
    a.delete("/file/published").assert_status(200);
    assert_eq!(b.get("/file/published/report.csv").status, 404);
    assert_eq!(c.get("/file/published").status, 404);
}

#[test]
fn no_replica_ever_lists_another_ones_internal_files() {
    let Some(r) = Replicas::start(2, &[]) else { return };
    let (a, b) = (&r.servers[0], &r.servers[1]);
    a.append("/file/busy.log", "x\n").assert_status(200);
    // In flight on A: a large upload and a large append, each stalled mid-body (temp files and,
    // for the append, its spool).
    let upload = stalled(a, "POST", "/file/big.bin", 4_000_000, 500_000);
    let append = stalled(a, "PUT", "/file/busy.log", 4_000_000, 500_000);
    let leftovers = || -> Vec<String> {
        fs::read_dir(&r.roots[1])
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    // On JuiceFS every replica keeps its presence file there while it runs; an
                    // appended file keeps its crash record slot beside it, and on a volume
                    // without extended attributes (JuiceFS without --enable-xattr) a file's
                    // kept digests are a record beside it too.
                    .filter(|n| {
                        n.starts_with(RESERVED_PREFIX)
                            && n != ".http-nas-replicas"
                            && !n.starts_with(JOURNAL_PREFIX)
                            && !n.starts_with(".http-nas-digest-")
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let internal = || leftovers().len();
    assert!(
        wait_until(SETTLE_TIMEOUT, || internal() >= 2),
        "A's temp files never showed on the volume"
    );
    for _ in 0..20 {
        let plain = b.get("/file/").assert_status(200).text();
        assert!(!plain.contains(RESERVED_PREFIX), "listed: {plain}");
        let json = b
            .get_with("/file/", &["Accept: application/json"])
            .assert_status(200)
            .text();
        assert!(!json.contains(RESERVED_PREFIX), "listed: {json}");
        assert_eq!(b.get("/file/busy.log").body, b"x\n", "half an append showed");
    }
    drop((upload, append));
    assert!(
        wait_until(SETTLE_TIMEOUT, || internal() == 0),
        "temp files left after the clients left: {:?}",
        leftovers()
    );
}

// ---- a volume whose client caches make several replicas unsafe ----

/// Two mounts of the JuiceFS volume with JuiceFS's default client caches (1 s attribute and
/// entry caches), if `make test-replicas` set them up (its JuiceFS run does).
fn caching_mounts() -> Option<Vec<PathBuf>> {
    let Some(list) = std::env::var_os("HTTP_NAS_REPLICA_CACHING_MOUNTS").filter(|v| !v.is_empty()) else {
        skip("no JuiceFS mounts with client caches (the JuiceFS run of `make test-replicas` sets them up)");
        return None;
    };
    Some(std::env::split_paths(&list).collect())
}

#[test]
fn juicefs_with_client_caches_keeps_replicas_unready_while_another_is_live() {
    let Some(mounts) = caching_mounts() else { return };
    let name = format!("c-{}-{}", std::process::id(), NEXT_ROOT.fetch_add(1, Ordering::Relaxed));
    fs::create_dir(mounts[0].join(&name)).expect("create a root on the volume");
    let roots: Vec<PathBuf> = mounts[..2].iter().map(|m| m.join(&name)).collect();
    assert!(wait_until(SETTLE_TIMEOUT, || roots[1].is_dir()), "root not visible");
    let ready = |s: &Server| s.get("/readyz").status == 200;
    // Alone, a replica is safe with any options: ready, and its log says what several need.
    let a = Server::start_on(&roots[0], &[]);
    let log = a.log();
    assert!(log.contains("storage is on JuiceFS"), "{log}");
    assert!(log.contains("attr-cache=1s"), "the cache in use is not named: {log}");
    assert!(
        log.contains("--attr-cache=0 --entry-cache=0 --dir-entry-cache=0 --open-cache=0"),
        "{log}"
    );
    assert!(log.contains("one replica is safe with any options"), "{log}");
    assert!(wait_until(SETTLE_TIMEOUT, || ready(&a)), "a lone replica is not ready");
    // A second replica: neither takes traffic, and each says why.
    let b = Server::start_on(&roots[1], &[]);
    assert!(
        wait_until(SETTLE_TIMEOUT, || !ready(&a) && !ready(&b)),
        "two replicas on caching mounts went ready: a {}, b {}",
        a.get("/readyz").status,
        b.get("/readyz").status
    );
    let answer = a.get("/readyz");
    assert_eq!(answer.status, 503);
    let text = answer.text();
    assert!(text.contains("another replica is live"), "{text}");
    assert!(text.contains("--attr-cache=0"), "{text}");
    assert!(a.log().contains("not ready: "), "{}", a.log());
    // The other gone (killed: its lock goes with it), the one left is ready again.
    drop(b);
    assert!(
        wait_until(SETTLE_TIMEOUT, || ready(&a)),
        "a replica left alone stayed unready"
    );
    drop(a);
    let _ = fs::remove_dir_all(&roots[0]);
}

#[test]
fn juicefs_client_caches_are_seen_without_root_too() {
    let Some(mounts) = caching_mounts() else { return };
    let name = format!("u-{}-{}", std::process::id(), NEXT_ROOT.fetch_add(1, Ordering::Relaxed));
    let created = mounts[0].join(&name);
    fs::create_dir(&created).expect("create a root on the volume");
    // As the image runs: uid 65532, which cannot read the mount's root-only .config.
    let mut perms = fs::metadata(&created).expect("stat the root").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o777);
    fs::set_permissions(&created, perms).expect("open the root to uid 65532");
    let roots: Vec<PathBuf> = mounts[..2].iter().map(|m| m.join(&name)).collect();
    assert!(wait_until(SETTLE_TIMEOUT, || roots[1].is_dir()), "root not visible");
    let unprivileged: Vec<String> = ["setpriv", "--reuid", "65532", "--regid", "65532", "--clear-groups"]
        .map(String::from)
        .to_vec();
    let ready = |s: &Server| s.get("/readyz").status == 200;
    let a = Server::start_wrapped_on(&roots[0], &unprivileged, &[]);
    let log = a.log();
    assert!(log.contains("storage is on JuiceFS"), "{log}");
    assert!(
        log.contains("attr-cache on ("),
        "the cache was not seen from .stats: {log}"
    );
    assert!(wait_until(SETTLE_TIMEOUT, || ready(&a)), "a lone replica is not ready");
    let b = Server::start_wrapped_on(&roots[1], &unprivileged, &[]);
    assert!(
        wait_until(SETTLE_TIMEOUT, || !ready(&a) && !ready(&b)),
        "two unprivileged replicas on caching mounts went ready"
    );
    drop((a, b));
    let _ = fs::remove_dir_all(&created);
}

/// The `Repr-Digest` member `sha-256=:…:` of `data`, through `base64` (coreutils).
fn sha256_member(data: &[u8]) -> String {
    let digest = sha2::Digest::finalize(sha2::Digest::chain_update(sha2::Sha256::default(), data));
    let mut child = std::process::Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run base64");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), &digest).expect("feed base64");
    let out = child.wait_with_output().expect("base64 output");
    format!("sha-256=:{}:", String::from_utf8_lossy(&out.stdout).trim())
}

#[test]
fn a_digest_kept_by_one_replica_is_answered_and_extended_by_another() {
    let Some(r) = Replicas::start(2, &[]) else { return };
    let (a, b) = (&r.servers[0], &r.servers[1]);
    let first = b"first version of the file\n".repeat(3000);
    let claim = format!("Content-Digest: {}", sha256_member(&first));
    a.send("POST", "/file/dg/f", &first, &[&claim]).assert_ok_json();
    let asked = ["Want-Repr-Digest: sha-256=1"];
    let on_b = b.get_with("/file/dg/f", &asked);
    on_b.assert_ok_body(&first);
    assert_eq!(on_b.header("repr-digest"), Some(sha256_member(&first).as_str()));
    let more = b"appended on the other replica\n";
    let whole = [first.clone(), more.to_vec()].concat();
    let repr = format!("Repr-Digest: {}", sha256_member(&whole));
    b.send("PUT", "/file/dg/f", more, &[&repr]).assert_ok_json();
    let on_a = a.get_with("/file/dg/f", &asked);
    on_a.assert_ok_body(&whole);
    assert_eq!(on_a.header("repr-digest"), Some(sha256_member(&whole).as_str()));
    // Moved on one replica, still kept on the other.
    a.put_json("/file/dg/f", r#"{"path": "dg/g"}"#).assert_ok_json();
    let moved = b.get_with("/file/dg/g", &asked);
    assert_eq!(moved.header("repr-digest"), Some(sha256_member(&whole).as_str()));
}

/// A fresh directory of the JuiceFS volume, as it is on each of the strict mounts and the two
/// caching mounts (`(strict, caching)`), made open to every uid; `None` (having said why)
/// outside the JuiceFS run of `make test-replicas`.
fn juicefs_roots(tag: &str) -> Option<(Vec<PathBuf>, Vec<PathBuf>)> {
    let caching = caching_mounts()?;
    let strict = mounts()?;
    let name = format!(
        "{tag}-{}-{}",
        std::process::id(),
        NEXT_ROOT.fetch_add(1, Ordering::Relaxed)
    );
    let created = strict[0].join(&name);
    fs::create_dir(&created).expect("create a root on the volume");
    let mut perms = fs::metadata(&created).expect("stat the root").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o777);
    fs::set_permissions(&created, perms).expect("open the root to every uid");
    let on = |mounts: &[PathBuf]| -> Vec<PathBuf> { mounts.iter().map(|m| m.join(&name)).collect() };
    let (strict, caching) = (on(&strict), on(&caching));
    assert!(wait_until(SETTLE_TIMEOUT, || caching[1].is_dir()), "root not visible");
    Some((strict, caching))
}

/// True while `s` answers `/readyz` with 200.
fn ready(s: &Server) -> bool {
    s.get("/readyz").status == 200
}

/// The wrapper that runs a replica as uid 65532, as the image does.
fn unprivileged() -> Vec<String> {
    ["setpriv", "--reuid", "65532", "--regid", "65532", "--clear-groups"]
        .map(String::from)
        .to_vec()
}

/// Names of the presence files in `root`'s presence directory.
fn presence_files(root: &std::path::Path) -> Vec<String> {
    fs::read_dir(root.join(".http-nas-replicas"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".http-nas-replica-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Two replicas on the caching mounts of `caching`, once both refuse readiness.
fn two_unready(caching: &[PathBuf], wrapper: &[String]) -> (Server, Server) {
    let a = Server::start_wrapped_on(&caching[0], wrapper, &[]);
    let b = Server::start_wrapped_on(&caching[1], wrapper, &[]);
    assert!(
        wait_until(SETTLE_TIMEOUT, || !ready(&a) && !ready(&b)),
        "two replicas on caching mounts went ready: a {}, b {}\n{}\n{}",
        a.get("/readyz").text(),
        b.get("/readyz").text(),
        a.log(),
        b.log()
    );
    (a, b)
}

#[test]
fn juicefs_a_strict_replica_beside_a_caching_one_keeps_the_caching_one_unready() {
    let Some((strict, caching)) = juicefs_roots("s") else {
        return;
    };
    let s = Server::start_on(&strict[0], &[]);
    assert!(
        wait_until(SETTLE_TIMEOUT, || ready(&s)),
        "the strict replica is not ready"
    );
    let c = Server::start_on(&caching[0], &[]);
    assert!(
        wait_until(SETTLE_TIMEOUT, || !ready(&c)),
        "a caching replica beside a strict one went ready: {}",
        c.get("/readyz").text()
    );
    let text = c.get("/readyz").text();
    assert!(text.contains("another replica is live"), "{text}");
    // The strict one is safe beside anything: it stays ready.
    assert!(
        ready(&s),
        "the strict replica went unready: {}",
        s.get("/readyz").text()
    );
    drop(s);
    assert!(
        wait_until(SETTLE_TIMEOUT, || ready(&c)),
        "left alone, the caching replica stayed unready"
    );
    drop(c);
    let _ = fs::remove_dir_all(&strict[0]);
}

#[test]
fn juicefs_replicas_of_any_uid_register_beside_each_other() {
    let Some((strict, caching)) = juicefs_roots("p") else {
        return;
    };
    // A root replica makes the presence directory, open to every uid whatever its umask...
    let a = Server::start_on(&caching[0], &[]);
    assert!(wait_until(SETTLE_TIMEOUT, || ready(&a)), "a lone replica is not ready");
    let dir = fs::metadata(caching[0].join(".http-nas-replicas")).expect("presence directory");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&dir.permissions()) & 0o777,
        0o777
    );
    let files = presence_files(&caching[0]);
    assert_eq!(files.len(), 1, "{files:?}");
    let file = fs::metadata(caching[0].join(".http-nas-replicas").join(&files[0])).expect("presence file");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&file.permissions()) & 0o777,
        0o644
    );
    // ... so one of another uid registers beside it, and neither takes traffic.
    let b = Server::start_wrapped_on(&caching[1], &unprivileged(), &[]);
    assert!(
        wait_until(SETTLE_TIMEOUT, || !ready(&a) && !ready(&b)),
        "a root and an unprivileged replica on caching mounts went ready: a {}, b {}",
        a.get("/readyz").text(),
        b.get("/readyz").text()
    );
    drop((a, b));
    let _ = fs::remove_dir_all(&strict[0]);
}

#[test]
fn juicefs_a_caching_replica_that_cannot_register_stays_unready_and_says_why() {
    let Some((strict, caching)) = juicefs_roots("f") else {
        return;
    };
    // A presence directory only root may write (as an earlier version left it).
    let dir = strict[0].join(".http-nas-replicas");
    fs::create_dir(&dir).expect("mkdir");
    let mut perms = fs::metadata(&dir).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    fs::set_permissions(&dir, perms).expect("chmod");
    let a = Server::start_wrapped_on(&caching[0], &unprivileged(), &[]);
    let b = Server::start_wrapped_on(&caching[1], &unprivileged(), &[]);
    assert!(
        wait_until(SETTLE_TIMEOUT, || !ready(&a) && !ready(&b)),
        "replicas that could not register went ready: a {}, b {}",
        a.get("/readyz").text(),
        b.get("/readyz").text()
    );
    let text = a.get("/readyz").text();
    assert!(text.contains("could not register"), "{text}");
    assert!(!text.contains("another replica is live"), "not what was found: {text}");
    drop((a, b));
    let _ = fs::remove_dir_all(&strict[0]);
}

#[test]
fn juicefs_replicas_register_again_after_a_cleanup_removes_their_presence() {
    let Some((strict, caching)) = juicefs_roots("d") else {
        return;
    };
    let (a, b) = two_unready(&caching, &[]);
    // A cleanup of files on the volume: the presence files go.
    let removed = std::process::Command::new("find")
        .arg(&strict[0])
        .args(["-type", "f", "-delete"])
        .status()
        .expect("find");
    assert!(removed.success());
    assert!(
        wait_until(SETTLE_TIMEOUT, || presence_files(&strict[0]).len() == 2),
        "the replicas did not register again after their files were removed: {:?}",
        presence_files(&strict[0])
    );
    assert!(!ready(&a) && !ready(&b), "a replica went ready after the cleanup");
    // A cleanup of the directory itself.
    fs::remove_dir_all(strict[0].join(".http-nas-replicas")).expect("rm -rf");
    assert!(
        wait_until(SETTLE_TIMEOUT, || presence_files(&strict[0]).len() == 2),
        "the replicas did not register again after their directory was removed"
    );
    assert!(!ready(&a) && !ready(&b), "a replica went ready after the cleanup");
    assert!(a.log().contains("registered again"), "{}", a.log());
    drop((a, b));
    let _ = fs::remove_dir_all(&strict[0]);
}

#[test]
fn juicefs_a_symlink_at_the_presence_directory_does_not_turn_the_guard_off() {
    let Some((strict, caching)) = juicefs_roots("l") else {
        return;
    };
    std::os::unix::fs::symlink("/tmp", strict[0].join(".http-nas-replicas")).expect("plant a symlink");
    let (a, b) = two_unready(&caching, &[]);
    let planted = fs::symlink_metadata(strict[0].join(".http-nas-replicas")).expect("stat");
    assert!(planted.is_dir(), "the symlink is still there");
    // Planted again while they run: still no replica goes ready.
    fs::remove_dir_all(strict[0].join(".http-nas-replicas")).expect("rm -rf");
    std::os::unix::fs::symlink("/tmp", strict[0].join(".http-nas-replicas")).expect("plant a symlink");
    assert!(
        wait_until(SETTLE_TIMEOUT, || presence_files(&strict[0]).len() == 2),
        "the replicas did not register again past a planted symlink"
    );
    assert!(!ready(&a) && !ready(&b), "a replica went ready past a planted symlink");
    drop((a, b));
    let _ = fs::remove_dir_all(&strict[0]);
}

#[test]
fn juicefs_a_guarded_replica_refuses_writes_sent_to_it_directly() {
    let Some((strict, caching)) = juicefs_roots("w") else {
        return;
    };
    fs::write(strict[0].join("seen.txt"), "before\n").expect("write a file");
    let (a, b) = two_unready(&caching, &[]);
    let refused = |r: Response, what: &str| {
        assert_eq!(r.status, 503, "{what}: {}", r.text());
        assert!(r.header("Retry-After").is_some(), "{what}: no Retry-After");
        let text = r.text();
        assert!(text.contains("\"error\":\"unavailable\""), "{what}: {text}");
        assert!(text.contains("another replica is live"), "{what}: {text}");
    };
    refused(a.post("/file/new.txt", "x"), "POST");
    refused(a.append("/file/seen.txt", "more\n"), "append");
    refused(a.delete("/file/seen.txt"), "DELETE");
    refused(a.put_json("/file/seen.txt", r#"{"path": "moved.txt"}"#), "move");
    // Reads are still served.
    let read = b.get("/file/seen.txt");
    assert_eq!((read.status, read.body.as_slice()), (200, b"before\n".as_slice()));
    assert_eq!(fs::read(strict[0].join("seen.txt")).expect("read"), b"before\n");
    assert!(!strict[0].join("new.txt").exists());
    drop((a, b));
    let _ = fs::remove_dir_all(&strict[0]);
}

#[test]
fn juicefs_odd_entries_in_the_presence_directory_are_skipped_and_removed() {
    let Some((strict, caching)) = juicefs_roots("o") else {
        return;
    };
    let dir = strict[0].join(".http-nas-replicas");
    fs::create_dir(&dir).expect("mkdir");
    fs::create_dir(dir.join(".http-nas-replica-adir")).expect("a directory");
    let a = Server::start_on(&caching[0], &[]);
    // Planted while it runs (the start-up sweep would have taken it before).
    std::os::unix::fs::symlink("/etc/hostname", dir.join(".http-nas-replica-alink")).expect("a symlink");
    assert!(
        wait_until(SETTLE_TIMEOUT, || ready(&a)),
        "a lone replica beside odd entries is not ready: {}",
        a.get("/readyz").text()
    );
    assert!(
        wait_until(SETTLE_TIMEOUT, || !dir.join(".http-nas-replica-adir").exists()
            && fs::symlink_metadata(dir.join(".http-nas-replica-alink")).is_err()),
        "odd entries left"
    );
    // Each is logged just after its removal.
    assert!(
        wait_until(SETTLE_TIMEOUT, || {
            let log = a.log();
            log.contains("is a directory, not a presence file") && log.contains("is a symlink, not a presence file")
        }),
        "what was found is not named: {}",
        a.log()
    );
    drop(a);
    let _ = fs::remove_dir_all(&strict[0]);
}

#[test]
fn juicefs_a_subdirectory_bind_mount_says_its_options_cannot_be_checked() {
    let Some((strict, caching)) = juicefs_roots("b") else {
        return;
    };
    let bind = crate::support::TempDir::new();
    let point = bind.path().join("pv");
    fs::create_dir(&point).expect("mkdir");
    let mounted = std::process::Command::new("mount")
        .arg("--bind")
        .arg(&caching[0])
        .arg(&point)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        skip("cannot bind-mount here");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(point.clone());
    let a = Server::start_on(&point, &[]);
    let log = a.log();
    assert!(log.contains("cannot be checked from a subdirectory mount"), "{log}");
    assert!(log.contains("StorageClass's mountOptions"), "{log}");
    drop(a);
    drop(_unmount);
    let _ = fs::remove_dir_all(&strict[0]);
}

#[test]
fn juicefs_trash_at_the_mount_root_is_not_served() {
    let Some((strict, _)) = juicefs_roots("t") else { return };
    let mount = strict[0].parent().expect("mount").to_path_buf();
    let name = format!("trash-{}.txt", std::process::id());
    let s = Server::start_on(&mount, &[]);
    s.post(&format!("/file/{name}"), "secret").assert_status(200);
    s.delete(&format!("/file/{name}")).assert_status(200);
    let listing = s.get("/file/").assert_status(200).text();
    assert!(!listing.lines().any(|l| l == ".trash" || l == ".trash/"), "{listing}");
    let trash = s.get("/file/.trash/");
    assert_eq!(trash.status, 403, "{}", trash.text());
    let log = s.log();
    assert!(log.contains("--trash-days 0"), "{log}");
    drop(s);
    let _ = fs::remove_dir_all(&strict[0]);
}

#[test]
fn juicefs_a_replica_registering_slowly_is_never_taken_for_a_dead_one() {
    let Some((strict, caching)) = juicefs_roots("k") else {
        return;
    };
    let b = Server::start_on(&caching[1], &[]);
    assert!(wait_until(SETTLE_TIMEOUT, || ready(&b)), "a lone replica is not ready");
    // A replica whose every flock waits longer than the other's check interval: its presence
    // file exists, unlocked, while the other counts.
    let Some(slow) = crate::support::races::delayed("flock", Duration::from_millis(2500)) else {
        return;
    };
    let a = Server::start_wrapped_on(&caching[0], &slow, &[]);
    assert!(
        wait_until(Duration::from_secs(15), || !ready(&b)),
        "the replica counting took a registering one for dead and stayed ready: {:?}",
        presence_files(&strict[0])
    );
    drop((a, b));
    let _ = fs::remove_dir_all(&strict[0]);
}
