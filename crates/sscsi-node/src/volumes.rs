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
    /// Mounted from the last-known-good copy (`--serve-last-known-good`):
    /// fetched again at every republish, rotation on or off, until a fetch
    /// succeeds.
    pub from_copy: bool,
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

    /// The volume holds the last-known-good copy fetched `age` ago: that is
    /// its age, and it is fetched again at every republish until a fetch
    /// succeeds.
    pub fn mounted_from_copy(&self, volume_id: &str, age: Duration) {
        let mut volumes = self.volumes.lock().expect("volume table lock poisoned");
        if let Some(state) = volumes.get_mut(volume_id) {
            state.from_copy = true;
            state.last_fetch = Instant::now().checked_sub(age).unwrap_or(state.last_fetch);
        }
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

#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct ClassLabels {
    namespace: String,
    secret_provider_class: String,
    provider: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeLabels {
    #[prometheus(flatten)]
    class: ClassLabels,
    pod: String,
}

/// The volume table as `/metrics` reads it, and whether the pod's name
/// labels each volume's age (cardinality grows with pods then).
#[derive(Debug, Clone)]
pub(crate) struct Scraped {
    pub table: VolumeTable,
    pub pod_labels: bool,
    /// The node's rotation interval, exported so an alert can compare ages
    /// with it; `None` with rotation off.
    pub interval: Option<std::time::Duration>,
}

/// Freshness read from the volume table at scrape time: for each
/// (namespace, class, provider) the age of its oldest volume's last
/// successful fetch and how many volumes it has; the oldest age on the
/// node; the volumes backing off after a failed refresh. A rotation that
/// silently stopped shows as an age that keeps growing.
#[derive(Debug, Clone)]
pub(crate) struct Freshness(pub Arc<std::sync::OnceLock<Scraped>>);

impl Collector for Freshness {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = Instant::now();
        // (class, pod, age, backing off), read under the lock, encoded after.
        let volumes: Vec<(ClassLabels, String, f64, bool)> = match self.0.get() {
            Some(scraped) => {
                let volumes = scraped.table.volumes.lock().expect("volume table lock poisoned");
                volumes
                    .values()
                    .map(|v| {
                        let class = ClassLabels {
                            namespace: v.request.pod.namespace.clone(),
                            secret_provider_class: v.request.spc_name.clone(),
                            provider: v.provider.clone(),
                        };
                        let age = now.saturating_duration_since(v.last_fetch).as_secs_f64();
                        let backing_off = v.retry_at.is_some_and(|at| at > now);
                        (class, v.request.pod.name.clone(), age, backing_off)
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let pod_labels = self.0.get().is_some_and(|s| s.pod_labels);
        let interval = self.0.get().and_then(|s| s.interval).unwrap_or_default();
        let mut classes: std::collections::BTreeMap<&ClassLabels, (f64, u64)> = Default::default();
        for (class, _, age, _) in &volumes {
            let entry = classes.entry(class).or_default();
            entry.0 = entry.0.max(*age);
            entry.1 += 1;
        }
        let gauge = |v: f64| ConstGauge::new(v);
        let mut family = encoder.encode_descriptor(
            "sscsi_volume_fetch_age_seconds",
            "Seconds since the last successful fetch of the oldest volume of a class on this node (each volume with --metrics-pod-labels)",
            None,
            gauge(0.0).metric_type(),
        )?;
        if pod_labels {
            for (class, pod, age, _) in &volumes {
                let labels = VolumeLabels { class: class.clone(), pod: pod.clone() };
                gauge(*age).encode(family.encode_family(&labels)?)?;
            }
        } else {
            for (class, (age, _)) in &classes {
                gauge(*age).encode(family.encode_family(*class)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "sscsi_volumes",
            "Volumes mounted on this node, by class",
            None,
            gauge(0.0).metric_type(),
        )?;
        for (class, (_, count)) in &classes {
            ConstGauge::new(*count as i64).encode(family.encode_family(*class)?)?;
        }
        let oldest = volumes.iter().map(|v| v.2).fold(0.0, f64::max);
        gauge(oldest).encode(encoder.encode_descriptor(
            "sscsi_oldest_fetch_age_seconds",
            "Seconds since the last successful fetch of the stalest volume on this node (0 with none)",
            None,
            gauge(0.0).metric_type(),
        )?)?;
        gauge(interval.as_secs_f64()).encode(encoder.encode_descriptor(
            "sscsi_rotation_interval_seconds",
            "The node's --rotation-poll-interval (0 with rotation off)",
            None,
            gauge(0.0).metric_type(),
        )?)?;
        let backing_off = volumes.iter().filter(|v| v.3).count() as i64;
        ConstGauge::new(backing_off).encode(encoder.encode_descriptor(
            "sscsi_rotation_volumes_in_backoff",
            "Volumes waiting out a backoff after a failed refresh",
            None,
            gauge(0.0).metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    use super::*;

    fn volume(pod: &str, class: &str, age: Duration, backing_off: bool) -> VolumeState {
        let now = Instant::now();
        let request = PublishRequest {
            volume_id: format!("v-{pod}"),
            target_path: format!("/pods/{pod}").into(),
            spc_name: class.to_owned(),
            pod: PodInfo {
                name: pod.to_owned(),
                namespace: "shop".to_owned(),
                uid: pod.to_owned(),
                service_account: "web".to_owned(),
            },
            attributes: Default::default(),
            tokens: Default::default(),
            secrets: Default::default(),
            group: None,
        };
        VolumeState {
            request: Arc::new(request),
            provider: "aws".to_owned(),
            versions: Vec::new(),
            last_fetch: now - age,
            due: false,
            from_copy: false,
            failures: u32::from(backing_off),
            retry_at: backing_off.then(|| now + Duration::from_secs(60)),
            pinned: None,
        }
    }

    fn scrape(pod_labels: bool) -> Vec<String> {
        let table = VolumeTable::default();
        table.insert("a", volume("web-0", "db", Duration::from_secs(30), false));
        table.insert("b", volume("web-1", "db", Duration::from_secs(300), true));
        table.insert("c", volume("web-2", "cache", Duration::from_secs(5), false));
        let scraped = Scraped { table, pod_labels, interval: Some(Duration::from_secs(120)) };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Freshness(Arc::new(scraped.into()))));
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        // Ages grow while the test runs: whole seconds are enough.
        out.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| match l.rsplit_once(' ') {
                Some((series, value)) => {
                    format!("{series} {}", value.parse::<f64>().unwrap().floor())
                }
                None => l.to_owned(),
            })
            .collect()
    }

    #[test]
    fn freshness_by_class_and_node_without_pod_names() {
        let db = r#"namespace="shop",secret_provider_class="db",provider="aws""#;
        let cache = r#"namespace="shop",secret_provider_class="cache",provider="aws""#;
        assert_eq!(
            scrape(false),
            [
                format!("sscsi_volume_fetch_age_seconds{{{cache}}} 5"),
                format!("sscsi_volume_fetch_age_seconds{{{db}}} 300"),
                format!("sscsi_volumes{{{cache}}} 1"),
                format!("sscsi_volumes{{{db}}} 2"),
                "sscsi_oldest_fetch_age_seconds 300".to_owned(),
                "sscsi_rotation_interval_seconds 120".to_owned(),
                "sscsi_rotation_volumes_in_backoff 1".to_owned(),
            ]
        );
    }

    #[test]
    fn with_pod_labels_each_volume_has_its_own_age() {
        let mut ages: Vec<String> = scrape(true)
            .into_iter()
            .filter(|l| l.starts_with("sscsi_volume_fetch_age_seconds"))
            .collect();
        ages.sort();
        let series = |class: &str, pod: &str, age: u32| {
            format!(
                r#"sscsi_volume_fetch_age_seconds{{namespace="shop",secret_provider_class="{class}",provider="aws",pod="{pod}"}} {age}"#
            )
        };
        assert_eq!(
            ages,
            [series("cache", "web-2", 5), series("db", "web-0", 30), series("db", "web-1", 300)]
        );
    }

    #[test]
    fn a_volume_mounted_from_a_copy_has_the_copys_age() {
        let table = VolumeTable::default();
        table.insert("v-web-0", volume("web-0", "db", Duration::ZERO, false));
        table.mounted_from_copy("v-web-0", Duration::from_secs(400));
        table.mounted_from_copy("unknown", Duration::from_secs(400));
        let state = table.get("v-web-0").unwrap();
        assert!(state.from_copy);
        let age = state.last_fetch.elapsed().as_secs();
        assert!((400..410).contains(&age), "{age}");
    }
}
