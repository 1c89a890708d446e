//! Every error a CSI call can end in, and the one place that maps each to a
//! gRPC status code and to upstream's reason string (`error_type` metric label).

use std::io;
use std::path::PathBuf;

use sscsi_core::{ErrorCode, ProviderError, UnknownProvider};
use sscsi_mount::{MountError, WriteError};
use tonic::{Code, Status};

use crate::spc::SpcError;

/// Upstream's reason strings (`pkg/errors`), used as the `error_type` label.
pub mod reason {
    pub const FAILED_TO_ENSURE_MOUNT_POINT: &str = "FailedToEnsureMountPoint";
    pub const PROVIDER_ERROR: &str = "ProviderError";
    pub const FAILED_TO_MOUNT: &str = "FailedToMount";
    pub const SECRET_PROVIDER_CLASS_NOT_FOUND: &str = "SecretProviderClassNotFound";
    pub const FAILED_TO_LOOKUP_PROVIDER: &str = "FailedToLookupProviderGRPCClient";
    pub const FILE_WRITE_ERROR: &str = "FileWriteError";
    pub const UNEXPECTED_TARGET_PATH: &str = "UnexpectedTargetPath";
    /// Upstream leaves the reason empty for argument errors.
    pub const NONE: &str = "";
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("Volume capability missing in request")]
    MissingCapability,
    #[error("Volume ID missing in request")]
    MissingVolumeId,
    #[error("Target path missing in request")]
    MissingTargetPath,
    #[error("Volume attributes missing in request")]
    MissingVolumeContext,
    #[error("secretProviderClass is not set")]
    MissingSecretProviderClass,
    #[error("Readonly is not true in request")]
    NotReadOnly,
    #[error("volume attribute {key} {message}")]
    BadAttribute { key: String, message: String },
    #[error(
        "volume_mount_group {0:?} is not a group id (the pod's fsGroup, a number from 0 to 4294967295)"
    )]
    BadMountGroup(String),
    #[error("target path {0:?} is not an absolute path")]
    TargetNotAbsolute(String),
    #[error(transparent)]
    Busy(#[from] crate::guard::Busy),
    #[error("failed to prepare target path {path}: {source}")]
    Target { path: PathBuf, source: io::Error },
    #[error("failed to check whether {path} is mounted: {source}")]
    MountCheck { path: PathBuf, source: MountError },
    #[error(transparent)]
    Spc(#[from] SpcError),
    #[error("SecretProviderClass {spc}: {source}")]
    UnknownProvider { spc: String, source: UnknownProvider },
    /// `identity`: whose permissions the backend judged (the pod's service account).
    #[error(
        "failed to mount secrets store objects for pod {pod} (as {identity}): provider {provider:?}: {source}"
    )]
    Provider { pod: String, identity: String, provider: String, source: ProviderError },
    #[error("SecretProviderClass {spc}: {source}")]
    Files { spc: String, source: sscsi_engine::FilesError },
    #[error("SecretProviderClass {spc}: {source}")]
    Parameter { spc: String, source: sscsi_core::params::ParamError },
    #[error("failed to mount tmpfs: {0}")]
    Mount(MountError),
    #[error("failed to write the files of pod {pod} to {path}: {source}")]
    Write { pod: String, path: PathBuf, source: WriteError },
    #[error("failed to record the mounted volume: {0}")]
    Status(crate::observer::ObserverError),
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Debug, thiserror::Error)]
pub enum UnpublishError {
    #[error("Volume ID missing in request")]
    MissingVolumeId,
    #[error("Target path missing in request")]
    MissingTargetPath,
    #[error("target path {0:?} is not an absolute path")]
    TargetNotAbsolute(String),
    #[error(transparent)]
    Busy(#[from] crate::guard::Busy),
    #[error("failed to unmount: {0}")]
    Unmount(MountError),
    #[error("failed to clean up {path}: {source}")]
    Cleanup { path: PathBuf, source: WriteError },
    #[error("failed to remove target path {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("Volume ID missing in request")]
    MissingVolumeId,
    #[error("Staging target path missing in request")]
    MissingStagingPath,
    #[error("Volume capability missing in request")]
    MissingCapability,
}

impl PublishError {
    pub fn code(&self) -> Code {
        match self {
            Self::MissingCapability
            | Self::MissingVolumeId
            | Self::MissingTargetPath
            | Self::MissingVolumeContext
            | Self::MissingSecretProviderClass
            | Self::NotReadOnly
            | Self::BadAttribute { .. }
            | Self::BadMountGroup(_)
            | Self::TargetNotAbsolute(_)
            | Self::UnknownProvider { .. }
            | Self::Files { .. }
            | Self::Parameter { .. } => Code::InvalidArgument,
            Self::Busy(_) => Code::Aborted,
            Self::Spc(e) => match e {
                SpcError::NotFound { .. } => Code::NotFound,
                SpcError::NoProvider { .. } | SpcError::NoParameters { .. } => {
                    Code::InvalidArgument
                }
                SpcError::Source { .. } => Code::Unavailable,
            },
            Self::Provider { source, .. } => provider_code(source.code()),
            Self::Write { source, .. } if source.is_invalid_input() => Code::InvalidArgument,
            Self::Target { .. }
            | Self::MountCheck { .. }
            | Self::Mount(_)
            | Self::Write { .. }
            | Self::Status(_)
            | Self::Internal(_) => Code::Internal,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Self::MissingCapability
            | Self::MissingVolumeId
            | Self::MissingTargetPath
            | Self::MissingVolumeContext
            | Self::MissingSecretProviderClass
            | Self::NotReadOnly
            | Self::BadAttribute { .. }
            | Self::BadMountGroup(_)
            | Self::Parameter { .. }
            | Self::Busy(_)
            | Self::Status(_)
            | Self::Internal(_) => reason::NONE,
            Self::TargetNotAbsolute(_) => reason::UNEXPECTED_TARGET_PATH,
            Self::Target { .. } | Self::MountCheck { .. } => reason::FAILED_TO_ENSURE_MOUNT_POINT,
            Self::Spc(SpcError::NotFound { .. } | SpcError::Source { .. }) => {
                reason::SECRET_PROVIDER_CLASS_NOT_FOUND
            }
            // Upstream sets no reason for a class without provider or parameters.
            Self::Spc(SpcError::NoProvider { .. } | SpcError::NoParameters { .. }) => reason::NONE,
            Self::UnknownProvider { .. } => reason::FAILED_TO_LOOKUP_PROVIDER,
            Self::Provider { source, .. } => source.reason(),
            Self::Mount(_) => reason::FAILED_TO_MOUNT,
            // What sscsi builds is written by sscsi: upstream's reason for
            // files that could not be written.
            Self::Write { .. } | Self::Files { .. } => reason::FILE_WRITE_ERROR,
        }
    }
}

impl UnpublishError {
    pub fn code(&self) -> Code {
        match self {
            Self::MissingVolumeId | Self::MissingTargetPath | Self::TargetNotAbsolute(_) => {
                Code::InvalidArgument
            }
            Self::Busy(_) => Code::Aborted,
            Self::Unmount(_) | Self::Cleanup { .. } | Self::Remove { .. } => Code::Internal,
        }
    }
}

impl StageError {
    pub fn code(&self) -> Code {
        match self {
            Self::MissingVolumeId | Self::MissingStagingPath | Self::MissingCapability => {
                Code::InvalidArgument
            }
        }
    }
}

fn provider_code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::InvalidArgument => Code::InvalidArgument,
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::PermissionDenied => Code::PermissionDenied,
        ErrorCode::Unauthenticated => Code::Unauthenticated,
        ErrorCode::FailedPrecondition => Code::FailedPrecondition,
        ErrorCode::ResourceExhausted => Code::ResourceExhausted,
        ErrorCode::Unavailable => Code::Unavailable,
        ErrorCode::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorCode::Internal => Code::Internal,
    }
}

impl From<PublishError> for Status {
    fn from(e: PublishError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

impl From<UnpublishError> for Status {
    fn from(e: UnpublishError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

impl From<StageError> for Status {
    fn from(e: StageError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use sscsi_core::{ErrorCode, ProviderFailure};

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("throttled")]
    struct Throttled;

    impl ProviderFailure for Throttled {
        fn code(&self) -> ErrorCode {
            ErrorCode::ResourceExhausted
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("external provider failed")]
    struct External;

    impl ProviderFailure for External {
        fn code(&self) -> ErrorCode {
            ErrorCode::Internal
        }
        fn reason(&self) -> &str {
            "VaultLoginFailed"
        }
    }

    fn io() -> io::Error {
        io::Error::other("boom")
    }

    #[test]
    fn codes_and_upstream_reasons() {
        let spc_missing = SpcError::NotFound {
            namespace: "ns".into(),
            name: "n".into(),
            source_name: "x".into(),
        };
        let bad_path = WriteError::InvalidPath(sscsi_core::path::PathError::Absolute("/x".into()));
        let write_io = WriteError::Io { op: "write", path: "/t/a".into(), source: io() };
        let cases = [
            (PublishError::MissingVolumeId, Code::InvalidArgument, ""),
            (PublishError::BadMountGroup("web".into()), Code::InvalidArgument, ""),
            (PublishError::Busy(crate::guard::Busy("v".into())), Code::Aborted, ""),
            (PublishError::Spc(spc_missing), Code::NotFound, "SecretProviderClassNotFound"),
            (
                PublishError::UnknownProvider {
                    spc: "ns/n".into(),
                    source: UnknownProvider {
                        name: "aws".into(),
                        available: vec![],
                        external: None,
                    },
                },
                Code::InvalidArgument,
                "FailedToLookupProviderGRPCClient",
            ),
            (
                PublishError::Provider {
                    pod: "ns/p".into(),
                    identity: "service account ns/sa".into(),
                    provider: "aws".into(),
                    source: Throttled.into(),
                },
                Code::ResourceExhausted,
                "ProviderError",
            ),
            (
                PublishError::Provider {
                    pod: "ns/p".into(),
                    identity: "service account ns/sa".into(),
                    provider: "ext".into(),
                    source: External.into(),
                },
                Code::Internal,
                "VaultLoginFailed",
            ),
            (
                PublishError::Target { path: "/t".into(), source: io() },
                Code::Internal,
                "FailedToEnsureMountPoint",
            ),
            (
                PublishError::Mount(MountError::Mount { path: "/t".into(), source: io() }),
                Code::Internal,
                "FailedToMount",
            ),
            (
                PublishError::Write { pod: "ns/p".into(), path: "/t".into(), source: bad_path },
                Code::InvalidArgument,
                "FileWriteError",
            ),
            (
                PublishError::Write { pod: "ns/p".into(), path: "/t".into(), source: write_io },
                Code::Internal,
                "FileWriteError",
            ),
        ];
        for (err, code, reason) in cases {
            assert_eq!((err.code(), err.reason()), (code, reason), "{err}");
            let message = err.to_string();
            let status = Status::from(err);
            assert_eq!((status.code(), status.message()), (code, message.as_str()));
        }
    }
}
