//! Start-up sweep: removes upload temp files a crashed process left behind, and rolls back
//! appends it was killed in the middle of.
//!
//! Only names with the reserved prefix are touched, and only if nobody holds their lock: a
//! live upload (for instance by another replica sharing the volume) keeps its temp file locked
//! and is skipped; so is a journal whose target file is locked. Symlinks are never followed,
//! so the walk stays under the root.

use super::append::{JOURNAL_PREFIX, recover_orphan};
use super::jail::RESERVED_PREFIX;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// Walks `root`, removes unlocked temp files and settles orphaned journals; returns how many.
pub fn sweep(root: &Path) -> usize {
    let mut removed = 0;
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(items) = fs::read_dir(&dir) else { continue };
        for item in items.flatten() {
            let Ok(kind) = item.file_type() else { continue };
            let path = item.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let name = item.file_name();
                let name = name.to_string_lossy();
                let handled = if name.starts_with(JOURNAL_PREFIX) {
                    recover_orphan(&path)
                } else {
                    name.starts_with(RESERVED_PREFIX) && remove_if_unlocked(&path)
                };
                removed += usize::from(handled);
            }
        }
    }
    removed
}

fn remove_if_unlocked(path: &Path) -> bool {
    let Ok(file) = File::open(path) else { return false };
    if file.try_lock().is_err() {
        return false;
    }
    match fs::remove_file(path) {
        Ok(()) => true,
        Err(e) => {
            log::warn!("could not remove stale temp file {}: {e}", path.display());
            false
        }
    }
}
