//! The node plugin assembled one way, for the binary, the demo, the
//! testkit and the tests: services over shared state, metrics in a
//! registry, readiness, and the CSI server on its private socket.

use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use sscsi_core::ProviderRegistry;
use sscsi_mount::Mounter;
use tokio::task::JoinHandle;

use crate::metrics::NodeMetrics;
use crate::{
    Condition, IdentityService, NodeConfig, NodeDeps, NodeService, Readiness, Refresher, observer,
    server, services, spc,
};

/// What a node plugin is made of besides its configuration.
#[derive(Debug)]
pub struct Parts {
    pub mounter: Arc<dyn Mounter>,
    pub spcs: Arc<dyn spc::SpcSource>,
    pub providers: ProviderRegistry,
    pub observer: Arc<dyn observer::VolumeObserver>,
    /// Shared with whatever else reports a condition (the class cache).
    pub readiness: Readiness,
    /// Where the node's metrics go, beside any the caller registered.
    pub registry: Registry,
}

/// A node plugin, ready to serve.
#[derive(Debug)]
pub struct Plugin {
    identity: IdentityService,
    node: NodeService,
    pub readiness: Readiness,
    /// Every metric, for `/metrics`.
    pub registry: Arc<Registry>,
}

impl Plugin {
    pub fn new(config: NodeConfig, parts: Parts) -> Self {
        let Parts { mounter, spcs, providers, observer, readiness, mut registry } = parts;
        let metrics = NodeMetrics::new(&mut registry);
        registry.register_collector(Box::new(readiness.clone()));
        let deps =
            NodeDeps { mounter, spcs, providers, readiness: readiness.clone(), metrics, observer };
        let (identity, node) = services(config, deps);
        Self { identity, node, readiness, registry: Arc::new(registry) }
    }

    /// On-demand refreshes of the volumes this plugin mounts.
    pub fn refresher(&self) -> Refresher {
        self.node.refresher()
    }

    /// Binds `socket` (owner only, a stale socket replaced), marks the
    /// plugin serving and serves until `shutdown`, then lets calls in
    /// flight finish for `grace`.
    pub fn serve(
        &self,
        socket: &Path,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> io::Result<JoinHandle<Result<(), tonic::transport::Error>>> {
        let listener = server::bind_private(socket)?;
        self.readiness.mark(Condition::Serving, true);
        let (identity, node) = (self.identity.clone(), self.node.clone());
        Ok(tokio::spawn(server::serve(listener, identity, node, shutdown, grace)))
    }
}
