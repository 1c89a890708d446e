//! The node side of sscsi: the CSI Identity and Node services kubelet calls,
//! the publish pipeline behind NodePublishVolume, and the unix-socket server.
//!
//! Publish, one volume: validate the request → take the volume's guard →
//! check the target (already our tmpfs?) → resolve the SecretProviderClass →
//! build the provider's request → fetch → ensure tmpfs → atomic write →
//! record the volume. Each step has its own error variant; [`error`] maps
//! every variant to a gRPC code and an upstream reason string, in one place.

pub mod client;
mod context;
pub mod error;
mod guard;
pub mod http;
mod identity;
pub mod metrics;
mod node;
pub mod observer;
mod publish;
mod readiness;
pub mod registration;
pub mod server;
pub mod spc;
mod volumes;

use std::sync::Arc;
use std::time::Duration;

pub use identity::IdentityService;
pub use node::NodeService;
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
