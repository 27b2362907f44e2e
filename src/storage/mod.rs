//! The storage root and everything done to files under it. Knows nothing of HTTP.
//!
//! Every operation takes a [`RelPath`] (already validated) and a [`Scope`] (the directories
//! it may reach), and goes through [`jail::resolve`] before touching the filesystem; the
//! scope is judged on the real location that returns ([`Scope`] says why). Every write follows one protocol (`docs/write-protocol.md`):
//! the body is received whole first ([`temp`]), then committed under the file's lock
//! ([`lock`]) with its preconditions checked there ([`preconditions`]): uploads by rename or link
//! ([`upload`]), appends with a crash record ([`journal`], [`append`]), moves and deletes on
//! the same locks ([`move_delete`]). Readers see committed sizes only. The service's own files carry
//! [`jail::RESERVED_PREFIX`] and are hidden, and a start-up [`sweep`] settles crash leftovers.
//! Whole trees (a delete, the sweep, a move's length check) are walked by handles ([`walk`]),
//! so no depth is out of reach.

pub mod append;
pub mod clean_versions;
pub mod concat;
pub mod digest;
pub mod dir;
pub mod expire;
pub mod group;
pub mod jail;
pub mod journal;
pub mod list;
pub mod lock;
pub mod move_delete;
pub mod preconditions;
pub mod root;
pub mod sweep;
pub mod temp;
pub mod upload;
pub mod walk;
pub mod wc;

pub use crate::sys::VolumeUsage;
pub use jail::{PathError, RelPath, Scope};
pub use list::{Entry, EntryKind, Listing};
pub use preconditions::{Conditions, Version, VersionTest};

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Prefix of readiness probe files (inside the reserved namespace), followed by random bits.
pub const PROBE_PREFIX: &str = ".http-nas-probe-";

/// Size of the buffer between a request body and a file, in bytes: large enough that each
/// `write(2)` moves a quarter mebibyte, small enough that a busy pool stays within a few MiB.
pub const COPY_BUF_BYTES: usize = 256 * 1024;

/// Why a storage operation failed.
#[derive(Debug)]
pub enum StorageError {
    /// The path was refused before touching the filesystem.
    BadPath(PathError),
    /// A symlink on the path leads outside the root.
    OutsideRoot,
    /// The path really lies (after its symlinks are followed) outside the operation's
    /// [`Scope`].
    OutOfScope,
    /// No such file or directory.
    NotFound,
    /// A directory is where a file is needed.
    IsADirectory,
    /// A file is where a directory is needed.
    NotADirectory,
    /// The file exists and the request asked to create it only.
    Exists,
    /// An append's expected offset differs from the file's size.
    OffsetMismatch { current: u64 },
    /// The file is not the version the write was conditioned on (`If-Match`).
    VersionMismatch,
    /// The file changed after the date the write was conditioned on (`If-Unmodified-Since`).
    ModifiedSince,
    /// The file is still a version the write was conditioned against (`If-None-Match`).
    UnchangedVersion,
    /// The volume refused the service access (a file or directory it may not write).
    PermissionDenied,
    /// The name is something other than a regular file or directory (a FIFO, a device, or a
    /// symlink swapped in while the request ran).
    NotRegular,
    /// The disk or quota is full.
    NoSpace,
    /// The process or the system ran out of file descriptors (`EMFILE`, `ENFILE`) or kernel
    /// memory: nothing was changed, and the same request may succeed in a moment.
    Exhausted,
    /// The operation may not act on the storage root itself.
    RootRefused,
    /// Moving a directory into itself.
    MoveIntoSelf,
    /// Moving a file onto itself (the same file under another name, a link to it).
    SameFile,
    /// The file's lock stayed held by another request or replica (one frozen, say) for
    /// longer than the configured bound ([`lock::timeout`]); nothing was changed.
    Locked,
    /// The client that asked for the work has gone, so it was stopped.
    ClientGone,
    /// The root's path no longer leads to the directory the service opened (renamed away,
    /// deleted, replaced): nothing is served or acknowledged from it.
    RootGone,
    /// Moving the file `from` to `to`, a path below it: a file holds no names.
    MoveBelowFile { from: String, to: String },
    /// A move target spelled with a trailing `/` (into the directory `dir`), where there is no
    /// such directory; `file` when a file is there instead.
    NoTargetDir { dir: String, file: bool },
    /// A move would nest a path in the moved tree deeper than `limit` bytes, which no request
    /// can name.
    MoveTooDeep { limit: usize },
    /// The storage volume is mounted read-only (`EROFS`): nothing can be written, moved or
    /// deleted on it until it is remounted read-write; reads still work.
    ReadOnly,
    /// The write's digests were refused ([`digest::Plan::check`]); nothing was stored.
    Digest(digest::Refused),
    /// A concatenation's source is the target itself (under its own name or another).
    SourceIsTarget,
    /// A concatenation's source number `index` (from 0) failed with `error`.
    InSource { index: usize, error: Box<StorageError> },
    /// Reading the data to store failed (the client's body broke); nothing was stored.
    Source(io::Error),
    /// Any other filesystem error.
    Io(io::Error),
}

impl StorageError {
    /// Classifies a filesystem error.
    pub fn from_io(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => return StorageError::NoSpace,
            Some(libc::EROFS) => return StorageError::ReadOnly,
            Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM) => return StorageError::Exhausted,
            Some(libc::EACCES | libc::EPERM) => return StorageError::PermissionDenied,
            Some(libc::ENOTDIR) => return StorageError::NotADirectory,
            Some(libc::EISDIR) => return StorageError::IsADirectory,
            Some(libc::ENAMETOOLONG) => return StorageError::BadPath(PathError::TooLong),
            Some(libc::ENOTEMPTY | libc::EEXIST) => return StorageError::IsADirectory,
            _ => {}
        }
        match e.kind() {
            io::ErrorKind::NotFound => StorageError::NotFound,
            _ => StorageError::Io(e),
        }
    }
}

impl From<PathError> for StorageError {
    fn from(e: PathError) -> Self {
        StorageError::BadPath(e)
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::BadPath(e) => write!(f, "{e}"),
            StorageError::OutsideRoot => write!(f, "path leads outside the storage root through a symlink"),
            StorageError::OutOfScope => write!(f, "path leads outside the directories this operation may reach"),
            StorageError::NotFound => write!(f, "no such file or directory"),
            StorageError::IsADirectory => write!(f, "a directory is in the way"),
            StorageError::NotADirectory => write!(f, "a file is in the way where a directory is needed"),
            StorageError::Exists => write!(f, "the file already exists"),
            StorageError::OffsetMismatch { current } => write!(f, "the file is {current} bytes, not the offset given"),
            StorageError::VersionMismatch => write!(f, "the file changed (If-Match does not match its ETag)"),
            StorageError::ModifiedSince => write!(f, "the file changed after the If-Unmodified-Since date"),
            StorageError::UnchangedVersion => write!(f, "the file is still a version If-None-Match lists"),
            StorageError::NotRegular => write!(f, "not a regular file or directory"),
            StorageError::PermissionDenied => write!(f, "permission denied on the storage volume"),
            StorageError::NoSpace => write!(f, "no space left on the storage volume"),
            StorageError::Exhausted => write!(f, "out of file descriptors or memory for now"),
            StorageError::RootRefused => write!(f, "refusing to act on the storage root itself"),
            StorageError::MoveIntoSelf => write!(f, "cannot move a directory into itself"),
            StorageError::SameFile => write!(f, "source and target are the same file"),
            StorageError::Locked => write!(
                f,
                "the file is locked by another request or replica for longer than the lock timeout"
            ),
            StorageError::ClientGone => write!(f, "the client went away; the work was stopped"),
            StorageError::RootGone => write!(
                f,
                "the storage root was moved, removed or replaced under the service; restart it on the \
                 right directory"
            ),
            StorageError::MoveBelowFile { from, to } => {
                write!(f, "cannot move `{from}` to `{to}`: `{from}` is a file, not a directory")
            }
            StorageError::NoTargetDir { dir, file: false } => write!(
                f,
                "no directory `{dir}` to move into (a target ending in / names an existing directory: \
                 create it first, or leave out the / to move to that name)"
            ),
            StorageError::NoTargetDir { dir, file: true } => write!(
                f,
                "`{dir}` is a file, not a directory to move into (a target ending in / names a \
                 directory; leave out the / to replace the file)"
            ),
            StorageError::MoveTooDeep { limit } => write!(
                f,
                "the move would make a path in the moved directory longer than {limit} bytes, which no \
                 request could name; choose a shorter target"
            ),
            StorageError::ReadOnly => write!(
                f,
                "the storage volume is mounted read-only: nothing can be written, moved or deleted until \
                 it is remounted read-write (reads still work)"
            ),
            StorageError::Digest(
                digest::Refused::Mismatch(m)
                | digest::Refused::Unsupported(m)
                | digest::Refused::UnsupportedRepr(m)
                | digest::Refused::Malformed(m),
            ) => write!(f, "{m}"),
            StorageError::SourceIsTarget => write!(f, "a source is the target itself"),
            StorageError::InSource { index, error } => write!(f, "source {index}: {error}"),
            StorageError::Source(e) => write!(f, "{e}"),
            StorageError::Io(e) => write!(f, "storage error: {}", e.kind()),
        }
    }
}

impl std::error::Error for StorageError {}

/// Result of storage operations.
pub type Result<T> = std::result::Result<T, StorageError>;

/// What a path names, opened for reading.
#[derive(Debug)]
pub enum Opened {
    /// A regular file, open, with its metadata and the length readers may see of it
    /// (less than its size while a streamed append to it is in flight).
    File {
        file: File,
        meta: Metadata,
        len: u64,
        /// The inode's generation, where reading it already read it (else the ETag asks).
        generation: Option<u32>,
    },
    /// A directory, with its metadata and when it was created (where the filesystem says).
    Dir(Metadata, Option<std::time::SystemTime>),
}

/// The storage root and its settings.
#[derive(Debug)]
pub struct Storage {
    root: root::Root,
    fsync: bool,
    /// A name in the root that is not the service's to show (a JuiceFS mount's own `.trash`).
    hidden_at_root: Option<std::ffi::OsString>,
}

impl Storage {
    /// Opens the storage at `root`, which must be an existing, writable directory.
    /// `fsync` makes every write durable before it is acknowledged.
    ///
    /// A volume that is writable but full (no space or no inode left, so the check's probe
    /// file cannot be created) is opened anyway, with a warning: its files can still be read
    /// and deleted (which is how space is freed), writes answer 507, and the probes' checker
    /// finds it writable again once space returns. Refusing to start there would make a
    /// restarted pod crash-loop with its data out of reach.
    pub fn open(root: &Path, fsync: bool) -> io::Result<Self> {
        let root = fs::canonicalize(root)?;
        if !fs::metadata(&root)?.is_dir() {
            return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a directory"));
        }
        let storage = Storage {
            root: root::Root::open(root)?,
            fsync,
            hidden_at_root: None,
        };
        match storage.check_writable() {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) => {
                log::warn!(
                    "the storage volume is full ({e}): serving reads and deletes, writes answer 507 \
                     and /readyz 503 until space is freed"
                );
            }
            checked => checked?,
        }
        Ok(storage)
    }

    /// The canonical root directory.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// True while the root is still a directory (the seed's `GET /file` health answer).
    pub fn root_is_dir(&self) -> bool {
        self.root.still_there().is_ok()
    }

    /// Checks the root is a directory we can create and delete a file in. The probe's name is
    /// random (every replica is pid 1 in its container), created exclusively, never followed.
    pub fn check_writable(&self) -> io::Result<()> {
        self.root.still_there()?;
        // An empty probe file needs an inode but no space: a volume with inodes and no free
        // byte would pass, and take no write.
        if self.free_bytes()? == 0 {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let root = self.root.dir();
        let name = dir::random_name(PROBE_PREFIX)?;
        root.create_new(OsStr::new(&name))?;
        match root.remove_file(OsStr::new(&name)) {
            // Removed by another replica's start-up sweep: it was created, which is the test.
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The real location of `rel` relative to the root (parents' symlinks replaced by their
    /// targets; the final name as given).
    fn resolve(&self, rel: &RelPath, scope: Scope<'_>) -> Result<PathBuf> {
        self.root.present()?;
        jail::resolve_within(&self.root, rel.as_path(), jail::FinalLink::Keep, scope)
    }

    /// Where the file `rel` names really is, relative to the root: a final symlink (inside the
    /// root, which the jail checked) is followed too, so locks, crash records and reads all
    /// meet at the real file.
    fn resolve_file(&self, rel: &RelPath, scope: Scope<'_>) -> Result<PathBuf> {
        self.root.present()?;
        jail::resolve_within(&self.root, rel.as_path(), jail::FinalLink::Follow, scope)
    }

    /// What `rel` names, by handle (a final symlink counts as itself, even dangling).
    fn stat(&self, rel: &RelPath, scope: Scope<'_>) -> Result<crate::sys::Stat> {
        self.root.present()?;
        jail::stat(&self.root, rel.as_path(), jail::FinalLink::Keep, scope)
    }

    /// Whether `rel` names anything (a final symlink counts as itself, even dangling), and a
    /// directory if it was spelled with a trailing `/`.
    pub fn exists(&self, rel: &RelPath, scope: Scope<'_>) -> Result<()> {
        self.expect_dir_if_asked(rel, self.stat(rel, scope)?.is_dir())
    }

    /// A path spelled with a trailing `/` names a directory only: a file there is not found.
    fn expect_dir_if_asked(&self, rel: &RelPath, is_dir: bool) -> Result<()> {
        if rel.dir_only() && !is_dir {
            Err(StorageError::NotFound)
        } else {
            Ok(())
        }
    }

    /// Opens what `rel` names for reading; a file with the length of its committed writes.
    /// Everything is read through handles opened beneath the root, never by re-walking the path.
    pub fn open_read(&self, rel: &RelPath, scope: Scope<'_>) -> Result<Opened> {
        self.root.present()?;
        if let Some(opened) = self.open_plain_file(rel, scope)? {
            return Ok(opened);
        }
        let path = self.resolve_file(rel, scope)?;
        if path.as_os_str().is_empty() {
            let root = self.root.dir();
            let meta = root.metadata().map_err(StorageError::from_io)?;
            let born = root.created(&meta);
            return Ok(Opened::Dir(meta, born));
        }
        let (parent, name) = split(&path)?;
        let dir = self.root.open_dir(parent)?;
        let seen = match lock::committed_read(&dir, name, &path, self.root.local_device()) {
            Err(StorageError::IsADirectory) => {
                let sub = dir.open_dir(name).map_err(StorageError::from_io)?;
                let meta = sub.metadata().map_err(StorageError::from_io)?;
                let born = sub.created(&meta);
                return Ok(Opened::Dir(meta, born));
            }
            // A trailing `/` names a directory only: anything else there is not found.
            _ if rel.dir_only() => return Err(StorageError::NotFound),
            Err(StorageError::NotADirectory) => return Err(StorageError::NotFound),
            seen => seen?.ok_or(StorageError::NotFound)?,
        };
        Ok(Opened::File {
            file: seen.file,
            meta: seen.meta,
            len: seen.len,
            generation: seen.generation,
        })
    }

    /// The digests kept at the last commit of the file `rel` names, opened by [`Storage::open_read`]
    /// as `file` (`meta`, committed length `len`), if they describe that version
    /// ([`digest::load`]); never by reading the file.
    pub fn kept_digest(
        &self,
        rel: &RelPath,
        scope: Scope<'_>,
        file: &File,
        meta: &Metadata,
        len: u64,
    ) -> Option<digest::Kept> {
        if !digest::needs_dir(file) {
            return digest::load(None, file, meta, len);
        }
        let path = self.resolve_file(rel, scope).ok()?;
        let (parent, _) = split(&path).ok()?;
        let dir = self.root.open_dir(parent).ok()?;
        digest::load(Some(&dir), file, meta, len)
    }

    /// [`Storage::open_read`] of the common case in fewer calls: a regular file reached
    /// through no symlink at all. Its parent is opened beneath the root refusing every symlink
    /// and the file with `O_NOFOLLOW` ([`lock::committed_read`], the same shared lock, name
    /// re-check and crash record as ever, or a version found clean before), so where this succeeds the jail would have resolved the path
    /// to itself and there is nothing for it to do: that saves its `lstat` and `open` of every
    /// component. Anything else (a symlink on the way, a directory, a missing name, an error)
    /// is `None`, and the caller takes the full path through the jail, which decides as before.
    fn open_plain_file(&self, rel: &RelPath, scope: Scope<'_>) -> Result<Option<Opened>> {
        let path = rel.as_path();
        if rel.dir_only() || !scope.allows(path) {
            return Ok(None);
        }
        let Ok((parent, name)) = split(path) else {
            return Ok(None);
        };
        let Ok(dir) = self.root.open_dir(parent) else {
            return Ok(None);
        };
        match lock::committed_read(&dir, name, path, self.root.local_device()) {
            Ok(Some(seen)) => Ok(Some(Opened::File {
                file: seen.file,
                meta: seen.meta,
                len: seen.len,
                generation: seen.generation,
            })),
            // Waited its bound for a writer: the full path would wait again.
            Err(StorageError::Locked) => Err(StorageError::Locked),
            _ => Ok(None),
        }
    }

    /// Lists a directory, sorted by name, without the service's own files; entries are
    /// described as they are taken from the listing.
    pub fn list(&self, rel: &RelPath, scope: Scope<'_>) -> Result<Listing> {
        let hidden = self.hidden_at_root.as_deref().filter(|_| rel.is_root());
        Listing::open(&self.root, &self.resolve_file(rel, scope)?, scope, hidden)
    }

    /// Leaves `name` in the root out of listings, and makes [`Storage::is_hidden`] say so of
    /// every path under it: a name the filesystem itself keeps there (JuiceFS's `.trash`).
    pub fn hide_at_root(&mut self, name: &str) {
        self.hidden_at_root = Some(name.into());
    }

    /// True for a path under the name [`Storage::hide_at_root`] hides.
    pub fn is_hidden(&self, rel: &RelPath) -> bool {
        let first = rel.as_path().components().next();
        self.hidden_at_root
            .as_deref()
            .is_some_and(|hidden| first.is_some_and(|c| c.as_os_str() == hidden))
    }

    /// Counts `\n` bytes in a file, like `wc -l`, over the length readers may see; holes are
    /// skipped, and the count stops ([`StorageError::ClientGone`]) once `gone` says the client
    /// that asked has left.
    pub fn count_lines(&self, rel: &RelPath, scope: Scope<'_>, gone: &dyn Fn() -> bool) -> Result<u64> {
        match self.open_read(rel, scope)? {
            Opened::File { file, len, .. } => wc::count_file(&file, len, gone).map_err(|e| match e {
                wc::CountError::Gone { counted } => {
                    log::info!("line count of {rel} stopped after {counted} bytes: the client has gone");
                    StorageError::ClientGone
                }
                wc::CountError::Io(e) => StorageError::from_io(e),
            }),
            Opened::Dir(..) => Err(StorageError::IsADirectory),
        }
    }

    /// Atomically creates or replaces the file at `rel` with everything `body` yields, if
    /// `conditions` hold when it commits, and `digests` approves of its digests. Returns the
    /// size written; `digests.repr` tells the file's digests.
    pub fn write_atomic(
        &self,
        rel: &RelPath,
        scope: Scope<'_>,
        body: &mut dyn Read,
        conditions: &Conditions<'_>,
        digests: &mut digest::Plan<'_>,
    ) -> Result<u64> {
        self.write_file(rel, scope, |_, real| {
            upload::write_verified(&self.root, real, body, conditions, digests, self.fsync)
        })
    }

    /// Appends everything `body` yields to the file at `rel` (created if missing), all or
    /// nothing, if `conditions` hold when it commits, and `digests` approves of its digests.
    /// Returns the new size; `digests.repr` tells the file's digests, where they are kept.
    pub fn append(
        &self,
        rel: &RelPath,
        scope: Scope<'_>,
        body: &mut dyn Read,
        conditions: &Conditions<'_>,
        digests: &mut digest::Plan<'_>,
    ) -> Result<u64> {
        self.write_file(rel, scope, |rel, real| {
            append::append_verified(&self.root, real, rel.creatable(), body, conditions, digests, self.fsync)
        })
    }

    /// Joins the files `sources` into `target` ([`concat`]): replacing it atomically or as one
    /// append (`mode`), if `conditions` hold at the commit and `digests` approves of the target's
    /// digests after it (`digests.repr` then tells them); with `delete_sources`, removes each
    /// source still as copied afterwards (never through a symlink at the source's name). A
    /// source's failure is [`StorageError::InSource`]; once `gone` says the client left (or the
    /// server is stopping), the work stops with [`StorageError::ClientGone`] and nothing is
    /// committed.
    // What to join, where, and what the commit must hold to: as `concat::concat` takes them.
    #[allow(clippy::too_many_arguments)]
    pub fn concat(
        &self,
        target: &RelPath,
        sources: &[RelPath],
        scope: Scope<'_>,
        mode: concat::Mode,
        conditions: &Conditions<'_>,
        delete_sources: bool,
        digests: &mut digest::Plan<'_>,
        gone: &dyn Fn() -> bool,
    ) -> Result<concat::Outcome> {
        let target = target.clone().non_root()?;
        let real = self.resolve_file(&target, scope)?;
        let mut reals = Vec::with_capacity(sources.len());
        // With `delete_sources`, whether each source's own name is a symlink: its file is
        // another name's (a DELETE of the link removes the link), so it is kept, never deleted.
        let mut linked = Vec::with_capacity(if delete_sources { sources.len() } else { 0 });
        for (index, source) in sources.iter().enumerate() {
            let real = source
                .clone()
                .non_root()
                .map_err(StorageError::from)
                .and_then(|source| {
                    self.expect_dir_if_asked(&source, false)?;
                    let real = self.resolve_file(&source, scope)?;
                    if delete_sources {
                        linked.push(self.resolve(&source, scope)? != real);
                    }
                    Ok(real)
                })
                .map_err(|e| StorageError::InSource {
                    index,
                    error: Box::new(e),
                })?;
            reals.push(real);
        }
        self.unless_root_gone(concat::concat(
            &self.root,
            &real,
            &reals,
            mode,
            target.creatable(),
            conditions,
            delete_sources.then_some(&linked[..]),
            digests,
            self.fsync,
            gone,
        ))
    }

    /// A write of the file `rel` names (never the root): `write` gets `rel` and where the file
    /// really is ([`Storage::resolve_file`]), and its outcome counts unless the root went
    /// meanwhile.
    fn write_file(
        &self,
        rel: &RelPath,
        scope: Scope<'_>,
        write: impl FnOnce(&RelPath, &Path) -> Result<u64>,
    ) -> Result<u64> {
        let rel = rel.clone().non_root()?;
        let real = self.resolve_file(&rel, scope)?;
        self.unless_root_gone(write(&rel, &real))
    }

    /// Moves `from` to `to` like `mv`, creating `to`'s parents, if `conditions` hold for `from`
    /// when it moves, both ends within `scope`. Returns the moved size.
    pub fn rename(&self, from: &RelPath, to: &RelPath, scope: Scope<'_>, conditions: &Conditions<'_>) -> Result<u64> {
        let (from, to) = (from.clone().non_root()?, to.clone().non_root()?);
        if from.contains(&to) {
            return Err(match self.stat(&from, scope) {
                Ok(st) if !st.is_dir() => StorageError::MoveBelowFile {
                    from: from.to_string(),
                    to: to.to_string(),
                },
                _ => StorageError::MoveIntoSelf,
            });
        }
        if from.dir_only() {
            self.exists(&from, scope)?;
        }
        let (src, dst) = (self.resolve(&from, scope)?, self.resolve(&to, scope)?);
        self.unless_root_gone(move_delete::rename(
            &self.root, &src, &dst, scope, conditions, self.fsync,
        ))
    }

    /// Where a move of `from` to `to` lands, read as `mv` reads it: a target spelled with a
    /// trailing `/` names an existing directory to move into (`a.txt` to `archive/` is
    /// `archive/a.txt`); without one, `to` itself. No such directory is
    /// [`StorageError::NoTargetDir`] (`mv` says "Not a directory"), never a file named `archive`.
    pub fn move_destination(&self, from: &RelPath, to: &RelPath, scope: Scope<'_>) -> Result<RelPath> {
        if !to.dir_only() || to.is_root() {
            return Ok(to.clone());
        }
        let no_dir = |file| StorageError::NoTargetDir {
            dir: to.to_string(),
            file,
        };
        match jail::stat(&self.root, to.as_path(), jail::FinalLink::Follow, scope) {
            Ok(st) if st.is_dir() => Ok(to.join_last_of(from)?),
            Ok(_) => Err(no_dir(true)),
            Err(StorageError::NotFound | StorageError::NotADirectory) => Err(no_dir(false)),
            Err(e) => Err(e),
        }
    }

    /// Deletes a file, or a directory and everything in it (all at once, as readers see it).
    /// Never the root. Only if `conditions` hold at that instant.
    /// A symlink is deleted itself, never followed, but only where it lies within `scope`.
    pub fn delete(&self, rel: &RelPath, scope: Scope<'_>, conditions: &Conditions<'_>) -> Result<()> {
        if rel.is_root() {
            return Err(StorageError::RootRefused);
        }
        if rel.dir_only() {
            self.exists(rel, scope)?;
        }
        self.unless_root_gone(move_delete::delete(
            &self.root,
            &self.resolve(rel, scope)?,
            conditions,
            self.fsync,
        ))
    }

    /// The outcome of a change, unless the root went meanwhile ([`root::Root::present`]): then
    /// [`StorageError::RootGone`], whatever the change did, so no write done in a directory
    /// that is no longer the root is acknowledged, and one that failed because the root went
    /// says so.
    fn unless_root_gone<T>(&self, outcome: Result<T>) -> Result<T> {
        match self.root.present() {
            Err(StorageError::RootGone) => Err(StorageError::RootGone),
            _ => outcome,
        }
    }

    /// Turns kept digests off if the volume's timestamps are whole seconds, and on a FUSE
    /// volume (`fuse`) also looks whether a sync moves them ([`digest::probe_timestamps`]);
    /// true when they are off.
    pub fn probe_timestamps(&self, fuse: bool) -> bool {
        digest::probe_timestamps(self.root.dir(), fuse)
    }

    /// Settles what crashed processes left anywhere under the root; returns how many.
    pub fn sweep(&self) -> usize {
        sweep::sweep(self.root.dir())
    }

    /// One retention pass ([`expire::pass`]) of `rules`, with the whole-root walk for abandoned
    /// temp files when `temp_walk`; `removed` hears of every file removed.
    pub fn expire(&self, rules: &[expire::Rule], temp_walk: bool, removed: &mut dyn FnMut(&expire::Removal)) -> usize {
        if self.root.present().is_err() {
            return 0;
        }
        expire::pass(&self.root, rules, temp_walk, removed)
    }

    /// Free bytes on the storage volume.
    pub fn free_bytes(&self) -> io::Result<u64> {
        self.root.dir().free_bytes()
    }

    /// The storage volume's size and use, in bytes and inodes.
    pub fn volume_usage(&self) -> io::Result<VolumeUsage> {
        self.root.dir().volume_usage()
    }
}

/// Most times a commit (POST or append) starts over because the name or its directory changed
/// under it: another writer racing on them. Beyond it the request fails rather than spin.
pub(crate) const MAX_COMMIT_ATTEMPTS: usize = 16;

/// The error of a commit that started over [`MAX_COMMIT_ATTEMPTS`] times.
pub(crate) fn commit_kept_racing() -> StorageError {
    StorageError::Io(io::Error::other("the file kept appearing and vanishing"))
}

/// A path's parent directory and final name.
pub(crate) fn split(path: &Path) -> Result<(&Path, &OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(StorageError::RootRefused),
    }
}

/// The committed state of the file `name` in `parent` (relative to the root): `None` if it
/// (or its directory) does not exist, else the open file, its metadata and committed length.
pub(crate) fn committed_state(root: &root::Root, parent: &Path, name: &OsStr) -> Result<Option<lock::Committed>> {
    let dir = match root.open_dir(parent) {
        Ok(dir) => dir,
        Err(StorageError::NotFound | StorageError::NotADirectory) => return Ok(None),
        Err(e) => return Err(e),
    };
    lock::committed(&dir, name)
}

/// Copies `body` into `file` through a [`COPY_BUF_BYTES`] buffer, telling a failure to read the
/// body ([`StorageError::Source`]) from a failure to write the file.
pub(crate) fn copy_into(body: &mut dyn Read, file: &File) -> Result<u64> {
    struct Tracked<'a> {
        inner: &'a mut dyn Read,
        failed: bool,
    }
    impl Read for Tracked<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            // io::copy makes an interrupted read again: that is no failure of the body.
            self.inner
                .read(buf)
                .inspect_err(|e| self.failed = e.kind() != io::ErrorKind::Interrupted)
        }
    }
    let mut src = Tracked {
        inner: body,
        failed: false,
    };
    // io::copy reads straight into the BufWriter's spare capacity, so bytes are copied once:
    // socket -> buffer -> file.
    let mut dst = BufWriter::with_capacity(COPY_BUF_BYTES, file);
    let result = io::copy(&mut src, &mut dst).and_then(|n| dst.flush().map(|()| n));
    if result.is_err() {
        // Drop what is still buffered rather than let BufWriter's drop write it.
        let _ = dst.into_parts();
    }
    match result {
        Ok(n) => Ok(n),
        Err(e) if src.failed => Err(StorageError::Source(e)),
        Err(e) => Err(StorageError::from_io(e)),
    }
}

/// A fresh, empty directory for a unit test.
#[cfg(test)]
pub(crate) fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("http-nas-unit-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create test dir");
    dir
}

/// A fresh, empty storage root for a unit test: its path and its handle.
#[cfg(test)]
pub(crate) fn test_root(name: &str) -> (PathBuf, root::Root) {
    let dir = fs::canonicalize(test_dir(name)).expect("canonical test dir");
    let root = root::Root::open(dir.clone()).expect("open test root");
    (dir, root)
}

/// A request body whose client vanishes: every read fails (for unit tests).
#[cfg(test)]
pub(crate) struct Broken;

#[cfg(test)]
impl Read for Broken {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::new(io::ErrorKind::UnexpectedEof, "client went away"))
    }
}
