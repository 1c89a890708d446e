//! The rules for a path a provider may ask to write inside a volume.
//!
//! They are upstream's (kubelet's atomic writer and the driver's file check),
//! and they are what stands between a hostile SecretProviderClass and a write
//! outside the target (the CVE-2020-8567 class): a relative, clean path of
//! plain names, none of them `..`, not starting with `..` (which would collide
//! with the writer's own `..data` and `..<timestamp>` entries).

/// Longest path accepted, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest single path segment accepted, in bytes (Linux `NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("invalid path {0:?}: must not be empty")]
    Empty(String),
    #[error("invalid path {0:?}: must be a relative path")]
    Absolute(String),
    #[error("invalid path {0:?}: must be at most {MAX_PATH_LEN} bytes")]
    TooLong(String),
    #[error("invalid path {0:?}: a file name must be at most {MAX_NAME_LEN} bytes")]
    NameTooLong(String),
    #[error("invalid path {0:?}: must not contain '..'")]
    ParentDir(String),
    #[error("invalid path {0:?}: must not start with '..'")]
    LeadingDots(String),
    #[error("invalid path {0:?}: must be clean (no empty, '.' or trailing segments)")]
    NotClean(String),
    #[error("invalid path {0:?}: must not contain a NUL byte")]
    Nul(String),
}

/// Checks a path a provider returned, before anything is written.
pub fn validate_relative_path(path: &str) -> Result<(), PathError> {
    let err = |f: fn(String) -> PathError| Err(f(path.to_owned()));
    if path.is_empty() {
        return err(PathError::Empty);
    }
    if path.starts_with('/') {
        return err(PathError::Absolute);
    }
    if path.len() > MAX_PATH_LEN {
        return err(PathError::TooLong);
    }
    if path.contains('\0') {
        return err(PathError::Nul);
    }
    let segments: Vec<&str> = path.split('/').collect();
    for segment in &segments {
        if *segment == ".." {
            return err(PathError::ParentDir);
        }
        if segment.len() > MAX_NAME_LEN {
            return err(PathError::NameTooLong);
        }
    }
    if segments[0].starts_with("..") {
        return err(PathError::LeadingDots);
    }
    // Upstream requires path == filepath.Clean(path): no "a//b", "./a", "a/.", "a/".
    if segments.iter().any(|s| s.is_empty() || *s == ".") {
        return err(PathError::NotClean);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_nested_names() {
        for ok in ["a", "secret.txt", "dir/file", "a/b/c/d", ".hidden", "a/..b", "a..b", "x/.y"] {
            assert_eq!(validate_relative_path(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_relative_path(&"n".repeat(255)), Ok(()));
        let long_ok = ["d"; 2048].join("/"); // 4095 bytes
        assert_eq!(validate_relative_path(&long_ok), Ok(()));
    }

    #[test]
    fn rejects_every_escape_and_malformed_path() {
        let long_name = "n".repeat(256);
        let long_path = format!("{}/x", ["d"; 2048].join("/"));
        type Variant = fn(String) -> PathError;
        let table: &[(&str, Variant)] = &[
            ("", PathError::Empty),
            ("/etc/x", PathError::Absolute),
            ("/", PathError::Absolute),
            ("..", PathError::ParentDir),
            ("../x", PathError::ParentDir),
            ("../../etc/x", PathError::ParentDir),
            ("a/../../x", PathError::ParentDir),
            ("a/..", PathError::ParentDir),
            ("a/b/../c", PathError::ParentDir),
            ("..data", PathError::LeadingDots),
            ("..data/x", PathError::LeadingDots),
            ("..2024_01_01_00_00_00.1/x", PathError::LeadingDots),
            ("...", PathError::LeadingDots),
            (".", PathError::NotClean),
            ("./a", PathError::NotClean),
            ("a/./b", PathError::NotClean),
            ("a//b", PathError::NotClean),
            ("a/", PathError::NotClean),
            ("a\0b", PathError::Nul),
            (&long_name, PathError::NameTooLong),
            (&long_path, PathError::TooLong),
        ];
        for (path, want) in table {
            assert_eq!(validate_relative_path(path), Err(want(path.to_string())), "{path:?}");
        }
    }
}
