//! Appends: all or nothing, serialised per file, never holding a lock while a client sends.
//!
//! 1. Preconditions (`Upload-Offset`, `If-Match`) are checked against the committed state
//!    before the body is read, so a stale offset is refused before `100 Continue` invites the
//!    body; they are checked again at commit, under the lock, where they count.
//! 2. The body is received whole into a [`Spool`] (memory or a temp file), holding no lock.
//! 3. Commit, under the file's exclusive lock ([`lock`]), disk work only: settle a dead
//!    appender's crash record, re-check the preconditions, write our record (the size to return
//!    to), write the body at the file's size (never `O_APPEND`), sync, remove the record, sync
//!    the directory. A missing file is instead created whole: the body goes to a temp file that
//!    is linked in (`link(2)` fails if the name appeared meanwhile; then it is an append after
//!    all), so nobody ever sees a new file empty or half written.
//!
//! The states, and why a crash in any of them is safe, are in `docs/write-protocol.md`.

use super::conditions::Conditions;
use super::dir::Dir;
use super::journal::{self, Record};
use super::lock::{self, Held};
use super::temp::Spool;
use super::{NewDirs, Result, StorageError, committed_state, in_parents};
use std::ffi::OsStr;
use std::path::Path;

/// Most times the commit loop finds the name changed between "missing" and "there".
const MAX_COMMIT_ATTEMPTS: usize = 16;

/// Appends `body` to the file at `path` (created if missing) if `conditions` hold at commit.
/// Returns the new size.
pub fn append(path: &Path, body: &mut dyn std::io::Read, conditions: &Conditions<'_>, fsync: bool) -> Result<u64> {
    let (parent, name) = super::split(path)?;
    if conditions.any() {
        let state = committed_state(parent, name)?;
        conditions.check(state.as_ref().map(|(meta, len)| (meta, *len)))?;
    }
    let (new_dirs, dir) = in_parents(path, || Dir::open(parent).map_err(StorageError::from_io))?;
    let spool = Spool::receive(body, &dir)?;
    drop(dir);
    commit(parent, name, spool, conditions, fsync, new_dirs)
}

/// Step 3: the spooled body into the file, under its lock.
fn commit(
    parent: &Path,
    name: &OsStr,
    mut spool: Spool,
    conditions: &Conditions<'_>,
    fsync: bool,
    new_dirs: NewDirs,
) -> Result<u64> {
    let len = spool.byte_len()?;
    for _ in 0..MAX_COMMIT_ATTEMPTS {
        // The directory as it is now: a move or delete of it during the upload counts.
        let (dirs, dir) = in_parents(&parent.join(name), || Dir::open(parent).map_err(StorageError::from_io))?;
        if let Some(mut held) = lock::lock(&dir, name)? {
            if journal::settle(&dir, &held.file, &held.meta, fsync)?.is_some() {
                log::warn!("rolled back an interrupted append to {}", parent.join(name).display());
                held.refresh()?;
            }
            let before = held.meta.len();
            conditions.check(Some((&held.meta, before)))?;
            write_locked(&dir, &held, &spool, before, fsync)?;
            keep(new_dirs, dirs, fsync)?;
            return Ok(before + len);
        }
        conditions.check(None)?;
        let mut temp = spool.into_temp(&dir, fsync)?;
        if temp.link_as(&dir, name)? {
            if fsync {
                dir.sync().map_err(StorageError::from_io)?;
            }
            keep(new_dirs, dirs, fsync)?;
            return Ok(len);
        }
        // Someone created the file meanwhile: append to it instead.
        spool = Spool::File(temp);
    }
    Err(StorageError::Io(std::io::Error::other(
        "the file kept appearing and vanishing",
    )))
}

/// Under `held`'s lock: record, write, sync, unrecord. On failure the file goes back to
/// `before` bytes; if even that fails, the record stays for the next holder to roll back.
fn write_locked(dir: &Dir, held: &Held, spool: &Spool, before: u64, fsync: bool) -> Result<()> {
    let record = Record::new(&held.meta, before)?;
    journal::write(dir, &record, fsync)?;
    let written = spool
        .write_at(held, before)
        .and_then(|()| if fsync { held.file.sync_data() } else { Ok(()) });
    if let Err(e) = written {
        let undone = held.file.set_len(before).and_then(|()| held.file.sync_data());
        match undone {
            Ok(()) => journal::remove(dir, record.ino(), fsync)?,
            Err(undo) => log::error!("could not roll back a failed append (the next writer will): {undo}"),
        }
        return Err(StorageError::from_io(e));
    }
    journal::remove(dir, record.ino(), fsync)
}

/// The write succeeded: the directories it created stay (both those made for the spool and
/// any re-made at commit).
fn keep(spool_dirs: NewDirs, commit_dirs: NewDirs, fsync: bool) -> Result<()> {
    spool_dirs.keep(fsync)?;
    commit_dirs.keep(fsync)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Broken, test_dir};
    use std::fs;
    use std::io::Read;

    fn any() -> Conditions<'static> {
        Conditions::default()
    }

    fn at(size: u64) -> Conditions<'static> {
        Conditions {
            size: Some(size),
            ..Conditions::default()
        }
    }

    #[test]
    fn appends_and_creates() {
        let dir = test_dir("append-ok");
        let path = dir.join("d/log.csv");
        assert_eq!(append(&path, &mut &b"a\n"[..], &any(), false).unwrap(), 2);
        assert_eq!(append(&path, &mut &b"b\n"[..], &at(2), true).unwrap(), 4);
        let big = vec![b'x'; 200_000];
        assert_eq!(append(&path, &mut &big[..], &any(), true).unwrap(), 200_004);
        let mut want = b"a\nb\n".to_vec();
        want.extend_from_slice(&big);
        assert_eq!(fs::read(&path).unwrap(), want);
        assert_eq!(
            fs::read_dir(dir.join("d")).unwrap().count(),
            1,
            "no temp file or record left"
        );
    }

    #[test]
    fn offset_mismatch_changes_nothing() {
        let dir = test_dir("append-offset");
        let path = dir.join("f");
        fs::write(&path, b"abc").unwrap();
        let err = append(&path, &mut &b"x"[..], &at(2), false).unwrap_err();
        assert!(matches!(err, StorageError::OffsetMismatch { current: 3 }));
        assert_eq!(fs::read(&path).unwrap(), b"abc");
        let missing = dir.join("missing");
        assert!(matches!(
            append(&missing, &mut &b"x"[..], &at(5), false),
            Err(StorageError::OffsetMismatch { current: 0 })
        ));
        assert!(!missing.exists());
    }

    #[test]
    fn a_refused_offset_never_reads_the_body() {
        let dir = test_dir("append-offset-early");
        fs::write(dir.join("f"), b"abc").unwrap();
        let err = append(&dir.join("f"), &mut Broken, &at(9), false).unwrap_err();
        assert!(matches!(err, StorageError::OffsetMismatch { current: 3 }), "{err:?}");
    }

    #[test]
    fn a_dead_appenders_record_is_rolled_back_by_the_next_appender() {
        let dir = test_dir("append-journal");
        let path = dir.join("f");
        fs::write(&path, b"whole\n").unwrap();
        let handle = Dir::open(&dir).unwrap();
        let meta = fs::metadata(&path).unwrap();
        // A dead appender: record written, part of a body appended, never cleaned up.
        journal::write(&handle, &Record::new(&meta, 6).unwrap(), false).unwrap();
        std::io::Write::write_all(&mut fs::OpenOptions::new().append(true).open(&path).unwrap(), b"hal").unwrap();
        let seen = lock::committed(&handle, OsStr::new("f")).unwrap().unwrap();
        assert_eq!(seen.len, 6, "readers see the committed size");
        assert_eq!(append(&path, &mut &b"next\n"[..], &at(6), false).unwrap(), 11);
        assert_eq!(fs::read(&path).unwrap(), b"whole\nnext\n");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "the record is gone");
    }

    #[test]
    fn failed_body_changes_nothing() {
        let dir = test_dir("append-rollback");
        let path = dir.join("f");
        fs::write(&path, b"keep").unwrap();
        let err = append(&path, &mut (&b"half"[..]).chain(Broken), &any(), false).unwrap_err();
        assert!(matches!(err, StorageError::Source(_)));
        let big = vec![b'x'; 300_000];
        let err = append(&path, &mut (&big[..]).chain(Broken), &any(), false).unwrap_err();
        assert!(matches!(err, StorageError::Source(_)));
        assert_eq!(fs::read(&path).unwrap(), b"keep");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no spool or record left");
        let fresh = dir.join("fresh");
        assert!(append(&fresh, &mut (&b"half"[..]).chain(Broken), &any(), false).is_err());
        assert!(!fresh.exists());
        let deep = dir.join("new1/new2/f");
        assert!(append(&deep, &mut (&big[..]).chain(Broken), &any(), false).is_err());
        assert!(append(&deep, &mut &b"x"[..], &at(3), false).is_err());
        assert!(!dir.join("new1").exists(), "a failed append leaves no new directories");
    }
}
