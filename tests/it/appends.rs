//! Appends (`POST ?append`, `PUT` with `Upload-Offset`): each one lands whole and once, or not
//! at all, whoever else is writing, reading, moving or crashing meanwhile.
//!
//! - Concurrency: eight appenders on one file (some lines larger than the copy buffer, sent
//!   slowly, since a body written in one `O_APPEND` `write(2)` stays whole even without a lock),
//!   on one server and on two servers sharing a root; readers never see an append before it
//!   commits; a slow appender blocks no other.
//! - Offsets: `Upload-Offset` checked against the committed size (409 with the size, before
//!   `100 Continue` invites the body), the README's retry loop appending once.
//! - Failures: a full disk, a stalled or vanished client, a commit that cannot be made durable:
//!   the file keeps only acknowledged bytes, so a retry appends once.
//!
//! Each test was checked against a server without the feature it covers: appends that are not
//! serialised tear the lines of concurrent appenders; a failed append that is not rolled back
//! leaves the bytes that did arrive; the race tests fail on the write protocol they replaced
//! (`HTTP_NAS_TEST_BIN` pointing at that build). Races that need an unlucky schedule are made
//! deterministic with `strace` delay injection (`support::races`); without strace those tests
//! say `skipped:`.

use std::collections::HashMap;
use std::fs;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use crate::support::headers::etag;
use crate::support::mounts::Mounted;
use crate::support::races::{
    Attached, VISIBLE_TIMEOUT, delayed, record, shared_root, start_request, wait_for_internal_file,
};
use crate::support::raw::Conn;
use crate::support::writes::{
    ORIGINAL, PARTIAL_BODY_BYTES, TARGET, TARGET_URL, append_line, assert_untouched, free_bytes, line,
    start_raw_upload, wait_for_temp_file, with_target,
};
use crate::support::{Server, assert_same_bytes, preview, random_bytes, skip, wait_until};

/// The log file of the concurrent appenders.
const LOG: &str = "jobs.log";

/// Concurrent appenders, and lines each appends (one curl per line).
const APPENDERS: usize = 8;
const APPENDS_EACH: usize = 100;

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

#[test]
fn concurrent_appenders_lose_and_tear_no_line() {
    let s = Server::start();
    run_appenders(&[&s]);
    assert_every_line_once(&s.read(LOG));
}

#[test]
fn appenders_on_two_servers_sharing_a_root_lose_and_tear_no_line() {
    let first = Server::start();
    let second = Server::start_on(&first.root(), &[]);
    run_appenders(&[&first, &second]);
    assert_every_line_once(&first.read(LOG));
}

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

#[test]
fn a_large_append_needs_its_size_free_twice_and_else_changes_nothing() {
    // The body is received whole before the lock, then copied into the file: while it commits,
    // both are on the disk. An append that would fit once but not twice is a 507.
    let tmpfs = match Mounted::tmpfs("size=4m") {
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
fn append_stalled_past_io_timeout_is_rolled_back_and_unlocked() {
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

#[test]
fn append_if_match_appends_only_to_the_expected_version() {
    let s = Server::start();
    s.write("log.csv", "a\n");
    let wrong = s.send("PUT", "/file/log.csv", b"lost\n", &["If-Match: \"not-the-etag\""]);
    wrong.assert_error(412);
    assert_eq!(s.read("log.csv"), b"a\n");

    let right = format!("If-Match: {}", etag(&s, "/file/log.csv"));
    s.send("PUT", "/file/log.csv", b"b\n", &[&right]).assert_ok_json();
    assert_eq!(s.read("log.csv"), b"a\nb\n");
}

#[test]
fn a_move_during_an_append_never_exposes_or_keeps_its_unfinished_body() {
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

#[test]
fn readers_never_see_part_of_a_small_append() {
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

#[test]
fn a_slow_appender_never_blocks_other_appends_to_the_same_file() {
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

#[test]
fn a_refused_offset_append_never_removes_another_writers_acknowledged_bytes() {
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

#[test]
fn a_stale_upload_offset_is_refused_before_100_continue_invites_the_body() {
    let s = Server::start();
    s.write("f", "abc");
    let mut conn = s.connect();
    conn.send(b"PUT /file/f HTTP/1.1\r\nHost: t\r\nUpload-Offset: 5\r\nExpect: 100-continue\r\nContent-Length: 67000000\r\n\r\n");
    let first = conn.response();
    first.assert_status(409);
    assert_eq!(first.header("Upload-Offset"), Some("3"));
}

#[test]
fn a_reader_whose_file_moves_while_it_waits_never_serves_a_dead_appends_bytes() {
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
fn an_append_whose_commit_cannot_be_made_durable_is_undone_so_a_retry_appends_once() {
    // The sync of the append's bytes (its first fdatasync: the crash record's first arming is
    // an fsync, as it makes the record's name durable too) fails.
    let Some(failing) = delayed("fdatasync", Duration::ZERO).map(|w| {
        w.into_iter()
            .map(|a| {
                if a.starts_with("inject=") {
                    "inject=fdatasync:error=EIO:when=1".to_string()
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
fn an_append_creating_directories_makes_them_only_after_its_body_is_on_disk() {
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

/// Appends whose client vanishes mid-body or sends less than it announced, over raw TCP:
/// nothing of the body is appended, and a retry at the same offset appends once.
mod abandoned {

    use crate::support::abandon::{
        ORIGINAL, TARGET, abandon_upload, assert_target_untouched, chunks_without_end, with_target,
    };
    use crate::support::random_bytes;
    use crate::support::raw::{only_response, raw};

    #[test]
    fn append_abandoned_mid_body_appends_nothing() {
        let s = with_target(&[]);
        let head = "PUT /file/target HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n";
        abandon_upload(&s, head, &random_bytes(1 << 20, 3));
        assert_target_untouched(&s);
        s.assert_healthy();
    }

    #[test]
    fn chunked_append_abandoned_between_chunks_appends_nothing() {
        let s = with_target(&[]);
        let head = "PUT /file/target HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
        abandon_upload(&s, head, &chunks_without_end(&random_bytes(1 << 20, 4), 64 << 10));
        assert_target_untouched(&s);
        s.assert_healthy();
    }

    #[test]
    fn append_retried_at_same_offset_after_disconnect_appends_once() {
        let s = with_target(&[]);
        let head = "PUT /file/target HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n";
        abandon_upload(&s, head, &random_bytes(1 << 20, 5));
        assert_target_untouched(&s);
        let offset = format!("Upload-Offset: {}", ORIGINAL.len());
        let url = s.url("/file/target");
        let retry = s.curl(&["-X", "PUT", "-H", &offset, "--data-binary", "retried", &url]);
        retry.assert_ok_json();
        assert_eq!(retry.header("Upload-Offset"), Some(&*(ORIGINAL.len() + 7).to_string()));
        assert_eq!(s.read(TARGET), [ORIGINAL, b"retried"].concat());
    }

    #[test]
    fn append_shorter_than_content_length_is_400() {
        let s = with_target(&[]);
        let request = "PUT /file/target HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly twenty bytes...";
        only_response(&raw(s.addr(), request.as_bytes(), true)).assert_error(400);
        assert_target_untouched(&s);
        s.assert_healthy();
    }
}
