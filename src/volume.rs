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
use std::path::Path;

use crate::storage::dir::{self, Access, Dir};
use crate::storage::lock;

/// The directory under the storage root where each replica on a caching JuiceFS mount keeps its
/// presence file (in the reserved namespace: hidden from clients, swept of dead replicas' files).
pub const PRESENCE_DIR: &str = ".http-nas-replicas";
/// Name prefix of a presence file; the rest is random.
pub const PRESENCE_PREFIX: &str = ".http-nas-replica-";
/// The JuiceFS client options several replicas need (docs/operations.md, "Several replicas").
/// `--negative-entry-cache` (default 0) and `--writeback` (default off) must stay so too.
pub const JUICEFS_STRICT_OPTIONS: &str = "--attr-cache=0 --entry-cache=0 --dir-entry-cache=0 --open-cache=0";

/// The mount a path lives on: its filesystem type and its mount and super-block options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub point: String,
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
        let (Some(point), Some(options), Some(fstype)) = (fields.get(4), fields.get(5), right.first()) else {
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

/// Logs what the volume at `root` is, and any advice for running several replicas on it.
/// Returns why several replicas would be unsafe on it, where that is known (a JuiceFS mount
/// whose `.config` shows client caches on): then the caller should refuse readiness while
/// another replica is live.
pub fn log_volume(root: &Path) -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mount_of(root, &mountinfo)?;
    log::info!("storage volume: {} mounted at {}", mount.fstype, mount.point);
    if mount.fstype == "fuse.juicefs" {
        let profile = juicefs_profile(&mount, root);
        let advice = juicefs_advice(&mount, &profile);
        return match profile {
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
    }
    if let Some(advice) = replica_advice(&mount) {
        log::warn!("{advice}");
    }
    None
}

/// This replica's presence on the storage: an exclusively locked file under [`PRESENCE_DIR`],
/// held for the life of the process (the lock goes with it, also on `kill -9`), so another
/// replica can tell a live one from a dead one's leftover by trying the lock.
#[derive(Debug)]
pub struct Presence {
    dir: Dir,
    own: OsString,
    /// Holds the lock.
    _file: File,
}

impl Presence {
    /// Registers this replica under `root`.
    pub fn register(root: &Path) -> io::Result<Presence> {
        let root = Dir::open(root)?;
        match root.create_dir(OsStr::new(PRESENCE_DIR)) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let dir = root.open_dir(OsStr::new(PRESENCE_DIR))?;
        let own = OsString::from(dir::random_name(PRESENCE_PREFIX)?);
        let file = dir.create_new(&own)?;
        if !lock::try_exclusive(&file)? {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "a fresh presence file was locked",
            ));
        }
        Ok(Presence { dir, own, _file: file })
    }

    /// How many other replicas are live on this storage now: presence files whose lock is
    /// held. A dead replica's file (its lock free) is removed on the way.
    pub fn others_live(&self) -> io::Result<usize> {
        let mut live = 0;
        for entry in self.dir.entries()? {
            let (name, _, _) = entry?;
            if name == self.own || !name.to_string_lossy().starts_with(PRESENCE_PREFIX) {
                continue;
            }
            let file = match self.dir.open_file(&name, Access::Lock) {
                Ok(file) => file,
                // Removed by its owner or another replica meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if lock::try_exclusive(&file)? {
                // A dead replica's: removed under its lock (a live one never frees it).
                let _ = self.dir.remove_file(&name);
            } else {
                live += 1;
            }
        }
        Ok(live)
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        let _ = self.dir.remove_file(&self.own);
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
        assert!(matches!(profile_of_config("not json"), CacheProfile::Unknown(_)));
    }
}
