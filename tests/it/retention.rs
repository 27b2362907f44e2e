//! Retention (`--expire PREFIX=AGE`): the background pass deletes files under a prefix not
//! modified for the age, and the directories that leaves empty; never the prefix, never a file
//! a writer holds or has just changed; with two processes on one root, each file once.
//!
//! Ages are made with `touch -d` (mtimes in the past); the pass runs every 50 ms through the
//! test-only `HTTP_NAS_EXPIRE_INTERVAL_MS`. "A pass has run since" is told by a marker: an old
//! file under the last rule (`marker/`), written and waited for twice, so that a whole pass
//! started after the setup.

use crate::support::{SETTLE_TIMEOUT, Server, TempDir, server_binary, wait_until};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// How long a test waits for passes that run every 50 ms.
const PASS_TIMEOUT: Duration = Duration::from_secs(20);

/// The test-only pass period.
fn fast_passes() -> Vec<String> {
    vec!["env".into(), "HTTP_NAS_EXPIRE_INTERVAL_MS=50".into()]
}

/// Sets the mtime of every path to `ago` (`touch -d`'s syntax: "3 days ago").
fn age(paths: &[&Path], ago: &str) {
    let status = Command::new("touch")
        .arg("-d")
        .arg(ago)
        .args(paths)
        .status()
        .expect("run touch");
    assert!(status.success(), "touch -d {ago:?} failed");
}

/// Writes `root/rel` (with its parents) and makes it `ago` old.
fn old_file(root: &Path, rel: &str, bytes: &[u8], ago: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, bytes).unwrap();
    age(&[&path], ago);
}

/// Waits until a whole retention pass has run after this call (see the module doc).
#[track_caller]
fn wait_for_a_whole_pass(root: &Path) {
    for round in 0..2 {
        let marker = format!("marker/m{round}");
        old_file(root, &marker, b"m", "2 days ago");
        let gone = wait_until(PASS_TIMEOUT, || !root.join(&marker).exists());
        assert!(gone, "no retention pass removed {marker} within {PASS_TIMEOUT:?}");
    }
}

/// Starts a server on `root` with fast passes and the `rules`, plus the marker rule last.
fn start(root: &Path, rules: &[&str]) -> Server {
    let mut args = Vec::new();
    for rule in rules.iter().chain(&["marker/=1d"]) {
        args.extend(["--expire", rule]);
    }
    Server::start_wrapped_on(root, &fast_passes(), &args)
}

fn shared_root() -> (TempDir, std::path::PathBuf) {
    crate::support::races::shared_root()
}

#[test]
fn files_older_than_the_rule_go_and_newer_ones_and_other_prefixes_stay() {
    let (_home, root) = shared_root();
    let s = start(&root, &["runs/=1d", "scratch/=12h"]);
    old_file(&root, "runs/a/old.csv", b"old rows\n", "3 days ago");
    old_file(&root, "runs/a/new.csv", b"new rows\n", "1 hour ago");
    old_file(&root, "runs/b/c/old.csv", b"0123456789", "2 days ago");
    old_file(&root, "runs/top.csv", b"t", "25 hours ago");
    old_file(&root, "scratch/x.tmp", b"x", "13 hours ago");
    old_file(&root, "scratch/y.tmp", b"y", "11 hours ago");
    old_file(&root, "other/old.csv", b"kept", "30 days ago");
    old_file(&root, "runs-not-a-prefix/old.csv", b"kept", "30 days ago");
    wait_for_a_whole_pass(&root);

    for gone in [
        "runs/a/old.csv",
        "runs/b/c/old.csv",
        "runs/b/c",
        "runs/b",
        "runs/top.csv",
        "scratch/x.tmp",
    ] {
        assert!(!root.join(gone).exists(), "{gone} should have expired");
    }
    for kept in [
        "runs/a/new.csv",
        "scratch/y.tmp",
        "other/old.csv",
        "runs-not-a-prefix/old.csv",
    ] {
        assert!(root.join(kept).exists(), "{kept} should stay");
    }
    s.get("/file/runs/a/new.csv").assert_ok_body("new rows\n");
    let metrics = s.scrape();
    // 4 files of the rules, and the two markers.
    assert_eq!(metrics["http_nas_expired_files_total"], 6.0, "{metrics:?}");
    assert_eq!(
        metrics["http_nas_expired_bytes_total"],
        (9 + 10 + 1 + 1 + 2) as f64,
        "{metrics:?}"
    );
    let log = s.log();
    assert!(
        log.contains("expired runs/a/old.csv (unmodified for ") && log.contains(", 9 bytes)"),
        "each removal is logged with its path, age and size:\n{log}"
    );
}

#[test]
fn the_prefix_itself_stays_when_everything_under_it_expires() {
    let (_home, root) = shared_root();
    fs::create_dir_all(root.join("empty")).unwrap();
    age(&[&root.join("empty")], "10 days ago");
    old_file(&root, "runs/d/old", b"x", "10 days ago");
    age(&[&root.join("runs/d"), &root.join("runs")], "10 days ago");
    let _s = start(&root, &["empty/=1d", "runs/=1d"]);
    wait_for_a_whole_pass(&root);
    assert!(
        !root.join("runs/d").exists(),
        "the emptied directory below the prefix goes"
    );
    assert!(root.join("runs").is_dir(), "the prefix runs/ stays");
    assert!(root.join("empty").is_dir(), "an empty prefix stays");
    assert!(root.join("marker").is_dir(), "the marker prefix stays");
}

#[test]
fn a_file_locked_by_a_writer_or_appended_to_during_the_pass_stays() {
    let (_home, root) = shared_root();
    old_file(&root, "runs/busy.csv", b"a\n", "3 days ago");
    old_file(&root, "runs/appended.csv", b"a\n", "3 days ago");
    // A writer on another replica, mid-append: it holds the file's exclusive lock (taken
    // before the server starts, so its first pass already finds it held).
    let busy = fs::OpenOptions::new()
        .append(true)
        .open(root.join("runs/busy.csv"))
        .unwrap();
    busy.lock().unwrap();
    // An append through the service (a replica without the rule, so no pass can come first)
    // makes the other one young again.
    Server::start_on(&root, &[])
        .append("/file/runs/appended.csv", "b\n")
        .assert_status(200);
    let s = start(&root, &["runs/=1d"]);
    wait_for_a_whole_pass(&root);
    assert!(root.join("runs/busy.csv").exists(), "a locked file is skipped");
    // The append commits (its bytes land, the mtime moves) and the lock goes.
    use std::io::Write;
    (&busy).write_all(b"b\n").unwrap();
    busy.unlock().unwrap();
    drop(busy);
    wait_for_a_whole_pass(&root);
    s.get("/file/runs/busy.csv").assert_ok_body("a\nb\n");
    s.get("/file/runs/appended.csv").assert_ok_body("a\nb\n");
}

#[test]
fn abandoned_temp_files_go_whatever_the_prefix_and_held_ones_stay() {
    let (_home, root) = shared_root();
    let s = start(&root, &["runs/=1d"]);
    old_file(
        &root,
        "elsewhere/.http-nas-tmp-0123456789abcdef",
        b"half a body",
        "2 hours ago",
    );
    old_file(
        &root,
        "elsewhere/.http-nas-tmp-fedcba9876543210",
        b"live upload",
        "2 hours ago",
    );
    let live = fs::File::open(root.join("elsewhere/.http-nas-tmp-fedcba9876543210")).unwrap();
    live.lock().unwrap();
    let gone = wait_until(PASS_TIMEOUT, || {
        !root.join("elsewhere/.http-nas-tmp-0123456789abcdef").exists()
    });
    assert!(gone, "an abandoned temp file outside every prefix is removed");
    assert!(
        root.join("elsewhere/.http-nas-tmp-fedcba9876543210").exists(),
        "a temp file whose upload holds its lock stays"
    );
    drop(live);
    drop(s);
}

#[test]
fn two_processes_on_one_root_remove_each_expired_file_once_and_nothing_else() {
    let (_home, root) = shared_root();
    let a = start(&root, &["runs/=1d"]);
    let b = start(&root, &["runs/=1d"]);
    let mut old = Vec::new();
    for d in 0..20 {
        for f in 0..50 {
            let rel = format!("runs/d{d}/f{f}");
            fs::create_dir_all(root.join(format!("runs/d{d}"))).unwrap();
            fs::write(root.join(&rel), b"0123").unwrap();
            old.push(root.join(rel));
        }
        fs::write(root.join(format!("runs/d{d}/young")), b"y").unwrap();
    }
    let paths: Vec<&Path> = old.iter().map(|p| p.as_path()).collect();
    for chunk in paths.chunks(200) {
        age(chunk, "3 days ago");
    }
    let all_gone = wait_until(PASS_TIMEOUT, || old.iter().all(|p| !p.exists()));
    assert!(all_gone, "the old files were not all removed");
    wait_for_a_whole_pass(&root);
    for d in 0..20 {
        assert!(root.join(format!("runs/d{d}/young")).exists(), "young files stay");
    }
    let (ma, mb) = (a.scrape(), b.scrape());
    let files = ma["http_nas_expired_files_total"] + mb["http_nas_expired_files_total"];
    let bytes = ma["http_nas_expired_bytes_total"] + mb["http_nas_expired_bytes_total"];
    // 1,000 files and the 2 markers, each counted by exactly one process.
    assert_eq!(files, 1002.0, "a: {ma:?}\nb: {mb:?}");
    assert_eq!(bytes, 4000.0 + 2.0);
    let logged = a.log().matches("expired runs/").count() + b.log().matches("expired runs/").count();
    assert_eq!(logged, 1000, "each removal is logged once, by the process that made it");
    eprintln!(
        "removals: a {} b {}",
        ma["http_nas_expired_files_total"], mb["http_nas_expired_files_total"]
    );
}

/// Starts the binary with `args` and `env` only, and returns its exit code and stderr.
fn start_refused(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    use std::process::Stdio;
    let home = TempDir::new();
    let mut child = Command::new(server_binary())
        .args(["--listen", "127.0.0.1:0", "--storage"])
        .arg(home.path())
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn http-nas");
    let exited = wait_until(SETTLE_TIMEOUT, || child.try_wait().is_ok_and(|s| s.is_some()));
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("wait for http-nas");
    (
        out.status.code().filter(|_| exited),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_retention_rules_stop_the_start_with_exit_2_naming_the_flag() {
    for (args, env, names, says) in [
        (vec!["--expire", "../etc=1d"], vec![], "--expire", "without . or .."),
        (vec!["--expire", "runs/../x=1d"], vec![], "--expire", "without . or .."),
        (vec!["--expire", "runs/=0d"], vec![], "--expire", "AGE above 0"),
        (vec!["--expire", "runs/=soon"], vec![], "--expire", "AGE above 0"),
        (vec!["--expire", "runs/"], vec![], "--expire", "PREFIX=AGE"),
        (
            vec!["--expire", "ok/=1d", "--expire", "runs/=7"],
            vec![],
            "--expire",
            "AGE above 0",
        ),
        (
            vec![],
            vec![("HTTP_NAS_EXPIRE", "runs/=7d,scratch/=0h")],
            "HTTP_NAS_EXPIRE (--expire)",
            "AGE above 0",
        ),
        (vec!["--expire", ""], vec![], "--expire", "not an empty rule"),
        (
            vec![],
            vec![("HTTP_NAS_EXPIRE", ",")],
            "HTTP_NAS_EXPIRE (--expire)",
            "not an empty rule",
        ),
        (
            vec!["--expire", "runs=1d", "--expire", "runs/=30d"],
            vec![],
            "--expire",
            "one rule per PREFIX, got \"runs/=86400s and runs/=30d",
        ),
        (vec!["--expire", "runs/=3651d"], vec![], "--expire", "at most 3650d"),
    ] {
        let (code, stderr) = start_refused(&args, &env);
        assert_eq!(code, Some(2), "{args:?} {env:?}: {stderr}");
        assert!(
            stderr.contains(names) && stderr.contains(says),
            "{args:?} {env:?} should name {names} and say {says:?}: {stderr}"
        );
    }
}

/// Lines of the server's log that contain `text`.
fn lines_with(s: &Server, text: &str) -> usize {
    s.log().lines().filter(|l| l.contains(text)).count()
}

#[test]
fn a_missing_or_symlinked_prefix_is_said_once_not_on_every_pass() {
    let root_dir = TempDir::new();
    let root = root_dir.path().to_path_buf();
    fs::create_dir_all(root.join("keepme")).unwrap();
    std::os::unix::fs::symlink("keepme", root.join("linked")).unwrap();
    old_file(
        &root,
        "keepme/old",
        b"kept: only reached through the symlink",
        "3 days ago",
    );
    let s = start(&root, &["not-yet/=1d", "linked/=1d"]);
    // Several whole passes: each would have said it again.
    for _ in 0..3 {
        wait_for_a_whole_pass(&root);
    }
    assert_eq!(
        lines_with(
            &s,
            "retention of not-yet/: no such directory yet; the rule applies when it appears"
        ),
        1,
        "{}",
        s.log()
    );
    assert_eq!(
        lines_with(&s, "retention of linked/: it is a symlink"),
        1,
        "{}",
        s.log()
    );
    assert_eq!(lines_with(&s, "outside the storage root"), 0, "{}", s.log());
    assert!(root.join("keepme/old").exists());
}
