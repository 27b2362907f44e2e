//! Recovery: `kill -9` at chosen moments (mid-upload, mid-append, half-way through a directory
//! delete, during small appends on a throttled disk), then a restart on the same root; crash
//! records and the start-up sweep, including replicas starting while others write and records
//! planted by another writer. Acknowledged data survives, unacknowledged data leaves no trace,
//! and a starting replica never undoes or removes another's live work. A server that does not
//! journal or sweep keeps what a `kill -9` left behind, and fails here.
//!
//! Crashes are real `kill(2)` on the server process, then [`crate::support::Server::restart`].
//! Windows that need an unlucky schedule are made deterministic with `strace` delay injection
//! (`support::races`); without strace those tests say `skipped:`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::mounts::Mounted;
use crate::support::races::{
    self as races, FEW_FDS, VISIBLE_TIMEOUT, delayed, record, shared_root, start_request, wait_for_internal_file,
};
use crate::support::raw::Conn;
use crate::support::writes::{
    EXIT_TIMEOUT, ORIGINAL, PARTIAL_BODY_BYTES, TARGET, TARGET_URL, assert_untouched, start_raw_upload,
    wait_for_temp_file, with_target,
};
use crate::support::{
    RESERVED_PREFIX, Server, TempDir, assert_same_bytes, random_bytes, skip, strace_injecting, wait_until,
};

#[test]
fn post_killed_mid_upload_leaves_old_content_after_restart() {
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
fn append_killed_mid_body_is_rolled_back_at_restart() {
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

/// `wrapper` (from [`delayed`]) with the delay after the call instead of before it.
fn on_exit(wrapper: Vec<String>) -> Vec<String> {
    wrapper
        .into_iter()
        .map(|a| a.replace("delay_enter", "delay_exit"))
        .collect()
}

#[test]
fn a_starting_replicas_sweep_never_rolls_back_an_append_that_finished_meanwhile() {
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

#[test]
fn kill9_during_small_appends_on_a_throttled_disk_leaves_only_whole_records() {
    // Records of 33,000 bytes: a few pages, not page-aligned, so the dirty-page throttle can
    // put a writer to sleep inside one write(2), where a SIGKILL cuts it short.
    const RECORD: usize = 33_000;
    const LANES: usize = 6;
    const KILLS: usize = 4;
    let disk = match Mounted::throttled_disk() {
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

#[test]
fn an_interrupted_append_never_truncates_a_later_file_that_reuses_its_inode() {
    let Some(slow_sync) = delayed("fdatasync", Duration::from_secs(60)) else {
        return;
    };
    // A filesystem of its own reuses a freed inode number at once (where it cannot be had, a
    // temp dir still checks the rest).
    let disk = Mounted::plain_disk()
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

#[test]
fn a_dead_appenders_record_never_cuts_a_file_another_writer_made_on_its_reused_inode() {
    // The record of an append killed mid-commit stays when another writer (not the service)
    // removes the file and makes a new one, which a fresh ext4 gives the same inode number:
    // only the record's file identity (the birth time) tells that the record is not this
    // file's. Applied to it, the record would show the new file cut to the old length, and the
    // next append would cut it on disk.
    let Some(slow_sync) = delayed("fdatasync", Duration::from_secs(60)) else {
        return;
    };
    let disk = match Mounted::plain_disk() {
        Ok(disk) => disk,
        Err(e) => return skip(&format!("needs a filesystem of its own, to reuse an inode: {e}")),
    };
    let root = disk.root();
    fs::write(root.join("f"), ORIGINAL).unwrap();
    let b = Server::start_on(&root, &[]);
    let mut a = Server::start_wrapped_on(&root, &slow_sync, &["--fsync", "true"]);
    let body = random_bytes(1 << 20, 1507);
    let _conn = start_request(&a, "PUT", "/file/f", &[], &body, body.len());
    wait_for_internal_file(&root, "journal");
    a.signal(libc::SIGKILL);
    assert!(
        a.wait_exit(VISIBLE_TIMEOUT).is_some(),
        "the killed replica did not exit"
    );
    let old_ino = fs::metadata(root.join("f")).unwrap().ino();
    let version = random_bytes(43_000, 1508);
    let reused = (0..50).any(|_| {
        fs::remove_file(root.join("f")).unwrap();
        fs::write(root.join("f"), &version).unwrap();
        fs::metadata(root.join("f")).unwrap().ino() == old_ino
    });
    if !reused {
        return skip(&format!("the filesystem did not reuse inode {old_ino} in 50 creates"));
    }
    assert_same_bytes(
        &b.get("/file/f").body,
        &version,
        "a file another writer made on the dead appender's inode",
    );
    b.append("/file/f", b"tail\n").assert_ok_json();
    let mut expected = version.clone();
    expected.extend_from_slice(b"tail\n");
    assert_same_bytes(
        &fs::read(root.join("f")).unwrap(),
        &expected,
        "that file after an append",
    );
}

#[test]
fn a_starting_replica_never_deletes_a_live_uploads_temp_file() {
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
fn a_directory_delete_killed_half_way_leaves_all_or_nothing() {
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
fn a_starting_replica_never_removes_a_live_appends_crash_record() {
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
fn the_start_up_sweep_clears_leftovers_in_more_directories_than_it_has_descriptors() {
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
fn crash_records_planted_by_another_writer_are_never_followed_blocked_on_or_read_unbounded() {
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

#[test]
fn stale_temp_files_are_removed_on_start() {
    let s = Server::start_prepared(
        |root| {
            fs::create_dir(root.join("sub")).unwrap();
            fs::write(root.join(format!("{RESERVED_PREFIX}stale")), "partial").unwrap();
            fs::write(root.join(format!("sub/{RESERVED_PREFIX}stale")), "partial").unwrap();
            fs::write(root.join("sub/keep"), "kept").unwrap();
        },
        &[],
    );
    s.expect_no_temp_files();
    assert_eq!(s.read("sub/keep"), b"kept");
}

/// A starting replica's sweep locks and checks an orphan crash record, then its unlink is
/// stalled (strace delays it 5 s: a loaded node, a slow volume). Meanwhile another writer brings
/// the record's file in beside it (`mv` on the volume) and an append begins on it on replica A,
/// which must clear the stale record and write its own, live one under the same name. A clears
/// the stale record only under its lock (so it waits for the sweep's unlink), and the sweep's
/// delayed unlink removes only the record it checked. A is killed (`kill -9`) once its bytes are
/// written, before its commit: its record is there, so the next start rolls the append back
/// (the client never got a 2xx).
#[test]
fn a_stalled_sweep_never_unlinks_a_live_appends_crash_record() {
    let Some(slow_sync) = strace_injecting("fsync,fdatasync", "fsync,fdatasync:delay_enter=2000000") else {
        return;
    };
    let Some(slow_unlink) = strace_injecting("unlinkat", "unlinkat:delay_enter=5000000:when=2") else {
        return;
    };
    let home = TempDir::new();
    let root = home.path().join("root");
    fs::create_dir_all(root.join("d")).unwrap();
    fs::create_dir_all(root.join("d2")).unwrap();
    fs::write(root.join("d2/g"), b"base\n").unwrap();
    let mut a = Server::start_wrapped_on(&root, &slow_sync, &[]);
    // An orphan record in d for the inode of d2/g (a dead appender's, or planted).
    let ino = fs::metadata(root.join("d2/g")).unwrap().ino();
    let record = root.join("d").join(format!(".http-nas-journal-{ino}"));
    fs::write(&record, b"stale\n").unwrap();
    let record_ino = fs::metadata(&record).unwrap().ino();
    let root_b = root.clone();
    let b = thread::spawn(move || Server::start_wrapped_on(&root_b, &slow_unlink, &[]));
    // B's sweep has taken the orphan's lock and checked it: its unlink is on its way.
    assert!(
        wait_until(Duration::from_secs(10), || races::locked_in_proc(record_ino)),
        "replica B's sweep never locked the orphan record"
    );
    // Another writer of the volume brings the file in beside the record.
    fs::rename(root.join("d2/g"), root.join("d/g")).unwrap();
    let mut append = a.connect();
    append.send(b"PUT /file/d/g HTTP/1.1\r\nHost: t\r\nContent-Length: 12\r\n\r\nTORN-APPEND\n");
    // Wait for A's bytes to be written while its append is not committed, and B's unlink done
    // (its record gone, or B's sweep over: B listens). Not "until the record is gone": an append
    // that waited for B's sweep removes its own record only at its commit point.
    let started = Instant::now();
    let mut seen_live_record = false;
    let written = wait_until(Duration::from_secs(20), || {
        let record_there = record.exists();
        seen_live_record |= record_there && races::size_of(&root.join("d/g")) == 5;
        races::size_of(&root.join("d/g")) > 5 && (!record_there || b.is_finished())
    });
    let torn = written && !record.exists();
    eprintln!(
        "after {:?}: live record seen {seen_live_record}, bytes written without a record: {torn}",
        started.elapsed()
    );
    a.signal(libc::SIGKILL);
    let b = b.join().unwrap();
    drop(b);
    a.restart();
    let after = a.get("/file/d/g");
    assert!(
        after.status == 200 && after.body == b"base\n",
        "after the crash the unanswered append is served (its record was removed by B's sweep while \
         it ran: bytes written without a record = {torn}): {} {:?}",
        after.status,
        String::from_utf8_lossy(&after.body)
    );
}
