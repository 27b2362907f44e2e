//! Appends: all or nothing, serialised per file, never holding a lock while a client sends.
//!
//! 1. Preconditions (`Upload-Offset`, `If-Match`) are checked against the committed state
//!    before the body is read, so a stale offset is refused before `100 Continue` invites the
//!    body; they are checked again at commit, under the lock, where they count.
//! 2. The body is received whole into a [`Spool`] (memory or a temp file), holding no lock.
//! 3. Commit, in a batch with the other appends to the file queued in this process
//!    ([`group`]; an append tested against the file's version goes alone), under the file's
//!    exclusive lock ([`lock`]), disk work only: settle what a dead appender left, check each
//!    append's preconditions in turn, arm the file's crash record slot (the size to return to,
//!    the batch's length and checksum), write each body at the running size (never
//!    `O_APPEND`), sync once, keep the file's digests extended by the batch's bodies
//!    ([`digest`]), write the slot idle (the commit point). A missing file is
//!    instead created whole: the body goes to a temp file that is linked in (`link(2)` fails if
//!    the name appeared meanwhile; then it is an append after all), so nobody ever sees a new
//!    file empty or half written.
//!
//! The states, and why a crash in any of them is safe, are in `docs/write-protocol.md`.

use super::digest;
use super::dir::{Access, Dir};
use super::group;
use super::journal::{self, Checksum};
use super::lock::{self, Held};
use super::preconditions::Conditions;
use super::root::Root;
use super::temp::{Spool, TempFile};
use super::{
    COPY_BUF_BYTES, MAX_COMMIT_ATTEMPTS, PathError, Result, StorageError, commit_kept_racing, committed_state, split,
};
use std::ffi::OsStr;
use std::fs::{File, Metadata};
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
    // With fsync on, the batch's crash record carries a checksum of its bytes: taken here as
    // they arrive, so a large body is not read back from its spool for it.
    let (spool, sum) = if fsync {
        let mut summing = journal::Summing::new(&mut hashing);
        let spool = Spool::receive(&mut summing, || TempFile::create_near(root, parent))?;
        (spool, Some(summing.sum))
    } else {
        (
            Spool::receive(&mut hashing, || TempFile::create_near(root, parent))?,
            None,
        )
    };
    let body = Received {
        spool,
        hasher: hashing.hasher,
        sum,
    };
    commit(root, parent, name, creatable, body, conditions, digests, fsync)
}

/// A whole body and its digests.
pub(crate) struct Received {
    spool: Spool,
    hasher: digest::Hasher,
    /// The [`Checksum`] state of the body's bytes, taken as they arrived (`None` if not taken).
    sum: Option<Checksum>,
}

impl Received {
    /// A body received some other way (a concatenation's gathered bytes), with `hasher` fed
    /// exactly those bytes: the commit extends the file's kept digests with it.
    pub(crate) fn new(spool: Spool, hasher: digest::Hasher) -> Received {
        Received {
            spool,
            hasher,
            sum: None,
        }
    }
}

/// Step 3: the spooled body into the file, under its lock, in a batch with other appends to it
/// from this process ([`group`]) when its conditions are only an offset; or, for a missing
/// file, a whole new file linked in. Also the commit of a concatenation's append
/// ([`super::concat`]).
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
    // The body's own digests are checked now, before any lock. Asked about a file whose
    // digests are unknown (`None`), the check refuses any claim on the file's digests after the
    // write (`Repr-Digest`): such an append is checked again, alone, under the lock.
    let claims_repr = match (digests.check)(&body.hasher.sums(), None) {
        Ok(()) => false,
        Err(digest::Refused::Malformed(_)) => true,
        Err(refused) => return Err(StorageError::Digest(refused)),
    };
    // A root renamed away while the body came in gets nothing appended in it (the caller
    // checks again after the commit, for a rename in the instant between).
    root.present()?;
    // A test of the file's version, or of its digests, can only be answered by the state at
    // its own commit: such an append is a batch of its own. An offset is checked in any batch,
    // against the size the appends before it in the batch leave.
    let batchable = conditions.version.is_none()
        && conditions.unmodified_since.is_none()
        && !conditions.absent
        && conditions.none_match.is_none()
        && !claims_repr;
    for _ in 0..MAX_COMMIT_ATTEMPTS {
        if batchable {
            match group::append(root, parent, name, body, conditions.size, len, fsync) {
                group::Joined::Done(outcome) => {
                    return outcome.map(|(size, repr)| {
                        digests.repr = repr;
                        size
                    });
                }
                group::Joined::Missing(back) => body = *back,
            }
        } else {
            // The directory as it is now: a move or delete of it meanwhile counts.
            let dir = match root.open_dir(parent) {
                Ok(dir) => Some(dir),
                Err(StorageError::NotFound) => None,
                Err(e) => return Err(e),
            };
            if let Some(dir) = &dir
                && let Some(mut held) = lock::lock(dir, name, Access::Write)?
            {
                let check = |file: &File, meta: &Metadata, len: u64| conditions.check(Some((file, meta, len)));
                let entry = Entry {
                    body: &body,
                    len,
                    check: &check,
                    verify: Some(digests.check),
                };
                let mut outcomes = append_batch(dir, &mut held, std::slice::from_ref(&entry), fsync)?;
                return outcomes
                    .pop()
                    .unwrap_or_else(|| Err(commit_kept_racing()))
                    .map(|(before, repr)| {
                        digests.repr = repr;
                        before + len
                    });
            }
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

/// How a batch of appends ended, for [`group`].
pub(super) enum Batch {
    /// The file is not there: each append creates it, or finds it, on its own.
    Missing,
    /// Nothing of the batch was appended, for this reason (a lock that stayed held, a failed
    /// write or sync).
    Failed(StorageError),
    /// Each append's size before it and the file's digests after it (where kept), or why it
    /// was refused (its offset), in order.
    Done(Vec<Result<Appended>>),
}

/// What one append of a batch did: the file's size before it, and the file's digests after
/// it, where they are kept.
pub(super) type Appended = (u64, Option<digest::Sums>);

/// A batch of `jobs` (each a received body, its length and its expected offset) appended to
/// the file at `parent`/`name` under one lock, one armed record and one sync: what the leader
/// of a [`group`] queue runs for everyone in it.
pub(super) fn run_batch(
    root: &Root,
    parent: &Path,
    name: &OsStr,
    jobs: &[(&Received, u64, Option<u64>)],
    fsync: bool,
) -> Batch {
    let dir = match root.open_dir(parent) {
        Ok(dir) => dir,
        Err(StorageError::NotFound) => return Batch::Missing,
        Err(e) => return Batch::Failed(e),
    };
    let mut held = match lock::lock(&dir, name, Access::Write) {
        Ok(Some(held)) => held,
        Ok(None) => return Batch::Missing,
        Err(e) => return Batch::Failed(e),
    };
    let checks: Vec<_> = jobs
        .iter()
        .map(|&(_, _, size)| {
            move |_: &File, _: &Metadata, len: u64| match size {
                Some(want) if want != len => Err(StorageError::OffsetMismatch { current: len }),
                _ => Ok(()),
            }
        })
        .collect();
    let entries: Vec<Entry<'_>> = jobs
        .iter()
        .zip(&checks)
        .map(|(&(body, len, _), check)| Entry {
            body,
            len,
            check,
            verify: None,
        })
        .collect();
    match append_batch(&dir, &mut held, &entries, fsync) {
        Ok(outcomes) => Batch::Done(outcomes),
        Err(e) => Batch::Failed(e),
    }
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
    // The new file is the body: its digests are the body's (a concatenation's gathered bytes
    // are hashed for what it asks only now, when they are known to be the whole file).
    let Received { spool, hasher, .. } = body;
    hasher
        .complete(digests.wanted, |feed| spool.replay(feed))
        .map_err(StorageError::from_io)?;
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

/// One append of a batch: its received body (and the body's digests), the body's length, the
/// check of its preconditions against the state it would commit on (the file, its metadata,
/// the committed size the appends before it in the batch leave), and, for an append that
/// claims the file's digests after it, the check of those.
pub(super) struct Entry<'e> {
    pub body: &'e Received,
    pub len: u64,
    pub check: &'e dyn Fn(&File, &Metadata, u64) -> Result<()>,
    pub verify: Option<digest::Check<'e>>,
}

/// Under `held`'s lock: settle what a dead appender left, check each entry's conditions (and
/// digests) in turn, arm the record for the accepted ones, write their bytes one after another,
/// sync once, keep the file's digests as the last accepted one leaves them, commit. Returns each
/// entry's size before it and the file's digests after it (or its refusal); an error means
/// nothing of the batch was appended, and fails every entry of it. Any failure after the record
/// is armed puts the file back to its size before the batch ([`journal::Uncommitted`]), and
/// its kept digests then name a version that is gone.
fn append_batch(dir: &Dir, held: &mut Held, entries: &[Entry<'_>], fsync: bool) -> Result<Vec<Result<Appended>>> {
    let (mut slot, cut) = journal::Slot::take(dir, &held.file, &held.meta)?;
    if cut.is_some() {
        log::warn!(
            "rolled back an interrupted append (inode {})",
            std::os::unix::fs::MetadataExt::ino(&held.meta)
        );
        held.refresh()?;
    }
    let before = held.meta.len();
    // The file's digests as kept for the version under the lock, extended by each accepted
    // body in turn. A file with none kept (made before, or changed by another writer since) has
    // its crc32c computed here, once, by reading its `before` bytes ([`digest::hash_committed`]):
    // the answers carry it, and later appends extend it. `None` where digests are off (coarse
    // timestamps) or the file cannot be read.
    let mut kept = if digest::off() {
        None
    } else {
        digest::load(Some(dir), &held.file, &held.meta, before).or_else(|| digest::hash_committed(&held.file, before))
    };
    let mut end = before;
    let mut sum = Checksum::default();
    let mut outcomes = Vec::with_capacity(entries.len());
    for entry in entries {
        let outcome = (entry.check)(&held.file, &held.meta, end).and_then(|()| {
            let after = extended(kept.as_ref(), entry.body)?;
            let repr = after.as_ref().map(digest::Kept::sums);
            if let Some(verify) = entry.verify {
                verify(&entry.body.hasher.sums(), repr.as_ref()).map_err(StorageError::Digest)?;
            }
            Ok((after, repr))
        });
        match outcome {
            Ok((after, repr)) => {
                if fsync {
                    add_to_batch_sum(&mut sum, end == before, entry.body).map_err(StorageError::from_io)?;
                }
                outcomes.push(Ok((end, repr)));
                kept = after;
                end += entry.len;
            }
            Err(e) => outcomes.push(Err(e)),
        }
    }
    if end == before {
        return Ok(outcomes);
    }
    let batch = slot.begin(
        &held.file,
        &held.meta,
        before,
        end - before,
        fsync.then(|| sum.finish()),
        fsync,
    )?;
    // Another writer of the volume takes no lock: the digests were extended from those kept for
    // the file as it was when the lock was taken, so the file is looked at again just before
    // the writes (changed since: nothing is kept), and the digests are kept only if the file
    // still is, at the store, the version seen right after the writes (changed during the sync:
    // nothing is kept). What remains is a change landing between that last look and the end of
    // the writes themselves, which no stat can tell from ours (`docs/operations.md`).
    let unchanged = held
        .file
        .metadata()
        .is_ok_and(|now| digest::same_version(&now, &held.meta));
    for (entry, outcome) in entries.iter().zip(&outcomes) {
        if let Ok((at, _)) = outcome {
            write_body(held, &entry.body.spool, *at).map_err(StorageError::from_io)?;
        }
    }
    let mut written = held.file.metadata().map_err(StorageError::from_io)?;
    if fsync {
        held.file.sync_data().map_err(StorageError::from_io)?;
        if digest::identity_after_sync() {
            written = held.file.metadata().map_err(StorageError::from_io)?;
        }
    }
    let stored = match &kept {
        Some(kept) if unchanged => digest::store_if_unchanged(dir, &held.file, kept, &written),
        _ => {
            digest::discard(dir, &held.file, std::os::unix::fs::MetadataExt::ino(&written));
            false
        }
    };
    commit_point(batch)?;
    if !stored {
        // Digests that were not kept are not answered either.
        for (_, repr) in outcomes.iter_mut().flatten() {
            *repr = None;
        }
    }
    Ok(outcomes)
}

/// The file's digests after `body` is appended to a file whose digests were `kept` (`None`
/// stays `None`): crc32c combined, the sha-256 state fed the body's bytes.
fn extended(kept: Option<&digest::Kept>, body: &Received) -> Result<Option<digest::Kept>> {
    let Some(kept) = kept else {
        return Ok(None);
    };
    let appended = body.hasher.sums();
    kept.extended(appended.crc32c, appended.len, |state| {
        body.spool.replay(&mut |bytes| state.update(bytes))
    })
    .map(Some)
    .map_err(StorageError::from_io)
}

/// The bytes of one append: its spooled body, written into the held file at `at` (never
/// through `O_APPEND`).
fn write_body(held: &Held, spool: &Spool, at: u64) -> std::io::Result<()> {
    spool.write_at(held, at)
}

/// The commit point of a batch whose bytes are written and synced: after it, every append of
/// the batch stays (its crash record no longer asks for a rollback); if it fails, none does.
fn commit_point(batch: journal::Uncommitted<'_, '_>) -> Result<()> {
    batch.commit()
}

/// Adds an accepted `body` to its batch's checksum `sum`; `first` when no byte of the batch
/// precedes it, and then the checksum taken as it arrived, if any, is the batch's so far: a
/// large body is read back from its spool only when another precedes it in the batch.
fn add_to_batch_sum(sum: &mut Checksum, first: bool, body: &Received) -> std::io::Result<()> {
    match &body.sum {
        Some(taken) if first => {
            *sum = taken.clone();
            Ok(())
        }
        _ => add_body_to(sum, &body.spool),
    }
}

/// Adds the bytes of a spooled body to `sum` (read back from its temp file for a large one).
fn add_body_to(sum: &mut Checksum, spool: &Spool) -> std::io::Result<()> {
    match spool {
        Spool::Memory(bytes) => sum.update(bytes),
        Spool::File(temp) => {
            let file = temp.file();
            let mut buf = vec![0u8; COPY_BUF_BYTES];
            let mut at = 0u64;
            loop {
                let n = std::os::unix::fs::FileExt::read_at(file, &mut buf, at)?;
                if n == 0 {
                    break;
                }
                sum.update(&buf[..n]);
                at += n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Broken, test_root};
    use std::fs;
    use std::io::Read;

    /// Entries of `dir` other than crash record slots.
    fn others(dir: &std::path::Path) -> usize {
        fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(journal::JOURNAL_PREFIX)
            })
            .count()
    }

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
        assert_eq!(others(&dir.join("d")), 1, "no temp file left");
        let ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(dir.join(path)).unwrap());
        let handle = Dir::open(&dir.join("d")).unwrap();
        assert!(
            matches!(journal::read(&handle, ino).unwrap(), journal::Found::Record(r) if r.is_idle()),
            "the record slot stays, idle"
        );
    }

    #[test]
    fn a_batch_checksum_is_the_same_whether_taken_on_arrival_or_read_back() {
        let (dir, root) = test_root("append-batch-sum");
        let large: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let small = b"a small body\n".to_vec();
        let received = |bytes: &[u8]| {
            let mut reader = bytes;
            let mut summing = journal::Summing::new(&mut reader);
            let spool = Spool::receive(&mut summing, || TempFile::create_near(&root, Path::new(""))).unwrap();
            Received {
                spool,
                hasher: digest::Hasher::new(digest::Wanted::default()),
                sum: Some(summing.sum),
            }
        };
        let (large_body, small_body) = (received(&large), received(&small));
        assert!(
            matches!(large_body.spool, Spool::File(_)),
            "the large body is spooled to a file"
        );
        for order in [[&large_body, &small_body], [&small_body, &large_body]] {
            let mut sum = Checksum::default();
            let mut expected = Vec::new();
            for (i, body) in order.into_iter().enumerate() {
                add_to_batch_sum(&mut sum, i == 0, body).unwrap();
                body.spool.replay(&mut |b| expected.extend_from_slice(b)).unwrap();
            }
            assert_eq!(sum.finish(), Checksum::of(&expected));
        }
        drop((large_body, small_body));
        assert_eq!(others(&dir), 0, "no temp file left");
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
        // A dead appender: record written, part of a body appended, never cleaned up (its
        // guard never ran: the process died, and its locks with it).
        journal::plant_dead(&handle, &fs::File::open(dir.join(path)).unwrap(), 6).unwrap();
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
        assert_eq!(others(&dir), 1, "nothing but the file and its record slot");
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
