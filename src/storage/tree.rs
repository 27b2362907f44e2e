//! Moving and deleting files and directories.

use super::{Result, StorageError, create_parents, same_file, sync_dir};
use std::fs;
use std::path::Path;

/// Renames `src` to `dst` like `mv`: an existing target file is replaced, missing parents are
/// created; a file cannot replace a directory or the reverse, nor itself (like `mv`, which
/// says "are the same file": renaming a link over its own target would destroy the file, and
/// renaming one hard link over another does nothing). Returns the moved size.
pub fn rename(src: &Path, dst: &Path, fsync: bool) -> Result<u64> {
    let src_meta = fs::symlink_metadata(src).map_err(StorageError::from_io)?;
    if let Ok(dst_meta) = fs::metadata(dst) {
        if fs::metadata(src).is_ok_and(|m| same_file(&m, &dst_meta)) {
            return Err(StorageError::SameFile);
        }
        match (src_meta.is_dir(), dst_meta.is_dir()) {
            (false, true) => return Err(StorageError::IsADirectory),
            (true, false) => return Err(StorageError::NotADirectory),
            _ => {}
        }
    }
    let new_dirs = create_parents(dst)?;
    fs::rename(src, dst).map_err(|e| match e.raw_os_error() {
        Some(libc::EINVAL) => StorageError::MoveIntoSelf,
        _ => StorageError::from_io(e),
    })?;
    new_dirs.keep(fsync)?;
    if fsync {
        for dir in [dst.parent(), src.parent()].into_iter().flatten() {
            sync_dir(dir)?;
        }
    }
    Ok(if src_meta.is_dir() { 0 } else { src_meta.len() })
}

/// Deletes the file, link or directory tree at `path` (links are removed, never followed).
pub fn delete(path: &Path, fsync: bool) -> Result<()> {
    let meta = fs::symlink_metadata(path).map_err(StorageError::from_io)?;
    if meta.is_dir() {
        fs::remove_dir_all(path).map_err(StorageError::from_io)?;
    } else {
        fs::remove_file(path).map_err(StorageError::from_io)?;
    }
    if fsync && let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}
