//! Prometheus metrics. Upstream's names and labels are kept exactly, so
//! existing dashboards and alerts work (`node_publish_total`, ... with
//! `provider`, `error_type`, `os_type`, `rotated`); ours are prefixed `sscsi_`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::volumes::{Freshness, Scraped, VolumeTable};

/// Upstream's `os_type` label value on Linux nodes.
const OS_TYPE: &str = "linux";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OsLabels {
    os_type: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
    os_type: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    provider: String,
    error_type: String,
    os_type: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RotationLabels {
    provider: String,
    os_type: &'static str,
    rotated: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RotationErrorLabels {
    provider: String,
    error_type: String,
    os_type: &'static str,
    rotated: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    provider: String,
    outcome: &'static str,
}

fn histogram() -> Histogram {
    // 1 ms to ~65 s: upstream's 0.1 s to 2 s buckets cannot tell a cache hit
    // from a cold cloud call, nor see kubelet's 2 min deadline coming.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// The node plugin's metrics. Cheap to clone; clones share the series.
#[derive(Debug, Clone)]
pub struct NodeMetrics {
    node_publish: Family<ProviderLabels, Counter>,
    node_publish_error: Family<ErrorLabels, Counter>,
    node_unpublish: Family<OsLabels, Counter>,
    node_unpublish_error: Family<OsLabels, Counter>,
    rotation_reconcile: Family<RotationLabels, Counter>,
    rotation_reconcile_error: Family<RotationErrorLabels, Counter>,
    rotation_reconcile_duration: Family<OsLabels, Histogram>,
    publish_duration: Family<ProviderLabels, Histogram>,
    backend_requests: Family<BackendLabels, Counter>,
    backend_duration: Family<BackendLabels, Histogram>,
    sync_secret: Family<ProviderLabels, Counter>,
    sync_secret_error: Family<ErrorLabels, Counter>,
    /// The publisher's volume table, once it lends it: freshness is read
    /// from it at scrape time.
    volumes: Arc<OnceLock<Scraped>>,
    files_rewritten: Family<ProviderLabels, Counter>,
}

impl NodeMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            node_publish: Family::default(),
            node_publish_error: Family::default(),
            node_unpublish: Family::default(),
            node_unpublish_error: Family::default(),
            rotation_reconcile: Family::default(),
            rotation_reconcile_error: Family::default(),
            rotation_reconcile_duration: Family::new_with_constructor(histogram),
            publish_duration: Family::new_with_constructor(histogram),
            backend_requests: Family::default(),
            backend_duration: Family::new_with_constructor(histogram),
            sync_secret: Family::default(),
            sync_secret_error: Family::default(),
            volumes: Arc::default(),
            files_rewritten: Family::default(),
        };
        // Upstream declares `sync_k8s_secret` but never records it; we do.
        registry.register(
            "sync_k8s_secret",
            "Kubernetes Secrets synced from secretObjects",
            m.sync_secret.clone(),
        );
        registry.register(
            "sscsi_sync_k8s_secret_error",
            "Kubernetes Secrets that could not be synced, by event reason",
            m.sync_secret_error.clone(),
        );
        registry.register_collector(Box::new(Freshness(m.volumes.clone())));
        registry.register(
            "sscsi_rotation_files_rewritten",
            "Files written again by refreshes that found changed content",
            m.files_rewritten.clone(),
        );
        // The encoder appends `_total` to counters, giving upstream's names.
        registry.register(
            "node_publish",
            "Successful NodePublishVolume calls",
            m.node_publish.clone(),
        );
        registry.register(
            "node_publish_error",
            "Failed NodePublishVolume calls",
            m.node_publish_error.clone(),
        );
        registry.register(
            "node_unpublish",
            "Successful NodeUnpublishVolume calls",
            m.node_unpublish.clone(),
        );
        registry.register(
            "node_unpublish_error",
            "Failed NodeUnpublishVolume calls",
            m.node_unpublish_error.clone(),
        );
        registry.register(
            "rotation_reconcile",
            "Re-fetches of mounted volumes",
            m.rotation_reconcile.clone(),
        );
        registry.register(
            "rotation_reconcile_error",
            "Failed re-fetches of mounted volumes",
            m.rotation_reconcile_error.clone(),
        );
        registry.register(
            "rotation_reconcile_duration_sec",
            "Duration of re-fetches of mounted volumes, in seconds",
            m.rotation_reconcile_duration.clone(),
        );
        registry.register(
            "sscsi_node_publish_duration_seconds",
            "Duration of successful NodePublishVolume calls",
            m.publish_duration.clone(),
        );
        registry.register(
            "sscsi_provider_requests",
            "Provider fetches (one per volume mount or refresh), by outcome",
            m.backend_requests.clone(),
        );
        registry.register(
            "sscsi_provider_request_duration_seconds",
            "Duration of provider fetches",
            m.backend_duration.clone(),
        );
        m
    }

    /// Exports the freshness of `volumes` (the publisher's table), each
    /// volume with its pod's name when `pod_labels`, beside the node's
    /// rotation `interval`. The first table lent is the one read.
    pub(crate) fn read_volumes_from(
        &self,
        volumes: &VolumeTable,
        pod_labels: bool,
        interval: Option<Duration>,
    ) {
        let _ = self.volumes.set(Scraped { table: volumes.clone(), pod_labels, interval });
    }

    pub(crate) fn published(&self, provider: &str, elapsed: Duration) {
        let labels = ProviderLabels { provider: provider.to_owned(), os_type: OS_TYPE };
        self.publish_duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
        self.node_publish.get_or_create(&labels).inc();
    }

    pub(crate) fn publish_failed(&self, provider: &str, error_type: &str) {
        let labels = ErrorLabels {
            provider: provider.to_owned(),
            error_type: error_type.to_owned(),
            os_type: OS_TYPE,
        };
        self.node_publish_error.get_or_create(&labels).inc();
    }

    /// A refresh; `files`: how many it wrote again when the content `changed`.
    pub(crate) fn rotated(&self, provider: &str, changed: bool, files: usize, elapsed: Duration) {
        let rotated = if changed { "true" } else { "false" };
        if files > 0 {
            let labels = ProviderLabels { provider: provider.to_owned(), os_type: OS_TYPE };
            self.files_rewritten.get_or_create(&labels).inc_by(files as u64);
        }
        let labels = RotationLabels { provider: provider.to_owned(), os_type: OS_TYPE, rotated };
        self.rotation_reconcile.get_or_create(&labels).inc();
        self.rotation_reconcile_duration
            .get_or_create(&OsLabels { os_type: OS_TYPE })
            .observe(elapsed.as_secs_f64());
    }

    /// A refresh that failed; upstream labels these `rotated="true"`.
    pub(crate) fn rotation_failed(&self, provider: &str, error_type: &str) {
        let labels = RotationErrorLabels {
            provider: provider.to_owned(),
            error_type: error_type.to_owned(),
            os_type: OS_TYPE,
            rotated: "true",
        };
        self.rotation_reconcile_error.get_or_create(&labels).inc();
    }

    pub(crate) fn unpublished(&self, ok: bool) {
        let family = if ok { &self.node_unpublish } else { &self.node_unpublish_error };
        family.get_or_create(&OsLabels { os_type: OS_TYPE }).inc();
    }

    pub(crate) fn synced(&self, provider: &str, report: &crate::observer::MountedReport) {
        if report.secrets_synced > 0 {
            let labels = ProviderLabels { provider: provider.to_owned(), os_type: OS_TYPE };
            self.sync_secret.get_or_create(&labels).inc_by(report.secrets_synced as u64);
        }
        for reason in &report.sync_failures {
            let labels = ErrorLabels {
                provider: provider.to_owned(),
                error_type: (*reason).to_owned(),
                os_type: OS_TYPE,
            };
            self.sync_secret_error.get_or_create(&labels).inc();
        }
    }

    pub(crate) fn backend_request(&self, provider: &str, ok: bool, elapsed: Duration) {
        let labels = BackendLabels {
            provider: provider.to_owned(),
            outcome: if ok { "success" } else { "error" },
        };
        self.backend_requests.get_or_create(&labels).inc();
        self.backend_duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn exposes_upstream_names_and_labels() {
        let mut registry = Registry::default();
        let m = NodeMetrics::new(&mut registry);
        m.published("local", Duration::from_millis(3));
        m.publish_failed("aws", "ProviderError");
        m.rotated("local", true, 3, Duration::from_millis(5));
        m.rotation_failed("aws", "ProviderError");
        m.unpublished(true);
        m.unpublished(false);
        m.backend_request("local", true, Duration::from_millis(1));
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        for line in [
            r#"node_publish_total{provider="local",os_type="linux"} 1"#,
            r#"node_publish_error_total{provider="aws",error_type="ProviderError",os_type="linux"} 1"#,
            r#"node_unpublish_total{os_type="linux"} 1"#,
            r#"node_unpublish_error_total{os_type="linux"} 1"#,
            r#"rotation_reconcile_total{provider="local",os_type="linux",rotated="true"} 1"#,
            r#"rotation_reconcile_error_total{provider="aws",error_type="ProviderError",os_type="linux",rotated="true"} 1"#,
            r#"rotation_reconcile_duration_sec_count{os_type="linux"} 1"#,
            r#"sscsi_node_publish_duration_seconds_bucket{le="0.004",provider="local",os_type="linux"} 1"#,
            r#"sscsi_provider_requests_total{provider="local",outcome="success"} 1"#,
            r#"sscsi_rotation_files_rewritten_total{provider="local",os_type="linux"} 3"#,
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line} in\n{out}");
        }
    }
}
