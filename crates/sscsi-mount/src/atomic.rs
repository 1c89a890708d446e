//! The atomic writer: kubelet's Secret-volume layout, which upstream uses too.
//!
//! ```text
//! <target>/..2026_11_22_11_03_00.1234567/<files>   real files, one dir per version
//! <target>/..data -> ..2026_11_22_11_03_00.1234567 swapped with rename(2)
//! <target>/<name> -> ..data/<name>                  one per top-level name
//! ```
//!
//! Guarantees: a reader that resolves `..data` (or a top-level link) sees one
//! whole version, never a mix of two or a partly written file; a failed write
//! leaves the previous version in place; nothing is created outside the
//! target, whatever paths the provider returned; file modes are exactly the
//! requested ones, whatever the umask. When every file's bytes and mode are
//! unchanged and none was removed, nothing is written at all. With a group
//! (the pod's fsGroup), the target, every directory, file and link belong to
//! it, in every version; a version of another group is written again.
//!
//! Assumption: one writer per target at a time (the node's per-volume guard).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use sscsi_core::path::{PathError, validate_relative_path};
use sscsi_core::{SecretBytes, SecretFile};

/// The symlink naming the current version's directory.
pub const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    InvalidPath(#[from] PathError),
    #[error("invalid path {0:?}: two files have this path")]
    Duplicate(String),
    #[error("invalid path {file:?}: {dir:?} is also a file")]
    FileIsDir { file: String, dir: String },
    #[error("invalid mode {mode:#o} for {path:?}: must be at most 0o777")]
    Mode { path: String, mode: u32 },
    #[error("target {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
}

impl WriteError {
    /// True when the provider's output was at fault, false for I/O failures.
    pub fn is_invalid_input(&self) -> bool {
        !matches!(self, Self::Io { .. } | Self::NotADirectory(_))
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WriteError + 'a {
    move |source| WriteError::Io { op, path: path.to_owned(), source }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Bytes and modes were already in place; nothing was touched.
    Unchanged,
    /// A new version was written; its directory name.
    Written(String),
}

#[derive(Debug, Clone)]
pub struct AtomicWriter {
    target: PathBuf,
    group: Option<u32>,
}

impl AtomicWriter {
    pub fn new(target: impl Into<PathBuf>) -> Self {
        Self { target: target.into(), group: None }
    }

    /// Everything written belongs to `group` (the owner stays this process's).
    pub fn with_group(mut self, group: Option<u32>) -> Self {
        self.group = group;
        self
    }

    /// Replaces the whole content of the volume with `files`.
    pub fn write(&self, files: &[SecretFile]) -> Result<WriteOutcome, WriteError> {
        let wanted = validate(files)?;
        let meta = fs::symlink_metadata(&self.target).map_err(io_err("stat", &self.target))?;
        if !meta.is_dir() {
            return Err(WriteError::NotADirectory(self.target.clone()));
        }

        if let Some(gid) = self.group.filter(|gid| meta.gid() != *gid) {
            chgrp(&self.target, gid)?;
        }

        let unchanged = self.current_version_dir().is_some_and(|current| {
            self.has_group(&current)
                && self.read_version(&current).is_ok_and(|files| same_content(&files, &wanted))
        });
        if unchanged {
            return Ok(WriteOutcome::Unchanged);
        }

        let (name, dir) = self.create_version_dir()?;
        if let Err(e) = write_tree(&dir, files, self.group) {
            // Leave the previous version untouched and no half-written one behind.
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        self.swap_data_link(&name)?;
        self.update_user_links(&wanted)?;
        self.remove_stale_versions(&name)?;
        Ok(WriteOutcome::Written(name))
    }

    /// The files of the current version, by path: (mode, bytes).
    pub fn read_current(&self) -> Result<BTreeMap<String, (u32, SecretBytes)>, WriteError> {
        match self.current_version_dir() {
            Some(dir) => self.read_version(&dir),
            None => Ok(BTreeMap::new()),
        }
    }

    /// What a reader of the volume sees at its top level, as upstream reads a
    /// volume back for sync: every entry not starting with `..`, symlinks
    /// followed, regular files only. For volumes a provider wrote itself; a
    /// link that leads outside the volume is skipped, so such a provider
    /// cannot have a file of the node read into a Secret.
    pub fn read_visible(&self) -> Result<BTreeMap<String, (u32, SecretBytes)>, WriteError> {
        let io_err = |op, path: &Path| {
            let path = path.to_owned();
            move |source| WriteError::Io { op, path, source }
        };
        let root = fs::canonicalize(&self.target).map_err(io_err("canonicalize", &self.target))?;
        let mut files = BTreeMap::new();
        for entry in fs::read_dir(&root).map_err(io_err("read_dir", &root))? {
            let entry = entry.map_err(io_err("read_dir", &root))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("..") {
                continue;
            }
            let Ok(real) = fs::canonicalize(entry.path()) else { continue };
            if !real.starts_with(&root) {
                tracing::warn!(target = %self.target.display(), name, "a link out of the volume is not read");
                continue;
            }
            let meta = fs::metadata(&real).map_err(io_err("stat", &real))?;
            if !meta.is_file() {
                continue;
            }
            let bytes = fs::read(&real).map_err(io_err("read", &real))?;
            files.insert(name, (meta.permissions().mode() & 0o7777, SecretBytes::new(bytes)));
        }
        Ok(files)
    }

    /// Removes everything this writer created: user links, `..data` and the
    /// version directories. Foreign files are left alone, so a caller that
    /// then removes the target directory fails instead of deleting them.
    pub fn remove_all(&self) -> Result<(), WriteError> {
        let entries = match fs::read_dir(&self.target) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("read dir", &self.target)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("read dir", &self.target))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let file_type = entry.file_type().map_err(io_err("stat", &path))?;
            if name == DATA_DIR || name == DATA_DIR_TMP || self.is_user_link(&name) {
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
            } else if is_version_dir_name(&name) && file_type.is_dir() {
                fs::remove_dir_all(&path).map_err(io_err("remove", &path))?;
            }
        }
        Ok(())
    }

    /// Whether version `name` was written for this writer's group: files
    /// and directories share their version directory's group.
    fn has_group(&self, name: &str) -> bool {
        self.group.is_none_or(|gid| {
            fs::symlink_metadata(self.target.join(name)).is_ok_and(|m| m.gid() == gid)
        })
    }

    fn current_version_dir(&self) -> Option<String> {
        let link = fs::read_link(self.target.join(DATA_DIR)).ok()?;
        let name = link.to_str()?;
        is_version_dir_name(name).then(|| name.to_owned())
    }

    fn read_version(&self, name: &str) -> Result<BTreeMap<String, (u32, SecretBytes)>, WriteError> {
        let mut out = BTreeMap::new();
        let root = self.target.join(name);
        let mut stack = vec![(root.clone(), String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            for entry in fs::read_dir(&dir).map_err(io_err("read dir", &dir))? {
                let entry = entry.map_err(io_err("read dir", &dir))?;
                let path = entry.path();
                let rel = format!("{prefix}{}", entry.file_name().to_string_lossy());
                let meta = fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
                if meta.is_dir() {
                    stack.push((path, format!("{rel}/")));
                } else if meta.is_file() {
                    let bytes = fs::read(&path).map_err(io_err("read", &path))?;
                    out.insert(rel, (meta.permissions().mode() & 0o777, SecretBytes::new(bytes)));
                }
            }
        }
        Ok(out)
    }

    fn create_version_dir(&self) -> Result<(String, PathBuf), WriteError> {
        let stamp = jiff::Timestamp::now().strftime("%Y_%m_%d_%H_%M_%S");
        loop {
            let name = format!("..{stamp}.{}", rand::random::<u32>());
            let dir = self.target.join(&name);
            match fs::create_dir(&dir) {
                Ok(()) => {
                    set_mode(&dir, 0o755)?;
                    if let Some(gid) = self.group {
                        chgrp(&dir, gid)?;
                    }
                    return Ok((name, dir));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("create dir", &dir)(e)),
            }
        }
    }

    fn swap_data_link(&self, name: &str) -> Result<(), WriteError> {
        let tmp = self.target.join(DATA_DIR_TMP);
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &tmp)(e)),
        }
        symlink(name, &tmp).map_err(io_err("symlink", &tmp))?;
        self.chgrp_link(&tmp)?;
        let data = self.target.join(DATA_DIR);
        fs::rename(&tmp, &data).map_err(io_err("rename", &data))?;
        sync_dir(&self.target)
    }

    fn update_user_links(&self, wanted: &Wanted<'_>) -> Result<(), WriteError> {
        let top: BTreeSet<&str> = wanted.keys().map(|p| p.split('/').next().unwrap_or(p)).collect();
        for name in &top {
            let link = self.target.join(name);
            let want = format!("{DATA_DIR}/{name}");
            match fs::symlink_metadata(&link) {
                Ok(m)
                    if m.file_type().is_symlink()
                        && fs::read_link(&link).is_ok_and(|t| t == Path::new(&want)) =>
                {
                    if self.group.is_some_and(|gid| m.gid() != gid) {
                        self.chgrp_link(&link)?;
                    }
                    continue;
                }
                // Something else squats on the name (e.g. a file an old
                // provider wrote itself, as upstream's migration step handles).
                Ok(m) if m.is_dir() => {
                    fs::remove_dir_all(&link).map_err(io_err("remove", &link))?
                }
                Ok(_) => fs::remove_file(&link).map_err(io_err("remove", &link))?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("stat", &link)(e)),
            }
            symlink(&want, &link).map_err(io_err("symlink", &link))?;
            self.chgrp_link(&link)?;
        }
        for entry in fs::read_dir(&self.target).map_err(io_err("read dir", &self.target))? {
            let entry = entry.map_err(io_err("read dir", &self.target))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !top.contains(name.as_str()) && self.is_user_link(&name) {
                let path = entry.path();
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
            }
        }
        sync_dir(&self.target)
    }

    /// Removes every version directory but `keep`, including any left by a
    /// write that crashed half way.
    fn remove_stale_versions(&self, keep: &str) -> Result<(), WriteError> {
        for entry in fs::read_dir(&self.target).map_err(io_err("read dir", &self.target))? {
            let entry = entry.map_err(io_err("read dir", &self.target))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name != keep
                && is_version_dir_name(&name)
                && entry.file_type().is_ok_and(|t| t.is_dir())
            {
                fs::remove_dir_all(&path).map_err(io_err("remove", &path))?;
            }
        }
        Ok(())
    }

    /// Links are never checked for access; owned by the group all the same,
    /// so nothing in the volume belongs to root's group.
    fn chgrp_link(&self, link: &Path) -> Result<(), WriteError> {
        match self.group {
            Some(gid) => {
                std::os::unix::fs::lchown(link, None, Some(gid)).map_err(io_err("chown", link))
            }
            None => Ok(()),
        }
    }

    /// A top-level entry that is our link `name -> ..data/name`.
    fn is_user_link(&self, name: &str) -> bool {
        !name.starts_with("..")
            && fs::read_link(self.target.join(name))
                .is_ok_and(|t| t == Path::new(DATA_DIR).join(name))
    }
}

/// `..<timestamp>.<random>`: a version directory's name. Never a valid user
/// path, since user paths may not start with `..`.
fn is_version_dir_name(name: &str) -> bool {
    name.strip_prefix("..").and_then(|rest| rest.chars().next()).is_some_and(|c| c.is_ascii_digit())
}

/// The content a write asks for: path -> (mode, bytes), borrowed from the request.
type Wanted<'a> = BTreeMap<&'a str, (u32, &'a [u8])>;

fn same_content(current: &BTreeMap<String, (u32, SecretBytes)>, wanted: &Wanted<'_>) -> bool {
    current.len() == wanted.len()
        && current.iter().all(|(path, (mode, bytes))| {
            wanted.get(path.as_str()) == Some(&(*mode, bytes.expose()))
        })
}

/// Checks every path and mode before anything touches the disk.
fn validate(files: &[SecretFile]) -> Result<Wanted<'_>, WriteError> {
    let mut wanted = BTreeMap::new();
    for f in files {
        validate_relative_path(&f.path)?;
        if f.mode > 0o777 {
            return Err(WriteError::Mode { path: f.path.clone(), mode: f.mode });
        }
        if wanted.insert(f.path.as_str(), (f.mode, f.contents.expose())).is_some() {
            return Err(WriteError::Duplicate(f.path.clone()));
        }
    }
    for path in wanted.keys() {
        for (i, _) in path.match_indices('/') {
            let dir = &path[..i];
            if wanted.contains_key(dir) {
                return Err(WriteError::FileIsDir {
                    file: (*path).to_owned(),
                    dir: dir.to_owned(),
                });
            }
        }
    }
    Ok(wanted)
}

fn write_tree(root: &Path, files: &[SecretFile], group: Option<u32>) -> Result<(), WriteError> {
    let mut dirs = BTreeSet::new();
    for f in files {
        let mut dir = root.to_owned();
        let segments: Vec<&str> = f.path.split('/').collect();
        for segment in &segments[..segments.len() - 1] {
            dir.push(segment);
            if dirs.insert(dir.clone()) {
                fs::create_dir(&dir).map_err(io_err("create dir", &dir))?;
                set_mode(&dir, 0o755)?;
                if let Some(gid) = group {
                    chgrp(&dir, gid)?;
                }
            }
        }
        let path = root.join(&f.path);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(f.mode)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_err("create", &path))?;
        // Owned by the group before it holds any bytes.
        if let Some(gid) = group {
            std::os::unix::fs::fchown(&file, None, Some(gid)).map_err(io_err("chown", &path))?;
        }
        file.write_all(f.contents.expose()).map_err(io_err("write", &path))?;
        // The open mode went through the umask; set the exact one.
        file.set_permissions(fs::Permissions::from_mode(f.mode)).map_err(io_err("chmod", &path))?;
        file.sync_all().map_err(io_err("fsync", &path))?;
    }
    for dir in dirs.iter().rev() {
        sync_dir(dir)?;
    }
    sync_dir(root)
}

fn chgrp(path: &Path, gid: u32) -> Result<(), WriteError> {
    std::os::unix::fs::chown(path, None, Some(gid)).map_err(io_err("chown", path))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), WriteError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", path))
}

fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync", dir))
}

#[cfg(test)]
mod tests;
