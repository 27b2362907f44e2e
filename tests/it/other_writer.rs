//! Another writer of the volume, trying to make the server act outside its root or hang on
//! what it plants.
//!
//! The swap test is the attack the README names: a thread exchanges a directory of the root and
//! a symlink to a directory outside it (`renameat2(RENAME_EXCHANGE)`, one atomic step, so at
//! every instant the name is one or the other) as fast as it can, while POST, append, GET, move
//! and DELETE run against paths through that name. A server that checks a path and then uses it
//! by name lands some of them outside; afterwards the outside must be exactly as it was.
//!
//! The planting tests put FIFOs, devices, sockets, symlinks and oversized files at the names the
//! server uses for itself and in the tree: every request answers (bounded by curl's and the raw
//! client's timeouts), nothing outside changes, and the server's memory stays flat.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::raw::Conn;
use crate::support::{Response, Server, TempDir, strace_injecting, strace_usable};

/// How long the swap test attacks each verb.
const ATTACK_TIME: Duration = Duration::from_millis(1500);

/// Everything under `dir`: relative path → what it is (file contents, a link's target, "dir").
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = fs::read_dir(dir.join(&rel)) else {
            continue;
        };
        for entry in entries.flatten() {
            let rel = rel.join(entry.file_name());
            let path = dir.join(&rel);
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let what = if meta.is_symlink() {
                format!("link {:?}", fs::read_link(&path).unwrap_or_default())
            } else if meta.is_dir() {
                stack.push(rel.clone());
                "dir".to_string()
            } else if meta.is_file() {
                format!(
                    "file {:?}",
                    String::from_utf8_lossy(&fs::read(&path).unwrap_or_default())
                )
            } else {
                "special".to_string()
            };
            out.insert(rel, what);
        }
    }
    out
}

/// Exchanges the names `a` and `b` atomically.
fn exchange(a: &Path, b: &Path) -> bool {
    let (a, b) = (
        CString::new(a.as_os_str().as_bytes()).expect("no NUL in a test path"),
        CString::new(b.as_os_str().as_bytes()).expect("no NUL in a test path"),
    );
    // SAFETY: both are valid NUL-terminated paths; AT_FDCWD with absolute paths.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    rc == 0
}

/// A root holding `d/` (a real directory) beside the link `s` → `<outside>/bait/`, a directory
/// laid out like `d` so that every request through `d` would find its way there if followed.
fn swap_arena() -> (Server, PathBuf) {
    swap_arena_under(None)
}

/// [`swap_arena`] with the server run under `wrapper` (see [`without_openat2`]).
fn swap_arena_under(wrapper: Option<(&TempDir, &[String])>) -> (Server, PathBuf) {
    let s = match wrapper {
        None => Server::start_with(&["--workers", "4"]),
        Some((home, wrapper)) => {
            let root = home.path().join("root");
            fs::create_dir(&root).unwrap();
            Server::start_wrapped_on(&root, wrapper, &["--workers", "4"])
        }
    };
    let bait = s.outside().join("bait");
    for (dir, label) in [(bait.clone(), "bait"), (s.root().join("d"), "inside")] {
        fs::create_dir_all(dir.join("sub/deeper")).unwrap();
        fs::write(dir.join("x"), format!("{label} x\n")).unwrap();
        fs::write(dir.join("log"), format!("{label} log\n")).unwrap();
        fs::write(dir.join("a"), format!("{label} a\n")).unwrap();
        fs::write(dir.join("sub/deeper/f"), format!("{label} f\n")).unwrap();
    }
    symlink(&bait, s.root().join("s")).unwrap();
    (s, bait)
}

/// Runs `request` (given a raw connection and a counter) in a loop for [`ATTACK_TIME`] while
/// another thread swaps `d` and `s`; returns how many requests were answered with each status.
fn under_swaps(s: &Server, request: impl Fn(&mut Conn, usize) -> Response) -> BTreeMap<u16, usize> {
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicUsize::new(0));
    let (d, link) = (s.root().join("d"), s.root().join("s"));
    let swapper = {
        let (stop, swaps) = (stop.clone(), swaps.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if exchange(&d, &link) {
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Leave `d` a directory again.
            if fs::symlink_metadata(&d).is_ok_and(|m| m.is_symlink()) {
                exchange(&d, &link);
            }
        })
    };
    let mut statuses = BTreeMap::new();
    let deadline = Instant::now() + ATTACK_TIME;
    let mut conn = s.connect();
    let mut i = 0;
    while Instant::now() < deadline {
        let response = request(&mut conn, i);
        if response
            .header("Connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"))
        {
            conn = s.connect();
        }
        *statuses.entry(response.status).or_insert(0) += 1;
        i += 1;
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    let swaps = swaps.load(Ordering::Relaxed);
    assert!(swaps > 100, "the swapper barely ran");
    eprintln!(
        "{swaps} swaps in {ATTACK_TIME:?}, {} requests",
        statuses.values().sum::<usize>()
    );
    statuses
}

fn send(conn: &mut Conn, method: &str, path: &str, headers: &str, body: &[u8]) -> Response {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    conn.send(head.as_bytes()).send(body);
    if method == "HEAD" {
        conn.head_response()
    } else {
        conn.response()
    }
}

/// The swap test for one verb: the outside is unchanged afterwards, and the server still serves.
fn swap_attack(verb: &str, request: impl Fn(&mut Conn, usize) -> Response) {
    swap_attack_on(swap_arena(), verb, request);
}

fn swap_attack_on((s, bait): (Server, PathBuf), verb: &str, request: impl Fn(&mut Conn, usize) -> Response) {
    let before = snapshot(&bait);
    let statuses = under_swaps(&s, request);
    let after = snapshot(&bait);
    let changed: Vec<_> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .map(|(k, v)| format!("{} is now {v}", k.display()))
        .chain(
            before
                .keys()
                .filter(|k| !after.contains_key(*k))
                .map(|k| format!("{} was removed", k.display())),
        )
        .collect();
    assert!(
        changed.is_empty(),
        "{verb} through a swapped name changed the outside ({statuses:?}):\n{}",
        changed.join("\n")
    );
    eprintln!("{verb} under swaps: {statuses:?}");
    s.assert_healthy();
}

#[test]
fn posts_through_a_swapped_directory_never_land_outside() {
    swap_attack("POST", |c, i| send(c, "POST", &format!("/file/d/up{i}"), "", b"new\n"));
}

#[test]
fn posts_into_new_subdirectories_of_a_swapped_directory_never_land_outside() {
    swap_attack("POST", |c, i| {
        send(c, "POST", &format!("/file/d/sub/n{i}/f"), "", b"new\n")
    });
}

#[test]
fn replacing_posts_through_a_swapped_directory_never_land_outside() {
    swap_attack("POST", |c, _| send(c, "POST", "/file/d/x", "", b"replaced\n"));
}

#[test]
fn appends_through_a_swapped_directory_never_land_outside() {
    swap_attack("append", |c, _| send(c, "PUT", "/file/d/log", "", b"appended\n"));
}

#[test]
fn large_appends_through_a_swapped_directory_never_land_outside() {
    let body = vec![b'z'; 200_000];
    swap_attack("append", |c, _| send(c, "PUT", "/file/d/sub/deeper/f", "", &body));
}

#[test]
fn reads_through_a_swapped_directory_never_read_outside() {
    swap_attack("GET", |c, i| {
        let r = match i % 4 {
            0 => send(c, "GET", "/file/d/x", "", b""),
            1 => send(c, "GET", "/file/d/sub", "", b""),
            2 => send(c, "GET", "/file/d/x/wc", "", b""),
            _ => send(c, "GET", "/file/d/sub/deeper/f/check", "", b""),
        };
        assert!(!r.text().contains("bait"), "served the outside: {}", r.text());
        r
    });
}

#[test]
fn moves_through_a_swapped_directory_never_move_outside_files() {
    swap_attack("move", |c, i| {
        if i % 2 == 0 {
            send(c, "PUT", "/file/d/a/mv", "", br#"{"path":"d/b"}"#)
        } else {
            send(c, "PUT", "/file/d/b/mv", "", br#"{"path":"d/sub/a"}"#)
        }
    });
}

#[test]
fn moves_onto_a_swapped_directory_never_replace_outside_files() {
    swap_attack("move", |c, i| {
        send(c, "POST", &format!("/file/m{i}"), "", b"mover\n");
        send(c, "PUT", &format!("/file/m{i}/mv"), "", br#"{"path":"d/x"}"#)
    });
}

#[test]
fn deletes_through_a_swapped_directory_never_delete_outside() {
    swap_attack("DELETE", |c, i| match i % 3 {
        0 => send(c, "DELETE", "/file/d/sub", "", b""),
        1 => send(c, "DELETE", "/file/d/x", "", b""),
        _ => send(c, "POST", "/file/d/sub/deeper/f", "", b"again\n"),
    });
}

/// `strace` making every `openat2` fail with `ENOSYS`, as on kernels before 5.6 or under a
/// seccomp profile that lacks it, so the server falls back to walking one component at a time;
/// its trace goes to `log`. `None` (and a printed reason) where strace cannot run.
fn without_openat2(log: &Path) -> Option<Vec<String>> {
    if !strace_usable() {
        return None;
    }
    let args = ["strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=openat2", "-e"];
    let mut wrapper: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    wrapper.extend([
        "inject=openat2:error=ENOSYS".into(),
        "-o".into(),
        log.display().to_string(),
    ]);
    Some(wrapper)
}

#[test]
fn without_openat2_the_walk_by_handle_keeps_posts_and_deletes_inside() {
    let home = TempDir::new();
    let log = home.path().join("strace.log");
    let Some(wrapper) = without_openat2(&log) else { return };
    swap_attack_on(
        swap_arena_under(Some((&home, &wrapper))),
        "POST and DELETE without openat2",
        |c, i| match i % 3 {
            0 => send(c, "POST", &format!("/file/d/sub/n{i}"), "", b"new\n"),
            1 => send(c, "PUT", "/file/d/sub/deeper/f", "", b"appended\n"),
            _ => send(c, "DELETE", "/file/d/sub", "", b""),
        },
    );
    let trace = fs::read_to_string(&log).unwrap_or_default();
    assert!(trace.contains("ENOSYS"), "openat2 was never refused:\n{trace}");
}

// ---- planted things ----

/// Makes a FIFO at `path`.
fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).expect("no NUL in a test path");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o666) },
        0,
        "mkfifo {}",
        path.display()
    );
}

/// Makes a character device like `/dev/zero` at `path`, if this process may (root, not in a
/// user namespace that forbids it).
fn mkdev_zero(path: &Path) -> bool {
    let c = CString::new(path.as_os_str().as_bytes()).expect("no NUL in a test path");
    // SAFETY: a valid NUL-terminated path; 1:5 is /dev/zero.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 5)) };
    if rc != 0 {
        eprintln!(
            "skipping the device case: mknod refused ({})",
            std::io::Error::last_os_error()
        );
    }
    rc == 0
}

/// Binds a Unix socket at `path` (kept open by the returned listener).
fn socket_at(path: &Path) -> std::os::unix::net::UnixListener {
    std::os::unix::net::UnixListener::bind(path).expect("bind a unix socket")
}

#[test]
fn special_files_in_the_tree_are_409_not_regular_file_and_never_block() {
    let s = Server::start_with(&["--workers", "2"]);
    let root = s.root();
    mkfifo(&root.join("fifo"));
    let _socket = socket_at(&root.join("sock"));
    let dev = mkdev_zero(&root.join("zero"));
    symlink("/dev/zero", root.join("devlink")).unwrap();
    let mut names = vec!["fifo", "sock"];
    if dev {
        names.push("zero");
    }
    for name in &names {
        for response in [
            s.get(&format!("/file/{name}")),
            s.get(&format!("/file/{name}/wc")),
            s.append(&format!("/file/{name}"), "x"),
            s.post(&format!("/file/{name}"), "x"),
        ] {
            response.assert_error(409);
            let kind = serde_json::from_slice::<serde_json::Value>(&response.body).unwrap()["error"].clone();
            assert_eq!(kind, "not_regular_file", "{name}: {}", response.text());
        }
        assert_eq!(s.head(&format!("/file/{name}")).status, 409, "HEAD {name}");
    }
    // A link to a device outside the root is refused as outside.
    s.get("/file/devlink").assert_error(403);
    s.append("/file/devlink", "x").assert_error(403);
    // The listing names them as `other`, with size 0.
    let listing = s.get_with("/file/", &["Accept: application/json"]).assert_ok_json();
    let kinds: BTreeMap<String, String> = listing
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for name in &names {
        assert_eq!(kinds.get(*name).map(String::as_str), Some("other"), "{kinds:?}");
    }
    // They can still be deleted (an operator cleaning up), which never opens them.
    s.delete("/file/fifo").assert_status(200);
    assert!(!root.join("fifo").exists());
    assert!(fs::metadata("/dev/zero").unwrap().file_type().is_char_device());
    s.assert_healthy();
}

#[test]
fn things_planted_at_the_servers_own_names_never_hang_or_reach_outside() {
    let mut s = Server::start_with(&["--workers", "2"]);
    let root = s.root();
    let victim = s.outside().join("victim.txt");
    fs::write(&victim, "victim\n").unwrap();
    let before = snapshot(s.outside());
    s.write("d/file", "hello\n");
    let prefixes = [
        ".http-nas-tmp-",
        ".http-nas-journal-",
        ".http-nas-probe-",
        ".http-nas-trash-",
        ".HTTP-NAS-TMP-",
    ];
    // Every internal name the server could pick is random but for the journal's, which is the
    // file's inode: plant at those, and at guessable spellings of the random ones.
    use std::os::unix::fs::MetadataExt;
    let ino = fs::metadata(root.join("d/file")).unwrap().ino();
    let mut planted = Vec::new();
    for (i, prefix) in prefixes.iter().enumerate() {
        for dir in ["", "d/"] {
            let suffixes = [format!("{ino}"), "0".repeat(16), "1".to_string()];
            for (j, suffix) in suffixes.iter().enumerate() {
                let path = root.join(format!("{dir}{prefix}{suffix}"));
                match (i + j) % 5 {
                    0 => mkfifo(&path),
                    1 => symlink(&victim, &path).unwrap(),
                    2 => fs::write(&path, vec![b'9'; 3 << 20]).unwrap(),
                    3 => symlink("/dev/zero", &path).unwrap(),
                    _ => fs::create_dir_all(path.join("x")).unwrap(),
                }
                planted.push(path);
            }
        }
    }
    // The start-up sweep meets all of it.
    s.restart();
    let rss_before = s.proc_status("VmRSS");
    for _ in 0..20 {
        s.get("/file/d/file").assert_ok_body("hello\n");
        s.get("/file/d").assert_status(200);
        s.get("/file/").assert_status(200);
        s.get("/file/d/file/wc").assert_status(200);
        s.get("/file/d/file/check").assert_status(200);
        s.get("/readyz").assert_status(200);
    }
    s.append("/file/d/file", "more\n").assert_status(200);
    s.post("/file/d/new", "new\n").assert_status(200);
    s.put_json("/file/d/new/mv", r#"{"path":"d/moved"}"#).assert_status(200);
    s.delete("/file/d/moved").assert_status(200);
    s.get("/file/d/file").assert_ok_body("hello\nmore\n");
    let rss_after = s.proc_status("VmRSS");
    assert!(
        rss_after < rss_before + 2048,
        "memory grew from {rss_before} kB to {rss_after} kB"
    );
    let now = snapshot(s.outside());
    let outside_changed: Vec<_> = now
        .iter()
        .filter(|(k, v)| !k.starts_with("root") && before.get(*k) != Some(v))
        .collect();
    assert!(outside_changed.is_empty(), "outside changed: {outside_changed:?}");
    assert_eq!(fs::read(&victim).unwrap(), b"victim\n");
    s.assert_healthy();
}

// ---- names ----

/// Creates the file `name` (raw bytes) in the root, as another writer of the volume would.
fn plant_named(s: &Server, name: &[u8], contents: &str) -> PathBuf {
    let path = s.root().join(std::ffi::OsStr::from_bytes(name));
    fs::write(&path, contents).unwrap();
    path
}

#[test]
fn names_other_writers_made_are_listed_one_per_line_and_found_by_their_line() {
    let s = Server::start();
    // (name on disk, the line the listing must show)
    let cases: [(&[u8], &str); 8] = [
        // A literal `%41` must not list as the line that finds `aA`: the listing escapes `%`
        // itself, so every listed line decodes back to exactly one name.
        (b"a%41", "a%2541"),
        (b"aA", "aA"),
        (b"q?x#y", "q%3Fx%23y"),
        (b"report.csv\nsecrets.txt", "report.csv%0Asecrets.txt"),
        (b"caf\xe9.txt", "caf%E9.txt"),
        (b"tab\tcr\r", "tab%09cr%0D"),
        ("rtl\u{202E}txt.exe".as_bytes(), "rtl%E2%80%AEtxt.exe"),
        ("plain caf\u{e9}.txt".as_bytes(), "plain%20caf\u{e9}.txt"),
    ];
    for (i, (name, _)) in cases.iter().enumerate() {
        plant_named(&s, name, &format!("contents {i}\n"));
    }
    let listing = s.get("/file/").assert_status(200).text();
    let lines: Vec<&str> = listing.lines().collect();
    let mut want: Vec<&str> = cases.iter().map(|(_, line)| *line).collect();
    want.sort_by_key(|line| {
        let i = cases.iter().position(|(_, l)| l == line).unwrap();
        cases[i].0.to_vec()
    });
    assert_eq!(lines, want, "one line per name, byte-sorted by the real names");
    let json = s.get_with("/file/", &["Accept: application/json"]).assert_ok_json();
    let json_hrefs: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["href"].as_str().unwrap())
        .collect();
    assert_eq!(json_hrefs, want, "the JSON listing's hrefs are the lines");
    for (i, (name, line)) in cases.iter().enumerate() {
        // A script does `curl "$base/$line"`: the line itself is the URL path (spaces aside).
        let url = format!("/file/{}", line.replace(' ', "%20"));
        s.get(&url).assert_ok_body(format!("contents {i}\n"));
        s.get(&format!("{url}/wc")).assert_ok_body("1");
        s.delete(&url).assert_status(200);
        assert!(
            !s.root().join(std::ffi::OsStr::from_bytes(name)).exists(),
            "{line} deleted"
        );
    }
}

#[test]
fn new_names_that_forge_lines_or_disguise_themselves_are_refused() {
    let s = Server::start();
    s.write("src.txt", "src");
    let refused = [
        "a%0Ab",
        "a%0Db",
        "tab%09",
        "caf%E9.txt",
        "rtl%E2%80%AEtxt.exe",
        "ls%E2%80%A8x",
        "ps%E2%80%A9x",
        "%EF%BB%BFbom.txt",
        "lrm%E2%80%8Ex",
        "isolate%E2%81%A6x",
        "back%5Cslash",
    ];
    for name in refused {
        s.post(&format!("/file/{name}"), "x").assert_error(400);
        s.append(&format!("/file/d/{name}"), "x").assert_error(400);
        s.put_json("/file/src.txt/mv", &format!(r#"{{"path":"{name}"}}"#))
            .assert_error(400);
    }
    let left: Vec<_> = fs::read_dir(s.root())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["src.txt"], "nothing created");
}

#[test]
fn the_reserved_prefix_is_reserved_in_any_letter_case() {
    let s = Server::start();
    plant_named(&s, b".HTTP-NAS-tmp-planted", "hidden\n");
    plant_named(&s, b".Http-Nas-journal-1", "hidden\n");
    plant_named(&s, b"visible", "v\n");
    s.get("/file/").assert_ok_body("visible\n");
    for name in [".HTTP-NAS-tmp-planted", ".Http-Nas-journal-1", ".HTTP-NAS-new"] {
        s.get(&format!("/file/{name}")).assert_error(400);
        s.post(&format!("/file/{name}"), "x").assert_error(400);
        s.delete(&format!("/file/{name}")).assert_error(400);
    }
}

#[test]
fn a_trailing_slash_names_a_directory_only() {
    let s = Server::start();
    s.write("d/f", "file\n");
    s.write("d/sub/g", "g\n");
    s.get("/file/d/f/").assert_error(404);
    s.head("/file/d/f/").assert_status(404);
    s.get("/file/d/f").assert_ok_body("file\n");
    s.get("/file/d/sub/").assert_ok_body("g\n");
    s.get("/file/d/f//check").assert_error(404);
    s.put_json("/file/d/f%2F/mv", r#"{"path":"moved"}"#).assert_error(400);
    s.delete("/file/d/f/").assert_error(404);
    assert_eq!(s.read("d/f"), b"file\n");
    s.delete("/file/d/sub/").assert_status(200);
    assert!(!s.exists("d/sub"));
}

#[test]
fn a_segment_ending_in_an_encoded_slash_is_refused() {
    let s = Server::start();
    s.write("d/f", "file\n");
    s.post("/file/d/f%2F", "replaced").assert_error(400);
    s.post("/file/d/new%2f", "new").assert_error(400);
    s.append("/file/d/f%2F", "more").assert_error(400);
    s.get("/file/d/f%2F").assert_error(400);
    s.get("/file/d%2F").assert_error(400);
    assert_eq!(s.read("d/f"), b"file\n");
    assert!(!s.exists("d/new"));
    // An encoded slash inside a segment still separates names, as before.
    s.get("/file/d%2Ff").assert_ok_body("file\n");
}

// ---- a distributed filesystem's stale handles ----

#[test]
fn opens_that_fail_with_estale_are_tried_again() {
    // GlusterFS and NFS answer ESTALE to about one open in a thousand right after a rename on
    // another client. strace makes every third openat fail so; every request must still work.
    // From the 10th call of each thread on (the loader's own opens must succeed).
    let calls = "openat,openat2,newfstatat";
    let Some(strace) = strace_injecting(calls, &format!("{calls}:error=ESTALE:when=10+3")) else {
        return;
    };
    // cargo's library path makes the loader try many more opens before main.
    let mut wrapper: Vec<String> = ["env", "-u", "LD_LIBRARY_PATH"].map(String::from).to_vec();
    wrapper.extend(strace);
    let home = TempDir::new();
    let root = home.path().join("root");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("f"), "data\n").unwrap();
    // One worker, so one thread's calls reach the injection's start.
    let s = Server::start_wrapped_on(&root, &wrapper, &["--workers", "1"]);
    for i in 0..20 {
        s.get("/file/f").assert_ok_body("data\n");
        s.post(&format!("/file/d/up{i}"), "up\n").assert_status(200);
        s.append("/file/d/log", "line\n").assert_status(200);
        s.get("/file/d/log/wc").assert_ok_body(format!("{}", i + 1));
    }
    s.put_json("/file/d/up0/mv", r#"{"path":"moved"}"#).assert_status(200);
    s.delete("/file/d").assert_status(200);
    s.get("/file/").assert_ok_body("f\nmoved\n");
}

#[test]
fn files_are_never_opened_for_o_append_nor_mapped_shared() {
    // docs/operations.md, "Several replicas": the service never relies on O_APPEND across
    // replicas (it writes at the size read under the lock) and never uses shared mmap (GlusterFS
    // refuses it). Every open and mmap of a workload of uploads, appends, reads and moves is traced.
    if !strace_usable() {
        return;
    }
    let home = TempDir::new();
    let root = home.path().join("root");
    fs::create_dir(&root).unwrap();
    let trace = home.path().join("trace.log");
    let wrapper: Vec<String> = ["strace", "-f", "-qq", "-e", "trace=openat,openat2,open,mmap"]
        .iter()
        .map(|s| s.to_string())
        .chain(["-o".to_string(), trace.display().to_string()])
        .collect();
    let s = Server::start_wrapped_on(&root, &wrapper, &[]);
    s.post("/file/d/up", vec![b'u'; 300_000]).assert_status(200);
    for _ in 0..3 {
        s.append("/file/d/log", "small\n").assert_status(200);
        s.append("/file/d/log", vec![b'L'; 200_000]).assert_status(200);
    }
    s.get("/file/d/log").assert_status(200);
    s.get("/file/d/log/wc").assert_status(200);
    s.put_json("/file/d/up/mv", r#"{"path":"d/moved"}"#).assert_status(200);
    s.delete("/file/d").assert_status(200);
    drop(s);
    let text = fs::read_to_string(&trace).unwrap();
    assert!(text.contains("openat"), "nothing traced:\n{text}");
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("O_APPEND") || l.contains("MAP_SHARED"))
        .collect();
    assert!(
        bad.is_empty(),
        "opened for O_APPEND or mapped shared:\n{}",
        bad.join("\n")
    );
}
