//! A storage volume remounted read-only under the running server (ext4 does so by itself after
//! a disk error with `errors=remount-ro`): every write, move and delete answers 507
//! `read_only_storage` naming the read-only volume, never 500; reads keep working. Runs on a
//! tmpfs mounted for the test, so only as root; it says `skipped:` where mounting is refused.

use crate::support::{Server, TempDir};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted for one test; unmounted on drop, also when the test panics.
struct Volume {
    dir: TempDir,
}

impl Volume {
    /// Mounts an 8 MiB tmpfs on `<fresh temp dir>/root`, or says why it cannot.
    fn mount() -> Result<Volume, String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root, cannot mount a tmpfs".into());
        }
        let dir = TempDir::new();
        let root = dir.path().join("root");
        fs::create_dir(&root).map_err(|e| format!("mkdir {}: {e}", root.display()))?;
        run_mount(&["-t", "tmpfs", "-o", "size=8m", "tmpfs"], &root)?;
        Ok(Volume { dir })
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
}

/// Runs `mount ARGS target`, or says why it failed.
fn run_mount(args: &[&str], target: &Path) -> Result<(), String> {
    let out = Command::new("mount")
        .args(args)
        .arg(target)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!("mount {args:?} failed ({}): {}", out.status, stderr.trim()))
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(self.root()).status();
        if !unmounted.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(self.root()).status();
        }
    }
}

#[test]
fn writes_to_a_volume_remounted_read_only_are_507_and_reads_work() {
    let volume = match Volume::mount() {
        Ok(volume) => volume,
        Err(reason) => return println!("skipped: {reason}"),
    };
    let s = Server::start_on(&volume.root(), &[]);
    s.post("/file/a.txt", "kept\n").assert_status(200);
    s.post("/file/d/b.txt", "b\n").assert_status(200);
    if let Err(reason) = run_mount(&["-o", "remount,ro"], &volume.root()) {
        return println!("skipped: {reason}");
    }
    let refusals = [
        ("upload", s.post("/file/new.txt", "x")),
        ("replace", s.post("/file/a.txt", "x")),
        ("append", s.append("/file/a.txt", "more\n")),
        ("move", s.put_json("/file/a.txt/mv", r#"{"path":"moved.txt"}"#)),
        (
            "move (README form)",
            s.put_json("/file/a.txt", r#"{"path":"moved.txt"}"#),
        ),
        ("delete a file", s.delete("/file/a.txt")),
        ("delete a directory", s.delete("/file/d")),
    ];
    for (what, response) in &refusals {
        response.assert_error(507);
        let body: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON error body");
        assert_eq!(body["error"], "read_only_storage", "{what}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains("read-only"), "{what}: {message}");
    }
    s.get("/file/a.txt").assert_ok_body("kept\n");
    s.get("/file/d/b.txt").assert_ok_body("b\n");
    s.get("/file/d/").assert_status(200);
    drop(s);
}
