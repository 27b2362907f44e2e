//! Locked, all-or-nothing appends.
//!
//! Appenders to one file are serialised by an exclusive `flock` on the file, held while the
//! body is written: it works between threads (each request opens its own file description) and between
//! processes, including replicas sharing a volume whose filesystem supports it. Under the lock
//! we note the size, check the caller's expected offset (which makes retries idempotent), copy
//! the body, and on any failure truncate back to the noted size, so the next appender never
//! sees half a body. A file this append created is removed again on failure, but only while
//! its name still points at it: a file POSTed or moved over that name meanwhile is never
//! touched. Readers take no lock; they ask [`committed_len`], which stops at the size a live
//! journal (below) records, so they never see a streamed body that may still be rolled back.
//!
//! A process killed mid-append cannot roll back. A body smaller than [`SMALL_APPEND_BYTES`] is
//! read whole before the lock is taken and written with a single `write(2)`, which a kill
//! cannot split. For a larger one, before the body is streamed in, we write a
//! journal (`.http-nas-journal-{inode}` beside the file) holding the size to roll back to,
//! and remove it once the append is complete. Whoever next takes the file's lock, or the
//! start-up sweep, finds an orphaned journal and truncates the file back ([`recover`]): since
//! journals are only written under the lock, an unlocked file with a journal is always the
//! remains of a dead appender, never a live one.

use super::{RelPath, Result, StorageError, copy_into, in_parents, same_file, sync_dir};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Prefix of append journals (inside the reserved namespace); the target's inode follows.
pub const JOURNAL_PREFIX: &str = ".http-nas-journal-";
/// First line of a journal, naming its format.
const JOURNAL_MAGIC: &str = "http-nas append journal v1";

/// Appends up to this size, in bytes, are read whole before the lock is taken and written
/// with one `write(2)`, without a journal. Larger ones stream under the lock, journaled.
pub const SMALL_APPEND_BYTES: usize = 64 * 1024;
/// Most times we reopen a file that was replaced while we waited for its lock.
const MAX_LOCK_ATTEMPTS: usize = 16;

/// A file opened for append and locked, and whether this open created it.
struct Locked {
    file: File,
    created: bool,
}

/// Opens (creating if needed) and locks `path`, making sure the locked file is still the one
/// the name points to: a failed append by someone else may have removed the file it created,
/// or a POST may have replaced it, while we waited.
fn open_locked(path: &Path) -> Result<Locked> {
    for _ in 0..MAX_LOCK_ATTEMPTS {
        let (file, created) = match OpenOptions::new().append(true).create_new(true).open(path) {
            Ok(f) => (f, true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => (
                OpenOptions::new()
                    .append(true)
                    .open(path)
                    .map_err(StorageError::from_io)?,
                false,
            ),
            Err(e) => return Err(StorageError::from_io(e)),
        };
        file.lock().map_err(StorageError::from_io)?;
        let ours = file.metadata().map_err(StorageError::from_io)?;
        match fs::metadata(path) {
            Ok(now) if same_file(&now, &ours) => {
                return Ok(Locked { file, created });
            }
            _ => continue,
        }
    }
    Err(StorageError::Io(io::Error::other(
        "file kept changing while waiting for its lock",
    )))
}

/// Appends `body` to `path`; see the module docs. Returns the new size.
pub fn append_locked(path: &Path, body: &mut dyn Read, expected_offset: Option<u64>, fsync: bool) -> Result<u64> {
    if fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(StorageError::IsADirectory);
    }
    // Read the start of the body before taking the lock: most appends fit in it whole, and a
    // whole body goes to the file in one write(2), which a killed process cannot leave half
    // done, so it needs no journal (and no journal fsyncs).
    let mut start = vec![0u8; SMALL_APPEND_BYTES];
    let filled = read_up_to(body, &mut start)?;
    let whole = filled < start.len();
    start.truncate(filled);

    let (new_dirs, Locked { file, created }) = in_parents(path, || open_locked(path))?;
    let ino = file.metadata().map_err(StorageError::from_io)?.ino();
    recover(path, &file, ino)?;
    let before = file.metadata().map_err(StorageError::from_io)?.len();
    if let Some(expected) = expected_offset
        && expected != before
    {
        if created {
            remove_if_still_named(path, &file);
        }
        return Err(StorageError::OffsetMismatch { current: before });
    }
    let journal = if whole {
        None
    } else {
        Some(write_journal(path, ino, before, created, fsync)?)
    };
    let result = (&file).write_all(&start).map_err(StorageError::from_io).and_then(|()| {
        drop(start);
        let rest = if whole { 0 } else { copy_into(body, &file)? };
        if fsync {
            file.sync_data().map_err(StorageError::from_io)?;
        }
        Ok(before + filled as u64 + rest)
    });
    let settled = match result {
        // New parent directories stay once the file in them has data, and a new file's name
        // is flushed like its data; a file of ours rolled back takes its directories along.
        Ok(size) => new_dirs
            .keep(fsync)
            .and_then(|()| match path.parent() {
                Some(dir) if created && fsync => sync_dir(dir),
                _ => Ok(()),
            })
            .map(|()| size),
        Err(e) => {
            roll_back(path, &file, before, created);
            Err(e)
        }
    };
    // Only after the data (or the rollback) is settled may the journal go.
    if let Some(journal) = journal {
        let _ = fs::remove_file(journal);
    }
    settled
}

/// Reads from `body` until `buf` is full or the body ends; returns the bytes read.
fn read_up_to(body: &mut dyn Read, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match body.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StorageError::Source(e)),
        }
    }
    Ok(filled)
}

/// Undoes a failed append under the lock: the file we hold goes back to `before` bytes (even
/// if it was moved meanwhile), and if this append created it, its name is removed again.
fn roll_back(path: &Path, file: &File, before: u64, created: bool) {
    if let Err(e) = file.set_len(before).and_then(|()| file.sync_data()) {
        log::error!("could not roll back a failed append to {}: {e}", path.display());
    }
    if created && before == 0 {
        remove_if_still_named(path, file);
    }
}

/// Removes `path` only if it still names `file`. The append lock does not stop a POST's rename
/// or a move from putting another file under the name while we streamed: that file was
/// acknowledged to its writer and must stay. (Between this check and the unlink is a window of
/// two system calls, against the whole body's duration without the check.)
fn remove_if_still_named(path: &Path, file: &File) {
    let (Ok(ours), Ok(now)) = (file.metadata(), fs::symlink_metadata(path)) else {
        return;
    };
    if same_file(&ours, &now) {
        let _ = fs::remove_file(path);
    }
}

/// The length readers may see of the file at `path` with metadata `meta`: its size, or less
/// while a streamed append to it is in flight (or was cut off by a crash and awaits its
/// rollback): then the size its journal records from before that append.
pub(crate) fn committed_len(path: &Path, meta: &fs::Metadata) -> u64 {
    let journal = journal_path(path, meta.ino());
    match read_journal(&journal) {
        Some(entry) => entry.before.min(meta.len()),
        None => meta.len(),
    }
}

/// The inode a journal file name is for (`.http-nas-journal-{inode}`).
pub(crate) fn journal_inode(name: &str) -> Option<u64> {
    name.strip_prefix(JOURNAL_PREFIX)?.parse().ok()
}

/// The pre-append size a journal file records, if it is one.
pub(crate) fn journal_before(journal: &Path) -> Option<u64> {
    read_journal(journal).map(|entry| entry.before)
}

/// What a journal records about the append it guards.
#[derive(Debug, PartialEq, Eq)]
struct JournalEntry {
    /// Size of the file before the append.
    before: u64,
    /// Whether the append created the file.
    created: bool,
    /// The file's name in its directory.
    name: String,
}

fn journal_path(target: &Path, ino: u64) -> PathBuf {
    target.with_file_name(format!("{JOURNAL_PREFIX}{ino}"))
}

/// Records, before any byte is appended, how to undo the append.
fn write_journal(target: &Path, ino: u64, before: u64, created: bool, fsync: bool) -> Result<PathBuf> {
    let path = journal_path(target, ino);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = format!("{JOURNAL_MAGIC}\n{before}\n{}\n{name}\n", u8::from(created));
    let write = || -> io::Result<()> {
        let mut f = File::create(&path)?;
        f.write_all(text.as_bytes())?;
        if fsync {
            f.sync_all()?;
        }
        Ok(())
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&path);
        return Err(StorageError::from_io(e));
    }
    if fsync && let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(path)
}

fn read_journal(path: &Path) -> Option<JournalEntry> {
    let text = fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    if lines.next()? != JOURNAL_MAGIC {
        return None;
    }
    let before = lines.next()?.parse().ok()?;
    let created = lines.next()? == "1";
    let name = lines.next()?.to_string();
    Some(JournalEntry { before, created, name })
}

/// Under the file's lock: undoes the append of a dead appender, if its journal is there.
fn recover(target: &Path, file: &File, ino: u64) -> Result<()> {
    let journal = journal_path(target, ino);
    if !journal.exists() {
        return Ok(());
    }
    if let Some(entry) = read_journal(&journal) {
        let size = file.metadata().map_err(StorageError::from_io)?.len();
        if size > entry.before {
            log::warn!(
                "rolling back an interrupted append to {} ({size} -> {} bytes)",
                target.display(),
                entry.before
            );
            file.set_len(entry.before)
                .and_then(|()| file.sync_data())
                .map_err(StorageError::from_io)?;
        }
    }
    fs::remove_file(&journal).map_err(StorageError::from_io)
}

/// Start-up sweep of one journal file: rolls its target back unless someone holds the
/// target's lock (a live appender, who will recover it itself). True if it was handled.
pub(crate) fn recover_orphan(journal: &Path) -> bool {
    let Some(entry) = read_journal(journal) else {
        return fs::remove_file(journal).is_ok();
    };
    let ino_in_name = journal.file_name().and_then(|n| n.to_str()).and_then(journal_inode);
    // The name comes from a file on the volume, which other writers may have planted: it must
    // be one plain name beside the journal, and is opened without following a symlink, so the
    // sweep can never reach outside the directory it is walking.
    if !RelPath::parse(&entry.name).is_ok_and(|p| p.segments().count() == 1) {
        log::warn!("ignoring a journal naming {:?}: not a plain file name", entry.name);
        return fs::remove_file(journal).is_ok();
    }
    let target = journal.with_file_name(&entry.name);
    let opened = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&target);
    let Ok(file) = opened else {
        return fs::remove_file(journal).is_ok();
    };
    if file.try_lock().is_err() {
        return false;
    }
    let Ok(meta) = file.metadata() else { return false };
    if !meta.is_file() || Some(meta.ino()) != ino_in_name {
        // The name now belongs to another file: the journal is stale.
        return fs::remove_file(journal).is_ok();
    }
    if entry.created && meta.len() > 0 {
        log::warn!(
            "removing {} left half-created by an interrupted append",
            target.display()
        );
        if file.set_len(0).is_err() {
            return false;
        }
        remove_if_still_named(&target, &file);
    } else if meta.len() > entry.before {
        log::warn!("rolling back an interrupted append to {}", target.display());
        if file.set_len(entry.before).is_err() {
            return false;
        }
    }
    fs::remove_file(journal).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Broken, test_dir};

    #[test]
    fn appends_and_creates() {
        let dir = test_dir("append-ok");
        let path = dir.join("d/log.csv");
        assert_eq!(append_locked(&path, &mut &b"a\n"[..], None, false).unwrap(), 2);
        assert_eq!(append_locked(&path, &mut &b"b\n"[..], Some(2), true).unwrap(), 4);
        assert_eq!(fs::read(&path).unwrap(), b"a\nb\n");
    }

    #[test]
    fn offset_mismatch_changes_nothing() {
        let dir = test_dir("append-offset");
        let path = dir.join("f");
        fs::write(&path, b"abc").unwrap();
        let err = append_locked(&path, &mut &b"x"[..], Some(2), false).unwrap_err();
        assert!(matches!(err, StorageError::OffsetMismatch { current: 3 }));
        assert_eq!(fs::read(&path).unwrap(), b"abc");
        let missing = dir.join("missing");
        assert!(append_locked(&missing, &mut &b"x"[..], Some(5), false).is_err());
        assert!(!missing.exists());
    }

    #[test]
    fn orphaned_journal_is_rolled_back_by_next_appender_and_by_sweep() {
        let dir = test_dir("append-journal");
        let path = dir.join("f");
        fs::write(&path, b"whole\n").unwrap();
        let ino = fs::metadata(&path).unwrap().ino();
        // A dead appender: journal written, half a body appended, never cleaned up.
        write_journal(&path, ino, 6, false, false).unwrap();
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"hal")
            .unwrap();
        assert_eq!(append_locked(&path, &mut &b"next\n"[..], Some(6), false).unwrap(), 11);
        assert_eq!(fs::read(&path).unwrap(), b"whole\nnext\n");
        assert!(!journal_path(&path, ino).exists());

        write_journal(&path, ino, 11, false, false).unwrap();
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"partial")
            .unwrap();
        assert!(recover_orphan(&journal_path(&path, ino)));
        assert_eq!(fs::read(&path).unwrap(), b"whole\nnext\n");
        assert!(!journal_path(&path, ino).exists());
    }

    #[test]
    fn failed_body_rolls_back() {
        let dir = test_dir("append-rollback");
        let path = dir.join("f");
        fs::write(&path, b"keep").unwrap();
        let err = append_locked(&path, &mut (&b"half"[..]).chain(Broken), None, false).unwrap_err();
        assert!(matches!(err, StorageError::Source(_)));
        assert_eq!(fs::read(&path).unwrap(), b"keep");
        let big = vec![b'x'; SMALL_APPEND_BYTES * 3];
        let err = append_locked(&path, &mut (&big[..]).chain(Broken), None, false).unwrap_err();
        assert!(matches!(err, StorageError::Source(_)));
        assert_eq!(
            fs::read(&path).unwrap(),
            b"keep",
            "a streamed append is rolled back too"
        );
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "and its journal is gone");
        let fresh = dir.join("fresh");
        assert!(append_locked(&fresh, &mut (&b"half"[..]).chain(Broken), None, false).is_err());
        assert!(!fresh.exists());
        let deep = dir.join("new1/new2/f");
        assert!(append_locked(&deep, &mut (&big[..]).chain(Broken), None, false).is_err());
        assert!(append_locked(&deep, &mut &b"x"[..], Some(3), false).is_err());
        assert!(!dir.join("new1").exists(), "a failed append leaves no new directories");
    }
}
