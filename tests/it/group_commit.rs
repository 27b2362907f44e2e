//! Group commit: appends queued on one file share one crash record and one sync, and stay all
//! or nothing per append through failed syncs and `kill -9` (docs/write-protocol.md, "An
//! append").

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use crate::support::races::shared_root;
use crate::support::raw::Conn;
use crate::support::{Server, strace_injecting, strace_usable};

/// Bytes of one numbered record.
const RECORD: usize = 100;

/// Record `seq` of lane `lane`: fixed size, so a torn or doubled one is seen.
fn record(lane: usize, seq: usize) -> Vec<u8> {
    let mut text = format!("lane {lane:02} seq {seq:06} ").into_bytes();
    text.resize(RECORD - 1, b'a' + (seq % 26) as u8);
    text.push(b'\n');
    text
}

/// Sends an append of `body` to `path` on `conn`: its status, or `None` if the connection
/// broke (the server died).
fn append_on(conn: &mut Conn, path: &str, body: &[u8]) -> Option<u16> {
    let head = format!(
        "PUT /file/{path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.send(head.as_bytes()).send(body);
    conn.try_response().map(|r| r.status)
}

/// Checks `bytes` (a file of records from several lanes) against what was acknowledged:
/// every record whole, none twice, every acknowledged one there, and nothing past the one
/// each lane had in flight. Returns how many records each lane has.
fn check_records(bytes: &[u8], acked: &[usize], what: &str) -> Vec<usize> {
    assert_eq!(
        bytes.len() % RECORD,
        0,
        "{what}: {} bytes are not whole records",
        bytes.len()
    );
    let mut seen: HashMap<(usize, usize), usize> = HashMap::new();
    for (at, got) in bytes.chunks(RECORD).enumerate() {
        let text = String::from_utf8_lossy(got);
        let fields: Vec<&str> = text.split(' ').collect();
        let parsed = (fields.len() >= 4)
            .then(|| Some((fields[1].parse::<usize>().ok()?, fields[3].parse::<usize>().ok()?)))
            .flatten();
        let Some((lane, seq)) = parsed.filter(|&(lane, seq)| got == record(lane, seq)) else {
            panic!("{what}: record {at} is torn: {text:?}");
        };
        *seen.entry((lane, seq)).or_default() += 1;
    }
    let mut present = vec![0; acked.len()];
    for (&(lane, seq), &times) in &seen {
        assert_eq!(times, 1, "{what}: lane {lane} record {seq} is there {times} times");
        assert!(
            lane < acked.len() && seq <= acked[lane],
            "{what}: lane {lane} record {seq} was never sent"
        );
        present[lane] += 1;
    }
    for (lane, &n) in acked.iter().enumerate() {
        for seq in 0..n {
            assert!(
                seen.contains_key(&(lane, seq)),
                "{what}: acknowledged lane {lane} record {seq} is lost"
            );
        }
    }
    present
}

/// Appends records to `path` from `lanes` connections to `addrs` (lane i to `addrs[i %
/// len]`) until `stop`, or their server dies; `acked[i]` counts lane i's answered 200s.
fn run_lanes(addrs: &[SocketAddr], path: &str, acked: &[AtomicUsize], stop: &AtomicBool) {
    thread::scope(|scope| {
        for (lane, count) in acked.iter().enumerate() {
            let addr = addrs[lane % addrs.len()];
            scope.spawn(move || {
                let Some(mut conn) = Conn::try_open(addr) else {
                    return;
                };
                while !stop.load(Ordering::Relaxed) {
                    let seq = count.load(Ordering::SeqCst);
                    match append_on(&mut conn, path, &record(lane, seq)) {
                        Some(200) => count.store(seq + 1, Ordering::SeqCst),
                        _ => return,
                    }
                }
            });
        }
    });
}

/// Counts the sync calls (`fsync`, `fdatasync`) in an strace log.
fn syncs_in(log: &str) -> usize {
    log.lines()
        .filter(|line| line.contains("fsync(") || line.contains("fdatasync("))
        .count()
}

#[test]
fn appends_queued_on_one_file_share_their_syncs() {
    const CLIENTS: usize = 8;
    if !strace_usable() {
        return;
    }
    let (home, root) = shared_root();
    fs::write(root.join("log"), "").unwrap();
    let log = home.path().join("syncs.strace");
    // Every fdatasync takes 300 ms, so appends sent together queue behind the first one.
    let wrapper: Vec<String> = [
        "strace",
        "-f",
        "-qq",
        "-o",
        log.to_str().unwrap(),
        "-e",
        "trace=fsync,fdatasync",
        "-e",
        "inject=fdatasync:delay_enter=300000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let s = Server::start_wrapped_on(&root, &wrapper, &["--fsync", "true", "--workers", "16"]);
    let before = syncs_in(&fs::read_to_string(&log).unwrap_or_default());
    let statuses: Vec<Option<u16>> = thread::scope(|scope| {
        let lanes: Vec<_> = (0..CLIENTS)
            .map(|lane| {
                let addr = s.addr();
                scope.spawn(move || append_on(&mut Conn::open(addr), "log", &record(lane, 0)))
            })
            .collect();
        lanes.into_iter().map(|l| l.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|&st| st == Some(200)), "{statuses:?}");
    let syncs = syncs_in(&fs::read_to_string(&log).unwrap()) - before;
    eprintln!("{CLIENTS} appends took {syncs} syncs");
    assert!(
        syncs < 2 * CLIENTS,
        "{CLIENTS} appends sent together took {syncs} syncs: each paid its own"
    );
    check_records(&s.read("log"), &[1; CLIENTS], "the file");
}

#[test]
fn a_failed_sync_fails_every_append_of_its_batch_and_leaves_none_of_their_bytes() {
    const LATER: usize = 4;
    if !strace_usable() {
        return;
    }
    let (_home, root) = shared_root();
    fs::write(root.join("log"), record(9, 0)).unwrap();
    {
        // One append first, so the file's crash record slot exists: from then on each batch
        // syncs the slot (its leader's first fdatasync) and then its bytes (the second).
        let warm = Server::start_on(&root, &["--fsync", "true"]);
        warm.append("/file/log", record(9, 1)).assert_ok_json();
    }
    // Every thread's second fdatasync (a batch leader's sync of the batch's bytes) fails, and
    // every pwrite takes 200 ms, so appends sent during the first batch queue for the next.
    let wrapper: Vec<String> = [
        "strace",
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=fdatasync,pwrite64",
        "-e",
        "inject=fdatasync:error=EIO:when=2",
        "-e",
        "inject=pwrite64:delay_enter=200000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let base = [record(9, 0), record(9, 1)].concat();
    let s = Server::start_wrapped_on(&root, &wrapper, &["--fsync", "true", "--workers", "16"]);
    let statuses: Vec<Option<u16>> = thread::scope(|scope| {
        let addr = s.addr();
        let first = scope.spawn(move || append_on(&mut Conn::open(addr), "log", &record(0, 0)));
        thread::sleep(Duration::from_millis(100));
        let later: Vec<_> = (1..=LATER)
            .map(|lane| scope.spawn(move || append_on(&mut Conn::open(addr), "log", &record(lane, 0))))
            .collect();
        std::iter::once(first).chain(later).map(|t| t.join().unwrap()).collect()
    });
    eprintln!("statuses: {statuses:?}");
    let mut acked = vec![0; LATER + 1];
    for (lane, status) in statuses.iter().enumerate() {
        match status {
            Some(200) => acked[lane] = 1,
            Some(500) => {}
            other => panic!("append {lane}: {other:?}"),
        }
    }
    let failed = acked.iter().filter(|&&n| n == 0).count();
    assert!(
        failed >= 2,
        "a failed sync of a batch fails every append of it: only {failed} failed: {statuses:?}"
    );
    let bytes = s.read("log");
    assert_eq!(&bytes[..base.len()], &base[..], "the appends before");
    let present = check_records(&bytes[base.len()..], &acked, "after the failed sync");
    assert_eq!(present, acked, "only acknowledged appends are there, each once");
    drop(s);
    // And so it stays for the next process, which appends as usual.
    let next = Server::start_on(&root, &["--fsync", "true"]);
    assert_eq!(next.read("log"), bytes);
    next.append("/file/log", record(9, 2)).assert_ok_json();
    assert_eq!(next.read("log"), [bytes, record(9, 2)].concat());
}

#[test]
fn kill9_while_batches_sync_keeps_every_acknowledged_append_once_and_tears_none() {
    const LANES: usize = 8;
    const KILLS: usize = 4;
    if !strace_usable() {
        return;
    }
    let (_home, root) = shared_root();
    // Slow syncs: batches form, and the kill lands inside one most of the time.
    let wrapper: Vec<String> = [
        "strace",
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=fsync,fdatasync",
        "-e",
        "inject=fsync,fdatasync:delay_enter=20000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut s = Server::start_wrapped_on(&root, &wrapper, &["--fsync", "true", "--workers", "16"]);
    let mut acked = [0usize; LANES];
    for kill in 0..KILLS {
        let stop = AtomicBool::new(false);
        let counts: Vec<AtomicUsize> = acked.iter().map(|&n| AtomicUsize::new(n)).collect();
        thread::scope(|scope| {
            let (addr, stop, counts) = (s.addr(), &stop, &counts);
            scope.spawn(move || run_lanes(&[addr], "log", counts, stop));
            thread::sleep(Duration::from_millis(400 + 170 * kill as u64));
            s.signal(libc::SIGKILL);
            stop.store(true, Ordering::Relaxed);
        });
        s.restart();
        let now: Vec<usize> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
        let present = check_records(&s.get("/file/log").body, &now, &format!("after kill {kill}"));
        eprintln!("kill {kill}: acknowledged {now:?}, present {present:?}");
        acked.copy_from_slice(&present);
    }
}

#[test]
fn processes_appending_to_one_file_while_one_is_killed_keep_every_acknowledged_append() {
    const LANES: usize = 9;
    let (_home, root) = shared_root();
    let args = ["--fsync", "true", "--workers", "8"];
    let servers: Vec<Server> = (0..3).map(|_| Server::start_on(&root, &args)).collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(Server::addr).collect();
    let stop = AtomicBool::new(false);
    let counts: Vec<AtomicUsize> = (0..LANES).map(|_| AtomicUsize::new(0)).collect();
    thread::scope(|scope| {
        let (stop, counts, addrs) = (&stop, &counts, &addrs);
        scope.spawn(move || run_lanes(addrs, "shared.log", counts, stop));
        thread::sleep(Duration::from_millis(700));
        servers[0].signal(libc::SIGKILL);
        thread::sleep(Duration::from_millis(700));
        stop.store(true, Ordering::Relaxed);
    });
    let acked: Vec<usize> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    eprintln!("acknowledged per lane: {acked:?}");
    // Read through a survivor: only committed bytes, whatever the dead one left.
    let present = check_records(&servers[1].get("/file/shared.log").body, &acked, "after the kill");
    eprintln!("present per lane: {present:?}");
}

/// One append that does not fit on a full volume, batched with small ones that do: only it is
/// refused (507); each small one is appended once. A batch that fails for lack of space is
/// rolled back whole, so the service tries each of its appends again alone.
#[test]
fn on_a_full_volume_only_the_append_that_does_not_fit_is_refused() {
    const SMALL: usize = 5;
    let disk = match crate::support::mounts::Mounted::tmpfs("size=4m") {
        Ok(disk) => disk,
        Err(why) => return crate::support::skip(&format!("a 4 MiB tmpfs: {why}")),
    };
    let root = disk.root();
    // Every fdatasync takes 700 ms, so appends sent while the first one syncs form one batch.
    let Some(wrapper) = strace_injecting("fdatasync", "fdatasync:delay_enter=700000") else {
        return;
    };
    let s = Server::start_wrapped_on(&root, &wrapper, &["--fsync", "true", "--workers", "16"]);
    let small = vec![b'a'; 1000];
    s.send("POST", "/file/f", &small, &[]).assert_ok_json();
    // About 2 MB left: the large body spools (1.5 MB) but does not fit once more in the file.
    fs::write(root.join("filler"), vec![0u8; 1_900_000]).unwrap();
    let big = vec![b'b'; 1_500_000];
    let statuses: Vec<(bool, u16)> = thread::scope(|scope| {
        let first = scope.spawn(|| (false, s.send("PUT", "/file/f", &small, &[]).status));
        thread::sleep(Duration::from_millis(300));
        let mut lanes: Vec<_> = (0..SMALL)
            .map(|_| scope.spawn(|| (false, s.send("PUT", "/file/f", &small, &[]).status)))
            .collect();
        thread::sleep(Duration::from_millis(50));
        lanes.push(scope.spawn(|| (true, s.send("PUT", "/file/f", &big, &[]).status)));
        lanes.push(first);
        lanes.into_iter().map(|l| l.join().unwrap()).collect()
    });
    let smalls_ok = statuses.iter().filter(|&&(is_big, st)| !is_big && st == 200).count();
    let big_status = statuses.iter().find(|&&(is_big, _)| is_big).map(|&(_, st)| st);
    assert_eq!(smalls_ok, SMALL + 1, "every small append fits: {statuses:?}");
    assert_eq!(big_status, Some(507), "the large one does not: {statuses:?}");
    assert_eq!(
        s.read("f"),
        vec![b'a'; 1000 * (SMALL + 2)],
        "each small append once, nothing of the large one"
    );
}
