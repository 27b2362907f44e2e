//! Preconditions of a write (`Upload-Offset`, `If-Match`, `If-None-Match: *`), checked
//! against the file's committed state: once early, before the body is read (so a refused
//! request is not invited to upload), and again under the file's lock at commit, which is the
//! check that counts.

use super::{Result, StorageError};
use std::fs::Metadata;

/// A test of a file's version: its metadata and committed length (from which ETags are made).
pub type VersionTest<'a> = &'a dyn Fn(&Metadata, u64) -> bool;

/// What must hold at the instant a write commits; the default is nothing.
#[derive(Clone, Copy, Default)]
pub struct Conditions<'a> {
    /// `Upload-Offset`: the file's committed size must be exactly this (a missing file has 0).
    pub size: Option<u64>,
    /// `If-Match`: the file must exist and pass this test.
    pub version: Option<VersionTest<'a>>,
    /// `If-None-Match: *`: the file must not exist.
    pub absent: bool,
}

impl Conditions<'_> {
    /// True when there is anything to check.
    pub fn any(&self) -> bool {
        self.size.is_some() || self.version.is_some() || self.absent
    }

    /// Checks the file's state: `None` when missing, else its metadata and committed length.
    pub fn check(&self, state: Option<(&Metadata, u64)>) -> Result<()> {
        if self.absent && state.is_some() {
            return Err(StorageError::Exists);
        }
        if let Some(test) = self.version
            && !state.is_some_and(|(meta, len)| test(meta, len))
        {
            return Err(StorageError::VersionMismatch);
        }
        match (self.size, state.map_or(0, |(_, len)| len)) {
            (Some(expected), current) if expected != current => Err(StorageError::OffsetMismatch { current }),
            _ => Ok(()),
        }
    }
}
