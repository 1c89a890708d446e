//! A temporary directory that unmounts what was mounted under it before it
//! is removed. A test whose node stops with volumes still mounted (as a
//! killed node leaves them) would otherwise leave a tmpfs on the machine for
//! every run, and a directory tempfile cannot delete.

use std::path::{Path, PathBuf};

use sscsi_mount::{Mounter, TmpfsMounter};

#[derive(Debug)]
pub struct MountDir(tempfile::TempDir);

impl MountDir {
    pub fn new() -> Self {
        Self(tempfile::tempdir().expect("a temporary directory"))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Default for MountDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for MountDir {
    fn drop(&mut self) {
        for mount_point in mounts_under(self.0.path()) {
            // Best effort: a failure leaves what the test left before.
            let _ = TmpfsMounter::new(0).unmount(&mount_point);
        }
    }
}

/// Mount points at or below `dir`, deepest first, from /proc/self/mountinfo.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(dir) = dir.canonicalize() else { return Vec::new() };
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(&dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Root only (CI runs as root): a tmpfs left under the directory is gone
    /// with it.
    #[test]
    fn dropping_unmounts_and_removes_the_directory() {
        if !nix_root() {
            return;
        }
        let dir = MountDir::new();
        let target = dir.path().join("pods/u/volumes/kubernetes.io~csi/v/mount");
        std::fs::create_dir_all(&target).unwrap();
        let mounter = TmpfsMounter::new(1 << 20);
        mounter.mount(&target, None).unwrap();
        std::fs::write(target.join("f"), "x").unwrap();
        assert_eq!(mounts_under(dir.path()), [target.canonicalize().unwrap()]);
        let path = dir.path().to_owned();
        drop(dir);
        assert!(!path.exists(), "the directory is removed");
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!info.contains(path.to_str().unwrap()), "nothing left mounted");
    }

    fn nix_root() -> bool {
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    }
}
