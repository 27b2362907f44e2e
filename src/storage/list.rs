//! Directory listings: entries sorted by name, the service's own files left out, described one
//! at a time while the listing is sent.

use super::dir::Dir;
use super::jail::{self, FinalLink, RelPath, Scope, is_reserved};
use super::lock;
use super::root::Root;
use super::{Result, StorageError};
use crate::sys::Stat;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
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
    /// The entry's name, as the directory holds it (any bytes another writer used; list it
    /// with [`crate::path::listed_name`], show it with [`crate::path::readable_name`]).
    pub name: OsString,
    /// File or directory.
    pub kind: EntryKind,
    /// Size in bytes (0 for directories): a file's committed size, or `None` when a writer
    /// holds it and that cannot be told without waiting (see [`lock::glimpse`]).
    pub size: Option<u64>,
    /// Last modification time.
    pub modified: SystemTime,
}

/// Most bytes of names one listing keeps (4 GiB: the offsets are 32-bit).
const MAX_NAME_BYTES: usize = u32::MAX as usize;

/// A directory being listed: its names, read once and sorted, and each entry described (stat,
/// committed size) only when it is taken, so memory holds the names and nothing else per entry
/// whatever the directory's size: 8 bytes and the name itself.
#[derive(Debug)]
pub struct Listing {
    root: Root,
    rel: PathBuf,
    dir: Dir,
    /// Every listed name, back to back.
    names: Vec<u8>,
    /// Where each name is in `names` (start, length), in sorted order.
    spans: Vec<(u32, u16)>,
    next: usize,
    /// The prefixes of the [`Scope`] it was listed within: a symlink is described as what it
    /// leads to only there.
    scope: Option<Vec<RelPath>>,
}

impl Listing {
    /// Reads the names of the directory `rel` (relative to the root), through its handle,
    /// without the service's own files, sorted by their bytes. A symlink in it is described
    /// by what it leads to only where that lies within `scope`. `hidden` is one more name to
    /// leave out.
    pub fn open(root: &Root, rel: &Path, scope: Scope<'_>, hidden: Option<&std::ffi::OsStr>) -> Result<Listing> {
        let dir = match root.open_dir(rel)? {
            // A description of its own, never a `dup` of the root's handle (see `Dir::reopen`).
            super::root::DirRef::Root(dir) => dir.reopen().map_err(StorageError::from_io)?,
            super::root::DirRef::Opened(dir) => dir,
        };
        let mut names = Vec::new();
        let mut spans = Vec::new();
        for item in dir.entries().map_err(StorageError::from_io)? {
            let (name, _, _) = item.map_err(StorageError::from_io)?;
            let bytes = name.as_bytes();
            if is_reserved(bytes) || hidden.is_some_and(|h| h == name) {
                continue;
            }
            let (Ok(start), Ok(len)) = (u32::try_from(names.len()), u16::try_from(bytes.len())) else {
                return Err(StorageError::Io(std::io::Error::other("directory too large to list")));
            };
            if names.len() + bytes.len() > MAX_NAME_BYTES {
                return Err(StorageError::Io(std::io::Error::other("directory too large to list")));
            }
            names.extend_from_slice(bytes);
            spans.push((start, len));
        }
        names.shrink_to_fit();
        spans.shrink_to_fit();
        let name_of = |&(start, len): &(u32, u16)| &names[start as usize..start as usize + len as usize];
        spans.sort_unstable_by(|a, b| name_of(a).cmp(name_of(b)));
        Ok(Listing {
            root: root.try_clone().map_err(StorageError::from_io)?,
            rel: rel.to_path_buf(),
            dir,
            names,
            spans,
            next: 0,
            scope: scope.prefixes().map(<[RelPath]>::to_vec),
        })
    }

    /// The next name, not looked at (the plain listing needs nothing more).
    pub fn next_name(&mut self) -> Option<&OsStr> {
        let &(start, len) = self.spans.get(self.next)?;
        self.next += 1;
        Some(OsStr::from_bytes(
            &self.names[start as usize..start as usize + len as usize],
        ))
    }

    /// The next entry, described now: a regular file at its committed size, like a GET of it
    /// would serve, found without waiting for a lock ([`lock::glimpse`]: unknown, never an
    /// uncommitted size, while a writer holds it); a symlink as what it leads to when
    /// that stays inside the root and the listing's scope (else as itself, so nothing of the
    /// outside shows). Entries
    /// gone since the names were read are skipped.
    pub fn next_entry(&mut self) -> Option<Entry> {
        loop {
            let name = self.next_name()?.to_os_string();
            let Ok(stat) = self.dir.stat(&name) else { continue };
            let own = (EntryKind::File, Some(0), stat.mtime);
            let described = if stat.is_symlink() {
                let scope = Scope::new(self.scope.as_deref());
                Some(followed(&self.root, &self.rel.join(&name), scope).unwrap_or(own))
            } else {
                described(&self.dir, &name, stat)
            };
            if let Some((kind, size, mtime)) = described {
                return Some(Entry {
                    name,
                    kind,
                    size,
                    modified: system_time(mtime),
                });
            }
        }
    }
}

/// Kind, listed size and modification time of `name` in `dir` (not a symlink); `None` if it
/// is gone.
fn described(dir: &Dir, name: &OsStr, stat: Stat) -> Option<(EntryKind, Option<u64>, (i64, i64))> {
    if stat.is_dir() {
        return Some((EntryKind::Directory, Some(0), stat.mtime));
    }
    if !stat.is_file() {
        return Some((EntryKind::Other, Some(0), stat.mtime));
    }
    match lock::glimpse(dir, name) {
        Ok(Some(seen)) => Some((EntryKind::File, seen.len, (seen.meta.mtime(), seen.meta.mtime_nsec()))),
        Ok(None) => None,
        // Not readable now (another uid's file, say): listed, its size unknown.
        Err(_) => Some((EntryKind::File, None, stat.mtime)),
    }
}

/// What the symlink at `rel` leads to, if that is inside the root and `scope`: its real
/// location is resolved from the root's handle, then opened without following anything, so a
/// link swapped meanwhile shows as itself.
fn followed(root: &Root, rel: &Path, scope: Scope<'_>) -> Option<(EntryKind, Option<u64>, (i64, i64))> {
    let real = jail::resolve_within(root, rel, FinalLink::Follow, scope).ok()?;
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
