//! The storage root as a handle, and every directory the write protocol uses opened beneath it.
//!
//! The jail ([`super::jail`]) checks a request path once and turns it into the real location of
//! its parent (symlinks inside the root replaced by their targets). From then on that location
//! is only opened beneath the root handle with every symlink refused ([`open_beneath`]: one
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, or a walk one component at a time with
//! `O_NOFOLLOW` on kernels without it), so a symlink that appears later on the way
//! (another writer's, or an in-root link moved through the API to where it now points outside)
//! is refused ([`StorageError::OutsideRoot`]) rather than followed. Missing parents are created
//! the same way, with `mkdirat` relative to the handle above them, and only when a write
//! commits ([`Root::create_dirs`]): a write still receiving its body, or one killed, leaves no
//! new directory behind.

use super::dir::Dir;
use super::{Result, StorageError};
use std::ffi::OsStr;
use std::io;
use std::path::{Component, Path, PathBuf};

/// The storage root: its canonical path, an open handle, and that directory's identity.
#[derive(Debug)]
pub struct Root {
    path: PathBuf,
    dir: Dir,
    /// Device and inode of the directory the handle holds, taken when it was opened.
    id: (u64, u64),
    /// Whether reads may remember versions found clean ([`super::clean_versions`]): the root is
    /// on a local filesystem.
    local: bool,
}

impl Root {
    /// Opens the canonical directory `path` as the root.
    pub fn open(path: PathBuf) -> io::Result<Root> {
        let dir = Dir::open(&path)?;
        let id = dir.id()?;
        let local = dir.fs_magic().is_ok_and(super::clean_versions::local);
        Ok(Root { path, dir, id, local })
    }

    /// Another handle on the same root (for a listing that outlives the request's borrow).
    pub fn try_clone(&self) -> io::Result<Root> {
        Ok(Root {
            path: self.path.clone(),
            dir: self.dir.try_clone()?,
            id: self.id,
            local: self.local,
        })
    }

    /// The device whose files reads may remember clean ([`super::clean_versions`]): the root's,
    /// where it is a local filesystem (a mount beneath the root is another device).
    pub fn local_device(&self) -> Option<u64> {
        self.local.then_some(self.id.0)
    }

    /// The canonical path of the root.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The handle on the root itself.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// Checks that the configured path still leads to the directory this handle holds: a root
    /// renamed away, deleted or replaced (a volume unmounted under it) is not served as if it
    /// were still there. One `stat(2)` of the path: cheap enough for every request, which
    /// [`Root::present`] makes it.
    pub fn still_there(&self) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let gone = || {
            io::Error::new(
                io::ErrorKind::NotFound,
                "the storage root was moved, removed or replaced",
            )
        };
        // A stale lookup (a network volume's name cache) is tried again, as every lookup is.
        let now = match crate::sys::retry_stale(|| std::fs::metadata(&self.path)) {
            Ok(now) => now,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(gone()),
            Err(e) => return Err(e),
        };
        if now.is_dir() && (now.dev(), now.ino()) == self.id {
            Ok(())
        } else {
            Err(gone())
        }
    }

    /// [`Root::still_there`] as a storage result: [`StorageError::RootGone`] when the path no
    /// longer leads to this directory. Every operation checks it before it starts, and every
    /// write again after it committed, before it is acknowledged: a write that raced a rename
    /// of the root may have landed in the detached directory, and is then answered 503, never
    /// 200.
    pub fn present(&self) -> Result<()> {
        match self.still_there() {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StorageError::RootGone),
            Err(e) => Err(StorageError::from_io(e)),
        }
    }

    /// Opens the directory `rel` (relative to the root; empty for the root) without following
    /// any symlink on the way. A path through a file names no directory: [`StorageError::NotFound`].
    pub fn open_dir(&self, rel: &Path) -> Result<DirRef<'_>> {
        if rel.as_os_str().is_empty() {
            // The root itself: its handle, without a descriptor of its own (the common case
            // of a file at the top, on every request).
            return Ok(DirRef::Root(&self.dir));
        }
        open_beneath(&self.dir, rel).map(DirRef::Opened)
    }

    /// Opens the deepest directory of `rel` that exists (where a write may spool its body
    /// before its own directory is created).
    pub fn open_deepest(&self, rel: &Path) -> Result<Dir> {
        let mut dir = self.dir.try_clone().map_err(StorageError::from_io)?;
        for name in names(rel)? {
            match open_step(&dir, name) {
                Ok(next) => dir = next,
                Err(StorageError::NotFound) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(dir)
    }

    /// Opens the directory `rel`, creating what is missing of it; the directories it created
    /// are removed again when the returned guard drops, unless it is [kept](NewDirs::keep).
    pub fn create_dirs(&self, rel: &Path) -> Result<(NewDirs, Dir)> {
        let mut created = NewDirs {
            root: self.dir.try_clone().map_err(StorageError::from_io)?,
            dirs: Vec::new(),
        };
        let mut dir = self.dir.try_clone().map_err(StorageError::from_io)?;
        let mut at = PathBuf::new();
        for name in names(rel)? {
            at.push(name);
            dir = match open_step(&dir, name) {
                Ok(next) => next,
                Err(StorageError::NotFound) => {
                    match dir.create_dir(name) {
                        Ok(()) => created.dirs.push(at.clone()),
                        // Made by another writer in between: use it.
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(StorageError::from_io(e)),
                    }
                    open_step(&dir, name)?
                }
                Err(e) => return Err(e),
            };
        }
        Ok((created, dir))
    }
}

/// Opens the directory `rel` beneath `base`, never through a symlink and never out of `base`:
/// in one `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` call where the kernel has it, else
/// one component at a time with `O_NOFOLLOW` ([`walk_beneath`]). Either way the kernel resolves
/// every step relative to a handle, so no rename or symlink swapped in by another writer can
/// make it open a directory outside.
pub fn open_beneath(base: &Dir, rel: &Path) -> Result<Dir> {
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Set once the kernel (or a seccomp filter) has refused `openat2`.
    static NO_OPENAT2: AtomicBool = AtomicBool::new(false);
    if rel.as_os_str().is_empty() || NO_OPENAT2.load(Ordering::Relaxed) {
        return walk_beneath(base, rel);
    }
    names(rel)?;
    match base.open_dir_beneath(rel.as_os_str()) {
        None => {
            NO_OPENAT2.store(true, Ordering::Relaxed);
            walk_beneath(base, rel)
        }
        Some(Ok(dir)) => Ok(dir),
        Some(Err(e)) => Err(match e.raw_os_error() {
            Some(libc::ELOOP | libc::EXDEV) => StorageError::OutsideRoot,
            Some(libc::ENOTDIR) => StorageError::NotFound,
            // A rename raced the lookup: the kernel asks to retry, which the walk does.
            Some(libc::EAGAIN) => return walk_beneath(base, rel),
            _ => match StorageError::from_io(e) {
                StorageError::NotADirectory => StorageError::NotFound,
                e => e,
            },
        }),
    }
}

/// [`open_beneath`] for kernels without `openat2`: one component at a time, never through a
/// symlink, holding at most two handles at once.
pub fn walk_beneath(base: &Dir, rel: &Path) -> Result<Dir> {
    let step = |dir: &Dir, name| {
        open_step(dir, name).map_err(|e| match e {
            StorageError::NotADirectory => StorageError::NotFound,
            e => e,
        })
    };
    let mut names = names(rel)?.into_iter();
    let Some(first) = names.next() else {
        return base.try_clone().map_err(StorageError::from_io);
    };
    let mut dir = step(base, first)?;
    for name in names {
        dir = step(&dir, name)?;
    }
    Ok(dir)
}

/// A directory opened beneath the root, or the root's own handle.
#[derive(Debug)]
pub enum DirRef<'a> {
    /// The root.
    Root(&'a Dir),
    /// A directory below it, with its own handle.
    Opened(Dir),
}

impl std::ops::Deref for DirRef<'_> {
    type Target = Dir;

    fn deref(&self) -> &Dir {
        match self {
            DirRef::Root(dir) => dir,
            DirRef::Opened(dir) => dir,
        }
    }
}

/// The plain names of a relative path (the jail admits nothing else).
fn names(rel: &Path) -> Result<Vec<&OsStr>> {
    rel.components()
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            _ => Err(StorageError::OutsideRoot),
        })
        .collect()
}

/// One step down: the subdirectory `name` of `dir`, never through a symlink.
fn open_step(dir: &Dir, name: &OsStr) -> Result<Dir> {
    dir.open_dir(name).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => StorageError::OutsideRoot,
        // With O_DIRECTORY, Linux reports a symlink as ENOTDIR: tell it from a file. A
        // directory there now was a symlink an instant ago (another writer swapping them).
        Some(libc::ENOTDIR) => match dir.stat(name) {
            Ok(s) if s.is_symlink() || s.is_dir() => StorageError::OutsideRoot,
            Ok(_) => StorageError::NotADirectory,
            Err(e) => StorageError::from_io(e),
        },
        _ => StorageError::from_io(e),
    })
}

/// Directories a write created for its target, removed again (deepest first, only while
/// empty) when the guard drops unless the write [kept](NewDirs::keep) them: a failed write
/// leaves the tree as it found it.
#[must_use]
#[derive(Debug)]
pub struct NewDirs {
    root: Dir,
    /// Relative to the root, outermost first.
    dirs: Vec<PathBuf>,
}

impl NewDirs {
    /// The write succeeded: its directories stay; with `fsync`, their entries are flushed to
    /// disk too (the target's own directory is the caller's to flush).
    pub fn keep(mut self, fsync: bool) -> Result<()> {
        let dirs = std::mem::take(&mut self.dirs);
        if fsync {
            for dir in &dirs {
                self.parent_of(dir)?.sync().map_err(StorageError::from_io)?;
            }
        }
        Ok(())
    }

    fn parent_of(&self, rel: &Path) -> Result<Dir> {
        open_beneath(&self.root, rel.parent().unwrap_or(Path::new("")))
    }
}

impl Drop for NewDirs {
    fn drop(&mut self) {
        for rel in self.dirs.iter().rev() {
            let (Ok(parent), Some(name)) = (self.parent_of(rel), rel.file_name()) else {
                return;
            };
            // Not empty: another write is using it, so it (and its parents) stay.
            if parent.remove_dir(name).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_dir;
    use std::fs;

    #[test]
    fn opens_beneath_the_root_and_refuses_a_symlink_on_the_way() {
        let base = test_dir("root-walk");
        let root = Root::open(fs::canonicalize(&base).unwrap()).unwrap();
        fs::create_dir_all(base.join("a/b")).unwrap();
        fs::create_dir(base.join("outside-of-a")).unwrap();
        std::os::unix::fs::symlink("../outside-of-a", base.join("a/link")).unwrap();
        assert!(root.open_dir(Path::new("a/b")).is_ok());
        assert!(matches!(
            root.open_dir(Path::new("a/link")),
            Err(StorageError::OutsideRoot)
        ));
        assert!(matches!(
            root.create_dirs(Path::new("a/link/new")),
            Err(StorageError::OutsideRoot)
        ));
        assert!(!base.join("outside-of-a/new").exists());
        assert!(matches!(
            root.open_dir(Path::new("a/missing")),
            Err(StorageError::NotFound)
        ));
        assert!(root.open_deepest(Path::new("a/b/c/d")).is_ok());
    }

    #[test]
    fn openat2_and_the_walk_agree() {
        let base = test_dir("root-agree");
        let root = Root::open(fs::canonicalize(&base).unwrap()).unwrap();
        fs::create_dir_all(base.join("a/b/c")).unwrap();
        fs::write(base.join("a/file"), "f").unwrap();
        std::os::unix::fs::symlink("b", base.join("a/inside-link")).unwrap();
        std::os::unix::fs::symlink("/tmp", base.join("a/outside-link")).unwrap();
        let kind = |r: Result<Dir>| match r {
            Ok(_) => "ok",
            Err(StorageError::OutsideRoot) => "outside",
            Err(StorageError::NotFound) => "not found",
            Err(_) => "other",
        };
        let cases = [
            ("a/b/c", "ok"),
            ("a/inside-link", "outside"),
            ("a/inside-link/c", "outside"),
            ("a/outside-link", "outside"),
            ("a/file", "not found"),
            ("a/file/x", "not found"),
            ("a/missing/x", "not found"),
        ];
        for (rel, want) in cases {
            let rel = Path::new(rel);
            assert_eq!(kind(open_beneath(root.dir(), rel)), want, "openat2 {rel:?}");
            assert_eq!(kind(walk_beneath(root.dir(), rel)), want, "walk {rel:?}");
        }
    }

    #[test]
    fn created_directories_go_unless_kept() {
        let base = test_dir("root-create");
        let root = Root::open(fs::canonicalize(&base).unwrap()).unwrap();
        fs::create_dir(base.join("old")).unwrap();
        let (made, _) = root.create_dirs(Path::new("old/n1/n2")).unwrap();
        assert!(base.join("old/n1/n2").is_dir());
        drop(made);
        assert!(!base.join("old/n1").exists() && base.join("old").is_dir());
        let (made, _) = root.create_dirs(Path::new("old/k1/k2")).unwrap();
        made.keep(true).unwrap();
        assert!(base.join("old/k1/k2").is_dir());
    }
}
