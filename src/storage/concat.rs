//! Server-side concatenation: files already on the volume joined into one, the bytes moved in
//! the kernel (`copy_file_range`), or not moved at all where the filesystem shares extents
//! (`FICLONERANGE`: XFS with reflink, btrfs).
//!
//! 1. The sources are gathered into a locked [`TempFile`] beside the target, one after the
//!    other, each at one committed state: its shared lock is taken for the instant of reading
//!    its committed length ([`lock::committed`], as every reader does), so no append is between
//!    its first and last byte, and the bytes up to that length never change afterwards (an
//!    append only adds beyond it, a replace or move swaps the name, not the data the open file
//!    holds). At most one source is open and at most one lock held at a time, never while
//!    another is waited for: two concatenations naming each other's targets as sources, or
//!    any other writer, cannot deadlock with this one, whatever the order of the sources.
//! 2. The whole temp file is then committed: as a replace (POST), by the upload's own commit
//!    ([`upload::commit`]: rename over the target under its lock, preconditions checked
//!    there); or as one append (PUT), by the append's own commit ([`append::commit`]) with the
//!    temp file as its spooled body (crash record, all or nothing, `Upload-Offset`).
//! 3. With `delete_sources`, each source is removed after the commit, under its exclusive lock
//!    (taken one at a time, bounded), and only if it is still the version copied (same file,
//!    inode generation, size, modification and change times); one changed meanwhile is kept
//!    and reported. A source whose own name is a symlink is kept (its file is another name's).
//!
//! The work stops, with nothing committed and the temp file dropped, once the client has gone
//! or the server is stopping: asked before each source, every [`GONE_CHECK_BYTES`] copied and
//! before the commit, so a small request cannot keep a worker and the disk busy for nobody.
//!
//! A crash before the commit leaves a temp file (removed by the next sweep) and the target as
//! it was; a failure (a missing source, a full disk) drops the temp file and changes nothing.

use super::append;
use super::digest;
use super::dir::Access;
use super::lock;
use super::preconditions::Conditions;
use super::root::Root;
use super::temp::{Spool, TempFile, copy_span};
use super::upload;
use super::{PathError, Result, StorageError, committed_state, split};
use crate::sys;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Most sources one concatenation takes (docs/API.md).
pub const MAX_SOURCES: usize = 10_000;

/// Bytes copied between two questions whether the client is still there (and the server not
/// stopping), besides one before each source: one `poll(2)` per 64 MiB.
pub const GONE_CHECK_BYTES: u64 = 64 << 20;

/// Concatenations under way: each holds a worker for as long as its copying takes, so
/// `/readyz` counts them with the workers waiting for locks.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// How many concatenations are copying right now.
pub fn running() -> usize {
    RUNNING.load(Ordering::Relaxed)
}

/// Counts its thread in [`RUNNING`] while it lives.
struct Running;

impl Running {
    fn start() -> Running {
        RUNNING.fetch_add(1, Ordering::Relaxed);
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a concatenation did.
#[derive(Debug)]
pub struct Outcome {
    /// The target's size after the commit.
    pub size: u64,
    /// With `delete_sources`: the indexes of the sources removed.
    pub deleted: Vec<usize>,
    /// With `delete_sources`: the indexes of the sources kept because they changed (or went)
    /// after they were copied.
    pub kept: Vec<usize>,
}

/// Whether the target is replaced or appended to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `POST`: create or replace, atomically.
    Replace,
    /// `PUT`: one all-or-nothing append.
    Append,
}

/// The version of a source that was copied: enough to tell it is still the same at deletion.
///
/// Device, inode, size and times are not enough where timestamps have whole seconds (ext4 with
/// 128-byte inodes): a source replaced twice within a second can get the copied version's inode
/// number back with the same size and times. So the inode's generation is compared too, where
/// the filesystem has one (`FS_IOC_GETVERSION`, as the ETag does, `app/conditional.rs`): a
/// reused inode number gets a new generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Copied {
    dev: u64,
    ino: u64,
    generation: Option<u32>,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Copied {
    fn of(file: &File, meta: &Metadata) -> Copied {
        use std::os::fd::AsFd;
        Copied {
            dev: meta.dev(),
            ino: meta.ino(),
            generation: sys::inode_generation(file.as_fd()).ok(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// Joins `sources` (real paths relative to the root, as the jail resolved them) into `target`
/// (`mode`), if `conditions` hold at the commit and `digests` approves of the target's digests
/// after it (`digests.wanted` is what to compute over the gathered bytes; the first digests its
/// check gets are theirs). `creatable` is whether an append may create the target's name. A
/// source's failure is [`StorageError::InSource`] with its index. With `delete_sources`
/// (whether each source's name is a symlink), each source still as copied is removed after the
/// commit, except those reached through a symlink, which are kept. Once `gone` (asked before
/// each source and every [`GONE_CHECK_BYTES`] copied) says the client left, the work stops:
/// the temp file goes, nothing is committed ([`StorageError::ClientGone`]).
#[allow(clippy::too_many_arguments)]
pub fn concat(
    root: &Root,
    target: &Path,
    sources: &[PathBuf],
    mode: Mode,
    creatable: std::result::Result<(), PathError>,
    conditions: &Conditions<'_>,
    delete_sources: Option<&[bool]>,
    digests: &mut digest::Plan<'_>,
    fsync: bool,
    gone: &dyn Fn() -> bool,
) -> Result<Outcome> {
    let (parent, name) = split(target)?;
    let in_source = |index: usize| {
        move |e: StorageError| StorageError::InSource {
            index,
            error: Box::new(e),
        }
    };
    if let Some(index) = sources.iter().position(|s| s == target) {
        return Err(in_source(index)(StorageError::SourceIsTarget));
    }
    let state = committed_state(root, parent, name)?;
    if mode == Mode::Replace || conditions.any() {
        conditions.check(state.as_ref().map(|seen| (&seen.file, &seen.meta, seen.len)))?;
    }
    let target_id = state.as_ref().map(|seen| (seen.meta.dev(), seen.meta.ino()));
    drop(state);
    if mode == Mode::Append
        && let Err(e) = creatable
        && target_id.is_none()
    {
        return Err(e.into());
    }
    let _running = Running::start();
    let temp = TempFile::create_near(root, parent)?;
    let mut copied = Vec::with_capacity(sources.len());
    // The crc32c of the bytes gathered so far, combined from the sources' kept ones while every
    // source has one.
    let mut combined = Some(0u32);
    let (len, cloned) = {
        let mut copier = Copier::new(temp.file(), gone)?;
        for (index, source) in sources.iter().enumerate() {
            if gone() {
                return Err(abandoned(target, index, copier.offset));
            }
            let (version, crc32c) = match gather_one(root, source, &mut copier, target_id) {
                Ok(gathered) => gathered,
                Err(StorageError::ClientGone) => return Err(abandoned(target, index, copier.offset)),
                Err(e) => return Err(in_source(index)(e)),
            };
            combined = combined
                .zip(crc32c)
                .map(|(before, crc)| combine(before, crc, version.len))
                .transpose()?;
            copied.push(version);
        }
        (copier.offset, copier.cloned)
    };
    if fsync {
        temp.file().sync_all().map_err(StorageError::from_io)?;
    }
    log::info!(
        "concatenation into {}: {} source(s), {len} bytes, {cloned} of them shared with the sources (reflink)",
        target.display(),
        sources.len(),
    );
    // The digests of the gathered bytes: their crc32c combined from the sources' kept ones, or
    // read back from the temp file (the page cache holds it, or shares it with the sources)
    // where a source has none kept, or where a sha-256 (sha-512) is to be computed: a
    // replacement's is the gathered bytes' own, so they are read for it here, once. An append's
    // extends the target's kept state, which only its commit can load (under the target's
    // lock): it replays the temp file then ([`append::commit`]), once.
    let needed = match mode {
        Mode::Replace => digests.wanted,
        Mode::Append => digest::Wanted::default(),
    };
    let hasher = match combined {
        Some(crc32c) if needed == digest::Wanted::default() => digest::Hasher::of_crc32c(len, crc32c),
        _ => hash_gathered(temp.file(), len, needed)?,
    };
    log::debug!(
        "concatenation into {}: digests {}",
        target.display(),
        match (combined, needed == digest::Wanted::default()) {
            (Some(_), true) => "combined from the sources' kept ones",
            (Some(_), false) => "read back (asked for more than a crc32c)",
            (None, _) => "read back (a source has none kept)",
        }
    );
    // Last look before the commit: a client gone while the last source was waited for, copied
    // or read back is not answered, so nothing is committed for it.
    if gone() {
        return Err(abandoned(target, sources.len(), len));
    }
    let size = match mode {
        Mode::Replace => {
            // The file is the gathered bytes: their digests are its.
            let sums = hasher.sums();
            (digests.check)(&sums, Some(&sums)).map_err(StorageError::Digest)?;
            upload::commit(root, parent, name, temp, conditions, Some(&hasher.kept()), fsync)?;
            digests.repr = Some(sums);
            len
        }
        Mode::Append => append::commit(
            root,
            parent,
            name,
            creatable,
            append::Received::new(Spool::File(temp), hasher),
            conditions,
            digests,
            fsync,
        )?,
    };
    let (mut deleted, mut kept) = (Vec::new(), Vec::new());
    if let Some(linked) = delete_sources {
        for (index, (source, version)) in sources.iter().zip(&copied).enumerate() {
            if linked.get(index).copied().unwrap_or(true) {
                log::info!(
                    "concatenation: kept its source {} (reached through a symlink: its file is another name's)",
                    source.display()
                );
                kept.push(index);
                continue;
            }
            match delete_if_unchanged(root, source, version) {
                Ok(true) => deleted.push(index),
                Ok(false) => kept.push(index),
                Err(e) => {
                    log::warn!("concatenation: could not delete its source {}: {e}", source.display());
                    kept.push(index);
                }
            }
        }
    }
    Ok(Outcome { size, deleted, kept })
}

/// `crc32c_combine` of a run's crc32c and the next run's (`len` bytes): the crc32c of both.
fn combine(before: u32, next: u32, len: u64) -> Result<u32> {
    let len = usize::try_from(len).map_err(|_| StorageError::Io(io::Error::other("a source too long to hash")))?;
    Ok(crc32c::crc32c_combine(before, next, len))
}

/// Logs a concatenation stopped because its client left (or the server is stopping) before
/// source `index`, `copied` bytes in; the temp file goes when it is dropped.
fn abandoned(target: &Path, index: usize, copied: u64) -> StorageError {
    log::info!(
        "concatenation into {} abandoned at source {index} after {copied} bytes: the client has gone or \
         the server is stopping; nothing was committed",
        target.display()
    );
    StorageError::ClientGone
}

/// The crc32c (and length, and what `wanted` names) of the first `len` bytes of `file`, read
/// through a fixed buffer.
fn hash_gathered(file: &File, len: u64, wanted: digest::Wanted) -> Result<digest::Hasher> {
    use std::os::unix::fs::FileExt;
    let mut hasher = digest::Hasher::new(wanted);
    let mut buf = vec![0u8; HASH_BUFFER_BYTES];
    let mut offset = 0u64;
    while offset < len {
        let want = usize::try_from((len - offset).min(HASH_BUFFER_BYTES as u64)).unwrap_or(HASH_BUFFER_BYTES);
        let got = file.read_at(&mut buf[..want], offset).map_err(StorageError::from_io)?;
        if got == 0 {
            return Err(StorageError::Io(io::Error::other(
                "the gathered file is shorter than what was copied into it",
            )));
        }
        hasher.update(&buf[..got]);
        offset += got as u64;
    }
    Ok(hasher)
}

/// The buffer [`hash_gathered`] reads through, in bytes.
const HASH_BUFFER_BYTES: usize = 256 * 1024;

/// Copies the committed bytes of `source` to the end of what `copier` has written; returns the
/// version copied, and its crc32c where a digest is kept for exactly that version (loaded under
/// the source's shared lock, at the instant its committed length is read).
fn gather_one(
    root: &Root,
    source: &Path,
    copier: &mut Copier<'_>,
    target: Option<(u64, u64)>,
) -> Result<(Copied, Option<u32>)> {
    let (parent, name) = split(source)?;
    let dir = match root.open_dir(parent) {
        Ok(dir) => dir,
        Err(StorageError::NotADirectory) => return Err(StorageError::NotFound),
        Err(e) => return Err(e),
    };
    let kept_crc32c = |seen: &lock::Committed| {
        digest::load(Some(&dir), &seen.file, &seen.meta, seen.len)
            .filter(|kept| kept.len == seen.len)
            .map(|kept| kept.crc32c)
    };
    let (seen, crc32c) = match lock::committed_with(&dir, name, kept_crc32c) {
        Ok(Some(seen)) => seen,
        Ok(None) | Err(StorageError::NotADirectory) => return Err(StorageError::NotFound),
        Err(e) => return Err(e),
    };
    // The target under another name (a hard link, or a symlink the jail followed).
    if target == Some((seen.meta.dev(), seen.meta.ino())) {
        return Err(StorageError::SourceIsTarget);
    }
    copier.append(&seen.file, seen.len, seen.meta.len())?;
    let version = Copied {
        len: seen.len,
        ..Copied::of(&seen.file, &seen.meta)
    };
    Ok((version, crc32c))
}

/// Removes `source` if, under its exclusive lock, it is still the `version` copied.
fn delete_if_unchanged(root: &Root, source: &Path, version: &Copied) -> Result<bool> {
    let (parent, name) = split(source)?;
    let dir = match root.open_dir(parent) {
        Ok(dir) => dir,
        Err(StorageError::NotFound | StorageError::NotADirectory) => return Ok(false),
        Err(e) => return Err(e),
    };
    let Some(held) = lock::lock(&dir, name, Access::Lock)? else {
        return Ok(false);
    };
    if Copied::of(&held.file, &held.meta) != *version {
        return Ok(false);
    }
    // The lock's check made sure the name is the locked file; nobody changes it while we hold it.
    dir.remove_file(name).map_err(StorageError::from_io)?;
    let record = super::journal::name_for(held.meta.ino());
    let _ = super::journal::remove_if_unlocked(&dir, std::ffi::OsStr::new(&record));
    Ok(true)
}

/// Appends sources to the temp file: shared extents where the filesystem has them and the
/// offsets are aligned to its blocks, else `copy_file_range` ([`copy_span`]).
struct Copier<'a> {
    dst: &'a File,
    /// Whether the client has gone (or the server is stopping): asked every [`GONE_CHECK_BYTES`].
    gone: &'a dyn Fn() -> bool,
    /// Where the next source goes (the bytes written so far).
    offset: u64,
    /// The destination filesystem's block size: reflinks take whole blocks.
    block: u64,
    /// False once the filesystem said it cannot share extents (ext4, tmpfs, NFS...).
    try_clone: bool,
    /// Bytes shared rather than copied.
    cloned: u64,
}

impl<'a> Copier<'a> {
    fn new(dst: &'a File, gone: &'a dyn Fn() -> bool) -> Result<Copier<'a>> {
        let block = dst.metadata().map_err(StorageError::from_io)?.blksize().max(1);
        Ok(Copier {
            dst,
            gone,
            offset: 0,
            block,
            try_clone: true,
            cloned: 0,
        })
    }

    /// Appends the first `len` bytes of `src` (whose size is `size`); copied bytes go in spans of
    /// [`GONE_CHECK_BYTES`], asking `gone` before each ([`StorageError::ClientGone`]).
    fn append(&mut self, src: &File, len: u64, size: u64) -> Result<()> {
        let mut done = 0;
        if self.try_clone && len > 0 && self.offset.is_multiple_of(self.block) {
            // Whole blocks only, except a range that ends at the source's end.
            let share = if len == size {
                len
            } else {
                len / self.block * self.block
            };
            if share > 0 {
                match sys::clone_range(src, 0, self.dst, self.offset, share) {
                    Ok(()) => {
                        done = share;
                        self.cloned += share;
                    }
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL)) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) => {
                        return Err(StorageError::from_io(e));
                    }
                    // EOPNOTSUPP, EXDEV, ENOTTY, EBADF...: this filesystem does not share.
                    Err(_) => self.try_clone = false,
                }
            }
        }
        while done < len {
            if done > 0 && (self.gone)() {
                return Err(StorageError::ClientGone);
            }
            let span = (len - done).min(GONE_CHECK_BYTES);
            copy_span(src, done, self.dst, self.offset + done, span).map_err(StorageError::from_io)?;
            done += span;
        }
        self.offset += len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{journal, test_root};
    use std::fs;

    fn any() -> Conditions<'static> {
        Conditions::default()
    }

    #[test]
    fn joins_in_order_and_refuses_missing_and_self() {
        let (dir, root) = test_root("concat");
        fs::create_dir(dir.join("d")).unwrap();
        fs::write(dir.join("d/a"), b"one\n").unwrap();
        fs::write(dir.join("d/b"), b"").unwrap();
        fs::write(dir.join("d/c"), b"three\n").unwrap();
        let srcs: Vec<PathBuf> = ["d/a", "d/b", "d/c", "d/a"].iter().map(PathBuf::from).collect();
        let out = concat(
            &root,
            Path::new("out/t"),
            &srcs,
            Mode::Replace,
            Ok(()),
            &any(),
            None,
            &mut digest::Plan::none(),
            false,
            &|| false,
        )
        .unwrap();
        assert_eq!(out.size, 14);
        assert_eq!(fs::read(dir.join("out/t")).unwrap(), b"one\nthree\none\n");
        let out = concat(
            &root,
            Path::new("out/t"),
            &srcs[..1],
            Mode::Append,
            Ok(()),
            &any(),
            None,
            &mut digest::Plan::none(),
            true,
            &|| false,
        )
        .unwrap();
        assert_eq!(out.size, 18);
        let missing = vec![PathBuf::from("d/a"), PathBuf::from("d/nope")];
        let err = concat(
            &root,
            Path::new("out/t"),
            &missing,
            Mode::Replace,
            Ok(()),
            &any(),
            None,
            &mut digest::Plan::none(),
            false,
            &|| false,
        )
        .unwrap_err();
        assert!(
            matches!(&err, StorageError::InSource { index: 1, error } if matches!(**error, StorageError::NotFound)),
            "{err:?}"
        );
        let own = vec![PathBuf::from("out/t")];
        let err = concat(
            &root,
            Path::new("out/t"),
            &own,
            Mode::Replace,
            Ok(()),
            &any(),
            None,
            &mut digest::Plan::none(),
            false,
            &|| false,
        )
        .unwrap_err();
        assert!(
            matches!(&err, StorageError::InSource { index: 0, error } if matches!(**error, StorageError::SourceIsTarget))
        );
        assert_eq!(fs::read(dir.join("out/t")).unwrap(), b"one\nthree\none\none\n");
        let left = fs::read_dir(dir.join("out"))
            .unwrap()
            .filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(journal::JOURNAL_PREFIX)
            })
            .count();
        assert_eq!(left, 1, "no temp file left (an appended file's record slot stays)");
    }

    #[test]
    fn deletes_only_the_sources_still_as_copied() {
        let (dir, root) = test_root("concat-delete");
        fs::write(dir.join("a"), b"a").unwrap();
        fs::write(dir.join("b"), b"b").unwrap();
        let srcs = vec![PathBuf::from("a"), PathBuf::from("b")];
        let out = concat(
            &root,
            Path::new("t"),
            &srcs,
            Mode::Replace,
            Ok(()),
            &any(),
            Some(&[false, false]),
            &mut digest::Plan::none(),
            false,
            &|| false,
        )
        .unwrap();
        assert_eq!((out.deleted, out.kept), (vec![0, 1], vec![]));
        assert!(!dir.join("a").exists() && !dir.join("b").exists());
        assert_eq!(fs::read(dir.join("t")).unwrap(), b"ab");
    }
}
