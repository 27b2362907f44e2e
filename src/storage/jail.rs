//! The path jail: the only way a request path becomes a location under the storage root.
//!
//! Defences, in order, each assuming the ones before it held:
//! 1. [`RelPath::parse`] (pure, lexical, in [`crate::path`]) refuses NUL bytes, a leading
//!    `/`, empty, `.` and `..` segments, over-long names and the service's own
//!    [`RESERVED_PREFIX`] namespace, and holds new names to the stricter
//!    [`Naming::New`](crate::path::Naming::New) rules.
//!    What passes is a list of plain names, so joining it to the root cannot climb out lexically.
//! 2. [`resolve`] finds the real location of the name from the root's handle: each directory
//!    is opened relative to the one above it with `O_NOFOLLOW`, and a symlink met on the way is
//!    read (`readlinkat`) and followed by hand, refused ([`StorageError::OutsideRoot`]) the
//!    moment its target would leave the root. Nothing is ever looked up by absolute path, so
//!    nothing outside the root is even stat'ed.
//! 3. The location found is then only ever opened beneath the root handle with every symlink
//!    refused ([`super::root::open_beneath`]): a symlink swapped in by another writer after
//!    step 2 makes the request fail, never act outside.

use super::StorageError;
use super::dir::Dir;
use super::root::Root;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

// The pure path types live below storage and the URL parser both; storage names them from here.
pub use crate::path::{MAX_PATH_BYTES, PathError, RESERVED_PREFIX, RelPath, is_reserved};

/// Most symlinks one resolution follows (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// What [`resolve`] does with a symlink as the final name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalLink {
    /// Keep the link's own name (a delete or move acts on the link).
    Keep,
    /// Follow it to its target (reads and writes act on the file it leads to); a dangling
    /// link is then [`StorageError::NotFound`].
    Follow,
}

/// The real location of `rel` (plain names, relative to the root), found from the root's
/// handle: symlinks on the way (and the final one, with [`FinalLink::Follow`]) are replaced by
/// where they lead, which must stay inside the root, else [`StorageError::OutsideRoot`].
/// Missing names are fine (the result then names something not there yet), but not past a
/// symlink: a dangling link is [`StorageError::NotFound`].
///
/// The result is a location, not a capability: the caller opens it with
/// [`super::root::open_beneath`], which refuses any symlink, so a link swapped in after this
/// returns makes the request fail rather than escape.
pub fn resolve(root: &Root, rel: &Path, final_link: FinalLink) -> Result<PathBuf, StorageError> {
    // Each name still to resolve, and whether it came from a link's target.
    let mut pending: VecDeque<(OsString, bool)> = VecDeque::new();
    for c in rel.components() {
        match c {
            Component::Normal(name) => pending.push_back((name.to_os_string(), false)),
            _ => return Err(StorageError::OutsideRoot),
        }
    }
    let mut real: Vec<OsString> = Vec::new();
    let mut dir: Option<Dir> = None; // None: the root itself
    let mut links = 0;
    // Set when the last link followed ended in `/`: what it leads to must be a directory.
    let mut must_be_dir = false;
    let reopen = |real: &[OsString]| -> Result<Option<Dir>, StorageError> {
        if real.is_empty() {
            return Ok(None);
        }
        let path: PathBuf = real.iter().collect();
        super::root::open_beneath(root.dir(), &path).map(Some)
    };
    while let Some((name, from_link)) = pending.pop_front() {
        let is_last = pending.is_empty();
        if name == ".." {
            if real.pop().is_none() {
                return Err(StorageError::OutsideRoot);
            }
            dir = reopen(&real)?;
            continue;
        }
        let here = dir.as_ref().unwrap_or(root.dir());
        let stat = match here.stat(&name) {
            Ok(stat) => stat,
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => {
                // Nothing is below a missing name: a dangling link names nothing.
                if from_link {
                    return Err(StorageError::NotFound);
                }
                real.push(name);
                return join_plain(real, pending);
            }
            Err(e) => return Err(StorageError::from_io(e)),
        };
        if stat.is_symlink() {
            if is_last && final_link == FinalLink::Keep {
                real.push(name);
                let link: PathBuf = real.iter().collect();
                // The link itself is acted on, but one leading outside is refused all the same
                // (docs/API.md: 403), even for a delete; a dangling one is a name like any other.
                return match resolve(root, &link, FinalLink::Follow) {
                    Ok(_) | Err(StorageError::NotFound) => Ok(link),
                    Err(e) => Err(e),
                };
            }
            links += 1;
            if links > MAX_LINKS {
                return Err(StorageError::NotFound);
            }
            let target = match here.read_link(&name) {
                Ok(target) => {
                    // `link -> a/` names a directory, as the kernel resolves it (ENOTDIR else).
                    if is_last && target.as_bytes().ends_with(b"/") {
                        must_be_dir = true;
                    }
                    PathBuf::from(target)
                }
                // No longer a link (another writer swapped it back since the stat): look again.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    pending.push_front((name, from_link));
                    continue;
                }
                Err(e) => return Err(StorageError::from_io(e)),
            };
            let inside = if target.is_absolute() {
                real.clear();
                dir = None;
                target
                    .strip_prefix(root.path())
                    .map_err(|_| StorageError::OutsideRoot)?
                    .to_path_buf()
            } else {
                target
            };
            for c in inside.components().rev() {
                match c {
                    Component::Normal(n) => pending.push_front((n.to_os_string(), true)),
                    Component::ParentDir => pending.push_front(("..".into(), true)),
                    Component::CurDir => {}
                    Component::RootDir | Component::Prefix(_) => return Err(StorageError::OutsideRoot),
                }
            }
            continue;
        }
        if stat.is_dir() && !is_last {
            let next = here.open_dir(&name).map_err(|e| match e.raw_os_error() {
                // Swapped for a symlink since the stat: refused, never followed.
                Some(libc::ELOOP | libc::ENOTDIR) => StorageError::OutsideRoot,
                _ => StorageError::from_io(e),
            })?;
            dir = Some(next);
            real.push(name);
            continue;
        }
        if is_last && must_be_dir && !stat.is_dir() {
            return Err(StorageError::NotFound);
        }
        real.push(name);
        if !is_last {
            // Below a file: nothing is there (the caller's open says so).
            return join_plain(real, pending);
        }
    }
    Ok(real.iter().collect())
}

/// The location `real` plus the names still `pending`, where nothing exists below `real` (a
/// missing name, or a file): they join as the plain names the request gave, so a write may
/// create them; names a link's target gave (a `..` among them) lead nowhere: not found.
fn join_plain(mut real: Vec<OsString>, pending: VecDeque<(OsString, bool)>) -> Result<PathBuf, StorageError> {
    if pending.iter().any(|(_, from_link)| *from_link) {
        return Err(StorageError::NotFound);
    }
    real.extend(pending.into_iter().map(|(n, _)| n));
    Ok(real.iter().collect())
}

/// The part of the tree an operation may touch: everything, or only what really lies beneath
/// some directories (a scoped token's prefixes).
///
/// It is judged on the real location [`resolve`] returns, after every symlink on the way was
/// followed, never on the path as the request spelled it: a link inside a prefix that leads
/// elsewhere in the root (`team-a/link -> ../team-b`) would otherwise carry the operation out
/// of the scope. That location is exactly what the operation then opens beneath the root,
/// with every symlink refused (step 3 above), so no link swapped in between the check and the
/// use can take it elsewhere: the check and the use name the same plain directories. The
/// prefixes are compared as configured, whole segments at a time; a prefix that is itself a
/// link is not followed (its real location is not beneath it), so a scope names real
/// directories.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    /// `None`: the whole tree.
    prefixes: Option<&'a [RelPath]>,
}

impl<'a> Scope<'a> {
    /// Only these directories and what is beneath them (`None`: the whole tree).
    pub fn new(prefixes: Option<&'a [RelPath]>) -> Self {
        Scope { prefixes }
    }

    /// The prefixes, `None` for the whole tree.
    pub fn prefixes(&self) -> Option<&'a [RelPath]> {
        self.prefixes
    }

    /// True when the real location `real` (relative to the root, no symlink in it) is one of
    /// the prefixes or beneath one.
    pub fn allows(&self, real: &Path) -> bool {
        self.prefixes
            .is_none_or(|prefixes| prefixes.iter().any(|p| real.starts_with(p.as_path())))
    }

    /// `real` itself if [allowed](Self::allows), else [`StorageError::OutOfScope`].
    pub fn check(&self, real: PathBuf) -> Result<PathBuf, StorageError> {
        if self.allows(&real) {
            Ok(real)
        } else {
            Err(StorageError::OutOfScope)
        }
    }
}

/// [`resolve`], refused ([`StorageError::OutOfScope`]) where the real location is not in
/// `scope`.
pub fn resolve_within(
    root: &Root,
    rel: &Path,
    final_link: FinalLink,
    scope: Scope<'_>,
) -> Result<PathBuf, StorageError> {
    scope.check(resolve(root, rel, final_link)?)
}

/// What `rel` names, [resolved](resolve) within `scope` and then looked at through its
/// directory's handle (never following a symlink there); a name below a file is
/// [`StorageError::NotFound`].
pub fn stat(
    root: &Root,
    rel: &Path,
    final_link: FinalLink,
    scope: Scope<'_>,
) -> Result<crate::sys::Stat, StorageError> {
    let not_found_below_a_file = |e| match e {
        StorageError::NotADirectory => StorageError::NotFound,
        e => e,
    };
    let real = resolve_within(root, rel, final_link, scope)?;
    let (parent, name) = super::split(&real)?;
    let dir = root.open_dir(parent).map_err(not_found_below_a_file)?;
    dir.stat(name)
        .map_err(|e| not_found_below_a_file(StorageError::from_io(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::Naming;

    #[test]
    fn resolves_links_inside_the_root_and_refuses_the_rest() {
        use crate::storage::test_root;
        use std::fs;
        use std::os::unix::fs::symlink;
        let (base, root) = test_root("jail-resolve");
        fs::create_dir_all(base.join("real/sub")).unwrap();
        fs::write(base.join("real/sub/f"), "f").unwrap();
        symlink("real", base.join("rel")).unwrap();
        symlink(base.join("real/sub"), base.join("abs")).unwrap();
        symlink("../real/sub/f", base.join("real/up")).unwrap();
        symlink("..", base.join("real/sub/dots")).unwrap();
        symlink("../..", base.join("real/out")).unwrap();
        symlink("/etc", base.join("etc")).unwrap();
        symlink("missing", base.join("dangling")).unwrap();
        symlink("loop", base.join("loop")).unwrap();
        symlink("real/sub/f/", base.join("file-slash")).unwrap();
        symlink("real/sub/", base.join("dir-slash")).unwrap();
        let go = |p: &str, f| resolve(&root, Path::new(p), f).map(|p| p.to_string_lossy().into_owned());
        use FinalLink::*;
        assert_eq!(go("rel/sub/f", Follow).unwrap(), "real/sub/f");
        assert_eq!(go("abs/f", Follow).unwrap(), "real/sub/f");
        assert_eq!(go("real/up", Follow).unwrap(), "real/sub/f");
        assert_eq!(go("real/up", Keep).unwrap(), "real/up");
        assert_eq!(go("real/sub/dots/sub/f", Follow).unwrap(), "real/sub/f");
        assert_eq!(go("rel/new/deeper", Follow).unwrap(), "real/new/deeper");
        assert_eq!(go("real/sub/f/below", Follow).unwrap(), "real/sub/f/below");
        assert_eq!(go("dangling", Keep).unwrap(), "dangling");
        assert!(matches!(go("dangling", Follow), Err(StorageError::NotFound)));
        assert!(matches!(go("dangling/x", Follow), Err(StorageError::NotFound)));
        assert!(matches!(go("real/out", Follow), Err(StorageError::OutsideRoot)));
        assert!(matches!(go("real/out/x", Keep), Err(StorageError::OutsideRoot)));
        assert!(matches!(go("etc/passwd", Follow), Err(StorageError::OutsideRoot)));
        assert!(matches!(go("loop", Follow), Err(StorageError::NotFound)));
        assert!(matches!(go("file-slash", Follow), Err(StorageError::NotFound)));
        assert_eq!(go("dir-slash", Follow).unwrap(), "real/sub");
        assert_eq!(go("", Follow).unwrap(), "");
    }

    #[test]
    fn a_scope_is_judged_where_the_path_really_leads() {
        use crate::storage::test_root;
        use std::fs;
        use std::os::unix::fs::symlink;
        let (base, root) = test_root("jail-scope");
        fs::create_dir_all(base.join("team-a/sub")).unwrap();
        fs::create_dir_all(base.join("team-b")).unwrap();
        fs::create_dir_all(base.join("team-ab")).unwrap();
        fs::write(base.join("team-b/s"), "s").unwrap();
        symlink("../team-b", base.join("team-a/out")).unwrap();
        symlink("../team-b/s", base.join("team-a/file-out")).unwrap();
        symlink("sub", base.join("team-a/in")).unwrap();
        symlink("team-a", base.join("alias")).unwrap();
        let prefixes = [RelPath::parse(b"team-a", Naming::Existing).unwrap()];
        let scope = Scope::new(Some(&prefixes));
        let go = |p: &str, f| resolve_within(&root, Path::new(p), f, scope).map(|p| p.to_string_lossy().into_owned());
        use FinalLink::*;
        assert_eq!(go("team-a/in/new", Follow).unwrap(), "team-a/sub/new");
        assert_eq!(go("team-a", Follow).unwrap(), "team-a");
        assert_eq!(
            go("team-a/out", Keep).unwrap(),
            "team-a/out",
            "the link itself is inside"
        );
        assert_eq!(go("team-a/file-out", Keep).unwrap(), "team-a/file-out");
        // Judged where it leads (the HTTP gate also refuses the spelling `alias/...`).
        assert_eq!(go("alias/sub", Follow).unwrap(), "team-a/sub");
        for (path, how) in [
            ("team-a/out", Follow),
            ("team-a/out/s", Keep),
            ("team-a/out/new", Follow),
            ("team-a/file-out", Follow),
            ("team-ab", Follow),
            ("", Follow),
        ] {
            assert!(matches!(go(path, how), Err(StorageError::OutOfScope)), "{path} {how:?}");
        }
        let everything = Scope::new(None);
        assert!(resolve_within(&root, Path::new("team-a/out/s"), Follow, everything).is_ok());
    }
}
