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
    // Wait for A's bytes to be written while its append is not committed, and B's unlink done
    // (its record gone, or B's sweep over: B listens). Not "until the record is gone": an append
    // that waited for B's sweep removes its own record only at its commit point.
    let started = Instant::now();
    let mut seen_live_record = false;
    let written = wait_until(Duration::from_secs(20), || {
        let record_there = record.exists();
        seen_live_record |= record_there && size_of(&root.join("d/g")) == 5;
        size_of(&root.join("d/g")) > 5 && (!record_there || b.is_finished())
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

/// Replica A (every fsync slowed 1 s by strace) is frozen (SIGSTOP) in the middle of three
/// appends to three files of one directory: each has written its bytes and holds its file's
/// lock, its crash record beside it. Replica B has `--lock-timeout 2`.
fn frozen_with_three_appends_in_d() -> (TempDir, Server, Server, Vec<crate::support::raw::Conn>) {
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

/// With a frozen replica holding the locks of three files in `d`, a JSON listing of `d` on the
/// other replica waits the lock bound once per locked file (3 x 2 s: with a frozen replica of
/// 128 workers, 128 x 10 s by default), and then lists each of them at its on-disk size, which
/// counts the bytes of the frozen, uncommitted append: a state no GET ever serves (GET of the
/// same file answers 503). Both break the Guarantees: the bound, and "readers see only
/// committed states".
#[test]
fn attack_a_json_listing_beside_a_frozen_replica_waits_the_bound_per_file_and_lists_uncommitted_sizes() {
    if !crate::support::strace_usable() {
        return;
    }
    let (_home, a, b, _appends) = frozen_with_three_appends_in_d();
    let started = Instant::now();
    let listing = b.get_with("/file/d", &["Accept: application/json"]);
    let took = started.elapsed();
    let get = b.get("/file/d/f1");
    a.signal(libc::SIGCONT);
    eprintln!("JSON listing: {} after {took:?}: {}", listing.status, listing.text());
    eprintln!("GET of a locked file: {}", get.status);
    let sizes: Vec<u64> = listing
        .assert_ok_json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["size"].as_u64().unwrap())
        .collect();
    assert!(
        sizes.iter().all(|&s| s == 4),
        "the listing shows sizes {sizes:?}: the committed size of each file is 4 (\"one\\n\"), 8 counts a \
         frozen append's uncommitted bytes"
    );
    assert!(
        took < Duration::from_secs(4),
        "one listing took {took:?} with a 2 s lock bound (the bound once per locked file)"
    );
}

/// A DELETE of a directory holding three files locked by a frozen replica waits the lock bound
/// once per locked file (about 3 x 2 s), then removes them anyway; and the frozen appends,
/// continued, are answered 200 after the DELETE was: their files are gone.
#[test]
fn attack_a_directory_delete_beside_a_frozen_replica_waits_the_bound_per_locked_file() {
    if !crate::support::strace_usable() {
        return;
    }
    let (_home, a, b, mut appends) = frozen_with_three_appends_in_d();
    let started = Instant::now();
    let deleted = b.delete("/file/d");
    let took = started.elapsed();
    a.signal(libc::SIGCONT);
    let answers: Vec<u16> = appends.iter_mut().map(|c| c.response().status).collect();
    eprintln!(
        "DELETE of d: {} after {took:?}; A's appends then answered {answers:?}",
        deleted.status
    );
    eprintln!("GET d/f1 after: {}", b.get("/file/d/f1").status);
    assert!(
        took < Duration::from_secs(4),
        "a DELETE of the directory took {took:?} with a 2 s lock bound ({})",
        deleted.status
    );
}

/// A file replaced within the second its client fetched it: the client's revalidation with the
/// `Last-Modified` it was given (`If-Modified-Since`, what `curl -z` and caches send) is answered
/// 304, so the client keeps the old content as current ("304 when unchanged" in the contract).
/// The date cannot tell the two versions apart, yet it is taken as a validator; `If-Range` dates
/// were made never to match for this reason, `If-Modified-Since` was not.
#[test]
fn attack_if_modified_since_answers_304_for_a_file_replaced_in_the_same_second() {
    let server = Server::start();
    let mut stale = 0;
    for _ in 0..5 {
        server.post("/file/status.txt", b"running\n").assert_status(200);
        let first = server.get("/file/status.txt");
        let date = first.header("Last-Modified").expect("Last-Modified").to_string();
        server.post("/file/status.txt", b"failed!\n").assert_status(200);
        let again = server.get_with("/file/status.txt", &[&format!("If-Modified-Since: {date}")]);
        if again.status == 304 {
            stale += 1;
        }
    }
    assert_eq!(
        stale, 0,
        "{stale} of 5 revalidations of a replaced file answered 304 (not modified)"
    );
}

/// The same for a write: `If-Unmodified-Since` with the date a client read is meant to refuse
/// a write over someone else's change (a lost update), but a change made in the same second
/// passes it, and the client's POST silently replaces the other writer's version.
#[test]
fn attack_if_unmodified_since_lets_a_write_overwrite_a_change_made_in_the_same_second() {
    let server = Server::start();
    let mut lost = 0;
    for i in 0..5 {
        server.post("/file/conf", b"v1\n").assert_status(200);
        let date = server
            .get("/file/conf")
            .header("Last-Modified")
            .expect("Last-Modified")
            .to_string();
        // Another client changes it.
        server.post("/file/conf", b"v2\n").assert_status(200);
        let mine = server.send(
            "POST",
            "/file/conf",
            format!("mine{i}\n").as_bytes(),
            &[&format!("If-Unmodified-Since: {date}")],
        );
        if mine.status == 200 {
            lost += 1;
        }
    }
    assert_eq!(
        lost, 0,
        "{lost} of 5 conditional writes overwrote a version they never saw"
    );
}

/// A file another writer of the volume named with invalid UTF-8, a control byte or a backslash
/// is listed (its `href` percent-encoded) and can be read and deleted by that `href`, but not
/// moved (not even to a plain name, which is how a user would fix it), nor appended to: 400
/// `bad_path`. The API's list of refused paths (NUL, `.`, `..`, leading `/`) names none of these.
#[test]
fn attack_a_listed_name_with_invalid_utf8_a_control_byte_or_a_backslash_cannot_be_moved_or_appended_to() {
    use std::os::unix::ffi::OsStrExt;
    let server = Server::start();
    let names: [&[u8]; 3] = [b"latin1-caf\xe9.csv", b"tab\there.csv", b"back\\slash.csv"];
    for name in names {
        fs::write(server.root().join(std::ffi::OsStr::from_bytes(name)), b"data\n").unwrap();
    }
    let listing = server
        .get_with("/file/", &["Accept: application/json"])
        .assert_ok_json();
    let mut refused = Vec::new();
    for (i, entry) in listing.as_array().unwrap().iter().enumerate() {
        let href = entry["href"].as_str().unwrap();
        server.get(&format!("/file/{href}")).assert_ok_body(b"data\n");
        let appended = server.append(&format!("/file/{href}"), b"more\n");
        let moved = server.put_json(&format!("/file/{href}"), &format!("{{\"path\":\"fixed-{i}.csv\"}}"));
        if appended.status != 200 || moved.status != 200 {
            refused.push(format!(
                "{href}: append {} move {} {}",
                appended.status,
                moved.status,
                moved.text().trim()
            ));
        }
    }
    assert!(refused.is_empty(), "listed names refused:\n{}", refused.join("\n"));
}

/// The pid holding a lock on inode `ino`, from `/proc/locks`.
fn lock_holder(ino: u64) -> Option<i32> {
    let text = fs::read_to_string("/proc/locks").unwrap_or_default();
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let id = fields.get(5)?.rsplit(':').next()?.parse::<u64>().ok()?;
        (id == ino).then(|| fields.get(4)?.parse().ok()).flatten()
    })
}

/// A new upload's temp file is created, then locked with a *blocking* `flock` (temp.rs): a
/// starting replica's sweep that finds it in between takes its lock (LOCK_NB succeeds) and
/// holds it until its unlink is done. Here strace delays A's lock call 3 s (to widen that
/// instant) and B's unlink 2 s, and B is frozen (SIGSTOP) while it holds the lock: A's upload
/// then waits for B without the `--lock-timeout` bound (2 s), for as long as B stays frozen,
/// and its worker with it (uncounted by `/readyz`, which counts only bounded waits).
#[test]
fn attack_an_upload_waits_without_bound_for_a_frozen_sweep_holding_its_new_temp_file() {
    let Some(slow_lock) = strace_injecting("flock", "flock:delay_enter=3000000") else {
        return;
    };
    let Some(slow_unlink) = strace_injecting("unlinkat", "unlinkat:delay_enter=2000000:when=2") else {
        return;
    };
    let home = TempDir::new();
    let root = home.path().join("root");
    fs::create_dir_all(&root).unwrap();
    let a = std::sync::Arc::new(Server::start_wrapped_on(&root, &slow_lock, &["--lock-timeout", "2"]));
    let temp_ino = || {
        fs::read_dir(&root).ok()?.flatten().find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(".http-nas-tmp-")
                .then(|| e.metadata().ok().map(|m| m.ino()))
                .flatten()
        })
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let a2 = std::sync::Arc::clone(&a);
    let post = thread::spawn(move || {
        let started = Instant::now();
        let resp = a2.curl(&[
            "-m",
            "60",
            "-X",
            "POST",
            "--data-binary",
            "payload",
            &a2.url("/file/new.txt"),
        ]);
        let _ = tx.send((resp.status, started.elapsed()));
    });
    assert!(
        wait_until(Duration::from_secs(5), || temp_ino().is_some()),
        "A made no temp file"
    );
    let ino = temp_ino().unwrap();
    let root_b = root.clone();
    let b = thread::spawn(move || Server::start_wrapped_on(&root_b, &slow_unlink, &[]));
    assert!(
        wait_until(Duration::from_secs(5), || lock_holder(ino).is_some()),
        "B's sweep never locked A's temp file"
    );
    let holder = lock_holder(ino).unwrap();
    // SAFETY: kill(2) with plain integers; the pid is B's server process, ours to signal.
    unsafe { libc::kill(holder, libc::SIGSTOP) };
    let answer = rx.recv_timeout(Duration::from_secs(12));
    let ready = a.get("/readyz").status;
    // SAFETY: as above.
    unsafe { libc::kill(holder, libc::SIGKILL) };
    let _ = b.join();
    let _ = post.join();
    eprintln!("A's POST with B frozen holding its temp file's lock: {answer:?}; A's /readyz: {ready}");
    match answer {
        Ok((status, took)) if took < Duration::from_secs(8) => eprintln!("answered {status} in {took:?}"),
        Ok((status, took)) => panic!("A's POST answered {status} only after {took:?} (bound 2 s + 3 s injected)"),
        Err(_) => panic!(
            "A's POST was still waiting after 12 s for a frozen replica's lock on its own temp file (bound 2 s + 3 s injected)"
        ),
    }
}
