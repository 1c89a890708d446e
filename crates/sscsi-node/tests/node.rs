//! The real gRPC server on a temporary unix socket, driven the way kubelet
//! drives it. Real tmpfs mounts when the tests run as root, the fake mounter
//! otherwise.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prometheus_client::registry::Registry;
use sscsi_core::{
    MountRequest, MountResponse, ObjectVersion, PodInfo, Provider, ProviderError, ProviderRegistry,
    SecretFile,
};
use sscsi_mount::{FakeMounter, Mounter, TmpfsMounter};
use sscsi_node::observer::NoObserver;
use sscsi_node::spc::DirSpcSource;
use sscsi_node::{Backoff, NodeConfig, Parts, Plugin, Readiness, client};
use sscsi_proto::csi::v1::identity_client::IdentityClient;
use sscsi_proto::csi::v1::node_client::NodeClient;
use sscsi_proto::csi::v1::*;
use sscsi_provider_local::LocalProvider;
use tokio::sync::{Notify, oneshot};
use tonic::Code;
use tonic::transport::Channel;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

struct Harness {
    dir: sscsi_testkit::MountDir,
    node: NodeClient<Channel>,
    identity: IdentityClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    socket: PathBuf,
    mounter: Arc<dyn Mounter>,
    registry: Arc<Registry>,
    refresher: sscsi_node::Refresher,
}

impl Harness {
    /// Real tmpfs when root, else the fake mounter.
    async fn start(rotation: Option<Duration>, extra: Vec<Arc<dyn Provider>>) -> Self {
        let mounter: Arc<dyn Mounter> = if is_root() {
            Arc::new(TmpfsMounter::new(1 << 20))
        } else {
            Arc::new(FakeMounter::new())
        };
        Self::start_with(mounter, rotation, extra).await
    }

    async fn start_with(
        mounter: Arc<dyn Mounter>,
        rotation: Option<Duration>,
        extra: Vec<Arc<dyn Provider>>,
    ) -> Self {
        Self::start_pinning(mounter, rotation, extra, false).await
    }

    /// `pin`: `--pin-class-generation`.
    async fn start_pinning(
        mounter: Arc<dyn Mounter>,
        rotation: Option<Duration>,
        extra: Vec<Arc<dyn Provider>>,
        pin: bool,
    ) -> Self {
        Self::start_full(mounter, rotation, extra, pin, None).await
    }

    /// `copies`: `--serve-last-known-good`.
    async fn start_full(
        mounter: Arc<dyn Mounter>,
        rotation: Option<Duration>,
        extra: Vec<Arc<dyn Provider>>,
        pin: bool,
        copies: Option<Duration>,
    ) -> Self {
        let dir = sscsi_testkit::MountDir::new();
        let store = dir.path().join("store");
        std::fs::create_dir_all(store.join("db")).unwrap();
        std::fs::write(store.join("db/password"), "s3cret-v1").unwrap();
        std::fs::write(store.join("api-key"), "key-v1").unwrap();
        let spcs = dir.path().join("spc");
        std::fs::create_dir(&spcs).unwrap();
        let spc = |name: &str, provider: &str, objects: &str| {
            format!(
                "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n\
                 metadata: {{name: {name}, namespace: shop}}\nspec:\n  provider: {provider}\n  parameters:\n    objects: |\n{objects}---\n"
            )
        };
        let objects = "      - objectName: db/password\n        objectAlias: password\n        filePermission: \"0600\"\n      - objectName: api-key\n";
        let mut all = spc("app", "local", objects);
        all += &spc("unknown-provider", "aws", objects);
        all += &spc("evil", "evil", objects);
        all += &spc("slow", "slow", objects);
        all += &spc("external", "ext", objects);
        all += &spc("legacy", "legacy", objects);
        all += &spc("flaky", "flaky", objects);
        all += &spc("bad-object", "local", "      - objectName: ../outside\n");
        for (name, refresh) in [("refresh-once", "once"), ("refresh-hourly", "1h")] {
            all += &format!(
                "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n\
                 metadata: {{name: {name}, namespace: shop}}\nspec:\n  provider: local\n  parameters:\n    sscsi.io/refresh: {refresh}\n    objects: |\n{objects}---\n"
            );
        }
        all += &spc(
            "group-read",
            "local",
            "      - objectName: db/password\n        objectAlias: db/password\n        filePermission: \"0640\"\n",
        );
        all += "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata: {name: no-params, namespace: shop}\nspec: {provider: local}\n";
        // Built files: an env file from two objects, and a template.
        all += "---\napiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata: {name: built, namespace: shop}\nspec:\n  provider: local\n  parameters:\n    objects: |\n      - objectName: db/password\n      - objectName: api-key\n    sscsi.io/files: |\n      - {path: app.env, format: env, mode: \"0640\", entries: {DB_PASSWORD: db/password}}\n      - {path: key.conf, format: template, template: 'key={{ object(\"api-key\") }}'}\n";
        all += "---\napiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata: {name: built-bad, namespace: shop}\nspec:\n  provider: local\n  parameters:\n    objects: |\n      - objectName: api-key\n    sscsi.io/files: |\n      - {path: app.env, format: env, entries: {DB_PASSWORD: db/password}}\n";
        std::fs::write(spcs.join("spcs.yaml"), all).unwrap();

        let mut providers = ProviderRegistry::new();
        providers.register(Arc::new(LocalProvider::new(&store).unwrap()));
        for p in extra {
            providers.register(p);
        }
        let config = NodeConfig {
            driver_name: "secrets-store.csi.k8s.io".into(),
            vendor_version: "test".into(),
            node_id: "node-1".into(),
            rotation_poll_interval: rotation,
            // Short, so a test can wait one out.
            refresh_backoff: Backoff {
                base: Duration::from_millis(500),
                cap: Duration::from_millis(1500),
            },
            min_rotation_interval: Duration::ZERO,
            pin_class_generation: pin,
            metrics_pod_labels: false,
            serve_last_known_good: copies,
        };
        let parts = Parts {
            mounter: mounter.clone(),
            spcs: Arc::new(DirSpcSource::new(&spcs)),
            providers,
            observer: Arc::new(NoObserver),
            readiness: Readiness::default(),
            registry: Registry::default(),
        };
        let plugin = Plugin::new(config, parts);
        let refresher = plugin.refresher();
        let socket = dir.path().join("csi/csi.sock");
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        let server = plugin.serve(&socket, shutdown, Duration::from_secs(5)).unwrap();
        let server = tokio::spawn(async move { server.await.unwrap().unwrap() });
        let registry = plugin.registry.clone();
        let channel = client::connect(&socket).await.unwrap();
        Harness {
            node: NodeClient::new(channel.clone()),
            identity: IdentityClient::new(channel),
            dir,
            stop: Some(stop),
            server: Some(server),
            socket,
            mounter,
            registry,
            refresher,
        }
    }

    /// The metric lines whose name starts with `prefix`.
    fn metrics(&self, prefix: &str) -> Vec<String> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
        out.lines().filter(|l| l.starts_with(prefix)).map(str::to_owned).collect()
    }

    fn target(&self, volume: &str) -> PathBuf {
        self.dir.path().join(format!("pods/uid-1/volumes/kubernetes.io~csi/{volume}/mount"))
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn publish_request(&self, volume: &str, spc: &str) -> NodePublishVolumeRequest {
        let pod = PodInfo {
            name: "web-0".into(),
            namespace: "shop".into(),
            uid: "uid-1".into(),
            service_account: "web".into(),
        };
        client::inline_volume_publish_request(
            &format!("csi-{volume}"),
            &self.target(volume),
            spc,
            &pod,
        )
    }

    async fn publish(&self, volume: &str, spc: &str) -> Result<(), tonic::Status> {
        let req = self.publish_request(volume, spc);
        self.node.clone().node_publish_volume(req).await.map(|_| ())
    }

    /// A publish for pod `pod` of service account `account` in `shop`.
    async fn publish_as(&self, volume: &str, pod: &str, account: &str) {
        self.publish_class_as(volume, "app", pod, account).await.unwrap();
    }

    async fn unpublish(&self, volume: &str) -> Result<(), tonic::Status> {
        let req = NodeUnpublishVolumeRequest {
            volume_id: format!("csi-{volume}"),
            target_path: self.target(volume).display().to_string(),
        };
        self.node.clone().node_unpublish_volume(req).await.map(|_| ())
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.server.take().unwrap().await.unwrap();
        assert!(!self.socket.exists(), "socket removed on shutdown");
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn data_link(target: &Path) -> PathBuf {
    std::fs::read_link(target.join("..data")).unwrap()
}

/// Everything under `dir` except the harness's own inputs.
fn snapshot(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            out.push(e.path().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn identity_reports_name_capabilities_and_readiness() {
    let h = Harness::start(None, vec![]).await;
    let info =
        h.identity.clone().get_plugin_info(GetPluginInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.name, "secrets-store.csi.k8s.io");
    assert_eq!(info.vendor_version, "test");
    let caps = h
        .identity
        .clone()
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(caps.capabilities.is_empty(), "node-only plugin: {caps:?}");
    let probe = h.identity.clone().probe(ProbeRequest {}).await.unwrap().into_inner();
    assert_eq!(probe.ready, Some(true));

    let mut node = h.node.clone();
    let info = node.node_get_info(NodeGetInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.node_id, "node-1");
    let caps =
        node.node_get_capabilities(NodeGetCapabilitiesRequest {}).await.unwrap().into_inner();
    let types: Vec<_> = caps
        .capabilities
        .iter()
        .map(|c| match &c.r#type {
            Some(node_service_capability::Type::Rpc(rpc)) => rpc.r#type,
            None => -1,
        })
        .collect();
    use node_service_capability::rpc::Type as Rpc;
    assert_eq!(types, vec![Rpc::StageUnstageVolume as i32, Rpc::VolumeMountGroup as i32]);
    let stats = node
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: "v".into(),
            volume_path: "/x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stats.code(), Code::Unimplemented);
    h.stop().await;
}

#[tokio::test]
async fn publish_republish_and_unpublish() {
    check_publish_republish_and_unpublish(Harness::start(None, vec![]).await).await;
}

/// As root the test above uses tmpfs; this covers files on disk as well.
#[tokio::test]
async fn publish_republish_and_unpublish_without_tmpfs() {
    let h = Harness::start_with(Arc::new(FakeMounter::new()), None, vec![]).await;
    check_publish_republish_and_unpublish(h).await;
}

async fn check_publish_republish_and_unpublish(h: Harness) {
    let target = h.target("vol");
    h.publish("vol", "app").await.unwrap();

    assert_eq!(read(&target.join("password")), "s3cret-v1");
    assert_eq!(read(&target.join("api-key")), "key-v1");
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&target.join("password")), 0o600);
    assert_eq!(mode(&target.join("api-key")), 0o644);
    assert!(h.mounter.is_mounted(&target).unwrap());
    if h.mounter.in_memory() {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = info.lines().find(|l| l.contains(&*target.display().to_string())).unwrap();
        for opt in ["nosuid", "nodev", "noexec"] {
            assert!(line.contains(opt), "{opt} missing: {line}");
        }
        assert!(line.contains("size=1024k"), "{line}");
        assert!(line.contains("mode=755"), "{line}");
    }

    // Freshness by class (no pod name: bounded series), and the node's
    // oldest; both go once the volume does.
    let class = r#"{namespace="shop",secret_provider_class="app",provider="local"}"#;
    let ages = h.metrics("sscsi_volume_fetch_age_seconds{");
    assert_eq!(ages.len(), 1, "{ages:?}");
    assert!(ages[0].starts_with(&format!("sscsi_volume_fetch_age_seconds{class} ")), "{ages:?}");
    assert_eq!(h.metrics("sscsi_volumes{"), [format!("sscsi_volumes{class} 1")]);
    assert_eq!(h.metrics("sscsi_oldest_fetch_age_seconds").len(), 1);

    // Rotation off: a republish neither re-fetches nor rewrites.
    let version = data_link(&target);
    std::fs::write(h.store().join("api-key"), "key-v2").unwrap();
    h.publish("vol", "app").await.unwrap();
    assert_eq!(read(&target.join("api-key")), "key-v1");
    assert_eq!(data_link(&target), version);

    h.unpublish("vol").await.unwrap();
    assert!(!target.exists());
    assert!(h.metrics("sscsi_volume_fetch_age_seconds{").is_empty());
    assert!(h.metrics("sscsi_volumes{").is_empty());
    assert_eq!(h.metrics("sscsi_oldest_fetch_age_seconds"), ["sscsi_oldest_fetch_age_seconds 0.0"]);
    assert!(!h.mounter.is_mounted(&target).unwrap());
    h.unpublish("vol").await.expect("unpublish is idempotent");
    h.stop().await;
}

#[tokio::test]
async fn with_rotation_a_republish_updates_in_place_and_only_on_change() {
    let h = Harness::start(Some(Duration::ZERO), vec![]).await;
    let target = h.target("vol");
    h.publish("vol", "app").await.unwrap();
    let v1 = data_link(&target);

    h.publish("vol", "app").await.unwrap();
    assert_eq!(data_link(&target), v1, "unchanged content is not rewritten");

    std::fs::write(h.store().join("api-key"), "key-v2").unwrap();
    h.publish("vol", "app").await.unwrap();
    assert_eq!(read(&target.join("api-key")), "key-v2");
    assert_ne!(data_link(&target), v1);
    assert!(!target.join(&v1).exists(), "old version removed");

    // A failed refresh keeps the previous files and reports success (upstream's
    // workaround for kubernetes/kubernetes#121271).
    std::fs::remove_file(h.store().join("api-key")).unwrap();
    h.publish("vol", "app").await.unwrap();
    assert_eq!(read(&target.join("api-key")), "key-v2");
    h.unpublish("vol").await.unwrap();

    // Counted under upstream's names and labels.
    let lines = |prefix: &str| h.metrics(prefix);
    assert_eq!(
        lines("node_publish_total"),
        vec![r#"node_publish_total{provider="local",os_type="linux"} 3"#]
    );
    assert_eq!(
        lines("node_publish_error_total"),
        vec![
            r#"node_publish_error_total{provider="local",error_type="ProviderError",os_type="linux"} 1"#
        ]
    );
    let mut rotations = lines("rotation_reconcile_total");
    rotations.sort();
    assert_eq!(
        rotations,
        vec![
            r#"rotation_reconcile_total{provider="local",os_type="linux",rotated="false"} 1"#,
            r#"rotation_reconcile_total{provider="local",os_type="linux",rotated="true"} 1"#,
        ]
    );
    assert_eq!(
        lines("rotation_reconcile_error_total"),
        vec![
            r#"rotation_reconcile_error_total{provider="local",error_type="ProviderError",os_type="linux",rotated="true"} 1"#
        ]
    );
    assert_eq!(lines("node_unpublish_total"), vec![r#"node_unpublish_total{os_type="linux"} 1"#]);
    assert_eq!(lines("sscsi_provider_requests_total").len(), 2, "one series per outcome");
    // The one change rewrote the volume's two files.
    assert_eq!(
        lines("sscsi_rotation_files_rewritten_total"),
        vec![r#"sscsi_rotation_files_rewritten_total{provider="local",os_type="linux"} 2"#]
    );
    h.stop().await;
}

/// A change one volume sees (here by a forced refresh, long before the
/// interval) makes the other volumes of its identity that hold the old
/// version due at their next republish; another identity's are not.
#[tokio::test]
async fn a_change_seen_by_one_volume_makes_its_identitys_other_volumes_due() {
    let h = Harness::start(Some(Duration::from_secs(3600)), vec![]).await;
    h.publish_as("a", "web-0", "web").await;
    h.publish_as("b", "web-1", "web").await;
    h.publish_as("c", "web-2", "other").await;
    std::fs::write(h.store().join("api-key"), "key-v2").unwrap();
    h.publish_as("b", "web-1", "web").await;
    assert_eq!(read(&h.target("b").join("api-key")), "key-v1", "not due within the interval");

    assert_eq!(h.refresher.refresh_pod("shop", "web-0").await, 1);
    assert_eq!(read(&h.target("a").join("api-key")), "key-v2");
    h.publish_as("b", "web-1", "web").await;
    assert_eq!(read(&h.target("b").join("api-key")), "key-v2", "due: its identity saw the change");
    h.publish_as("c", "web-2", "other").await;
    assert_eq!(
        read(&h.target("c").join("api-key")),
        "key-v1",
        "another identity waits its interval"
    );
    h.stop().await;
}

#[tokio::test]
async fn every_bad_request_gets_the_right_code_and_message() {
    let h = Harness::start(None, vec![]).await;
    type Edit = fn(&mut NodePublishVolumeRequest);
    let cases: Vec<(Edit, Code, &str)> = vec![
        (
            |r| r.volume_capability = None,
            Code::InvalidArgument,
            "Volume capability missing in request",
        ),
        (|r| r.volume_id.clear(), Code::InvalidArgument, "Volume ID missing in request"),
        (|r| r.target_path.clear(), Code::InvalidArgument, "Target path missing in request"),
        (
            |r| r.volume_context.clear(),
            Code::InvalidArgument,
            "Volume attributes missing in request",
        ),
        (
            |r| drop(r.volume_context.remove("secretProviderClass")),
            Code::InvalidArgument,
            "secretProviderClass is not set",
        ),
        (|r| r.readonly = false, Code::InvalidArgument, "Readonly is not true in request"),
        (
            |r| r.target_path = "relative/mount".into(),
            Code::InvalidArgument,
            "target path \"relative/mount\" is not an absolute path",
        ),
        (
            |r| drop(r.volume_context.insert("secretProviderClass".into(), "missing".into())),
            Code::NotFound,
            "failed to get SecretProviderClass shop/missing: not found",
        ),
        (
            |r| drop(r.volume_context.insert("secretProviderClass".into(), "no-params".into())),
            Code::InvalidArgument,
            "spec.parameters is not set in SecretProviderClass shop/no-params",
        ),
        (
            |r| {
                drop(
                    r.volume_context
                        .insert("secretProviderClass".into(), "unknown-provider".into()),
                )
            },
            Code::InvalidArgument,
            "SecretProviderClass shop/unknown-provider: provider \"aws\" is not available in this sscsi; available: local",
        ),
        (
            |r| drop(r.volume_context.insert("secretProviderClass".into(), "bad-object".into())),
            Code::InvalidArgument,
            "failed to mount secrets store objects for pod shop/web-0 (as service account shop/web): provider \"local\": objects[0].objectName: invalid path \"../outside\"",
        ),
    ];
    for (edit, code, want) in cases {
        let mut req = h.publish_request("bad", "app");
        edit(&mut req);
        let status = h.node.clone().node_publish_volume(req).await.unwrap_err();
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(status.message().starts_with(want), "want {want:?}, got {:?}", status.message());
        assert!(
            !h.mounter.is_mounted(&h.target("bad")).unwrap(),
            "nothing stays mounted after {want}"
        );
    }

    let not_found = h.metrics(
        "node_publish_error_total{provider=\"\",error_type=\"SecretProviderClassNotFound\"",
    );
    assert_eq!(
        not_found,
        vec![
            r#"node_publish_error_total{provider="",error_type="SecretProviderClassNotFound",os_type="linux"} 1"#
        ]
    );

    let mut node = h.node.clone();
    let invalid = |result: Result<tonic::Response<_>, tonic::Status>, want: &str| {
        let err = result.map(|_: tonic::Response<()>| ()).unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::InvalidArgument, want));
    };
    let unpublish = |volume_id: &str, target_path: &str| NodeUnpublishVolumeRequest {
        volume_id: volume_id.into(),
        target_path: target_path.into(),
    };
    for (req, want) in [
        (unpublish("", "/x"), "Volume ID missing in request"),
        (unpublish("v", ""), "Target path missing in request"),
        (unpublish("v", "rel/x"), "target path \"rel/x\" is not an absolute path"),
    ] {
        invalid(node.node_unpublish_volume(req).await.map(|r| r.map(|_| ())), want);
    }

    let cap = Some(VolumeCapability::default());
    let stage =
        |volume_id: &str, staging_target_path: &str, volume_capability| NodeStageVolumeRequest {
            volume_id: volume_id.into(),
            staging_target_path: staging_target_path.into(),
            volume_capability,
            ..Default::default()
        };
    for (req, want) in [
        (stage("", "/s", cap.clone()), "Volume ID missing in request"),
        (stage("v", "", cap.clone()), "Staging target path missing in request"),
        (stage("v", "/s", None), "Volume capability missing in request"),
    ] {
        invalid(node.node_stage_volume(req).await.map(|r| r.map(|_| ())), want);
    }
    node.node_stage_volume(stage("v", "/s", cap)).await.unwrap();

    let unstage = |volume_id: &str, staging_target_path: &str| NodeUnstageVolumeRequest {
        volume_id: volume_id.into(),
        staging_target_path: staging_target_path.into(),
    };
    for (req, want) in [
        (unstage("", "/s"), "Volume ID missing in request"),
        (unstage("v", ""), "Staging target path missing in request"),
    ] {
        invalid(node.node_unstage_volume(req).await.map(|r| r.map(|_| ())), want);
    }
    node.node_unstage_volume(unstage("v", "/s")).await.unwrap();
    h.stop().await;
}

/// A provider that returns whatever files it is told to: stands in for a
/// buggy or hostile backend.
#[derive(Debug)]
struct Evil(Vec<&'static str>);

#[async_trait]
impl Provider for Evil {
    fn name(&self) -> &str {
        "evil"
    }
    async fn mount(&self, _: &MountRequest) -> Result<MountResponse, ProviderError> {
        let files = self
            .0
            .iter()
            .map(|p| SecretFile { path: (*p).to_owned(), mode: 0o644, contents: "pwned".into() })
            .collect();
        Ok(MountResponse::new(files, vec![ObjectVersion { id: "x".into(), version: "1".into() }]))
    }
}

#[tokio::test]
async fn provider_paths_that_escape_the_target_write_nothing() {
    for path in ["../../etc/x", "/etc/x", "a/../../x", "..data/x", "../x"] {
        let h = Harness::start(None, vec![Arc::new(Evil(vec!["fine", path]))]).await;
        let before = snapshot(h.dir.path());
        let status = h.publish("vol", "evil").await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {}", status.message());
        assert!(status.message().contains("invalid path"), "{path}: {}", status.message());
        let target = h.target("vol");
        assert!(!h.mounter.is_mounted(&target).unwrap(), "{path}: unmounted after the failure");
        let mut after = snapshot(h.dir.path());
        // The only new entries are the (empty) target directory and its parents.
        after.retain(|p| !target.starts_with(p));
        assert_eq!(after, before, "{path}: nothing written anywhere");
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0, "{path}: target left empty");
        h.stop().await;
    }
}

/// A provider that waits until released, to hold an operation in flight.
#[derive(Debug, Default)]
struct Slow {
    entered: Notify,
    release: Notify,
}

#[async_trait]
impl Provider for Slow {
    fn name(&self) -> &str {
        "slow"
    }
    async fn mount(&self, _: &MountRequest) -> Result<MountResponse, ProviderError> {
        self.entered.notify_one();
        self.release.notified().await;
        let file = SecretFile { path: "f".into(), mode: 0o644, contents: "v".into() };
        Ok(MountResponse::new(vec![file], vec![]))
    }
}

#[tokio::test]
async fn concurrent_operations_on_one_volume_are_aborted() {
    let slow = Arc::new(Slow::default());
    let h = Harness::start(None, vec![slow.clone()]).await;
    let first = {
        let (mut node, req) = (h.node.clone(), h.publish_request("vol", "slow"));
        tokio::spawn(async move { node.node_publish_volume(req).await })
    };
    slow.entered.notified().await;

    let err = h.publish("vol", "slow").await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{}", err.message());
    assert_eq!(err.message(), "an operation on volume csi-vol is already in progress");
    let err = h.unpublish("vol").await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    // Another volume is not held up.
    h.publish("other", "app").await.unwrap();

    slow.release.notify_one();
    first.await.unwrap().unwrap();
    assert_eq!(read(&h.target("vol").join("f")), "v");
    h.unpublish("vol").await.unwrap();
    h.unpublish("other").await.unwrap();
    h.stop().await;
}

#[tokio::test]
async fn a_failed_tmpfs_mount_fails_the_publish_and_leaves_nothing_mounted() {
    let mounter = Arc::new(FakeMounter::new());
    mounter.fail_mounts(true);
    let h = Harness::start_with(mounter.clone(), None, vec![]).await;
    let status = h.publish("vol", "app").await.unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert!(status.message().starts_with("failed to mount tmpfs"), "{}", status.message());
    assert!(mounter.mounted().is_empty());
    assert_eq!(std::fs::read_dir(h.target("vol")).unwrap().count(), 0, "no files written");

    // kubelet retries; once mounting works the volume is published.
    mounter.fail_mounts(false);
    h.publish("vol", "app").await.unwrap();
    assert_eq!(read(&h.target("vol").join("api-key")), "key-v1");
    h.unpublish("vol").await.unwrap();
    h.stop().await;
}

#[tokio::test]
async fn a_failing_backend_during_rotation_keeps_the_files_and_backs_off() {
    let h = Harness::start(Some(Duration::ZERO), vec![]).await;
    let target = h.target("vol");
    h.publish("vol", "app").await.unwrap();
    let version = data_link(&target);
    let failed_fetches = |h: &Harness| {
        h.metrics("sscsi_provider_requests_total{provider=\"local\",outcome=\"error\"}")
            .first()
            .map(|l| l.rsplit(' ').next().unwrap().to_owned())
    };

    std::fs::remove_file(h.store().join("api-key")).unwrap();
    h.publish("vol", "app").await.expect("a failed refresh is reported as success");
    assert_eq!(failed_fetches(&h).as_deref(), Some("1"));
    // Within the backoff, republishes do not call the backend again.
    for _ in 0..2 {
        h.publish("vol", "app").await.unwrap();
    }
    assert_eq!(failed_fetches(&h).as_deref(), Some("1"), "backing off");
    assert_eq!(
        h.metrics("sscsi_rotation_volumes_in_backoff"),
        ["sscsi_rotation_volumes_in_backoff 1"]
    );
    assert_eq!(read(&target.join("api-key")), "key-v1", "previous files intact");
    assert_eq!(data_link(&target), version);

    // After the backoff (500 ms ±20 %) it tries again, fails, and waits longer.
    tokio::time::sleep(Duration::from_millis(700)).await;
    h.publish("vol", "app").await.unwrap();
    assert_eq!(failed_fetches(&h).as_deref(), Some("2"));
    h.publish("vol", "app").await.unwrap();
    assert_eq!(failed_fetches(&h).as_deref(), Some("2"));

    // The backend recovers: the next try after the (capped) backoff succeeds.
    std::fs::write(h.store().join("api-key"), "key-v2").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    h.publish("vol", "app").await.unwrap();
    assert_eq!(read(&target.join("api-key")), "key-v2");
    assert_eq!(
        h.metrics("sscsi_rotation_volumes_in_backoff"),
        ["sscsi_rotation_volumes_in_backoff 0"]
    );
    h.unpublish("vol").await.unwrap();
    h.stop().await;
}

/// External providers over v1alpha1, as the node calls them: the real
/// client against a provider server on a real socket.
#[tokio::test]
async fn external_providers_are_written_checked_and_left_alone_in_legacy_mode() {
    use sscsi_core::ExternalProviders;
    use sscsi_provider_grpc::{ExternalSockets, SocketOptions};
    use sscsi_testkit::provider::{Answer, FakeProvider};

    let sockets_dir = tempfile::tempdir().unwrap();
    let version = || vec![("token".to_owned(), "7".to_owned())];
    let file = |path: &str, mode: i32| (path.to_owned(), mode, b"tok-bytes".to_vec());
    let ext = FakeProvider::start(
        sockets_dir.path(),
        "ext",
        Answer::Files(vec![file("token", 0o640), file("../../escape", 0o644)], version()),
    );
    let legacy = FakeProvider::start(
        sockets_dir.path(),
        "legacy",
        Answer::WritesItself(
            vec![("written-by-provider".into(), b"legacy-bytes".to_vec())],
            version(),
        ),
    );
    let options =
        SocketOptions { dirs: vec![sockets_dir.path().into()], ..SocketOptions::default() };
    let sockets = ExternalSockets::new(options, &Default::default());
    let providers = vec![sockets.find("ext").unwrap(), sockets.find("legacy").unwrap()];
    let h = Harness::start(None, providers).await;

    // A path out of the volume: refused, nothing written, nothing mounted.
    let before = snapshot(h.dir.path());
    let status = h.publish("vol", "external").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(status.message().contains("invalid path"), "{}", status.message());
    let target = h.target("vol");
    assert!(!h.mounter.is_mounted(&target).unwrap(), "unmounted after the failure");
    let mut after = snapshot(h.dir.path());
    after.retain(|p| !target.starts_with(p));
    assert_eq!(after, before, "nothing written anywhere");
    assert!(!h.metrics("node_publish_error_total").is_empty());

    // A good answer: written by the atomic writer, with the provider's mode.
    ext.answer(Answer::Files(vec![file("token", 0o640)], version()));
    h.publish("vol", "external").await.unwrap();
    assert_eq!(std::fs::read(target.join("token")).unwrap(), b"tok-bytes");
    let mode = std::fs::metadata(target.join("token")).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o640);
    assert!(target.join("..data").exists(), "the atomic writer's layout");
    let sent = ext.requests().pop().unwrap();
    assert_eq!(sent.target_path, target.display().to_string());
    assert_eq!(sent.permission, "420");
    let attributes: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&sent.attributes).unwrap();
    assert_eq!(attributes["secretProviderClass"], "external");
    assert!(attributes["objects"].contains("db/password"), "the class's parameters");
    let published = h.metrics("node_publish_total");
    assert!(published.iter().any(|l| l.contains("provider=\"ext\"")), "{published:?}");

    // Legacy: the provider writes into the mounted volume itself and returns
    // no files; they are left as it wrote them.
    h.publish("old", "legacy").await.unwrap();
    let target = h.target("old");
    assert_eq!(std::fs::read(target.join("written-by-provider")).unwrap(), b"legacy-bytes");
    assert!(!target.join("..data").exists(), "nothing written by sscsi");
    assert_eq!(legacy.requests().len(), 1);
    // On tmpfs the unmount takes them; on disk they are not ours to delete.
    if is_root() {
        h.unpublish("old").await.unwrap();
    }
    h.stop().await;
}

/// Reads `path` as user 1000 with primary group `gid`, as a pod's container
/// process runs: true when the read succeeds.
fn readable_as(gid: u32, path: &Path) -> bool {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("cat")
        .arg(path)
        .uid(1000)
        .gid(gid)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// kubelet sends the pod's fsGroup as `volume_mount_group` (the node has
/// VOLUME_MOUNT_GROUP): a 0640 file is readable by the group, not by others,
/// before and after a rotation; a group that is not a number is refused.
#[tokio::test]
async fn the_pods_fs_group_owns_the_volume_across_rotations() {
    let h = Harness::start(Some(Duration::ZERO), vec![]).await;
    let with_group = |group: &str| {
        let mut req = h.publish_request("vol", "group-read");
        let capability = req.volume_capability.as_mut().unwrap();
        capability.access_type =
            Some(volume_capability::AccessType::Mount(volume_capability::MountVolume {
                volume_mount_group: group.into(),
                ..Default::default()
            }));
        req
    };
    for bad in ["web", "-1", "+2000", "4294967296", " 2000"] {
        let err = h.node.clone().node_publish_volume(with_group(bad)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err:?}");
        assert!(err.message().contains("volume_mount_group"), "{}", err.message());
        assert!(!h.target("vol").join("db").exists(), "nothing written for {bad:?}");
    }
    // The ownership half needs root (tmpfs, another user); CI runs as root.
    if !is_root() {
        h.stop().await;
        return;
    }
    let target = h.target("vol");
    h.node.clone().node_publish_volume(with_group("2000")).await.unwrap();
    let file = target.join("db/password");
    assert_eq!(read(&file), "s3cret-v1");
    assert!(readable_as(2000, &file), "the fsGroup reads a 0640 file");
    assert!(!readable_as(3000, &file), "another group does not");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&target).unwrap().gid(), 2000, "the tmpfs root too");

    std::fs::write(h.store().join("db/password"), "s3cret-v2").unwrap();
    let v1 = data_link(&target);
    h.node.clone().node_publish_volume(with_group("2000")).await.unwrap();
    assert_ne!(data_link(&target), v1, "rotated");
    assert_eq!(read(&file), "s3cret-v2");
    assert!(readable_as(2000, &file) && !readable_as(3000, &file), "kept across the rotation");
    assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o640, "the mode is kept");
    h.unpublish("vol").await.unwrap();
    h.stop().await;
}

/// Files built from the provider's: written beside them with their mode,
/// rebuilt when a secret they use changes (the others keep their bytes),
/// kept when a rotation cannot build them, and refused on a first mount
/// naming the file, with nothing mounted.
#[tokio::test]
async fn built_files_are_written_rotated_and_refused_as_provider_files() {
    let h = Harness::start(Some(Duration::ZERO), vec![]).await;
    let target = h.target("vol");
    h.publish("vol", "built").await.unwrap();
    assert_eq!(read(&target.join("app.env")), "DB_PASSWORD=s3cret-v1\n");
    assert_eq!(read(&target.join("key.conf")), "key=key-v1");
    assert_eq!(read(&target.join("api-key")), "key-v1", "the provider's files stay");
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| std::fs::metadata(target.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode("app.env"), mode("key.conf")), (0o640, 0o644));

    std::fs::write(h.store().join("api-key"), "key-v2").unwrap();
    h.publish("vol", "built").await.unwrap();
    assert_eq!(read(&target.join("key.conf")), "key=key-v2");
    assert_eq!(read(&target.join("app.env")), "DB_PASSWORD=s3cret-v1\n");

    // The provider answers, but the template cannot be built from what it
    // read (not text): the rotation keeps every file as it was.
    std::fs::write(h.store().join("api-key"), b"\xff\xfe").unwrap();
    let v2 = data_link(&target);
    h.publish("vol", "built").await.unwrap();
    assert_eq!(data_link(&target), v2);
    assert_eq!(read(&target.join("key.conf")), "key=key-v2");
    assert_eq!(read(&target.join("api-key")), "key-v2");
    let failures = h.metrics("rotation_reconcile_error_total");
    assert!(failures.iter().any(|l| l.contains("FileWriteError")), "{failures:?}");
    h.unpublish("vol").await.unwrap();

    let err = h.publish("bad", "built-bad").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains(r#"SecretProviderClass shop/built-bad: parameter "sscsi.io/files": files[0] ("app.env"): object "db/password" is not mounted"#),
        "{}",
        err.message()
    );
    assert!(!h.mounter.is_mounted(&h.target("bad")).unwrap(), "nothing mounted");
    h.stop().await;
}

/// `sscsi.io/refresh`: a class fetched `once` is never refreshed (not even
/// on demand), one with a longer interval waits it out, the default class
/// follows the node's interval (zero here: every republish); a newer
/// version seen by a volume of the same identity makes the others due.
#[tokio::test]
async fn a_class_sets_its_own_refresh() {
    let h = Harness::start(Some(Duration::ZERO), vec![]).await;
    for (volume, class) in [("d", "app"), ("o", "refresh-once"), ("l", "refresh-hourly")] {
        h.publish(volume, class).await.unwrap();
    }
    std::fs::write(h.store().join("api-key"), "key-v2").unwrap();
    // The hourly volume first: once the default one has seen the new
    // version, every volume of its identity holding the old one is due.
    for (volume, class) in [("o", "refresh-once"), ("l", "refresh-hourly"), ("d", "app")] {
        h.publish(volume, class).await.unwrap();
    }
    assert_eq!(read(&h.target("d").join("api-key")), "key-v2");
    assert_eq!(read(&h.target("o").join("api-key")), "key-v1", "once: never again");
    assert_eq!(read(&h.target("l").join("api-key")), "key-v1", "within its hour");
    h.publish("l", "refresh-hourly").await.unwrap();
    assert_eq!(read(&h.target("l").join("api-key")), "key-v2", "due: its identity saw v2");
    h.publish("o", "refresh-once").await.unwrap();
    assert_eq!(h.refresher.refresh_pod("shop", "web-0").await, 2, "not the once volume");
    assert_eq!(read(&h.target("o").join("api-key")), "key-v1");
    h.stop().await;
}

/// With `--pin-class-generation` a volume keeps the class of its first
/// mount: an edit (here a file dropped from the class) reaches only new
/// pods. Without it, the next refresh follows the edit.
#[tokio::test]
async fn a_pinned_volume_keeps_the_class_it_was_mounted_with() {
    for pin in [true, false] {
        let mounter: Arc<dyn Mounter> = Arc::new(FakeMounter::new());
        let h = Harness::start_pinning(mounter, Some(Duration::ZERO), vec![], pin).await;
        h.publish("vol", "app").await.unwrap();
        let spcs = h.dir.path().join("spc/spcs.yaml");
        let all = std::fs::read_to_string(&spcs).unwrap();
        let edited = all.replacen("      - objectName: api-key\n", "", 1);
        assert_ne!(all, edited);
        std::fs::write(&spcs, edited).unwrap();
        h.publish("vol", "app").await.unwrap();
        assert_eq!(h.target("vol").join("api-key").exists(), pin, "pinned: {pin}");
        h.publish("new", "app").await.unwrap();
        assert!(!h.target("new").join("api-key").exists(), "a new pod gets the edit");
        h.stop().await;
    }
}

/// A backend that answers, or is down (`Unavailable`) while told so; each
/// answer is `secret-<n>` with `n` counting the answers.
#[derive(Debug, Default)]
struct Flaky {
    down: std::sync::atomic::AtomicBool,
    answers: std::sync::atomic::AtomicU32,
}

#[derive(Debug, thiserror::Error)]
#[error("connection refused")]
struct Down;

impl sscsi_core::ProviderFailure for Down {
    fn code(&self) -> sscsi_core::ErrorCode {
        sscsi_core::ErrorCode::Unavailable
    }
}

#[async_trait]
impl Provider for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    async fn mount(&self, _: &MountRequest) -> Result<MountResponse, ProviderError> {
        use std::sync::atomic::Ordering;
        if self.down.load(Ordering::SeqCst) {
            return Err(Down.into());
        }
        let n = self.answers.fetch_add(1, Ordering::SeqCst) + 1;
        let contents = format!("secret-{n}");
        let file =
            SecretFile { path: "token".into(), mode: 0o640, contents: contents.clone().into() };
        Ok(MountResponse::new(
            vec![file],
            vec![ObjectVersion { id: "token".into(), version: contents }],
        ))
    }
}

impl Harness {
    /// A publish of class `spc` for pod `pod` of service account `account`.
    async fn publish_class_as(
        &self,
        volume: &str,
        spc: &str,
        pod: &str,
        account: &str,
    ) -> Result<(), tonic::Status> {
        let pod = PodInfo {
            name: pod.into(),
            namespace: "shop".into(),
            uid: format!("uid-{pod}"),
            service_account: account.into(),
        };
        let req = client::inline_volume_publish_request(
            &format!("csi-{volume}"),
            &self.target(volume),
            spc,
            &pod,
        );
        self.node.clone().node_publish_volume(req).await.map(|_| ())
    }
}

/// With rotation off, a volume mounted from the copy is still fetched again
/// at its next republish once the backend answers, then left alone like
/// every other volume.
#[tokio::test]
async fn with_rotation_off_a_copy_is_replaced_at_the_next_republish() {
    use std::sync::atomic::Ordering;
    let flaky = Arc::new(Flaky::default());
    let ttl = Some(Duration::from_secs(600));
    let h =
        Harness::start_full(Arc::new(FakeMounter::new()), None, vec![flaky.clone()], false, ttl)
            .await;
    h.publish_class_as("a", "flaky", "web-0", "web").await.unwrap();
    flaky.down.store(true, Ordering::SeqCst);
    h.publish_class_as("b", "flaky", "web-1", "web").await.expect("served from the copy");
    assert_eq!(read(&h.target("b").join("token")), "secret-1");

    flaky.down.store(false, Ordering::SeqCst);
    h.publish_class_as("b", "flaky", "web-1", "web").await.unwrap();
    assert_eq!(read(&h.target("b").join("token")), "secret-2", "the copy is replaced");
    for volume in ["b", "a"] {
        let pod = if volume == "a" { "web-0" } else { "web-1" };
        h.publish_class_as(volume, "flaky", pod, "web").await.unwrap();
    }
    assert_eq!(flaky.answers.load(Ordering::SeqCst), 2, "rotation off: fetched volumes stay");
    assert_eq!(read(&h.target("a").join("token")), "secret-1");
    h.stop().await;
}

/// `--serve-last-known-good`: while the backend is down, a new pod of the
/// same identity mounts the copy fetched before (with a Warning), and the
/// volume is fetched again at its next republish; another service account
/// is refused, so is everyone without the flag, and so is a copy past its TTL.
#[tokio::test]
async fn a_backend_outage_is_bridged_by_the_last_known_good_copy_of_the_same_identity() {
    use std::sync::atomic::Ordering;
    let mounter = || -> Arc<dyn Mounter> { Arc::new(FakeMounter::new()) };
    let flaky = Arc::new(Flaky::default());
    let interval = Some(Duration::from_secs(3600));
    let ttl = Some(Duration::from_secs(600));
    let h = Harness::start_full(mounter(), interval, vec![flaky.clone()], false, ttl).await;
    h.publish_class_as("a", "flaky", "web-0", "web").await.unwrap();
    assert_eq!(read(&h.target("a").join("token")), "secret-1");

    flaky.down.store(true, Ordering::SeqCst);
    h.publish_class_as("b", "flaky", "web-1", "web").await.expect("served from the copy");
    assert_eq!(read(&h.target("b").join("token")), "secret-1");
    let other = h.publish_class_as("c", "flaky", "batch-0", "batch").await.unwrap_err();
    assert_eq!(other.code(), Code::Unavailable, "never across identities: {}", other.message());
    assert!(!h.target("c").join("token").exists());

    // The backend is back: the copied volume is fetched at its next
    // republish, long before its interval.
    flaky.down.store(false, Ordering::SeqCst);
    h.publish_class_as("b", "flaky", "web-1", "web").await.unwrap();
    assert_eq!(read(&h.target("b").join("token")), "secret-2");
    h.stop().await;

    // Without the flag the same outage fails the mount.
    let flaky = Arc::new(Flaky::default());
    let h = Harness::start_full(mounter(), interval, vec![flaky.clone()], false, None).await;
    h.publish_class_as("a", "flaky", "web-0", "web").await.unwrap();
    flaky.down.store(true, Ordering::SeqCst);
    let refused = h.publish_class_as("b", "flaky", "web-1", "web").await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    h.stop().await;

    // A copy older than the TTL serves nobody.
    let flaky = Arc::new(Flaky::default());
    let short = Some(Duration::from_millis(50));
    let h = Harness::start_full(mounter(), interval, vec![flaky.clone()], false, short).await;
    h.publish_class_as("a", "flaky", "web-0", "web").await.unwrap();
    flaky.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let expired = h.publish_class_as("b", "flaky", "web-1", "web").await.unwrap_err();
    assert_eq!(expired.code(), Code::Unavailable);
    h.stop().await;
}
