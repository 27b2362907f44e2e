//! File locks: the one kind (`flock(2)`) the write protocol uses, and the "locked file still
//! has this name" check every holder makes.
//!
//! A writer opens a name, waits for an exclusive lock on what it opened, then checks that the
//! name still points to that same file: while it waited, a POST or move may have put another
//! file there, or a delete removed it. Only then is it the file's holder. Every name-changing
//! operation of the service (replace, move, delete, append) holds this lock, so while held the
//! name cannot change under the holder. Readers take a shared lock only for the instant of
//! reading the file's committed size (see [`committed`]), never while sending data.
//!
//! One lock kind everywhere: GlusterFS makes `flock` and POSIX locks conflict with each other,
//! and NFS emulates `flock` with POSIX locks, so mixing kinds would break exclusion across
//! replicas. Holders only ever do disk work under a lock, never wait on a client.

use super::dir::{Access, Dir};
use super::journal;
use super::{Result, StorageError};
use std::ffi::OsStr;
use std::fs::{File, Metadata, TryLockError};
use std::io;

/// Most times a name is reopened because its file changed while we waited for the lock.
const MAX_LOCK_ATTEMPTS: usize = 64;

/// A regular file under this process's exclusive lock, still at the name it was opened by.
#[derive(Debug)]
pub struct Held {
    /// The open file (read-write, or read-only for [`Access::Lock`] where the service may not
    /// write it); the lock goes with it when it is dropped.
    pub file: File,
    /// Its metadata, read under the lock.
    pub meta: Metadata,
}

impl Held {
    /// Re-reads the metadata (after the holder changed the file).
    pub fn refresh(&mut self) -> Result<()> {
        self.meta = self.file.metadata().map_err(StorageError::from_io)?;
        Ok(())
    }
}

/// Opens `name` in `dir` (for `access`: [`Access::Write`] to append to it, [`Access::Lock`] to
/// replace, move or delete it) and waits for its exclusive lock. `None` if there is no such name.
pub fn lock(dir: &Dir, name: &OsStr, access: Access) -> Result<Option<Held>> {
    lock_with(dir, name, access, |file| file.lock().map(|()| true))
}

/// Like [`lock`], but gives up at once when someone else holds the lock: `Ok(None)` then too.
pub fn try_lock(dir: &Dir, name: &OsStr, access: Access) -> Result<Option<Held>> {
    lock_with(dir, name, access, |file| match file.try_lock() {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => Err(e),
    })
}

/// The one open → lock → "is the name still this file?" loop: `take` takes the lock (shared or
/// exclusive, waiting or not; `false` gives up), and a file replaced, moved or removed while it
/// waited is opened again by name.
fn lock_with(
    dir: &Dir,
    name: &OsStr,
    access: Access,
    take: impl Fn(&File) -> io::Result<bool>,
) -> Result<Option<Held>> {
    for _ in 0..MAX_LOCK_ATTEMPTS {
        let file = match open_regular(dir, name, access)? {
            Some(file) => file,
            None => return Ok(None),
        };
        if !take(&file).map_err(StorageError::from_io)? {
            return Ok(None);
        }
        let meta = file.metadata().map_err(StorageError::from_io)?;
        match dir.stat(name) {
            Ok(now) if now.is(&meta) => return Ok(Some(Held { file, meta })),
            // Replaced, moved or removed while we waited: look again.
            _ => continue,
        }
    }
    Err(StorageError::Io(io::Error::other(
        "the file kept changing while waiting for its lock",
    )))
}

/// Opens `name` if it is a regular file; `None` if missing. A directory is
/// [`StorageError::IsADirectory`], anything else (symlink swapped in, FIFO, device)
/// [`StorageError::NotRegular`].
pub fn open_regular(dir: &Dir, name: &OsStr, access: Access) -> Result<Option<File>> {
    let file = match dir.open_file(name, access) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(StorageError::NotRegular),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Err(StorageError::NotRegular),
        Err(e) => return Err(StorageError::from_io(e)),
    };
    let meta = file.metadata().map_err(StorageError::from_io)?;
    match meta {
        m if m.is_file() => Ok(Some(file)),
        m if m.is_dir() => Err(StorageError::IsADirectory),
        _ => Err(StorageError::NotRegular),
    }
}

/// A file opened for reading, with the size readers may see of it.
#[derive(Debug)]
pub struct Committed {
    /// The open file.
    pub file: File,
    /// Its metadata.
    pub meta: Metadata,
    /// Bytes of whole, committed writes: the file's size, or less if an append was cut off by
    /// a crash and awaits its rollback.
    pub len: u64,
}

/// Opens `name` for reading and finds its committed length: under a shared lock (so no append
/// is between its first and last byte, and no move can take the file away), and only once the
/// name is seen to still point to the locked file (else the file moved while we waited, and its
/// crash record is in another directory: look again), its size, capped by the crash record of
/// an append that died (which the next writer will roll back). `None` if missing.
pub fn committed(dir: &Dir, name: &OsStr) -> Result<Option<Committed>> {
    let shared = |file: &File| file.lock_shared().map(|()| true);
    let Some(Held { file, meta }) = lock_with(dir, name, Access::Read, shared)? else {
        return Ok(None);
    };
    let len = journal::committed_len(dir, &meta);
    let _ = file.unlock();
    Ok(Some(Committed { file, meta, len: len? }))
}
