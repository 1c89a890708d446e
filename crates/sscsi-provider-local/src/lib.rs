//! The `local` provider: serves files from a directory the operator chooses
//! (`--local-provider-root`). For demos, kind clusters and tests; it needs no
//! cloud and no credentials.
//!
//! ```yaml
//! spec:
//!   provider: local
//!   parameters:
//!     objects: |
//!       - objectName: db/password     # relative to the root
//!         objectAlias: password       # file name in the volume (default: objectName)
//!         filePermission: "0600"      # octal (default: the driver's 0644)
//! ```
//!
//! Security: an SPC author controls `objectName`, the operator controls the
//! root. An object that resolves outside the root, through `..` or through a
//! symlink, is refused.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::Deserialize;
use sscsi_core::params::{ParamError, parse_octal_mode, parse_yaml};
use sscsi_core::path::{PathError, validate_relative_path};
use sscsi_core::{
    ErrorCode, MountRequest, MountResponse, ObjectVersion, Provider, ProviderError,
    ProviderFailure, SecretBytes, SecretFile, content_digest,
};

pub const NAME: &str = "local";

#[derive(Debug, Clone)]
pub struct LocalProvider {
    root: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LocalObject {
    object_name: String,
    #[serde(default)]
    object_alias: Option<String>,
    /// Read as text, so both `"0600"` and a bare `0600` mean octal.
    #[serde(default)]
    file_permission: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("parameter \"objects\" is required")]
    MissingObjects,
    #[error("parameter \"objects\" lists no object")]
    NoObjects,
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error("objects[{index}].{field}: {source}")]
    InvalidPath { index: usize, field: &'static str, source: PathError },
    #[error("objects[{index}].filePermission: {source}")]
    Mode { index: usize, source: ParamError },
    #[error("objects[{index}].objectName {name:?} resolves outside the local provider root")]
    Escapes { index: usize, name: String },
    #[error("objects[{index}].objectName {name:?} not found under the local provider root")]
    NotFound { index: usize, name: String },
    #[error("objects[{index}].objectName {name:?}: {source}")]
    Read { index: usize, name: String, source: io::Error },
    #[error("objects[{index}]: file {path:?} is already produced by another object")]
    DuplicatePath { index: usize, path: String },
    #[error("local provider task failed: {0}")]
    Task(String),
}

impl ProviderFailure for LocalError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::MissingObjects
            | Self::NoObjects
            | Self::Param(_)
            | Self::InvalidPath { .. }
            | Self::Mode { .. }
            | Self::Escapes { .. }
            | Self::DuplicatePath { .. } => ErrorCode::InvalidArgument,
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::Read { .. } | Self::Task(_) => ErrorCode::Internal,
        }
    }
}

impl LocalProvider {
    /// `root` must be an existing directory; it is resolved once, here.
    pub fn new(root: &Path) -> io::Result<Self> {
        let root = root.canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn fetch(&self, request: &MountRequest) -> Result<MountResponse, LocalError> {
        let text = request.parameters.get("objects").ok_or(LocalError::MissingObjects)?;
        let objects: Vec<LocalObject> = parse_yaml("objects", text)?;
        if objects.is_empty() {
            return Err(LocalError::NoObjects);
        }
        let mut response = MountResponse::default();
        let mut paths = BTreeSet::new();
        for (index, object) in objects.iter().enumerate() {
            let name = &object.object_name;
            validate_relative_path(name).map_err(|source| LocalError::InvalidPath {
                index,
                field: "objectName",
                source,
            })?;
            let path = object.object_alias.clone().unwrap_or_else(|| name.clone());
            validate_relative_path(&path).map_err(|source| LocalError::InvalidPath {
                index,
                field: "objectAlias",
                source,
            })?;
            let mode = match &object.file_permission {
                Some(p) => parse_octal_mode("filePermission", p)
                    .map_err(|source| LocalError::Mode { index, source })?,
                None => request.default_file_mode,
            };
            if !paths.insert(path.clone()) {
                return Err(LocalError::DuplicatePath { index, path });
            }
            let contents = self.read(index, name)?;
            response.versions.push(ObjectVersion {
                id: name.clone(),
                version: content_digest(contents.expose()),
            });
            response.files.push(SecretFile { path, mode, contents });
        }
        Ok(response)
    }

    fn read(&self, index: usize, name: &str) -> Result<SecretBytes, LocalError> {
        let resolved = match self.root.join(name).canonicalize() {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LocalError::NotFound { index, name: name.to_owned() });
            }
            Err(source) => {
                return Err(LocalError::Read { index, name: name.to_owned(), source });
            }
        };
        // canonicalize resolved every symlink; what is left must be under the root.
        if !resolved.starts_with(&self.root) {
            return Err(LocalError::Escapes { index, name: name.to_owned() });
        }
        std::fs::read(&resolved).map(SecretBytes::new).map_err(|source| LocalError::Read {
            index,
            name: name.to_owned(),
            source,
        })
    }
}

#[async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &str {
        NAME
    }

    async fn mount(&self, request: &MountRequest) -> Result<MountResponse, ProviderError> {
        let (this, request) = (self.clone(), request.clone());
        tokio::task::spawn_blocking(move || this.fetch(&request))
            .await
            .map_err(|e| LocalError::Task(e.to_string()))?
            .map_err(ProviderError::from)
    }
}

#[cfg(test)]
mod tests;
