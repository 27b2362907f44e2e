//! What the storage volume is, read from `/proc/self/mountinfo` at start, and what the log
//! should tell an operator about running several replicas on it.
//!
//! Several replicas on one ReadWriteMany volume need locks that hold across clients, atomic
//! renames, and close-to-open consistency or stricter (docs/operations.md, "Several replicas"). Some of that
//! shows in the mount options and is checked here (NFS attribute and lookup caching); some
//! cannot be seen from inside the pod (GlusterFS's volume options, the FUSE mount's timeouts),
//! and the log says so rather than guess.

use std::path::Path;

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

/// Logs what the volume at `root` is, and any advice for running several replicas on it.
pub fn log_volume(root: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let Some(mount) = mount_of(root, &mountinfo) else {
        return;
    };
    log::info!("storage volume: {} mounted at {}", mount.fstype, mount.point);
    if let Some(advice) = replica_advice(&mount) {
        log::warn!("{advice}");
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
}
