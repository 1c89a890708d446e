//! The Identity, Node and Controller calls of the kubernetes-csi/csi-test
//! sanity suite (v5.4.0, `pkg/sanity/identity.go`, `node.go`, `controller.go`),
//! each sent as the suite sends it and held to what the suite expects. The
//! suite cannot run in this project's CI (it is Go); this is its contract.
//!
//! Like upstream's own run (`-ginkgo.skip=Controller|should.work|NodeStageVolume`),
//! the specs that need a volume from the Controller's CreateVolume are out:
//! "should work", "should be idempotent" (skipped by the suite itself: no
//! CONTROLLER_SERVICE is advertised), NodeStageVolume "no volume capability",
//! and NodeUnpublishVolume "should remove target path" (skipped by the suite
//! with `CreateTargetDir` and no `CheckPath`, upstream's configuration).
//! NodeGetVolumeStats and NodeExpandVolume are skipped by the suite: their
//! capabilities are not advertised.

use sscsi_core::ProviderRegistry;
use sscsi_node::client;
use sscsi_proto::csi::v1::controller_client::ControllerClient;
use sscsi_proto::csi::v1::controller_service_capability::Type as ControllerCapType;
use sscsi_proto::csi::v1::identity_client::IdentityClient;
use sscsi_proto::csi::v1::node_client::NodeClient;
use sscsi_proto::csi::v1::node_service_capability::Type as NodeCapType;
use sscsi_proto::csi::v1::node_service_capability::rpc::Type as NodeCap;
use sscsi_proto::csi::v1::plugin_capability::Type as PluginCapType;
use sscsi_proto::csi::v1::volume_capability::{AccessMode, AccessType, MountVolume, access_mode};
use sscsi_proto::csi::v1::*;
use sscsi_testkit::csi::TestNode;
use tonic::Code;
use tonic::transport::Channel;

struct Sanity {
    node: TestNode,
    channel: Channel,
    /// The suite's `TargetPath` and `StagingPath`, directories it creates.
    target: String,
    staging: String,
}

impl Sanity {
    async fn start() -> Self {
        let node = TestNode::start(ProviderRegistry::new(), &[], None).await;
        let channel = client::connect(node.socket()).await.unwrap();
        let target = node.dir.path().join("csi-target");
        let staging = node.dir.path().join("csi-staging");
        std::fs::create_dir(&target).unwrap();
        std::fs::create_dir(&staging).unwrap();
        Self {
            node,
            channel,
            target: target.display().to_string(),
            staging: staging.display().to_string(),
        }
    }
    fn identity(&self) -> IdentityClient<Channel> {
        IdentityClient::new(self.channel.clone())
    }
    fn csi(&self) -> NodeClient<Channel> {
        NodeClient::new(self.channel.clone())
    }
    fn controller(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.channel.clone())
    }
}

/// `ExpectErrorCode`: an error with exactly this code.
fn expect_code<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>, code: Code) {
    match result {
        Ok(r) => panic!("expected {code:?}, got {:?}", r.into_inner()),
        Err(s) => assert_eq!(s.code(), code, "{}", s.message()),
    }
}

/// `TestVolumeCapabilityWithAccessType(sc, SINGLE_NODE_WRITER)` with the
/// default (mount) access type.
fn mount_capability() -> Option<VolumeCapability> {
    Some(VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode { mode: access_mode::Mode::SingleNodeWriter as i32 }),
    })
}

/// `GenerateUniqueValidVolumeID` of the default ID generator.
const VOLUME_ID: &str = "fake-vol-id-42";

#[tokio::test]
async fn identity_specs() {
    let s = Sanity::start().await;
    // "GetPluginCapabilities should return appropriate capabilities"
    let caps = s.identity().get_plugin_capabilities(GetPluginCapabilitiesRequest {}).await.unwrap();
    for cap in caps.into_inner().capabilities {
        match cap.r#type.expect("a type") {
            PluginCapType::Service(svc) => assert!((1..=4).contains(&svc.r#type), "{svc:?}"),
            PluginCapType::VolumeExpansion(v) => assert!((1..=2).contains(&v.r#type), "{v:?}"),
        }
    }
    // "Probe should return appropriate information"
    s.identity().probe(ProbeRequest {}).await.unwrap();
    // "GetPluginInfo should return appropriate information"
    let info = s.identity().get_plugin_info(GetPluginInfoRequest {}).await.unwrap().into_inner();
    let name = info.name.as_bytes();
    assert!(!name.is_empty() && name.len() <= 63);
    assert!(name[0].is_ascii_alphabetic() && name[name.len() - 1].is_ascii_alphabetic());
    assert!(name.iter().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(b)), "{}", info.name);
}

/// The Node suite's `BeforeEach`: plugin capabilities, the controller's
/// PUBLISH_UNPUBLISH when CONTROLLER_SERVICE is advertised, three node
/// capability checks, and the controller's EXPAND_VOLUME unconditionally,
/// which must answer a list whose every entry has an `rpc`.
#[tokio::test]
async fn node_before_each() {
    let s = Sanity::start().await;
    let plugin =
        s.identity().get_plugin_capabilities(GetPluginCapabilitiesRequest {}).await.unwrap();
    let provides_controller = plugin
        .into_inner()
        .capabilities
        .iter()
        .any(|c| matches!(&c.r#type, Some(PluginCapType::Service(svc)) if svc.r#type == 1));
    assert!(!provides_controller, "no CONTROLLER_SERVICE: the suite skips \"should work\"");
    for _ in 0..3 {
        s.csi().node_get_capabilities(NodeGetCapabilitiesRequest {}).await.unwrap();
    }
    let controller = s
        .controller()
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!controller.capabilities.is_empty(), "a nil list fails the suite");
    for cap in &controller.capabilities {
        let Some(ControllerCapType::Rpc(rpc)) = &cap.r#type else { panic!("no rpc: {cap:?}") };
        assert_eq!(rpc.r#type, 0, "UNKNOWN, as upstream: no controller capability");
    }
    // Everything else of the Controller service is Unimplemented, as upstream's.
    let mut grpc = tonic::client::Grpc::new(s.channel.clone());
    grpc.ready().await.unwrap();
    let status = grpc
        .unary::<CreateVolumeStub, CreateVolumeStub, _>(
            tonic::Request::new(CreateVolumeStub {}),
            http::uri::PathAndQuery::from_static("/csi.v1.Controller/CreateVolume"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
}

/// Any message: the test only needs the call's status.
#[derive(Clone, PartialEq, prost::Message)]
struct CreateVolumeStub {}

#[tokio::test]
async fn node_specs() {
    let s = Sanity::start().await;
    // "NodeGetCapabilities should return appropriate capabilities"
    let caps = s.csi().node_get_capabilities(NodeGetCapabilitiesRequest {}).await.unwrap();
    for cap in caps.into_inner().capabilities {
        let Some(NodeCapType::Rpc(rpc)) = cap.r#type else { panic!("no rpc") };
        assert!(NodeCap::try_from(rpc.r#type).is_ok(), "{rpc:?}");
    }
    // "NodeGetInfo should return appropriate values"
    let info = s.csi().node_get_info(NodeGetInfoRequest {}).await.unwrap().into_inner();
    assert!(!info.node_id.is_empty());
    assert!(info.max_volumes_per_node >= 0);
    assert!(info.accessible_topology.is_none(), "no VOLUME_ACCESSIBILITY_CONSTRAINTS");

    // NodePublishVolume "should fail when no volume id / target path / volume capability is provided"
    let publish = |volume_id: &str, target_path: String| NodePublishVolumeRequest {
        volume_id: volume_id.into(),
        target_path,
        ..Default::default()
    };
    expect_code(
        s.csi().node_publish_volume(publish("", String::new())).await,
        Code::InvalidArgument,
    );
    expect_code(
        s.csi().node_publish_volume(publish(VOLUME_ID, String::new())).await,
        Code::InvalidArgument,
    );
    let target = format!("{}/target", s.target);
    expect_code(
        s.csi().node_publish_volume(publish(VOLUME_ID, target.clone())).await,
        Code::InvalidArgument,
    );
    assert!(!std::path::Path::new(&target).exists(), "a refused publish creates nothing");

    // NodeUnpublishVolume "should fail when no volume id / target path is provided"
    let unpublish = |volume_id: &str| NodeUnpublishVolumeRequest {
        volume_id: volume_id.into(),
        target_path: String::new(),
    };
    expect_code(s.csi().node_unpublish_volume(unpublish("")).await, Code::InvalidArgument);
    expect_code(s.csi().node_unpublish_volume(unpublish(VOLUME_ID)).await, Code::InvalidArgument);

    // STAGE_UNSTAGE_VOLUME is advertised (as upstream), so the suite runs
    // NodeStageVolume "no volume id" and "no staging target path" ...
    let device = std::collections::HashMap::from([("device".to_owned(), "/dev/mock".to_owned())]);
    let stage = |volume_id: &str, staging: &str| NodeStageVolumeRequest {
        volume_id: volume_id.into(),
        staging_target_path: staging.into(),
        volume_capability: mount_capability(),
        publish_context: device.clone(),
        ..Default::default()
    };
    expect_code(s.csi().node_stage_volume(stage("", &s.staging)).await, Code::InvalidArgument);
    expect_code(s.csi().node_stage_volume(stage(VOLUME_ID, "")).await, Code::InvalidArgument);
    // ... and the capability check of "no volume capability" (its volume comes
    // from CreateVolume, which upstream's run skips too).
    let mut no_capability = stage(VOLUME_ID, &s.staging);
    no_capability.volume_capability = None;
    expect_code(s.csi().node_stage_volume(no_capability).await, Code::InvalidArgument);
    // NodeUnstageVolume "should fail when no volume id / staging target path is provided"
    let unstage = |volume_id: &str, staging: &str| NodeUnstageVolumeRequest {
        volume_id: volume_id.into(),
        staging_target_path: staging.into(),
    };
    expect_code(s.csi().node_unstage_volume(unstage("", &s.staging)).await, Code::InvalidArgument);
    expect_code(s.csi().node_unstage_volume(unstage(VOLUME_ID, "")).await, Code::InvalidArgument);
    drop(s.node);
}
