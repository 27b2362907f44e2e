//! Atomic create-or-replace: the body goes to a temp file in the target's directory, which is
//! renamed over the target only once the whole body arrived and (with fsync on) is on disk.
//!
//! The temp file is named with the reserved prefix and held under an exclusive `flock` while
//! it is written, so a sweep (at start, possibly by another replica on a shared volume) can
//! tell a live upload from a crash leftover. Any failure before the rename deletes it at once
//! ([`TempFile`]'s drop), so a broken upload never shows and its space comes back. Readers
//! that opened the old file keep reading the old version: rename swaps the name, not the data.

use super::jail::RESERVED_PREFIX;
use super::{Result, StorageError, copy_into, in_parents, sync_dir};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of upload temp files (inside the reserved namespace).
pub const TEMP_PREFIX: &str = ".http-nas-tmp-";

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A locked temp file that deletes itself unless committed.
pub struct TempFile {
    path: PathBuf,
    file: File,
    committed: bool,
}

impl TempFile {
    /// Creates a fresh, exclusively locked temp file in `dir`.
    pub fn create_in(dir: &Path) -> Result<Self> {
        debug_assert!(TEMP_PREFIX.starts_with(RESERVED_PREFIX));
        loop {
            let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    let temp = TempFile {
                        path,
                        file,
                        committed: false,
                    };
                    temp.file.lock().map_err(StorageError::from_io)?;
                    return Ok(temp);
                }
                // A leftover of an earlier process with our pid: pick the next name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StorageError::from_io(e)),
            }
        }
    }

    /// The open temp file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Moves the temp file to `target`, replacing it, or (with `create_only`) failing with
    /// [`StorageError::Exists`] if `target` exists.
    pub fn commit(mut self, target: &Path, create_only: bool) -> Result<()> {
        if create_only {
            // link(2) refuses an existing name atomically, which rename(2) cannot.
            fs::hard_link(&self.path, target).map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => StorageError::Exists,
                _ => StorageError::from_io(e),
            })?;
            let _ = fs::remove_file(&self.path);
        } else {
            fs::rename(&self.path, target).map_err(StorageError::from_io)?;
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Writes `body` to `target` atomically; see the module docs. Returns the bytes written.
pub fn write_atomic(target: &Path, body: &mut dyn Read, create_only: bool, fsync: bool) -> Result<u64> {
    match fs::metadata(target) {
        Ok(meta) if meta.is_dir() => return Err(StorageError::IsADirectory),
        Ok(_) if create_only => return Err(StorageError::Exists),
        _ => {}
    }
    let dir = target.parent().ok_or(StorageError::RootRefused)?;
    let (new_dirs, temp) = in_parents(target, || TempFile::create_in(dir))?;
    let size = copy_into(body, temp.file())?;
    if fsync {
        temp.file().sync_all().map_err(StorageError::from_io)?;
    }
    temp.commit(target, create_only)?;
    new_dirs.keep(fsync)?;
    if fsync {
        sync_dir(dir)?;
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Broken, test_dir};

    #[test]
    fn replaces_target_and_leaves_no_temp() {
        let dir = test_dir("atomic-ok");
        let target = dir.join("sub/f.txt");
        assert_eq!(write_atomic(&target, &mut &b"one"[..], false, true).unwrap(), 3);
        assert_eq!(write_atomic(&target, &mut &b"second"[..], false, false).unwrap(), 6);
        assert_eq!(fs::read(&target).unwrap(), b"second");
        assert_eq!(fs::read_dir(dir.join("sub")).unwrap().count(), 1);
    }

    #[test]
    fn failed_body_keeps_target_and_removes_temp() {
        let dir = test_dir("atomic-fail");
        let target = dir.join("f.txt");
        fs::write(&target, b"old").unwrap();
        let err = write_atomic(&target, &mut (&b"partial"[..]).chain(Broken), false, true).unwrap_err();
        assert!(matches!(err, StorageError::Source(_)), "{err:?}");
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn failed_body_removes_the_directories_it_created_but_no_others() {
        let dir = test_dir("atomic-fail-dirs");
        fs::create_dir(dir.join("old")).unwrap();
        let target = dir.join("old/new1/new2/f.txt");
        assert!(write_atomic(&target, &mut (&b"partial"[..]).chain(Broken), false, true).is_err());
        assert!(!dir.join("old/new1").exists());
        assert!(dir.join("old").is_dir());
        write_atomic(&target, &mut &b"whole"[..], false, true).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"whole");
    }

    #[test]
    fn create_only_refuses_existing() {
        let dir = test_dir("atomic-create-only");
        let target = dir.join("f.txt");
        write_atomic(&target, &mut &b"a"[..], true, false).unwrap();
        let err = write_atomic(&target, &mut &b"b"[..], true, false).unwrap_err();
        assert!(matches!(err, StorageError::Exists));
        assert_eq!(fs::read(&target).unwrap(), b"a");
    }
}
