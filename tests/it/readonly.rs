//! A storage volume remounted read-only under the running server (ext4 does so by itself after
//! a disk error with `errors=remount-ro`): every write, move and delete answers 507
//! `read_only_storage` naming the read-only volume, never 500; reads keep working. Runs on a
//! tmpfs mounted for the test, so only as root; it says `skipped:` where mounting is refused.

use crate::support::Server;
use crate::support::mounts::{Mounted, run};
use std::process::Command;

#[test]
fn writes_to_a_volume_remounted_read_only_are_507_and_reads_work() {
    let volume = match Mounted::tmpfs("size=8m") {
        Ok(volume) => volume,
        Err(reason) => return println!("skipped: {reason}"),
    };
    let s = Server::start_on(&volume.root(), &[]);
    s.post("/file/a.txt", "kept\n").assert_status(200);
    s.post("/file/d/b.txt", "b\n").assert_status(200);
    if let Err(reason) = run(Command::new("mount").args(["-o", "remount,ro"]).arg(volume.root())) {
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
