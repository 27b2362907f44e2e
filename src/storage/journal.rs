//! Crash records of appends: how to undo an append that died between its first and last byte.
//!
//! Before an append writes a byte, its holder (see [`super::lock`]) writes a record
//! `.http-nas-journal-<inode>` beside the file, naming the file by identity (device, inode,
//! birth time where the filesystem keeps one, and a random id) and giving the size to return
//! to. The record is removed once the append is whole (and on disk, with fsync); it is only
//! ever written, read for a rollback, or removed by the file's lock holder, so a record found
//! under the lock always belongs to a dead appender. Readers read it under a shared lock only
//! to cap the size they serve. See `docs/write-protocol.md`.
//!
//! A live appender also holds an exclusive lock on its record file itself, from just after
//! creating it until it has removed it. That lets a sweep tell a record whose file is not
//! beside it (an orphan: its appender died and the file was removed or renamed by another
//! writer, or the name was planted) from a live append's record, without the file's lock: it
//! removes the record only if it can take the record's own lock at once and the name still
//! points to the record it locked. A sweep that removes a record in the instant between its
//! creation and its lock is noticed (the name no longer points to the locked file, or its lock
//! is held: then the appender waits for it, bounded), and the appender writes it again.
//!
//! **A record's name is only ever unlinked by a holder of the lock on the record file under
//! that name, checked to be under it right before the unlink**: the appender (its own record),
//! the sweep (an orphan, [`remove_if_unlocked`]) and the file's holder clearing a dead
//! appender's record ([`settle`], which waits, bounded, for the record's lock: a sweep may be
//! removing the same record). New records are made with `O_EXCL`, which fails while the name
//! exists. So while one remover holds the lock, nobody else removes or re-creates the name, and
//! an unlink delayed by any amount still removes what its remover checked; a sweep can never
//! remove a record written anew under the same name. (Something that is not a regular file at
//! a record's name cannot be locked: only the file's holder removes it, the sweep leaves it.)
//!
//! Records are read defensively, as files on a volume other writers share: opened without
//! following symlinks or blocking, only if regular and at most [`MAX_RECORD_BYTES`]; anything
//! that does not parse in full (a record torn by a crash while it was written, which means no
//! byte of its append was written either, or junk) is not a record.

use super::dir::{Access, Dir, random_id};
use super::{Result, StorageError};
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::time::UNIX_EPOCH;

/// Prefix of crash records (inside the reserved namespace); the file's inode number follows.
pub const JOURNAL_PREFIX: &str = ".http-nas-journal-";
/// First line of a record, naming its format.
const MAGIC: &str = "http-nas append journal v2";
/// Last line of a record: a record without it was torn while being written.
const END: &str = "end";
/// Largest record read, in bytes (a real one is about 150).
const MAX_RECORD_BYTES: u64 = 4096;

/// Who a file is, in a way a later file cannot copy: inode numbers are reused (ext4 hands a
/// freed number to the next new file), birth times are not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    /// Birth time in nanoseconds since the epoch, where the filesystem records one.
    born: Option<u128>,
}

impl FileId {
    /// The identity of the file with metadata `meta`.
    pub fn of(meta: &Metadata) -> FileId {
        let born = meta
            .created()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos());
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            born,
        }
    }

    /// True when both describe one file (birth times compared where both are known). The
    /// device is not compared: every mount of a shared volume (every replica's pod) gives it
    /// its own `st_dev`, and a record is only ever looked up in its file's own directory, which
    /// fixes the filesystem. Comparing it made a replica ignore the record of an append that
    /// died on another one, and append after its torn bytes.
    fn matches(&self, other: &FileId) -> bool {
        self.ino == other.ino && (self.born.is_none() || other.born.is_none() || self.born == other.born)
    }
}

/// One crash record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Random, so two records are never the same one.
    pub id: String,
    /// The file the append went to.
    pub file: FileId,
    /// Its size before the append: what a rollback returns it to.
    pub before: u64,
}

impl Record {
    /// A new record for an append to the file with `meta`, which is `before` bytes now.
    pub fn new(meta: &Metadata, before: u64) -> Result<Record> {
        Ok(Record {
            id: random_id().map_err(StorageError::from_io)?,
            file: FileId::of(meta),
            before,
        })
    }

    /// The inode number of the file (and of the record's name).
    pub fn ino(&self) -> u64 {
        self.file.ino
    }

    fn encode(&self) -> String {
        let born = self.file.born.map_or("-".to_string(), |b| b.to_string());
        format!(
            "{MAGIC}\nid {}\ndev {}\nino {}\nborn {born}\nbefore {}\n{END}\n",
            self.id, self.file.dev, self.file.ino, self.before
        )
    }

    fn decode(text: &str) -> Option<Record> {
        let mut lines = text.lines();
        (lines.next()? == MAGIC).then_some(())?;
        let mut field = |key: &str| lines.next()?.strip_prefix(key)?.strip_prefix(' ').map(str::to_string);
        let id = field("id")?;
        let dev = field("dev")?.parse().ok()?;
        let ino = field("ino")?.parse().ok()?;
        let born = match field("born")?.as_str() {
            "-" => None,
            b => Some(b.parse().ok()?),
        };
        let before = field("before")?.parse().ok()?;
        (lines.next()? == END && lines.next().is_none()).then_some(())?;
        Some(Record {
            id,
            file: FileId { dev, ino, born },
            before,
        })
    }
}

/// What is at a record's name.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// Nothing.
    Absent,
    /// Something that is not a whole record (torn by a crash while written, or junk).
    Junk,
    /// A record.
    Record(Record),
}

/// The name of the record for the file with inode `ino`.
pub fn name_for(ino: u64) -> String {
    format!("{JOURNAL_PREFIX}{ino}")
}

/// The inode a record's name is for, if `name` is one.
pub fn inode_in_name(name: &str) -> Option<u64> {
    name.strip_prefix(JOURNAL_PREFIX)?.parse().ok()
}

/// Reads the record for inode `ino` in `dir`.
pub fn read(dir: &Dir, ino: u64) -> Result<Found> {
    let name = name_for(ino);
    let mut file = match dir.open_file(OsStr::new(&name), Access::Read) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Absent),
        // A symlink, FIFO or device planted at the name is junk, not a reason to fail.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENXIO)) => return Ok(Found::Junk),
        Err(e) => return Err(StorageError::from_io(e)),
    };
    let meta = file.metadata().map_err(StorageError::from_io)?;
    if !meta.is_file() || meta.len() > MAX_RECORD_BYTES {
        return Ok(Found::Junk);
    }
    let mut text = String::new();
    match (&mut file).take(MAX_RECORD_BYTES).read_to_string(&mut text) {
        Ok(_) => Ok(Record::decode(&text).map_or(Found::Junk, Found::Record)),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(Found::Junk),
        Err(e) => Err(StorageError::from_io(e)),
    }
}

/// The length readers may see of the file with `meta` in `dir`: its size, capped by the record
/// of an append to it that died. Call under at least a shared lock on the file.
pub fn committed_len(dir: &Dir, meta: &Metadata) -> Result<u64> {
    Ok(match read(dir, meta.ino())? {
        Found::Record(r) if r.file.matches(&FileId::of(meta)) => r.before.min(meta.len()),
        _ => meta.len(),
    })
}

/// The committed length of the open `file` in `dir` while someone else holds its exclusive
/// lock, without waiting for it: known only when an append to it is between its record and its
/// commit. The record is read, then the file's size, then the record again: the same record
/// (same random id) both times means that append was uncommitted the whole while (a record
/// goes only at its append's commit or rollback, and an id never comes back), so the committed
/// length is its size before. Anything else (no record: the holder may be an appender not yet
/// recorded, with bytes about to land, or a replace or move; a record that changed) is `None`:
/// the size on disk might count bytes nobody committed.
pub fn committed_len_unlocked(dir: &Dir, file: &File) -> Result<Option<u64>> {
    let meta = file.metadata().map_err(StorageError::from_io)?;
    let Found::Record(first) = read(dir, meta.ino())? else {
        return Ok(None);
    };
    if !first.file.matches(&FileId::of(&meta)) {
        return Ok(None);
    }
    let size = file.metadata().map_err(StorageError::from_io)?.len();
    Ok(match read(dir, meta.ino())? {
        Found::Record(again) if again == first => Some(first.before.min(size)),
        _ => None,
    })
}

/// An append between its crash record and its commit, under the file's exclusive lock: the
/// guard that makes it all or nothing, as [`super::temp::TempFile`] is for a new file.
///
/// [`Uncommitted::begin`] makes the record durable before any byte of the append is written;
/// [`Uncommitted::commit`] removes it, durably, which is the commit point. Dropped before
/// that (a failed write or sync, a failed commit, a panic), it puts the file back to its size
/// before and removes the record; if even the rollback fails, the record stays, and the next
/// holder of the lock rolls the file back ([`settle`]), exactly as after a crash.
pub struct Uncommitted<'a> {
    dir: &'a Dir,
    file: &'a File,
    record: Record,
    /// The record file, locked until the record is removed (the lock goes with it on drop).
    _record_lock: File,
    fsync: bool,
    committed: bool,
}

impl<'a> Uncommitted<'a> {
    /// Records that `file` (metadata `meta`, in `dir`) is about to grow from `before` bytes.
    /// Call under its exclusive lock, after [`settle`].
    pub fn begin(dir: &'a Dir, file: &'a File, meta: &Metadata, before: u64, fsync: bool) -> Result<Self> {
        let record = Record::new(meta, before)?;
        let record_lock = write(dir, &record, fsync)?;
        Ok(Uncommitted {
            dir,
            file,
            record,
            _record_lock: record_lock,
            fsync,
            committed: false,
        })
    }

    /// Commits the append: removes the record, durably with `fsync`. On failure the guard
    /// rolls back, so the error the client gets is true (and its retry does not append twice).
    pub fn commit(mut self) -> Result<()> {
        remove(self.dir, self.record.ino(), self.fsync)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Uncommitted<'_> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let before = self.record.before;
        match self.file.set_len(before).and_then(|()| self.file.sync_data()) {
            Ok(()) => {
                if let Err(e) = remove(self.dir, self.record.ino(), self.fsync) {
                    log::warn!("rolled back an append; its crash record stays for the next writer: {e}");
                }
            }
            Err(e) => log::error!("could not roll back an append (the next writer will): {e}"),
        }
    }
}

/// Most times a record is created again because a sweep removed it before it was locked.
const MAX_RECORD_ATTEMPTS: usize = 16;

/// Writes `record` (exclusively: a leftover there must be settled first), durably with
/// `fsync` (the record's data, then its name in the directory), before any byte of the append.
/// Returns the record file, under its exclusive lock (see the module doc).
///
/// The lock on the new record is never waited for without bound: someone else holding it can
/// only be a sweep that found the fresh name before we locked it and is removing it (its
/// holder may be frozen), so the wait is the bounded one ([`super::lock::wait_exclusive`]), and
/// once it is ours the name is checked again: gone (the sweep removed it), the record is
/// created anew.
fn write(dir: &Dir, record: &Record, fsync: bool) -> Result<File> {
    let name = name_for(record.ino());
    let name = OsStr::new(&name);
    for _ in 0..MAX_RECORD_ATTEMPTS {
        let mut file: File = match dir.create_new(name) {
            Ok(file) => file,
            // The name is still there: a sweep that took our last attempt's record for an
            // orphan holds it and has not unlinked it yet. Wait for that sweep (bounded) and
            // try again once the name is free.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                wait_for_name_to_clear(dir, name)?;
                continue;
            }
            Err(e) => return Err(StorageError::from_io(e)),
        };
        super::lock::wait_exclusive(&file)?;
        let meta = file.metadata().map_err(StorageError::from_io)?;
        if !dir.stat(name).is_ok_and(|now| now.is(&meta)) {
            // A sweep took it for an orphan between its creation and the lock: write it again.
            continue;
        }
        let written = file
            .write_all(record.encode().as_bytes())
            .and_then(|()| if fsync { file.sync_all() } else { Ok(()) });
        if let Err(e) = written.and_then(|()| if fsync { dir.sync() } else { Ok(()) }) {
            // Ours and locked: we may unlink it.
            let _ = dir.remove_file(name);
            return Err(StorageError::from_io(e));
        }
        return Ok(file);
    }
    Err(StorageError::Io(io::Error::other(
        "the crash record kept being removed before it could be locked",
    )))
}

/// Leaves the record of an append to the file with `meta` that died at `before` bytes, as a
/// dead appender does: written, and no longer locked (a dead process holds no lock).
#[cfg(test)]
pub fn plant_dead(dir: &Dir, meta: &Metadata, before: u64) -> Result<()> {
    write(dir, &Record::new(meta, before)?, false).map(drop)
}

/// Waits (bounded) until the holder of the lock on the record `name` is done with it: the
/// caller then finds the name free, or whatever is there to settle.
fn wait_for_name_to_clear(dir: &Dir, name: &OsStr) -> Result<()> {
    match super::lock::lock(dir, name, Access::Lock) {
        // Nobody holds it (any more) and it is still there: not a sweep's, so not ours to take.
        Ok(Some(_)) => Err(StorageError::Io(io::Error::other(
            "a crash record appeared beside the file while its append began",
        ))),
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes the record `name` in `dir` if it is an orphan's: nobody holds its lock (a live
/// appender does, see the module doc), and the name still points to the record locked, checked
/// again right before the unlink. True if it was removed.
///
/// Something other than a regular file at a record's name (a FIFO, device, symlink or
/// directory another writer planted) cannot be locked, so the sweep leaves it: only the holder
/// of the file the name is for removes it ([`settle`]), so no two removers can race on it.
pub fn remove_if_unlocked(dir: &Dir, name: &OsStr) -> Result<bool> {
    match super::lock::try_lock(dir, name, Access::Lock) {
        Ok(Some(held)) => remove_held(dir, name, &held).map(|()| true),
        Ok(None) | Err(StorageError::NotRegular | StorageError::IsADirectory) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Unlinks `name` in `dir`, which `held` (its record file, under our exclusive lock) was at
/// when locked: checked once more right before the unlink. While we hold the lock nobody else
/// removes the name (every remover holds the lock of what it removes) and nobody creates one
/// there (`O_EXCL` fails while the name exists), so the name is still `held` at the unlink.
fn remove_held(dir: &Dir, name: &OsStr, held: &super::lock::Held) -> Result<()> {
    match dir.stat(name) {
        Ok(now) if now.is(&held.meta) => match dir.remove_file(name) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::from_io(e)),
        },
        // Not the record we locked any more (only another writer of the volume could do
        // that): not ours to remove.
        _ => Ok(()),
    }
}

/// Removes the record for inode `ino` (the append is whole, or rolled back) by its appender,
/// which still holds the record's lock, durably with `fsync`: a record that came back after a
/// power cut would undo an acknowledged append.
fn remove(dir: &Dir, ino: u64, fsync: bool) -> Result<()> {
    match dir.remove_file(OsStr::new(&name_for(ino))) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StorageError::from_io(e)),
    }
    if fsync {
        dir.sync().map_err(StorageError::from_io)?;
    }
    Ok(())
}

/// Clears a dead appender's record (or junk) at the record name for inode `ino`, as the
/// holder of the file's lock: under the record's own lock (waited for, bounded: a sweep may
/// hold it while it removes the same record), checked to be still at the name, durably with
/// `fsync`. Something that is not a regular file there cannot be locked; only the file's
/// holder removes such a thing (the sweep leaves it), so it is unlinked directly.
fn clear_stale(dir: &Dir, ino: u64, fsync: bool) -> Result<()> {
    let name = name_for(ino);
    let name = OsStr::new(&name);
    match super::lock::lock(dir, name, Access::Lock) {
        Ok(Some(held)) => remove_held(dir, name, &held)?,
        // Gone meanwhile (a sweep removed it): nothing to do.
        Ok(None) => return Ok(()),
        Err(StorageError::NotRegular | StorageError::IsADirectory) => match dir.remove_file(name) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StorageError::from_io(e)),
        },
        Err(e) => return Err(e),
    }
    if fsync {
        dir.sync().map_err(StorageError::from_io)?;
    }
    Ok(())
}

/// Under the exclusive lock of `file` (metadata `meta`) in `dir`: undoes the append of a dead
/// appender if a record names this file, and clears whatever else is at its record's name
/// (junk, or the record of an earlier file with the same inode number). Returns the size the
/// file was rolled back to, if it was.
pub fn settle(dir: &Dir, file: &File, meta: &Metadata, fsync: bool) -> Result<Option<u64>> {
    let rolled_back = match read(dir, meta.ino())? {
        Found::Absent => return Ok(None),
        Found::Record(r) if r.file.matches(&FileId::of(meta)) && meta.len() > r.before => {
            file.set_len(r.before)
                .and_then(|()| file.sync_data())
                .map_err(StorageError::from_io)?;
            Some(r.before)
        }
        Found::Record(_) | Found::Junk => None,
    };
    clear_stale(dir, meta.ino(), fsync)?;
    Ok(rolled_back)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            id: "00ff".repeat(8),
            file: FileId {
                dev: 2049,
                ino: 12,
                born: Some(1_700_000_000_123_456_789),
            },
            before: 4096,
        }
    }

    #[test]
    fn records_round_trip_and_torn_ones_are_junk() {
        let text = record().encode();
        assert_eq!(Record::decode(&text), Some(record()));
        let unborn = Record {
            file: FileId {
                born: None,
                ..record().file
            },
            ..record()
        };
        assert_eq!(Record::decode(&unborn.encode()), Some(unborn));
        for cut in 0..text.len() - 1 {
            assert_eq!(Record::decode(&text[..cut]), None, "cut at {cut}: {:?}", &text[..cut]);
        }
        assert_eq!(Record::decode(&format!("{text}extra\n")), None);
        assert_eq!(Record::decode(&text.replace("before 4096", "before x")), None);
    }

    #[test]
    fn identity_tells_a_reused_inode_from_the_same_file() {
        let a = record().file;
        let reused = FileId {
            born: Some(1_800_000_000_000_000_000),
            ..a.clone()
        };
        assert!(a.matches(&a));
        assert!(!a.matches(&reused));
        assert!(
            a.matches(&FileId {
                born: None,
                ..a.clone()
            }),
            "no birth time: inode decides"
        );
        assert!(!a.matches(&FileId { ino: 13, ..a.clone() }));
    }

    /// A fresh test directory `name` (and its handle) holding a file `f` of `whole\n`.
    fn dir_with_file(name: &str) -> (std::path::PathBuf, Dir, std::path::PathBuf) {
        let dir_path = crate::storage::test_dir(name);
        let dir = Dir::open(&dir_path).unwrap();
        let path = dir_path.join("f");
        std::fs::write(&path, b"whole\n").unwrap();
        (dir_path, dir, path)
    }

    #[test]
    fn an_uncommitted_append_rolls_back_and_a_committed_one_stays() {
        let (dir_path, dir, path) = dir_with_file("journal-guard");
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let meta = file.metadata().unwrap();
        let record_there = || dir_path.join(name_for(meta.ino())).exists();
        for commit in [false, true] {
            let before = file.metadata().unwrap().len();
            let append = Uncommitted::begin(&dir, &file, &meta, before, true).unwrap();
            assert!(record_there(), "the record is written before any byte");
            std::os::unix::fs::FileExt::write_all_at(&file, b"more\n", before).unwrap();
            if commit {
                append.commit().unwrap();
            } else {
                drop(append);
            }
            assert!(!record_there(), "commit={commit}: the record is gone either way");
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"whole\nmore\n",
            "only the committed append stays"
        );
    }

    #[test]
    fn without_the_lock_only_a_live_appends_record_tells_the_committed_length() {
        let (_dir_path, dir, path) = dir_with_file("journal-unlocked-len");
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let meta = file.metadata().unwrap();
        assert_eq!(committed_len_unlocked(&dir, &file).unwrap(), None, "no record: unknown");
        let append = Uncommitted::begin(&dir, &file, &meta, 6, false).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, b"uncommitted\n", 6).unwrap();
        assert_eq!(committed_len_unlocked(&dir, &file).unwrap(), Some(6));
        drop(append);
        assert_eq!(committed_len_unlocked(&dir, &file).unwrap(), None);
    }

    #[test]
    fn only_a_record_nobody_holds_is_removed_as_an_orphan() {
        let (dir_path, dir, path) = dir_with_file("journal-orphan");
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let meta = file.metadata().unwrap();
        let name = name_for(meta.ino());
        let live = Uncommitted::begin(&dir, &file, &meta, 6, false).unwrap();
        assert!(
            !remove_if_unlocked(&dir, OsStr::new(&name)).unwrap(),
            "a live append's record stays"
        );
        assert!(dir_path.join(&name).exists());
        drop(live);
        std::fs::write(dir_path.join(&name), "planted").unwrap();
        assert!(
            remove_if_unlocked(&dir, OsStr::new(&name)).unwrap(),
            "an unheld record goes"
        );
        assert!(!dir_path.join(&name).exists());
    }

    #[test]
    fn a_rollback_that_fails_leaves_the_record_for_the_next_holder() {
        let (dir_path, dir, path) = dir_with_file("journal-guard-stuck");
        // A read-only handle cannot truncate: the guard's rollback fails, as on a broken disk.
        let stuck = std::fs::File::open(&path).unwrap();
        let meta = stuck.metadata().unwrap();
        let append = Uncommitted::begin(&dir, &stuck, &meta, 6, false).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"torn")
            .unwrap();
        drop(append);
        assert!(dir_path.join(name_for(meta.ino())).exists(), "the record stays");
        let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let now = writer.metadata().unwrap();
        assert_eq!(
            settle(&dir, &writer, &now, false).unwrap(),
            Some(6),
            "the next holder rolls back"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"whole\n");
        assert!(!dir_path.join(name_for(meta.ino())).exists());
    }
}
