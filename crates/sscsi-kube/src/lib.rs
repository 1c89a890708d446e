//! The node plugin's Kubernetes side: the client, a watch-backed cache of
//! SecretProviderClasses, and the [`KubeObserver`] that writes
//! SecretProviderClassPodStatus objects and Events on the pod.

mod observer;
mod refresh;
mod spc_cache;
mod sync;
pub mod tls;

use std::path::Path;

pub use kube::Client;
pub use observer::KubeObserver;
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
