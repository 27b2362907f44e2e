//! Directory listings: entries sorted by name, the service's own files left out.

use super::jail::RESERVED_PREFIX;
use super::lock;
use super::root::Root;
use super::{Result, StorageError};
use std::fs;
use std::path::Path;
use std::time::SystemTime;

/// What kind of thing a listed entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (or a link to one inside the root, or a link not followed).
    File,
    /// A directory (or a link to one).
    Directory,
}

/// One listed entry.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The entry's name (lossily converted if it is not UTF-8).
    pub name: String,
    /// File or directory.
    pub kind: EntryKind,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Last modification time.
    pub modified: SystemTime,
}

/// Lists the directory at `dir`, which lies under the canonical `root`. A regular file is
/// listed at its committed size (see [`lock::committed`]), like a GET of it would serve.
pub fn list_dir(root: &Root, rel: &Path) -> Result<Vec<Entry>> {
    let dir = &root.path().join(rel);
    let meta = fs::metadata(dir).map_err(StorageError::from_io)?;
    if !meta.is_dir() {
        return Err(StorageError::NotADirectory);
    }
    let handle = root.open_dir(rel)?;
    let mut entries = Vec::new();
    for item in fs::read_dir(dir).map_err(StorageError::from_io)? {
        let item = item.map_err(StorageError::from_io)?;
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with(RESERVED_PREFIX) {
            continue;
        }
        let Ok(meta) = entry_metadata(root.path(), &item) else {
            continue;
        };
        let kind = if meta.is_dir() {
            EntryKind::Directory
        } else {
            EntryKind::File
        };
        let size = match meta.is_file() {
            true if item.file_type().is_ok_and(|t| t.is_file()) => match lock::committed(&handle, &item.file_name()) {
                Ok(Some(seen)) => seen.len,
                // Gone since the directory was read: not listed.
                Ok(None) => continue,
                Err(_) => meta.len(),
            },
            true => committed_len_at(root, &fs::canonicalize(item.path()).map_err(StorageError::from_io)?)
                .unwrap_or(meta.len()),
            false => 0,
        };
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        entries.push(Entry {
            name,
            kind,
            size,
            modified,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// The committed length of the regular file at the real path `path` (under the root).
fn committed_len_at(root: &Root, path: &Path) -> Option<u64> {
    let rel = root.relative(path).ok()?;
    let (parent, name) = (rel.parent()?, rel.file_name()?);
    let dir = root.open_dir(parent).ok()?;
    lock::committed(&dir, name).ok().flatten().map(|seen| seen.len)
}

/// The metadata an entry is listed with. A symlink is followed only when its target stays
/// inside `root` (as the path jail would allow); a link leading outside, or dangling, is listed
/// with the link's own metadata, so nothing about files outside the root shows.
fn entry_metadata(root: &Path, item: &fs::DirEntry) -> std::io::Result<fs::Metadata> {
    let own = item.metadata()?;
    if !own.file_type().is_symlink() {
        return Ok(own);
    }
    match fs::canonicalize(item.path()) {
        Ok(target) if target.starts_with(root) => fs::metadata(target),
        _ => Ok(own),
    }
}
