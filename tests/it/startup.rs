//! Start-up on a volume others have written to: the sweep settles crash records in time linear
//! in their number, and removes the ones whose file is not beside them.

use crate::support::{RESERVED_PREFIX, Server, TempDir};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

/// Crash-record names planted, half in the root and half in a subdirectory: at this many the
/// old quadratic matching took 15 s to start.
const PLANTED_RECORDS: u64 = 100_000;
/// Inode numbers of the planted records start here, far above any file's in a fresh temp dir.
const FIRST_PLANTED_INODE: u64 = 1 << 40;

/// Crash-record names (`.http-nas-journal-*`) left in `dir`.
fn records_in(dir: &Path) -> usize {
    let prefix = format!("{RESERVED_PREFIX}journal-");
    fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .count()
}

#[test]
fn start_up_settles_many_crash_records_and_removes_the_orphans() {
    let home = TempDir::new();
    let root = home.path().join("root");
    let sub = root.join("sub");
    fs::create_dir_all(&sub).expect("mkdir root/sub");
    for i in 0..PLANTED_RECORDS / 2 {
        for dir in [&root, &sub] {
            let name = format!("{RESERVED_PREFIX}journal-{}", FIRST_PLANTED_INODE + i);
            fs::write(dir.join(name), "").expect("plant a record name");
        }
    }
    // Among them, the real record of an append to `sub/f` that died after 3 more bytes: it
    // must still be found and rolled back.
    fs::write(sub.join("f"), "abcdef").expect("write f");
    let ino = fs::metadata(sub.join("f")).expect("stat f").ino();
    let record = format!("http-nas append journal v2\nid 00\ndev 0\nino {ino}\nborn -\nbefore 3\nend\n");
    fs::write(sub.join(format!("{RESERVED_PREFIX}journal-{ino}")), record).expect("write record");

    let started = Instant::now();
    let s = Server::start_on(&root, &[]);
    eprintln!(
        "start-up with {PLANTED_RECORDS} planted crash-record names took {:?}",
        started.elapsed()
    );
    s.get("/readyz").assert_status(200);
    assert_eq!(records_in(&root), 0, "orphan records in the root are removed");
    assert_eq!(records_in(&sub), 0, "orphan records in sub/ are removed");
    s.get("/file/sub/f").assert_ok_body("abc");
}
