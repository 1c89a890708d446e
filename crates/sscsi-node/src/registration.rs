//! Kubelet plugin registration, built in: what the node-driver-registrar
//! sidecar does for upstream.
//!
//! Kubelet watches its plugin registry directory (`/var/lib/kubelet/plugins_registry`).
//! When `<driver>-reg.sock` appears it calls `GetInfo`, registers the CSI
//! endpoint we name, then calls `NotifyRegistrationStatus`. A failed
//! registration is logged, marks the process unready, and is retried by
//! recreating the socket after a backoff, which makes kubelet try again
//! (the sidecar exits instead and relies on a container restart).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sscsi_proto::registration::v1::registration_server::{Registration, RegistrationServer};
use sscsi_proto::registration::v1::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::server::bind_private;
use crate::{Condition, Readiness};

/// The plugin type kubelet expects from a CSI driver.
pub const CSI_PLUGIN_TYPE: &str = "CSIPlugin";
/// CSI versions we serve, as the registrar reports them.
pub const SUPPORTED_VERSIONS: &[&str] = &["1.0.0"];

const MIN_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct RegistrationConfig {
    /// Kubelet's plugin registry directory, as mounted in our container.
    pub registry_dir: PathBuf,
    pub driver_name: String,
    /// The CSI socket path on the host, as kubelet must dial it (the
    /// registrar's `--kubelet-registration-path`).
    pub kubelet_endpoint: String,
}

impl RegistrationConfig {
    /// `<registry dir>/<driver name>-reg.sock`, the name the registrar uses.
    pub fn socket_path(&self) -> PathBuf {
        self.registry_dir.join(format!("{}-reg.sock", self.driver_name))
    }
}

#[derive(Debug, Clone)]
pub struct RegistrationService {
    info: PluginInfo,
    readiness: Readiness,
    failed: Arc<Notify>,
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn get_info(&self, _: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        tracing::info!(
            name = self.info.name,
            endpoint = self.info.endpoint,
            "kubelet asked for plugin info"
        );
        Ok(Response::new(self.info.clone()))
    }

    async fn notify_registration_status(
        &self,
        request: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        self.readiness.mark(Condition::Registered, status.plugin_registered);
        if status.plugin_registered {
            tracing::info!("kubelet registered the plugin");
        } else {
            tracing::error!(
                error = status.error,
                "kubelet failed to register the plugin; will retry"
            );
            self.failed.notify_one();
        }
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}

/// Serves the registration socket until `shutdown`, recreating it after a
/// failed registration. Marks [`Condition::Registered`] as required.
pub async fn run(
    config: RegistrationConfig,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> Result<(), RegistrationError> {
    readiness.mark(Condition::Registered, false);
    let path = config.socket_path();
    let failed = Arc::new(Notify::new());
    let service = RegistrationService {
        info: PluginInfo {
            r#type: CSI_PLUGIN_TYPE.to_owned(),
            name: config.driver_name.clone(),
            endpoint: config.kubelet_endpoint.clone(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
        },
        readiness,
        failed: failed.clone(),
    };
    let mut retry = MIN_RETRY;
    loop {
        let listener = bind_private(&path)
            .map_err(|source| RegistrationError { path: path.clone(), source })?;
        tracing::info!(socket = %path.display(), "serving kubelet plugin registration");
        let server = tonic::transport::Server::builder()
            .add_service(RegistrationServer::new(service.clone()))
            .serve_with_incoming(crate::authority::incoming(listener));
        // Dropping the server future closes the listener; calls are instant,
        // so there is nothing in flight worth waiting for.
        let retry_now = tokio::select! {
            result = server => {
                if let Err(e) = result {
                    tracing::error!(error = %e, "registration server failed");
                }
                true
            }
            () = failed.notified() => true,
            () = shutdown.cancelled() => false,
        };
        remove_socket(&path);
        if !retry_now {
            return Ok(());
        }
        tracing::info!(?retry, "recreating the registration socket so kubelet retries");
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
        retry = (retry * 2).min(MAX_RETRY);
    }
}

fn remove_socket(path: &Path) {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(socket = %path.display(), error = %e, "could not remove registration socket");
        }
        _ => {}
    }
}

#[derive(Debug, thiserror::Error)]
#[error("listen on registration socket {path}: {source}")]
pub struct RegistrationError {
    pub path: PathBuf,
    pub source: std::io::Error,
}
