//! Reads of a file read before: a version found clean (no crash record could cap it) is served
//! again without the lock, the name re-check or the record lookup (`storage/clean_versions.rs`).
//! Each test makes the file change in a way one part of that version's description would miss
//! (the size: an append killed mid-commit; the ctime: a change that keeps size and times; the
//! age rule: a change within the same second on a filesystem with one-second timestamps), and
//! the next read must answer as the locked read does.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::mounts::Mounted;
use crate::support::races::{VISIBLE_TIMEOUT, delayed, shared_root, start_request, wait_for_internal_file};
use crate::support::writes::ORIGINAL;
use crate::support::{RESERVED_PREFIX, Server, TempDir, assert_same_bytes, random_bytes, skip};

/// Longer than the time a version's last change must be old before it is remembered (2 s).
const SETTLE: Duration = Duration::from_millis(2_200);
/// The file's bytes in the tests that plant a record.
const CONTENT: &[u8] = b"0123456789 the committed contents of the file, fifty bytes\n";
/// Where the planted record says the file's committed bytes end.
const PLANTED_BEFORE: usize = 10;

/// Reads `/file/{name}` twice: the first read (under the lock) finds it clean and remembers it,
/// the second is served from that memory. Each request is a new connection, and the worker
/// that serves it may differ: reading a few more times makes every worker of a small pool
/// remember it.
fn read_until_remembered(s: &Server, name: &str, expected: &[u8]) {
    for _ in 0..8 {
        assert_same_bytes(
            &s.get(&format!("/file/{name}")).body,
            expected,
            "a read before the change",
        );
    }
}

/// Plants an older binary's crash record (format v2, always rolled back to `before`) for the
/// file `path`, as an append that died there would leave it.
fn plant_record(path: &Path, before: usize) {
    let ino = fs::metadata(path).unwrap().ino();
    let record = format!("http-nas append journal v2\nid 00\ndev 0\nino {ino}\nborn -\nbefore {before}\nend\n");
    let dir = path.parent().unwrap();
    fs::write(dir.join(format!("{RESERVED_PREFIX}journal-{ino}")), record).unwrap();
}

/// `chmod` the file to its own mode: its ctime changes, its size and mtime do not.
fn touch_ctime(path: &Path) {
    let mode = fs::metadata(path).unwrap().permissions().mode();
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string and a mode; chmod has no other preconditions.
    assert_eq!(unsafe { libc::chmod(c.as_ptr(), (mode & 0o7777) as libc::mode_t) }, 0);
}

/// Appends 1 MiB to `rel` (holding [`ORIGINAL`]) through a server whose `fdatasync` waits
/// (`slow_sync`), and kills it once the bytes are in the file: a dead append's armed record
/// beside the file, its bytes after the committed ones.
fn kill_mid_append(root: &Path, slow_sync: &[String], rel: &str, seed: u64) {
    let mut writer = Server::start_wrapped_on(root, slow_sync, &["--fsync", "true"]);
    let body = random_bytes(1 << 20, seed);
    let _conn = start_request(&writer, "PUT", &format!("/file/{rel}"), &[], &body, body.len());
    let path = root.join(rel);
    wait_for_internal_file(path.parent().unwrap(), "journal");
    // The batch's bytes are in the file (its sync is what waits): the size has grown.
    let grown = (0..500).any(|_| {
        thread::sleep(Duration::from_millis(10));
        fs::metadata(&path).unwrap().len() > ORIGINAL.len() as u64
    });
    assert!(grown, "the killed append never wrote its bytes");
    writer.signal(libc::SIGKILL);
    assert!(writer.wait_exit(VISIBLE_TIMEOUT).is_some(), "the writer did not exit");
}

#[test]
fn a_file_read_before_never_shows_an_append_killed_mid_commit() {
    let Some(slow_sync) = delayed("fdatasync", Duration::from_secs(60)) else {
        return;
    };
    let (_home, root) = shared_root();
    fs::write(root.join("f"), ORIGINAL).unwrap();
    thread::sleep(SETTLE);
    let reader = Server::start_on(&root, &["--workers", "2"]);
    read_until_remembered(&reader, "f", ORIGINAL);
    kill_mid_append(&root, &slow_sync, "f", 2601);
    for _ in 0..4 {
        assert_same_bytes(
            &reader.get("/file/f").body,
            ORIGINAL,
            "a file read before, after an append to it was killed mid-commit",
        );
    }
}

#[test]
fn a_change_that_keeps_the_size_and_times_makes_the_next_read_look_again() {
    let (_home, root) = shared_root();
    let path = root.join("f");
    fs::write(&path, CONTENT).unwrap();
    thread::sleep(SETTLE);
    let s = Server::start_on(&root, &["--workers", "2"]);
    read_until_remembered(&s, "f", CONTENT);
    // Another writer leaves a record of an append that died, and changes the file without
    // changing its size or mtime (a chmod): only its ctime tells.
    plant_record(&path, PLANTED_BEFORE);
    touch_ctime(&path);
    for _ in 0..4 {
        assert_same_bytes(
            &s.get("/file/f").body,
            &CONTENT[..PLANTED_BEFORE],
            "a read after the file changed (the record found again)",
        );
    }
}

#[test]
fn on_one_second_timestamps_a_change_within_the_second_is_never_missed() {
    let disk = match Mounted::ext4(64, &["-I", "128"], None) {
        Ok(disk) => disk,
        Err(e) => return skip(&format!("needs ext4 with one-second timestamps: {e}")),
    };
    let root = disk.root();
    let s = Server::start_on(&root, &["--workers", "2"]);
    let now_secs = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    for attempt in 0..5 {
        let name = format!("f{attempt}");
        let path = root.join(&name);
        // Start just after a second begins, so the whole change fits in it.
        let start = now_secs();
        while now_secs() == start {
            thread::sleep(Duration::from_millis(5));
        }
        fs::write(&path, CONTENT).unwrap();
        read_until_remembered(&s, &name, CONTENT);
        plant_record(&path, PLANTED_BEFORE);
        touch_ctime(&path);
        let ctime = fs::metadata(&path).unwrap().ctime();
        let got = s.get(&format!("/file/{name}")).body;
        if now_secs() != ctime {
            eprintln!("attempt {attempt}: the second ended before the read, again");
            continue;
        }
        assert_same_bytes(
            &got,
            &CONTENT[..PLANTED_BEFORE],
            "a read after a change in the same second as the file's last one",
        );
        return;
    }
    panic!("no attempt fitted the change in one second");
}

/// `a/f` and a hard link to it at `other`; a reader with one worker (every read below is
/// served by the same thread); an append through `a/f` killed mid-commit (its record in `a/`);
/// then, the torn version settled, `other` read a few times (no record beside it: it shows the
/// dead append's bytes, as it always has, write-protocol.md "What is not covered").
fn read_the_other_name_of_a_dead_append(other: &str, seed: u64) -> Option<(TempDir, PathBuf, Server)> {
    let slow_sync = delayed("fdatasync", Duration::from_secs(60))?;
    let (home, root) = shared_root();
    fs::create_dir(root.join("a")).unwrap();
    fs::create_dir(root.join("b")).unwrap();
    fs::write(root.join("a/f"), ORIGINAL).unwrap();
    fs::hard_link(root.join("a/f"), root.join(other)).unwrap();
    let reader = Server::start_on(&root, &["--workers", "1"]);
    kill_mid_append(&root, &slow_sync, "a/f", seed);
    assert_same_bytes(&reader.get("/file/a/f").body, ORIGINAL, "a/f right after the kill");
    thread::sleep(SETTLE);
    assert_eq!(fs::metadata(root.join(other)).unwrap().nlink(), 2);
    for _ in 0..3 {
        let _ = reader.get(&format!("/file/{other}"));
    }
    Some((home, root, reader))
}

#[test]
fn a_file_read_through_another_name_never_shows_an_append_killed_mid_commit_at_this_one() {
    // A file with two names (a hard link an operator made: `cp -al`, a dedupe tool). Reading
    // the other name (where no record is) must not make the worker skip the record at the first.
    let Some((_home, _root, reader)) = read_the_other_name_of_a_dead_append("b/g", 2602) else {
        return;
    };
    for _ in 0..3 {
        assert_same_bytes(
            &reader.get("/file/a/f").body,
            ORIGINAL,
            "a/f, beside the dead append's record, after its other name was read",
        );
    }
}

#[test]
fn a_rename_of_directories_never_puts_a_dead_appends_record_beside_a_remembered_path() {
    // After `b/f` was read, the directories are swapped by the service's own moves: `b/f` is
    // now beside the dead append's record, at the same path, with the same version (a rename
    // changes nothing in the file), and must read as the locked path does.
    let Some((_home, _root, reader)) = read_the_other_name_of_a_dead_append("b/f", 2603) else {
        return;
    };
    reader.put_json("/file/b/mv", r#"{"path": "x"}"#).assert_ok_json();
    reader.put_json("/file/a/mv", r#"{"path": "b"}"#).assert_ok_json();
    for _ in 0..3 {
        assert_same_bytes(
            &reader.get("/file/b/f").body,
            ORIGINAL,
            "b/f after the directory beside the dead append's record took its path",
        );
    }
}
