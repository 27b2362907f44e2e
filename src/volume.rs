//! What the storage volume is, read from `/proc/self/mountinfo` at start, and what the log
//! should tell an operator about running several replicas on it.
//!
//! Several replicas on one ReadWriteMany volume need locks that hold across clients, atomic
//! renames, and close-to-open consistency or stricter (docs/operations.md, "Several replicas"). Some of that
//! shows in the mount options and is checked here (NFS attribute and lookup caching); some
//! cannot be seen from inside the pod (GlusterFS's volume options, the FUSE mount's timeouts),
//! and the log says so rather than guess.
//!
//! JuiceFS is the one FUSE filesystem whose client caches can be read from inside the pod: its
//! mount root holds a `.config` (JSON, readable by root only) with the attribute, entry and
//! dir-entry timeouts and the open cache the client runs with; without root, its `.stats`
//! (readable by all) shows whether a burst of `fstat` calls reached the client, i.e. whether
//! the kernel caches attributes. With any cache on, a
//! replica can read a size another replica has since grown and append over its records, so
//! such a replica registers itself ([`Presence`], a locked file under `.http-nas-replicas/` in
//! the root) and refuses to go ready while another replica is live on the same storage: one
//! replica is safe with any options, several are not.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::storage::dir::{self, Access, Dir};
use crate::storage::lock;

/// The directory under the storage root where each replica on a caching JuiceFS mount keeps its
/// presence file (in the reserved namespace: hidden from clients, swept of dead replicas' files).
pub const PRESENCE_DIR: &str = ".http-nas-replicas";
/// Name prefix of a presence file; the rest is random.
pub const PRESENCE_PREFIX: &str = ".http-nas-replica-";
/// Where a JuiceFS client keeps deleted files, at its mount's root (`--trash-days`).
pub const JUICEFS_TRASH: &str = ".trash";
/// The JuiceFS client options several replicas need (docs/operations.md, "Several replicas").
/// `--negative-entry-cache` (default 0) and `--writeback` (default off) must stay so too.
pub const JUICEFS_STRICT_OPTIONS: &str = "--attr-cache=0 --entry-cache=0 --dir-entry-cache=0 --open-cache=0";

/// The mount a path lives on: its filesystem type and its mount and super-block options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub point: String,
    /// The directory of the filesystem mounted there (`/` for its root; a subdirectory for a
    /// bind mount of one, as the JuiceFS CSI driver gives each dynamically provisioned volume).
    pub root: String,
    /// Filesystem type (`ext4`, `nfs4`, `fuse.glusterfs`, `ceph`...).
    pub fstype: String,
    /// Mount options and super-block options, together.
    pub options: Vec<String>,
}

/// The mount holding `path` (canonical), from the text of `/proc/self/mountinfo`: the entry
/// with the longest mount point that is a prefix of it.
pub fn mount_of(path: &Path, mountinfo: &str) -> Option<Mount> {
    let mut best: Option<Mount> = None;
    for line in mountinfo.lines() {
        // id parent major:minor root point options [optional...] - fstype source super-options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(point), Some(options), Some(fstype)) =
            (fields.get(3), fields.get(4), fields.get(5), right.first())
        else {
            continue;
        };
        let point = point.replace("\\040", " ");
        if !path.starts_with(&point) || best.as_ref().is_some_and(|b| b.point.len() >= point.len()) {
            continue;
        }
        let mut all: Vec<String> = options.split(',').map(str::to_string).collect();
        if let Some(sup) = right.get(2) {
            all.extend(sup.split(',').map(str::to_string));
        }
        best = Some(Mount {
            point,
            root: root.replace("\\040", " "),
            fstype: fstype.to_string(),
            options: all,
        });
    }
    best
}

/// What to tell an operator about several replicas on `mount`: `None` where nothing needs
/// saying (a local filesystem serves one replica, or several in one pod, as it should).
pub fn replica_advice(mount: &Mount) -> Option<String> {
    let has = |o: &str| mount.options.iter().any(|x| x == o);
    let value = |key: &str| {
        mount
            .options
            .iter()
            .find_map(|x| x.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    };
    match mount.fstype.as_str() {
        "nfs" | "nfs4" => {
            let no_attr_cache = has("noac") || (value("acregmax") == Some("0") && value("acdirmax") == Some("0"));
            let no_lookup_cache = value("lookupcache") == Some("none");
            if no_attr_cache && no_lookup_cache {
                None
            } else {
                Some(format!(
                    "the storage is on NFS ({}) with attribute or lookup caching: several replicas \
                     need it mounted with actimeo=0 (or noac) and lookupcache=none, else one may \
                     read another's stale sizes and names (docs/operations.md, \"Several replicas\")",
                    mount.point
                ))
            }
        }
        "fuse.glusterfs" => Some(format!(
            "the storage is on GlusterFS ({}): several replicas need the strict profile (volume \
             caching translators off; mounts with direct-io-mode=enable and attribute, entry and \
             negative timeouts 0), which cannot be checked from here \
             (docs/operations.md, \"Several replicas\")",
            mount.point
        )),
        "fuse.juicefs" => Some(juicefs_advice(mount, &juicefs_profile(mount, Path::new(&mount.point)))),
        "ceph" | "fuse.ceph-fuse" => None,
        t if t.starts_with("fuse") => Some(format!(
            "the storage is on a FUSE filesystem ({t} at {}): several replicas need it to honour \
             flock across clients and rename atomically (docs/operations.md, \"Several replicas\")",
            mount.point
        )),
        "cifs" | "smb3" => Some(format!(
            "the storage is on SMB ({}): flock locks are local to this client there, so run a \
             single replica (docs/operations.md, \"Several replicas\")",
            mount.point
        )),
        _ => None,
    }
}

/// What a JuiceFS client caches, from its mount's `.config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheProfile {
    /// Attribute, entry and dir-entry timeouts and the open cache all 0.
    Strict,
    /// Some cache is on: which, as the mount flags that set them (`attr-cache=1s`...).
    Caching(String),
    /// The options could not be read, and why.
    Unknown(String),
}

/// The cache profile of the JuiceFS mount `mount` holding the storage `root`: from its
/// `.config` where that can be read (as root), else from what its `.stats` shows of a probe.
pub fn juicefs_profile(mount: &Mount, root: &Path) -> CacheProfile {
    let path = Path::new(&mount.point).join(".config");
    match std::fs::read_to_string(&path) {
        Ok(text) => profile_of_config(&text),
        Err(e) => {
            let unread = format!("{} cannot be read here: {e}", path.display());
            match attr_cache_probe(mount, root) {
                Some(Ok(())) => CacheProfile::Unknown(format!(
                    "{unread}; .stats shows the attribute cache off, but not the entry caches"
                )),
                Some(Err(seen)) => CacheProfile::Caching(seen),
                None => CacheProfile::Unknown(unread),
            }
        }
    }
}

/// `fstat`s per probe of the attribute cache.
const PROBE_STATS: u64 = 8;
/// Probes of the attribute cache; one that sees it on is enough.
const PROBE_ROUNDS: usize = 3;

/// Whether the kernel caches attributes on the JuiceFS mount, seen without root: `.stats`
/// (readable by all) counts the GETATTR requests that reach the client, and with
/// `attr-cache=0` every `fstat` of the root is one; with a cache, a burst of them is answered
/// by the kernel. Other traffic on the mount only adds to the count, so a burst that reached
/// the client fewer times than it was made is a cache, never noise. `None` where `.stats`
/// cannot be read or shows no count; `Ok` for no cache seen; `Err` with what was seen.
fn attr_cache_probe(mount: &Mount, root: &Path) -> Option<Result<(), String>> {
    let stats = Path::new(&mount.point).join(".stats");
    let getattrs = || {
        let text = std::fs::read_to_string(&stats).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("juicefs_fuse_ops_total_getattr "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    };
    let dir = File::open(root).ok()?;
    for _ in 0..PROBE_ROUNDS {
        let before = getattrs()?;
        for _ in 0..PROBE_STATS {
            dir.metadata().ok()?;
        }
        let reached = getattrs()?.saturating_sub(before);
        if reached < PROBE_STATS {
            return Some(Err(format!(
                "attr-cache on ({PROBE_STATS} fstat calls reached the client {reached} times, from .stats)"
            )));
        }
    }
    Some(Ok(()))
}

/// The cache profile a JuiceFS `.config` (JSON; durations in nanoseconds) describes: the
/// kernel's attribute, entry, dir-entry and negative-entry caches, the client's open cache, and
/// its write-back cache (`--writeback`: an acknowledged write sits in the local cache dir, where
/// no other client sees it, until uploaded).
pub fn profile_of_config(text: &str) -> CacheProfile {
    let Ok(config) = serde_json::from_str::<serde_json::Value>(text) else {
        return CacheProfile::Unknown("its .config is not JSON".into());
    };
    let settings = [
        ("attr-cache", config.get("AttrTimeout")),
        ("entry-cache", config.get("EntryTimeout")),
        ("dir-entry-cache", config.get("DirEntryTimeout")),
        ("negative-entry-cache", config.get("NegEntryTimeout")),
        ("open-cache", config.pointer("/Meta/OpenCache")),
    ];
    let mut on = Vec::new();
    for (flag, value) in settings {
        let Some(ns) = value.and_then(serde_json::Value::as_u64) else {
            return CacheProfile::Unknown(format!("its .config does not say {flag}"));
        };
        if ns > 0 {
            on.push(format!("{flag}={}s", ns as f64 / 1e9));
        }
    }
    match config.pointer("/Chunk/Writeback").and_then(serde_json::Value::as_bool) {
        Some(false) => {}
        Some(true) => on.push("writeback".into()),
        None => return CacheProfile::Unknown("its .config does not say writeback".into()),
    }
    if on.is_empty() {
        CacheProfile::Strict
    } else {
        CacheProfile::Caching(on.join(" "))
    }
}

/// How many days the JuiceFS volume whose `.config` is `text` keeps deleted files in its
/// `.trash` (`Format.TrashDays`; 0: none), where it says.
pub fn trash_days(text: &str) -> Option<u64> {
    let config = serde_json::from_str::<serde_json::Value>(text).ok()?;
    config.pointer("/Format/TrashDays")?.as_u64()
}

/// The start-up advice for a JuiceFS mount with `profile`.
fn juicefs_advice(mount: &Mount, profile: &CacheProfile) -> String {
    let need = format!(
        "several replicas need every client mounted with {JUICEFS_STRICT_OPTIONS} (else one reads a size \
         another has since grown, and an acknowledged append is lost or written twice); one replica is \
         safe with any options (docs/operations.md, \"Several replicas\")"
    );
    match profile {
        CacheProfile::Strict => format!(
            "the storage is on JuiceFS ({}) with attribute, entry, dir-entry, negative-entry and open \
             caches and write-back off: fit for several replicas",
            mount.point
        ),
        CacheProfile::Caching(on) => format!(
            "the storage is on JuiceFS ({}) with {on}: {need}; this replica will not go ready while \
             another replica is live on this storage",
            mount.point
        ),
        CacheProfile::Unknown(why) => format!(
            "the storage is on JuiceFS ({}): {need}; the options could not be checked ({why})",
            mount.point
        ),
    }
}

/// What the start-up look at a JuiceFS volume found, for the replica guard and the storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JuiceFs {
    /// Why several replicas are unsafe on it, where known (its client caches are on): this
    /// replica then refuses readiness and writes while another replica is live. `None` where
    /// its options are strict or cannot be read; it registers its presence all the same, so a
    /// caching replica beside it sees it.
    pub hazard: Option<String>,
    /// The storage root is the JuiceFS mount's root, where the client's own `.trash` (and
    /// `.config`, `.stats`, `.accesslog`) live.
    pub at_mount_root: bool,
}

/// What start-up learns of the volume from its mount ([`log_volume`]).
#[derive(Default)]
pub struct Volume {
    /// On JuiceFS, what the replica guard needs to know: every replica on JuiceFS registers
    /// its presence, whatever its own options.
    pub juicefs: Option<JuiceFs>,
    /// A FUSE filesystem: one that may write back on `fsync` and move a file's modification
    /// time then.
    pub fuse: bool,
}

/// Logs what the volume at `root` is, and any advice for running several replicas on it;
/// returns what the rest of start-up needs of it ([`Volume`]).
pub fn log_volume(root: &Path) -> Volume {
    let Some(mount) = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|info| mount_of(root, &info))
    else {
        return Volume::default();
    };
    log::info!("storage volume: {} mounted at {}", mount.fstype, mount.point);
    let fuse = mount.fstype.starts_with("fuse");
    if mount.fstype == "fuse.juicefs" {
        return Volume {
            juicefs: Some(log_juicefs(&mount, root)),
            fuse,
        };
    }
    if let Some(advice) = replica_advice(&mount) {
        log::warn!("{advice}");
    }
    Volume { juicefs: None, fuse }
}

/// [`log_volume`] for a JuiceFS mount.
fn log_juicefs(mount: &Mount, root: &Path) -> JuiceFs {
    if mount.root != "/" {
        // A bind mount of a subdirectory: `.config` and `.stats` are only at the mount's own
        // root, and a file of that name here is anybody's.
        log::warn!(
            "the storage is on JuiceFS ({}), a bind mount of its directory {} (as the JuiceFS CSI driver \
             mounts a dynamically provisioned volume): the client's cache options cannot be checked from \
             a subdirectory mount, so this replica cannot refuse readiness beside another; several \
             replicas need every client mounted with {JUICEFS_STRICT_OPTIONS} (on CSI: the StorageClass's \
             mountOptions, the only protection there), else an acknowledged append can be lost \
             (docs/operations.md, \"Several replicas\")",
            mount.point,
            mount.root
        );
        return JuiceFs {
            hazard: None,
            at_mount_root: false,
        };
    }
    if let Some(days) = std::fs::read_to_string(Path::new(&mount.point).join(".config"))
        .ok()
        .as_deref()
        .and_then(trash_days)
        .filter(|&days| days > 0)
    {
        log::warn!(
            "the JuiceFS volume keeps deleted files in its .trash for {days} day(s): a file deleted through \
             this service stays on the volume (readable by whoever can read the mount's .trash) and keeps \
             its space; set `juicefs config META-URL --trash-days 0` (the service hides .trash at the \
             mount's root; docs/operations.md, \"Several replicas\")"
        );
    }
    let profile = juicefs_profile(mount, root);
    let advice = juicefs_advice(mount, &profile);
    let hazard = match profile {
        CacheProfile::Strict => {
            log::info!("{advice}");
            None
        }
        CacheProfile::Caching(on) => {
            log::warn!("{advice}");
            Some(format!(
                "the storage is on JuiceFS mounted with client caches on ({on}) and another replica \
                 is live on it: several replicas need {JUICEFS_STRICT_OPTIONS} on every mount, \
                 else acknowledged appends can be lost (docs/operations.md, \"Several replicas\")"
            ))
        }
        CacheProfile::Unknown(_) => {
            log::warn!("{advice}");
            None
        }
    };
    JuiceFs {
        hazard,
        at_mount_root: root == Path::new(&mount.point),
    }
}

/// Name prefix of a presence file being made: created, opened to all, locked, and only then
/// renamed to a [`PRESENCE_PREFIX`] name, so no other replica ever sees a presence file that
/// is not yet locked (and takes it for a dead replica's).
pub const JOINING_PREFIX: &str = ".http-nas-joining-";
/// Mode of the presence directory: every replica, whatever its uid, creates its file there.
const PRESENCE_DIR_MODE: u32 = 0o777;
/// Mode of a presence file: every replica, whatever its uid, opens it to test its lock.
const PRESENCE_FILE_MODE: u32 = 0o644;
/// An unlocked [`JOINING_PREFIX`] file older than this is a crashed joiner's, and is removed.
const JOINING_STALE_SECS: i64 = 30;

/// This replica's presence on the storage: an exclusively locked file under [`PRESENCE_DIR`],
/// held for the life of the process (the lock goes with it, also on `kill -9`), so another
/// replica can tell a live one from a dead one's leftover by trying the lock.
#[derive(Debug)]
pub struct Presence {
    root: Dir,
    dir: Dir,
    /// Device and inode of `dir`, to tell it from another directory made at its name.
    dir_id: (u64, u64),
    own: OsString,
    /// Holds the lock.
    file: File,
}

/// An `io::Error` of `e`'s kind saying what was being done.
fn context(e: io::Error, doing: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{doing}: {e}"))
}

impl Presence {
    /// Registers this replica under `root`.
    pub fn register(root: &Path) -> io::Result<Presence> {
        let root = Dir::open(root).map_err(|e| context(e, "opening the storage root"))?;
        let name = OsStr::new(PRESENCE_DIR);
        let dir = match open_or_create_dir(&root, name) {
            // Something that is not a directory at the reserved name (a file, a symlink: planted,
            // never ours): removed, and the directory made.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
                root.remove_file(name)
                    .map_err(|e| context(e, &format!("removing a non-directory at {PRESENCE_DIR}")))?;
                open_or_create_dir(&root, name)
            }
            other => other,
        }
        .map_err(|e| context(e, &format!("opening {PRESENCE_DIR} in the storage root")))?;
        let meta = dir.metadata()?;
        if meta.permissions().mode() & 0o777 != PRESENCE_DIR_MODE {
            // Only its owner may (a directory left 0755 by an earlier version); the others then
            // fail below, and say so.
            let _ = dir.set_mode(PRESENCE_DIR_MODE);
        }
        let joining = OsString::from(dir::random_name(JOINING_PREFIX)?);
        let file = dir
            .create_new(&joining)
            .map_err(|e| context(e, &format!("creating a presence file in {PRESENCE_DIR}")))?;
        let own = OsString::from(dir::random_name(PRESENCE_PREFIX)?);
        let placed = (|| {
            file.set_permissions(std::fs::Permissions::from_mode(PRESENCE_FILE_MODE))?;
            if !lock::try_exclusive(&file)? {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "a fresh presence file was locked",
                ));
            }
            dir.rename_noreplace(&joining, &dir, &own)
                .or_else(|e| match e.raw_os_error() {
                    Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => dir.rename(&joining, &dir, &own),
                    _ => Err(e),
                })
        })();
        if let Err(e) = placed {
            let _ = dir.remove_file(&joining);
            return Err(context(e, &format!("setting up a presence file in {PRESENCE_DIR}")));
        }
        Ok(Presence {
            root,
            dir,
            dir_id: (meta.dev(), meta.ino()),
            own,
            file,
        })
    }

    /// True while this replica's name in [`PRESENCE_DIR`] still refers to its locked file and
    /// the directory at that name in the root is still the one it registered in (a cleanup may
    /// have removed either: the replica must then register again, else others miss it).
    pub fn still_registered(&self) -> io::Result<bool> {
        let dir_now = match self.root.stat(OsStr::new(PRESENCE_DIR)) {
            Ok(st) => st,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if !dir_now.is_dir() || (dir_now.dev, dir_now.ino) != self.dir_id {
            return Ok(false);
        }
        match self.dir.stat(&self.own) {
            Ok(st) => Ok(st.is(&self.file.metadata()?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// How many other replicas are live on this storage now: presence files whose lock is
    /// held. A dead replica's file (its lock free) is removed on the way, and so is anything at
    /// a presence name that is not a regular file this replica can open (a symlink, a
    /// directory, an unreadable file: never a live replica's, which are regular files open to
    /// all); each such thing is logged, saying what it was.
    pub fn others_live(&self) -> io::Result<usize> {
        let mut live = 0;
        for entry in self.dir.entries()? {
            let (name, _, _) = entry?;
            let text = name.to_string_lossy();
            let joining = text.starts_with(JOINING_PREFIX);
            if name == self.own || !(joining || text.starts_with(PRESENCE_PREFIX)) {
                continue;
            }
            let st = match self.dir.stat(&name) {
                Ok(st) => st,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if !st.is_file() {
                let what = if st.is_symlink() {
                    "a symlink"
                } else if st.is_dir() {
                    "a directory"
                } else {
                    "a special file"
                };
                self.remove_odd(&name, &format!("{what}, not a presence file"), st.is_dir());
                continue;
            }
            let file = match self.dir.open_file(&name, Access::Lock) {
                Ok(file) => file,
                // Removed by its owner or another replica meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    self.remove_odd(&name, &format!("a file this replica cannot open ({e})"), false);
                    continue;
                }
            };
            if !lock::try_exclusive(&file)? {
                live += 1;
                continue;
            }
            // Unlocked: a dead replica's (a live one never frees it), removed under its lock;
            // a joining file only once it is old (one just created is locked an instant later).
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            if !joining || now.saturating_sub(st.mtime.0) > JOINING_STALE_SECS {
                let still = file
                    .metadata()
                    .is_ok_and(|meta| self.dir.stat(&name).is_ok_and(|now| now.is(&meta)));
                if still {
                    let _ = self.dir.remove_file(&name);
                }
            }
        }
        Ok(live)
    }

    /// Removes `name`, found in the presence directory and not a presence file (`what`), and
    /// logs what it was and whether it could go.
    fn remove_odd(&self, name: &OsStr, what: &str, is_dir: bool) {
        let removed = if is_dir {
            self.dir.remove_dir(name)
        } else {
            self.dir.remove_file(name)
        };
        let outcome = match removed {
            Ok(()) => "removed it".to_string(),
            Err(e) => format!("could not remove it ({e}); it is skipped"),
        };
        log::warn!(
            "{PRESENCE_DIR}/{} in the storage root is {what}: {outcome}",
            name.to_string_lossy()
        );
    }
}

/// Opens the directory `name` in `root` if it is there, else makes it with mode
/// [`PRESENCE_DIR_MODE`] whatever the umask; opens it (never through a symlink).
fn open_or_create_dir(root: &Dir, name: &OsStr) -> io::Result<Dir> {
    match root.create_dir(name) {
        Ok(()) => {
            let dir = root.open_dir(name)?;
            dir.set_mode(PRESENCE_DIR_MODE)?;
            Ok(dir)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => root.open_dir(name),
        Err(e) => Err(e),
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        if self.still_registered().unwrap_or(false) {
            let _ = self.dir.remove_file(&self.own);
        }
    }
}

/// The replica guard on a JuiceFS volume: this replica's presence, registered again whenever
/// it is found gone, and why several replicas are unsafe here, where they are.
#[derive(Debug)]
pub struct ReplicaGuard {
    root: std::path::PathBuf,
    hazard: Option<String>,
    /// The presence, or why it could not be registered; and when it was last registered again.
    presence: Mutex<(Result<Presence, String>, Option<Instant>)>,
}

/// How long a replica that registered again (its presence file was removed, by a cleanup of
/// the volume, say) refuses before it trusts a count of none: the cleanup took the others'
/// files too, and each registers again only at its own next check.
pub const REJOIN_GRACE: Duration = Duration::from_secs(3);

impl ReplicaGuard {
    /// Registers this replica's presence under `root`; `hazard` says why several replicas are
    /// unsafe on it, where they are (then readiness is refused while another is live).
    pub fn new(root: &Path, hazard: Option<String>) -> ReplicaGuard {
        let presence = Presence::register(root).map_err(|e| {
            log::warn!("could not register this replica's presence on the storage: {e}");
            e.to_string()
        });
        ReplicaGuard {
            root: root.to_path_buf(),
            hazard,
            presence: Mutex::new((presence, None)),
        }
    }

    /// One periodic check: registers again where the presence file or its directory is gone
    /// or replaced, and returns why this replica must refuse readiness and writes now, if it
    /// must (another replica live beside a caching profile, or, failing closed, no way to
    /// tell).
    pub fn check(&self) -> Option<String> {
        let mut state = self.presence.lock().unwrap_or_else(|p| p.into_inner());
        let (presence, rejoined) = &mut *state;
        let gone = match &*presence {
            Ok(p) => match p.still_registered() {
                Ok(true) => None,
                Ok(false) => Some("was removed or replaced".to_string()),
                Err(e) => Some(format!("could not be checked ({e})")),
            },
            Err(_) => Some(String::new()),
        };
        if let Some(why) = gone {
            let was = presence.is_ok();
            *presence = Presence::register(&self.root).map_err(|e| e.to_string());
            if presence.is_ok() {
                *rejoined = Some(Instant::now());
            }
            match (&*presence, was) {
                (Ok(_), true) => log::warn!("this replica's presence file in {PRESENCE_DIR} {why}: registered again"),
                (Ok(_), false) => log::info!("registered this replica's presence on the storage"),
                (Err(e), true) => log::warn!(
                    "this replica's presence file in {PRESENCE_DIR} {why}, and registering again failed: {e}"
                ),
                (Err(_), false) => {}
            }
        }
        let hazard = self.hazard.as_ref()?;
        match &*presence {
            Err(e) => Some(format!(
                "the storage is on JuiceFS mounted with client caches on, and this replica could not \
                 register its presence on it ({e}), so it cannot tell whether other replicas are live: \
                 make {PRESENCE_DIR} in the storage root a directory every replica may write (mode 0777), \
                 or mount with {JUICEFS_STRICT_OPTIONS} (docs/operations.md, \"Several replicas\")"
            )),
            Ok(p) => match p.others_live() {
                Ok(0) if rejoined.is_some_and(|at| at.elapsed() < REJOIN_GRACE) => Some(format!(
                    "the storage is on JuiceFS mounted with client caches on, and this replica's presence \
                     file in {PRESENCE_DIR} was removed: it registered again and waits {} s for the other \
                     live replicas to do so before it trusts a count of none",
                    REJOIN_GRACE.as_secs()
                )),
                Ok(0) => None,
                Ok(n) => Some(format!("{hazard} ({n} other replica(s) live)")),
                Err(e) => Some(format!(
                    "the storage is on JuiceFS mounted with client caches on, and this replica could \
                     not count the live replicas in {PRESENCE_DIR} ({e}), so it cannot tell whether \
                     another is live (docs/operations.md, \"Several replicas\")"
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 0:35 / /mnt/storage rw,relatime shared:20 - nfs4 10.0.0.2:/export rw,vers=4.2,acregmin=3,acregmax=60,acdirmin=30,acdirmax=60,lookupcache=all
41 22 0:36 / /mnt/strict rw,relatime shared:21 - nfs4 10.0.0.2:/export rw,vers=4.2,acregmin=0,acregmax=0,acdirmin=0,acdirmax=0,lookupcache=none
42 22 0:37 / /mnt/gluster rw,relatime shared:22 - fuse.glusterfs 127.0.0.1:httpnas rw,user_id=0
43 22 0:38 / /mnt/with\\040space rw shared:23 - cifs //srv/share rw
a line that is not one
";

    #[test]
    fn finds_the_deepest_mount_and_its_options() {
        let m = mount_of(Path::new("/mnt/storage/data"), MOUNTINFO).unwrap();
        assert_eq!((m.point.as_str(), m.fstype.as_str()), ("/mnt/storage", "nfs4"));
        assert!(m.options.iter().any(|o| o == "lookupcache=all"));
        assert_eq!(mount_of(Path::new("/srv"), MOUNTINFO).unwrap().fstype, "ext4");
        assert_eq!(
            mount_of(Path::new("/mnt/with space/x"), MOUNTINFO).unwrap().fstype,
            "cifs"
        );
        assert_eq!(mount_of(Path::new("/mnt/storagex"), MOUNTINFO).unwrap().fstype, "ext4");
    }

    #[test]
    fn advice_for_each_kind_of_volume() {
        let advice = |p: &str| replica_advice(&mount_of(Path::new(p), MOUNTINFO).unwrap());
        assert!(advice("/mnt/storage").unwrap().contains("lookupcache=none"));
        assert_eq!(advice("/mnt/strict"), None);
        assert!(advice("/mnt/gluster").unwrap().contains("strict profile"));
        assert!(advice("/mnt/with space").unwrap().contains("single replica"));
        assert_eq!(advice("/"), None);
    }

    #[test]
    fn presence_counts_the_live_replicas_and_clears_a_dead_ones_file() {
        let root = std::env::temp_dir().join(format!("http-nas-presence-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let a = Presence::register(&root).unwrap();
        assert_eq!(a.others_live().unwrap(), 0, "alone");
        // flock locks belong to the open file, so a second registration in this process
        // stands for another replica.
        let b = Presence::register(&root).unwrap();
        assert_eq!((a.others_live().unwrap(), b.others_live().unwrap()), (1, 1));
        // A dead replica's file: there, but nobody holds its lock.
        let dead = root.join(PRESENCE_DIR).join(format!("{PRESENCE_PREFIX}dead"));
        std::fs::write(&dead, "").unwrap();
        assert_eq!(a.others_live().unwrap(), 1, "a dead replica counted");
        assert!(!dead.exists(), "a dead replica's file left");
        drop(b);
        assert_eq!(a.others_live().unwrap(), 0, "a replica gone still counted");
        drop(a);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_juicefs_config_tells_its_cache_profile() {
        let config = |attr: u64, entry: u64, dir: u64, open: u64| {
            format!(
                r#"{{"Meta": {{"OpenCache": {open}, "Heartbeat": 12000000000}}, "AttrTimeout": {attr},
                "DirEntryTimeout": {dir}, "NegEntryTimeout": 0, "EntryTimeout": {entry},
                "Chunk": {{"Writeback": false}}}}"#
            )
        };
        assert_eq!(profile_of_config(&config(0, 0, 0, 0)), CacheProfile::Strict);
        assert_eq!(
            profile_of_config(&config(1_000_000_000, 1_000_000_000, 1_000_000_000, 0)),
            CacheProfile::Caching("attr-cache=1s entry-cache=1s dir-entry-cache=1s".into())
        );
        assert_eq!(
            profile_of_config(&config(0, 0, 0, 500_000_000)),
            CacheProfile::Caching("open-cache=0.5s".into())
        );
        assert!(matches!(profile_of_config("{}"), CacheProfile::Unknown(_)));
        // Strict timeouts with --writeback or --negative-entry-cache are not fit for several.
        let strict = config(0, 0, 0, 0);
        assert_eq!(
            profile_of_config(&strict.replace(r#""Writeback": false"#, r#""Writeback": true"#)),
            CacheProfile::Caching("writeback".into())
        );
        assert_eq!(
            profile_of_config(&strict.replace(r#""NegEntryTimeout": 0"#, r#""NegEntryTimeout": 2000000000"#)),
            CacheProfile::Caching("negative-entry-cache=2s".into())
        );
        assert_eq!(trash_days(r#"{"Format": {"TrashDays": 1}}"#), Some(1));
        assert_eq!(trash_days("{}"), None);
        assert!(matches!(profile_of_config("not json"), CacheProfile::Unknown(_)));
    }
}
