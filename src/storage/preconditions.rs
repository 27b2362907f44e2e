//! Preconditions of a write, move or delete (`If-Match`, `If-Unmodified-Since`,
//! `If-None-Match: *`, `Upload-Offset`), checked against the file's committed state: for
//! uploads and appends once early, before the body is read (so a refused request is not invited
//! to upload), and always again under the file's lock at commit, which is the check that counts.
//!
//! The order is RFC 9110 §13.2.2's: `If-Match`, else `If-Unmodified-Since`; then
//! `If-None-Match` (`*`: the file must not exist; ETags: it must be none of them); then the
//! append's offset. A missing file fails any `If-Match` (even `*`:
//! there is no current version to match) and has no date, so `If-Unmodified-Since` is ignored
//! for it (§13.1.4). A directory has no ETag: only `If-Match: *` holds for it, and it has no
//! date a client was given (listings carry none), so `If-Unmodified-Since` is ignored there too.

use super::lock::Held;
use super::{Result, StorageError};
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;

/// A test of a file's version: the open file, its metadata and committed length (from which
/// ETags are made).
pub type VersionTest<'a> = &'a dyn Fn(&File, &Metadata, u64) -> bool;

/// `If-Match`: which versions of the file the request may act on.
#[derive(Clone, Copy)]
pub enum Version<'a> {
    /// `*`: whatever is there, as long as something is.
    Any,
    /// The file must pass this test (it has one of the listed ETags).
    Test(VersionTest<'a>),
}

/// The committed state of a regular file a condition is checked against.
pub type FileState<'a> = (&'a File, &'a Metadata, u64);

/// What must hold at the instant a write, move or delete commits; the default is nothing.
#[derive(Clone, Copy, Default)]
pub struct Conditions<'a> {
    /// `Upload-Offset`: the file's committed size must be exactly this (a missing file has 0).
    pub size: Option<u64>,
    /// `If-Match`: the file must exist and be one of these versions.
    pub version: Option<Version<'a>>,
    /// `If-Unmodified-Since` (when there is no `If-Match`): the file's modification time, in
    /// whole seconds since the epoch, must be before this (an earlier second).
    pub unmodified_since: Option<i64>,
    /// `If-None-Match: *`: the file must not exist.
    pub absent: bool,
    /// `If-None-Match` with ETags: the file, if there is one, must be none of these versions.
    pub none_match: Option<VersionTest<'a>>,
}

impl Conditions<'_> {
    /// True when there is anything to check.
    pub fn any(&self) -> bool {
        self.size.is_some()
            || self.version.is_some()
            || self.unmodified_since.is_some()
            || self.absent
            || self.none_match.is_some()
    }

    /// Checks a regular file's state: `None` when missing, else the open file, its metadata and
    /// committed length.
    pub fn check(&self, state: Option<FileState<'_>>) -> Result<()> {
        match (self.version, state) {
            (Some(_), None) => return Err(StorageError::VersionMismatch),
            (Some(Version::Test(test)), Some((file, meta, len))) if !test(file, meta, len) => {
                return Err(StorageError::VersionMismatch);
            }
            // Holds only when the last change is in an earlier second than the date: a change
            // within the date's own second cannot be told from the version the client saw
            // (see `app::conditional`'s module doc).
            (None, Some((_, meta, _))) if self.unmodified_since.is_some_and(|since| meta.mtime() >= since) => {
                return Err(StorageError::ModifiedSince);
            }
            _ => {}
        }
        if self.absent && state.is_some() {
            return Err(StorageError::Exists);
        }
        if let (Some(test), Some((file, meta, len))) = (self.none_match, state)
            && test(file, meta, len)
        {
            return Err(StorageError::UnchangedVersion);
        }
        match (self.size, state.map_or(0, |(_, _, len)| len)) {
            (Some(expected), current) if expected != current => Err(StorageError::OffsetMismatch { current }),
            _ => Ok(()),
        }
    }

    /// Checks a file whose exclusive lock the caller holds (crash record settled), reading its
    /// state afresh only when there is something to check.
    pub fn check_held(&self, held: &Held) -> Result<()> {
        if !self.any() {
            return Ok(());
        }
        let meta = held.file.metadata().map_err(StorageError::from_io)?;
        self.check(Some((&held.file, &meta, meta.len())))
    }

    /// Checks something that exists but is not a regular file (a directory, a link being
    /// removed as itself): it has no ETag, so of `If-Match` only `*` holds, and of
    /// `If-None-Match` only `*` fails.
    pub fn check_not_file(&self) -> Result<()> {
        match self.version {
            Some(Version::Test(_)) => Err(StorageError::VersionMismatch),
            _ if self.absent => Err(StorageError::Exists),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_dir;

    #[test]
    fn order_and_missing_files() {
        let dir = test_dir("conditions");
        let path = dir.join("f");
        std::fs::write(&path, b"abc").unwrap();
        let file = File::open(&path).unwrap();
        let meta = file.metadata().unwrap();
        let present = Some((&file, &meta, 3));
        let yes = |_: &File, _: &Metadata, _: u64| true;
        let no = |_: &File, _: &Metadata, _: u64| false;
        let (yes, no): (VersionTest<'_>, VersionTest<'_>) = (&yes, &no);
        let mtime = meta.mtime();
        let c = |version, unmodified_since| Conditions {
            version,
            unmodified_since,
            ..Conditions::default()
        };
        let ok = |r: Result<()>| r.is_ok();
        assert!(ok(c(Some(Version::Test(yes)), None).check(present)));
        assert!(!ok(c(Some(Version::Test(no)), None).check(present)));
        assert!(
            !ok(c(Some(Version::Any), None).check(None)),
            "If-Match: * on a missing file"
        );
        assert!(ok(c(Some(Version::Any), None).check(present)));
        assert!(ok(c(None, Some(mtime + 1)).check(present)));
        assert!(
            matches!(c(None, Some(mtime)).check(present), Err(StorageError::ModifiedSince)),
            "the same second: it may have changed again within it"
        );
        assert!(matches!(
            c(None, Some(mtime - 1)).check(present),
            Err(StorageError::ModifiedSince)
        ));
        assert!(ok(c(None, Some(mtime - 1)).check(None)), "no date to compare: ignored");
        assert!(
            ok(c(Some(Version::Test(yes)), Some(mtime - 1)).check(present)),
            "If-Unmodified-Since counts only without If-Match"
        );
        assert!(ok(c(Some(Version::Any), None).check_not_file()));
        assert!(!ok(c(Some(Version::Test(yes)), None).check_not_file()));
        assert!(ok(c(None, Some(0)).check_not_file()));
        let none_match = |test| Conditions {
            none_match: Some(test),
            ..Conditions::default()
        };
        assert!(matches!(
            none_match(yes).check(present),
            Err(StorageError::UnchangedVersion)
        ));
        assert!(ok(none_match(no).check(present)));
        assert!(
            ok(none_match(yes).check(None)),
            "a missing file is none of the versions"
        );
        assert!(ok(none_match(yes).check_not_file()), "no ETag, so none listed");
        let absent = Conditions {
            absent: true,
            ..Conditions::default()
        };
        assert!(matches!(absent.check_not_file(), Err(StorageError::Exists)));
    }
}
