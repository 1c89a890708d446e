//! A gRPC client channel over a unix socket, for `sscsi demo` and tests (and
//! the shape kubelet uses to reach us).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use sscsi_core::PodInfo;
use sscsi_proto::csi::v1::volume_capability::{
    AccessMode, AccessType, MountVolume, access_mode::Mode,
};
use sscsi_proto::csi::v1::{NodePublishVolumeRequest, VolumeCapability};
use tonic::transport::{Channel, Endpoint};

/// Connects to the gRPC server listening on the unix socket at `path`.
pub async fn connect(path: impl Into<PathBuf>) -> Result<Channel, tonic::transport::Error> {
    let path = path.into();
    // The URI is required by the API but unused: the connector dials the socket.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
}

/// The NodePublishVolume request kubelet sends for an inline secrets-store
/// volume of a pod (the CSIDriver has `podInfoOnMount: true`): read-only,
/// a mount capability, and the pod's identity in the volume context.
pub fn inline_volume_publish_request(
    volume_id: &str,
    target_path: &Path,
    secret_provider_class: &str,
    pod: &PodInfo,
) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: volume_id.to_owned(),
        target_path: target_path.display().to_string(),
        volume_capability: Some(VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume::default())),
            access_mode: Some(AccessMode { mode: Mode::SingleNodeReaderOnly as i32 }),
        }),
        readonly: true,
        volume_context: HashMap::from([
            ("secretProviderClass".into(), secret_provider_class.into()),
            ("csi.storage.k8s.io/pod.name".into(), pod.name.clone()),
            ("csi.storage.k8s.io/pod.namespace".into(), pod.namespace.clone()),
            ("csi.storage.k8s.io/pod.uid".into(), pod.uid.clone()),
            ("csi.storage.k8s.io/serviceAccount.name".into(), pod.service_account.clone()),
            ("csi.storage.k8s.io/ephemeral".into(), "true".into()),
        ]),
        ..Default::default()
    }
}
