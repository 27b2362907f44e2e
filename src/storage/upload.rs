//! Atomic create-or-replace (POST): the body goes to a locked [`TempFile`] beside the target,
//! and only once it is whole (and on disk, with fsync) does it take the target's name.
//!
//! The commit takes the lock of the file it replaces, so a replace never lands in the middle
//! of an append (the append commits first, or finds the new file once it holds the lock), and
//! `If-Match` is checked there, at the instant of the swap. A missing target is created with
//! `link(2)`, which fails if the name appeared meanwhile (then that file is locked and replaced
//! like any other); `If-None-Match: *` is exactly that link. Readers that opened the old file
//! keep reading it: rename swaps the name, not the data. See `docs/write-protocol.md`.

use super::digest;
use super::dir::{Access, Dir};
use super::journal;
use super::lock;
use super::preconditions::Conditions;
use super::root::Root;
use super::temp::TempFile;
use super::{MAX_COMMIT_ATTEMPTS, Result, StorageError, commit_kept_racing, committed_state, copy_into, split};
use std::ffi::OsStr;
use std::io::Read;
use std::path::Path;

/// Writes `body` to `path` (relative to the root) atomically if `conditions` hold at commit.
/// Returns the bytes written.
#[cfg(test)]
pub fn write_atomic(
    root: &Root,
    path: &Path,
    body: &mut dyn Read,
    conditions: &Conditions<'_>,
    fsync: bool,
) -> Result<u64> {
    write_verified(root, path, body, conditions, &mut digest::Plan::none(), fsync)
}

/// [`write_atomic`], hashing the body as it arrives: `digests` approves of them before the
/// commit (a refusal removes the temp file and leaves the target as it was), and they are kept
/// with the new file (an extended attribute on the temp file, which the rename carries).
pub fn write_verified(
    root: &Root,
    path: &Path,
    body: &mut dyn Read,
    conditions: &Conditions<'_>,
    digests: &mut digest::Plan<'_>,
    fsync: bool,
) -> Result<u64> {
    let (parent, name) = split(path)?;
    let state = committed_state(root, parent, name)?;
    conditions.check(state.as_ref().map(|seen| (&seen.file, &seen.meta, seen.len)))?;
    // The body waits in the deepest directory of the target's that exists: its own is created
    // only at commit, so nothing shows (or is left by a crash) before then.
    let temp = TempFile::create_near(root, parent)?;
    let mut hashing = digest::Hashing::new(body, digests.wanted);
    let size = copy_into(&mut hashing, temp.file())?;
    // The file is the body: its digests are the body's.
    let sums = hashing.hasher.sums();
    (digests.check)(&sums, Some(&sums)).map_err(StorageError::Digest)?;
    let kept = hashing.hasher.kept();
    if fsync {
        temp.file().sync_all().map_err(StorageError::from_io)?;
    }
    commit(root, parent, name, temp, conditions, Some(&kept), fsync)?;
    digests.repr = Some(sums);
    Ok(size)
}

/// Gives the whole, synced `temp` the name `name` in `parent` (relative to the root, created if
/// missing), replacing the file there under its lock, if `conditions` hold at that instant.
/// Shared by uploads and concatenations ([`super::concat`]). `kept`, the new file's digests,
/// is stored on the file that takes the name, so the rename or link that commits the data
/// commits its digests too; without it the new file keeps none.
pub(crate) fn commit(
    root: &Root,
    parent: &Path,
    name: &OsStr,
    mut temp: TempFile,
    conditions: &Conditions<'_>,
    kept: Option<&digest::Kept>,
    fsync: bool,
) -> Result<()> {
    // A root renamed away while the body came in gets no new name in it (the caller checks
    // again after the commit, for a rename in the instant between).
    root.present()?;
    for _ in 0..MAX_COMMIT_ATTEMPTS {
        // The directory as it is now, made if missing: a move or delete of it meanwhile counts.
        let (new_dirs, dir) = root.create_dirs(parent)?;
        let staged = match temp.prepare_for(&dir, fsync) {
            Ok(()) => &mut temp,
            Err(StorageError::NotFound) => continue,
            Err(e) => return Err(e),
        };
        // A copy made by `prepare_for` has none yet.
        if let Some(kept) = kept {
            digest::store(&dir, staged.file(), kept);
        }
        match commit_once(&dir, name, staged, conditions, fsync) {
            Ok(true) => {
                if fsync {
                    dir.sync().map_err(StorageError::from_io)?;
                }
                new_dirs.keep(fsync)?;
                return Ok(());
            }
            // The name appeared or vanished, or the directory did, between looking and acting.
            Ok(false) | Err(StorageError::NotFound) => {}
            Err(e) => {
                // The temp file goes first, so the directories made for it are empty when removed.
                drop(temp);
                return Err(e);
            }
        }
    }
    Err(commit_kept_racing())
}

/// One attempt to give `staged` the name `name` in `dir`; `false` to look again.
fn commit_once(
    dir: &Dir,
    name: &OsStr,
    staged: &mut TempFile,
    conditions: &Conditions<'_>,
    fsync: bool,
) -> Result<bool> {
    if conditions.absent {
        // If-None-Match: *: link(2) refuses an existing name atomically.
        return if staged.link_as(dir, name)? {
            Ok(true)
        } else {
            Err(StorageError::Exists)
        };
    }
    let Some(mut held) = lock::lock(dir, name, Access::Lock)? else {
        conditions.check(None)?;
        return staged.link_as(dir, name);
    };
    // Whatever crash record the old file has goes with it (its inode number may be reused).
    if journal::settle(dir, &held.file, &held.meta, fsync)?.is_some() {
        held.refresh()?;
    }
    conditions.check(Some((&held.file, &held.meta, held.meta.len())))?;
    staged.rename_over(dir, name)?;
    digest::forget(dir, std::os::unix::fs::MetadataExt::ino(&held.meta));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Broken, test_root};
    use std::fs;

    fn any() -> Conditions<'static> {
        Conditions::default()
    }

    #[test]
    fn replaces_target_and_leaves_no_temp() {
        let (dir, root) = test_root("atomic-ok");
        let target = Path::new("sub/f.txt");
        assert_eq!(write_atomic(&root, target, &mut &b"one"[..], &any(), true).unwrap(), 3);
        assert_eq!(
            write_atomic(&root, target, &mut &b"second"[..], &any(), false).unwrap(),
            6
        );
        assert_eq!(fs::read(dir.join(target)).unwrap(), b"second");
        assert_eq!(fs::read_dir(dir.join("sub")).unwrap().count(), 1);
    }

    #[test]
    fn failed_body_keeps_target_and_removes_temp() {
        let (dir, root) = test_root("atomic-fail");
        let target = Path::new("f.txt");
        fs::write(dir.join(target), b"old").unwrap();
        let err = write_atomic(&root, target, &mut (&b"partial"[..]).chain(Broken), &any(), true).unwrap_err();
        assert!(matches!(err, StorageError::Source(_)), "{err:?}");
        assert_eq!(fs::read(dir.join(target)).unwrap(), b"old");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn failed_body_removes_the_directories_it_created_but_no_others() {
        let (dir, root) = test_root("atomic-fail-dirs");
        fs::create_dir(dir.join("old")).unwrap();
        let target = Path::new("old/new1/new2/f.txt");
        assert!(write_atomic(&root, target, &mut (&b"partial"[..]).chain(Broken), &any(), true).is_err());
        assert!(!dir.join("old/new1").exists());
        assert!(dir.join("old").is_dir());
        write_atomic(&root, target, &mut &b"whole"[..], &any(), true).unwrap();
        assert_eq!(fs::read(dir.join(target)).unwrap(), b"whole");
    }

    #[test]
    fn create_only_refuses_existing() {
        let (dir, root) = test_root("atomic-create-only");
        let target = Path::new("f.txt");
        let create_only = Conditions { absent: true, ..any() };
        write_atomic(&root, target, &mut &b"a"[..], &create_only, false).unwrap();
        let err = write_atomic(&root, target, &mut &b"b"[..], &create_only, false).unwrap_err();
        assert!(matches!(err, StorageError::Exists));
        assert_eq!(fs::read(dir.join(target)).unwrap(), b"a");
    }
}
