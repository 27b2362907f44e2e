//! Appends: all or nothing, serialised per file, never holding a lock while a client sends.
//!
//! 1. Preconditions (`Upload-Offset`, `If-Match`) are checked against the committed state
//!    before the body is read, so a stale offset is refused before `100 Continue` invites the
//!    body; they are checked again at commit, under the lock, where they count.
//! 2. The body is received whole into a [`Spool`] (memory or a temp file), holding no lock.
//! 3. Commit, under the file's exclusive lock ([`lock`]), disk work only: settle a dead
//!    appender's crash record, re-check the preconditions, write our record (the size to return
//!    to), write the body at the file's size (never `O_APPEND`), sync, remove the record, sync
//!    the directory. A missing file is instead created whole: the body goes to a temp file that
//!    is linked in (`link(2)` fails if the name appeared meanwhile; then it is an append after
//!    all), so nobody ever sees a new file empty or half written.
//!
//! The states, and why a crash in any of them is safe, are in `docs/write-protocol.md`.

use super::digest;
use super::dir::{Access, Dir};
use super::journal::{self, Uncommitted};
use super::lock::{self, Held};
use super::preconditions::Conditions;
use super::root::Root;
use super::temp::{Spool, TempFile};
use super::{MAX_COMMIT_ATTEMPTS, PathError, Result, StorageError, commit_kept_racing, committed_state, split};
use std::ffi::OsStr;
use std::path::Path;

/// Appends `body` to the file at `path` (relative to the root; created if missing, if
/// `creatable`: a name another writer made that the service would not create, like one with a
/// control byte, can be appended to but not created) if `conditions` hold at commit. Returns
/// the new size.
#[cfg(test)]
pub fn append(
    root: &Root,
    path: &Path,
    creatable: std::result::Result<(), PathError>,
    body: &mut dyn std::io::Read,
    conditions: &Conditions<'_>,
    fsync: bool,
) -> Result<u64> {
    append_verified(
        root,
        path,
        creatable,
        body,
        conditions,
        &mut digest::Plan::none(),
        fsync,
    )
}

/// [`append`], hashing the body as it arrives: under the file's lock its digests, and the
/// file's after the append (extended from those kept, [`digest::Kept::extended`]), go to
/// `digests` for approval before a byte is written, and the file's are kept by the commit.
pub fn append_verified(
    root: &Root,
    path: &Path,
    creatable: std::result::Result<(), PathError>,
    body: &mut dyn std::io::Read,
    conditions: &Conditions<'_>,
    digests: &mut digest::Plan<'_>,
    fsync: bool,
) -> Result<u64> {
    let (parent, name) = split(path)?;
    if conditions.any() {
        let state = committed_state(root, parent, name)?;
        conditions.check(state.as_ref().map(|seen| (&seen.file, &seen.meta, seen.len)))?;
    }
    // A name the service may not create is refused before the body is read when no file has
    // it now (and again at commit, where it counts).
    if let Err(e) = creatable
        && committed_state(root, parent, name)?.is_none()
    {
        return Err(e.into());
    }
    // A large body waits in the deepest directory of the target's that exists: its own is
    // created only at commit, so nothing shows (or is left by a crash) before then.
    let mut hashing = digest::Hashing::new(body, digests.wanted);
    let spool = Spool::receive(&mut hashing, || TempFile::create_near(root, parent))?;
    let body = Received {
        spool,
        hasher: hashing.hasher,
    };
    commit(root, parent, name, creatable, body, conditions, digests, fsync)
}

/// A whole body and its digests.
pub(crate) struct Received {
    spool: Spool,
    hasher: digest::Hasher,
}

impl Received {
    /// A body received some other way (a concatenation's gathered bytes), with `hasher` fed
    /// exactly those bytes: the commit extends the file's kept digests with it.
    pub(crate) fn new(spool: Spool, hasher: digest::Hasher) -> Received {
        Received { spool, hasher }
    }
}

/// Step 3: the spooled body into the file, under its lock; or, for a missing file, a whole new
/// file linked in. Also the commit of a concatenation's append ([`super::concat`]).
// The target, the body, and what the commit must hold to: each its own argument, as the steps
// below take them apart.
#[allow(clippy::too_many_arguments)]
pub(crate) fn commit(
    root: &Root,
    parent: &Path,
    name: &OsStr,
    creatable: std::result::Result<(), PathError>,
    mut body: Received,
    conditions: &Conditions<'_>,
    digests: &mut digest::Plan<'_>,
    fsync: bool,
) -> Result<u64> {
    let len = body.spool.byte_len()?;
    // A root renamed away while the body came in gets nothing appended in it (the caller
    // checks again after the commit, for a rename in the instant between).
    root.present()?;
    for _ in 0..MAX_COMMIT_ATTEMPTS {
        // The directory as it is now: a move or delete of it meanwhile counts.
        let dir = match root.open_dir(parent) {
            Ok(dir) => Some(dir),
            Err(StorageError::NotFound) => None,
            Err(e) => return Err(e),
        };
        if let Some(dir) = &dir
            && let Some(mut held) = lock::lock(dir, name, Access::Write)?
        {
            return append_locked(dir, &mut held, &body, conditions, digests, fsync).map(|before| before + len);
        }
        creatable?;
        match create_whole(root, parent, name, &mut body, conditions, digests, fsync) {
            Ok(true) => return Ok(len),
            // The file appeared (append to it), or a directory vanished under us: look again.
            Ok(false) | Err(StorageError::NotFound) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(commit_kept_racing())
}

/// A missing file is created whole: the body in a temp file, synced before any missing parent
/// directory is made (so none shows, or is left by a crash, while it syncs), then linked to the
/// name. `false` if a file got the name first: then it is an append after all.
fn create_whole(
    root: &Root,
    parent: &Path,
    name: &OsStr,
    body: &mut Received,
    conditions: &Conditions<'_>,
    digests: &mut digest::Plan<'_>,
    fsync: bool,
) -> Result<bool> {
    conditions.check(None)?;
    // The new file is the body: its digests are the body's.
    let sums = body.hasher.sums();
    (digests.check)(&sums, Some(&sums)).map_err(StorageError::Digest)?;
    let spool = &mut body.spool;
    spool.make_temp_near(root, parent, fsync)?;
    let (new_dirs, dir) = root.create_dirs(parent)?;
    let temp = spool.make_temp(&dir, fsync)?;
    digest::store(&dir, temp.file(), &body.hasher.kept());
    if !temp.link_as(&dir, name)? {
        return Ok(false);
    }
    digests.repr = Some(sums);
    // Linked: the append is in, and is never tried again (the file is still under our temp's
    // lock, so another attempt would wait for itself). A failure to flush what leads to it is
    // reported as such, never as a missing directory that would send the caller round again.
    let flushed = if fsync {
        dir.sync().map_err(StorageError::from_io)
    } else {
        Ok(())
    };
    flushed.and_then(|()| new_dirs.keep(fsync)).map_err(|e| match e {
        StorageError::NotFound => StorageError::Io(std::io::Error::other(
            "the new file is in place, but its directory was moved before it was flushed",
        )),
        e => e,
    })?;
    Ok(true)
}

/// Under `held`'s lock: settle a dead appender's record, re-check the conditions, have the
/// digests approved, append. Returns the size before the append.
fn append_locked(
    dir: &Dir,
    held: &mut Held,
    body: &Received,
    conditions: &Conditions<'_>,
    digests: &mut digest::Plan<'_>,
    fsync: bool,
) -> Result<u64> {
    if journal::settle(dir, &held.file, &held.meta, fsync)?.is_some() {
        log::warn!(
            "rolled back an interrupted append (inode {})",
            std::os::unix::fs::MetadataExt::ino(&held.meta)
        );
        held.refresh()?;
    }
    let before = held.meta.len();
    conditions.check(Some((&held.file, &held.meta, before)))?;
    let after = extended_digests(dir, held, body, before)?;
    let appended = body.hasher.sums();
    let repr = after.as_ref().map(digest::Kept::sums);
    (digests.check)(&appended, repr.as_ref()).map_err(StorageError::Digest)?;
    if write_locked(dir, held, &body.spool, before, after.as_ref(), fsync)? {
        digests.repr = repr;
    }
    Ok(before)
}

/// The file's digests after `body` is appended at `before`, from those kept for it; a file
/// with none kept (made before, or changed by another writer since) has its crc32c computed
/// here, once, by reading its `before` bytes ([`digest::hash_committed`]): the answer carries
/// it, and later appends extend it. `None` where digests are off (coarse timestamps) or the
/// file cannot be read.
fn extended_digests(dir: &Dir, held: &Held, body: &Received, before: u64) -> Result<Option<digest::Kept>> {
    if digest::off() {
        return Ok(None);
    }
    let kept = match digest::load(Some(dir), &held.file, &held.meta, before) {
        Some(kept) => kept,
        None => match digest::hash_committed(&held.file, before) {
            Some(kept) => kept,
            None => return Ok(None),
        },
    };
    let appended = body.hasher.sums();
    kept.extended(appended.crc32c, appended.len, |state| {
        body.spool.replay(&mut |bytes| state.update(bytes))
    })
    .map(Some)
    .map_err(StorageError::from_io)
}

/// Under `held`'s lock: record, write at `before`, sync, keep the file's digests `after` (if
/// known), commit; any failure on the way puts the file back to `before` bytes
/// ([`Uncommitted`]), and its kept digests then name a version that is gone.
///
/// Another writer of the volume takes no lock: `after` was computed from the digests kept for
/// the file as it was when the lock was taken (`held.meta`), so the file is looked at again
/// just before the write (changed since: nothing is kept), and the digests are kept only if the
/// file still is, at the store, the version seen right after the write (changed during the
/// sync: nothing is kept). What remains is a change landing between that last look and the end
/// of the write itself, which no stat can tell from ours (`docs/operations.md`). True when
/// `after` is the file's digest (to answer).
fn write_locked(
    dir: &Dir,
    held: &Held,
    spool: &Spool,
    before: u64,
    after: Option<&digest::Kept>,
    fsync: bool,
) -> Result<bool> {
    let append = Uncommitted::begin(dir, &held.file, &held.meta, before, fsync)?;
    let unchanged = held
        .file
        .metadata()
        .is_ok_and(|now| digest::same_version(&now, &held.meta));
    spool.write_at(held, before).map_err(StorageError::from_io)?;
    let written = held.file.metadata().map_err(StorageError::from_io)?;
    if fsync {
        held.file.sync_data().map_err(StorageError::from_io)?;
    }
    let kept = match after {
        Some(after) if unchanged => digest::store_if_unchanged(dir, &held.file, after, &written),
        _ => {
            digest::discard(dir, &held.file, std::os::unix::fs::MetadataExt::ino(&written));
            false
        }
    };
    append.commit().map(|()| kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Broken, test_root};
    use std::fs;
    use std::io::Read;

    fn any() -> Conditions<'static> {
        Conditions::default()
    }

    fn at(size: u64) -> Conditions<'static> {
        Conditions {
            size: Some(size),
            ..Conditions::default()
        }
    }

    #[test]
    fn appends_and_creates() {
        let (dir, root) = test_root("append-ok");
        let path = Path::new("d/log.csv");
        assert_eq!(append(&root, path, Ok(()), &mut &b"a\n"[..], &any(), false).unwrap(), 2);
        assert_eq!(append(&root, path, Ok(()), &mut &b"b\n"[..], &at(2), true).unwrap(), 4);
        let big = vec![b'x'; 200_000];
        assert_eq!(
            append(&root, path, Ok(()), &mut &big[..], &any(), true).unwrap(),
            200_004
        );
        let mut want = b"a\nb\n".to_vec();
        want.extend_from_slice(&big);
        assert_eq!(fs::read(dir.join(path)).unwrap(), want);
        assert_eq!(
            fs::read_dir(dir.join("d")).unwrap().count(),
            1,
            "no temp file or record left"
        );
    }

    #[test]
    fn offset_mismatch_changes_nothing() {
        let (dir, root) = test_root("append-offset");
        let path = Path::new("f");
        fs::write(dir.join(path), b"abc").unwrap();
        let err = append(&root, path, Ok(()), &mut &b"x"[..], &at(2), false).unwrap_err();
        assert!(matches!(err, StorageError::OffsetMismatch { current: 3 }));
        assert_eq!(fs::read(dir.join(path)).unwrap(), b"abc");
        let missing = Path::new("missing");
        assert!(matches!(
            append(&root, missing, Ok(()), &mut &b"x"[..], &at(5), false),
            Err(StorageError::OffsetMismatch { current: 0 })
        ));
        assert!(!dir.join(missing).exists());
    }

    #[test]
    fn a_refused_offset_never_reads_the_body() {
        let (dir, root) = test_root("append-offset-early");
        fs::write(dir.join("f"), b"abc").unwrap();
        let err = append(&root, Path::new("f"), Ok(()), &mut Broken, &at(9), false).unwrap_err();
        assert!(matches!(err, StorageError::OffsetMismatch { current: 3 }), "{err:?}");
    }

    #[test]
    fn a_dead_appenders_record_is_rolled_back_by_the_next_appender() {
        let (dir, root) = test_root("append-journal");
        let path = Path::new("f");
        fs::write(dir.join(path), b"whole\n").unwrap();
        let handle = Dir::open(&dir).unwrap();
        let meta = fs::metadata(dir.join(path)).unwrap();
        // A dead appender: record written, part of a body appended, never cleaned up (its
        // guard never ran: the process died, and its locks with it).
        journal::plant_dead(&handle, &meta, 6).unwrap();
        std::io::Write::write_all(
            &mut fs::OpenOptions::new().append(true).open(dir.join(path)).unwrap(),
            b"hal",
        )
        .unwrap();
        let seen = lock::committed(&handle, OsStr::new("f")).unwrap().unwrap();
        assert_eq!(seen.len, 6, "readers see the committed size");
        assert_eq!(
            append(&root, path, Ok(()), &mut &b"next\n"[..], &at(6), false).unwrap(),
            11
        );
        assert_eq!(fs::read(dir.join(path)).unwrap(), b"whole\nnext\n");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "the record is gone");
    }

    #[test]
    fn failed_body_changes_nothing() {
        let (dir, root) = test_root("append-rollback");
        let path = Path::new("f");
        fs::write(dir.join(path), b"keep").unwrap();
        let err = append(&root, path, Ok(()), &mut (&b"half"[..]).chain(Broken), &any(), false).unwrap_err();
        assert!(matches!(err, StorageError::Source(_)));
        let big = vec![b'x'; 300_000];
        let err = append(&root, path, Ok(()), &mut (&big[..]).chain(Broken), &any(), false).unwrap_err();
        assert!(matches!(err, StorageError::Source(_)));
        assert_eq!(fs::read(dir.join(path)).unwrap(), b"keep");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no spool or record left");
        let fresh = Path::new("fresh");
        assert!(append(&root, fresh, Ok(()), &mut (&b"half"[..]).chain(Broken), &any(), false).is_err());
        assert!(!dir.join(fresh).exists());
        let deep = Path::new("new1/new2/f");
        assert!(append(&root, deep, Ok(()), &mut (&big[..]).chain(Broken), &any(), false).is_err());
        assert!(append(&root, deep, Ok(()), &mut &b"x"[..], &at(3), false).is_err());
        assert!(!dir.join("new1").exists(), "a failed append leaves no new directories");
    }
}
