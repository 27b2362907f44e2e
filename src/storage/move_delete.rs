//! Moving and deleting, on the same locks as every write.
//!
//! A move takes the exclusive locks of the regular files it moves and replaces (in inode
//! order, so two moves in opposite directions cannot deadlock), settles their crash records,
//! and renames: it never lands between an append's first and last byte, and a record never
//! outlives its file under another name. A directory delete is all or nothing as clients see
//! it: the tree is first renamed to a reserved name (`.http-nas-trash-<random>`, one atomic
//! step), then removed entry by entry, each regular file under its lock, so the delete answers
//! only after every write that committed into the tree. Its lock waits share one bound for the
//! whole request, and a file whose lock cannot be had within it (a frozen replica's) is never
//! removed: every file is lock-checked before anything is removed, and a delete that gives up
//! puts the tree back at its name and answers 503. A start-up sweep finishes a removal a crash
//! interrupted. See `docs/write-protocol.md`.

use super::dir::{Access, Dir, random_name};
use super::jail::{self, FinalLink, Scope};
use super::jail::{MAX_PATH_BYTES, RESERVED_PREFIX};
use super::journal;
use super::lock::{self, Held, open_regular};
use super::preconditions::Conditions;
use super::root::Root;
use super::walk::{Visitor, entry_kind, walk};
use super::{Result, StorageError, split};
use crate::sys::EntryType;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

/// Prefix of a directory tree being deleted (inside the reserved namespace).
pub const TRASH_PREFIX: &str = ".http-nas-trash-";
/// Most times a move starts over because a file changed while it waited for a lock.
const MAX_MOVE_ATTEMPTS: usize = 16;
/// Most passes over a tree being removed while writers keep adding to it.
const MAX_REMOVE_PASSES: usize = 64;

/// Renames `src` to `dst` like `mv`: an existing target file is replaced, missing parents are
/// created; a file cannot replace a directory or the reverse, nor itself (like `mv`, which
/// says "are the same file": renaming a link over its own target would destroy the file, and
/// renaming one hard link over another does nothing). `conditions` are checked on the source
/// under its lock, just before the rename. Links at either end are looked through (for those
/// checks only) where they lead within `scope`; one leading out of it counts as itself.
/// Returns the moved size.
pub fn rename(
    root: &Root,
    src: &Path,
    dst: &Path,
    scope: Scope<'_>,
    conditions: &Conditions<'_>,
    fsync: bool,
) -> Result<u64> {
    let (src_parent, src_name) = split(src)?;
    let (dst_parent, dst_name) = split(dst)?;
    for _ in 0..MAX_MOVE_ATTEMPTS {
        let src_dir = root.open_dir(src_parent)?;
        let src_stat = src_dir.stat(src_name).map_err(StorageError::from_io)?;
        if src_stat.is_dir() {
            check_nameable_after_move(root, &src_dir, src_name, src, dst)?;
        }
        if let Ok(dst_seen) = jail::stat(root, dst, FinalLink::Follow, scope) {
            if jail::stat(root, src, FinalLink::Follow, scope)
                .ok()
                .is_some_and(|s| (s.dev, s.ino) == (dst_seen.dev, dst_seen.ino))
            {
                return Err(StorageError::SameFile);
            }
            match (src_stat.is_dir(), dst_seen.is_dir()) {
                (false, true) => return Err(StorageError::IsADirectory),
                (true, false) => return Err(StorageError::NotADirectory),
                _ => {}
            }
        }
        let (new_dirs, dst_dir) = root.create_dirs(dst_parent)?;
        let dst_stat = dst_dir.stat(dst_name).ok();
        let mut wanted: Vec<(&Dir, &OsStr)> = Vec::new();
        if src_stat.is_file() {
            wanted.push((&src_dir, src_name));
        }
        if dst_stat.is_some_and(|s| s.is_file()) {
            wanted.push((&dst_dir, dst_name));
        }
        let Some(held) = lock_in_order(&wanted)? else { continue };
        // Under the locks: the source's directory is still where its path leads (a delete may
        // have renamed it away: moving out of it would bring back a file the delete removed),
        // and no regular file appeared at the target that we did not lock.
        if root.open_dir(src_parent)?.id().ok() != src_dir.id().ok() {
            continue;
        }
        let unlocked_target = dst_dir
            .stat(dst_name)
            .is_ok_and(|now| now.is_file() && !held.iter().any(|h| now.is(&h.meta)));
        if unlocked_target {
            continue;
        }
        for ((dir, _), h) in wanted.iter().zip(&held) {
            journal::settle(dir, &h.file, &h.meta, fsync)?;
        }
        match held.first() {
            Some(h) if src_stat.is_file() => conditions.check_held(h)?,
            _ => conditions.check_not_file()?,
        }
        src_dir
            .rename(src_name, &dst_dir, dst_name)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EINVAL) => StorageError::MoveIntoSelf,
                _ => StorageError::from_io(e),
            })?;
        // A file's kept digests go with it (an extended attribute does by itself; a record
        // beside it is moved), and the replaced target's record goes.
        if let Some(h) = held.first().filter(|_| src_stat.is_file()) {
            // A volume's records count from the first file seen without attributes.
            super::digest::needs_dir(&h.file);
            if let Some(target) = held.get(1) {
                super::digest::forget(&dst_dir, std::os::unix::fs::MetadataExt::ino(&target.meta));
            }
            super::digest::carry(&src_dir, &dst_dir, std::os::unix::fs::MetadataExt::ino(&h.meta));
        }
        new_dirs.keep(fsync)?;
        if fsync {
            dst_dir.sync().map_err(StorageError::from_io)?;
            src_dir.sync().map_err(StorageError::from_io)?;
        }
        let size = match held.first() {
            Some(h) if src_stat.is_file() => h.file.metadata().map_err(StorageError::from_io)?.len(),
            _ => dst_dir
                .stat(dst_name)
                .map_or(0, |s| if s.is_file() { s.size } else { 0 }),
        };
        return Ok(size);
    }
    Err(StorageError::Io(io::Error::other(
        "the files kept changing while waiting for their locks",
    )))
}

/// Refuses to move the directory `name` in `dir` (at `src`) to `dst` if a path in it would
/// then be longer than the path parser accepts ([`MAX_PATH_BYTES`]) or, with the root's own
/// path in front, than `PATH_MAX`: no request could name it any more (nor any path-based tool
/// reach it). Only a move to a longer location can do that, so only then is the tree walked
/// (by handles, stopping at the first path too long), which costs a read of every directory
/// in it. A write into the tree racing the move can still add a deeper path under the old
/// name; deletes and the sweep handle a tree of any depth all the same.
fn check_nameable_after_move(root: &Root, dir: &Dir, name: &OsStr, src: &Path, dst: &Path) -> Result<()> {
    let (src_len, dst_len) = (src.as_os_str().len(), dst.as_os_str().len());
    if dst_len <= src_len {
        return Ok(());
    }
    // PATH_MAX counts the terminating NUL; a '/' joins the root and the relative path.
    let path_max = usize::try_from(libc::PATH_MAX).unwrap_or(usize::MAX);
    let limit = MAX_PATH_BYTES.min(path_max.saturating_sub(root.path().as_os_str().len() + 2));
    let Some(budget) = limit.checked_sub(dst_len) else {
        return Err(StorageError::MoveTooDeep { limit });
    };
    let top = dir.open_dir(name).map_err(StorageError::from_io)?;
    walk(
        &top,
        &mut Measure {
            budget,
            limit,
            lengths: Vec::new(),
        },
    )
}

/// Walks a tree for [`check_nameable_after_move`]: fails at the first path below the top
/// longer than `budget` bytes (as `a/b/c`, without the top's own name).
struct Measure {
    budget: usize,
    limit: usize,
    /// The length of the path to the directory at each depth of the current path.
    lengths: Vec<usize>,
}

impl Visitor for Measure {
    fn visit(&mut self, dir: &Dir, name: &OsStr, depth: usize) -> Result<Vec<OsString>> {
        self.lengths.truncate(depth);
        let here = match self.lengths.last() {
            Some(above) => above + 1 + name.len(),
            None => 0,
        };
        self.lengths.push(here);
        let mut subdirs = Vec::new();
        // A directory the service may not read cannot be measured (nor reached through the
        // API): it does not stop the move.
        let Ok(entries) = dir.entries() else {
            return Ok(subdirs);
        };
        for (entry, kind, _) in entries.flatten() {
            if here + 1 + entry.len() > self.budget {
                return Err(StorageError::MoveTooDeep { limit: self.limit });
            }
            if entry_kind(dir, &entry, kind) == EntryType::Dir {
                subdirs.push(entry);
            }
        }
        Ok(subdirs)
    }

    fn leave(&mut self, _parent: &Dir, _name: &OsStr) -> Result<()> {
        Ok(())
    }

    fn cannot_open(&mut self, _parent: &Dir, _name: &OsStr, _error: StorageError) -> Result<()> {
        Ok(())
    }
}

/// Locks the regular files at `names` (directory and name each) in inode order; `None` if one
/// is missing or changed while waiting (the caller looks again). Returned in the given order.
fn lock_in_order(names: &[(&Dir, &OsStr)]) -> Result<Option<Vec<Held>>> {
    let mut files = Vec::with_capacity(names.len());
    for (dir, name) in names {
        match open_regular(dir, name, Access::Lock)? {
            Some(file) => files.push(file),
            None => return Ok(None),
        }
    }
    let mut metas = Vec::with_capacity(files.len());
    for file in &files {
        metas.push(file.metadata().map_err(StorageError::from_io)?);
    }
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| (metas[i].dev(), metas[i].ino()));
    order.dedup_by_key(|i| (metas[*i].dev(), metas[*i].ino()));
    for &i in &order {
        lock::wait_exclusive(&files[i])?;
    }
    let mut held = Vec::with_capacity(files.len());
    for ((file, meta), (dir, name)) in files.into_iter().zip(metas).zip(names) {
        match dir.stat(name) {
            Ok(now) if now.is(&meta) => {}
            _ => return Ok(None),
        }
        let meta = file.metadata().map_err(StorageError::from_io)?;
        held.push(Held { file, meta });
    }
    Ok(Some(held))
}

/// Deletes the file, link or directory tree at `path` (links are removed, never followed), if
/// `conditions` hold at that instant (a file's under its lock).
pub fn delete(root: &Root, path: &Path, conditions: &Conditions<'_>, fsync: bool) -> Result<()> {
    let (parent, name) = split(path)?;
    let dir = root.open_dir(parent)?;
    let stat = dir.stat(name).map_err(StorageError::from_io)?;
    if !stat.is_file() {
        conditions.check_not_file()?;
    }
    if stat.is_dir() {
        return delete_tree(&dir, name, path, fsync);
    }
    if stat.is_file() {
        let held = lock::lock(&dir, name, Access::Lock)?.ok_or(StorageError::NotFound)?;
        journal::settle(&dir, &held.file, &held.meta, fsync)?;
        conditions.check_held(&held)?;
        dir.remove_file(name).map_err(StorageError::from_io)?;
        super::digest::forget_deleted(&dir, &held.file, std::os::unix::fs::MetadataExt::ino(&held.meta));
    } else {
        dir.remove_file(name).map_err(StorageError::from_io)?;
    }
    if fsync {
        dir.sync().map_err(StorageError::from_io)?;
    }
    Ok(())
}

/// Deletes the directory `name` in `dir` (`path` from the root, for logs): renamed to the trash
/// in one atomic step (clients see all of it go at once), then every regular file in it is
/// checked to be lockable, and the tree removed, each file under its lock; all within one bound
/// ([`lock::timeout`]) for the whole request. A file whose lock cannot be had by then (a
/// replica frozen in the middle of a write to it) is never removed: the tree is renamed back
/// to its name (if that is still free) and the delete answers [`StorageError::Locked`], so a
/// write that then commits into it is reachable, and its answer true. See
/// `docs/write-protocol.md`.
fn delete_tree(dir: &Dir, name: &OsStr, path: &Path, fsync: bool) -> Result<()> {
    let deadline = Instant::now() + lock::timeout();
    let trash = random_name(TRASH_PREFIX).map_err(StorageError::from_io)?;
    let trash = OsStr::new(&trash);
    dir.rename(name, dir, trash).map_err(StorageError::from_io)?;
    if fsync {
        dir.sync().map_err(StorageError::from_io)?;
    }
    // Nothing is removed until every file has been locked once: a frozen writer is found
    // before the tree loses anything.
    let outcome = match check_lockable(dir, trash, deadline) {
        Ok(()) => remove_tree(dir, trash, deadline),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => Ok(()),
        Err(StorageError::Locked) => {
            restore(dir, trash, name, path, fsync);
            Err(StorageError::Locked)
        }
        // The delete has happened; what cannot be removed now (a subdirectory the service may
        // not write), the next start-up sweep tries again.
        Err(e) => {
            log::warn!(
                "deleted {} but could not remove all of it yet ({}): {e}",
                path.display(),
                trash.to_string_lossy()
            );
            Ok(())
        }
    }
}

/// Puts a tree whose delete gave up back at its name, unless something else has that name now
/// (then it stays in the trash, which the next start-up sweep removes; said in the log).
fn restore(dir: &Dir, trash: &OsStr, name: &OsStr, path: &Path, fsync: bool) {
    let restored = match dir.rename_noreplace(trash, dir, name) {
        // A filesystem without RENAME_NOREPLACE: only if the name is free now (an instant's
        // race with a writer creating it, who would then be replaced).
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => match dir.stat(name) {
            Err(missing) if missing.kind() == io::ErrorKind::NotFound => dir.rename(trash, dir, name),
            Ok(_) => Err(io::Error::from_raw_os_error(libc::EEXIST)),
            Err(other) => Err(other),
        },
        other => other,
    };
    match restored.and_then(|()| if fsync { dir.sync() } else { Ok(()) }) {
        Ok(()) => log::warn!(
            "gave up deleting {}: a file in it stayed locked by another request or replica; the tree is back",
            path.display()
        ),
        Err(e) => log::error!(
            "gave up deleting {} (a file in it stayed locked) and could not put it back ({e}): it stays as {}",
            path.display(),
            trash.to_string_lossy()
        ),
    }
}

/// Checks that every regular file in the tree `name` in `parent` can be locked by `deadline`
/// (each lock released at once): [`StorageError::Locked`] if one cannot. Other failures (a
/// directory that cannot be opened) are left to the removal.
fn check_lockable(parent: &Dir, name: &OsStr, deadline: Instant) -> Result<()> {
    struct Checker {
        deadline: Instant,
    }
    impl Visitor for Checker {
        fn visit(&mut self, dir: &Dir, _name: &OsStr, _depth: usize) -> Result<Vec<OsString>> {
            sort_entries(
                dir,
                |entry| match lock::lock_by(dir, entry, Access::Lock, self.deadline) {
                    Err(StorageError::Locked) => Err(StorageError::Locked),
                    _ => Ok(()),
                },
                |_, _| Ok(()),
            )
        }

        fn leave(&mut self, _parent: &Dir, _name: &OsStr) -> Result<()> {
            Ok(())
        }

        fn cannot_open(&mut self, _parent: &Dir, _name: &OsStr, _error: StorageError) -> Result<()> {
            Ok(())
        }

        fn lost_way(&mut self, _depth: usize) {}
    }
    let top = match parent.open_dir(name) {
        Ok(top) => top,
        Err(_) => return Ok(()),
    };
    match walk(&top, &mut Checker { deadline }) {
        Err(StorageError::Locked) => Err(StorageError::Locked),
        _ => Ok(()),
    }
}

/// Removes the directory `name` in `parent` and everything in it, never following a symlink.
/// Each regular file is removed under its lock, waited for until `deadline` at most, so a
/// write committing into the tree finishes first; a file whose lock cannot be had by then is
/// never removed, and the removal stops with [`StorageError::Locked`] (the rest stays). Files
/// the service is still receiving (temp files) are removed without waiting; a crash record
/// under its own lock only ([`journal::remove_if_unlocked`]). The walk goes by directory
/// handles ([`walk`]), one name at a time relative to the directory that holds it, so a tree
/// nested deeper than `PATH_MAX` is removed like any other, with a bounded number of
/// descriptors.
pub fn remove_tree(parent: &Dir, name: &OsStr, deadline: Instant) -> Result<()> {
    for _ in 0..MAX_REMOVE_PASSES {
        let top = match parent.open_dir(name) {
            Ok(top) => top,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            // Not a directory (any more): a file or link, removed as itself.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
                return ignore_missing(parent.remove_file(name));
            }
            Err(e) => return Err(StorageError::from_io(e)),
        };
        let mut remover = Remover {
            not_empty: false,
            deadline,
        };
        walk(&top, &mut remover)?;
        drop(top);
        remover.leave(parent, name)?;
        // Not empty: a writer added an entry meanwhile, so another pass.
        if !remover.not_empty {
            return Ok(());
        }
    }
    Err(StorageError::Io(io::Error::other(
        "a directory being deleted kept getting new entries",
    )))
}

/// One pass of [`remove_tree`]: entries removed on the way down, directories on the way up.
struct Remover {
    /// Set when a directory was not empty after its entries were removed.
    not_empty: bool,
    /// Until when a file's lock is waited for.
    deadline: Instant,
}

impl Visitor for Remover {
    fn visit(&mut self, dir: &Dir, _name: &OsStr, _depth: usize) -> Result<Vec<OsString>> {
        let deadline = self.deadline;
        let not_empty = &mut self.not_empty;
        sort_entries(
            dir,
            |entry| {
                let held = match lock::lock_by(dir, entry, Access::Lock, deadline) {
                    // A writer holds it past the bound: never removed under it.
                    Err(StorageError::Locked) => return Err(StorageError::Locked),
                    held => held.ok().flatten(),
                };
                ignore_missing(dir.remove_file(entry))?;
                drop(held);
                Ok(())
            },
            |entry, kind| {
                // A crash record only under its own lock: a live appender in the tree holds it
                // (it then holds its file too, and the next pass waits for that).
                if kind == EntryType::File
                    && entry.to_str().and_then(journal::inode_in_name).is_some()
                    && !journal::remove_if_unlocked(dir, entry)?
                {
                    *not_empty = true;
                    return Ok(());
                }
                ignore_missing(dir.remove_file(entry))
            },
        )
    }

    fn leave(&mut self, parent: &Dir, name: &OsStr) -> Result<()> {
        match parent.remove_dir(name) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => {
                self.not_empty = true;
                Ok(())
            }
            // A file or link where the directory was: removed as itself.
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => ignore_missing(parent.remove_file(name)),
            Err(e) => Err(StorageError::from_io(e)),
        }
    }

    fn lost_way(&mut self, _depth: usize) {
        self.not_empty = true;
    }
}

/// Goes through the entries of `dir` as both tree walks of a delete must see them: returns its
/// subdirectories (to visit next), calls `user_file` for each regular file not named with
/// [`RESERVED_PREFIX`] (the files writers lock), and `other` for every other entry with its
/// kind (the service's own files, symlinks, ...). The first error stops it.
fn sort_entries(
    dir: &Dir,
    mut user_file: impl FnMut(&OsStr) -> Result<()>,
    mut other: impl FnMut(&OsStr, EntryType) -> Result<()>,
) -> Result<Vec<OsString>> {
    let mut subdirs = Vec::new();
    for entry in dir.entries().map_err(StorageError::from_io)? {
        let (entry, kind, _) = entry.map_err(StorageError::from_io)?;
        let reserved = entry.to_str().is_some_and(|n| n.starts_with(RESERVED_PREFIX));
        match entry_kind(dir, &entry, kind) {
            EntryType::Dir => subdirs.push(entry),
            EntryType::File if !reserved => user_file(&entry)?,
            kind => other(&entry, kind)?,
        }
    }
    Ok(subdirs)
}

fn ignore_missing(result: io::Result<()>) -> Result<()> {
    match result {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StorageError::from_io(e)),
        _ => Ok(()),
    }
}
