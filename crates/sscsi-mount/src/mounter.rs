use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount tmpfs on {path}: {source}")]
    Mount { path: PathBuf, source: io::Error },
    #[error("unmount {path}: {source}")]
    Unmount { path: PathBuf, source: io::Error },
    #[error("read /proc/self/mountinfo: {0}")]
    MountInfo(io::Error),
}

/// Puts a memory-backed filesystem on a volume's target path.
///
/// Contract: `mount` is only called on a target that `is_mounted` reported
/// as not mounted; `unmount` of a path that is missing or not mounted
/// succeeds, so unpublish can be retried.
pub trait Mounter: Send + Sync + fmt::Debug {
    /// Whether `target` is already a tmpfs mount point. Any tmpfs counts, so
    /// volumes mounted by the upstream driver before a migration are kept.
    fn is_mounted(&self, target: &Path) -> Result<bool, MountError>;
    /// With `group`, the volume's root belongs to that group (`gid=`).
    fn mount(&self, target: &Path, group: Option<u32>) -> Result<(), MountError>;
    fn unmount(&self, target: &Path) -> Result<(), MountError>;
    /// False when files land on the node's disk instead of in memory.
    fn in_memory(&self) -> bool;
}

/// The real mounter: tmpfs via mount(2), needs CAP_SYS_ADMIN.
#[derive(Debug, Clone)]
pub struct TmpfsMounter {
    size_bytes: u64,
}

impl TmpfsMounter {
    /// `size_bytes` caps the volume (`size=`); upstream sets no cap, so a
    /// runaway provider could fill half the node's memory.
    pub fn new(size_bytes: u64) -> Self {
        Self { size_bytes }
    }
}

impl Mounter for TmpfsMounter {
    fn is_mounted(&self, target: &Path) -> Result<bool, MountError> {
        let target = match target.canonicalize() {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(MountError::MountInfo(e)),
        };
        // A mount point sits on another device than its parent, and statfs
        // names the filesystem of the topmost mount there: two stats and a
        // statfs instead of reading a mount table that grows with every
        // volume on the node (kubelet's IsLikelyNotMountPoint compares the
        // same devices).
        if let Some(parent) = target.parent() {
            use std::os::unix::fs::MetadataExt;
            let device = |p: &Path| std::fs::metadata(p).map(|m| m.dev());
            let (here, above) = match (device(&target), device(parent)) {
                (Ok(here), Ok(above)) => (here, above),
                (Err(e), _) | (_, Err(e)) => return Err(MountError::MountInfo(e)),
            };
            if here == above {
                return Ok(false);
            }
            let fs =
                nix::sys::statfs::statfs(&target).map_err(|e| MountError::MountInfo(e.into()))?;
            return Ok(fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
        }
        let info =
            std::fs::read_to_string("/proc/self/mountinfo").map_err(MountError::MountInfo)?;
        Ok(top_fstype(&info, &target).as_deref() == Some("tmpfs"))
    }

    fn mount(&self, target: &Path, group: Option<u32>) -> Result<(), MountError> {
        // mode=0755: the kernel default 1777 would let any pod user create files.
        let mut data = format!("size={},mode=0755", self.size_bytes);
        if let Some(gid) = group {
            data.push_str(&format!(",gid={gid}"));
        }
        nix::mount::mount(
            Some("tmpfs"),
            target,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(data.as_str()),
        )
        .map_err(|e| MountError::Mount { path: target.to_owned(), source: e.into() })
    }

    fn unmount(&self, target: &Path) -> Result<(), MountError> {
        match nix::mount::umount2(target, MntFlags::empty()) {
            // EINVAL: not a mount point; ENOENT: already gone. Both mean done.
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(MountError::Unmount { path: target.to_owned(), source: e.into() }),
        }
    }

    fn in_memory(&self) -> bool {
        true
    }
}

/// The filesystem type of the topmost mount at `target` in a mountinfo table.
fn top_fstype(mountinfo: &str, target: &Path) -> Option<String> {
    let target = target.to_str()?;
    let mut found = None;
    for line in mountinfo.lines() {
        // id parent major:minor root mount-point options [optional...] - fstype source super-options
        let mut fields = line.split(' ');
        let Some(mount_point) = fields.nth(4) else {
            continue;
        };
        if unescape_octal(mount_point) != target {
            continue;
        }
        let mut rest = fields.skip_while(|f| *f != "-");
        if let (Some("-"), Some(fstype)) = (rest.next(), rest.next()) {
            // Later lines are mounted on top of earlier ones.
            found = Some(fstype.to_owned());
        }
    }
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes.get(i + 1..i + 4).filter(|d| {
            bytes[i] == b'\\' && d[0] <= b'3' && d.iter().all(|b| (b'0'..=b'7').contains(b))
        });
        match escape {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A mounter that mounts nothing: the target stays a plain directory on the
/// node's disk. For tests and for `sscsi demo` without root; never for
/// production, since secrets would be written to disk.
#[derive(Debug, Default)]
pub struct FakeMounter {
    mounted: Mutex<HashSet<PathBuf>>,
    fail_mounts: Mutex<bool>,
}

impl FakeMounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every following `mount` fail, to test error paths.
    pub fn fail_mounts(&self, fail: bool) {
        *self.fail_mounts.lock().expect("lock") = fail;
    }

    pub fn mounted(&self) -> Vec<PathBuf> {
        self.mounted.lock().expect("lock").iter().cloned().collect()
    }
}

impl Mounter for FakeMounter {
    fn is_mounted(&self, target: &Path) -> Result<bool, MountError> {
        Ok(self.mounted.lock().expect("lock").contains(target))
    }

    fn mount(&self, target: &Path, _group: Option<u32>) -> Result<(), MountError> {
        if *self.fail_mounts.lock().expect("lock") {
            return Err(MountError::Mount {
                path: target.to_owned(),
                source: io::Error::new(io::ErrorKind::PermissionDenied, "fake mount failure"),
            });
        }
        if !target.is_dir() {
            return Err(MountError::Mount {
                path: target.to_owned(),
                source: io::Error::new(io::ErrorKind::NotFound, "mount point does not exist"),
            });
        }
        self.mounted.lock().expect("lock").insert(target.to_owned());
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<(), MountError> {
        self.mounted.lock().expect("lock").remove(target);
        Ok(())
    }

    fn in_memory(&self) -> bool {
        false
    }
}

/// Parses a size such as `64Mi`, `1Gi`, `512Ki` or a plain byte count.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, multiplier) = [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)]
        .iter()
        .find_map(|(suffix, m)| s.strip_suffix(suffix).map(|d| (d, *m)))
        .unwrap_or((s, 1));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 64Mi, 1Gi, 512Ki or a byte count"))?;
    match n.checked_mul(multiplier) {
        Some(0) => Err("size must be greater than zero".to_owned()),
        Some(v) => Ok(v),
        None => Err(format!("{s:?} is too large")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
98 22 0:50 / /var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/v/mount rw,nosuid,nodev,noexec shared:50 - tmpfs tmpfs rw,size=65536k,mode=755
99 22 0:51 / /mnt/with\\040space rw - tmpfs tmpfs rw
100 22 0:52 / /mnt/stacked rw - tmpfs tmpfs rw
101 100 0:53 / /mnt/stacked rw - ext4 /dev/vdb rw
102 22 0:54 / /mnt/opt rw shared:3 master:4 - tmpfs tmpfs rw
";

    #[test]
    fn finds_the_topmost_filesystem_at_a_mount_point() {
        let t = |p: &str| top_fstype(INFO, Path::new(p));
        assert_eq!(
            t("/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/v/mount").as_deref(),
            Some("tmpfs")
        );
        assert_eq!(t("/mnt/with space").as_deref(), Some("tmpfs"));
        assert_eq!(t("/mnt/stacked").as_deref(), Some("ext4"));
        assert_eq!(t("/mnt/opt").as_deref(), Some("tmpfs"));
        assert_eq!(t("/var/lib/kubelet"), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64Mi"), Ok(64 << 20));
        assert_eq!(parse_size("1Gi"), Ok(1 << 30));
        assert_eq!(parse_size("512Ki"), Ok(512 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("64MB").is_err());
        assert!(parse_size("-1Mi").is_err());
        assert!(parse_size("99999999999999Gi").is_err());
    }

    /// Real tmpfs (root only; CI runs as root): the device check agrees with
    /// the mount table, and a directory inside a tmpfs is not a mount point.
    #[test]
    fn tmpfs_mount_points_are_told_from_directories_inside_them() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("mount");
        std::fs::create_dir(&target).unwrap();
        let m = TmpfsMounter::new(1 << 20);
        assert!(!m.is_mounted(&target).unwrap());
        assert!(!m.is_mounted(&dir.path().join("missing")).unwrap());
        m.mount(&target, None).unwrap();
        assert!(m.is_mounted(&target).unwrap());
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert_eq!(top_fstype(&info, &target.canonicalize().unwrap()).as_deref(), Some("tmpfs"));
        let inner = target.join("inner");
        std::fs::create_dir(&inner).unwrap();
        assert!(!m.is_mounted(&inner).unwrap(), "inside a tmpfs is not a mount point");
        m.unmount(&target).unwrap();
        assert!(!m.is_mounted(&target).unwrap());
    }

    #[test]
    fn fake_mounter_tracks_mounts_and_unmount_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let m = FakeMounter::new();
        assert!(!m.is_mounted(dir.path()).unwrap());
        m.mount(dir.path(), None).unwrap();
        assert!(m.is_mounted(dir.path()).unwrap());
        m.unmount(dir.path()).unwrap();
        m.unmount(dir.path()).unwrap();
        assert!(!m.is_mounted(dir.path()).unwrap());
    }
}
