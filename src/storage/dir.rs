//! Directory handles: every name the write protocol touches is opened, checked, renamed and
//! removed relative to an open directory, never by re-walking a path.
//!
//! A path is walked once (by the jail) to open its parent directory; from then on a crash
//! record, a temp file and the file itself are all found through that one handle, so a
//! directory renamed meanwhile (a move of a parent, a delete renaming a tree away) cannot make
//! the protocol act on one directory's file and another directory's record. Files are opened
//! with `O_NOFOLLOW | O_NONBLOCK`: a symlink swapped in at a name is refused rather than
//! followed, and a FIFO cannot block the opener.

use crate::sys::{self, DirStream, Stat};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

/// Mode of files the service creates (before the umask), as `File::create` uses.
const NEW_FILE_MODE: libc::mode_t = 0o666;

/// How a file is opened through a [`Dir`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// For reading (and shared locks).
    Read,
    /// For reading and writing (and exclusive locks).
    Write,
    /// Only to hold its exclusive lock (a replace, move or delete does not write the file):
    /// read-write where the service may, else read-only, so a file it cannot write (owned by
    /// someone else, mode 0444) can still be replaced, moved or deleted as its directory allows.
    Lock,
}

/// An open directory.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

impl Dir {
    /// Opens the directory at `path` (following symlinks on the way, which the jail checked).
    pub fn open(path: &Path) -> io::Result<Dir> {
        sys::open_dir(path).map(|fd| Dir { fd })
    }

    /// Another descriptor on the same open directory (`dup`): for `*at` calls only. It shares
    /// its read position with this one, so never read entries through it: [`Dir::reopen`].
    pub fn try_clone(&self) -> io::Result<Dir> {
        self.fd.try_clone().map(|fd| Dir { fd })
    }

    /// Opens the subdirectory `name`, refusing a symlink.
    pub fn open_dir(&self, name: &OsStr) -> io::Result<Dir> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        sys::open_at(self.fd.as_fd(), name, flags, 0).map(|fd| Dir { fd })
    }

    /// Opens the directory `rel` (plain names) beneath this one in one `openat2` call; `None`
    /// where the kernel lacks it. See [`sys::open_dir_beneath`].
    pub fn open_dir_beneath(&self, rel: &OsStr) -> Option<io::Result<Dir>> {
        sys::open_dir_beneath(self.fd.as_fd(), rel).map(|r| r.map(|fd| Dir { fd }))
    }

    /// The target of the symlink `name` here (bounded by `PATH_MAX`).
    pub fn read_link(&self, name: &OsStr) -> io::Result<std::ffi::OsString> {
        sys::read_link_at(self.fd.as_fd(), name)
    }

    /// Opens the existing file `name`, refusing a symlink (`ELOOP`) and never blocking on a
    /// FIFO or device.
    pub fn open_file(&self, name: &OsStr, access: Access) -> io::Result<File> {
        let open = |mode| sys::open_at(self.fd.as_fd(), name, mode | libc::O_NOFOLLOW | libc::O_NONBLOCK, 0);
        match access {
            Access::Read => open(libc::O_RDONLY),
            Access::Write => open(libc::O_RDWR),
            Access::Lock => match open(libc::O_RDWR) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM | libc::EROFS)) => {
                    open(libc::O_RDONLY)
                }
                other => other,
            },
        }
        .map(File::from)
    }

    /// Creates the file `name`, which must not exist (`EEXIST` otherwise, also for a symlink:
    /// `O_EXCL` never follows one).
    pub fn create_new(&self, name: &OsStr) -> io::Result<File> {
        let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_NONBLOCK;
        sys::open_at(self.fd.as_fd(), name, flags, NEW_FILE_MODE).map(File::from)
    }

    /// Creates a file with no name here (`O_TMPFILE`): gone when closed, with nothing to
    /// unlink. Refused (`EOPNOTSUPP`) by filesystems without it (NFS, most FUSE volumes).
    pub fn create_unnamed(&self) -> io::Result<File> {
        sys::open_at(
            self.fd.as_fd(),
            OsStr::new("."),
            libc::O_TMPFILE | libc::O_RDWR,
            NEW_FILE_MODE,
        )
        .map(File::from)
    }

    /// What `name` is, without following a symlink.
    pub fn stat(&self, name: &OsStr) -> io::Result<Stat> {
        sys::stat_at(self.fd.as_fd(), name)
    }

    /// Removes the file, symlink or special file `name`.
    pub fn remove_file(&self, name: &OsStr) -> io::Result<()> {
        sys::unlink_at(self.fd.as_fd(), name, false)
    }

    /// Removes the empty directory `name`.
    pub fn remove_dir(&self, name: &OsStr) -> io::Result<()> {
        sys::unlink_at(self.fd.as_fd(), name, true)
    }

    /// Renames `from` here to `to` in `to_dir`, replacing `to` atomically.
    pub fn rename(&self, from: &OsStr, to_dir: &Dir, to: &OsStr) -> io::Result<()> {
        sys::rename_at(self.fd.as_fd(), from, to_dir.fd.as_fd(), to)
    }

    /// Renames `from` here to `to` in `to_dir` only if `to` does not exist (`EEXIST` if it
    /// does; `EINVAL` where the filesystem cannot promise that atomically).
    pub fn rename_noreplace(&self, from: &OsStr, to_dir: &Dir, to: &OsStr) -> io::Result<()> {
        sys::rename_noreplace_at(self.fd.as_fd(), from, to_dir.fd.as_fd(), to)
    }

    /// Gives the file `from` here the new name `to` in `to_dir`, failing with `EEXIST` if it
    /// is taken.
    pub fn link(&self, from: &OsStr, to_dir: &Dir, to: &OsStr) -> io::Result<()> {
        sys::link_at(self.fd.as_fd(), from, to_dir.fd.as_fd(), to)
    }

    /// Flushes the directory's entries (names created, renamed or removed in it) to disk.
    pub fn sync(&self) -> io::Result<()> {
        File::from(self.fd.try_clone()?).sync_all()
    }

    /// A new open description of this same directory, with a read position of its own: a
    /// `dup` ([`Dir::try_clone`]) shares one position with every other duplicate, so two
    /// listings of the root read through duplicates of its handle would take each other's
    /// entries. `openat(fd, ".")`; where that is refused (a directory the service may read but
    /// not search), the descriptor's `/proc/self/fd` link, which checks read access only.
    pub fn reopen(&self) -> io::Result<Dir> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY;
        match sys::open_at(self.fd.as_fd(), OsStr::new("."), flags, 0) {
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                let link = format!("/proc/self/fd/{}", self.fd.as_raw_fd());
                sys::open_dir(Path::new(&link)).map_err(|_| e)
            }
            other => other,
        }
        .map(|fd| Dir { fd })
    }

    /// The entries, one at a time: name, type (as readdir says) and inode number. Read through
    /// a description of their own ([`Dir::reopen`]), so any number of readers of one directory
    /// (concurrent listings of the root, a sweep, a delete) each see every entry once.
    pub fn entries(&self) -> io::Result<DirStream> {
        DirStream::open(self.reopen()?.fd)
    }

    /// Creates the directory `name` here (mode 0777 before the umask, like `mkdir`).
    pub fn create_dir(&self, name: &OsStr) -> io::Result<()> {
        sys::mkdir_at(self.fd.as_fd(), name, 0o777)
    }

    /// Sets this directory's permission bits to `mode` (`fchmod`: the umask plays no part).
    pub fn set_mode(&self, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        File::from(self.fd.try_clone()?).set_permissions(std::fs::Permissions::from_mode(mode))
    }

    /// This directory's own metadata.
    pub fn metadata(&self) -> io::Result<std::fs::Metadata> {
        File::from(self.fd.try_clone()?).metadata()
    }

    /// When this directory was created (with its metadata `meta`), where the filesystem says.
    pub fn created(&self, meta: &std::fs::Metadata) -> Option<std::time::SystemTime> {
        sys::created(self.fd.as_fd(), meta)
    }

    /// Free bytes for an unprivileged writer on this directory's filesystem.
    pub fn free_bytes(&self) -> io::Result<u64> {
        sys::free_bytes(self.fd.as_fd())
    }

    /// The size and use of this directory's filesystem.
    pub fn volume_usage(&self) -> io::Result<sys::VolumeUsage> {
        sys::volume_usage(self.fd.as_fd())
    }

    /// Device and inode of this directory.
    pub fn id(&self) -> io::Result<(u64, u64)> {
        let st = self.stat(OsStr::new("."))?;
        Ok((st.dev, st.ino))
    }

    /// The filesystem type of the directory (`statfs` magic, [`sys::fs_magic`]).
    pub fn fs_magic(&self) -> io::Result<i64> {
        sys::fs_magic(self.fd.as_fd())
    }
}

/// A random name in the service's reserved namespace: `prefix` and 64 random bits in hex, so
/// no other process or replica (all of them pid 1 in their containers) picks the same one.
pub fn random_name(prefix: &str) -> io::Result<String> {
    let mut bytes = [0u8; 8];
    sys::fill_random(&mut bytes)?;
    Ok(format!("{prefix}{:016x}", u64::from_le_bytes(bytes)))
}

/// A random id of 128 bits in hex.
pub fn random_id() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    sys::fill_random(&mut bytes)?;
    Ok(format!("{:032x}", u128::from_le_bytes(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_dir;

    #[test]
    fn interleaved_readers_of_one_handle_each_see_every_entry() {
        let base = test_dir("dir-entries");
        let names: Vec<String> = (0..300).map(|i| format!("f{i:03}")).collect();
        for name in &names {
            std::fs::write(base.join(name), "").unwrap();
        }
        let dir = Dir::open(&base).unwrap();
        let clone = dir.try_clone().unwrap();
        let (mut a, mut b) = (dir.entries().unwrap(), clone.entries().unwrap());
        let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
        loop {
            let (x, y) = (a.next(), b.next());
            if x.is_none() && y.is_none() {
                break;
            }
            seen_a.extend(x.map(|e| e.unwrap().0.into_string().unwrap()));
            seen_b.extend(y.map(|e| e.unwrap().0.into_string().unwrap()));
        }
        seen_a.sort();
        seen_b.sort();
        assert_eq!(seen_a, names);
        assert_eq!(seen_b, names);
    }
}
