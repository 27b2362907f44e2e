//! Temp files and spools: where a request body waits, whole, before any lock is taken.
//!
//! A [`TempFile`] has a random name in the reserved namespace (`.http-nas-tmp-<64 random
//! bits>`), is created exclusively without following symlinks, and is held under an exclusive
//! lock from before its first byte until it is committed or gone. A start-up sweep (of any
//! replica) removes only temp files it can lock; one it locks in the instant between another
//! process creating and locking it is noticed by that process: its lock, tried without
//! waiting, fails (the sweep holds it, and may be frozen: a wait would have no bound), or,
//! once it holds the lock, the name is no longer its file. Either way it starts over with a
//! new name, leaving the old one to the sweep.
//!
//! A [`Spool`] is a whole received body: up to [`MEMORY_SPOOL_BYTES`] in memory, larger in a
//! temp file beside the target. Receiving it first is what keeps every lock free of client
//! waits: a slow or stalled client holds nothing but its own spool.

use super::dir::{Dir, random_name};
use super::lock::Held;
use super::root::Root;
use super::{Result, StorageError, copy_into};
use crate::sys;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

/// Prefix of temp files (inside the reserved namespace).
pub const TEMP_PREFIX: &str = ".http-nas-tmp-";
/// Bodies up to this size, in bytes, are spooled in memory (one buffer per busy worker).
pub const MEMORY_SPOOL_BYTES: usize = 64 * 1024;
/// Most attempts at a fresh temp name (collisions of 64 random bits, or sweeps in between).
const MAX_TEMP_ATTEMPTS: usize = 16;
/// Buffer for copying between files where `copy_file_range` is not available, in bytes.
const COPY_FALLBACK_BYTES: usize = 256 * 1024;

/// A locked temp file that removes its name when dropped, unless it was committed.
#[derive(Debug)]
pub struct TempFile {
    dir: Dir,
    name: OsString,
    file: File,
    /// False once the name was renamed or linked away (or is known to be gone).
    named: bool,
}

impl TempFile {
    /// Creates a fresh, locked temp file in `dir`.
    pub fn create(dir: &Dir) -> Result<TempFile> {
        for _ in 0..MAX_TEMP_ATTEMPTS {
            let name = OsString::from(random_name(TEMP_PREFIX).map_err(StorageError::from_io)?);
            let file = match dir.create_new(&name) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StorageError::from_io(e)),
            };
            let dir = dir.try_clone().map_err(StorageError::from_io)?;
            let mut temp = TempFile {
                dir,
                name,
                file,
                named: true,
            };
            // Never a blocking lock: someone else holding a name we just created is a sweep
            // that found it before we locked it and is removing it, and that replica may be
            // frozen. The name is given up (the sweep unlinks it; we never do, not holding its
            // lock) and another one made.
            if !super::lock::try_exclusive(&temp.file).map_err(StorageError::from_io)? {
                temp.named = false;
                continue;
            }
            // A sweep may have removed the name between create and lock: then it is not ours.
            let meta = temp.file.metadata().map_err(StorageError::from_io)?;
            match temp.dir.stat(&temp.name) {
                Ok(now) if now.is(&meta) => return Ok(temp),
                _ => temp.named = false,
            }
        }
        Err(StorageError::Io(io::Error::other("could not create a temp file")))
    }

    /// A fresh, locked temp file for a write to `parent` (relative to the root), in the deepest
    /// of its directories that exists now: one deleted in the instant it is used is looked up
    /// again.
    pub fn create_near(root: &Root, parent: &Path) -> Result<TempFile> {
        for _ in 0..MAX_TEMP_ATTEMPTS {
            match TempFile::create(&root.open_deepest(parent)?) {
                Err(StorageError::NotFound) => continue,
                made => return made,
            }
        }
        Err(StorageError::Io(io::Error::other("the directory kept vanishing")))
    }

    /// The open temp file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Gives the temp file the name `target` in `dir` if no file has that name; `false` if
    /// one has. The temp name is removed either way once linked.
    pub fn link_as(&mut self, dir: &Dir, target: &OsStr) -> Result<bool> {
        match self.dir.link(&self.name, dir, target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(StorageError::from_io(e)),
        }
        let _ = self.dir.remove_file(&self.name);
        self.named = false;
        Ok(true)
    }

    /// Renames the temp file over `target` in `dir`, atomically replacing what is there.
    pub fn rename_over(&mut self, dir: &Dir, target: &OsStr) -> Result<()> {
        self.dir
            .rename(&self.name, dir, target)
            .map_err(StorageError::from_io)?;
        self.named = false;
        Ok(())
    }

    /// True while the temp name still exists and is this file (a delete of its directory, or
    /// the sweep of an unlocked moment, may have removed it).
    fn still_named(&self) -> bool {
        let Ok(meta) = self.file.metadata() else { return false };
        self.named && self.dir.stat(&self.name).is_ok_and(|now| now.is(&meta))
    }

    /// Makes sure this temp file can be linked or renamed into `dir`: it is still named and on
    /// the same filesystem, else (its directory was deleted while the body arrived, say) it is
    /// replaced by a copy in `dir`, synced with `fsync`. On failure it is unchanged.
    pub fn prepare_for(&mut self, dir: &Dir, fsync: bool) -> Result<()> {
        let here = self.file.metadata().map_err(StorageError::from_io)?;
        let same_fs = dir.id().is_ok_and(|(dev, _)| dev == here.dev());
        if same_fs && self.still_named() {
            return Ok(());
        }
        let copy = TempFile::create(dir)?;
        copy_range(&self.file, &copy.file, 0, here.len()).map_err(StorageError::from_io)?;
        if fsync {
            copy.file.sync_all().map_err(StorageError::from_io)?;
        }
        *self = copy;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.still_named() {
            let _ = self.dir.remove_file(&self.name);
        }
    }
}

/// A whole request body, received before any lock is taken.
#[derive(Debug)]
pub enum Spool {
    /// A small body, in memory.
    Memory(Vec<u8>),
    /// A larger one, in a temp file.
    File(TempFile),
}

impl Spool {
    /// Reads `body` to its end: into memory if it fits [`MEMORY_SPOOL_BYTES`], else into the
    /// temp file `make_temp` creates.
    pub fn receive(body: &mut dyn Read, make_temp: impl FnOnce() -> Result<TempFile>) -> Result<Spool> {
        let mut start = vec![0u8; MEMORY_SPOOL_BYTES];
        let filled = read_up_to(body, &mut start)?;
        if filled < start.len() {
            start.truncate(filled);
            return Ok(Spool::Memory(start));
        }
        let temp = make_temp()?;
        (&temp.file).write_all(&start).map_err(StorageError::from_io)?;
        drop(start);
        copy_into(body, &temp.file)?;
        Ok(Spool::File(temp))
    }

    /// The body's length in bytes.
    pub fn byte_len(&self) -> Result<u64> {
        match self {
            Spool::Memory(bytes) => Ok(bytes.len() as u64),
            Spool::File(temp) => temp.file.metadata().map(|m| m.len()).map_err(StorageError::from_io),
        }
    }

    /// Writes the body into `held` at `offset` (never through `O_APPEND`, which network
    /// filesystems do not promise across clients).
    pub fn write_at(&self, held: &Held, offset: u64) -> io::Result<()> {
        match self {
            Spool::Memory(bytes) => held.file.write_all_at(bytes, offset),
            Spool::File(temp) => copy_range(&temp.file, &held.file, offset, temp.file.metadata()?.len()),
        }
    }

    /// Hands the body's bytes, in order, to `feed` (to extend a kept digest state with them).
    pub fn replay(&self, feed: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        match self {
            Spool::Memory(bytes) => feed(bytes),
            Spool::File(temp) => {
                let mut buf = vec![0u8; COPY_FALLBACK_BYTES];
                let mut at = 0;
                loop {
                    match temp.file.read_at(&mut buf, at) {
                        Ok(0) => break,
                        Ok(n) => {
                            feed(&buf[..n]);
                            at += n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }

    /// Makes the body a temp file that can be linked into `dir` as a new file, on disk with
    /// `fsync`. On failure the spool is unchanged (the body is never lost to a retry).
    pub fn make_temp(&mut self, dir: &Dir, fsync: bool) -> Result<&mut TempFile> {
        let temp = self.spill_to_file(|| TempFile::create(dir), fsync)?;
        temp.prepare_for(dir, fsync)?;
        Ok(temp)
    }

    /// Makes the body a temp file, on disk with `fsync`, for a write to `parent` whose
    /// directory may not exist yet: in the deepest existing directory of it.
    pub fn make_temp_near(&mut self, root: &Root, parent: &Path, fsync: bool) -> Result<()> {
        self.spill_to_file(|| TempFile::create_near(root, parent), fsync)
            .map(drop)
    }

    /// The spool as a temp file (a memory one written to the file `create` makes), synced with
    /// `fsync`; unchanged on failure.
    fn spill_to_file(&mut self, create: impl FnOnce() -> Result<TempFile>, fsync: bool) -> Result<&mut TempFile> {
        if let Spool::Memory(bytes) = self {
            let temp = create()?;
            (&temp.file).write_all(bytes).map_err(StorageError::from_io)?;
            *self = Spool::File(temp);
        }
        let Spool::File(temp) = self else {
            return Err(StorageError::Io(io::Error::other("the spool is not a file")));
        };
        if fsync {
            temp.file.sync_all().map_err(StorageError::from_io)?;
        }
        Ok(temp)
    }
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

/// Copies `len` bytes from the start of `src` to `dst` at `offset`: in the kernel with
/// `copy_file_range` (a reflink where the filesystem can), else through a buffer.
pub fn copy_range(src: &File, dst: &File, offset: u64, len: u64) -> io::Result<()> {
    copy_span(src, 0, dst, offset, len)
}

/// Copies `len` bytes of `src` at `src_off` to `dst` at `dst_off`, as [`copy_range`] does.
pub fn copy_span(src: &File, src_off: u64, dst: &File, dst_off: u64, len: u64) -> io::Result<()> {
    let end = src_off + len;
    let (mut src_off, mut dst_off) = (src_off, dst_off);
    while src_off < end {
        let want = usize::try_from(end - src_off).unwrap_or(usize::MAX).min(1 << 30);
        match sys::copy_file_range(src, &mut src_off, dst, &mut dst_off, want) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "spool shorter than its length",
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOSYS | libc::EXDEV | libc::EOPNOTSUPP | libc::EINVAL)
                ) =>
            {
                return copy_buffered(src, dst, src_off, dst_off, end - src_off);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn copy_buffered(src: &File, dst: &File, mut src_off: u64, mut dst_off: u64, mut left: u64) -> io::Result<()> {
    let mut buf = vec![0u8; COPY_FALLBACK_BYTES];
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = src.read_at(&mut buf[..want], src_off)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "spool shorter than its length",
            ));
        }
        dst.write_all_at(&buf[..n], dst_off)?;
        (src_off, dst_off, left) = (src_off + n as u64, dst_off + n as u64, left - n as u64);
    }
    Ok(())
}
