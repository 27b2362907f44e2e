//! Locked, all-or-nothing appends.
//!
//! Appenders to one file are serialised by an exclusive `flock` on the file, held for the whole
//! body: it works between threads (each request opens its own file description) and between
//! processes, including replicas sharing a volume whose filesystem supports it. Under the lock
//! we note the size, check the caller's expected offset (which makes retries idempotent), copy
//! the body, and on any failure truncate back to the noted size, so neither readers nor the
//! next appender ever see half a body. A file this append created is removed again on failure.

use super::{Result, StorageError, copy_into, create_parents};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Most times we reopen a file that was replaced while we waited for its lock.
const MAX_LOCK_ATTEMPTS: usize = 16;

/// A file opened for append and locked, and whether this open created it.
struct Locked {
    file: File,
    created: bool,
}

/// Opens (creating if needed) and locks `path`, making sure the locked file is still the one
/// the name points to: a failed append by someone else may have removed the file it created,
/// or a POST may have replaced it, while we waited.
fn open_locked(path: &Path) -> Result<Locked> {
    for _ in 0..MAX_LOCK_ATTEMPTS {
        let (file, created) = match OpenOptions::new().append(true).create_new(true).open(path) {
            Ok(f) => (f, true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => (
                OpenOptions::new()
                    .append(true)
                    .open(path)
                    .map_err(StorageError::from_io)?,
                false,
            ),
            Err(e) => return Err(StorageError::from_io(e)),
        };
        file.lock().map_err(StorageError::from_io)?;
        let ours = file.metadata().map_err(StorageError::from_io)?;
        match fs::metadata(path) {
            Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => {
                return Ok(Locked { file, created });
            }
            _ => continue,
        }
    }
    Err(StorageError::Io(io::Error::other(
        "file kept changing while waiting for its lock",
    )))
}

/// Appends `body` to `path`; see the module docs. Returns the new size.
pub fn append_locked(path: &Path, body: &mut dyn Read, expected_offset: Option<u64>, fsync: bool) -> Result<u64> {
    if fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(StorageError::IsADirectory);
    }
    create_parents(path)?;
    let Locked { file, created } = open_locked(path)?;
    let before = file.metadata().map_err(StorageError::from_io)?.len();
    if let Some(expected) = expected_offset
        && expected != before
    {
        if created {
            let _ = fs::remove_file(path);
        }
        return Err(StorageError::OffsetMismatch { current: before });
    }
    let result = copy_into(body, &file).and_then(|n| {
        if fsync {
            file.sync_data().map_err(StorageError::from_io)?;
        }
        Ok(before + n)
    });
    if result.is_err() {
        roll_back(path, &file, before, created);
    }
    result
}

/// Undoes a failed append under the lock: back to `before` bytes, or gone if we created it.
fn roll_back(path: &Path, file: &File, before: u64, created: bool) {
    if created && before == 0 {
        let _ = fs::remove_file(path);
        return;
    }
    if let Err(e) = file.set_len(before).and_then(|()| file.sync_data()) {
        log::error!("could not roll back a failed append to {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_dir;

    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::UnexpectedEof, "client went away"))
        }
    }

    #[test]
    fn appends_and_creates() {
        let dir = test_dir("append-ok");
        let path = dir.join("d/log.csv");
        assert_eq!(append_locked(&path, &mut &b"a\n"[..], None, false).unwrap(), 2);
        assert_eq!(append_locked(&path, &mut &b"b\n"[..], Some(2), true).unwrap(), 4);
        assert_eq!(fs::read(&path).unwrap(), b"a\nb\n");
    }

    #[test]
    fn offset_mismatch_changes_nothing() {
        let dir = test_dir("append-offset");
        let path = dir.join("f");
        fs::write(&path, b"abc").unwrap();
        let err = append_locked(&path, &mut &b"x"[..], Some(2), false).unwrap_err();
        assert!(matches!(err, StorageError::OffsetMismatch { current: 3 }));
        assert_eq!(fs::read(&path).unwrap(), b"abc");
        let missing = dir.join("missing");
        assert!(append_locked(&missing, &mut &b"x"[..], Some(5), false).is_err());
        assert!(!missing.exists());
    }

    #[test]
    fn failed_body_rolls_back() {
        let dir = test_dir("append-rollback");
        let path = dir.join("f");
        fs::write(&path, b"keep").unwrap();
        let err = append_locked(&path, &mut (&b"half"[..]).chain(Broken), None, false).unwrap_err();
        assert!(matches!(err, StorageError::Source(_)));
        assert_eq!(fs::read(&path).unwrap(), b"keep");
        let fresh = dir.join("fresh");
        assert!(append_locked(&fresh, &mut (&b"half"[..]).chain(Broken), None, false).is_err());
        assert!(!fresh.exists());
    }
}
