//! Filesystems mounted for one test: a tmpfs (small, or short of inodes, to fill), or a fresh
//! loop-mounted ext4 of its own (made with the `mkfs.ext4` options a test needs, and throttled
//! or not). Each is unmounted on drop, also when the test panics. Mounting needs root; where it
//! cannot be done, the constructor says why, and the test says `skipped:` with that reason.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::TempDir;

/// Dirty-page budget of a throttled disk's backing device, in bytes.
pub const THROTTLE_DIRTY_BYTES: u64 = 256 << 10;
/// Size of the crash tests' disk images, in MiB.
pub const CRASH_DISK_MIB: u64 = 768;

/// A filesystem mounted under a fresh temp dir; unmounted on drop.
pub struct Mounted {
    /// Removed (after the unmount in `drop`) when the `Mounted` goes.
    _dir: TempDir,
    mountpoint: PathBuf,
    root: PathBuf,
}

impl Mounted {
    /// A tmpfs mounted with `options` (`"size=2m"`, `"size=1m,nr_inodes=16"`); the storage root
    /// is the mount point itself.
    pub fn tmpfs(options: &str) -> Result<Mounted, String> {
        must_be_root("a tmpfs")?;
        let dir = TempDir::new();
        let mountpoint = dir.path().join("root");
        fs::create_dir(&mountpoint).map_err(|e| format!("mkdir {}: {e}", mountpoint.display()))?;
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(&mountpoint))?;
        let root = mountpoint.clone();
        Ok(Mounted {
            _dir: dir,
            mountpoint,
            root,
        })
    }

    /// A fresh ext4 of `image_mib` MiB made with `mkfs.ext4 -q -F MKFS_OPTIONS`, loop-mounted;
    /// the storage root is a directory `root` on it (beside `lost+found`). With `dirty_limit`,
    /// its backing device may hold only that many bytes of dirty pages (`strict_limit`), so
    /// writers sleep in `balance_dirty_pages` between pages; without, it has no such limit.
    /// Loop devices are reused, so the limit is set (or reset) on every mount.
    pub fn ext4(image_mib: u64, mkfs_options: &[&str], dirty_limit: Option<u64>) -> Result<Mounted, String> {
        must_be_root("a loop device")?;
        let dir = TempDir::new();
        let image = dir.path().join("disk.img");
        let mountpoint = dir.path().join("mnt");
        fs::create_dir(&mountpoint).map_err(|e| format!("mkdir: {e}"))?;
        run(Command::new("truncate")
            .args(["-s", &format!("{image_mib}M")])
            .arg(&image))?;
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .args(mkfs_options)
            .arg(&image))?;
        run(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&mountpoint))?;
        let root = mountpoint.join("root");
        let disk = Mounted {
            _dir: dir,
            mountpoint,
            root,
        };
        let device = run(Command::new("findmnt").args(["-no", "MAJ:MIN"]).arg(&disk.mountpoint))?;
        let bdi = Path::new("/sys/class/bdi").join(device.trim());
        let (strict, max_bytes) = match dirty_limit {
            Some(bytes) => ("1", bytes.to_string()),
            None => ("0", u32::MAX.to_string()),
        };
        fs::write(bdi.join("strict_limit"), strict).map_err(|e| format!("{}/strict_limit: {e}", bdi.display()))?;
        fs::write(bdi.join("max_bytes"), max_bytes).map_err(|e| format!("{}/max_bytes: {e}", bdi.display()))?;
        fs::create_dir(&disk.root).map_err(|e| format!("mkdir root: {e}"))?;
        Ok(disk)
    }

    /// The crash tests' throttled disk: its device may hold only [`THROTTLE_DIRTY_BYTES`] of
    /// dirty pages, so a kill can land inside one `write(2)`.
    pub fn throttled_disk() -> Result<Mounted, String> {
        Mounted::ext4(CRASH_DISK_MIB, &[], Some(THROTTLE_DIRTY_BYTES))
    }

    /// A plain disk of its own: a filesystem nothing else uses, where a freed inode number is
    /// reused at once.
    pub fn plain_disk() -> Result<Mounted, String> {
        Mounted::ext4(CRASH_DISK_MIB, &[], None)
    }

    /// The storage root on the filesystem.
    pub fn root(&self) -> PathBuf {
        self.root.clone()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.mountpoint).status();
        if !unmounted.is_ok_and(|s| s.success()) {
            // Still busy (a process we could not stop): detach it so the temp dir can go.
            let _ = Command::new("umount").arg("-l").arg(&self.mountpoint).status();
        }
    }
}

/// `Ok` as root, else why `what` cannot be mounted.
fn must_be_root(what: &str) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(format!("not running as root, cannot mount {what}"));
    }
    Ok(())
}

/// Runs a setup command; its stdout, or why it failed.
pub fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
