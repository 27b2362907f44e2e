//! Fault and process conditions from docs/API.md's Guarantees: a paused process, a frozen
//! replica holding a lock, clients that leave during long work, a full volume at start, a root
//! renamed or replaced under the server, and a bad listen address.

use crate::support::mounts::Mounted;
use crate::support::races;
use crate::support::raw::Conn;
use crate::support::{Server, TempDir, server_binary, strace_injecting, wait_until};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// Stops the server with SIGSTOP, waits `pause`, and continues it with SIGCONT.
fn pause(server: &Server, pause: Duration) {
    server.signal(libc::SIGSTOP);
    thread::sleep(pause);
    server.signal(libc::SIGCONT);
}

/// Requests sent while the server is stopped for longer than its idle and head timeouts (a
/// container pause): a kept-alive connection's next request, and a head begun before the pause
/// and finished during it, are each answered 200 once it continues, not closed or refused 408
/// for a deadline that passed while the process could not read.
#[test]
fn requests_sent_during_a_pause_longer_than_the_timeouts_are_answered() {
    let server = Server::start_with(&["--idle-timeout", "1", "--head-timeout", "1"]);
    server.write("f.txt", b"whole\n");
    const EACH: usize = 100;
    let get = b"GET /file/f.txt HTTP/1.1\r\nHost: t\r\n\r\n";
    // Kept alive after one answered request, and heads begun but not finished.
    let mut kept: Vec<Conn> = (0..EACH)
        .map(|_| {
            let mut conn = server.connect();
            conn.send(get).response().assert_ok_body("whole\n");
            conn
        })
        .collect();
    let mut begun: Vec<Conn> = (0..EACH)
        .map(|_| {
            let mut conn = server.connect();
            conn.send(b"GET /file/f.txt HTTP/1.1\r\n");
            conn
        })
        .collect();
    thread::sleep(Duration::from_millis(200));
    server.signal(libc::SIGSTOP);
    for conn in &mut kept {
        conn.send(get);
    }
    for conn in &mut begun {
        conn.send(b"Host: t\r\n\r\n");
    }
    thread::sleep(Duration::from_millis(2500));
    server.signal(libc::SIGCONT);
    for (what, conns) in [("kept-alive", &mut kept), ("begun", &mut begun)] {
        for (i, conn) in conns.iter_mut().enumerate() {
            match conn.try_response() {
                Some(r) if r.status == 200 => assert_eq!(r.body, b"whole\n"),
                Some(r) => r.fail(&format!("{what} connection {i}: request sent during the pause")),
                None => panic!("{what} connection {i}: closed without an answer after the pause"),
            }
        }
    }
}

/// Uploads (POST) and appends (PUT) whose bodies arrive in pieces while the server is stopped
/// and continued several times (a container pause, a freezer, a debugger): every one is
/// answered 200 and every file is whole. Before, the socket read interrupted by the stop
/// (`EINTR`, which Linux returns for a read with a timeout) was taken for the body's end: 400.
#[test]
fn a_paused_server_fails_no_request_in_flight() {
    let server = Server::start();
    server.write("log.txt", b"start\n");
    // And a download in flight across the pauses: read at 2 MiB/s, 16 MiB outlast the socket
    // buffers (a few MiB on loopback) and the pauses.
    let big = crate::support::random_bytes(16 << 20, 7);
    server.write("big.bin", &big);
    const PIECES: usize = 6;
    let piece = |i: usize, j: usize| format!("request {i} piece {j}\n").into_bytes();
    let body = |i: usize| (0..PIECES).flat_map(|j| piece(i, j)).collect::<Vec<u8>>();
    // Three uploads (one chunked) and three appends to one file.
    let mut conns: Vec<Conn> = (0..6)
        .map(|i| {
            let mut conn = server.connect();
            let len = body(i).len();
            let head = match i {
                0 | 1 => format!("POST /file/up{i}.txt HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n"),
                2 => "POST /file/up2.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".into(),
                _ => format!("PUT /file/log.txt HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n"),
            };
            conn.send(head.as_bytes());
            conn
        })
        .collect();
    let download = thread::scope(|scope| {
        let download = scope.spawn(|| server.curl(&["--limit-rate", "2M", &server.url("/file/big.bin")]));
        for j in 0..PIECES {
            for (i, conn) in conns.iter_mut().enumerate() {
                let bytes = piece(i, j);
                if i == 2 {
                    let framed = [format!("{:x}\r\n", bytes.len()).as_bytes(), &bytes, b"\r\n"].concat();
                    conn.send(&framed);
                } else {
                    conn.send(&bytes);
                }
            }
            // Let the server block reading the next piece, then stop and continue it.
            thread::sleep(Duration::from_millis(100));
            pause(&server, Duration::from_millis(200));
        }
        download.join().unwrap()
    });
    conns[2].send(b"0\r\n\r\n");
    for (i, conn) in conns.iter_mut().enumerate() {
        let resp = conn.response();
        if resp.status != 200 {
            resp.fail(&format!("request {i} after SIGSTOP/SIGCONT"));
        }
    }
    download.assert_status(200);
    crate::support::assert_same_bytes(&download.body, &big, "the download across the pauses");
    for i in 0..3 {
        assert_eq!(server.read(&format!("up{i}.txt")), body(i), "upload {i} whole");
    }
    let log = String::from_utf8_lossy(&server.read("log.txt")).into_owned();
    let appended: usize = (3..6).map(|i| body(i).len()).sum();
    assert_eq!(log.len(), b"start\n".len() + appended, "{log}");
    for i in 3..6 {
        let whole = String::from_utf8_lossy(&body(i)).into_owned();
        assert!(log.contains(&whole), "append {i} whole:\n{log}");
    }
}

/// A listen address that is not `HOST:PORT` stops the service with exit code 2 and a message
/// naming `--listen`, before the start-up sweep touches the volume: the crash leftovers planted
/// under the root are still there. Before, it swept, then failed to bind: exit 1, flag unnamed.
#[test]
fn an_invalid_listen_address_exits_2_naming_the_flag_before_any_work() {
    let home = TempDir::new();
    let root = home.path().join("root");
    fs::create_dir(&root).unwrap();
    let leftover = root.join(".http-nas-tmp-planted");
    fs::write(&leftover, b"an interrupted upload's temp file").unwrap();
    let root_arg = root.to_str().unwrap();
    for (args, env, names) in [
        (vec!["--listen", "nope:xx"], None, "--listen"),
        (vec![], Some(("HTTP_NAS_LISTEN", "nope:xx")), "--listen"),
        (vec!["--listen", "127.0.0.1"], None, "--listen"),
    ] {
        let mut command = std::process::Command::new(server_binary());
        command.args(&args).args(["--storage", root_arg]);
        command.env_remove("PORT").env_remove("HTTP_NAS_LISTEN");
        if let Some((k, v)) = env {
            command.env(k, v);
        }
        let mut child = command.stderr(std::process::Stdio::piped()).spawn().unwrap();
        let exited = wait_until(Duration::from_secs(10), || child.try_wait().is_ok_and(|s| s.is_some()));
        if !exited {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let what = format!("{args:?} {env:?}: {stderr}");
        assert_eq!(out.status.code(), Some(2), "{what}");
        assert!(stderr.contains(names), "{what}");
        assert!(
            leftover.exists(),
            "the sweep ran before the address was checked: {what}"
        );
    }
}

/// True while a crash record (`.http-nas-journal-*`) is in `dir`: an appender holds the lock of
/// the file it names (it writes the record under the lock and removes it before unlocking).
fn append_record_in(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".http-nas-journal-"))
    })
}

/// Replica A, frozen (SIGSTOP) in the middle of an append's commit, holds the file's lock.
/// Replica B's reads of that file wait at most `--lock-timeout`, then answer 503 with
/// `Retry-After` and a message saying the file is locked; other files keep being served; while
/// every worker of B waits for the lock, B's `/readyz` says so (503); once A continues, its
/// append completes and B serves the new content. Before, B's reads waited forever and took
/// every worker.
#[test]
fn a_frozen_replica_holding_a_lock_wedges_no_other_replica() {
    // Every fsync of replica A takes a second: its append holds the file's lock that long at
    // each of the commit's syncs, and the test freezes it there.
    let Some(wrapper) = strace_injecting("fsync,fdatasync", "fsync,fdatasync:delay_enter=1000000") else {
        return;
    };
    let home = TempDir::new();
    let root = home.path().join("root");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("f.txt"), b"one\n").unwrap();
    fs::write(root.join("other.txt"), b"other\n").unwrap();
    let a = Server::start_wrapped_on(&root, &wrapper, &[]);
    const WORKERS: usize = 3;
    // The bound through its variable (an older build ignores it rather than refusing to start).
    let env = ["env".to_string(), "HTTP_NAS_LOCK_TIMEOUT=3".to_string()];
    let b = Server::start_wrapped_on(&root, &env, &["--workers", "3"]);
    let mut append = a.connect();
    append.send(b"PUT /file/f.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\ntwo\n");
    let locked = wait_until(Duration::from_secs(10), || append_record_in(&root));
    assert!(locked, "replica A's append never reached its commit");
    a.signal(libc::SIGSTOP);
    let started = std::time::Instant::now();
    let answers = thread::scope(|scope| {
        let readers: Vec<_> = (0..WORKERS)
            .map(|_| scope.spawn(|| b.curl(&["-H", "Accept: application/json", &b.url("/file/f.txt")])))
            .collect();
        // While every worker waits for the lock, readiness says so.
        let unready = wait_until(Duration::from_secs(10), || b.get("/readyz").status == 503);
        let readyz = b.get("/readyz");
        // Another file is served meanwhile (it waits for a worker at most the lock bound).
        let other = b.get("/file/other.txt");
        let answers: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
        (answers, unready, readyz, other)
    });
    eprintln!("B's reads of the locked file answered after {:?}", started.elapsed());
    let (reads, unready, readyz, other) = answers;
    for read in &reads {
        read.assert_status(503);
        assert!(read.header("Retry-After").is_some(), "no Retry-After");
        assert!(
            read.text().contains("locked by another request or replica"),
            "{}",
            read.text()
        );
    }
    assert!(
        unready,
        "B's /readyz stayed 200 with every worker waiting for the lock: {}",
        readyz.text()
    );
    other.assert_ok_body(b"other\n");
    // Free again: everything completes.
    a.signal(libc::SIGCONT);
    let resp = append.response();
    resp.assert_status(200);
    b.get("/file/f.txt").assert_ok_body(b"one\ntwo\n");
    b.get("/readyz").assert_status(200);
}

/// `/wc` of a 1 TiB sparse file planted by another writer counts its data only (a hole holds
/// no `\n`): it answers at once with the right count. Before, it read a tebibyte of zeros.
#[test]
fn a_line_count_skips_the_holes_of_a_huge_sparse_file() {
    let server = Server::start();
    let path = server.root().join("sparse.csv");
    let file = fs::File::create(&path).unwrap();
    let len = 1u64 << 40;
    if let Err(e) = file.set_len(len) {
        return eprintln!("skipped: the temp filesystem takes no 1 TiB sparse file: {e}");
    }
    use std::os::unix::fs::FileExt;
    file.write_all_at(b"a,b\n1,2\n", 0).unwrap();
    file.write_all_at(b"3,4\n", len / 2).unwrap();
    file.write_all_at(b"5,6\n", len - 4).unwrap();
    drop(file);
    let started = std::time::Instant::now();
    server.get("/file/sparse.csv/wc").assert_ok_body("4");
    eprintln!("/wc of a 1 TiB sparse file took {:?}", started.elapsed());
}

/// A line count whose client disconnects stops: with one worker and every file read slowed
/// (strace delays each read 200 ms, so counting 64 MiB would take about a minute), a small
/// GET sent after the counting client left is answered, and the log says the count stopped.
/// Before, the worker counted on for nobody and the GET waited behind it.
#[test]
fn a_line_count_stops_when_its_client_has_gone() {
    let Some(wrapper) = strace_injecting("read,pread64", "read,pread64:delay_enter=200000") else {
        return;
    };
    let home = TempDir::new();
    let root = home.path().join("root");
    fs::create_dir(&root).unwrap();
    let line = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n";
    fs::write(root.join("big.csv"), line.repeat((64 << 20) / line.len())).unwrap();
    fs::write(root.join("small.txt"), b"small\n").unwrap();
    let server = Server::start_wrapped_on(&root, &wrapper, &["--workers", "1"]);
    let mut count = server.connect();
    count.send(b"GET /file/big.csv/wc HTTP/1.1\r\nHost: t\r\n\r\n");
    // Let the worker start counting, then leave.
    thread::sleep(Duration::from_millis(500));
    drop(count);
    let started = std::time::Instant::now();
    server.get("/file/small.txt").assert_ok_body(b"small\n");
    eprintln!(
        "the small GET after the counting client left took {:?}",
        started.elapsed()
    );
    let stopped = wait_until(Duration::from_secs(10), || server.log().contains("stopped after"));
    assert!(stopped, "no log line saying the line count stopped:\n{}", server.log());
}

/// Fills `root` until the volume refuses: with empty files when `inodes`, else with one
/// file's bytes. Returns the names made.
fn fill(root: &Path, inodes: bool) -> Vec<String> {
    let mut names = Vec::new();
    if inodes {
        for i in 0..100_000 {
            let name = format!("filler-{i}");
            if fs::File::create(root.join(&name)).is_err() {
                break;
            }
            names.push(name);
        }
    } else {
        let _ = fs::write(root.join("filler-0"), vec![b'x'; 64 << 20]);
        names.push("filler-0".into());
    }
    names
}

/// The service starts on a volume with no inode (and, separately, no byte) left, serves reads
/// and deletes there with `/readyz` 503 and writes 507, and becomes ready by itself once a
/// delete frees space. Before, it exited 1 at start (its writable check could not create its
/// probe file), so a restarted pod crash-looped with its data out of reach; and with no byte
/// but inodes left it said ready.
#[test]
fn the_service_starts_and_serves_on_a_full_volume() {
    for (options, inodes) in [("size=1m,nr_inodes=16", true), ("size=1m", false)] {
        let tmpfs = match Mounted::tmpfs(options) {
            Ok(tmpfs) => tmpfs,
            Err(reason) => return eprintln!("skipped: {reason}"),
        };
        let root = tmpfs.root();
        fs::write(root.join("keep.txt"), b"kept\n").unwrap();
        let fillers = fill(&root, inodes);
        assert!(!fillers.is_empty());
        let what = if inodes { "no inode left" } else { "no byte left" };
        let server = Server::start_on(&root, &[]);
        server.get("/file/keep.txt").assert_ok_body(b"kept\n");
        let ready = server.get("/readyz");
        assert_eq!(ready.status, 503, "{what}: /readyz {}", ready.text());
        server.post("/file/new.txt", b"new\n").assert_error(507);
        assert!(!server.exists("new.txt"), "{what}");
        server.get("/file/keep.txt/wc").assert_ok_body("1");
        // Deleting frees space, and readiness comes back by itself.
        for name in &fillers {
            server.delete(&format!("/file/{name}")).assert_status(200);
        }
        let back = wait_until(Duration::from_secs(10), || server.get("/readyz").status == 200);
        assert!(back, "{what}: /readyz stayed 503 after space was freed");
        server.post("/file/new.txt", b"new\n").assert_status(200);
    }
}

/// Everything under `dir`, relative paths, sorted (to show a directory is untouched).
fn tree_of(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in fs::read_dir(&at).into_iter().flatten().flatten() {
            let path = entry.path();
            out.push(path.strip_prefix(dir).unwrap().display().to_string());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Every request a server gets after its root was renamed away, replaced by a new empty
/// directory, or deleted, is answered 503 naming the root; nothing is written to the detached
/// directory or to its replacement; and an upload in flight when the root is renamed is never
/// acknowledged. Before, writes after a rename were acknowledged (200) into the detached
/// directory, and a deleted root listed as an empty 200.
#[test]
fn a_root_renamed_replaced_or_deleted_is_refused_and_gets_no_write() {
    #[derive(Debug, Clone, Copy)]
    enum Fate {
        Renamed,
        Replaced,
        Deleted,
    }
    for fate in [Fate::Renamed, Fate::Replaced, Fate::Deleted] {
        let home = TempDir::new();
        let root = home.path().join("root");
        let moved = home.path().join("moved");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("a.txt"), b"a\n").unwrap();
        let server = Server::start_on(&root, &[]);
        server.get("/file/a.txt").assert_ok_body(b"a\n");
        // An upload in flight: its head and half its body are in before the root goes.
        let mut upload = server.connect();
        upload.send(b"POST /file/inflight.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\nhalf");
        thread::sleep(Duration::from_millis(200));
        match fate {
            Fate::Renamed => fs::rename(&root, &moved).unwrap(),
            Fate::Replaced => {
                fs::rename(&root, &moved).unwrap();
                fs::create_dir(&root).unwrap();
            }
            Fate::Deleted => fs::remove_dir_all(&root).unwrap(),
        }
        let before = (tree_of(&moved), tree_of(&root));
        upload.send(b"done");
        let resp = upload.response();
        assert_eq!(resp.status, 503, "{fate:?}: the in-flight upload: {}", resp.text());
        // Its temp file goes, and it never takes a name in the detached directory.
        let settled = wait_until(Duration::from_secs(5), || {
            !tree_of(&moved)
                .iter()
                .chain(&tree_of(&root))
                .any(|n| n.starts_with(".http-nas-"))
        });
        let after_inflight = (tree_of(&moved), tree_of(&root));
        assert!(settled, "{fate:?}: temp files left: {after_inflight:?}");
        assert!(
            !after_inflight.0.contains(&"inflight.txt".to_string()),
            "{fate:?}: the in-flight upload landed in the detached root"
        );
        for (what, resp) in [
            ("POST", server.post("/file/new.txt", b"new\n")),
            ("append", server.append("/file/a.txt", b"more\n")),
            ("GET", server.get("/file/a.txt")),
            ("listing", server.get("/file/")),
            ("wc", server.get("/file/a.txt/wc")),
            ("DELETE", server.delete("/file/a.txt")),
        ] {
            assert_eq!(resp.status, 503, "{fate:?}: {what}: {}", resp.text());
            assert!(
                resp.text().contains("storage root"),
                "{fate:?}: {what}: {}",
                resp.text()
            );
        }
        assert_eq!(
            (tree_of(&moved), tree_of(&root)),
            after_inflight,
            "{fate:?}: written after the root went"
        );
        eprintln!("{fate:?}: before the in-flight upload finished {before:?}, after {after_inflight:?}");
        let ready = wait_until(Duration::from_secs(10), || server.get("/readyz").status == 503);
        assert!(ready, "{fate:?}: /readyz stayed 200");
    }
}

/// A new upload's temp file is created, then locked: a starting replica's sweep that finds it
/// in between takes its lock (LOCK_NB succeeds) and holds it until its unlink is done. Here
/// strace delays A's lock calls 3 s (to widen that instant) and B's unlink 2 s, and B is frozen
/// (SIGSTOP) while it holds the lock. A's upload never waits for B: it gives that name up to the
/// sweep and makes another temp file, and answers within its bounds (2 s lock bound, 3 s
/// injected per lock call).
#[test]
fn an_upload_never_waits_for_a_frozen_sweep_holding_its_new_temp_file() {
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
        wait_until(Duration::from_secs(5), || races::lock_holder(ino).is_some()),
        "B's sweep never locked A's temp file"
    );
    let holder = races::lock_holder(ino).unwrap();
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
