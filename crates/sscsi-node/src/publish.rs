//! The publish pipeline, one small step per function.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sscsi_api::SecretProviderClass;
use sscsi_core::{ObjectVersion, PodInfo, Refresh, SecretBytes, SecretFile};
use sscsi_engine::{Engine, Fetch, FetchError, Fetched, Identity, MountedFiles, Purpose};
use sscsi_mount::{AtomicWriter, Mounter, WriteOutcome};
use sscsi_proto::csi::v1::{NodePublishVolumeRequest, NodeUnpublishVolumeRequest};

use crate::Backoff;
use crate::context::PublishRequest;
use crate::error::{PublishError, UnpublishError};
use crate::guard::VolumeGuards;
use crate::last_known_good::{LastKnownGood, is_outage};
use crate::metrics::NodeMetrics;
use crate::observer::{FailedPublish, MountedVolume, VolumeObserver};
use crate::spc::{self, SpcSource};
use crate::volumes::{VolumeState, VolumeTable};

#[derive(Debug)]
pub(crate) struct Publisher {
    pub rotation_poll_interval: Option<Duration>,
    pub refresh_backoff: Backoff,
    pub min_rotation_interval: Duration,
    pub pin_class_generation: bool,
    pub mounter: Arc<dyn Mounter>,
    pub spcs: Arc<dyn SpcSource>,
    pub engine: Engine,
    pub guards: VolumeGuards,
    pub volumes: VolumeTable,
    pub metrics: NodeMetrics,
    pub observer: Arc<dyn VolumeObserver>,
    /// `--serve-last-known-good`: copies for new volumes while a backend is down.
    pub last_known_good: Option<LastKnownGood>,
}

/// The Warning event's reason when a volume is mounted from the
/// last-known-good copy.
pub const LAST_KNOWN_GOOD_REASON: &str = "ServedLastKnownGood";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PublishOutcome {
    /// Already mounted and no re-fetch due: nothing was called or written.
    AlreadyMounted,
    /// Already mounted; a recent refresh failed and the next try waits.
    BackingOff,
    /// First mount: tmpfs mounted and files written.
    Mounted,
    /// Re-fetched; `changed`: the content was written again, `files` of them.
    Refreshed { changed: bool, files: usize },
    /// A re-fetch failed; the previous files stay and kubelet is told success.
    RefreshFailed { reason: String, message: String },
}

impl PublishOutcome {
    pub fn describe(&self) -> &'static str {
        match self {
            Self::AlreadyMounted => "already mounted",
            Self::BackingOff => "already mounted; backing off after a failed refresh",
            Self::Mounted => "mounted",
            Self::Refreshed { changed: false, .. } => "refreshed, content unchanged",
            Self::Refreshed { changed: true, .. } => "refreshed, content changed",
            Self::RefreshFailed { .. } => "refresh failed, previous content kept",
        }
    }
}

/// What a publish learned about its volume, for metrics and events, even
/// when it failed half way.
#[derive(Debug, Default)]
struct Trace {
    /// Known once the volume's record or its SecretProviderClass is read.
    provider: String,
    /// The pod and class, once the request parsed.
    volume: Option<(PodInfo, String)>,
}

impl Publisher {
    pub async fn publish(
        &self,
        raw: NodePublishVolumeRequest,
    ) -> Result<PublishOutcome, PublishError> {
        let started = Instant::now();
        let mut trace = Trace::default();
        let result = self.publish_volume(raw, &mut trace).await;
        self.account(&result, &trace, started.elapsed()).await;
        result
    }

    /// Re-fetches every volume of a pod now, ignoring the poll interval and
    /// any backoff, with the request kubelet last sent (`secrets-store.csi.k8s.io/refresh`).
    /// A volume whose tokens have expired waits for kubelet's next
    /// republish, which brings fresh ones. Returns how many were re-fetched.
    pub async fn refresh_pod(&self, namespace: &str, name: &str) -> usize {
        let mut refreshed = 0;
        for volume_id in self.volumes.of_pod(namespace, name) {
            let started = Instant::now();
            let mut trace = Trace::default();
            let result = self.refresh_volume(&volume_id, &mut trace).await;
            if let Ok(Some(outcome)) = &result {
                refreshed += 1;
                tracing::info!(
                    volume_id,
                    namespace,
                    pod = name,
                    outcome = outcome.describe(),
                    "on-demand refresh"
                );
            }
            let result = result.map(|o| o.unwrap_or(PublishOutcome::AlreadyMounted));
            self.account(&result, &trace, started.elapsed()).await;
        }
        refreshed
    }

    /// Metrics, and a Warning event on the pod for a failure.
    async fn account(
        &self,
        result: &Result<PublishOutcome, PublishError>,
        trace: &Trace,
        elapsed: Duration,
    ) {
        let provider = trace.provider.as_str();
        let failure = match result {
            // Counted as upstream counts a masked republish error.
            Ok(PublishOutcome::RefreshFailed { reason, message }) => {
                self.metrics.publish_failed(provider, reason);
                self.metrics.rotation_failed(provider, reason);
                Some((reason.clone(), message.clone()))
            }
            Ok(outcome) => {
                self.metrics.published(provider, elapsed);
                if let PublishOutcome::Refreshed { changed, files } = outcome {
                    self.metrics.rotated(provider, *changed, *files, elapsed);
                }
                None
            }
            Err(e) => {
                self.metrics.publish_failed(provider, e.reason());
                // ABORTED only says another call on the volume is running.
                (!matches!(e, PublishError::Busy(_)))
                    .then(|| (e.reason().to_owned(), e.to_string()))
            }
        };
        if let (Some((reason, message)), Some((pod, spc))) = (failure, &trace.volume) {
            let failure = FailedPublish {
                pod,
                secret_provider_class: spc,
                provider,
                reason: &reason,
                message: &message,
            };
            self.observer.publish_failed(failure).await;
        }
    }

    async fn refresh_volume(
        &self,
        volume_id: &str,
        trace: &mut Trace,
    ) -> Result<Option<PublishOutcome>, PublishError> {
        let _guard = self.guards.try_lock(volume_id)?;
        // Unpublished meanwhile: nothing to refresh.
        let Some(state) = self.volumes.get(volume_id) else {
            return Ok(None);
        };
        let req = state.request.clone();
        trace.volume = Some((req.pod.clone(), req.spc_name.clone()));
        trace.provider.clone_from(&state.provider);
        if let Some(audience) = expired_token(&req) {
            tracing::info!(
                volume_id,
                audience,
                "token expired; the refresh waits for kubelet's next republish"
            );
            return Ok(None);
        }
        let mounted = self
            .mounter
            .is_mounted(&req.target_path)
            .map_err(|source| PublishError::MountCheck { path: req.target_path.clone(), source })?;
        if !mounted {
            return Ok(None);
        }
        let (class, refresh) = self.refresh_policy(&req, &state).await;
        if refresh == Refresh::Once {
            tracing::info!(volume_id, "the class is fetched once, at mount: not refreshed");
            return Ok(None);
        }
        self.fetch_masked(&req, true, state.versions, class, Purpose::Forced, trace).await.map(Some)
    }

    async fn publish_volume(
        &self,
        raw: NodePublishVolumeRequest,
        trace: &mut Trace,
    ) -> Result<PublishOutcome, PublishError> {
        let req = PublishRequest::parse(raw)?;
        trace.volume = Some((req.pod.clone(), req.spc_name.clone()));
        let _guard = self.guards.try_lock(&req.volume_id)?;
        let mounted = self.prepare_target(&req.target_path)?;
        let state = self.volumes.get(&req.volume_id);
        if let Some(state) = &state {
            trace.provider.clone_from(&state.provider);
        }
        let mut class = None;
        if mounted {
            self.volumes.update_request(&req.volume_id, &req);
            // Mounted from the last-known-good copy: fetched again at every
            // republish until the backend answers, whatever the rotation.
            let copy = state.as_ref().is_some_and(|s| s.from_copy);
            // Rotation off: nothing to decide, no class to read.
            if self.rotation_poll_interval.is_none() && !copy {
                return Ok(PublishOutcome::AlreadyMounted);
            }
            if state.as_ref().and_then(|s| s.retry_at).is_some_and(|at| Instant::now() < at) {
                return Ok(PublishOutcome::BackingOff);
            }
            let refresh = match &state {
                Some(state) => {
                    let (read, refresh) = self.refresh_policy(&req, state).await;
                    class = read;
                    refresh
                }
                None => Refresh::Default,
            };
            if !copy && !self.refresh_due(state.as_ref(), refresh) {
                return Ok(PublishOutcome::AlreadyMounted);
            }
        }
        let held = state.map(|s| s.versions).unwrap_or_default();
        let purpose = if mounted { Purpose::Rotation } else { Purpose::FirstMount };
        self.fetch_masked(&req, mounted, held, class, purpose, trace).await
    }

    /// The volume's class (the pinned one, else as it is now, so an edit
    /// applies at once) and how often it asks to be refreshed. The class is
    /// handed on to the fetch, which then does not read it again. A class
    /// that cannot be read is refreshed as the others: the fetch reads it
    /// again and reports why.
    async fn refresh_policy(
        &self,
        req: &PublishRequest,
        state: &VolumeState,
    ) -> (Option<Arc<SecretProviderClass>>, Refresh) {
        let class = match &state.pinned {
            Some(pinned) => Some(pinned.clone()),
            None => self.resolve(req).await.ok().map(Arc::new),
        };
        let refresh = class.as_ref().and_then(|c| self.engine.refresh(c).ok()).unwrap_or_default();
        (class, refresh)
    }

    async fn fetch_masked(
        &self,
        req: &PublishRequest,
        mounted: bool,
        held: Vec<ObjectVersion>,
        class: Option<Arc<SecretProviderClass>>,
        purpose: Purpose,
        trace: &mut Trace,
    ) -> Result<PublishOutcome, PublishError> {
        match self.fetch_and_write(req, mounted, held, class, purpose, &mut trace.provider).await {
            Ok(outcome) => Ok(outcome),
            // A republish error would make kubelet delete the volume's files
            // (kubernetes/kubernetes#121271): keep them and report success, as upstream.
            Err(e) if mounted => {
                let retry_in = self.volumes.record_failure(&req.volume_id, self.refresh_backoff);
                tracing::warn!(
                    volume_id = req.volume_id, reason = e.reason(), error = %e, ?retry_in,
                    "refresh of a mounted volume failed; keeping the previous content"
                );
                Ok(PublishOutcome::RefreshFailed {
                    reason: e.reason().to_owned(),
                    message: e.to_string(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Makes sure the target directory exists (kubelet ≥ 1.20 leaves that to
    /// the driver) and tells whether our tmpfs is already on it.
    fn prepare_target(&self, target: &Path) -> Result<bool, PublishError> {
        let target_err = |source| PublishError::Target { path: target.to_owned(), source };
        if !target.is_absolute() {
            return Err(PublishError::TargetNotAbsolute(target.display().to_string()));
        }
        match std::fs::symlink_metadata(target) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(target_err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a directory",
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(target).map_err(target_err)?;
                std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o750))
                    .map_err(target_err)?;
            }
            Err(e) => return Err(target_err(e)),
        }
        self.mounter
            .is_mounted(target)
            .map_err(|source| PublishError::MountCheck { path: target.to_owned(), source })
    }

    /// With rotation off a mounted volume is never re-fetched; with it on,
    /// once the class's interval (`refresh`: the poll interval unless the
    /// class sets its own, never below the floor) has passed since the last
    /// successful fetch, when another volume of its identity saw a newer
    /// version of an object it holds, or when this process has no record of
    /// one (a restart). A class fetched `once` is never re-fetched.
    fn refresh_due(&self, state: Option<&VolumeState>, refresh: Refresh) -> bool {
        let Some(global) = self.rotation_poll_interval else {
            return false;
        };
        let Some(interval) = refresh.interval(global, self.min_rotation_interval) else {
            return false;
        };
        match state {
            None => true,
            Some(s) => s.due || s.last_fetch.elapsed() >= interval,
        }
    }

    /// One fetch, in four steps: resolve the class, fetch through the
    /// engine, materialize the files, record the volume.
    async fn fetch_and_write(
        &self,
        req: &PublishRequest,
        mounted: bool,
        held: Vec<ObjectVersion>,
        class: Option<Arc<SecretProviderClass>>,
        purpose: Purpose,
        provider_name: &mut String,
    ) -> Result<PublishOutcome, PublishError> {
        // Already read for the refresh decision (or pinned), else read now.
        let spc = match class {
            Some(class) => class,
            None => Arc::new(self.resolve(req).await?),
        };
        provider_name.clone_from(&spc.spec.provider);
        // A provider that may write into the volume itself finds it mounted,
        // as upstream mounts before every provider call.
        let premounted =
            !mounted && self.engine.provider(&spc).is_ok_and(|provider| provider.writes_target());
        if premounted {
            self.mounter.mount(&req.target_path, req.group).map_err(PublishError::Mount)?;
        }
        let (fetched, copy_age) = match self.fetch(req, &spc, &held, mounted, purpose).await {
            Ok(fetched) => fetched,
            Err(e) => {
                self.abandon_first_mount(req, !premounted);
                return Err(e);
            }
        };
        let versions = fetched.versions.clone();
        let written = self.materialize(req, mounted, premounted, fetched).await?;
        let outcome = self.record(req, &spc, mounted, held, versions, written).await?;
        if let Some(age) = copy_age {
            self.volumes.mounted_from_copy(&req.volume_id, age);
        }
        Ok(outcome)
    }

    /// The volume's SecretProviderClass, checked.
    async fn resolve(&self, req: &PublishRequest) -> Result<SecretProviderClass, PublishError> {
        let spc = self.spcs.get(&req.pod.namespace, &req.spc_name).await?;
        spc::validate(&spc)?;
        Ok(spc)
    }

    /// The fetch, and the age of the last-known-good copy that answered it
    /// because the backend is down.
    async fn fetch(
        &self,
        req: &PublishRequest,
        spc: &SecretProviderClass,
        held: &[ObjectVersion],
        mounted: bool,
        purpose: Purpose,
    ) -> Result<(Fetched, Option<Duration>), PublishError> {
        let files = HeldFiles(&req.target_path);
        let fetch = Fetch {
            class: spc,
            attributes: &req.attributes,
            identity: Identity { pod: &req.pod, tokens: &req.tokens, secrets: &req.secrets },
            held,
            mounted: mounted.then_some(&files as &dyn MountedFiles),
            purpose,
            target_path: Some(&req.target_path),
        };
        let (result, call) = self.engine.fetch(fetch).await;
        if let Some(call) = call {
            self.metrics.backend_request(&spc.spec.provider, call.ok, call.elapsed);
        }
        if let Some(copies) = &self.last_known_good
            && let Some(key) = LastKnownGood::key(spc, req)
        {
            match &result {
                Ok(fetched) => copies.keep(key, fetched),
                Err(FetchError::Provider { source, .. })
                    if purpose == Purpose::FirstMount && is_outage(source.code()) =>
                {
                    if let Some((copy, age)) = copies.serve(&key) {
                        let message = format!(
                            "{}; mounted the copy this node fetched {} s ago for the same identity (--serve-last-known-good), fetched again at the next republish",
                            result.as_ref().err().map(ToString::to_string).unwrap_or_default(),
                            age.as_secs()
                        );
                        tracing::warn!(volume_id = req.volume_id, %message, "served the last-known-good copy");
                        let failure = FailedPublish {
                            pod: &req.pod,
                            secret_provider_class: &req.spc_name,
                            provider: &spc.spec.provider,
                            reason: LAST_KNOWN_GOOD_REASON,
                            message: &message,
                        };
                        self.observer.publish_failed(failure).await;
                        return Ok((copy, Some(age)));
                    }
                }
                Err(_) => {}
            }
        }
        result.map(|fetched| (fetched, None)).map_err(|e| match e {
            FetchError::UnknownProvider { spc, source } => {
                PublishError::UnknownProvider { spc, source }
            }
            FetchError::Provider { provider, identity, source } => {
                PublishError::Provider { pod: pod_ref(req), identity, provider, source }
            }
            FetchError::Files { spc, source } => PublishError::Files { spc, source },
            FetchError::Parameter { spc, source } => PublishError::Parameter { spc, source },
        })
    }

    /// Mounts the tmpfs on a first mount (unless `premounted` for the
    /// provider) and writes the files atomically; files a provider wrote
    /// itself are read back instead (for sync). A failed first mount leaves
    /// nothing mounted.
    async fn materialize(
        &self,
        req: &PublishRequest,
        mounted: bool,
        premounted: bool,
        fetched: Fetched,
    ) -> Result<Written, PublishError> {
        if !mounted && !premounted {
            self.mounter.mount(&req.target_path, req.group).map_err(PublishError::Mount)?;
        }
        let result = if fetched.written_by_provider {
            // Upstream cannot tell whether such a provider changed anything;
            // neither can we, so every such fetch counts as a change.
            self.read_provider_files(req).await.map(|files| Written { files, changed: true })
        } else {
            let files = Arc::new(fetched.files);
            self.write(req, files.clone()).await.map(|outcome| Written {
                files,
                changed: !mounted || outcome != WriteOutcome::Unchanged,
            })
        };
        if result.is_err() {
            self.abandon_first_mount(req, mounted);
        }
        result
    }

    /// The files a legacy provider left in the volume, as upstream reads them.
    async fn read_provider_files(
        &self,
        req: &PublishRequest,
    ) -> Result<Arc<Vec<SecretFile>>, PublishError> {
        let writer = AtomicWriter::new(&req.target_path);
        let files = tokio::task::spawn_blocking(move || writer.read_visible())
            .await
            .map_err(|e| PublishError::Internal(format!("read task: {e}")))?
            .map_err(|source| PublishError::Write {
                pod: pod_ref(req),
                path: req.target_path.clone(),
                source,
            })?;
        let files = files
            .into_iter()
            .map(|(path, (mode, contents))| SecretFile { path, mode, contents })
            .collect();
        Ok(Arc::new(files))
    }

    /// The pod status object (and synced Secrets), then the volume table.
    /// When the versions moved, the other volumes of the same identity that
    /// hold an older version of one of these objects are made due: their
    /// next republish takes the answer this fetch left shared, instead of
    /// waiting out their own interval.
    async fn record(
        &self,
        req: &PublishRequest,
        spc: &Arc<SecretProviderClass>,
        mounted: bool,
        held: Vec<ObjectVersion>,
        versions: Vec<ObjectVersion>,
        written: Written,
    ) -> Result<PublishOutcome, PublishError> {
        let provider = spc.spec.provider.as_str();
        let versions_changed = !mounted || versions != held;
        let volume = MountedVolume {
            pod: &req.pod,
            secret_provider_class: &req.spc_name,
            provider,
            target_path: &req.target_path,
            versions: &versions,
            versions_changed,
            content_changed: written.changed,
            refresh: mounted,
            files: &written.files,
            secret_objects: spc.spec.secret_objects.as_deref().unwrap_or_default(),
            pinned_generation: self
                .pin_class_generation
                .then(|| spc.metadata.generation.unwrap_or_default()),
        };
        match self.observer.mounted(volume).await {
            Ok(report) => self.metrics.synced(provider, &report),
            Err(e) => {
                self.abandon_first_mount(req, mounted);
                return Err(PublishError::Status(e));
            }
        }
        if mounted && versions_changed {
            let due =
                self.volumes.mark_older_holders_due(&req.volume_id, &req.pod, provider, &versions);
            if due > 0 {
                tracing::info!(
                    volume_id = req.volume_id,
                    due,
                    "newer versions seen; volumes of the same identity holding older ones are due"
                );
            }
        }
        self.volumes.insert(
            &req.volume_id,
            VolumeState {
                request: Arc::new(req.clone()),
                provider: provider.to_owned(),
                versions,
                last_fetch: Instant::now(),
                due: false,
                from_copy: false,
                failures: 0,
                retry_at: None,
                pinned: self.pin_class_generation.then(|| spc.clone()),
            },
        );
        Ok(if mounted {
            let files = if written.changed { written.files.len() } else { 0 };
            PublishOutcome::Refreshed { changed: written.changed, files }
        } else {
            PublishOutcome::Mounted
        })
    }

    /// After a failed first mount, leaves nothing mounted: kubelet's retry
    /// starts over. A refresh keeps its mount and previous files.
    fn abandon_first_mount(&self, req: &PublishRequest, mounted: bool) {
        if mounted {
            return;
        }
        if let Err(e) = self.mounter.unmount(&req.target_path) {
            tracing::warn!(target = %req.target_path.display(), error = %e, "unmount after failed publish");
        }
    }

    async fn write(
        &self,
        req: &PublishRequest,
        files: Arc<Vec<SecretFile>>,
    ) -> Result<WriteOutcome, PublishError> {
        let writer = AtomicWriter::new(&req.target_path).with_group(req.group);
        let write_err = |source| PublishError::Write {
            pod: pod_ref(req),
            path: req.target_path.clone(),
            source,
        };
        // On tmpfs the write is a few dozen syscalls on memory that never wait
        // for a disk: done in place, it saves two thread handoffs per publish.
        // On disk (--no-tmpfs) its fsyncs can wait, so it leaves the runtime.
        if self.mounter.in_memory() {
            return writer.write(&files).map_err(write_err);
        }
        tokio::task::spawn_blocking(move || writer.write(&files))
            .await
            .map_err(|e| PublishError::Internal(format!("write task: {e}")))?
            .map_err(write_err)
    }

    pub async fn unpublish(&self, req: NodeUnpublishVolumeRequest) -> Result<(), UnpublishError> {
        let result = self.unpublish_volume(req).await;
        self.metrics.unpublished(result.is_ok());
        result
    }

    async fn unpublish_volume(
        &self,
        req: NodeUnpublishVolumeRequest,
    ) -> Result<(), UnpublishError> {
        if req.volume_id.is_empty() {
            return Err(UnpublishError::MissingVolumeId);
        }
        if req.target_path.is_empty() {
            return Err(UnpublishError::MissingTargetPath);
        }
        let target = Path::new(&req.target_path);
        if !target.is_absolute() {
            return Err(UnpublishError::TargetNotAbsolute(req.target_path));
        }
        let _guard = self.guards.try_lock(&req.volume_id)?;
        match std::fs::symlink_metadata(target) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.volumes.remove(&req.volume_id);
                return Ok(());
            }
            Err(source) => {
                return Err(UnpublishError::Remove { path: target.to_owned(), source });
            }
            Ok(_) => {}
        }
        if self.mounter.is_mounted(target).map_err(UnpublishError::Unmount)? {
            self.mounter.unmount(target).map_err(UnpublishError::Unmount)?;
        }
        // Without a tmpfs (a development mounter, or a mount already gone) the
        // files are on disk: remove what the writer made, and only that. After
        // an unmount this finds nothing.
        AtomicWriter::new(target)
            .remove_all()
            .map_err(|source| UnpublishError::Cleanup { path: target.to_owned(), source })?;
        match std::fs::remove_dir(target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(UnpublishError::Remove { path: target.to_owned(), source });
            }
        }
        self.volumes.remove(&req.volume_id);
        Ok(())
    }
}

/// The audience of a token that has expired or expires within a minute.
/// A token without a readable expiry is taken as valid.
fn expired_token(req: &PublishRequest) -> Option<&str> {
    let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60);
    req.tokens.iter().find_map(|(audience, token)| {
        let expiry: jiff::Timestamp = token.expiration_timestamp.parse().ok()?;
        (expiry < soon).then_some(audience.as_str())
    })
}

fn pod_ref(req: &PublishRequest) -> String {
    format!("{}/{}", req.pod.namespace, req.pod.name)
}

/// What a fetch wrote.
struct Written {
    files: Arc<Vec<SecretFile>>,
    /// False on a refresh that left every file as it was.
    changed: bool,
}

/// The files of a mounted volume, read for a provider that uses them.
struct HeldFiles<'a>(&'a Path);

#[async_trait::async_trait]
impl MountedFiles for HeldFiles<'_> {
    async fn read(&self) -> BTreeMap<String, SecretBytes> {
        let writer = AtomicWriter::new(self.0);
        match tokio::task::spawn_blocking(move || writer.read_current()).await {
            Ok(Ok(files)) => files.into_iter().map(|(path, (_, bytes))| (path, bytes)).collect(),
            Ok(Err(e)) => {
                tracing::warn!(target = %self.0.display(), error = %e, "cannot read the mounted files");
                BTreeMap::new()
            }
            Err(_) => BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use sscsi_proto::TOKENS_KEY;
    use sscsi_proto::csi::v1::VolumeCapability;

    use super::*;

    fn request_with_token_expiring(at: &str) -> PublishRequest {
        let tokens = format!(r#"{{"vault":{{"token":"t","expirationTimestamp":"{at}"}}}}"#);
        PublishRequest::parse(NodePublishVolumeRequest {
            volume_id: "v".into(),
            target_path: "/t".into(),
            volume_capability: Some(VolumeCapability::default()),
            readonly: true,
            volume_context: HashMap::from([
                ("secretProviderClass".into(), "spc".into()),
                ("csi.storage.k8s.io/pod.namespace".into(), "ns".into()),
                (TOKENS_KEY.into(), tokens),
            ]),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn a_refresh_waits_for_fresh_tokens() {
        let past = (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(5)).to_string();
        let soon = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(30)).to_string();
        let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600)).to_string();
        assert_eq!(expired_token(&request_with_token_expiring(&past)), Some("vault"));
        assert_eq!(expired_token(&request_with_token_expiring(&soon)), Some("vault"));
        assert_eq!(expired_token(&request_with_token_expiring(&later)), None);
        assert_eq!(expired_token(&request_with_token_expiring("not a time")), None);
    }
}
