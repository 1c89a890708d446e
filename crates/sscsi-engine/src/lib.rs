//! The fetch engine: given a SecretProviderClass, an identity and the
//! versions already held, it returns the files and versions that identity
//! sees now. It knows nothing of CSI, mounts or Kubernetes objects other
//! than the class, so the node's publish (and later a sync without a pod, a
//! render, a provider server) fetch the same way.
//!
//! What it owns:
//! - picking the provider by `spec.provider`;
//! - the provider's request: the class's parameters merged with the
//!   volume attributes (attributes win, as upstream), tokens,
//!   nodePublishSecretRef data, the default mode (upstream's 0644);
//! - how old a shared backend answer a fetch takes ([`Purpose`]): what
//!   makes a rotation pass check each (identity, object) once per interval
//!   however many volumes hold it, while a first mount or a forced refresh
//!   sees the backend as it is now;
//! - the mounted bytes, read only for a provider that uses them;
//! - the files sscsi builds from the provider's (`sscsi.io/files`, see
//!   sscsi-files), and keeping sscsi's own parameters from providers.
//!
//! Coalescing and credential reuse themselves live in the providers, keyed
//! by identity, with the helpers of sscsi-provider-kit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sscsi_api::SecretProviderClass;
use sscsi_core::params::ParamError;
use sscsi_core::{
    BURST_WINDOW, DEFAULT_FILE_MODE, MountRequest, ObjectVersion, PodInfo, Provider, ProviderError,
    ProviderRegistry, Refresh, SecretBytes, SecretFile, ServiceAccountToken, UnknownProvider,
};

pub mod check;

pub use sscsi_files::FilesError;

/// Who asks: the pod's identity as kubelet passed it.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub pod: &'a PodInfo,
    /// Service-account tokens by audience.
    pub tokens: &'a BTreeMap<String, ServiceAccountToken>,
    /// The nodePublishSecretRef Secret's data.
    pub secrets: &'a BTreeMap<String, SecretBytes>,
}

impl Identity<'_> {
    /// `service account <namespace>/<name>`, for messages.
    pub fn describe(&self) -> String {
        format!("service account {}/{}", self.pod.namespace, self.pod.service_account)
    }
}

/// Why a fetch is made; it decides how old a shared answer it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Nothing is held yet: answers of the last second (a burst of pods).
    FirstMount,
    /// A periodic refresh of held content: answers as old as the rotation
    /// interval, so every (identity, object) is checked once per interval.
    /// With a zero interval every republish asks the backend.
    Rotation,
    /// Asked for (`secrets-store.csi.k8s.io/refresh`): the backend now,
    /// sharing only a read already in flight.
    Forced,
}

/// The files a volume holds now, read only when the provider uses them.
#[async_trait]
pub trait MountedFiles: Send + Sync {
    /// By path; empty when they cannot be read (the provider then reads
    /// every object, as on a first mount).
    async fn read(&self) -> BTreeMap<String, SecretBytes>;
}

/// One fetch.
#[derive(Clone, Copy)]
pub struct Fetch<'a> {
    pub class: &'a SecretProviderClass,
    /// The volume attributes kubelet passed (volume context).
    pub attributes: &'a BTreeMap<String, String>,
    pub identity: Identity<'a>,
    /// Versions of the objects held now; empty on a first mount.
    pub held: &'a [ObjectVersion],
    pub mounted: Option<&'a dyn MountedFiles>,
    pub purpose: Purpose,
    /// The volume's directory, for a provider that writes there itself;
    /// `None` without a volume.
    pub target_path: Option<&'a std::path::Path>,
}

impl std::fmt::Debug for Fetch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetch")
            .field("class", &self.class.qualified_name())
            .field("pod", &self.identity.pod)
            .field("held", &self.held)
            .field("purpose", &self.purpose)
            .finish_non_exhaustive()
    }
}

/// What a fetch returns.
#[derive(Debug)]
pub struct Fetched {
    pub files: Vec<SecretFile>,
    /// Sorted, so two fetches of the same content compare equal.
    pub versions: Vec<ObjectVersion>,
    /// The provider wrote the files into the target path itself.
    pub written_by_provider: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("SecretProviderClass {spc}: {source}")]
    UnknownProvider { spc: String, source: UnknownProvider },
    /// `identity`: who asked, `service account <namespace>/<name>`, so the
    /// message says whose permissions the backend refused.
    #[error("provider {provider:?} (as {identity}): {source}")]
    Provider { provider: String, identity: String, source: ProviderError },
    #[error("SecretProviderClass {spc}: {source}")]
    Files { spc: String, source: sscsi_files::FilesError },
    /// One of sscsi's own parameters (`sscsi.io/refresh`) is wrong.
    #[error("SecretProviderClass {spc}: {source}")]
    Parameter { spc: String, source: ParamError },
}

/// The outcome of one provider call, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub ok: bool,
    pub elapsed: Duration,
}

#[derive(Debug, Clone)]
pub struct Engine {
    providers: ProviderRegistry,
    rotation_interval: Duration,
}

impl Engine {
    /// `rotation_interval`: how often held content is refreshed (zero with
    /// rotation off or every republish).
    pub fn new(providers: ProviderRegistry, rotation_interval: Duration) -> Self {
        Self { providers, rotation_interval }
    }

    /// The provider a class names, if this process has it.
    pub fn provider(&self, class: &SecretProviderClass) -> Result<Arc<dyn Provider>, FetchError> {
        self.providers
            .get(&class.spec.provider)
            .map_err(|source| FetchError::UnknownProvider { spc: class.qualified_name(), source })
    }

    /// Fetches what `fetch.identity` sees of `fetch.class` now. The call's
    /// outcome is returned beside the result even when it failed, for metrics.
    pub async fn fetch(&self, fetch: Fetch<'_>) -> (Result<Fetched, FetchError>, Option<Call>) {
        let provider = match self.provider(fetch.class) {
            Ok(provider) => provider,
            Err(e) => return (Err(e), None),
        };
        let mut request = match self.request(&fetch) {
            Ok(request) => request,
            Err(e) => return (Err(e), None),
        };
        // Declared wrong: refused before the backend is asked anything.
        let files_error = |source| FetchError::Files { spc: fetch.class.qualified_name(), source };
        // sscsi's own parameters come from the class alone: a pod's volume
        // attributes cannot declare files or change the refresh policy.
        let built = match sscsi_files::parse(fetch.class.parameters(), DEFAULT_FILE_MODE) {
            Ok(built) => built,
            Err(e) => return (Err(files_error(e)), None),
        };
        request.parameters.retain(|key, _| !key.starts_with(sscsi_files::RESERVED_PREFIX));
        if let Some(mounted) = fetch.mounted
            && !fetch.held.is_empty()
            && provider.reads_mounted_files(&request)
        {
            request.current_files = mounted.read().await;
        }
        let started = Instant::now();
        let response = provider.mount(&request).await;
        let call = Call { ok: response.is_ok(), elapsed: started.elapsed() };
        let result = response
            .map_err(|source| FetchError::Provider {
                provider: fetch.class.spec.provider.clone(),
                identity: fetch.identity.describe(),
                source,
            })
            .and_then(|response| {
                let mut versions = response.versions;
                versions.sort();
                let mut files = response.files;
                if !built.is_empty() && response.written_by_provider {
                    return Err(files_error(sscsi_files::FilesError::Parameter(
                        "the provider wrote the volume itself and returned no files to build from"
                            .into(),
                    )));
                }
                files.extend(sscsi_files::build(&built, &files).map_err(files_error)?);
                Ok(Fetched { files, versions, written_by_provider: response.written_by_provider })
            });
        (result, Some(call))
    }

    /// How often `class` asks to be refreshed (`sscsi.io/refresh`).
    pub fn refresh(&self, class: &SecretProviderClass) -> Result<Refresh, FetchError> {
        Refresh::from_parameters(class.parameters())
            .map_err(|source| FetchError::Parameter { spc: class.qualified_name(), source })
    }

    fn request(&self, fetch: &Fetch<'_>) -> Result<MountRequest, FetchError> {
        let refresh = self.refresh(fetch.class)?;
        let mut parameters = fetch.class.parameters().clone();
        parameters.extend(fetch.attributes.iter().map(|(k, v)| (k.clone(), v.clone())));
        let reuse = match (fetch.purpose, refresh) {
            (Purpose::FirstMount, _) => BURST_WINDOW,
            // A class refreshed more often than the others takes no older
            // answer than its own interval.
            (Purpose::Rotation, Refresh::Every(interval)) => interval.min(self.rotation_interval),
            (Purpose::Rotation, _) => self.rotation_interval,
            (Purpose::Forced, _) => Duration::ZERO,
        };
        Ok(MountRequest {
            parameters,
            tokens: fetch.identity.tokens.clone(),
            secrets: fetch.identity.secrets.clone(),
            pod: fetch.identity.pod.clone(),
            default_file_mode: DEFAULT_FILE_MODE,
            current_versions: fetch.held.to_vec(),
            current_files: BTreeMap::new(),
            reuse,
            target_path: fetch.target_path.map(ToOwned::to_owned),
        })
    }
}

#[cfg(test)]
mod tests;
