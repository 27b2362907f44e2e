//! A depth-first walk of a directory tree by handles, for trees of any depth.
//!
//! A tree can be nested deeper than `PATH_MAX` (another writer of the volume, a replica of an
//! older version moving two deep chains into each other): no path string reaches its bottom,
//! so every step here is one name relative to an open directory handle (`openat` with
//! `O_NOFOLLOW`, and the visitor's `unlinkat` relative to the handle it is given).
//!
//! Descriptors stay bounded whatever the depth: the directories of the first
//! [`HELD_LEVELS`] levels keep their handles open; below that only the deepest directory is
//! open, and the walk climbs back by opening `..` from the child it leaves. `..` alone would
//! be unsafe with other writers: had the child been renamed elsewhere meanwhile, `..` would be
//! its new parent, and the walk would go on (and a visitor delete) in a directory it never
//! chose. So every directory's device and inode are recorded on the way down, and the
//! directory `..` opens is used only if it is that same directory; if not, the walk gives up
//! the levels it cannot verify, climbs to the deepest handle it kept, and goes on from there
//! (a remover's pass then finds the directory not empty and runs again). Memory grows with
//! the depth and with the names of subdirectories still to visit on the current path, never
//! with the number of files.

use super::dir::Dir;
use super::{Result, StorageError};
use crate::sys::EntryType;
use std::ffi::{OsStr, OsString};
use std::io;

/// Levels below the top whose directory handles the walk keeps open (one descriptor each);
/// deeper ones are re-opened through `..` and checked by identity.
pub const HELD_LEVELS: usize = 32;

/// What a walk does at each directory.
pub trait Visitor {
    /// Deals with the entries of `dir` (named `name` in its parent, `depth` levels below the
    /// top; the top is 0 and its name empty) and returns the names of the subdirectories to
    /// walk into.
    fn visit(&mut self, dir: &Dir, name: &OsStr, depth: usize) -> Result<Vec<OsString>>;

    /// The subdirectory `name` of `parent` was walked through (its handle is closed), or was
    /// no directory any more when the walk came to open it.
    fn leave(&mut self, parent: &Dir, name: &OsStr) -> Result<()>;

    /// Opening the subdirectory `name` of `parent` failed with `error` (other than its being
    /// gone, or no directory): `Ok` skips it, an error ends the walk.
    fn cannot_open(&mut self, parent: &Dir, name: &OsStr, error: StorageError) -> Result<()> {
        let _ = (parent, name);
        Err(error)
    }

    /// The walk could not verify its way back up (a directory on its path was moved meanwhile)
    /// and skipped the rest of the subtree below `depth`.
    fn lost_way(&mut self, depth: usize) {
        log::warn!("a directory {depth} levels down was moved while it was walked; the rest of it was skipped");
    }
}

/// One directory on the current path.
struct Frame {
    /// Open for the top [`HELD_LEVELS`] levels and for the deepest frame; else closed.
    dir: Option<Dir>,
    /// Device and inode, to recognise it again through `..`.
    id: (u64, u64),
    /// Its name in its parent.
    name: OsString,
    /// Subdirectories still to walk into.
    subdirs: Vec<OsString>,
}

/// Walks the tree below `top` (which the walk does not leave or remove), calling `visitor` on
/// each directory before its subdirectories and `leave` after them.
pub fn walk(top: &Dir, visitor: &mut dyn Visitor) -> Result<()> {
    let top = top.try_clone().map_err(StorageError::from_io)?;
    let subdirs = visitor.visit(&top, OsStr::new(""), 0)?;
    let id = top.id().map_err(StorageError::from_io)?;
    let mut frames = vec![Frame {
        dir: Some(top),
        id,
        name: OsString::new(),
        subdirs,
    }];
    while let Some(frame) = frames.last_mut() {
        let Some(here) = frame.dir.as_ref() else {
            // Only the top frames or a re-opened one are ever the last; not reached.
            climb_to_held(&mut frames, visitor);
            continue;
        };
        if let Some(name) = frame.subdirs.pop() {
            let child = match here.open_dir(&name) {
                Ok(child) => child,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                // No directory any more (a file or a symlink now): the visitor decides.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
                    visitor.leave(here, &name)?;
                    continue;
                }
                Err(e) => {
                    visitor.cannot_open(here, &name, StorageError::from_io(e))?;
                    continue;
                }
            };
            let depth = frames.len();
            let subdirs = visitor.visit(&child, &name, depth)?;
            let id = child.id().map_err(StorageError::from_io)?;
            if depth > HELD_LEVELS
                && let Some(parent) = frames.last_mut()
            {
                parent.dir = None;
            }
            frames.push(Frame {
                dir: Some(child),
                id,
                name,
                subdirs,
            });
            continue;
        }
        // Every subdirectory done: climb to the parent and tell the visitor.
        let Some(done) = frames.pop() else { break };
        let Some(parent) = frames.last_mut() else { break };
        if parent.dir.is_none() {
            match reopen_parent(&done, parent.id) {
                Some(dir) => parent.dir = Some(dir),
                None => {
                    climb_to_held(&mut frames, visitor);
                    continue;
                }
            }
        }
        drop(done.dir);
        if let Some(dir) = parent.dir.as_ref() {
            visitor.leave(dir, &done.name)?;
        }
    }
    Ok(())
}

/// The parent of the directory `child` through its `..`, if it is still the directory with
/// identity `want` (else `child` was moved while it was walked).
fn reopen_parent(child: &Frame, want: (u64, u64)) -> Option<Dir> {
    let up = child.dir.as_ref()?.open_dir(OsStr::new("..")).ok()?;
    (up.id().ok()? == want).then_some(up)
}

/// Gives up the frames whose handles are closed (the way back through them is lost), down to
/// the deepest one that kept its handle.
fn climb_to_held(frames: &mut Vec<Frame>, visitor: &mut dyn Visitor) {
    while frames.last().is_some_and(|f| f.dir.is_none()) {
        frames.pop();
    }
    visitor.lost_way(frames.len());
}

/// The kind of the entry `name` in `dir` as readdir gave it, asking `fstatat` where the
/// filesystem did not say.
pub fn entry_kind(dir: &Dir, name: &OsStr, kind: EntryType) -> EntryType {
    match kind {
        EntryType::Unknown => match dir.stat(name) {
            Ok(st) if st.is_dir() => EntryType::Dir,
            Ok(st) if st.is_file() => EntryType::File,
            Ok(st) if st.is_symlink() => EntryType::Symlink,
            _ => EntryType::Other,
        },
        kind => kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Counts directories and records the deepest level, removing nothing.
    struct Count {
        dirs: usize,
        deepest: usize,
    }

    impl Visitor for Count {
        fn visit(&mut self, dir: &Dir, _: &OsStr, depth: usize) -> Result<Vec<OsString>> {
            self.dirs += 1;
            self.deepest = self.deepest.max(depth);
            let mut subdirs = Vec::new();
            for entry in dir.entries().map_err(StorageError::from_io)? {
                let (name, kind, _) = entry.map_err(StorageError::from_io)?;
                if entry_kind(dir, &name, kind) == EntryType::Dir {
                    subdirs.push(name);
                }
            }
            Ok(subdirs)
        }

        fn leave(&mut self, _: &Dir, _: &OsStr) -> Result<()> {
            Ok(())
        }
    }

    /// A chain `depth` directories deep below `base`, each with a sibling `s`, made by handles.
    fn chain(base: &Path, depth: usize) {
        let mut dir = Dir::open(base).unwrap();
        for _ in 0..depth {
            dir.create_dir(OsStr::new("s")).unwrap();
            dir.create_dir(OsStr::new("d")).unwrap();
            dir = dir.open_dir(OsStr::new("d")).unwrap();
        }
    }

    /// Moves a directory on the walk's path away when it first reaches `at`, and counts how
    /// often the walk reports it lost its way.
    struct MoveAway {
        base: std::path::PathBuf,
        at: usize,
        moved: bool,
        lost: usize,
    }

    impl Visitor for MoveAway {
        fn visit(&mut self, dir: &Dir, name: &OsStr, depth: usize) -> Result<Vec<OsString>> {
            if depth == self.at && !self.moved {
                // The directory 5 levels up (below the held ones) goes to the top.
                let from = self.base.join(vec!["d"; depth - 5].join("/"));
                std::fs::rename(from, self.base.join("moved")).unwrap();
                self.moved = true;
            }
            Count { dirs: 0, deepest: 0 }.visit(dir, name, depth)
        }

        fn leave(&mut self, _: &Dir, _: &OsStr) -> Result<()> {
            Ok(())
        }

        fn lost_way(&mut self, _depth: usize) {
            self.lost += 1;
        }
    }

    #[test]
    fn a_directory_moved_off_the_path_is_noticed_on_the_way_up() {
        let base = crate::storage::test_dir("walk-moved");
        chain(&base, HELD_LEVELS + 20);
        let mut mover = MoveAway {
            base: base.clone(),
            at: HELD_LEVELS + 15,
            moved: false,
            lost: 0,
        };
        walk(&Dir::open(&base).unwrap(), &mut mover).unwrap();
        assert!(mover.moved);
        assert_eq!(mover.lost, 1, "`..` of the moved directory is not its recorded parent");
    }

    #[test]
    fn walks_past_the_held_levels_and_past_path_max() {
        let base = crate::storage::test_dir("walk-deep");
        // 2,500 levels of `d/`: 5,000 bytes of path, past PATH_MAX.
        let depth = 2500;
        chain(&base, depth);
        let mut count = Count { dirs: 0, deepest: 0 };
        walk(&Dir::open(&base).unwrap(), &mut count).unwrap();
        assert_eq!(count.deepest, depth);
        assert_eq!(count.dirs, 2 * depth + 1, "every `d` and `s`, and the top");
    }
}
