//! Moves and deletes at the edges: trees nested deeper than `PATH_MAX` are deleted whole (and
//! swept after a crash), a move that would make a path no request can name is refused, a
//! target ending in `/` moves into that directory as `mv` does, and a move below a file says
//! that the source is a file.

use crate::support::{RESERVED_PREFIX, Server};
use std::fs;
use std::path::Path;

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
