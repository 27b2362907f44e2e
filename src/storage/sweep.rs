//! Start-up sweep: clears what a crashed process (this one, or any replica on the volume) left
//! behind, without ever touching what a live one is using.
//!
//! - A temp file (`.http-nas-tmp-*`), probe file, or other file with the reserved prefix is
//!   removed only if its lock can be taken
//!   (a live upload holds it; one created but not yet locked notices the removal, see
//!   [`super::temp`]).
//! - A crash record (`.http-nas-journal-<inode>`) is acted on only by the holder of its file's
//!   lock, taken without waiting (a live appender holds it), and re-read under that lock: an
//!   append that finished while the sweep was on its way has removed its record by then.
//!   A record whose file is not found is left alone (without that file's lock it cannot be
//!   told from a live append's).
//! - A tree being deleted (`.http-nas-trash-*`) is removed.
//!
//! The walk goes by directory handles and never follows a symlink, so it stays under the root.

use super::dir::{Access, Dir};
use super::jail::RESERVED_PREFIX;
use super::journal::{self, JOURNAL_PREFIX};
use super::lock;
use super::root::open_beneath;
use super::tree::{TRASH_PREFIX, remove_tree};
use super::{Result, StorageError};
use crate::sys::EntryType;
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Walks `root` and settles every leftover it can; returns how many it cleared. The walk keeps
/// the paths of the directories still to visit, not open handles, so a volume of any width or
/// depth needs a few descriptors only; a directory it cannot open is named in a warning.
pub fn sweep(root: &Dir) -> usize {
    let mut cleared = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = match open_beneath(root, &rel) {
            Ok(dir) => dir,
            Err(StorageError::NotFound) => continue,
            Err(e) => {
                log::warn!("start-up sweep could not open {}: {e}", rel.display());
                continue;
            }
        };
        let mut records = Vec::new();
        let entries = match dir.entries() {
            Ok(entries) => entries,
            Err(e) => {
                log::warn!("start-up sweep could not read {}: {e}", rel.display());
                continue;
            }
        };
        for (name, kind, _) in entries.flatten() {
            let text = name.to_string_lossy();
            if text.starts_with(TRASH_PREFIX) {
                match remove_tree(&dir, &name) {
                    Ok(()) => cleared += 1,
                    Err(e) => log::warn!("could not finish deleting {}: {e}", rel.join(&name).display()),
                }
            } else if kind == EntryType::Dir
                || (kind == EntryType::Unknown && dir.stat(&name).is_ok_and(|s| s.is_dir()))
            {
                stack.push(rel.join(&name));
            } else if let Some(ino) = journal::inode_in_name(&text) {
                records.push(ino);
            } else if text.starts_with(RESERVED_PREFIX)
                && !text.starts_with(JOURNAL_PREFIX)
                && remove_if_unlocked(&dir, &name)
            {
                // Temp and probe files, and any other unlocked file in the reserved namespace.
                cleared += 1;
            }
        }
        if !records.is_empty() {
            cleared += settle_records(&dir, &records);
        }
    }
    cleared
}

/// Removes the temp or probe file `name` if nobody holds its lock.
fn remove_if_unlocked(dir: &Dir, name: &OsStr) -> bool {
    let Ok(Some(held)) = lock::try_lock(dir, name, Access::Lock) else {
        return false;
    };
    let removed = dir.remove_file(name).is_ok();
    drop(held);
    removed
}

/// Settles the crash records for `inodes` in `dir`: each under its file's lock (skipped while
/// a live appender holds it); a record whose file is not in `dir` any more is stale.
fn settle_records(dir: &Dir, inodes: &[u64]) -> usize {
    // The files are found by inode number in a second pass over the directory.
    let mut names: Vec<(u64, Option<OsString>)> = inodes.iter().map(|&ino| (ino, None)).collect();
    if let Ok(entries) = dir.entries() {
        for (name, _, ino) in entries.flatten() {
            if let Some(slot) = names.iter_mut().find(|(i, n)| *i == ino && n.is_none())
                && !name.to_string_lossy().starts_with(RESERVED_PREFIX)
            {
                slot.1 = Some(name);
            }
        }
    }
    let mut settled = 0;
    for (ino, name) in names {
        // A record whose file is not found is left alone: without the file's lock it cannot be
        // told from the record of a live append whose file was moved out and back meanwhile.
        let Some(name) = name else {
            log::warn!("a crash record for inode {ino} has no file beside it; left in place");
            continue;
        };
        let result = settle_one(dir, &name, ino);
        match result {
            Ok(true) => settled += 1,
            Ok(false) => {}
            Err(e) => log::warn!("could not settle the crash record of inode {ino}: {e}"),
        }
    }
    settled
}

/// Under the lock of `name` (if free at once): re-reads and settles its crash record.
fn settle_one(dir: &Dir, name: &OsStr, ino: u64) -> Result<bool> {
    let Some(held) = lock::try_lock(dir, name, Access::Write)? else {
        return Ok(false);
    };
    if held.meta.ino() != ino {
        return Ok(false);
    }
    if let Some(size) = journal::settle(dir, &held.file, &held.meta, true)? {
        log::warn!(
            "rolled back an interrupted append to {} ({} -> {size} bytes)",
            name.to_string_lossy(),
            held.meta.len()
        );
    }
    Ok(true)
}
