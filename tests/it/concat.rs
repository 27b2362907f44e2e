//! Server-side concatenation (`POST`/`PUT /file/{path}/concat`): byte-identical to `cat` of the
//! sources, atomic for readers, each source read at one committed state, all-or-nothing as an
//! append, no deadlock between concatenations feeding each other, clear refusals, nothing
//! changed on a full disk, and shared extents on XFS with reflink.

use crate::support::mounts::{Mounted, run};
use crate::support::races::record;
use crate::support::{Response, Server, TempDir, assert_same_bytes, random_bytes, skip};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

/// `POST` (or with `append`, `PUT`) `/file/{target}/concat` naming `sources`.
fn concat_with(s: &Server, target: &str, sources: &[String], append: bool, extra: &str, headers: &[&str]) -> Response {
    let list: Vec<String> = sources.iter().map(|p| format!("{p:?}")).collect();
    let body = format!("{{\"sources\": [{}]{extra}}}", list.join(", "));
    // Sent as an octet stream: the `/concat` suffix, not the Content-Type, makes it one.
    let method = if append { "PUT" } else { "POST" };
    s.send(method, &format!("/file/{target}/concat"), body.as_bytes(), headers)
}

fn concat(s: &Server, target: &str, sources: &[String]) -> Response {
    concat_with(s, target, sources, false, "", &[])
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// `cat` of the files under the root, run by the shell.
fn cat(root: &Path, sources: &[String]) -> Vec<u8> {
    let out = Command::new("cat")
        .current_dir(root)
        .args(sources)
        .output()
        .expect("run cat");
    assert!(out.status.success(), "cat failed");
    out.stdout
}

#[test]
fn a_concatenation_is_byte_identical_to_cat_of_its_sources() {
    let s = Server::start();
    let root = s.root();
    let mut all = Vec::new();
    for i in 0..1000 {
        // Sizes from 0 to ~300 KiB: empty sources, small ones, ones past the memory spool.
        let len = match i % 7 {
            0 => 0,
            1 => 1,
            2 => 4096,
            3 => 300_000 + i,
            _ => 17 * i,
        };
        let rel = format!("run/part-{i:04}");
        s.write(&rel, random_bytes(len, i as u64));
        all.push(rel);
    }
    for (what, sources) in [
        ("one source", all[3..4].to_vec()),
        ("two sources", all[1..3].to_vec()),
        ("an empty source", all[0..1].to_vec()),
        (
            "empty sources around others",
            vec![all[0].clone(), all[3].clone(), all[7].clone()],
        ),
        ("1,000 sources", all.clone()),
        ("a source twice", vec![all[3].clone(), all[3].clone()]),
    ] {
        let resp = concat(&s, "out/all.bin", &sources);
        let json = resp.assert_ok_json();
        let want = cat(&root, &sources);
        assert_eq!(json["size"], want.len() as u64, "{what}");
        assert_eq!(json["path"], "out/all.bin", "{what}");
        assert_eq!(
            resp.header("upload-offset"),
            Some(want.len().to_string().as_str()),
            "{what}"
        );
        assert_same_bytes(&s.read("out/all.bin"), &want, what);
        s.get("/file/out/all.bin").assert_ok_body(&want);
    }
    // Percent-encoded source names are decoded once, like URLs.
    concat(&s, "out/enc", &names(&["run%2Fpart-0003"])).assert_status(200);
    assert_same_bytes(&s.read("out/enc"), &s.read("run/part-0003"), "encoded source");
    s.expect_no_temp_files();
}

#[test]
fn put_concat_appends_all_or_nothing_with_upload_offset() {
    let s = Server::start();
    s.write("log.csv", b"head\n");
    s.write("p1", b"one\n");
    s.write("p2", b"two\n");
    let sources = names(&["p1", "p2"]);
    // A stale offset: 409 with the current size, nothing appended.
    let stale = concat_with(&s, "log.csv", &sources, true, "", &["Upload-Offset: 3"]);
    stale.assert_error(409);
    assert_eq!(stale.header("upload-offset"), Some("5"));
    assert_eq!(s.read("log.csv"), b"head\n");
    let ok = concat_with(&s, "log.csv", &sources, true, "", &["Upload-Offset: 5"]);
    assert_eq!(ok.assert_ok_json()["size"], 13);
    assert_eq!(ok.header("upload-offset"), Some("13"));
    // The retry of an append that landed: 409 saying the file already has the bytes.
    let again = concat_with(&s, "log.csv", &sources, true, "", &["Upload-Offset: 5"]);
    again.assert_error(409);
    assert_eq!(again.header("upload-offset"), Some("13"));
    assert_eq!(s.read("log.csv"), b"head\none\ntwo\n");
    // A missing source: nothing appended.
    concat_with(&s, "log.csv", &names(&["p1", "gone"]), true, "", &[]).assert_error(404);
    assert_eq!(s.read("log.csv"), b"head\none\ntwo\n");
    // A missing target is created, like any append.
    concat_with(&s, "new/log.csv", &sources, true, "", &[]).assert_status(200);
    assert_eq!(s.read("new/log.csv"), b"one\ntwo\n");
    s.expect_no_temp_files();
}

#[test]
fn refusals_name_the_source_at_fault_and_change_nothing() {
    let s = Server::start();
    s.write("t", b"target\n");
    s.write("a", b"a\n");
    fs::create_dir(s.root().join("dir")).unwrap();
    let fifo = s.root().join("fifo");
    run(Command::new("mkfifo").arg(&fifo)).unwrap();
    let json = ["Accept: application/json"];
    for (sources, status, kind, names_it) in [
        (names(&["a", "missing.csv"]), 404, "not_found", "missing.csv"),
        (names(&["dir"]), 409, "conflict", "dir"),
        (names(&["fifo"]), 409, "conflict", "fifo"),
        (names(&["a", "t"]), 409, "conflict", "t"),
    ] {
        let resp = concat_with(&s, "t", &sources, false, "", &json);
        resp.assert_error(status);
        let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(body["error"], kind, "{sources:?}");
        assert_eq!(body["path"], names_it, "{sources:?}");
        assert!(body["message"].as_str().unwrap().contains(names_it), "{body}");
        assert_eq!(s.read("t"), b"target\n", "{sources:?}: the target is unchanged");
    }
    // Without Accept: JSON a 404 is the seed's `Not Found` text, as every 404 (docs/API.md, Errors).
    let plain = concat(&s, "t", &names(&["nope"]));
    plain.assert_error(404);
    assert_eq!(plain.text(), "Not Found");
    let url = "/file/t/concat";
    for (body, why) in [
        (&b"not json"[..], "not JSON"),
        (b"{\"sources\": []}", "empty"),
        (b"{\"sources\": \"a\"}", "a list"),
        (b"{\"sources\": [\"../etc/passwd\"]}", "a bad path"),
        (b"{\"sources\": [\"a\"], \"delete_sources\": 1}", "delete_sources"),
    ] {
        s.send("POST", url, body, &[]).assert_error(400);
        assert_eq!(s.read("t"), b"target\n", "{why}");
    }
    // A repeated or unknown key, and a source spelt as a directory, are refused by name.
    for (body, names_it) in [
        (
            &b"{\"sources\": [\"a\"], \"sources\": [\"t\"]}"[..],
            "\"sources\" is given twice",
        ),
        (
            b"{\"sources\": [\"a\"], \"delete_source\": true}",
            "unknown key \"delete_source\"",
        ),
        (b"{\"sources\": [\"a/\"]}", "names a directory"),
    ] {
        let resp = s.send("POST", url, body, &[]);
        resp.assert_error(400);
        let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert!(body["message"].as_str().unwrap().contains(names_it), "{body}");
        assert!(s.exists("a"), "nothing deleted");
    }
    let huge = format!("{{\"sources\": [\"a\"], \"x\": \"{}\"}}", "a".repeat(9 << 20));
    let resp = s.send("POST", url, huge.as_bytes(), &[]);
    resp.assert_error(413);
    assert!(resp.text().contains("8388608"), "{}", resp.text());
    let too_many = format!("{{\"sources\": [{}]}}", vec!["\"a\""; 10_001].join(","));
    let resp = s.send("POST", url, too_many.as_bytes(), &[]);
    resp.assert_error(400);
    assert!(resp.text().contains("10000"), "{}", resp.text());
    // A file named `concat` is reached with the encoded form.
    s.post("/file/d%2Fconcat", "plain file").assert_status(200);
    s.get("/file/d%2Fconcat").assert_ok_body("plain file");
    s.get("/file/d/concat").assert_error(405);
    s.expect_no_temp_files();
}

#[test]
fn delete_sources_removes_the_sources_after_the_commit() {
    let s = Server::start();
    s.write("run/p1", b"1\n");
    s.write("run/p2", b"2\n");
    let resp = concat_with(
        &s,
        "all",
        &names(&["run/p1", "run/p2"]),
        false,
        ", \"delete_sources\": true",
        &[],
    );
    let json = resp.assert_ok_json();
    assert_eq!(json["deleted_sources"], serde_json::json!(["run/p1", "run/p2"]));
    assert_eq!(s.read("all"), b"1\n2\n");
    assert!(!s.exists("run/p1") && !s.exists("run/p2"));
    // Without it the sources stay.
    s.write("run/p3", b"3\n");
    concat(&s, "all", &names(&["run/p3"])).assert_status(200);
    assert!(s.exists("run/p3"));
}

#[test]
fn readers_see_the_old_or_the_new_target_only() {
    let s = Server::start();
    let a = random_bytes(3 << 20, 1);
    let b = random_bytes(5 << 20, 2);
    s.write("a1", &a[..1 << 20]);
    s.write("a2", &a[1 << 20..]);
    s.write("b1", &b[..2 << 20]);
    s.write("b2", &b[2 << 20..]);
    concat(&s, "t", &names(&["a1", "a2"])).assert_status(200);
    let done = std::sync::atomic::AtomicBool::new(false);
    thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut reads = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) || reads < 5 {
                let got = s.get("/file/t");
                got.assert_status(200);
                assert!(
                    got.body == a || got.body == b,
                    "a reader saw {} bytes that are neither version",
                    got.body.len()
                );
                reads += 1;
            }
            reads
        });
        for round in 0..10 {
            let sources = if round % 2 == 0 { ["b1", "b2"] } else { ["a1", "a2"] };
            concat(&s, "t", &names(&sources)).assert_status(200);
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        eprintln!("reads: {}", reader.join().unwrap());
    });
}

#[test]
fn a_source_appended_to_meanwhile_is_read_at_one_committed_state() {
    let s = Server::start();
    const RECORD: usize = 64 * 1024 + 100;
    s.write("src", record(0, RECORD));
    let done = std::sync::atomic::AtomicBool::new(false);
    thread::scope(|scope| {
        let appender = scope.spawn(|| {
            let mut n = 1;
            while !done.load(std::sync::atomic::Ordering::Relaxed) && n < 400 {
                s.append("/file/src", record(n, RECORD)).assert_status(200);
                n += 1;
            }
            n
        });
        for _ in 0..30 {
            let resp = concat(&s, "snap", &names(&["src"]));
            let size = resp.assert_ok_json()["size"].as_u64().unwrap() as usize;
            let got = s.read("snap");
            assert_eq!(got.len(), size);
            assert_eq!(size % RECORD, 0, "a concatenation copied part of an append");
            for (i, chunk) in got.chunks(RECORD).enumerate() {
                assert!(chunk == record(i, RECORD), "record {i} torn or out of order");
            }
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        eprintln!("appends: {}", appender.join().unwrap());
    });
}

#[test]
fn concatenations_feeding_each_other_both_finish() {
    let s = Server::start_with(&["--lock-timeout", "2"]);
    s.write("x", random_bytes(2 << 20, 1));
    s.write("y", random_bytes(2 << 20, 2));
    s.write("z", b"z");
    thread::scope(|scope| {
        let left = scope.spawn(|| {
            for _ in 0..20 {
                // x = y + z while y = x + z: each reads the other's target.
                concat(&s, "x", &names(&["y", "z"])).assert_status(200);
            }
        });
        for _ in 0..20 {
            concat(&s, "y", &names(&["x", "z"])).assert_status(200);
        }
        left.join().unwrap();
    });
    // Each is the other's earlier version plus `z`s: 2 MiB of one original, then only `z`s.
    for name in ["x", "y"] {
        let got = s.read(name);
        assert!(got.len() > 2 << 20, "{name}: {} bytes", got.len());
        assert!(
            got[2 << 20..].iter().all(|&b| b == b'z'),
            "{name} is not whole versions"
        );
    }
}

#[test]
fn a_concatenation_that_fills_the_disk_answers_507_and_changes_nothing() {
    let disk = match Mounted::tmpfs("size=4m") {
        Ok(disk) => disk,
        Err(why) => return skip(&why),
    };
    let root = disk.root();
    fs::write(root.join("t"), b"old target\n").unwrap();
    fs::write(root.join("p1"), random_bytes(1500 << 10, 1)).unwrap();
    fs::write(root.join("p2"), random_bytes(1500 << 10, 2)).unwrap();
    let s = Server::start_on(&root, &[]);
    concat(&s, "t", &names(&["p1", "p2"])).assert_error(507);
    assert_eq!(fs::read(root.join("t")).unwrap(), b"old target\n");
    concat_with(&s, "t", &names(&["p1", "p2"]), true, "", &[]).assert_error(507);
    assert_eq!(fs::read(root.join("t")).unwrap(), b"old target\n");
    s.expect_no_temp_files();
    // Room again: it works.
    fs::remove_file(root.join("p2")).unwrap();
    concat(&s, "t", &names(&["p1"])).assert_status(200);
}

/// A reflink-capable XFS on a loop device under a temp dir; unmounted on drop.
struct Xfs {
    _dir: TempDir,
    mountpoint: PathBuf,
}

impl Xfs {
    fn mount(image_mib: u64) -> Result<Xfs, String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root, cannot mount a loop device".into());
        }
        let dir = TempDir::new();
        let image = dir.path().join("xfs.img");
        let mountpoint = dir.path().join("mnt");
        fs::create_dir(&mountpoint).map_err(|e| format!("mkdir: {e}"))?;
        run(Command::new("truncate")
            .args(["-s", &format!("{image_mib}M")])
            .arg(&image))?;
        run(Command::new("mkfs.xfs")
            .args(["-q", "-f", "-m", "reflink=1"])
            .arg(&image))
        .map_err(|e| format!("mkfs.xfs (apt-get install xfsprogs): {e}"))?;
        run(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&mountpoint))
            .map_err(|e| format!("the kernel refused to mount XFS: {e}"))?;
        Ok(Xfs { _dir: dir, mountpoint })
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        let done = Command::new("umount").arg(&self.mountpoint).status();
        if !done.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.mountpoint).status();
        }
    }
}

/// Free bytes of the filesystem holding `path`.
fn free_bytes(path: &Path) -> u64 {
    let out = run(Command::new("stat").args(["-f", "-c", "%a %S"]).arg(path)).unwrap();
    let mut it = out.split_whitespace().map(|n| n.parse::<u64>().unwrap());
    it.next().unwrap() * it.next().unwrap()
}

#[test]
fn a_1_gib_concatenation_on_xfs_shares_extents_instead_of_copying() {
    let xfs = match Xfs::mount(3072) {
        Ok(xfs) => xfs,
        Err(why) => return skip(&why),
    };
    let root = xfs.mountpoint.join("root");
    fs::create_dir(&root).unwrap();
    let mut sources = Vec::new();
    fs::create_dir_all(root.join("run")).unwrap();
    for i in 0..8 {
        let rel = format!("run/part-{i}");
        run(Command::new("sh")
            .current_dir(&root)
            .args(["-c", &format!("head -c 134217728 /dev/urandom > {rel}")]))
        .unwrap();
        sources.push(rel);
    }
    run(&mut Command::new("sync")).unwrap();
    let s = Server::start_on(&root, &[]);
    let before = free_bytes(&root);
    concat(&s, "all.bin", &sources).assert_status(200);
    run(&mut Command::new("sync")).unwrap();
    let after = free_bytes(&root);
    let used = before.saturating_sub(after);
    eprintln!("free space used by a 1 GiB concatenation on XFS: {used} bytes");
    let frag = run(Command::new("filefrag").arg("-v").arg(root.join("all.bin"))).unwrap();
    assert!(frag.contains("shared"), "no extent of the target is shared:\n{frag}");
    assert!(
        used < 64 << 20,
        "the concatenation used {used} bytes of free space: it copied"
    );
    let whole = run(Command::new("sh").current_dir(&root).args([
        "-c",
        "cat run/part-0 run/part-1 run/part-2 run/part-3 run/part-4 run/part-5 run/part-6 run/part-7 | cmp - all.bin && echo same",
    ]))
    .unwrap();
    assert_eq!(whole.trim(), "same");
    assert!(s.log().contains("1073741824 of them shared"), "{}", s.log());
    drop(s);
}

#[test]
fn if_match_on_a_missing_target_fails_a_put_concatenation_as_it_fails_an_append() {
    let s = Server::start();
    s.write("run/part-1", "one\n");
    s.write("d/keep", "so that d/ exists");
    let sources = names(&["run/part-1"]);
    for target in ["missing.txt", "d/missing.txt", "no-such-dir/missing.txt"] {
        for if_match in ["*", "\"some-etag\""] {
            let header = format!("If-Match: {if_match}");
            let append = s.send("PUT", &format!("/file/{target}"), b"x", &[&header]);
            let joined = concat_with(&s, target, &sources, true, "", &[&header]);
            let replaced = concat_with(&s, target, &sources, false, "", &[&header]);
            for (what, r) in [("append", &append), ("PUT concat", &joined), ("POST concat", &replaced)] {
                assert_eq!(r.status, 412, "{what} to {target} with {header}: {}", r.text());
                assert!(r.text().contains("precondition"), "{what}: {}", r.text());
            }
            assert!(!s.exists(target), "{target}");
        }
    }
    assert_eq!(s.read("run/part-1"), b"one\n");
}

/// Holds an exclusive `flock` on `path` from another process until dropped.
struct HeldLock(std::process::Child);

impl HeldLock {
    fn take(path: &Path) -> HeldLock {
        use std::io::BufRead;
        let mut child = Command::new("flock")
            .arg("-x")
            .arg(path)
            .args(["-c", "echo locked; cat"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run flock");
        let mut line = String::new();
        let out = child.stdout.take().expect("flock's stdout");
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("flock says locked");
        assert_eq!(line.trim(), "locked");
        HeldLock(child)
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// Waits (bounded) until a temp file under the root holds `len` bytes: the concatenation has
/// copied that much.
fn wait_for_temp_of(s: &Server, len: u64) -> bool {
    crate::support::wait_until(std::time::Duration::from_secs(10), || {
        s.temp_files()
            .iter()
            .any(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() == len))
    })
}

#[test]
fn delete_sources_keeps_a_source_replaced_by_a_reused_inode_with_the_same_size_and_times() {
    use std::os::unix::fs::MetadataExt;
    // ext4 with 128-byte inodes: whole-second times; a freed inode number is reused at once.
    let disk = match Mounted::ext4(64, &["-I", "128"], None) {
        Ok(disk) => disk,
        Err(why) => return skip(&format!("ext4 with 128-byte inodes: {why}")),
    };
    let s = Server::start_on(&disk.root(), &[]);
    s.write("q/s", b"v1");
    s.write(
        "q/big",
        b"the second source, locked so the concatenation waits after the first\n",
    );
    let v1 = fs::metadata(s.root().join("q/s")).expect("stat v1");
    let lock = HeldLock::take(&s.root().join("q/big"));
    thread::scope(|scope| {
        let answer = scope.spawn(|| {
            concat_with(
                &s,
                "q/out",
                &names(&["q/s", "q/big"]),
                false,
                ", \"delete_sources\": true",
                &[],
            )
        });
        assert!(wait_for_temp_of(&s, 2), "the first source was never copied");
        // Another writer replaces q/s: same length, same inode number, same times as v1.
        fs::remove_file(s.root().join("q/s")).expect("remove v1");
        fs::write(s.root().join("q/s"), b"v3").expect("write v3");
        let stamp = format!("@{}.{:09}", v1.mtime(), v1.mtime_nsec());
        run(Command::new("touch")
            .args(["-m", "-d", &stamp])
            .arg(s.root().join("q/s")))
        .expect("touch");
        let v3 = fs::metadata(s.root().join("q/s")).expect("stat v3");
        let reused =
            (v3.ino(), v3.len(), v3.mtime(), v3.mtime_nsec()) == (v1.ino(), v1.len(), v1.mtime(), v1.mtime_nsec());
        drop(lock);
        let json = answer.join().expect("concat thread").assert_ok_json();
        if !reused {
            return skip("the filesystem did not give the replacement the copied version's inode number");
        }
        assert_eq!(s.read("q/out")[..2], *b"v1");
        assert_eq!(json["kept_sources"], serde_json::json!(["q/s"]), "{json}");
        assert_eq!(s.read("q/s"), b"v3", "a version never copied was deleted");
    });
}

#[test]
fn delete_sources_keeps_a_symlinked_source_and_the_file_it_points_to() {
    let s = Server::start();
    s.write("ref/header.csv", b"shared header\n");
    s.write("run/part-1.csv", b"row\n");
    std::os::unix::fs::symlink("../ref/header.csv", s.root().join("run/part-0.csv")).expect("symlink");
    let resp = concat_with(
        &s,
        "run/all.csv",
        &names(&["run/part-0.csv", "run/part-1.csv"]),
        false,
        ", \"delete_sources\": true",
        &[],
    );
    let json = resp.assert_ok_json();
    assert_eq!(s.read("run/all.csv"), b"shared header\nrow\n");
    assert_eq!(json["deleted_sources"], serde_json::json!(["run/part-1.csv"]), "{json}");
    assert_eq!(json["kept_sources"], serde_json::json!(["run/part-0.csv"]), "{json}");
    assert_eq!(
        s.read("ref/header.csv"),
        b"shared header\n",
        "the file a link points to was deleted"
    );
    assert!(fs::symlink_metadata(s.root().join("run/part-0.csv")).is_ok_and(|m| m.file_type().is_symlink()));
}

#[test]
fn a_concatenation_whose_client_left_commits_nothing() {
    let s = Server::start();
    s.write("p/a", b"first source\n");
    s.write("p/b", b"second source, locked until the client has gone\n");
    let lock = HeldLock::take(&s.root().join("p/b"));
    let body = br#"{"sources": ["p/a", "p/b"]}"#;
    let conn = crate::support::races::start_request(&s, "POST", "/file/p/out/concat", &[], body, body.len());
    assert!(wait_for_temp_of(&s, 13), "the first source was never copied");
    drop(conn);
    drop(lock);
    s.expect_no_temp_files();
    assert!(!s.exists("p/out"), "an abandoned concatenation was committed");
    assert!(
        crate::support::wait_until(std::time::Duration::from_secs(10), || s.log().contains("abandoned")),
        "no log line says the concatenation was abandoned: {}",
        s.log()
    );
}

#[test]
fn readyz_says_not_ready_while_every_worker_is_copying_a_concatenation() {
    // Each copy_file_range is held 3 s: the one worker is busy copying, not waiting for a lock.
    let Some(wrapper) = crate::support::strace_injecting("copy_file_range", "copy_file_range:delay_enter=3000000")
    else {
        return;
    };
    let home = TempDir::new();
    let s = Server::start_wrapped_on(home.path(), &wrapper, &["--workers", "1"]);
    s.write("p/a", b"a source copied slowly\n");
    s.get("/readyz").assert_status(200);
    thread::scope(|scope| {
        let answer = scope.spawn(|| concat(&s, "p/out", &names(&["p/a"])));
        let mut said = String::new();
        let unready = crate::support::wait_until(std::time::Duration::from_secs(10), || {
            let resp = s.get("/readyz");
            said = resp.text();
            resp.status == 503
        });
        assert!(unready, "/readyz said ready while its only worker copied: {said}");
        assert!(said.contains("concatenation"), "{said}");
        answer.join().expect("concat thread").assert_status(200);
    });
    assert!(crate::support::wait_until(std::time::Duration::from_secs(10), || s
        .get("/readyz")
        .status
        == 200));
}

#[test]
fn a_concatenation_under_way_at_shutdown_stops_and_commits_nothing() {
    // Each copy_file_range is held 2 s, so SIGTERM comes while the first 64 MiB are copied.
    let Some(wrapper) = crate::support::strace_injecting("copy_file_range", "copy_file_range:delay_enter=2000000")
    else {
        return;
    };
    let home = TempDir::new();
    let mut s = Server::start_wrapped_on(home.path(), &wrapper, &[]);
    s.write("p/a", b"");
    // 64 MiB and one byte (sparse): two spans, with a look at the server's state between them.
    let big = fs::OpenOptions::new().write(true).open(s.root().join("p/a")).unwrap();
    big.set_len((64 << 20) + 1).unwrap();
    drop(big);
    let body = br#"{"sources": ["p/a"]}"#;
    let _conn = crate::support::races::start_request(&s, "POST", "/file/p/out/concat", &[], body, body.len());
    assert!(
        crate::support::wait_until(std::time::Duration::from_secs(10), || !s.temp_files().is_empty()),
        "the concatenation never started"
    );
    s.signal(libc::SIGTERM);
    assert!(
        s.wait_exit(std::time::Duration::from_secs(60)).is_some(),
        "the server did not exit"
    );
    assert!(!s.exists("p/out"), "a concatenation was committed during shutdown");
    assert!(s.temp_files().is_empty(), "temp files left: {:?}", s.temp_files());
    assert!(s.log().contains("abandoned"), "{}", s.log());
}
