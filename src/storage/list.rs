//! Directory listings: entries sorted by name, the service's own files left out.

use super::append::{journal_before, journal_inode};
use super::jail::RESERVED_PREFIX;
use super::{Result, StorageError};
use std::fs;
use std::os::unix::fs::MetadataExt;
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

/// Lists the directory at `dir`, which lies under the canonical `root`.
pub fn list_dir(root: &Path, dir: &Path) -> Result<Vec<Entry>> {
    let meta = fs::metadata(dir).map_err(StorageError::from_io)?;
    if !meta.is_dir() {
        return Err(StorageError::NotADirectory);
    }
    let mut entries = Vec::new();
    // Inode -> size before the streamed append a journal guards: such files are listed at the
    // size readers may see (see `append::committed_len`).
    let mut journaled: Vec<(u64, u64)> = Vec::new();
    let mut inodes: Vec<u64> = Vec::new();
    for item in fs::read_dir(dir).map_err(StorageError::from_io)? {
        let item = item.map_err(StorageError::from_io)?;
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with(RESERVED_PREFIX) {
            if let (Some(ino), Some(before)) = (journal_inode(&name), journal_before(&item.path())) {
                journaled.push((ino, before));
            }
            continue;
        }
        let Ok(meta) = entry_metadata(root, &item) else {
            continue;
        };
        let kind = if meta.is_dir() {
            EntryKind::Directory
        } else {
            EntryKind::File
        };
        let size = if meta.is_file() { meta.len() } else { 0 };
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        inodes.push(meta.ino());
        entries.push(Entry {
            name,
            kind,
            size,
            modified,
        });
    }
    for (entry, ino) in entries.iter_mut().zip(inodes) {
        if let Some(&(_, before)) = journaled.iter().find(|(j, _)| *j == ino) {
            entry.size = entry.size.min(before);
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
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
