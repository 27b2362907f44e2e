//! Versions of files already found clean, so that reading one again skips the shared lock, the
//! name re-check and the crash-record lookup: the three calls that make a read cost a quarter
//! more than nginx's (`docs/write-protocol.md`, "A read of a version seen clean").
//!
//! A *version* is what `fstat` and the inode generation show of an open file: device, inode,
//! generation, size, mtime, ctime and link count. It is *clean* at a path when a read of that
//! path under the shared lock found no armed crash record for it (none, or an idle slot) in the
//! directory the path names, so its committed length is its size. A later read of the same path
//! that opens it beneath the root and sees the same version serves that size without the lock,
//! because:
//! - it is the same file: a reused inode number gets a new generation on the filesystems this
//!   is used on, and a later ctime;
//! - nothing has changed it since, whoever the writer: every write, truncate, rename, link,
//!   chmod or xattr change through the usual calls stamps the ctime with the current time, and a version is remembered
//!   only once its ctime is [`SETTLED_SECS`] old, so a later change cannot carry the same ctime
//!   even on a filesystem with one-second timestamps (what git calls a racy entry);
//! - for this service's own writers even the size alone would do: an append grows the file
//!   before its commit, and a rollback only cuts back to the size its record was armed at, so
//!   an unchanged size is a committed length.
//!
//! The `openat` that found the file is the read's instant, as the re-check under the lock is
//! on the locked path: a replace or move after it comes after the read. The path is part of
//! what is remembered, and only a file with one link is, because a record is looked for
//! beside the name read: a file with two names (hard links) found clean through one may have a
//! dead append's record beside the other, and a rename of directories can later put that
//! record beside the very path remembered (a rename changes nothing in the file's version).
//! A file with one name has its record in its one directory, which moves with it.
//!
//! Only on a local filesystem whose timestamps and generations this machine's kernel sets
//! itself ([`local`]: ext4, XFS, Btrfs, F2FS), and only for files on the root's own device
//! (another filesystem mounted beneath the root is another device): on
//! GlusterFS, JuiceFS, NFS or CephFS another machine writes, an attribute cache may answer
//! `fstat`, and only the lock makes a client look again. Each worker thread keeps its own
//! [`SLOTS`] versions, so the cache takes no lock and holds no descriptor.

use std::cell::RefCell;
use std::fs::{File, Metadata};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Versions each worker thread keeps (a version's slot is chosen by its inode number).
const SLOTS: usize = 64;
/// Longest path remembered, in bytes: a thread keeps at most [`SLOTS`] × this (16 KiB) of
/// paths; a file at a longer path is read the locked way every time.
const MAX_PATH_BYTES: usize = 256;
/// How old a version's last change (ctime) must be, in seconds, before it is remembered: more
/// than one tick of the coarsest timestamps, so a change made after it always shows.
const SETTLED_SECS: i64 = 2;

/// Filesystems on which this machine's kernel sets every timestamp and generation itself
/// (`statfs` magic numbers from `linux/magic.h`): ext2/3/4, XFS, Btrfs, F2FS.
const LOCAL_MAGIC: [i64; 4] = [0xEF53, 0x5846_5342, 0x9123_683E, 0xF2F5_2010];

/// Whether versions may be remembered on a filesystem with the `statfs` magic `magic`.
pub fn local(magic: i64) -> bool {
    LOCAL_MAGIC.contains(&magic)
}

/// What `fstat` and the inode generation show of one file, compared whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    dev: u64,
    ino: u64,
    generation: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    nlink: u64,
}

impl Version {
    /// The version of the open regular `file` (metadata `meta`), or `None` where the
    /// filesystem shows no inode generation.
    pub fn of(file: &File, meta: &Metadata) -> Option<Version> {
        let generation = crate::sys::inode_generation(file.as_fd()).ok()?;
        Some(Version::with_generation(meta, generation))
    }

    /// The version of a file whose generation is already known (it never changes for an inode).
    pub fn with_generation(meta: &Metadata, generation: u32) -> Version {
        Version {
            dev: meta.dev(),
            ino: meta.ino(),
            generation,
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            nlink: meta.nlink(),
        }
    }

    /// Its inode's generation.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// True when its last change is at least [`SETTLED_SECS`] before `now`.
    fn settled(&self, now: SystemTime) -> bool {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.ctime.0.saturating_add(SETTLED_SECS) <= now
    }

    fn slot(&self) -> usize {
        // usize is at least 32 bits here; the low bits of inode numbers vary the most.
        (self.ino as usize ^ (self.ino >> 17) as usize) % SLOTS
    }
}

/// One thread's remembered versions, each with the path (relative to the root) it was read at.
type Slots = [Option<(Version, PathBuf)>; SLOTS];

thread_local! {
    // Boxed on first use: only a pointer in every thread's TLS. Held inline, the 5 KiB would
    // be set up in every thread at its start, idle ones too: 1 MiB of idle RSS at 131 threads.
    static SEEN: RefCell<Option<Box<Slots>>> = const { RefCell::new(None) };
}

/// True when this thread found `version` clean before, read at `path`.
pub fn seen(version: &Version, path: &Path) -> bool {
    SEEN.with(|seen| {
        seen.try_borrow().is_ok_and(|s| {
            s.as_ref()
                .and_then(|s| s[version.slot()].as_ref())
                .is_some_and(|(v, p)| v == version && p == path)
        })
    })
}

/// Remembers `version`, just found clean at `path` under the shared lock, if its last change
/// is settled, it has one name, and the path is short enough to keep.
pub fn remember(version: Version, path: &Path) {
    if version.nlink == 1 && version.settled(SystemTime::now()) && path.as_os_str().len() <= MAX_PATH_BYTES {
        SEEN.with(|seen| {
            if let Ok(mut s) = seen.try_borrow_mut() {
                let slots = s.get_or_insert_with(|| Box::new(std::array::from_fn(|_| None)));
                slots[version.slot()] = Some((version, path.to_path_buf()));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn version(ctime_secs: i64) -> Version {
        Version {
            dev: 1,
            ino: 12,
            generation: 7,
            size: 100,
            mtime: (ctime_secs, 0),
            ctime: (ctime_secs, 5),
            nlink: 1,
        }
    }

    #[test]
    fn a_version_is_settled_only_two_seconds_after_its_last_change() {
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        assert!(!version(1000).settled(at(1000)));
        assert!(!version(1000).settled(at(1001)));
        assert!(version(1000).settled(at(1002)));
        // A ctime in the future (a clock stepped back) is never settled.
        assert!(!version(5000).settled(at(1000)));
    }

    #[test]
    fn only_a_remembered_settled_version_is_seen_and_any_field_changed_is_not() {
        let at = Path::new("a/f");
        let linked = Version {
            ino: 15,
            nlink: 2,
            ..version(1)
        };
        remember(linked, at);
        assert!(!seen(&linked, at), "a file with two links is never remembered");
        let old = version(1);
        remember(old, at);
        assert!(seen(&old, at));
        assert!(!seen(&old, Path::new("b/g")), "the same version at another path");
        let changed = [
            Version { generation: 8, ..old },
            Version { size: 101, ..old },
            Version { mtime: (1, 1), ..old },
            Version { ctime: (1, 6), ..old },
            Version { nlink: 2, ..old },
            Version { dev: 2, ..old },
        ];
        for other in changed {
            assert!(!seen(&other, at), "{other:?}");
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let recent = Version {
            ino: 13,
            ..version(now)
        };
        let long = "d/".repeat(MAX_PATH_BYTES / 2) + "f";
        remember(Version { ino: 14, ..old }, Path::new(&long));
        assert!(
            !seen(&Version { ino: 14, ..old }, Path::new(&long)),
            "a path too long to keep"
        );
        remember(recent, at);
        assert!(
            !seen(&recent, at),
            "a version changed in the last two seconds is not remembered"
        );
    }
}
