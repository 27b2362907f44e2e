//! Limits and overload: saturated workers and queues, the connection limit, exhausted file
//! descriptors, idle and half-sent connections, slow producers and the head, idle and I/O
//! timeouts, unauthenticated uploads, out-of-range settings. The service answers 503 with
//! `Retry-After` (or 408) at once instead of waiting without end, its probes still answer,
//! and it recovers. A thread-per-connection server grows with idle sockets, and fails here.
//!
//! Workers are held the way real clients hold them: an upload whose client stops sending (its
//! temp file shows the server is receiving it). No test asserts a duration: "answered" means
//! answered within the harness's bound (curl's `--max-time`, the raw client's 10 s).

use std::fs;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::support::probe::{PROBE_MAX_TIME, probe, send_raw};
use crate::support::raw::{Conn, only_response};
use crate::support::writes::{PARTIAL_BODY_BYTES, TARGET, start_raw_upload, wait_for_temp_file, with_target};
use crate::support::{SETTLE_TIMEOUT, Server, assert_same_bytes, random_bytes, server_binary, skip, wait_until};

#[test]
fn hundreds_of_idle_connections_cost_no_threads_and_little_memory() {
    const IDLE: usize = 300;
    const HALF_HEADS: usize = 50;
    const MAX_RSS_KIB: u64 = 64 << 10;
    let s = Server::start_with(&["--workers", "4"]);
    s.assert_healthy();
    let threads_before = s.proc_status("Threads");

    let idle: Vec<TcpStream> = (0..IDLE)
        .map(|_| TcpStream::connect(s.addr()).expect("connect"))
        .collect();
    let half: Vec<Conn> = (0..HALF_HEADS)
        .map(|_| {
            let mut conn = s.connect();
            conn.send(b"GET /file HTTP/1.1\r\nHost: t\r\n");
            conn
        })
        .collect();
    let all_parked = wait_until(SETTLE_TIMEOUT, || {
        s.scrape().get("http_nas_parked_connections").copied().unwrap_or(0.0) >= (IDLE + HALF_HEADS) as f64
    });
    assert!(
        all_parked,
        "the server did not accept all {} connections",
        IDLE + HALF_HEADS
    );

    s.curl(&["--max-time", "10", &s.url("/file")]).assert_ok_body("OK");
    // The server has a fixed set of threads (main, reactor, workers): waiting connections are
    // parked in one poll loop, so their number must not show in the thread count.
    assert_eq!(
        s.proc_status("Threads"),
        threads_before,
        "threads grew with idle connections"
    );
    let rss = s.proc_status("VmRSS");
    assert!(rss < MAX_RSS_KIB, "VmRSS {rss} KiB with {IDLE} idle connections");
    drop((idle, half));
}

#[test]
fn busy_worker_and_full_queue_answer_503_at_once_then_recover() {
    let s = with_target(&["--workers", "1", "--queue", "0"]);
    let body = random_bytes(4 << 20, 61);
    let mut slow = start_raw_upload(&s, "POST", &body, PARTIAL_BODY_BYTES);
    wait_for_temp_file(&s);

    // Not a probe: those are answered from the head without a worker (see
    // `probes_answer_while_every_worker_is_busy_and_the_queue_is_full`).
    let refused = s.curl(&["--max-time", "10", &s.url("/file/target")]);
    refused.assert_error(503);
    let retry_after = refused.header("Retry-After").and_then(|v| v.parse::<u64>().ok());
    if retry_after.is_none() {
        refused.fail("a 503 for overload needs a Retry-After in seconds");
    }

    let client = "- - 503 in=0";
    let logged = wait_until(SETTLE_TIMEOUT, || s.log().contains(client));
    assert!(logged, "no access line for the 503 in:\n{}", s.log());

    slow.send(&body[PARTIAL_BODY_BYTES..]);
    slow.response().assert_ok_json();
    s.get("/file").assert_ok_body("OK");
    assert_same_bytes(&s.read(TARGET), &body, "the upload that held the worker");
}

#[test]
fn liveness_probe_is_answered_while_every_worker_is_busy() {
    let s = with_target(&["--workers", "1"]);
    let body = random_bytes(4 << 20, 64);
    let mut slow = start_raw_upload(&s, "POST", &body, PARTIAL_BODY_BYTES);
    wait_for_temp_file(&s);
    // Without the reactor's answer this waits in the queue behind the stalled upload.
    s.curl(&["--max-time", "5", &s.url("/healthz")]).assert_ok_body("ok");
    slow.send(&body[PARTIAL_BODY_BYTES..]);
    slow.response().assert_ok_json();
}

#[test]
fn idle_connection_is_closed_after_idle_timeout() {
    let s = Server::start_with(&["--idle-timeout", "1"]);
    let mut conn = s.connect();
    conn.read_to_close();
    s.assert_healthy();
}

#[test]
fn unfinished_head_gets_408_after_head_timeout() {
    let s = Server::start_with(&["--head-timeout", "1"]);
    let mut conn = s.connect();
    conn.send(b"GET /file HTTP/1.1\r\nHost: t\r\n");
    only_response(&conn.read_to_close()).assert_error(408);
    s.assert_healthy();
}

#[test]
fn idle_connections_do_not_block_other_clients() {
    let s = Server::start_with(&["--workers", "2"]);
    let idle: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(s.addr()).unwrap()).collect();
    s.get("/file").assert_ok_body("OK");
    drop(idle);
    s.assert_healthy();
}

#[test]
fn half_sent_heads_do_not_block_other_clients() {
    let s = Server::start_with(&["--workers", "2"]);
    let slow: Vec<Conn> = (0..50)
        .map(|_| {
            let mut conn = s.connect();
            conn.send(b"GET /file HTTP/1.1\r\nHost: t\r\n");
            conn
        })
        .collect();
    s.get("/file").assert_ok_body("OK");
    drop(slow);
    s.assert_healthy();
}

/// Starts `count` uploads whose clients then go silent, each holding a worker, and waits until
/// the server is receiving every one (its temp file exists).
fn hold_workers(s: &Server, count: usize) -> Vec<Conn> {
    let conns: Vec<Conn> = (0..count)
        .map(|i| {
            let mut conn = s.connect();
            let head = format!(
                "POST /file/held{i} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
                4 << 20
            );
            conn.send(head.as_bytes()).send(&vec![b'x'; 200 * 1024]);
            conn
        })
        .collect();
    let holding = wait_until(SETTLE_TIMEOUT, || s.temp_files().len() >= count);
    assert!(holding, "only {} of {count} uploads started", s.temp_files().len());
    conns
}

#[test]
fn probes_answer_while_every_worker_is_busy_and_the_queue_is_full() {
    let s = Server::start_with(&["--workers", "2", "--queue", "1", "--io-timeout", "60"]);
    s.write("x", "x\n");
    let _held = hold_workers(&s, 2);
    // A plain request now waits in the queue (its one place) for a held worker.
    let mut queued = s.connect();
    queued.send(b"GET /file/x HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(probe(&s, "/healthz"), (200, "ok".into()));
    assert_eq!(probe(&s, "/file"), (200, "OK".into()), "the original's probe");
    let (status, body) = probe(&s, "/readyz");
    assert_eq!(status, 503, "not ready: no worker free and no room to wait ({body})");
    assert!(body.contains("busy"), "{body}");
    let head = s.curl(&["--max-time", PROBE_MAX_TIME, "-I", &s.url("/healthz")]);
    assert_eq!(head.status, 200);
    // And once the held uploads go away, the queued request is served and readiness is back.
    drop(_held);
    queued.response().assert_ok_body("x\n");
    let ready = wait_until(SETTLE_TIMEOUT, || probe(&s, "/readyz").0 == 200);
    assert!(ready, "readyz did not come back");
}

#[test]
fn probes_answer_at_the_connection_limit_and_others_get_503() {
    let s = Server::start_with(&["--max-connections", "100"]);
    s.write("x", "x\n");
    // 100 idle connections that never authenticate or send anything fill the limit.
    let fds = || fs::read_dir(format!("/proc/{}/fd", s.pid())).map_or(0, |d| d.count());
    let base = fds();
    let idle: Vec<Conn> = (0..100).map(|_| s.connect()).collect();
    let accepted = wait_until(SETTLE_TIMEOUT, || fds() >= base + 100);
    assert!(accepted, "the server did not accept the 100 idle connections");
    assert_eq!(probe(&s, "/healthz"), (200, "ok".into()));
    assert_eq!(probe(&s, "/file"), (200, "OK".into()));
    let other = s.curl(&["--max-time", PROBE_MAX_TIME, &s.url("/file/x")]);
    other.assert_error(503);
    assert!(other.header("Retry-After").is_some(), "503 without Retry-After");
    drop(idle);
    let back = wait_until(SETTLE_TIMEOUT, || s.get("/file/x").status == 200);
    assert!(back, "not serving again after the idle connections left");
}

#[test]
fn a_request_waiting_too_long_for_a_worker_gets_503_with_retry_after() {
    let s = Server::start_with(&[
        "--workers",
        "1",
        "--queue",
        "4",
        "--queue-timeout",
        "1",
        "--io-timeout",
        "60",
    ]);
    s.write("x", "x\n");
    let _held = hold_workers(&s, 1);
    // The worker stays held for the 60 s io timeout; the queued request must not wait for it.
    let waited = send_raw(&s, "GET /file/x HTTP/1.1\r\nHost: t\r\n\r\n");
    waited.assert_error(503);
    assert_eq!(waited.header("Retry-After"), Some("1"));
    // The access line is written after the answer: wait for it rather than race it.
    let logged = wait_until(SETTLE_TIMEOUT, || s.log().contains("in the queue"));
    assert!(logged, "the refusal is logged with its reason");
}

#[test]
fn a_producer_silent_for_most_of_the_io_timeout_is_stored() {
    // Scaled down: the default (130 s, over the original's 120 s) is checked by config's tests.
    let s = Server::start_with(&["--io-timeout", "4"]);
    let mut conn = s.connect();
    conn.send(b"PUT /file/dump.csv HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    std::thread::sleep(Duration::from_secs(2));
    conn.send(b"4\r\nrow\n\r\n0\r\n\r\n");
    conn.response().assert_status(200);
    assert_eq!(s.read("dump.csv"), b"row\n");
}

#[test]
fn unauthenticated_uploads_are_refused_from_the_head_and_never_take_a_worker() {
    let s = Server::start_with_env(&[("HTTP_NAS_TOKEN", "sesame")], &["--workers", "2", "--queue", "0"]);
    // Far more unauthenticated uploads than workers, each trickling its body for seconds (a
    // server that drains bodies after its 401 keeps a worker per trickle).
    let trickling = Duration::from_secs(3);
    std::thread::scope(|scope| {
        let clients: Vec<_> = (0..14)
            .map(|i| {
                let s = &s;
                scope.spawn(move || {
                    let mut conn = s.connect();
                    let head = format!("POST /file/u{i} HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n");
                    conn.send(head.as_bytes()).send(b"x");
                    let until = std::time::Instant::now() + trickling;
                    let sender = conn.try_clone_stream();
                    let trickle = std::thread::spawn(move || {
                        while std::time::Instant::now() < until {
                            if std::io::Write::write_all(&mut &sender, b"x").is_err() {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    });
                    let r = conn.response();
                    let _ = trickle.join();
                    r
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let ok = s.curl(&[
            "--max-time",
            PROBE_MAX_TIME,
            "-H",
            "Authorization: Bearer sesame",
            "-X",
            "POST",
            "--data-binary",
            "fine",
            &s.url("/file/authorised"),
        ]);
        ok.assert_status(200);
        for client in clients {
            let r = client.join().unwrap();
            r.assert_error(401);
            assert_eq!(r.header("Connection"), Some("close"));
        }
    });
    assert_eq!(s.read("authorised"), b"fine");
    assert!(s.temp_files().is_empty(), "an unauthenticated body was received");
    // Behind an authorised request on a kept-alive connection (served by a worker), too.
    let mut conn = s.connect();
    conn.send(b"GET /file/authorised HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer sesame\r\n\r\n");
    conn.response().assert_ok_body("fine");
    conn.send(b"POST /file/sneaky HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\nxx");
    conn.response().assert_error(401);
    assert!(!s.exists("sneaky"));
}

#[test]
fn out_of_file_descriptors_is_503_with_retry_after_then_recovers() {
    let s = Server::start();
    s.write("f", "data\n");
    let mut conn = s.connect();
    conn.send(b"GET /file/f HTTP/1.1\r\nHost: t\r\n\r\n");
    conn.response().assert_ok_body("data\n");
    let pid = s.pid().to_string();
    let set_limit = |n: usize| {
        let status = Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={n}:")])
            .status();
        status.is_ok_and(|s| s.success())
    };
    // Below what the process holds already: every new descriptor fails with EMFILE, while the
    // kept-alive connection (already open) still carries the request and its answer.
    if !set_limit(3) {
        skip("prlimit --pid is missing or refused here (util-linux)");
        return;
    }
    conn.send(b"GET /file/f HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = conn.response();
    assert!(set_limit(4096));
    r.assert_error(503);
    assert_eq!(r.header("Retry-After"), Some("1"));
    let back = wait_until(SETTLE_TIMEOUT, || s.get("/file/f").status == 200);
    assert!(back, "not serving again once descriptors were available");
}

#[test]
fn a_low_open_file_limit_lowers_max_connections_with_a_warning() {
    let home = crate::support::TempDir::new();
    let root = home.path().join("root");
    fs::create_dir(&root).unwrap();
    let wrapper: Vec<String> = ["prlimit", "--nofile=400:400", "--"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let s = Server::start_wrapped_on(&root, &wrapper, &["--workers", "8", "--max-connections", "1000"]);
    s.get("/healthz").assert_status(200);
    assert!(s.log().contains("--max-connections 1000 lowered to 240"), "{}", s.log());
}

#[test]
fn out_of_range_settings_are_refused_at_start_with_a_clear_error() {
    for (flag, value) in [
        ("--idle-timeout", "18446744073709551615"),
        ("--io-timeout", "0"),
        ("--head-timeout", "86401"),
        ("--workers", "0"),
        ("--queue-timeout", "-1"),
    ] {
        let mut child = Command::new(server_binary())
            .args([flag, value, "--storage", "/tmp", "--listen", "127.0.0.1:0"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A build that accepts the value starts serving (or hangs): that fails here too.
        let exited = wait_until(SETTLE_TIMEOUT, || child.try_wait().is_ok_and(|s| s.is_some()));
        if !exited {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}

#[test]
fn a_probe_pipelined_behind_a_download_the_client_reads_slowly_is_still_answered() {
    // A worker answers the probe from its head; the connection's send buffer is still full of
    // the download, so a write that does not wait for room would lose the answer.
    use std::io::{Read, Write};
    let s = Server::start();
    let big = vec![b'd'; 8 << 20];
    s.write("big.bin", &big);
    let mut stream = std::net::TcpStream::connect(s.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
        .write_all(b"GET /file/big.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut received = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("read: {e} after {} bytes", received.len()),
        }
        // A slow reader: about 6 MB/s, so the server's writes keep finding the buffer full.
        std::thread::sleep(Duration::from_millis(10));
    }
    let text = String::from_utf8_lossy(&received[received.len().saturating_sub(400)..]).into_owned();
    assert!(
        received.len() > big.len(),
        "the download was cut short: {} bytes",
        received.len()
    );
    assert!(
        text.contains("HTTP/1.1 200 OK") && text.ends_with("ok"),
        "no probe answer at the end: {text:?}"
    );
}
