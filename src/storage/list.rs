//! Directory listings: entries sorted by name, the service's own files left out.

use super::dir::Dir;
use super::jail::{self, FinalLink, is_reserved};
use super::lock;
use super::root::Root;
use super::{Result, StorageError};
use crate::sys::Stat;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// What kind of thing a listed entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (or a link to one inside the root, or a link not followed).
    File,
    /// A directory (or a link to one).
    Directory,
    /// Anything else another writer made: a FIFO, socket or device (never opened, size 0).
    Other,
}

/// One listed entry.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The entry's name, as the directory holds it (any bytes another writer used; show it
    /// with [`jail::listed_name`]).
    pub name: OsString,
    /// File or directory.
    pub kind: EntryKind,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Last modification time.
    pub modified: SystemTime,
}

impl Entry {
    /// The name as listings show it: one line, and a request for it finds this entry.
    pub fn listed_name(&self) -> std::borrow::Cow<'_, str> {
        jail::listed_name(self.name.as_bytes())
    }
}

/// Lists the directory `rel` (relative to the root), through its handle: a regular file at its
/// committed size (see [`lock::committed`]), like a GET of it would serve; a symlink as what it
/// leads to when that stays inside the root (else as itself, so nothing of the outside shows).
pub fn list_dir(root: &Root, rel: &Path) -> Result<Vec<Entry>> {
    let dir = root.open_dir(rel)?;
    let mut entries = Vec::new();
    for item in dir.entries().map_err(StorageError::from_io)? {
        let (os_name, _, _) = item.map_err(StorageError::from_io)?;
        if is_reserved(os_name.as_bytes()) {
            continue;
        }
        let Ok(stat) = dir.stat(&os_name) else { continue };
        let own = (EntryKind::File, 0, stat.mtime);
        let (kind, size, mtime) = if stat.is_symlink() {
            followed(root, &rel.join(&os_name)).unwrap_or(own)
        } else {
            match described(&dir, &os_name, stat) {
                Some(seen) => seen,
                // Gone since the directory was read: not listed.
                None => continue,
            }
        };
        entries.push(Entry {
            name: os_name,
            kind,
            size,
            modified: system_time(mtime),
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// Kind, listed size and modification time of `name` in `dir` (not a symlink); `None` if it
/// is gone.
fn described(dir: &Dir, name: &OsStr, stat: Stat) -> Option<(EntryKind, u64, (i64, i64))> {
    if stat.is_dir() {
        return Some((EntryKind::Directory, 0, stat.mtime));
    }
    if !stat.is_file() {
        return Some((EntryKind::Other, 0, stat.mtime));
    }
    match lock::committed(dir, name) {
        Ok(Some(seen)) => Some((EntryKind::File, seen.len, (seen.meta.mtime(), seen.meta.mtime_nsec()))),
        Ok(None) => None,
        Err(_) => Some((EntryKind::File, stat.size, stat.mtime)),
    }
}

/// What the symlink at `rel` leads to, if that is inside the root: its real location is
/// resolved from the root's handle, then opened without following anything, so a link swapped
/// meanwhile shows as itself.
fn followed(root: &Root, rel: &Path) -> Option<(EntryKind, u64, (i64, i64))> {
    let real = jail::resolve(root, rel, FinalLink::Follow).ok()?;
    if real.as_os_str().is_empty() {
        return None;
    }
    let (parent, name) = (real.parent()?, real.file_name()?);
    let dir = root.open_dir(parent).ok()?;
    let stat = dir.stat(name).ok().filter(|s| !s.is_symlink())?;
    described(&dir, name, stat)
}

fn system_time((secs, nanos): (i64, i64)) -> SystemTime {
    let secs = u64::try_from(secs).unwrap_or(0);
    let nanos = u32::try_from(nanos).unwrap_or(0).min(999_999_999);
    SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
}
