//! What the publish pipeline tells the cluster: the Kubernetes integration
//! implements [`VolumeObserver`] (SecretProviderClassPodStatus, Events);
//! without a cluster nothing is told.

use std::fmt;
use std::path::Path;

use async_trait::async_trait;
use sscsi_api::SecretObject;
use sscsi_core::{ObjectVersion, PodInfo, SecretFile};

/// A volume whose files are in place.
#[derive(Debug, Clone, Copy)]
pub struct MountedVolume<'a> {
    pub pod: &'a PodInfo,
    pub secret_provider_class: &'a str,
    pub provider: &'a str,
    pub target_path: &'a Path,
    /// Sorted by id.
    pub versions: &'a [ObjectVersion],
    /// True on the first mount and when the versions differ from the last fetch.
    pub versions_changed: bool,
    /// True on the first mount and when a refresh rewrote files.
    pub content_changed: bool,
    /// True when this is a refresh of a mounted volume.
    pub refresh: bool,
    /// The volume's files, as written.
    pub files: &'a [SecretFile],
    /// The SecretProviderClass's `secretObjects`: Secrets to mirror the files into.
    pub secret_objects: &'a [SecretObject],
    /// The `metadata.generation` of the class the volume is pinned to
    /// (`--pin-class-generation`), recorded on the pod status object.
    pub pinned_generation: Option<i64>,
}

/// A publish that failed (or a refresh that failed and was masked).
#[derive(Debug, Clone, Copy)]
pub struct FailedPublish<'a> {
    pub pod: &'a PodInfo,
    pub secret_provider_class: &'a str,
    /// Empty when the class could not be read.
    pub provider: &'a str,
    /// Upstream's reason string, e.g. `SecretProviderClassNotFound`.
    pub reason: &'a str,
    /// The error message; never contains secret bytes or tokens.
    pub message: &'a str,
}

/// What `mounted` did beyond recording the status, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountedReport {
    /// Secrets of `secretObjects` in sync (written or already up to date).
    pub secrets_synced: usize,
    /// One event reason per Secret that could not be synced.
    pub sync_failures: Vec<&'static str>,
}

/// The status recorder's failure; fails a first mount, as upstream does.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ObserverError(pub String);

#[async_trait]
pub trait VolumeObserver: Send + Sync + fmt::Debug {
    /// Called after every successful fetch, once the files are in place.
    /// Records which object versions are mounted; an error fails a first
    /// mount (a refresh keeps its files and is retried with backoff).
    async fn mounted(&self, volume: MountedVolume<'_>) -> Result<MountedReport, ObserverError>;

    /// Called after a failed publish. Best effort: never fails the call.
    async fn publish_failed(&self, failure: FailedPublish<'_>);
}

/// Tells nobody: `--spc-dir` mode and tests without a cluster.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

#[async_trait]
impl VolumeObserver for NoObserver {
    async fn mounted(&self, _: MountedVolume<'_>) -> Result<MountedReport, ObserverError> {
        Ok(MountedReport::default())
    }

    async fn publish_failed(&self, _: FailedPublish<'_>) {}
}
