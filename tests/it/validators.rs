//! Validators under the conditions that break naive ones: a filesystem with one-second
//! timestamps that hands a freed inode number to the next file at once (ext4 made with
//! `mkfs.ext4 -I 128`: 128-byte inodes have no room for nanoseconds or a birth time, as on many
//! NAS exports), where a same-length replace within one second keeps inode, length and mtime.
//! Every old ETag must still be refused (`If-None-Match` gives 200, `If-Match` 412), and an
//! `If-Range` date must never splice two versions. The same checks run on tmpfs and on the
//! test machine's own temp filesystem.
//!
//! The loop-mounted disks need root; where the kernel refuses, the test says `skipped:` why.

use std::fs;
use std::os::unix::fs::MetadataExt;

use crate::support::Server;
use crate::support::headers::http_date;
use crate::support::mounts::Mounted;

/// Size of the loop-mounted ext4 image, in MiB (room for the journal and a few files).
const EXT4_IMAGE_MIB: u64 = 64;
/// Same-length replacements of one file per check.
const REPLACEMENTS: usize = 200;
/// Attempts at replacing a file within the second its previous version was read in.
const SAME_SECOND_ATTEMPTS: usize = 4;

/// ext4 with 128-byte inodes: one-second timestamps, no birth time.
fn ext4_one_second() -> Result<Mounted, String> {
    Mounted::ext4(EXT4_IMAGE_MIB, &["-I", "128"], None)
}

/// Version `i` of the test file: always the same length, never the same bytes.
fn version(i: usize) -> String {
    format!("version {i:08} of the file\n")
}

/// Older versions whose ETags each round checks: the freed inode goes to the temp file of the
/// replacement after next, so the version two back is the one an inode/length/mtime ETag repeats.
const CHECKED_VERSIONS: usize = 3;

/// After every replacement, `If-None-Match` with the ETags of the last few versions gives 200
/// and the new bytes, and `If-Match` with them gives 412 and leaves the file as it is; counts how
/// often the conditions that defeat inode/length/mtime ETags really occurred (the inode of a
/// checked version reused with the same mtime).
fn old_etags_never_match(s: &Server) {
    let path = "/file/doc.txt";
    s.post(path, version(0)).assert_status(200);
    let mut history: Vec<(String, (u64, i64, i64))> = Vec::new();
    let mut collisions = 0;
    for i in 1..=REPLACEMENTS {
        let etag = s
            .head(path)
            .assert_status(200)
            .header("ETag")
            .expect("an ETag")
            .to_string();
        let meta = fs::metadata(s.root().join("doc.txt")).expect("stat");
        history.push((etag, (meta.ino(), meta.mtime(), meta.mtime_nsec())));
        s.post(path, version(i)).assert_status(200);
        let meta = fs::metadata(s.root().join("doc.txt")).expect("stat");
        let now = (meta.ino(), meta.mtime(), meta.mtime_nsec());
        let old = &history[history.len().saturating_sub(CHECKED_VERSIONS)..];
        collisions += old.iter().filter(|(_, seen)| *seen == now).count();
        let tags: Vec<&str> = old.iter().map(|(etag, _)| etag.as_str()).collect();
        let fresh = s.get_with(path, &[&format!("If-None-Match: {}", tags.join(", "))]);
        fresh.assert_ok_body(version(i));
        for tag in tags {
            let lost = s.send(
                "POST",
                path,
                b"a lost update!!!!!!!!!!!!!!",
                &[&format!("If-Match: {tag}")],
            );
            lost.assert_error(412);
            assert_eq!(s.read("doc.txt"), version(i).as_bytes(), "a stale If-Match overwrote");
        }
    }
    eprintln!("{REPLACEMENTS} replacements: {collisions} times a checked old version had the same inode and mtime");
}

#[test]
fn old_etags_never_match_on_ext4_with_one_second_timestamps() {
    let disk = match ext4_one_second() {
        Ok(disk) => disk,
        Err(reason) => return eprintln!("skipped: {reason}"),
    };
    let s = Server::start_on(&disk.root(), &[]);
    old_etags_never_match(&s);
}

#[test]
fn old_etags_never_match_on_tmpfs() {
    let disk = match Mounted::tmpfs("size=16m") {
        Ok(disk) => disk,
        Err(reason) => return eprintln!("skipped: {reason}"),
    };
    let s = Server::start_on(&disk.root(), &[]);
    old_etags_never_match(&s);
}

#[test]
fn old_etags_never_match_on_the_temp_filesystem() {
    old_etags_never_match(&Server::start());
}

#[test]
fn appends_change_the_etag_on_ext4_with_one_second_timestamps() {
    let disk = match ext4_one_second() {
        Ok(disk) => disk,
        Err(reason) => return eprintln!("skipped: {reason}"),
    };
    let s = Server::start_on(&disk.root(), &[]);
    s.post("/file/log.csv", "a\n").assert_status(200);
    let mut seen = vec![];
    for i in 0..20 {
        let etag = s.head("/file/log.csv").header("ETag").expect("an ETag").to_string();
        assert!(!seen.contains(&etag), "ETag {etag} came back after append {i}");
        s.get_with("/file/log.csv", &[&format!("If-None-Match: {etag}")])
            .assert_status(304);
        seen.push(etag);
        s.append("/file/log.csv", "b\n").assert_status(200);
    }
}

/// A client that read version 1 with its `Last-Modified` date and resumes with `If-Range:
/// <date>` after a same-length version 2 replaced it within that second gets the whole version 2,
/// never version 2's tail after its own head of version 1.
fn if_range_dates_never_splice(s: &Server) {
    let path = "/file/big.bin";
    let len = version(0).len();
    let half = len / 2;
    for attempt in 0..SAME_SECOND_ATTEMPTS {
        let v1 = version(attempt * 2);
        let v2 = version(attempt * 2 + 1);
        s.post(path, &v1).assert_status(200);
        let got = s.get(path);
        got.assert_ok_body(&v1);
        let date = got.header("Last-Modified").expect("a Last-Modified").to_string();
        s.post(path, &v2).assert_status(200);
        let same_second = fs::metadata(s.root().join("big.bin")).is_ok_and(|m| http_date(m.mtime()) == date);
        let resumed = s.get_with(path, &[&format!("Range: bytes={half}-"), &format!("If-Range: {date}")]);
        eprintln!(
            "attempt {attempt}: v2 has v1's date: {same_second}, answer {}",
            resumed.status
        );
        resumed.assert_ok_body(&v2);
    }
}

#[test]
fn if_range_with_a_date_never_splices_two_versions_on_ext4_with_one_second_timestamps() {
    let disk = match ext4_one_second() {
        Ok(disk) => disk,
        Err(reason) => return eprintln!("skipped: {reason}"),
    };
    if_range_dates_never_splice(&Server::start_on(&disk.root(), &[]));
}

#[test]
fn if_range_with_the_current_etag_still_resumes() {
    let s = Server::start();
    let body = version(7);
    s.post("/file/f.bin", &body).assert_status(200);
    let etag = s.head("/file/f.bin").header("ETag").expect("an ETag").to_string();
    let resumed = s.get_with("/file/f.bin", &["Range: bytes=5-", &format!("If-Range: {etag}")]);
    resumed.assert_status(206);
    assert_eq!(resumed.body, body.as_bytes()[5..]);
}
