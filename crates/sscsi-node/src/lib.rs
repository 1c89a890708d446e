//! The node side of sscsi: the CSI Identity and Node services kubelet calls,
//! the publish pipeline behind NodePublishVolume, and the unix-socket server.
//!
//! Publish, one volume: validate the request → take the volume's guard →
//! check the target (already our tmpfs?) → resolve the SecretProviderClass →
//! fetch through the engine (`sscsi-engine`) → materialize (ensure tmpfs,
//! atomic write) → record (pod status, synced Secrets, the volume table).
//! Each step has its own error variant; [`error`] maps every variant to a
//! gRPC code and an upstream reason string, in one place. [`Plugin`] is the
//! one way to assemble and serve a node.

pub mod authority;
pub mod client;
mod context;
mod controller;
pub mod error;
mod guard;
pub mod http;
mod identity;
mod last_known_good;
pub mod metrics;
mod node;
pub mod observer;
mod plugin;
mod publish;
mod readiness;
pub mod registration;
pub mod server;
pub mod spc;
mod volumes;

use std::sync::Arc;
use std::time::Duration;

pub use controller::ControllerService;
pub use identity::IdentityService;
pub use node::{NodeService, Refresher};
pub use plugin::{Parts, Plugin};
pub use readiness::{Condition, Readiness};
pub use server::Endpoint;
use sscsi_core::ProviderRegistry;
use sscsi_mount::Mounter;

/// The CSI driver name kubelet and the CSIDriver object know us by.
pub const DEFAULT_DRIVER_NAME: &str = "secrets-store.csi.k8s.io";

/// What the node services need, assembled by the binary.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub driver_name: String,
    pub vendor_version: String,
    pub node_id: String,
    /// With rotation on, a republish re-fetches once this long has passed
    /// since the volume's last successful fetch; `None`: rotation off.
    pub rotation_poll_interval: Option<Duration>,
    /// How long a volume waits after a failed refresh before the next try.
    pub refresh_backoff: Backoff,
    /// The shortest interval a class may ask for (`sscsi.io/refresh`).
    pub min_rotation_interval: Duration,
    /// Each volume keeps the SecretProviderClass of its first mount until
    /// the pod is restarted, so an edit cannot break a rollout half way.
    pub pin_class_generation: bool,
    /// Label each volume's fetch age with its pod's name (one series per
    /// volume instead of per class).
    pub metrics_pod_labels: bool,
    /// `--serve-last-known-good`: how long a fetched copy may serve a new
    /// volume of the same identity while its backend is down; `None`: never.
    pub serve_last_known_good: Option<Duration>,
}

/// Exponential backoff with jitter, capped: after `n` failures in a row the
/// next try waits `base · 2^(n-1)`, at most `cap`, ±20 %. Keeps a throttled
/// backend from being hit by every republish of every volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: Duration::from_secs(10), cap: Duration::from_secs(300) }
    }
}

impl Backoff {
    pub fn delay(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(30);
        let delay = self.base.saturating_mul(1 << exponent).min(self.cap);
        delay.mul_f64(rand::random_range(0.8..1.2))
    }
}

/// What the node services work with, assembled by the binary.
#[derive(Debug, Clone)]
pub struct NodeDeps {
    pub mounter: Arc<dyn Mounter>,
    pub spcs: Arc<dyn spc::SpcSource>,
    pub providers: ProviderRegistry,
    pub readiness: Readiness,
    pub metrics: metrics::NodeMetrics,
    pub observer: Arc<dyn observer::VolumeObserver>,
}

/// Builds both CSI services over shared state.
pub fn services(config: NodeConfig, deps: NodeDeps) -> (IdentityService, NodeService) {
    let identity = IdentityService::new(
        config.driver_name.clone(),
        config.vendor_version.clone(),
        deps.readiness.clone(),
    );
    let node = NodeService::new(config, deps);
    (identity, node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let backoff = Backoff { base: Duration::from_secs(10), cap: Duration::from_secs(300) };
        for (failures, nominal) in [(1, 10.0), (2, 20.0), (3, 40.0), (6, 300.0), (40, 300.0)] {
            for _ in 0..20 {
                let d = backoff.delay(failures).as_secs_f64();
                assert!(d >= nominal * 0.8 && d <= nominal * 1.2, "{failures} failures: {d}s");
            }
        }
    }
}
