//! Attack review (concurrency, frozen holders, sweeps racing live writers). Each test here
//! reproduced a problem when it was written and is expected to fail until it is fixed.

use crate::support::{Server, TempDir, strace_injecting, wait_until};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// Whether `/proc/locks` lists a lock on inode `ino`.
fn locked_in_proc(ino: u64) -> bool {
    let text = fs::read_to_string("/proc/locks").unwrap_or_default();
    text.lines().any(|line| {
        line.split_whitespace()
            .nth(5)
            .and_then(|id| id.rsplit(':').next())
            .is_some_and(|i| i.parse::<u64>().ok() == Some(ino))
    })
}

fn size_of(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// A starting replica's sweep checks that an orphan crash record is unlocked and still at its
/// name, then unlinks the *name* (`unlinkat`), not what it checked. When the sweep is slowed
/// between the two (a loaded node, a slow volume: here strace delays its first `unlinkat` 5 s),
/// another writer can, meanwhile, bring the record's file in (here: `mv` on the volume), and an
/// append begins on it on replica A: A settles the stale record (removing it) and writes its own,
/// live record under the same name, locked. The sweep's stalled unlink then removes A's live
/// record. A is killed (`kill -9`) after its bytes are written and before its commit: no record
/// is left, so the next start serves the torn append (the client never got a 2xx).
#[test]
fn attack_a_stalled_sweep_unlinks_a_live_appends_crash_record_and_a_crash_then_keeps_a_torn_append() {
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
        wait_until(Duration::from_secs(10), || locked_in_proc(record_ino)),
        "replica B's sweep never locked the orphan record"
    );
    // Another writer of the volume brings the file in beside the record.
    fs::rename(root.join("d2/g"), root.join("d/g")).unwrap();
    let mut append = a.connect();
    append.send(b"PUT /file/d/g HTTP/1.1\r\nHost: t\r\nContent-Length: 12\r\n\r\nTORN-APPEND\n");
    // Wait for A's bytes to be written while its append is not committed, and B's unlink done.
    let started = Instant::now();
    let mut seen_live_record = false;
    let torn = wait_until(Duration::from_secs(20), || {
        let record_there = record.exists();
        seen_live_record |= record_there && size_of(&root.join("d/g")) == 5;
        size_of(&root.join("d/g")) > 5 && !record_there
    });
    eprintln!("after {:?}: live record seen {seen_live_record}, bytes written without a record: {torn}", started.elapsed());
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
