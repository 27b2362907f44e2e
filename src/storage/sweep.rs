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
//!   Records are matched to files through one map of the directory's inode numbers, so a
//!   directory of n names costs O(n), however many of them are records.
//! - A record whose file is not in its directory is removed (an orphan: its appender died and
//!   its file was removed or renamed by another writer, or the name was planted), but only if
//!   nobody holds the record's own lock: a live appender holds it from the record's creation
//!   to its removal, also while its file is away for an instant (a record seen first, then a
//!   move settling it and a new append writing a new one under the same name), see
//!   [`super::journal`]. It is unlinked under that lock, after checking once more that the name
//!   is still the locked record; every other remover of a record holds its lock too, so a
//!   delayed unlink can never remove a record written anew under the same name. Something that
//!   is not a regular file at a record's name (planted) is left to the file's next holder.
//! - A tree being deleted (`.http-nas-trash-*`) is removed.
//! - Kept digests (`.http-nas-digest-<inode>`, on volumes without extended attributes) outlive
//!   processes and are kept, except one whose inode is not in its directory (its file was
//!   deleted or moved away by another writer): removed, so an inode number reused later never
//!   finds it, and the directory can be removed once empty. Found by the one listing the sweep
//!   makes of each directory anyway (its inode numbers in a set: O(n) for n names). Removing
//!   one a live commit just wrote for a file the listing missed only loses that digest (a file
//!   without one is answered without `Repr-Digest`), never makes one wrong.
//! - A symlink with the reserved prefix (but a crash record's) is removed: the service never makes one (planted at
//!   `.http-nas-replicas`, it would turn the replicas' presence files away).
//!
//! The walk goes by directory handles ([`super::walk`]) and never follows a symlink, so it
//! stays under the root and reaches directories nested deeper than `PATH_MAX`.

use super::dir::{Access, Dir};
use super::jail::RESERVED_PREFIX;
use super::journal::{self, JOURNAL_PREFIX};
use super::lock;
use super::move_delete::{TRASH_PREFIX, remove_tree};
use super::walk::{Visitor, entry_kind, walk};
use super::{Result, StorageError};
use crate::sys::EntryType;
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;

/// Walks `root` and settles every leftover it can; returns how many it cleared. The walk goes
/// by handles, so a volume of any width or depth needs a bounded number of descriptors; a
/// directory it cannot open or read is named in a warning and skipped.
pub fn sweep(root: &Dir) -> usize {
    let mut sweeper = Sweeper { cleared: 0 };
    if let Err(e) = walk(root, &mut sweeper) {
        log::warn!("start-up sweep stopped early: {e}");
    }
    sweeper.cleared
}

/// The sweep's work in each directory.
struct Sweeper {
    cleared: usize,
}

impl Visitor for Sweeper {
    fn visit(&mut self, dir: &Dir, _name: &OsStr, depth: usize) -> Result<Vec<OsString>> {
        let entries = match dir.entries() {
            Ok(entries) => entries,
            Err(e) => {
                log::warn!("start-up sweep could not read a directory {depth} levels down: {e}");
                return Ok(Vec::new());
            }
        };
        let mut subdirs = Vec::new();
        // Crash records: the inode they are for, and their name.
        let mut records = Vec::new();
        // Kept digests' records, by inode, and the inode numbers of everything else listed.
        let mut digests = Vec::new();
        let mut inodes = HashSet::new();
        let mut whole = true;
        for entry in entries {
            let Ok((name, kind, ino)) = entry else {
                whole = false;
                continue;
            };
            let text = name.to_string_lossy();
            if let Some(of) = super::digest::record_inode(&text) {
                digests.push((of, name));
                continue;
            }
            inodes.insert(ino);
            if text.starts_with(TRASH_PREFIX) {
                // Without waiting for any lock: a tree a live writer still holds a file of is
                // left for a later sweep (its delete either finishes it or puts it back).
                match remove_tree(dir, &name, std::time::Instant::now()) {
                    Ok(()) => self.cleared += 1,
                    Err(e) => log::warn!("could not finish deleting {text} ({depth} levels down): {e}"),
                }
            } else if let kind @ (EntryType::Dir | EntryType::Symlink) = entry_kind(dir, &name, kind)
                && (kind == EntryType::Dir || (text.starts_with(RESERVED_PREFIX) && !text.starts_with(JOURNAL_PREFIX)))
            {
                if kind == EntryType::Dir {
                    subdirs.push(name);
                } else if dir.remove_file(&name).is_ok() {
                    // A symlink in the reserved namespace is never the service's own (planted,
                    // say, at the replicas' presence directory, to turn it away): removed.
                    self.cleared += 1;
                }
            } else if let Some(ino) = journal::inode_in_name(&text) {
                records.push((ino, name));
            } else if text.starts_with(RESERVED_PREFIX)
                && !text.starts_with(JOURNAL_PREFIX)
                // Kept digests (volumes without extended attributes) outlive any process.
                && !text.starts_with(super::digest::RECORD_PREFIX)
                && remove_if_unlocked(dir, &name)
            {
                // Temp and probe files, and any other unlocked file in the reserved namespace.
                self.cleared += 1;
            }
        }
        if !records.is_empty() {
            self.cleared += settle_records(dir, records);
        }
        if !digests.is_empty() {
            super::digest::note_records_in_use();
            // Only a whole listing tells an orphan: a file missed by a failed read is not gone.
            if whole {
                self.cleared += remove_orphan_digests(dir, digests, &inodes);
            }
        }
        Ok(subdirs)
    }

    fn leave(&mut self, _parent: &Dir, _name: &OsStr) -> Result<()> {
        Ok(())
    }

    fn cannot_open(&mut self, _parent: &Dir, name: &OsStr, error: StorageError) -> Result<()> {
        log::warn!("start-up sweep could not open {}: {error}", name.to_string_lossy());
        Ok(())
    }
}

/// Removes the kept digests' records in `dir` (each: the inode it is for, and its name) whose
/// inode is not among `inodes` (those listed in `dir`); how many.
fn remove_orphan_digests(dir: &Dir, digests: Vec<(u64, OsString)>, inodes: &HashSet<u64>) -> usize {
    let mut removed = 0;
    for (ino, name) in digests {
        if !inodes.contains(&ino) && dir.remove_file(&name).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        log::info!("removed {removed} kept digest record(s) whose file is not beside them");
    }
    removed
}

/// Removes the temp or probe file `name` if nobody holds its lock.
pub(crate) fn remove_if_unlocked(dir: &Dir, name: &OsStr) -> bool {
    let Ok(Some(held)) = lock::try_lock(dir, name, Access::Lock) else {
        return false;
    };
    // Still the file we locked, right before the unlink (nobody else unlinks it while we hold
    // its lock, and the name is random, so nobody makes it again).
    let removed = dir.stat(name).is_ok_and(|now| now.is(&held.meta)) && dir.remove_file(name).is_ok();
    drop(held);
    removed
}

/// Settles the crash records in `dir` (each: the inode it is for, and its name):
/// each under its file's lock (skipped while a live appender holds it); a record whose file
/// is not in `dir` is an orphan and removed (see the module doc).
fn settle_records(dir: &Dir, records: Vec<(u64, OsString)>) -> usize {
    // The files are found by inode number in a second pass over the directory, through a map:
    // one lookup per entry.
    let mut files: HashMap<u64, Option<OsString>> = records.iter().map(|(ino, _)| (*ino, None)).collect();
    // Only a whole listing tells an orphan: a file missed by a failed read is not gone.
    let listed = dir.entries().and_then(|entries| {
        for entry in entries {
            let (name, _, ino) = entry?;
            if let Some(slot @ None) = files.get_mut(&ino)
                && !name.to_string_lossy().starts_with(RESERVED_PREFIX)
            {
                *slot = Some(name);
            }
        }
        Ok(())
    });
    if let Err(e) = &listed {
        log::warn!("could not read a directory again to settle its crash records: {e}");
    }
    let listed = listed.is_ok();
    let (mut settled, mut orphans) = (0, 0);
    for (ino, record) in records {
        match files.get(&ino) {
            Some(Some(name)) => match settle_one(dir, name, ino) {
                Ok(true) => settled += 1,
                Ok(false) => {}
                Err(e) => log::warn!("could not settle the crash record of inode {ino}: {e}"),
            },
            _ if listed => match journal::remove_if_unlocked(dir, &record) {
                Ok(true) => orphans += 1,
                Ok(false) => {}
                Err(e) => log::warn!("could not remove the orphan crash record of inode {ino}: {e}"),
            },
            _ => {}
        }
    }
    if orphans > 0 {
        log::warn!("removed {orphans} crash record(s) whose file is not beside them");
    }
    settled + orphans
}

/// Under the lock of `name` (if free at once): re-reads and settles its crash record.
/// An idle record slot (a file between batches of appends) asks nothing and is left alone.
fn settle_one(dir: &Dir, name: &OsStr, ino: u64) -> Result<bool> {
    if journal::is_idle(dir, ino)? {
        return Ok(false);
    }
    let Some(held) = lock::try_lock(dir, name, Access::Write)? else {
        return Ok(false);
    };
    if held.meta.ino() != ino || journal::is_idle(dir, ino)? {
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
