//! The Kubernetes side: the client, a watch-backed cache of
//! SecretProviderClasses, the [`KubeObserver`] that writes
//! SecretProviderClassPodStatus objects and Events on the pod, and the
//! SecretSync controller ([`secretsync`]) with its leader election.

pub mod audit;
mod lease;
mod observer;
mod outbox;
mod refresh;
pub mod secretsync;
mod spc_cache;
mod sync;
pub mod tls;

use std::path::Path;

pub use kube::Client;
pub use lease::{Elector, LeaseConfig, LeaseError};
pub use observer::KubeObserver;
pub use outbox::MAX_EVENTS;
pub use refresh::{REFRESH_ANNOTATION, watch_refresh_requests};
pub use spc_cache::SpcCache;
pub use sync::{MANAGED_LABEL, SyncError, SyncOutcome, SyncPolicy};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("read kubeconfig {path}: {source}")]
    Kubeconfig { path: String, source: kube::config::KubeconfigError },
    #[error("no Kubernetes configuration (not in a cluster and no kubeconfig): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("build the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// In-cluster configuration (the pod's service account), else the
/// kubeconfig file `KUBECONFIG` names, else the one given here.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig_err =
                |source| ClientError::Kubeconfig { path: path.display().to_string(), source };
            let file = kube::config::Kubeconfig::read_from(path).map_err(kubeconfig_err)?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(kubeconfig_err)?
        }
        None => kube::Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

/// The node label cloud providers read their default region from.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";

/// This node's `topology.kubernetes.io/region`, if the node can be read and
/// has one. Read once at startup: a node does not change region.
pub async fn node_region(client: &Client, node_name: &str) -> Option<String> {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    match nodes.get_metadata_opt(node_name).await {
        Ok(node) => node.and_then(|n| n.metadata.labels).and_then(|l| l.get(REGION_LABEL).cloned()),
        Err(e) => {
            tracing::warn!(node = node_name, error = %e, "cannot read this node's region label");
            None
        }
    }
}
