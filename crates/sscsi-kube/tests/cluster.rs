//! The node plugin against the Kubernetes API test double, with the real
//! kube client: SecretProviderClasses from the cache, SecretProviderClassPodStatus
//! objects and Events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, PostParams};
use prometheus_client::registry::Registry;
use serde_json::json;
use sscsi_api::SecretProviderClass;
use sscsi_core::{PodInfo, ProviderRegistry};
use sscsi_kube::{KubeObserver, SpcCache, SyncPolicy};
use sscsi_mount::FakeMounter;
use sscsi_node::metrics::NodeMetrics;
use sscsi_node::{Backoff, Condition, NodeConfig, NodeDeps, NodeService, Readiness, services};
use sscsi_proto::csi::v1::node_server::Node;
use sscsi_provider_local::LocalProvider;
use sscsi_testkit::kube_api::ApiServer;
use tokio_util::sync::CancellationToken;

const GROUP: &str = "secrets-store.csi.x-k8s.io";

fn spc(name: &str) -> SecretProviderClass {
    serde_json::from_value(json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"provider": "local", "parameters": {"objects": "- objectName: b\n- objectName: a\n"}}
    }))
    .unwrap()
}

struct Cluster {
    api: ApiServer,
    registry: Registry,
    node: NodeService,
    store: tempfile::TempDir,
    readiness: Readiness,
    observer: Arc<KubeObserver>,
    _stop: tokio_util::sync::DropGuard,
}

async fn start(rotation: Option<Duration>) -> Cluster {
    start_with_sync(rotation, SyncPolicy::Disabled).await
}

async fn start_with_sync(rotation: Option<Duration>, sync: SyncPolicy) -> Cluster {
    start_with(rotation, sync, false).await
}

/// `pin`: `--pin-class-generation`.
async fn start_with(rotation: Option<Duration>, sync: SyncPolicy, pin: bool) -> Cluster {
    let api = ApiServer::start().await;
    let client = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    let store = tempfile::tempdir().unwrap();
    std::fs::write(store.path().join("a"), "alpha").unwrap();
    std::fs::write(store.path().join("b"), "bravo").unwrap();
    let mut providers = ProviderRegistry::new();
    providers.register(Arc::new(LocalProvider::new(store.path()).unwrap()));
    let readiness = Readiness::default();
    let mut registry = Registry::default();
    let stop = CancellationToken::new();
    let (cache, _task) = SpcCache::start(client.clone(), readiness.clone(), stop.clone());
    // Retries of failed writes come quickly here; the default waits 0.5 s first.
    let quick = Backoff { base: Duration::from_millis(5), cap: Duration::from_millis(20) };
    let observer = Arc::new(
        KubeObserver::with_write_backoff(client, "node-1".into(), quick).with_secret_sync(sync),
    );
    let deps = NodeDeps {
        mounter: Arc::new(FakeMounter::new()),
        spcs: Arc::new(cache),
        providers,
        readiness: readiness.clone(),
        metrics: NodeMetrics::new(&mut registry),
        observer: observer.clone(),
    };
    let config = NodeConfig {
        driver_name: "secrets-store.csi.k8s.io".into(),
        vendor_version: "test".into(),
        node_id: "node-1".into(),
        rotation_poll_interval: rotation,
        refresh_backoff: Backoff::default(),
        min_rotation_interval: Duration::ZERO,
        pin_class_generation: pin,
        metrics_pod_labels: false,
        serve_last_known_good: None,
    };
    let (_, node) = services(config, deps);
    Cluster { api, registry, node, store, readiness, observer, _stop: stop.drop_guard() }
}

impl Cluster {
    fn client(&self) -> kube::Client {
        kube::Client::try_from(kube::Config::new(self.api.url().parse().unwrap())).unwrap()
    }

    async fn publish(&self, target: &std::path::Path, spc: &str) -> Result<(), tonic::Status> {
        let pod = PodInfo {
            name: "web-0".into(),
            namespace: "shop".into(),
            uid: "uid-web-0".into(),
            service_account: "web".into(),
        };
        let req = sscsi_node::client::inline_volume_publish_request("csi-1", target, spc, &pod);
        self.node.node_publish_volume(tonic::Request::new(req)).await.map(drop)
    }

    /// The value of the metric series `series` (name with labels), if any.
    fn metric(&self, series: &str) -> Option<String> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
        out.lines().find_map(|l| l.strip_prefix(series).map(|v| v.trim().to_owned()))
    }

    /// The events on the pods, once every write reported so far has landed.
    async fn events(&self) -> Vec<serde_json::Value> {
        self.observer.settled().await;
        self.api.objects("events.k8s.io", "events", Some("shop"))
    }

    /// The pod status objects, once every write reported so far has landed.
    async fn statuses(&self) -> Vec<serde_json::Value> {
        self.observer.settled().await;
        self.api.objects(GROUP, "secretproviderclasspodstatuses", Some("shop"))
    }

    async fn wait_synced(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.readiness.is_met(Condition::CachesSynced) {
            assert!(Instant::now() < deadline, "cache never synced");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the cache has seen a class created through the API.
    async fn create_spc(&self, name: &str) {
        let api: Api<SecretProviderClass> = Api::namespaced(self.client(), "shop");
        api.create(&PostParams::default(), &spc(name)).await.unwrap();
    }
}

#[tokio::test]
async fn publish_records_pod_status_and_a_missing_class_gives_a_warning_event() {
    let cluster = start(None).await;
    cluster.wait_synced().await;
    let dir = tempfile::tempdir().unwrap();
    let target = web_0_target(&dir);

    // No class yet: upstream's reason, a Warning event on the pod, nothing written.
    let err = cluster.publish(&target, "app").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let events = cluster.events().await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "SecretProviderClassNotFound");
    assert_eq!(event["regarding"]["kind"], "Pod");
    assert_eq!(event["regarding"]["name"], "web-0");
    assert_eq!(event["regarding"]["uid"], "uid-web-0");
    let note = event["note"].as_str().unwrap();
    assert!(note.contains("shop/app") && note.contains("not found"), "{note}");
    cluster.observer.settled().await;
    assert!(cluster.api.objects(GROUP, "secretproviderclasspodstatuses", None).is_empty());

    // Once the class exists a later publish succeeds.
    cluster.create_spc("app").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match cluster.publish(&target, "app").await {
            Ok(()) => break,
            Err(e) if e.code() == tonic::Code::NotFound && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("publish failed: {e}"),
        }
    }
    assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "alpha");

    let statuses = cluster.statuses().await;
    assert_eq!(statuses.len(), 1);
    let s = &statuses[0];
    assert_eq!(s["metadata"]["name"], "web-0-shop-app");
    assert_eq!(s["metadata"]["labels"]["internal.secrets-store.csi.k8s.io/node-name"], "node-1");
    assert_eq!(
        s["metadata"]["ownerReferences"],
        json!([{"apiVersion": "v1", "kind": "Pod", "name": "web-0", "uid": "uid-web-0"}])
    );
    assert_eq!(s["status"]["podName"], "web-0");
    assert_eq!(s["status"]["secretProviderClassName"], "app");
    assert_eq!(s["status"]["mounted"], true);
    assert_eq!(s["status"]["targetPath"], target.display().to_string());
    let ids: Vec<&str> = s["status"]["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["a", "b"], "objects sorted by id");
    assert!(s["metadata"]["annotations"].get("sscsi.io/class-generation").is_none(), "not pinned");
}

/// With `--pin-class-generation` the pod status object says which
/// generation of the class the volume keeps.
#[tokio::test]
async fn a_pinned_volume_records_its_class_generation() {
    let cluster = start_with(None, SyncPolicy::Disabled, true).await;
    cluster.create_spc("app").await;
    cluster.wait_synced().await;
    let api: Api<SecretProviderClass> = Api::namespaced(cluster.client(), "shop");
    let generation = api.get("app").await.unwrap().metadata.generation.unwrap_or_default();
    let dir = tempfile::tempdir().unwrap();
    let target = web_0_target(&dir);
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = cluster.publish(&target, "app").await {
        assert!(e.code() == tonic::Code::NotFound && Instant::now() < deadline, "{e}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let statuses = cluster.statuses().await;
    assert_eq!(
        statuses[0]["metadata"]["annotations"]["sscsi.io/class-generation"],
        generation.to_string()
    );
}

/// kube's retry layer resends only 429, 503 and 504; a 500 comes back to the
/// outbox, which keeps trying, and the publish waited for none of it.
#[tokio::test]
async fn a_status_write_the_api_server_refuses_for_a_while_still_lands() {
    let cluster = start(None).await;
    cluster.create_spc("app").await;
    cluster.wait_synced().await;
    cluster.api.fail_next("POST", "secretproviderclasspodstatuses", 3, 500);
    let dir = tempfile::tempdir().unwrap();
    let target = web_0_target(&dir);
    cluster.publish(&target, "app").await.unwrap();
    assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "alpha");

    let statuses = cluster.statuses().await;
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    assert_eq!(statuses[0]["status"]["mounted"], true);
    // A first mount starts with the create: no GET before it.
    assert_eq!(cluster.api.requests("POST", "secretproviderclasspodstatuses"), 4);
    assert_eq!(cluster.api.requests("GET", "secretproviderclasspodstatuses"), 0);
}

#[tokio::test]
async fn refresh_updates_pod_status_only_when_versions_change() {
    let cluster = start(Some(Duration::ZERO)).await;
    cluster.create_spc("app").await;
    cluster.wait_synced().await;
    let dir = tempfile::tempdir().unwrap();
    let target = web_0_target(&dir);
    cluster.publish(&target, "app").await.unwrap();
    let rv = async |c: &Cluster| c.statuses().await[0]["metadata"]["resourceVersion"].clone();
    let first = rv(&cluster).await;

    cluster.publish(&target, "app").await.unwrap();
    assert_eq!(rv(&cluster).await, first, "nothing changed, nothing written");
    assert!(cluster.events().await.is_empty());

    std::fs::write(cluster.store.path().join("b"), "bravo-2").unwrap();
    cluster.publish(&target, "app").await.unwrap();
    assert_ne!(rv(&cluster).await, first, "a new version is recorded");
    let events = cluster.events().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "Normal");
    assert_eq!(events[0]["reason"], "SecretRotationComplete");
}

/// Where kubelet mounts pod web-0's volume `secrets` under `dir`.
fn web_0_target(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("pods/uid-web-0/volumes/kubernetes.io~csi/secrets/mount")
}

/// What Stakater Reloader's CSI integration (`--enable-csi-integration`)
/// hashes of a SecretProviderClassPodStatus: the sorted `id=version` pairs
/// and the class name (`GetSHAfromSecretProviderClassPodStatus`). It acts on
/// updates only, when that input changes; an update of an object first
/// written without objects counts as a change.
fn reloader_input(status: &serde_json::Value) -> String {
    let status = &status["status"];
    let mut parts: Vec<String> = status["objects"]
        .as_array()
        .expect("objects written with the object")
        .iter()
        .map(|o| format!("{}={}", o["id"].as_str().unwrap(), o["version"].as_str().unwrap()))
        .collect();
    let class = status["secretProviderClassName"].as_str().unwrap();
    parts.push(format!("SecretProviderClassName={class}"));
    parts.sort();
    parts.join(";")
}

/// Reloader restarts a workload exactly when its mounted content changed:
/// the pod status object is created whole (objects and class name in the
/// create, so no update from an empty status looks like a change), an
/// unchanged refresh writes nothing, and a rotation changes the input
/// Reloader hashes, once.
#[tokio::test]
async fn reloader_sees_a_change_exactly_when_the_mounted_content_changes() {
    let cluster = start(Some(Duration::ZERO)).await;
    cluster.create_spc("app").await;
    cluster.wait_synced().await;
    let dir = tempfile::tempdir().unwrap();
    let target = web_0_target(&dir);
    cluster.publish(&target, "app").await.unwrap();
    let created = cluster.statuses().await[0].clone();
    let first = reloader_input(&created);
    assert!(first.contains("a=") && first.contains("b="), "{first}");
    let writes = |c: &Cluster| {
        ["POST", "PUT", "PATCH"].map(|m| c.api.requests(m, "secretproviderclasspodstatuses"))
    };
    assert_eq!(writes(&cluster), [1, 0, 0], "one write: the create, whole");

    for _ in 0..3 {
        cluster.publish(&target, "app").await.unwrap();
    }
    let unchanged = cluster.statuses().await[0].clone();
    assert_eq!(unchanged, created, "unchanged refreshes write nothing Reloader could see");
    assert_eq!(writes(&cluster), [1, 0, 0]);

    std::fs::write(cluster.store.path().join("b"), "bravo-2").unwrap();
    cluster.publish(&target, "app").await.unwrap();
    let rotated = cluster.statuses().await[0].clone();
    let second = reloader_input(&rotated);
    assert_ne!(second, first, "the rotation changes what Reloader hashes");
    assert_eq!(second.split(';').filter(|p| !first.contains(p)).count(), 1, "only b's version");
    cluster.publish(&target, "app").await.unwrap();
    assert_eq!(cluster.statuses().await[0], rotated, "and only once");
}

#[tokio::test]
async fn the_refresh_annotation_re_fetches_before_the_interval() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Patch, PatchParams};

    let cluster = start(Some(Duration::from_secs(3600))).await;
    cluster.create_spc("app").await;
    cluster.wait_synced().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "shop");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": "shop", "uid": "uid-web-0"},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "i"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let stop = CancellationToken::new();
    let _watch = sscsi_kube::watch_refresh_requests(
        cluster.client(),
        "node-1",
        cluster.node.refresher(),
        stop.clone(),
    );

    let dir = tempfile::tempdir().unwrap();
    let target = web_0_target(&dir);
    cluster.publish(&target, "app").await.unwrap();
    std::fs::write(cluster.store.path().join("a"), "alpha-2").unwrap();
    cluster.publish(&target, "app").await.unwrap();
    assert_eq!(
        std::fs::read_to_string(target.join("a")).unwrap(),
        "alpha",
        "the interval has not passed"
    );

    // Ask for a refresh with a new value each time, until the watch (whose
    // first list only sets a baseline) acts on one.
    let deadline = Instant::now() + Duration::from_secs(10);
    for attempt in 0.. {
        let value = format!("request-{attempt}");
        let patch = json!({"metadata": {"annotations": {sscsi_kube::REFRESH_ANNOTATION: value}}});
        pods.patch("web-0", &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        if std::fs::read_to_string(target.join("a")).unwrap() == "alpha-2" {
            break;
        }
        assert!(Instant::now() < deadline, "the annotation did not trigger a refresh");
    }
    let events = cluster.events().await;
    assert!(events.iter().any(|e| e["reason"] == "SecretRotationComplete"), "{events:?}");
    stop.cancel();
}

fn synced_spc(name: &str, secret_objects: serde_json::Value) -> SecretProviderClass {
    serde_json::from_value(json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "provider": "local",
            "parameters": {"objects": "- objectName: b\n- objectName: a\n"},
            "secretObjects": secret_objects
        }
    }))
    .unwrap()
}

async fn create_pod(cluster: &Cluster, name: &str, owner: Option<(&str, &str)>) {
    use k8s_openapi::api::core::v1::Pod;
    let owners = owner.map_or(json!([]), |(rs, uid)| {
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": uid, "controller": true}])
    });
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "ownerReferences": owners},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "i"}]}
    }))
    .unwrap();
    Api::<Pod>::namespaced(cluster.client(), "shop")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}

impl Cluster {
    async fn publish_pod(
        &self,
        pod: &str,
        volume: &str,
        target: &std::path::Path,
        spc: &str,
    ) -> Result<(), tonic::Status> {
        let pod = PodInfo {
            name: pod.into(),
            namespace: "shop".into(),
            uid: format!("uid-{pod}"),
            service_account: "web".into(),
        };
        let req = sscsi_node::client::inline_volume_publish_request(volume, target, spc, &pod);
        self.node.node_publish_volume(tonic::Request::new(req)).await.map(drop)
    }

    fn secret(&self, name: &str) -> Option<serde_json::Value> {
        self.api
            .objects("", "secrets", Some("shop"))
            .into_iter()
            .find(|s| s["metadata"]["name"] == name)
    }

    async fn wait_for_class(&self, name: &str) {
        let api: Api<SecretProviderClass> = Api::namespaced(self.client(), "shop");
        api.get(name).await.unwrap();
        // The cache follows the watch; give it the object.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn b64(s: &str) -> String {
    use k8s_openapi::ByteString;
    serde_json::to_value(ByteString(s.as_bytes().to_vec())).unwrap().as_str().unwrap().to_owned()
}

#[tokio::test]
async fn secret_objects_are_mirrored_and_written_only_on_change() {
    let cluster =
        start_with_sync(Some(Duration::ZERO), SyncPolicy::Enabled { allowed_namespaces: None })
            .await;
    let spcs: Api<SecretProviderClass> = Api::namespaced(cluster.client(), "shop");
    let secret_objects = json!([{
        "secretName": "app-secret", "type": "Opaque",
        "labels": {"team": "shop"}, "annotations": {"note": "synced"},
        "data": [{"objectName": "a", "key": "username"}, {"objectName": "b", "key": "password"}]
    }]);
    spcs.create(&PostParams::default(), &synced_spc("app", secret_objects)).await.unwrap();
    cluster.wait_synced().await;
    cluster.wait_for_class("app").await;
    create_pod(&cluster, "web-0", Some(("web-abc", "rs-1"))).await;
    create_pod(&cluster, "web-1", Some(("web-def", "rs-2"))).await;

    let dir = tempfile::tempdir().unwrap();
    let target = web_0_target(&dir);
    cluster.publish_pod("web-0", "csi-a", &target, "app").await.unwrap();
    let secret = cluster.secret("app-secret").expect("Secret created");
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(secret["data"]["username"], b64("alpha"));
    assert_eq!(secret["data"]["password"], b64("bravo"));
    assert_eq!(
        secret["metadata"]["labels"],
        json!({"team": "shop", "secrets-store.csi.k8s.io/managed": "true"})
    );
    assert_eq!(secret["metadata"]["annotations"], json!({"note": "synced"}));
    assert_eq!(
        secret["metadata"]["ownerReferences"],
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "rs-1"}])
    );
    let rv = secret["metadata"]["resourceVersion"].clone();

    // An unchanged re-fetch writes nothing.
    cluster.publish_pod("web-0", "csi-a", &target, "app").await.unwrap();
    assert_eq!(cluster.secret("app-secret").unwrap()["metadata"]["resourceVersion"], rv);

    // A changed secret reaches the file and the Secret in the same re-fetch.
    std::fs::write(cluster.store.path().join("b"), "bravo-2").unwrap();
    cluster.publish_pod("web-0", "csi-a", &target, "app").await.unwrap();
    assert_eq!(std::fs::read_to_string(target.join("b")).unwrap(), "bravo-2");
    let secret = cluster.secret("app-secret").unwrap();
    assert_eq!(secret["data"]["password"], b64("bravo-2"));
    assert_ne!(secret["metadata"]["resourceVersion"], rv);

    // A pod of the next ReplicaSet (a rollout) adds its owner; the old one stays.
    let target2 = dir.path().join("pods/uid-web-1/volumes/kubernetes.io~csi/secrets/mount");
    cluster.publish_pod("web-1", "csi-b", &target2, "app").await.unwrap();
    let owners: Vec<String> = cluster.secret("app-secret").unwrap()["metadata"]["ownerReferences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["uid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(owners, vec!["rs-1", "rs-2"]);
    // Four syncs in sync (three fetches of web-0, one of web-1), no failure.
    let synced = r#"sync_k8s_secret_total{provider="local",os_type="linux"}"#;
    assert_eq!(cluster.metric(synced).as_deref(), Some("4"));
    assert_eq!(cluster.metric("sscsi_sync_k8s_secret_error_total"), None);

    let events = cluster.events().await;
    assert!(events.iter().all(|e| e["type"] != "Warning"), "{events:?}");

    // A failing backend during rotation: files and Secret stay as they were.
    let before = cluster.secret("app-secret").unwrap();
    std::fs::remove_file(cluster.store.path().join("b")).unwrap();
    cluster.publish_pod("web-0", "csi-a", &target, "app").await.expect("masked, as upstream");
    assert_eq!(std::fs::read_to_string(target.join("b")).unwrap(), "bravo-2");
    assert_eq!(cluster.secret("app-secret").unwrap(), before, "the Secret is untouched");
}

#[tokio::test]
async fn sync_errors_are_events_and_never_fail_the_mount() {
    let allowed = SyncPolicy::Enabled { allowed_namespaces: Some(["other".to_owned()].into()) };
    let cluster = start_with_sync(None, allowed).await;
    let spcs: Api<SecretProviderClass> = Api::namespaced(cluster.client(), "shop");
    let objects =
        json!([{"secretName": "s", "type": "Opaque", "data": [{"objectName": "a", "key": "k"}]}]);
    spcs.create(&PostParams::default(), &synced_spc("app", objects)).await.unwrap();
    cluster.wait_synced().await;
    cluster.wait_for_class("app").await;
    let dir = tempfile::tempdir().unwrap();
    let target = web_0_target(&dir);
    cluster.publish_pod("web-0", "csi-a", &target, "app").await.expect("the mount succeeds");
    assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "alpha");
    assert!(cluster.secret("s").is_none(), "nothing synced into a namespace not allowed");
    let events = cluster.events().await;
    let note = events
        .iter()
        .find(|e| e["reason"] == "SecretSyncNotAllowed")
        .and_then(|e| e["note"].as_str())
        .unwrap_or_else(|| panic!("no sync event: {events:?}"));
    assert!(note.contains("namespace shop is not allowed"), "{note}");
    let refused = r#"sscsi_sync_k8s_secret_error_total{provider="local",error_type="SecretSyncNotAllowed",os_type="linux"}"#;
    assert_eq!(cluster.metric(refused).as_deref(), Some("1"));

    // A file the secretObject names but the volume lacks.
    let cluster = start_with_sync(None, SyncPolicy::Enabled { allowed_namespaces: None }).await;
    let spcs: Api<SecretProviderClass> = Api::namespaced(cluster.client(), "shop");
    let objects = json!([
        {"secretName": "s", "type": "Opaque", "data": [{"objectName": "missing", "key": "k"}]}
    ]);
    spcs.create(&PostParams::default(), &synced_spc("app", objects)).await.unwrap();
    cluster.wait_synced().await;
    cluster.wait_for_class("app").await;
    cluster.publish_pod("web-0", "csi-a", &target.with_file_name("mount2"), "app").await.unwrap();
    let warnings: Vec<String> = cluster
        .events()
        .await
        .iter()
        .filter(|e| e["type"] == "Warning")
        .map(|e| format!("{}: {}", e["reason"].as_str().unwrap(), e["note"].as_str().unwrap()))
        .collect();
    let has = |reason: &str, text: &str| {
        warnings.iter().any(|w| w.starts_with(reason) && w.contains(text))
    };
    assert!(
        has("FailedToCreateSecret: ", r#"file matching objectName "missing" not found in the pod"#),
        "{warnings:?}"
    );
    assert!(cluster.secret("s").is_none() && cluster.secret("t").is_none());
}

#[tokio::test]
async fn tls_secret_objects_get_tls_crt_and_tls_key_from_pem_and_pfx() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let read = |name: &str| std::fs::read(format!("{fixtures}/{name}")).unwrap();
    let cluster = start_with_sync(None, SyncPolicy::Enabled { allowed_namespaces: None }).await;
    let mut bundle = read("rsa-pkcs8.key");
    bundle.extend(read("rsa.crt"));
    std::fs::write(cluster.store.path().join("bundle.pem"), &bundle).unwrap();
    std::fs::write(cluster.store.path().join("cert.pfx"), read("rsa.pfx")).unwrap();
    let spc: SecretProviderClass = serde_json::from_value(json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": "tls", "namespace": "shop"},
        "spec": {
            "provider": "local",
            "parameters": {"objects": "- objectName: bundle.pem\n- objectName: cert.pfx\n"},
            "secretObjects": [
                {"secretName": "ingress-tls", "type": "kubernetes.io/tls",
                 "data": [{"objectName": "bundle.pem", "key": "tls.key"}, {"objectName": "bundle.pem", "key": "tls.crt"}]},
                {"secretName": "pfx-tls", "type": "kubernetes.io/tls",
                 "data": [{"objectName": "cert.pfx", "key": "tls.key"}, {"objectName": "cert.pfx", "key": "tls.crt"}]},
                {"secretName": "bad-tls", "type": "kubernetes.io/tls",
                 "data": [{"objectName": "bundle.pem", "key": "ca.crt"}]}
            ]
        }
    }))
    .unwrap();
    Api::<SecretProviderClass>::namespaced(cluster.client(), "shop")
        .create(&PostParams::default(), &spc)
        .await
        .unwrap();
    cluster.wait_synced().await;
    cluster.wait_for_class("tls").await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("pods/uid-web-0/volumes/kubernetes.io~csi/tls/mount");
    cluster.publish_pod("web-0", "csi-t", &target, "tls").await.unwrap();

    let secret = cluster.secret("ingress-tls").expect("TLS Secret synced");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let decoded = |key: &str| {
        let value: k8s_openapi::ByteString =
            serde_json::from_value(secret["data"][key].clone()).unwrap();
        String::from_utf8(value.0).unwrap()
    };
    assert_eq!(decoded("tls.key"), String::from_utf8(read("rsa-pkcs1.key")).unwrap());
    assert_eq!(decoded("tls.crt"), String::from_utf8(read("rsa.crt")).unwrap());

    let pfx = cluster.secret("pfx-tls").expect("TLS Secret synced from a PFX");
    let decoded = |key: &str| {
        let value: k8s_openapi::ByteString =
            serde_json::from_value(pfx["data"][key].clone()).unwrap();
        String::from_utf8(value.0).unwrap()
    };
    assert_eq!(decoded("tls.key"), String::from_utf8(read("rsa-pkcs1.key")).unwrap());
    assert_eq!(decoded("tls.crt"), String::from_utf8(read("rsa.crt")).unwrap());

    assert!(cluster.secret("bad-tls").is_none());
    let events = cluster.events().await;
    let bad = events
        .iter()
        .find(|e| e["reason"] == "SecretTypeNotSupported")
        .unwrap_or_else(|| panic!("no event for the bad TLS object: {events:?}"));
    let note = bad["note"].as_str().unwrap();
    assert!(note.contains("bad-tls") && note.contains(r#"key "ca.crt" is not valid"#), "{note}");
}

/// Upstream issue #899: a rollout where the old ReplicaSet, the Secret's only
/// owner, goes away before the new pods mount. The garbage collector deletes
/// the Secret; a new pod's mount must bring it back before the pod's
/// containers start, that is before NodePublishVolume returns.
#[tokio::test]
async fn a_synced_secret_is_back_before_a_new_pod_starts_after_a_rollout() {
    let cluster = start_with_sync(None, SyncPolicy::Enabled { allowed_namespaces: None }).await;
    let objects = json!([{"secretName": "app-secret", "type": "Opaque", "data": [{"objectName": "a", "key": "k"}]}]);
    Api::<SecretProviderClass>::namespaced(cluster.client(), "shop")
        .create(&PostParams::default(), &synced_spc("app", objects))
        .await
        .unwrap();
    cluster.wait_synced().await;
    cluster.wait_for_class("app").await;
    create_pod(&cluster, "old-0", Some(("web-old", "rs-old"))).await;
    create_pod(&cluster, "new-0", Some(("web-new", "rs-new"))).await;
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("pods/uid-old-0/volumes/kubernetes.io~csi/s/mount");
    cluster.publish_pod("old-0", "csi-old", &old, "app").await.unwrap();
    assert!(cluster.secret("app-secret").is_some());

    // The old ReplicaSet is deleted; the garbage collector removes what only it owned.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(cluster.client(), "shop");
    secrets.delete("app-secret", &Default::default()).await.unwrap();

    let new = dir.path().join("pods/uid-new-0/volumes/kubernetes.io~csi/s/mount");
    cluster.publish_pod("new-0", "csi-new", &new, "app").await.unwrap();
    let secret =
        cluster.secret("app-secret").expect("the Secret exists when the new pod's mount returns");
    assert_eq!(secret["data"]["k"], b64("alpha"));
    assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], "rs-new");
}

#[tokio::test]
async fn node_region_comes_from_the_node_label() {
    use k8s_openapi::api::core::v1::Node;
    let api = ApiServer::start().await;
    let client = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-1", "labels": {"topology.kubernetes.io/region": "eu-central-1"}}
    }))
    .unwrap();
    Api::<Node>::all(client.clone()).create(&PostParams::default(), &node).await.unwrap();
    assert_eq!(sscsi_kube::node_region(&client, "node-1").await.as_deref(), Some("eu-central-1"));
    assert_eq!(sscsi_kube::node_region(&client, "node-2").await, None);
}
