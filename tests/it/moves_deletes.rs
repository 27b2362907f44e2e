//! Moves and deletes: trees nested deeper than `PATH_MAX` or the descriptor limit are deleted
//! whole (and swept after a crash), a directory delete racing a writer or unable to remove
//! everything still answers truthfully, a move that would make a path no request can name is
//! refused, a target ending in `/` moves into that directory as `mv` does, a move below a file
//! says that the source is a file, and files the service may not write can still be replaced,
//! moved and deleted.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::races::{self as races, FEW_FDS, shared_root};
use crate::support::{RESERVED_PREFIX, Server, skip};

/// Bytes of each chain of directories the deep-tree tests build through the API: two of them
/// nested into each other make a path of about 5,800 bytes, past `PATH_MAX` (4,096).
const CHAIN_BYTES: usize = 2900;

/// `top/d/d/.../d` (one-letter directories, about 1,450 levels), about `bytes` long.
fn chain(top: &str, bytes: usize) -> String {
    let mut path = top.to_string();
    while path.len() + 2 <= bytes {
        path.push_str("/d");
    }
    path
}

/// Names left in `dir` (the service's own included), or none if `dir` is gone.
fn names_in(dir: &Path) -> Vec<String> {
    match fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Builds `top` as a tree nested past `PATH_MAX`: two chains written through the API, the
/// second renamed into the bottom of the first by another writer of the volume (an older
/// replica, or a tool working by handles), which the API alone can no longer do.
fn nest_past_path_max(s: &Server, top: &str) {
    let (a, b) = (chain(top, CHAIN_BYTES), chain(&format!("{top}-b"), CHAIN_BYTES));
    s.post(&format!("/file/{a}/leaf.txt"), "a").assert_status(200);
    s.post(&format!("/file/{b}/leaf.txt"), "b").assert_status(200);
    let root = s.root();
    fs::rename(root.join(format!("{top}-b")), root.join(&a).join("b")).expect("nest b into a");
}

#[test]
fn a_tree_nested_past_path_max_is_deleted_whole() {
    let s = Server::start();
    nest_past_path_max(&s, "deep");
    s.delete("/file/deep").assert_ok_json();
    assert_eq!(
        names_in(&s.root()),
        Vec::<String>::new(),
        "nothing of the tree may stay on disk, in a trash directory or elsewhere"
    );
    s.get("/file/deep").assert_error(404);
}

#[test]
fn the_sweep_removes_a_deleted_tree_nested_past_path_max() {
    let mut s = Server::start();
    nest_past_path_max(&s, "deep");
    // What a delete killed after its atomic rename leaves: the tree under a trash name.
    let trash = format!("{RESERVED_PREFIX}trash-00000000deadbeef");
    fs::rename(s.root().join("deep"), s.root().join(&trash)).expect("plant the trash");
    s.restart();
    s.assert_healthy();
    assert_eq!(names_in(&s.root()), Vec::<String>::new(), "the sweep removed it all");
    let log = s.log();
    assert!(!log.contains("could not"), "the sweep logged a failure:\n{log}");
}

#[test]
fn a_move_that_would_nest_a_path_past_the_limit_is_refused() {
    let s = Server::start();
    let (a, b) = (chain("a", 2000), chain("b", 2000));
    s.post(&format!("/file/{a}/leaf.txt"), "a").assert_status(200);
    s.post(&format!("/file/{b}/leaf.txt"), "b").assert_status(200);
    let refused = s.put_json("/file/b/mv", &format!(r#"{{"path":"{a}/b"}}"#));
    refused.assert_error(400);
    assert!(
        refused.text().contains("longer than 3072 bytes"),
        "the refusal names the limit: {}",
        refused.text()
    );
    s.get(&format!("/file/{b}/leaf.txt")).assert_ok_body("b");
    // Within the limit the same kind of move is done.
    s.post("/file/c/d/leaf.txt", "c").assert_status(200);
    s.put_json("/file/c/mv", &format!(r#"{{"path":"{a}/c"}}"#))
        .assert_ok_json();
    s.get(&format!("/file/{a}/c/d/leaf.txt")).assert_ok_body("c");
}

#[test]
fn a_move_target_ending_in_a_slash_moves_into_that_directory() {
    let s = Server::start();
    s.post("/file/a.txt", "a").assert_status(200);
    s.post("/file/b.txt", "b").assert_status(200);
    s.post("/file/archive/keep.txt", "k").assert_status(200);
    let moved = s.put_json("/file/a.txt/mv", r#"{"path":"archive/"}"#).assert_ok_json();
    assert_eq!(moved["path"], "archive/a.txt", "{moved}");
    // The README's form of a move (PUT with a JSON body) reads the target the same way.
    let moved = s.put_json("/file/b.txt", r#"{"path":"archive/"}"#).assert_ok_json();
    assert_eq!(moved["path"], "archive/b.txt", "{moved}");
    s.get("/file/archive/a.txt").assert_ok_body("a");
    s.get("/file/archive/b.txt").assert_ok_body("b");
    assert!(s.root().join("archive").is_dir(), "archive is still the directory");
}

#[test]
fn a_move_target_ending_in_a_slash_without_that_directory_is_409_naming_it() {
    let s = Server::start();
    s.post("/file/a.txt", "a").assert_status(200);
    s.post("/file/notes.txt", "n").assert_status(200);
    let missing = s.put_json("/file/a.txt/mv", r#"{"path":"archive/"}"#);
    missing.assert_error(409);
    assert!(missing.text().contains("no directory `archive`"), "{}", missing.text());
    let file = s.put_json("/file/a.txt/mv", r#"{"path":"notes.txt/"}"#);
    file.assert_error(409);
    assert!(file.text().contains("`notes.txt` is a file"), "{}", file.text());
    assert!(!s.exists("archive"), "no file named archive was made");
    s.get("/file/a.txt").assert_ok_body("a");
    s.get("/file/notes.txt").assert_ok_body("n");
}

#[test]
fn moving_a_file_below_itself_says_it_is_a_file() {
    let s = Server::start();
    s.post("/file/a.txt", "a").assert_status(200);
    let refused = s.put_json("/file/a.txt/mv", r#"{"path":"a.txt/x"}"#);
    refused.assert_error(409);
    assert!(
        refused
            .text()
            .contains("cannot move `a.txt` to `a.txt/x`: `a.txt` is a file, not a directory"),
        "{}",
        refused.text()
    );
    s.get("/file/a.txt").assert_ok_body("a");
}

#[test]
fn a_directory_delete_racing_a_writer_never_fails_half_way() {
    let s = Server::start();
    for i in 0..3000 {
        s.write(&format!("d/old-{i}"), "x");
    }
    let done = AtomicBool::new(false);
    thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut i = 0;
            while !done.load(Ordering::SeqCst) {
                s.post(&format!("/file/d/new-{i}"), "y");
                i += 1;
            }
        });
        thread::sleep(Duration::from_millis(100));
        let deleted = s.delete("/file/d");
        done.store(true, Ordering::SeqCst);
        writer.join().unwrap();
        deleted.assert_ok_json();
    });
    let left: Vec<String> = fs::read_dir(s.root().join("d"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let old: Vec<&String> = left.iter().filter(|n| n.starts_with("old-")).collect();
    assert!(
        old.is_empty(),
        "{} files of the deleted tree are left: {:?}",
        old.len(),
        &old[..old.len().min(5)]
    );
}

/// A wrapper running the server as uid/gid 65534 (as in a container), or `None` (after
/// printing why) where that is not possible.
fn unprivileged() -> Option<Vec<String>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 || Command::new("setpriv").arg("--help").output().is_err() {
        skip("needs root and setpriv to run the server as another uid");
        return None;
    }
    Some(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            .map(String::from)
            .to_vec(),
    )
}

#[test]
fn a_directory_delete_that_cannot_remove_everything_still_answers_that_it_deleted() {
    let Some(as_nobody) = unprivileged() else { return };
    let (_home, root) = shared_root();
    fs::create_dir_all(root.join("d/locked")).unwrap();
    fs::write(root.join("d/a.txt"), "a").unwrap();
    fs::write(root.join("d/locked/kept"), "k").unwrap();
    for dir in [&root, &root.join("d")] {
        std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
    }
    let s = Server::start_wrapped_on(&root, &as_nobody, &[]);
    s.delete("/file/d").assert_ok_json();
    s.get("/file/d").assert_status(404);
    s.get("/file/").assert_ok_body("");
}

#[test]
fn another_uids_file_the_service_may_write_is_appended_to_and_read_whole() {
    let Some(as_nobody) = unprivileged() else { return };
    let (_home, root) = shared_root();
    std::os::unix::fs::chown(&root, Some(65534), Some(65534)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    // Made by another team's pod (uid 0 here), writable by all: the service may write it but
    // not change its mode.
    fs::write(root.join("shared.log"), "theirs\n").unwrap();
    fs::set_permissions(root.join("shared.log"), fs::Permissions::from_mode(0o666)).unwrap();
    let s = Server::start_wrapped_on(&root, &as_nobody, &[]);
    for line in ["ours 1\n", "ours 2\n"] {
        s.append("/file/shared.log", line).assert_ok_json();
    }
    s.get("/file/shared.log").assert_ok_body("theirs\nours 1\nours 2\n");
    let mode = fs::metadata(root.join("shared.log")).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o666, "the file's mode is the owner's, untouched");
}

#[test]
fn files_the_service_may_not_write_can_still_be_replaced_moved_and_deleted() {
    let Some(as_nobody) = unprivileged() else { return };
    let (_home, root) = shared_root();
    std::os::unix::fs::chown(&root, Some(65534), Some(65534)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for (name, owner, mode) in [("ro-own.txt", 65534, 0o444), ("other-uid.txt", 0, 0o644)] {
        fs::write(root.join(name), "old\n").unwrap();
        std::os::unix::fs::chown(root.join(name), Some(owner), Some(owner)).unwrap();
        fs::set_permissions(root.join(name), fs::Permissions::from_mode(mode)).unwrap();
    }
    let s = Server::start_wrapped_on(&root, &as_nobody, &[]);
    for name in ["ro-own.txt", "other-uid.txt"] {
        s.get(&format!("/file/{name}")).assert_ok_body("old\n");
        s.append(&format!("/file/{name}"), "x").assert_error(403);
        s.post(&format!("/file/{name}"), "new\n").assert_ok_json();
        s.get(&format!("/file/{name}")).assert_ok_body("new\n");
    }
    for (name, owner, mode) in [("ro2.txt", 65534, 0o444), ("other2.txt", 0, 0o644)] {
        fs::write(root.join(name), "old\n").unwrap();
        std::os::unix::fs::chown(root.join(name), Some(owner), Some(owner)).unwrap();
        fs::set_permissions(root.join(name), fs::Permissions::from_mode(mode)).unwrap();
        s.put_json(&format!("/file/{name}/mv"), &format!(r#"{{"path": "{name}.moved"}}"#))
            .assert_ok_json();
        s.delete(&format!("/file/{name}.moved")).assert_ok_json();
    }
}

#[test]
fn deleting_a_tree_deeper_than_the_descriptor_limit_leaves_nothing() {
    let (_home, root) = shared_root();
    let limited = ["prlimit", FEW_FDS].map(String::from);
    let s = Server::start_wrapped_on(&root, &limited, &[]);
    let deep = format!("/file/top/{}leaf.txt", "d/".repeat(300));
    s.post(&deep, "deep").assert_ok_json();
    s.delete("/file/top").assert_ok_json();
    let left: Vec<_> = fs::read_dir(&root).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "left in the root after the delete: {left:?}");
}

/// A DELETE of a directory holding three files locked by a frozen replica (each in the middle
/// of an append) gives up within one lock bound for the whole request (not one per file),
/// answers 503, and removes nothing: the tree stays at its name, so the frozen appends,
/// continued, commit into files that are still there, and their 200s are true.
#[test]
fn a_directory_delete_beside_a_frozen_replica_gives_up_within_one_bound_and_leaves_the_tree() {
    if !crate::support::strace_usable() {
        return;
    }
    let (_home, a, b, mut appends) = races::frozen_with_three_appends_in_d();
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
    deleted.assert_status(503);
    assert!(deleted.header("Retry-After").is_some(), "a 503 says when to retry");
    assert_eq!(answers, [200, 200, 200], "the frozen appends, continued");
    for i in 1..=3 {
        b.get(&format!("/file/d/f{i}")).assert_ok_body(b"one\ntwo\n");
    }
}
