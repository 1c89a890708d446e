//! What the driver knows about the volumes it mounted: the source of truth
//! for "already published" and "due for a re-fetch", instead of upstream's
//! directory mtime (which can report a fresh mount with nothing mounted).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use sscsi_core::{ObjectVersion, PodInfo};

use crate::Backoff;
use crate::context::PublishRequest;

#[derive(Debug, Clone)]
pub(crate) struct VolumeState {
    /// The request of the last successful publish; tokens included, held
    /// only in memory and wiped when dropped.
    pub request: Arc<PublishRequest>,
    pub provider: String,
    pub versions: Vec<ObjectVersion>,
    pub last_fetch: Instant,
    /// Due at the next republish, whatever the interval: another volume of
    /// the same identity found a newer version of an object this one holds.
    pub due: bool,
    /// Refreshes failed in a row since the last successful fetch.
    pub failures: u32,
    /// No refresh before this, after a failure.
    pub retry_at: Option<Instant>,
    /// The class as it was at the first mount, with `--pin-class-generation`:
    /// every refresh uses it, whatever edits came after.
    pub pinned: Option<Arc<sscsi_api::SecretProviderClass>>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct VolumeTable {
    volumes: Arc<Mutex<HashMap<String, VolumeState>>>,
}

impl VolumeTable {
    pub fn get(&self, volume_id: &str) -> Option<VolumeState> {
        self.volumes.lock().expect("volume table lock poisoned").get(volume_id).cloned()
    }

    pub fn insert(&self, volume_id: &str, state: VolumeState) {
        self.volumes
            .lock()
            .expect("volume table lock poisoned")
            .insert(volume_id.to_owned(), state);
    }

    /// Records a failed refresh; returns the backoff delay, or None when the
    /// volume has no record (e.g. mounted before a restart).
    pub fn record_failure(&self, volume_id: &str, backoff: Backoff) -> Option<Duration> {
        let mut volumes = self.volumes.lock().expect("volume table lock poisoned");
        let state = volumes.get_mut(volume_id)?;
        state.failures = state.failures.saturating_add(1);
        let delay = backoff.delay(state.failures);
        state.retry_at = Some(Instant::now() + delay);
        Some(delay)
    }

    /// Keeps the newest request (fresh tokens) of a mounted volume, for
    /// on-demand refreshes between fetches.
    pub fn update_request(&self, volume_id: &str, request: &PublishRequest) {
        let mut volumes = self.volumes.lock().expect("volume table lock poisoned");
        if let Some(state) = volumes.get_mut(volume_id) {
            state.request = Arc::new(request.clone());
        }
    }

    /// Makes due every other volume of `pod`'s namespace and service
    /// account, with the same provider, that holds one of `seen` at another
    /// version; returns how many. A volume of another class that happens
    /// to use the same object id is made due too: its refresh then costs a
    /// shared check at most.
    pub fn mark_older_holders_due(
        &self,
        volume_id: &str,
        pod: &PodInfo,
        provider: &str,
        seen: &[ObjectVersion],
    ) -> usize {
        let mut volumes = self.volumes.lock().expect("volume table lock poisoned");
        let mut due = 0;
        for (id, state) in volumes.iter_mut() {
            let holder = &state.request.pod;
            let same_identity = id != volume_id
                && state.provider == provider
                && holder.namespace == pod.namespace
                && holder.service_account == pod.service_account;
            let older = || {
                state.versions.iter().any(|held| {
                    seen.iter().any(|new| new.id == held.id && new.version != held.version)
                })
            };
            if same_identity && !state.due && older() {
                state.due = true;
                due += 1;
            }
        }
        due
    }

    /// The volumes of one pod, by volume id.
    pub fn of_pod(&self, namespace: &str, name: &str) -> Vec<String> {
        let volumes = self.volumes.lock().expect("volume table lock poisoned");
        volumes
            .iter()
            .filter(|(_, v)| v.request.pod.namespace == namespace && v.request.pod.name == name)
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn remove(&self, volume_id: &str) {
        self.volumes.lock().expect("volume table lock poisoned").remove(volume_id);
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ObjectLabels {
    namespace: String,
    pod: String,
    secret_provider_class: String,
    provider: String,
    object: String,
}

/// `sscsi_mounted_object_age_seconds`: for every mounted object, the time
/// since its volume's last successful fetch, read at scrape time. A rotation
/// that silently stopped shows as an age that keeps growing.
#[derive(Debug, Clone)]
pub(crate) struct ObjectAges(pub Arc<std::sync::OnceLock<VolumeTable>>);

impl Collector for ObjectAges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let volumes: Vec<VolumeState> = match self.0.get() {
            Some(table) => table
                .volumes
                .lock()
                .expect("volume table lock poisoned")
                .values()
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        let gauge = ConstGauge::new(0.0f64);
        let mut family = encoder.encode_descriptor(
            "sscsi_mounted_object_age_seconds",
            "Seconds since the mounted object's content was last fetched successfully",
            None,
            gauge.metric_type(),
        )?;
        for volume in volumes {
            let age = volume.last_fetch.elapsed().as_secs_f64();
            for object in &volume.versions {
                let labels = ObjectLabels {
                    namespace: volume.request.pod.namespace.clone(),
                    pod: volume.request.pod.name.clone(),
                    secret_provider_class: volume.request.spc_name.clone(),
                    provider: volume.provider.clone(),
                    object: object.id.clone(),
                };
                ConstGauge::new(age).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
