//! Uploads (`POST /file/...` replacing or creating a file): a reader sees the old version or the
//! new one, never a mix; an upload that fails (full disk, vanished client, lost race) leaves the
//! target byte-identical, no temp file and no new directory; `If-Match` and `If-None-Match: *`
//! decide at commit, so of two racing writers one wins.
//!
//! A POST that writes in place shows the concurrent reader half a file, and the race tests fail
//! on the write protocol they replaced. Races are made deterministic with `strace` delay injection (`support::races`); without
//! strace those tests say `skipped:`. The ENOSPC test mounts a small tmpfs (root only).

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use crate::support::headers::etag;
use crate::support::mounts::Mounted;
use crate::support::races::{Attached, delayed, shared_root, start_request, wait_for_internal_file};
use crate::support::raw::Conn;
use crate::support::writes::{ORIGINAL, TARGET, TARGET_URL, free_bytes};
use crate::support::{SETTLE_TIMEOUT, Server, assert_same_bytes, preview, random_bytes, skip, wait_until};

/// Size of each of the two versions raced by concurrent POSTs.
const VERSION_BYTES: usize = 32 << 20;

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
fn concurrent_posts_leave_one_whole_version_and_readers_never_see_a_mix() {
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

#[test]
fn disk_full_is_507_and_leaves_no_trace() {
    let tmpfs = match Mounted::tmpfs("size=2m") {
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

#[test]
fn post_if_none_match_star_creates_only() {
    let s = Server::start();
    let create_only = ["If-None-Match: *"];
    s.send("POST", "/file/once.txt", b"first", &create_only)
        .assert_ok_json();
    s.send("POST", "/file/once.txt", b"second", &create_only)
        .assert_error(412);
    assert_eq!(s.read("once.txt"), b"first");
}

#[test]
fn post_if_match_replaces_only_the_expected_version() {
    let s = Server::start();
    s.write("doc.txt", "v1");
    let wrong = s.send("POST", "/file/doc.txt", b"lost", &["If-Match: \"not-the-etag\""]);
    wrong.assert_error(412);
    assert_eq!(s.read("doc.txt"), b"v1");

    let right = format!("If-Match: {}", etag(&s, "/file/doc.txt"));
    s.send("POST", "/file/doc.txt", b"v2", &[&right]).assert_ok_json();
    assert_eq!(s.read("doc.txt"), b"v2");

    s.send("POST", "/file/doc.txt", b"v3", &[&right]).assert_error(412);
    assert_eq!(s.read("doc.txt"), b"v2", "the ETag of v1 must not match v2");
}

#[test]
fn post_if_match_on_missing_file_is_412() {
    let s = Server::start();
    s.send("POST", "/file/absent.txt", b"x", &["If-Match: \"any\""])
        .assert_error(412);
    assert!(!s.exists("absent.txt"));
}

#[test]
fn if_match_is_checked_at_commit_so_only_one_of_two_racing_writers_wins() {
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

#[test]
fn a_write_whose_directory_is_deleted_at_commit_creates_it_again() {
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
fn new_parent_directories_appear_only_when_the_write_commits() {
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

#[test]
fn a_new_file_whose_directory_is_deleted_while_its_temp_file_is_made_is_still_created() {
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

/// Uploads whose client vanishes mid-body or between chunks, over raw TCP: the target stays
/// byte-identical and no temp file or directory is left.
mod abandoned {
    use std::fs;

    use crate::support::abandon::{abandon_upload, assert_target_untouched, chunks_without_end, with_target};
    use crate::support::raw::{only_response, raw};
    use crate::support::{SETTLE_TIMEOUT, Server, random_bytes, wait_until};

    #[test]
    fn post_abandoned_mid_body_leaves_target_and_no_temp_file() {
        let s = with_target(&[]);
        let head = "POST /file/target HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n";
        abandon_upload(&s, head, &random_bytes(1 << 20, 1));
        assert_target_untouched(&s);
        s.assert_healthy();
    }

    #[test]
    fn chunked_post_abandoned_between_chunks_is_not_committed() {
        let s = with_target(&[]);
        let head = "POST /file/target HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
        abandon_upload(&s, head, &chunks_without_end(&random_bytes(1 << 20, 2), 64 << 10));
        assert_target_untouched(&s);
        s.assert_healthy();
    }

    #[test]
    fn failed_writes_leave_no_new_directories_behind() {
        let s = Server::start();
        let text = raw(
            s.addr(),
            b"POST /file/np1/np2/f HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nshort",
            true,
        );
        only_response(&text).assert_error(400);
        s.send("PUT", "/file/np3/np4/f", b"x", &["Upload-Offset: 7"])
            .assert_error(409);
        let gone = wait_until(SETTLE_TIMEOUT, || !s.exists("np1") && !s.exists("np3"));
        assert!(
            gone,
            "empty directories left behind: {:?}",
            fs::read_dir(s.root()).map(|d| d.count())
        );
        s.get("/file/").assert_ok_body("");
    }
}
