//! Both sockets answer every call kubelet makes, sent byte for byte as
//! kubelet's grpc-go client sends it, whatever `:authority` it carries:
//! the socket path (kubelet's plugin watcher, and its CSI client before
//! 1.26), the path percent-encoded (grpc-core clients), empty, none, or
//! `localhost` (kubelet's CSI client since 1.26).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sscsi_core::ProviderRegistry;
use sscsi_node::registration::{self, RegistrationConfig};
use sscsi_node::{Condition, IdentityService, Readiness, client};
use sscsi_proto::csi::v1::node_service_capability::Type as NodeCapType;
use sscsi_proto::csi::v1::node_service_capability::rpc::Type as NodeCap;
use sscsi_proto::csi::v1::*;
use sscsi_proto::registration::v1::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};
use sscsi_provider_local::LocalProvider;
use sscsi_testkit::csi::{Class, TestNode};
use sscsi_testkit::grpc_go::{CallError, GrpcGoConn, encode_timeout};
use tokio_util::sync::CancellationToken;

const REG_SOCKET: &str = "/var/lib/kubelet/plugins_registry/secrets-store.csi.k8s.io-reg.sock";
const CSI_SOCKET: &str = "/var/lib/kubelet/plugins/csi-secrets-store/csi.sock";

/// The authorities a kubelet, or another gRPC client, may send; `host` is the
/// socket path as the client dialled it.
fn authorities(host: &str) -> Vec<Option<String>> {
    let encoded: String = host.replace('/', "%2F");
    vec![Some(host.to_owned()), Some(encoded), Some(String::new()), None, Some("localhost".into())]
}

async fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn timeouts_are_encoded_as_grpc_go_encodes_them() {
    assert_eq!(encode_timeout(Duration::from_millis(999)), "999000u");
    assert_eq!(encode_timeout(Duration::from_secs(1)), "1000000u");
    assert_eq!(encode_timeout(Duration::from_secs(120)), "120000m");
    assert_eq!(encode_timeout(Duration::from_nanos(1500)), "1500n");
}

#[tokio::test]
async fn the_registration_socket_answers_the_plugin_watcher_with_any_authority() {
    let dir = tempfile::tempdir().unwrap();
    let config = RegistrationConfig {
        registry_dir: dir.path().join("plugins_registry"),
        driver_name: "secrets-store.csi.k8s.io".into(),
        kubelet_endpoint: CSI_SOCKET.into(),
    };
    let socket = config.socket_path();
    let readiness = Readiness::default();
    readiness.mark(Condition::Serving, true);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(registration::run(config, readiness.clone(), shutdown.clone()));
    wait_for(&socket).await;

    for authority in authorities(REG_SOCKET) {
        // The plugin watcher's calls, on one connection: GetInfo under a 1 s
        // deadline, NotifyRegistrationStatus under 5 s.
        let mut kubelet = GrpcGoConn::connect(&socket, authority.as_deref()).await.unwrap();
        let info: PluginInfo = kubelet
            .unary(
                "/pluginregistration.Registration/GetInfo",
                &InfoRequest {},
                Duration::from_secs(1),
            )
            .await
            .unwrap_or_else(|e| panic!("GetInfo with authority {authority:?}: {e}"));
        assert_eq!(
            (info.r#type.as_str(), info.name.as_str(), info.endpoint.as_str()),
            ("CSIPlugin", "secrets-store.csi.k8s.io", CSI_SOCKET)
        );
        assert_eq!(info.supported_versions, ["1.0.0"]);
        let _: RegistrationStatusResponse = kubelet
            .unary(
                "/pluginregistration.Registration/NotifyRegistrationStatus",
                &RegistrationStatus { plugin_registered: true, error: String::new() },
                Duration::from_secs(5),
            )
            .await
            .unwrap_or_else(|e| {
                panic!("NotifyRegistrationStatus with authority {authority:?}: {e}")
            });
        assert!(readiness.is_ready(), "registered with authority {authority:?}");
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_csi_socket_answers_every_call_kubelet_and_the_sidecars_make_with_any_authority() {
    let store = tempfile::tempdir().unwrap();
    std::fs::write(store.path().join("password"), "s3cr3t").unwrap();
    let mut providers = ProviderRegistry::new();
    providers.register(Arc::new(LocalProvider::new(store.path()).unwrap()));
    let class = Class {
        name: "app-secrets",
        provider: "local",
        parameters: "objects: |\n  - objectName: password\n",
    };
    let node = TestNode::start(providers, &[class], None).await;
    let socket = node.socket();
    let minute = Duration::from_secs(60);
    for (i, authority) in authorities(CSI_SOCKET).into_iter().enumerate() {
        let what = |call: &str, e: CallError| format!("{call} with authority {authority:?}: {e}");
        // kubelet opens a connection per operation; the sidecars (registrar,
        // livenessprobe) and csi-sanity ask Identity and Controller.
        let mut conn = GrpcGoConn::connect(&socket, authority.as_deref()).await.unwrap();
        let info: GetPluginInfoResponse = conn
            .unary("/csi.v1.Identity/GetPluginInfo", &GetPluginInfoRequest {}, minute)
            .await
            .unwrap_or_else(|e| panic!("{}", what("GetPluginInfo", e)));
        assert_eq!(info.name, "secrets-store.csi.k8s.io");
        let _: GetPluginCapabilitiesResponse = conn
            .unary(
                "/csi.v1.Identity/GetPluginCapabilities",
                &GetPluginCapabilitiesRequest {},
                minute,
            )
            .await
            .unwrap_or_else(|e| panic!("{}", what("GetPluginCapabilities", e)));
        let probe: ProbeResponse = conn
            .unary("/csi.v1.Identity/Probe", &ProbeRequest {}, minute)
            .await
            .unwrap_or_else(|e| panic!("{}", what("Probe", e)));
        assert_eq!(probe.ready, Some(true));
        let controller: ControllerGetCapabilitiesResponse = conn
            .unary(
                "/csi.v1.Controller/ControllerGetCapabilities",
                &ControllerGetCapabilitiesRequest {},
                minute,
            )
            .await
            .unwrap_or_else(|e| panic!("{}", what("ControllerGetCapabilities", e)));
        assert_eq!(controller.capabilities.len(), 1);

        let mut conn = GrpcGoConn::connect(&socket, authority.as_deref()).await.unwrap();
        let info: NodeGetInfoResponse = conn
            .unary("/csi.v1.Node/NodeGetInfo", &NodeGetInfoRequest {}, minute)
            .await
            .unwrap_or_else(|e| panic!("{}", what("NodeGetInfo", e)));
        assert_eq!(info.node_id, "n");

        let mut conn = GrpcGoConn::connect(&socket, authority.as_deref()).await.unwrap();
        let caps: NodeGetCapabilitiesResponse = conn
            .unary("/csi.v1.Node/NodeGetCapabilities", &NodeGetCapabilitiesRequest {}, 2 * minute)
            .await
            .unwrap_or_else(|e| panic!("{}", what("NodeGetCapabilities", e)));
        // As upstream: STAGE_UNSTAGE_VOLUME (kubelet never stages an inline
        // volume); and VOLUME_MOUNT_GROUP, so kubelet passes the fsGroup.
        let rpcs: Vec<_> = caps
            .capabilities
            .iter()
            .filter_map(|c| c.r#type.as_ref().map(|NodeCapType::Rpc(r)| r.r#type))
            .collect();
        assert_eq!(rpcs, [NodeCap::StageUnstageVolume as i32, NodeCap::VolumeMountGroup as i32]);

        let pod = TestNode::pod(&format!("web-{i}"));
        let target = node
            .dir
            .path()
            .join(format!("pods/{}/volumes/kubernetes.io~csi/secrets/mount", pod.uid));
        let volume_id = format!("csi-{i:064}");
        let request =
            client::inline_volume_publish_request(&volume_id, &target, "app-secrets", &pod);
        let mut conn = GrpcGoConn::connect(&socket, authority.as_deref()).await.unwrap();
        let _: NodePublishVolumeResponse = conn
            .unary("/csi.v1.Node/NodePublishVolume", &request, 2 * minute)
            .await
            .unwrap_or_else(|e| panic!("{}", what("NodePublishVolume", e)));
        assert_eq!(std::fs::read_to_string(target.join("password")).unwrap(), "s3cr3t");

        let mut conn = GrpcGoConn::connect(&socket, authority.as_deref()).await.unwrap();
        let unpublish = NodeUnpublishVolumeRequest {
            volume_id: volume_id.clone(),
            target_path: target.display().to_string(),
        };
        let _: NodeUnpublishVolumeResponse = conn
            .unary("/csi.v1.Node/NodeUnpublishVolume", &unpublish, 2 * minute)
            .await
            .unwrap_or_else(|e| panic!("{}", what("NodeUnpublishVolume", e)));
        assert!(!target.join("password").exists());
    }
}

/// Without the rewrite in front of h2, the same bytes get what kubelet got:
/// the stream reset with PROTOCOL_ERROR. Shows the client above sends what
/// h2 refuses, so the tests above can fail.
#[tokio::test]
async fn plain_tonic_resets_what_kubelet_sends() {
    use sscsi_proto::csi::v1::identity_server::IdentityServer;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("plain.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let readiness = Readiness::default();
    let identity =
        IdentityService::new("secrets-store.csi.k8s.io".into(), "test".into(), readiness);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IdentityServer::new(identity))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    let mut kubelet = GrpcGoConn::connect(&socket, Some(CSI_SOCKET)).await.unwrap();
    let answer = kubelet
        .unary::<_, GetPluginInfoResponse>(
            "/csi.v1.Identity/GetPluginInfo",
            &GetPluginInfoRequest {},
            Duration::from_secs(1),
        )
        .await;
    assert_eq!(answer, Err(CallError::Reset { code: 1 }));
    let mut fine = GrpcGoConn::connect(&socket, Some("localhost")).await.unwrap();
    let info: GetPluginInfoResponse = fine
        .unary("/csi.v1.Identity/GetPluginInfo", &GetPluginInfoRequest {}, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(info.name, "secrets-store.csi.k8s.io");
}
