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
//!
//! Waits are bounded. A holder in this process finishes its disk work, but a holder in another
//! replica may be frozen (SIGSTOP, a paused container, a debugger) or cut off from the volume,
//! and `flock(2)` has no timeout: a blocking wait would hold a worker for as long, and a few
//! such requests would take every worker. So a wait is `LOCK_NB` tries with a short, growing
//! sleep between them ([`FIRST_BACKOFF`] doubling to [`MAX_BACKOFF`]), for at most the
//! configured bound ([`set_timeout`], `--lock-timeout`); past it the operation fails with
//! [`StorageError::Locked`] (503 with `Retry-After`), having changed nothing. Polling gives no
//! queueing order, but holders keep a lock only for a commit's disk work, so a waiter finds it
//! free within a few sleeps. [`waiters`] counts the requests waiting right now, so readiness
//! can say when every worker is stuck behind a lock.

use super::clean_versions::{self, Version};
use super::dir::{Access, Dir};
use super::journal;
use super::{Result, StorageError};
use std::ffi::OsStr;
use std::fs::{File, Metadata, TryLockError};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Most times a name is reopened because its file changed while we waited for the lock.
const MAX_LOCK_ATTEMPTS: usize = 64;

/// The bound on one lock wait when none is configured (`--lock-timeout`'s default): far above
/// a commit's disk work on a healthy volume, and below `--queue-timeout`'s 30 s, so requests
/// queued behind workers stuck on a lock are served once those give up, not refused too.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// First sleep between two tries of a lock someone else holds.
const FIRST_BACKOFF: Duration = Duration::from_millis(1);
/// Longest sleep between two tries: how late a waiter may notice the lock was released.
const MAX_BACKOFF: Duration = Duration::from_millis(20);

/// The configured bound on a lock wait, in milliseconds. Process-wide, like the setting it
/// comes from: every wait in the storage layer (through a [`Dir`], with no [`super::Storage`]
/// at hand) reads it.
static TIMEOUT_MS: AtomicU64 = AtomicU64::new(DEFAULT_TIMEOUT.as_millis() as u64);
/// Threads waiting for a lock someone else holds, right now.
static WAITERS: AtomicUsize = AtomicUsize::new(0);

/// Sets the bound on every lock wait of this process (`--lock-timeout`).
pub fn set_timeout(bound: Duration) {
    let ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
    TIMEOUT_MS.store(ms, Ordering::Relaxed);
}

/// The bound on one lock wait.
pub fn timeout() -> Duration {
    Duration::from_millis(TIMEOUT_MS.load(Ordering::Relaxed))
}

/// How many threads are waiting right now for a lock someone else holds.
pub fn waiters() -> usize {
    WAITERS.load(Ordering::Relaxed)
}

/// Counts its thread in [`WAITERS`] while it lives (also a thread waiting for the batch of
/// appends it queued behind a lock wait, [`super::group`]).
pub(super) struct Waiting;

impl Waiting {
    pub(super) fn start() -> Waiting {
        WAITERS.fetch_add(1, Ordering::Relaxed);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITERS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Which lock a wait is for.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Shared,
    Exclusive,
}

/// Takes `kind` of lock on `file` without blocking: `false` while someone else holds it.
fn try_take(file: &File, kind: Kind) -> io::Result<bool> {
    let taken = match kind {
        Kind::Shared => file.try_lock_shared(),
        Kind::Exclusive => file.try_lock(),
    };
    match taken {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Waits for `kind` of lock on `file`, at most [`timeout`]: [`StorageError::Locked`] past it.
fn wait(file: &File, kind: Kind) -> Result<()> {
    wait_at_most(file, kind, timeout())
}

/// Waits for `kind` of lock on `file`, at most `bound`.
fn wait_at_most(file: &File, kind: Kind, bound: Duration) -> Result<()> {
    if try_take(file, kind).map_err(StorageError::from_io)? {
        return Ok(());
    }
    let _waiting = Waiting::start();
    let deadline = Instant::now() + bound;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let now = Instant::now();
        if now >= deadline {
            log::warn!(
                "gave up waiting {} ms for a {kind:?} lock held by another request or replica",
                bound.as_millis()
            );
            return Err(StorageError::Locked);
        }
        std::thread::sleep(backoff.min(deadline - now));
        backoff = (backoff * 2).min(MAX_BACKOFF);
        if try_take(file, kind).map_err(StorageError::from_io)? {
            return Ok(());
        }
    }
}

/// Takes the exclusive lock on an open `file` without waiting: `false` while someone else
/// holds it.
pub fn try_exclusive(file: &File) -> io::Result<bool> {
    try_take(file, Kind::Exclusive)
}

/// Waits for the exclusive lock on an open `file`, at most [`timeout`] (for callers that lock
/// files they opened themselves, like a move locking both of its files).
pub fn wait_exclusive(file: &File) -> Result<()> {
    wait(file, Kind::Exclusive)
}

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
/// Waits at most [`timeout`]: [`StorageError::Locked`] past it.
pub fn lock(dir: &Dir, name: &OsStr, access: Access) -> Result<Option<Held>> {
    lock_with(dir, name, access, |file| wait(file, Kind::Exclusive).map(|()| true))
}

/// Like [`lock`], but waits only until `deadline` (one bound shared by the many locks of one
/// request, like a directory delete's): [`StorageError::Locked`] past it.
pub fn lock_by(dir: &Dir, name: &OsStr, access: Access, deadline: Instant) -> Result<Option<Held>> {
    lock_with(dir, name, access, |file| {
        wait_at_most(
            file,
            Kind::Exclusive,
            deadline.saturating_duration_since(Instant::now()),
        )
        .map(|()| true)
    })
}

/// Like [`lock`], but gives up at once when someone else holds the lock: `Ok(None)` then too.
pub fn try_lock(dir: &Dir, name: &OsStr, access: Access) -> Result<Option<Held>> {
    lock_with(dir, name, access, |file| {
        try_take(file, Kind::Exclusive).map_err(StorageError::from_io)
    })
}

/// The one open → lock → "is the name still this file?" loop: `take` takes the lock (shared or
/// exclusive, waiting or not; `false` gives up), and a file replaced, moved or removed while it
/// waited is opened again by name.
fn lock_with(dir: &Dir, name: &OsStr, access: Access, take: impl Fn(&File) -> Result<bool>) -> Result<Option<Held>> {
    for _ in 0..MAX_LOCK_ATTEMPTS {
        let file = match open_regular(dir, name, access)? {
            Some(file) => file,
            None => return Ok(None),
        };
        if !take(&file)? {
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
    let Some(file) = open_any(dir, name, access)? else {
        return Ok(None);
    };
    regular(&file.metadata().map_err(StorageError::from_io)?)?;
    Ok(Some(file))
}

/// Opens `name`, whatever it is but a symlink; `None` if missing.
fn open_any(dir: &Dir, name: &OsStr, access: Access) -> Result<Option<File>> {
    match dir.open_file(name, access) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(StorageError::NotRegular),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Err(StorageError::NotRegular),
        Err(e) => Err(StorageError::from_io(e)),
    }
}

/// `Ok` for a regular file; a directory is [`StorageError::IsADirectory`], anything else
/// [`StorageError::NotRegular`].
fn regular(meta: &Metadata) -> Result<()> {
    match meta {
        m if m.is_file() => Ok(()),
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
    /// The inode's generation, where it was already read ([`clean_versions`]); the ETag needs it.
    pub generation: Option<u32>,
}

/// Opens `name` for reading and finds its committed length: under a shared lock (so no append
/// is between its first and last byte, and no move can take the file away), and only once the
/// name is seen to still point to the locked file (else the file moved while we waited, and its
/// crash record is in another directory: look again), its size, capped by the crash record of
/// an append that died (which the next writer will roll back). `None` if missing.
pub fn committed(dir: &Dir, name: &OsStr) -> Result<Option<Committed>> {
    Ok(locked(dir, name, None, Remember::NEVER, |_| ())?.map(|(seen, ())| seen))
}

/// [`committed`] for a read of the file at `path` (relative to the root; `name` in `dir`) on
/// `local_dev` (the root's device where it is a local filesystem,
/// [`super::root::Root::local_device`]): a version this thread found clean at that path before
/// is served as it is opened, without the lock, the name re-check or the record lookup
/// ([`clean_versions`] says why that is the same answer); a version found clean under the lock
/// is remembered.
pub fn committed_read(dir: &Dir, name: &OsStr, path: &Path, local_dev: Option<u64>) -> Result<Option<Committed>> {
    let Some(file) = open_any(dir, name, Access::Read)? else {
        return Ok(None);
    };
    let mut remember = Remember::NEVER;
    if let Some(dev) = local_dev {
        let meta = file.metadata().map_err(StorageError::from_io)?;
        if meta.is_file()
            && meta.dev() == dev
            && let Some(version) = Version::of(&file, &meta)
        {
            if clean_versions::seen(&version, path) {
                let len = meta.len();
                let generation = Some(version.generation());
                return Ok(Some(Committed {
                    file,
                    meta,
                    len,
                    generation,
                }));
            }
            remember = Remember {
                at: Some((dev, path)),
                generation: Some(version.generation()),
            };
        }
    }
    Ok(locked(dir, name, Some(file), remember, |_| ())?.map(|(seen, ())| seen))
}

/// [`committed`], and what `under_lock` makes of the file while its shared lock is still held
/// (a concatenation loads a source's kept digest at the instant its committed length is read).
pub fn committed_with<T>(
    dir: &Dir,
    name: &OsStr,
    under_lock: impl FnMut(&Committed) -> T,
) -> Result<Option<(Committed, T)>> {
    locked(dir, name, None, Remember::NEVER, under_lock)
}

/// Whether a read under the lock that finds its file clean remembers it ([`clean_versions`]).
#[derive(Clone, Copy)]
struct Remember<'p> {
    /// The device whose files may be remembered and the path read, relative to the root (none:
    /// nothing is remembered).
    at: Option<(u64, &'p Path)>,
    /// The generation of the file first opened, already read (it never changes for an inode).
    generation: Option<u32>,
}

impl Remember<'_> {
    const NEVER: Remember<'static> = Remember {
        at: None,
        generation: None,
    };
}

/// The locked read behind [`committed`], [`committed_read`] and [`committed_with`]; `opened`
/// is the file already opened at `name`, if any.
fn locked<T>(
    dir: &Dir,
    name: &OsStr,
    mut opened: Option<File>,
    mut remember: Remember<'_>,
    mut under_lock: impl FnMut(&Committed) -> T,
) -> Result<Option<(Committed, T)>> {
    for _ in 0..MAX_LOCK_ATTEMPTS {
        let file = match opened.take() {
            Some(file) => file,
            None => {
                remember.generation = None;
                let Some(file) = open_any(dir, name, Access::Read)? else {
                    return Ok(None);
                };
                file
            }
        };
        // The shared lock first, then one fstat that both checks the type and reads the
        // metadata under the lock (a lock on a directory or FIFO is harmless and goes with the
        // descriptor). Only a lock held elsewhere makes us look at the type before waiting, so
        // a directory or a FIFO someone holds is never waited for.
        if !try_take(&file, Kind::Shared).map_err(StorageError::from_io)? {
            regular(&file.metadata().map_err(StorageError::from_io)?)?;
            wait(&file, Kind::Shared)?;
        }
        let meta = file.metadata().map_err(StorageError::from_io)?;
        regular(&meta)?;
        if !dir.stat(name).is_ok_and(|now| now.is(&meta)) {
            // Replaced, moved or removed while we waited: look again.
            continue;
        }
        let (len, clean) = match journal::committed_len_and_clean(dir, &file, &meta) {
            Ok(found) => found,
            Err(e) => {
                let _ = file.unlock();
                return Err(e);
            }
        };
        let mut generation = remember.generation;
        if clean
            && let Some((dev, path)) = remember.at
            && dev == meta.dev()
        {
            // A file opened again (it moved while we waited) has its generation read here,
            // once, for the memory and the ETag both.
            generation = generation.or_else(|| crate::sys::inode_generation(file.as_fd()).ok());
            if let Some(generation) = generation {
                clean_versions::remember(Version::with_generation(&meta, generation), path);
            }
        }
        let seen = Committed {
            file,
            meta,
            len,
            generation,
        };
        let made = under_lock(&seen);
        let _ = seen.file.unlock();
        return Ok(Some((seen, made)));
    }
    Err(StorageError::Io(io::Error::other(
        "the file kept changing while waiting for its lock",
    )))
}

/// What a listing may show of a file without waiting for anyone: its metadata, and its
/// committed length when that can be known.
#[derive(Debug)]
pub struct Glimpse {
    /// The file's metadata.
    pub meta: Metadata,
    /// Its committed length ([`Committed::len`]), or `None` when the file is locked by a writer
    /// and its committed length cannot be told without waiting.
    pub len: Option<u64>,
}

/// Most times [`glimpse`] looks again at a name whose file changed as it looked.
const MAX_GLIMPSE_ATTEMPTS: usize = 4;

/// Like [`committed`], but never waits: the shared lock is tried once, and if a writer holds
/// the file (maybe a frozen replica), its committed length is taken from the crash record of
/// the append in progress, read without the lock ([`journal::committed_len_unlocked`]), or
/// is unknown. `None` if missing. For listings, which must not wait per entry.
pub fn glimpse(dir: &Dir, name: &OsStr) -> Result<Option<Glimpse>> {
    for _ in 0..MAX_GLIMPSE_ATTEMPTS {
        let Some(file) = open_regular(dir, name, Access::Read)? else {
            return Ok(None);
        };
        if !try_take(&file, Kind::Shared).map_err(StorageError::from_io)? {
            let meta = file.metadata().map_err(StorageError::from_io)?;
            let len = journal::committed_len_unlocked(dir, &file)?;
            return Ok(Some(Glimpse { meta, len }));
        }
        let meta = file.metadata().map_err(StorageError::from_io)?;
        if !dir.stat(name).is_ok_and(|now| now.is(&meta)) {
            // Replaced, moved or removed as we looked: look again.
            continue;
        }
        let len = journal::committed_len(dir, &file, &meta);
        let _ = file.unlock();
        return Ok(Some(Glimpse { meta, len: Some(len?) }));
    }
    Err(StorageError::Io(io::Error::other(
        "the file kept changing while it was listed",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_dir;

    #[test]
    fn a_wait_for_a_lock_held_elsewhere_ends_at_its_bound_and_takes_a_freed_one() {
        let path = test_dir("lock-bound").join("f");
        std::fs::write(&path, b"x").unwrap();
        // Two opens are two open file descriptions: their flocks conflict like two processes'.
        let holder = File::open(&path).unwrap();
        holder.lock().unwrap();
        let waiter = File::open(&path).unwrap();
        let bound = Duration::from_millis(50);
        for kind in [Kind::Shared, Kind::Exclusive] {
            let got = wait_at_most(&waiter, kind, bound);
            assert!(matches!(got, Err(StorageError::Locked)), "{kind:?}: {got:?}");
        }
        holder.unlock().unwrap();
        wait_at_most(&waiter, Kind::Exclusive, bound).unwrap();
    }
}
