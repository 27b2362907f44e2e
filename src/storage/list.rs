//! Directory listings: entries sorted by name, the service's own files left out.

use super::jail::RESERVED_PREFIX;
use super::{Result, StorageError};
use std::fs;
use std::path::Path;
use std::time::SystemTime;

/// What kind of thing a listed entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (or a link to one).
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

/// Lists the directory at `dir`.
pub fn list_dir(dir: &Path) -> Result<Vec<Entry>> {
    let meta = fs::metadata(dir).map_err(StorageError::from_io)?;
    if !meta.is_dir() {
        return Err(StorageError::NotADirectory);
    }
    let mut entries = Vec::new();
    for item in fs::read_dir(dir).map_err(StorageError::from_io)? {
        let item = item.map_err(StorageError::from_io)?;
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with(RESERVED_PREFIX) {
            continue;
        }
        // Follow links for type and size; a dangling link is listed as an empty file.
        let Ok(meta) = fs::metadata(item.path()).or_else(|_| item.metadata()) else {
            continue;
        };
        let kind = if meta.is_dir() {
            EntryKind::Directory
        } else {
            EntryKind::File
        };
        let size = if meta.is_dir() { 0 } else { meta.len() };
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
