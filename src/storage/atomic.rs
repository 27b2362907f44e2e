//! Atomic create-or-replace (POST): the body goes to a locked [`TempFile`] beside the target,
//! and only once it is whole (and on disk, with fsync) does it take the target's name.
//!
//! The commit takes the lock of the file it replaces, so a replace never lands in the middle
//! of an append (the append commits first, or finds the new file once it holds the lock), and
//! `If-Match` is checked there, at the instant of the swap. A missing target is created with
//! `link(2)`, which fails if the name appeared meanwhile (then that file is locked and replaced
//! like any other); `If-None-Match: *` is exactly that link. Readers that opened the old file
//! keep reading it: rename swaps the name, not the data. See `docs/write-protocol.md`.

use super::conditions::Conditions;
use super::dir::Dir;
use super::journal;
use super::lock;
use super::temp::TempFile;
use super::{Result, StorageError, committed_state, copy_into, in_parents};
use std::io::Read;
use std::path::Path;

/// Most times the commit loop finds the name changed between "missing" and "there".
const MAX_COMMIT_ATTEMPTS: usize = 16;

/// Writes `body` to `path` atomically if `conditions` hold at commit. Returns the bytes written.
pub fn write_atomic(path: &Path, body: &mut dyn Read, conditions: &Conditions<'_>, fsync: bool) -> Result<u64> {
    let (parent, name) = super::split(path)?;
    let state = committed_state(parent, name)?;
    conditions.check(state.as_ref().map(|(meta, len)| (meta, *len)))?;
    let (new_dirs, dir) = in_parents(path, || Dir::open(parent).map_err(StorageError::from_io))?;
    let temp = TempFile::create(&dir)?;
    drop(dir);
    let size = copy_into(body, temp.file())?;
    if fsync {
        temp.file().sync_all().map_err(StorageError::from_io)?;
    }
    let mut temp = Some(temp);
    for _ in 0..MAX_COMMIT_ATTEMPTS {
        // The directory as it is now: a move or delete of it during the upload counts.
        let (dirs, dir) = in_parents(path, || Dir::open(parent).map_err(StorageError::from_io))?;
        let mut staged = temp.take().ok_or(StorageError::NotFound)?.into_dir(&dir)?;
        let committed = if conditions.absent {
            if !staged.link_as(&dir, name)? {
                return Err(StorageError::Exists);
            }
            true
        } else if let Some(mut held) = lock::lock(&dir, name)? {
            // Whatever crash record the old file has goes with it (its inode may be reused).
            if journal::settle(&dir, &held.file, &held.meta, fsync)?.is_some() {
                held.refresh()?;
            }
            conditions.check(Some((&held.meta, held.meta.len())))?;
            staged.rename_over(&dir, name)?;
            true
        } else {
            conditions.check(None)?;
            staged.link_as(&dir, name)?
        };
        if committed {
            if fsync {
                dir.sync().map_err(StorageError::from_io)?;
            }
            new_dirs.keep(fsync)?;
            dirs.keep(fsync)?;
            return Ok(size);
        }
        temp = Some(staged);
    }
    Err(StorageError::Io(std::io::Error::other(
        "the file kept appearing and vanishing",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Broken, test_dir};
    use std::fs;

    fn any() -> Conditions<'static> {
        Conditions::default()
    }

    #[test]
    fn replaces_target_and_leaves_no_temp() {
        let dir = test_dir("atomic-ok");
        let target = dir.join("sub/f.txt");
        assert_eq!(write_atomic(&target, &mut &b"one"[..], &any(), true).unwrap(), 3);
        assert_eq!(write_atomic(&target, &mut &b"second"[..], &any(), false).unwrap(), 6);
        assert_eq!(fs::read(&target).unwrap(), b"second");
        assert_eq!(fs::read_dir(dir.join("sub")).unwrap().count(), 1);
    }

    #[test]
    fn failed_body_keeps_target_and_removes_temp() {
        let dir = test_dir("atomic-fail");
        let target = dir.join("f.txt");
        fs::write(&target, b"old").unwrap();
        let err = write_atomic(&target, &mut (&b"partial"[..]).chain(Broken), &any(), true).unwrap_err();
        assert!(matches!(err, StorageError::Source(_)), "{err:?}");
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn failed_body_removes_the_directories_it_created_but_no_others() {
        let dir = test_dir("atomic-fail-dirs");
        fs::create_dir(dir.join("old")).unwrap();
        let target = dir.join("old/new1/new2/f.txt");
        assert!(write_atomic(&target, &mut (&b"partial"[..]).chain(Broken), &any(), true).is_err());
        assert!(!dir.join("old/new1").exists());
        assert!(dir.join("old").is_dir());
        write_atomic(&target, &mut &b"whole"[..], &any(), true).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"whole");
    }

    #[test]
    fn create_only_refuses_existing() {
        let dir = test_dir("atomic-create-only");
        let target = dir.join("f.txt");
        let create_only = Conditions { absent: true, ..any() };
        write_atomic(&target, &mut &b"a"[..], &create_only, false).unwrap();
        let err = write_atomic(&target, &mut &b"b"[..], &create_only, false).unwrap_err();
        assert!(matches!(err, StorageError::Exists));
        assert_eq!(fs::read(&target).unwrap(), b"a");
    }
}
