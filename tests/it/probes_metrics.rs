//! Probes, metrics and the access log: `/healthz` and `/readyz` answer (and `/readyz` turns 503
//! when storage goes or hangs), replicas never fail each other's probes; `/metrics` counts
//! requests and bytes per op and names no file; every request, refused or cut short, gets one
//! access line.

use std::fs;
use std::process::Command;
use std::thread;
use std::time::Duration;

use crate::support::headers::RECORD_TIMEOUT;
use crate::support::probe::probe;
use crate::support::races::{delayed, shared_root};
use crate::support::writes::PARTIAL_BODY_BYTES;
use crate::support::{SETTLE_TIMEOUT, Server, random_bytes, skip, strace_injecting, wait_until};

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

#[test]
fn probes_answer_200_while_storage_is_there() {
    let s = Server::start();
    s.get("/healthz").assert_status(200);
    s.get("/readyz").assert_status(200);
}

#[test]
fn readyz_is_503_once_storage_root_is_gone_but_healthz_stays_200() {
    let s = Server::start();
    fs::rename(s.root(), s.outside().join("moved-away")).expect("rename the root away");
    // The probes answer from a check made every second, off the request path.
    let failed = wait_until(SETTLE_TIMEOUT, || s.get("/readyz").status == 503);
    assert!(failed, "readyz still 200 with the root gone");
    s.get("/readyz").assert_error(503);
    s.get("/healthz").assert_status(200);
}

#[test]
fn seed_health_probe_get_file_is_503_once_storage_root_is_gone() {
    let s = Server::start();
    s.get("/file").assert_ok_body("OK");
    fs::rename(s.root(), s.outside().join("moved-away")).expect("rename the root away");
    let failed = wait_until(SETTLE_TIMEOUT, || s.get("/file").status == 503);
    assert!(failed, "GET /file still 200 with the root gone");
    s.get("/file").assert_error(503);
}

/// The counters a successful upload and a missing-file read must move.
const UPLOADS_2XX: &str = r#"http_nas_requests_total{op="upload",status="2xx"}"#;
const READS_4XX: &str = r#"http_nas_requests_total{op="read",status="4xx"}"#;
const BYTES_IN: &str = r#"http_nas_body_bytes_total{direction="in"}"#;

/// Metric families docs/API.md promises, by name prefix.
const METRIC_FAMILIES: &[&str] = &[
    "http_nas_requests_total",
    "http_nas_body_bytes_total",
    "http_nas_request_duration_seconds_",
    "http_nas_in_flight_requests",
    "http_nas_busy_workers",
    "http_nas_queued_requests",
    "http_nas_parked_connections",
    "http_nas_overload_rejections_total",
    "http_nas_storage_free_bytes",
];

#[test]
fn metrics_count_requests_and_bytes_but_name_no_file() {
    const NAME: &str = "metrics-probe-name";
    let s = Server::start();
    let before = s.scrape();
    let missing: Vec<_> = METRIC_FAMILIES
        .iter()
        .filter(|family| !before.keys().any(|k| k.starts_with(*family)))
        .collect();
    assert!(missing.is_empty(), "metric families missing: {missing:?}");

    s.post(&format!("/file/{NAME}.bin"), vec![b'x'; 1000]).assert_ok_json();
    s.get(&format!("/file/{NAME}-missing.txt")).assert_error(404);
    let value = |m: &std::collections::HashMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    let counted = wait_until(RECORD_TIMEOUT, || {
        let after = s.scrape();
        value(&after, UPLOADS_2XX) > value(&before, UPLOADS_2XX)
            && value(&after, READS_4XX) > value(&before, READS_4XX)
            && value(&after, BYTES_IN) >= value(&before, BYTES_IN) + 1000.0
    });
    let text = s.get("/metrics").text();
    assert!(counted, "counters did not move: before {before:?}\nafter:\n{text}");
    assert!(!text.contains(NAME), "the metrics name a file:\n{text}");
}

#[test]
fn metrics_response_has_one_content_type() {
    let s = Server::start();
    let response = s.get("/metrics");
    let types: Vec<_> = response
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .collect();
    if types.len() != 1 || !types[0].1.starts_with("text/plain; version=0.0.4") {
        response.fail(&format!("expected one Prometheus Content-Type, got {types:?}"));
    }
}

#[test]
fn requests_refused_for_their_framing_are_counted_as_their_own_op_not_the_previous_one() {
    let s = Server::start_with(&["--workers", "1"]);
    s.write("w.txt", "a\n");
    s.get("/file/w.txt/wc").assert_ok_body("1");
    let mut conn = s.connect();
    conn.send(b"POST /file/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n");
    conn.response().assert_error(501);
    let upload_5xx = r#"http_nas_requests_total{op="upload",status="5xx"}"#;
    let wc_5xx = r#"http_nas_requests_total{op="wc",status="5xx"}"#;
    let counted = wait_until(RECORD_TIMEOUT, || s.scrape().get(upload_5xx).copied() == Some(1.0));
    let after = s.scrape();
    assert!(
        counted && after.get(wc_5xx).copied().unwrap_or(0.0) == 0.0,
        "the 501 should count as op=upload: {after:?}"
    );
}

#[test]
fn access_log_names_client_method_path_and_status() {
    let s = Server::start();
    s.write("logged.txt", "hello");
    let mut conn = s.connect();
    conn.send(b"GET /file/logged.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    conn.response().assert_ok_body("hello");
    let client = conn.local_addr().to_string();
    let logged = |line: &str| {
        let words: Vec<&str> = line.split_whitespace().collect();
        [client.as_str(), "GET", "/file/logged.txt", "200"]
            .iter()
            .all(|w| words.contains(w))
    };
    let found = wait_until(RECORD_TIMEOUT, || s.log().lines().any(logged));
    assert!(
        found,
        "no access line with {client} GET /file/logged.txt 200 in:\n{}",
        s.log()
    );
}

#[test]
fn replicas_that_are_all_pid_1_never_fail_each_others_readiness_probes() {
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
fn a_refused_request_line_gets_an_access_line() {
    let s = Server::start();
    let mut conn = s.connect();
    conn.send(b"GET /file HTTP/2.0\r\nHost: t\r\n\r\n");
    let client = conn.local_addr().to_string();
    conn.read_to_close();
    let line = format!("{client} - - 505 in=0");
    let logged = wait_until(SETTLE_TIMEOUT, || s.log().contains(&line));
    assert!(logged, "no access line {line:?} in:\n{}", s.log());
}

#[test]
fn a_hung_storage_check_makes_readyz_503_while_probes_still_answer() {
    // The README: readiness is 503 once the storage check has not come back for 5 s (a hung
    // volume), never a probe that hangs with it. strace makes every unlink after the first two
    // (the start-up checks) sleep 30 s, so the checker thread's next probe-file removal hangs.
    let Some(wrapper) = strace_injecting("unlinkat", "unlinkat:delay_enter=30000000:when=3+") else {
        return;
    };
    let home = crate::support::TempDir::new();
    let root = home.path().join("root");
    fs::create_dir(&root).unwrap();
    let s = Server::start_wrapped_on(&root, &wrapper, &[]);
    assert_eq!(probe(&s, "/readyz").0, 200, "ready while the checks come back");
    let stale = wait_until(Duration::from_secs(15), || probe(&s, "/readyz").0 == 503);
    assert!(stale, "/readyz stayed 200 with the storage check hung");
    let (status, body) = probe(&s, "/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("has not come back"), "{body}");
    assert_eq!(
        probe(&s, "/healthz"),
        (200, "ok".into()),
        "liveness must not hang with the volume"
    );
}

/// The count of requests with no operation (refused before anything looked at them) and
/// status class `class`, as `/metrics` shows it.
fn others(s: &Server, class: &str) -> f64 {
    let key = format!(r#"http_nas_requests_total{{op="other",status="{class}"}}"#);
    s.scrape().get(&key).copied().unwrap_or(0.0)
}

/// Waits until `/metrics` counts more `op="other"` requests of `class` than `before`.
fn assert_counted(s: &Server, class: &str, before: f64, what: &str) {
    let counted = wait_until(RECORD_TIMEOUT, || others(s, class) > before);
    assert!(
        counted,
        "{what} is not counted: op=other {class} stayed at {before}:\n{}",
        s.get("/metrics").text()
    );
}

#[test]
fn a_request_that_waited_too_long_for_a_worker_is_counted_and_logged() {
    let s = crate::support::writes::with_target(&["--workers", "1", "--queue", "4", "--queue-timeout", "1"]);
    let before = others(&s, "5xx");
    let body = random_bytes(4 << 20, 67);
    let mut held = crate::support::writes::start_raw_upload(&s, "POST", &body, PARTIAL_BODY_BYTES);
    crate::support::writes::wait_for_temp_file(&s);
    let mut conn = s.connect();
    // Not a probe (`/file` is one): those are answered from the head without a worker.
    conn.send(b"GET /file/target HTTP/1.1\r\nHost: t\r\n\r\n");
    let client = conn.local_addr().to_string();
    conn.response().assert_error(503);
    held.send(&body[PARTIAL_BODY_BYTES..]);
    held.response().assert_ok_json();
    assert_counted(&s, "5xx", before, "a 503 for waiting too long in the queue");
    let line = format!("{client} - - 503 in=0 out=");
    let logged = wait_until(SETTLE_TIMEOUT, || {
        s.log()
            .lines()
            .any(|l| l.contains(&line) && l.contains("in the queue)"))
    });
    assert!(
        logged,
        "no access line {line:?} … (waited N s in the queue) in:\n{}",
        s.log()
    );
}

#[test]
fn a_request_refused_because_workers_and_queue_are_full_is_counted() {
    let s = crate::support::writes::with_target(&["--workers", "1", "--queue", "0"]);
    let before = others(&s, "5xx");
    let body = random_bytes(4 << 20, 68);
    let mut held = crate::support::writes::start_raw_upload(&s, "POST", &body, PARTIAL_BODY_BYTES);
    crate::support::writes::wait_for_temp_file(&s);
    let mut conn = s.connect();
    conn.send(b"GET /file/target HTTP/1.1\r\nHost: t\r\n\r\n");
    conn.response().assert_error(503);
    held.send(&body[PARTIAL_BODY_BYTES..]);
    held.response().assert_ok_json();
    assert_counted(&s, "5xx", before, "a 503 for full workers and queue");
}

#[test]
fn a_head_not_finished_in_time_is_counted_and_logged() {
    let s = Server::start_with(&["--head-timeout", "1"]);
    let before = others(&s, "4xx");
    let mut conn = s.connect();
    conn.send(b"GET /file HTTP/1.1\r\nHost: t\r\n");
    let client = conn.local_addr().to_string();
    conn.read_to_close();
    assert_counted(&s, "4xx", before, "a 408 for a head not finished in time");
    let line = format!("{client} - - 408 in=0 out=");
    let logged = wait_until(SETTLE_TIMEOUT, || {
        s.log()
            .lines()
            .any(|l| l.contains(&line) && l.contains("(request head not finished in time)"))
    });
    assert!(logged, "no access line {line:?} … in:\n{}", s.log());
}

#[test]
fn a_refused_request_line_is_counted() {
    let s = Server::start();
    let before = others(&s, "5xx");
    let mut conn = s.connect();
    conn.send(b"GET /file HTTP/2.0\r\nHost: t\r\n\r\n");
    conn.read_to_close();
    assert_counted(&s, "5xx", before, "a 505 for an unsupported version");
}

#[test]
fn a_connection_refused_at_the_connection_limit_is_counted() {
    const LIMIT: usize = 100;
    let s = Server::start_with(&["--max-connections", "100"]);
    let fds = || fs::read_dir(format!("/proc/{}/fd", s.pid())).map_or(0, |d| d.count());
    // Counted before the scrape below, whose connection may still be open for a moment.
    let base = fds();
    let before = others(&s, "5xx");
    let idle: Vec<_> = (0..LIMIT).map(|_| s.connect()).collect();
    let accepted = wait_until(SETTLE_TIMEOUT, || fds() >= base + LIMIT);
    assert!(accepted, "the server did not accept the {LIMIT} idle connections");
    let mut conn = s.connect();
    conn.send(b"GET /file/x HTTP/1.1\r\nHost: t\r\n\r\n");
    conn.response().assert_error(503);
    drop(idle);
    let back = wait_until(SETTLE_TIMEOUT, || fds() < base + LIMIT);
    assert!(back, "the idle connections were not closed");
    assert_counted(&s, "5xx", before, "a 503 at the connection limit");
}

/// Asserts `line` is one whole log line: it starts with its time
/// (`2026-12-06T14:46:59.832Z INFO  [access] ...`) and carries no other line's start.
#[track_caller]
fn assert_whole_line(line: &str) {
    let stamped = line.len() > 25 && line.as_bytes()[4] == b'-' && line.as_bytes()[23] == b'Z';
    let stamps = ["Z INFO ", "Z WARN ", "Z ERROR "]
        .iter()
        .map(|s| line.matches(s).count())
        .sum::<usize>();
    assert!(stamped && stamps == 1, "a line cut or glued to another: {line:.300}");
}

/// A server on a new root holding `f.txt` (`x\n`), run under `wrapper`; the root's home with it.
fn wrapped_with_a_file(wrapper: &[&str]) -> (crate::support::TempDir, Server) {
    let wrapper: Vec<String> = wrapper.iter().map(|s| s.to_string()).collect();
    let (home, root) = shared_root();
    let s = Server::start_wrapped_on(&root, &wrapper, &[]);
    s.write("f.txt", b"x\n");
    (home, s)
}

/// Runs a command with its stderr read by the shell's `read`, which takes one byte per system
/// call: a pipe reader too slow for the server, so the pipe fills and a write longer than it
/// takes whole goes in pieces. Lines are copied to the wrapper's own stderr.
const SLOW_STDERR_READER: &str =
    r#"exec 3>&2; "$@" 2>&1 >/dev/null | while IFS= read -r line; do printf '%s\n' "$line" >&3; done"#;

/// Lines from many threads stay whole through a pipe read too slowly: short lines, and lines
/// longer than a pipe takes in one piece (4 KiB; here access lines with 6 KiB paths), which
/// the kernel then writes in pieces that another writer's line could otherwise split.
#[test]
fn log_lines_stay_whole_through_a_slow_pipe() {
    let (_root_home, s) = wrapped_with_a_file(&["sh", "-c", SLOW_STDERR_READER, "sh"]);
    const LONG_CLIENTS: usize = 4;
    const REQUESTS: usize = 15;
    let long_path = |letter: char| format!("/file/{}", format!("{}/", letter.to_string().repeat(200)).repeat(30));
    thread::scope(|scope| {
        for client in 0..LONG_CLIENTS {
            let s = &s;
            scope.spawn(move || {
                let path = long_path(char::from(b'a' + client as u8));
                for _ in 0..REQUESTS {
                    let mut conn = s.connect();
                    conn.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes());
                    conn.response();
                }
            });
        }
        for _ in 0..2 {
            let s = &s;
            scope.spawn(move || {
                for _ in 0..REQUESTS * 4 {
                    let mut conn = s.connect();
                    conn.send(b"GET /file/f.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
                    conn.response().assert_ok_body("x\n");
                }
            });
        }
    });
    let want = LONG_CLIENTS * REQUESTS + 2 * REQUESTS * 4;
    // Counted by their tags, not by lines: a split line may have swallowed another.
    let access = |log: &str| log.matches("[access]").count();
    assert!(
        wait_until(SETTLE_TIMEOUT, || access(&s.log()) >= want),
        "only {} of {want} access lines came",
        access(&s.log())
    );
    let long_paths: Vec<String> = (0..LONG_CLIENTS)
        .map(|c| long_path(char::from(b'a' + c as u8)))
        .collect();
    for line in s.log().lines() {
        assert_whole_line(line);
        if !line.contains("[access]") {
            continue;
        }
        let path = line.split(' ').find(|w| w.starts_with("/file/")).unwrap_or_default();
        assert!(
            path == "/file/f.txt" || long_paths.iter().any(|p| p == path),
            "an access line whose path is not one any client sent (split by another line?): {:.300}",
            line
        );
    }
}

/// Log lines stay whole, and none is lost, when stderr is a pipe whose writing end another
/// process made non-blocking, read slowly: a write the pipe takes only in part is finished once
/// there is room, not left cut in the middle of a line.
#[test]
fn log_lines_stay_whole_on_a_non_blocking_pipe() {
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::{Arc, Mutex};
    let (_home, root) = shared_root();
    fs::write(root.join("f.txt"), b"x\n").unwrap();
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) returns.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: both descriptors were just returned by pipe(2) and are owned here only.
    let (reading, writing) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on descriptors this test owns; F_SETPIPE_SZ makes the pipe one page.
    unsafe {
        let flags = libc::fcntl(writing.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(writing.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        libc::fcntl(reading.as_raw_fd(), libc::F_SETPIPE_SZ, 4096);
    }
    let mut child = Command::new(crate::support::server_binary())
        .args(["--listen", "127.0.0.1:0", "--storage"])
        .arg(&root)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(writing))
        .spawn()
        .expect("start the server");
    let log = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let log = Arc::clone(&log);
        let mut pipe = fs::File::from(reading);
        thread::spawn(move || {
            let mut piece = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut piece) {
                if n == 0 {
                    break;
                }
                log.lock().unwrap().extend_from_slice(&piece[..n]);
                thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let text = || String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    let port = |t: &str| {
        let at = t.find("listening on 127.0.0.1:")? + "listening on 127.0.0.1:".len();
        t[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse::<u16>().ok()
    };
    assert!(
        wait_until(SETTLE_TIMEOUT, || port(&text()).is_some()),
        "no start line: {}",
        text()
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port(&text()).unwrap()));
    const CLIENTS: usize = 4;
    const REQUESTS: usize = 500;
    thread::scope(|scope| {
        for _ in 0..CLIENTS {
            scope.spawn(move || {
                let mut conn = std::net::TcpStream::connect(addr).expect("connect");
                let mut answer = Vec::new();
                for _ in 0..REQUESTS {
                    conn.write_all(b"GET /file/f.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
                    answer.clear();
                    let mut piece = [0u8; 1024];
                    while !answer.ends_with(b"\r\n\r\nx\n") {
                        let n = conn.read(&mut piece).expect("read an answer");
                        assert!(n > 0, "the server closed the connection");
                        answer.extend_from_slice(&piece[..n]);
                    }
                }
            });
        }
    });
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
    reader.join().unwrap();
    let all = text();
    all.lines().for_each(assert_whole_line);
    let logged = all.matches("GET /file/f.txt 200").count();
    assert_eq!(logged, CLIENTS * REQUESTS, "access lines logged");
}

/// Every write to stderr is whole lines, and access lines go out in batches: never more writes
/// than lines, and fewer when requests come faster than the writer's gathering time.
#[test]
fn log_writes_are_whole_lines_and_access_lines_are_batched() {
    if !crate::support::strace_usable() {
        return;
    }
    let home = crate::support::TempDir::new();
    let trace = home.path().join("writes.strace");
    let trace_arg = trace.to_str().unwrap();
    let wrapper = [
        "strace",
        "-f",
        "-qq",
        "-s",
        "100000",
        "-e",
        "trace=write",
        "-o",
        trace_arg,
    ];
    let (_root_home, s) = wrapped_with_a_file(&wrapper);
    const REQUESTS: usize = 200;
    s.connect().get_ok_times("/file/f.txt", "x\n", REQUESTS);
    s.get("/file/missing").assert_status(404);
    let access = |log: &str| log.matches("[access]").count();
    assert!(
        wait_until(SETTLE_TIMEOUT, || access(&s.log()) > REQUESTS),
        "the access lines never came: {}",
        s.log()
    );
    let lines = s.log().lines().count();
    let traced = fs::read_to_string(&trace).unwrap_or_default();
    let writes: Vec<&str> = traced.lines().filter(|l| l.contains("write(2, ")).collect();
    for write in &writes {
        assert!(
            write.contains("\\n\", "),
            "a write to stderr that does not end a line: {write:.300}"
        );
    }
    assert!(
        writes.len() < lines,
        "{} writes for {lines} lines: access lines were not batched",
        writes.len()
    );
}
