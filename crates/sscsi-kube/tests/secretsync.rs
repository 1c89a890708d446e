//! The SecretSync controller against the Kubernetes API test double, with
//! the real kube client and the local provider: Secrets created, rotated,
//! forced, kept on failure, refused, garbage-collected, and written by one
//! leader at a time.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sscsi_api::SecretSync;
use sscsi_core::ProviderRegistry;
use sscsi_engine::Engine;
use sscsi_kube::secretsync::{ControllerConfig, SecretSyncController, SyncStats, run_elected};
use sscsi_kube::{Elector, LeaseConfig};
use sscsi_node::Backoff;
use sscsi_provider_local::LocalProvider;
use sscsi_testkit::kube_api::ApiServer;
use tokio_util::sync::CancellationToken;

const SYNC_GROUP: &str = "secret-sync.x-k8s.io";

struct World {
    api: ApiServer,
    client: kube::Client,
    store: tempfile::TempDir,
}

impl World {
    async fn start() -> Self {
        let api = ApiServer::start().await;
        let client = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
        let store = tempfile::tempdir().unwrap();
        std::fs::write(store.path().join("user"), "admin").unwrap();
        std::fs::write(store.path().join("pass"), "hunter2").unwrap();
        let world = Self { api, client, store };
        world.class("shop", "local-db").await;
        world
    }

    async fn class(&self, namespace: &str, name: &str) {
        self.create(
            "secrets-store.csi.x-k8s.io/v1",
            "secretproviderclasses",
            namespace,
            json!({
                "apiVersion": "secrets-store.csi.x-k8s.io/v1",
                "kind": "SecretProviderClass",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"provider": "local", "parameters": {
                    "objects": "- objectName: user\n- objectName: pass\n"}}
            }),
        )
        .await;
    }

    async fn create(&self, api_version: &str, plural: &str, namespace: &str, body: Value) {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let resource = kube::core::ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: api_version.into(),
            kind: body["kind"].as_str().unwrap().into(),
            plural: plural.into(),
        };
        let api: Api<kube::core::DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource);
        let object = serde_json::from_value(body).unwrap();
        api.create(&PostParams::default(), &object).await.unwrap();
    }

    async fn secret_sync(&self, namespace: &str, name: &str, object: Value) {
        let sync: SecretSync = serde_json::from_value(json!({
            "apiVersion": "secret-sync.x-k8s.io/v1alpha1",
            "kind": "SecretSync",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "serviceAccountName": "db-reader",
                "secretProviderClassName": "local-db",
                "secretObject": object,
            }
        }))
        .unwrap();
        let api: Api<SecretSync> = Api::namespaced(self.client.clone(), namespace);
        api.create(&PostParams::default(), &sync).await.unwrap();
    }

    fn controller(&self, config: ControllerConfig) -> SecretSyncController {
        let mut providers = ProviderRegistry::new();
        providers.register(Arc::new(LocalProvider::new(self.store.path()).unwrap()));
        let engine = Engine::new(providers, config.rotation_poll_interval);
        SecretSyncController::new(self.client.clone(), engine, config)
    }

    fn start_controller(
        &self,
        config: ControllerConfig,
    ) -> (SecretSyncController, CancellationToken) {
        let controller = self.controller(config);
        let stop = CancellationToken::new();
        tokio::spawn(controller.clone().run(stop.clone()));
        (controller, stop)
    }

    async fn secret(&self, namespace: &str, name: &str) -> Value {
        let found = self
            .api
            .wait_for("", "secrets", Some(namespace), |s| {
                s.iter().any(|s| s["metadata"]["name"] == name)
            })
            .await;
        found.into_iter().find(|s| s["metadata"]["name"] == name).unwrap()
    }

    /// The SecretSync once `ready` holds for its status.
    async fn status(&self, namespace: &str, name: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let found = self
            .api
            .wait_for(SYNC_GROUP, "secretsyncs", Some(namespace), |all| {
                all.iter().any(|s| s["metadata"]["name"] == name && ready(&s["status"]))
            })
            .await;
        found.into_iter().find(|s| s["metadata"]["name"] == name).unwrap()["status"].clone()
    }
}

/// No rotation timer (passes come from `rotate_now`), quick retries, one audience.
fn config() -> ControllerConfig {
    ControllerConfig {
        rotation_poll_interval: Duration::ZERO,
        audiences: vec!["sts.amazonaws.com".into()],
        pod_name: "sscsi-controller-0".into(),
        pod_uid: "uid-controller".into(),
        backoff: Backoff { base: Duration::from_millis(20), cap: Duration::from_millis(100) },
        ..ControllerConfig::default()
    }
}

fn db_object() -> Value {
    json!({
        "type": "Opaque",
        "labels": {"team": "shop"},
        "annotations": {"owner": "payments"},
        "data": [{"sourcePath": "user", "targetKey": "username"},
                 {"sourcePath": "pass", "targetKey": "password"}]
    })
}

fn decoded(secret: &Value, key: &str) -> Vec<u8> {
    use base64::Engine as _;
    let value = secret["data"][key].as_str().unwrap_or_default();
    base64::engine::general_purpose::STANDARD.decode(value).unwrap()
}

fn condition<'a>(status: &'a Value, kind: &str) -> Option<&'a Value> {
    status["conditions"].as_array()?.iter().find(|c| c["type"] == kind)
}

fn has_condition(status: &Value, kind: &str, value: &str, reason: &str) -> bool {
    condition(status, kind).is_some_and(|c| c["status"] == value && c["reason"] == reason)
}

async fn after(controller: &SecretSyncController, reconciles: u64) -> SyncStats {
    controller.wait_for(|s| s.reconciles >= reconciles).await
}

#[tokio::test]
async fn creates_the_secret_then_writes_only_what_changed() {
    let world = World::start().await;
    world.secret_sync("shop", "db", db_object()).await;
    let (controller, _stop) = world.start_controller(config());

    let secret = world.secret("shop", "db").await;
    assert_eq!(decoded(&secret, "username"), b"admin");
    assert_eq!(decoded(&secret, "password"), b"hunter2");
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(
        secret["metadata"]["labels"],
        json!({"team": "shop", "secrets-store.sync.x-k8s.io": ""})
    );
    assert_eq!(secret["metadata"]["annotations"], json!({"owner": "payments"}));
    let owners = secret["metadata"]["ownerReferences"].as_array().unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0]["apiVersion"], "secret-sync.x-k8s.io/v1alpha1");
    assert_eq!(owners[0]["kind"], "SecretSync");
    assert_eq!(owners[0]["name"], "db");
    let status =
        world.status("shop", "db", |s| has_condition(s, "Create", "True", "CreateSucceeded")).await;
    let hash = status["syncHash"].as_str().unwrap().to_owned();
    assert!(hash.starts_with("v1:") && hash.len() == 67, "{hash}");
    assert!(status["lastSuccessfulSyncTime"].is_string());
    let first = after(&controller, 1).await;
    assert_eq!((first.secret_writes, first.token_requests), (1, 1));

    // A pass with nothing changed: no Secret write, the same resourceVersion.
    let version = secret["metadata"]["resourceVersion"].clone();
    controller.rotate_now();
    let status =
        world.status("shop", "db", |s| has_condition(s, "Update", "True", "NoValueChange")).await;
    assert_eq!(status["syncHash"], hash);
    let stats = after(&controller, first.reconciles + 1).await;
    assert_eq!(stats.secret_writes, 1);
    assert_eq!(world.secret("shop", "db").await["metadata"]["resourceVersion"], version);

    // A changed value: written at the next pass; the token is reused.
    std::fs::write(world.store.path().join("pass"), "hunter3").unwrap();
    controller.rotate_now();
    let status = world
        .status("shop", "db", |s| {
            has_condition(s, "Update", "True", "ValueChangeOrForceUpdateDetected")
        })
        .await;
    assert_ne!(status["syncHash"], hash);
    let secret = world.secret("shop", "db").await;
    assert_eq!(decoded(&secret, "password"), b"hunter3");
    let stats = controller.wait_for(|s| s.secret_writes >= 2).await;
    assert_eq!((stats.secret_writes, stats.token_requests, stats.failures), (2, 1, 0));
    // One TokenRequest, for the audience asked, of the SecretSync's service account.
    assert_eq!(world.api.requests("POST", "serviceaccounts"), 1);

    // Events say what was written.
    controller.settled().await;
    let events = world.api.objects("events.k8s.io", "events", Some("shop"));
    let reasons: BTreeSet<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
    assert!(
        reasons.contains("CreateSucceeded") && reasons.contains("ValueChangeOrForceUpdateDetected"),
        "{reasons:?}"
    );
    // Neither a secret byte nor a token (a JWT: `eyJ...`) in events or status.
    let said = serde_json::to_string(&(events, world.api.objects(SYNC_GROUP, "secretsyncs", None)))
        .unwrap();
    for leak in ["hunter", "admin", "eyJ"] {
        assert!(!said.contains(leak), "{leak} in {said}");
    }
}

#[tokio::test]
async fn a_force_synchronization_change_syncs_at_once() {
    let world = World::start().await;
    world.secret_sync("shop", "db", db_object()).await;
    let (controller, _stop) = world.start_controller(config());
    world.status("shop", "db", |s| has_condition(s, "Create", "True", "CreateSucceeded")).await;

    std::fs::write(world.store.path().join("user"), "root").unwrap();
    let api: Api<SecretSync> = Api::namespaced(world.client.clone(), "shop");
    let patch = json!({"spec": {"forceSynchronization": "rotate-1"}});
    api.patch("db", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    world
        .status("shop", "db", |s| {
            has_condition(s, "Update", "True", "ValueChangeOrForceUpdateDetected")
        })
        .await;
    assert_eq!(decoded(&world.secret("shop", "db").await, "username"), b"root");
    assert_eq!(controller.wait_for(|s| s.secret_writes >= 2).await.secret_writes, 2);
}

#[tokio::test]
async fn a_provider_failure_keeps_the_last_secret() {
    let world = World::start().await;
    world.secret_sync("shop", "db", db_object()).await;
    let (controller, _stop) = world.start_controller(config());
    world.status("shop", "db", |s| has_condition(s, "Create", "True", "CreateSucceeded")).await;

    std::fs::remove_file(world.store.path().join("pass")).unwrap();
    controller.rotate_now();
    let status =
        world.status("shop", "db", |s| has_condition(s, "Update", "False", "ProviderError")).await;
    let message = condition(&status, "Update").unwrap()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("SecretProviderClass shop/local-db") && message.contains("pass"),
        "{message}"
    );
    // Whose identity asked, as on a pod's event.
    assert!(message.contains("(as service account shop/db-reader)"), "{message}");
    assert!(!message.contains("hunter2"));
    let secret = world.secret("shop", "db").await;
    assert_eq!(decoded(&secret, "password"), b"hunter2");
    assert_eq!(controller.stats().secret_writes, 1);

    // The retry after the backoff succeeds once the object is back.
    std::fs::write(world.store.path().join("pass"), "hunter2").unwrap();
    world.status("shop", "db", |s| has_condition(s, "Update", "True", "NoValueChange")).await;
    controller.settled().await;
    let events = world.api.objects("events.k8s.io", "events", Some("shop"));
    assert!(events.iter().any(|e| e["type"] == "Warning" && e["reason"] == "ProviderError"));
}

#[tokio::test]
async fn reserved_keys_foreign_namespaces_and_classes_are_refused() {
    let world = World::start().await;
    world.class("other", "local-db").await;
    world.class("other", "theirs").await;
    let mut labelled = db_object();
    labelled["labels"]["secrets-store.sync.x-k8s.io/owner"] = json!("me");
    world.secret_sync("shop", "labelled", labelled).await;
    let mut annotated = db_object();
    annotated["annotations"]["secrets-store.sync.x-k8s.io"] = json!("");
    world.secret_sync("shop", "annotated", annotated).await;
    world.secret_sync("other", "elsewhere", db_object()).await;
    // A class of another namespace is never used.
    let mut foreign = db_object();
    foreign["data"] = json!([{"sourcePath": "user", "targetKey": "u"}]);
    let sync: SecretSync = serde_json::from_value(json!({
        "apiVersion": "secret-sync.x-k8s.io/v1alpha1", "kind": "SecretSync",
        "metadata": {"name": "foreign", "namespace": "shop"},
        "spec": {"serviceAccountName": "db-reader", "secretProviderClassName": "theirs", "secretObject": foreign}
    }))
    .unwrap();
    Api::<SecretSync>::namespaced(world.client.clone(), "shop")
        .create(&PostParams::default(), &sync)
        .await
        .unwrap();

    let config = ControllerConfig {
        allowed_namespaces: Some(["shop".to_owned()].into_iter().collect()),
        ..config()
    };
    let (controller, _stop) = world.start_controller(config);
    let label = world
        .status("shop", "labelled", |s| {
            has_condition(s, "Create", "False", "InvalidClusterSecretLabelError")
        })
        .await;
    let message = condition(&label, "Create").unwrap()["message"].as_str().unwrap();
    assert!(
        message.contains("spec.secretObject.labels") && message.contains("shop/labelled"),
        "{message}"
    );
    world
        .status("shop", "annotated", |s| {
            has_condition(s, "Create", "False", "InvalidClusterSecretAnnotationError")
        })
        .await;
    world
        .status("other", "elsewhere", |s| {
            has_condition(s, "Create", "False", "SecretSyncNotAllowed")
        })
        .await;
    let foreign = world
        .status("shop", "foreign", |s| has_condition(s, "Create", "False", "ControllerSPCError"))
        .await;
    let message = condition(&foreign, "Create").unwrap()["message"].as_str().unwrap();
    assert!(message.contains("SecretProviderClass shop/theirs not found"), "{message}");

    controller.wait_for(|s| s.failures >= 4).await;
    // Nothing was written, and every refusal came before a token was asked for.
    assert!(world.api.objects("", "secrets", None).is_empty());
    assert_eq!(controller.stats().token_requests, 0);
}

#[tokio::test]
async fn deleting_the_secretsync_deletes_its_secret() {
    let world = World::start().await;
    world.secret_sync("shop", "db", db_object()).await;
    let (_controller, _stop) = world.start_controller(config());
    world.secret("shop", "db").await;
    let api: Api<SecretSync> = Api::namespaced(world.client.clone(), "shop");
    api.delete("db", &DeleteParams::default()).await.unwrap();
    world.api.wait_for("", "secrets", Some("shop"), |s| s.is_empty()).await;
}

#[tokio::test]
async fn one_leader_writes_and_a_standby_takes_over() {
    let world = World::start().await;
    world.create(
        "v1",
        "serviceaccounts",
        "shop",
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "db-reader"}}),
    )
    .await;
    world.secret_sync("shop", "first", db_object()).await;
    let lease = |identity: &str| LeaseConfig {
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_millis(50),
        ..LeaseConfig::new("sscsi-secretsync".into(), "kube-system".into(), identity.into())
    };
    let (a, b) = (world.controller(config()), world.controller(config()));
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let run_a = tokio::spawn(run_elected(
        a.clone(),
        Elector::new(world.client.clone(), lease("a")),
        stop_a.clone(),
    ));
    a.wait_for(|s| s.secret_writes == 1).await;
    let run_b = tokio::spawn(run_elected(
        b.clone(),
        Elector::new(world.client.clone(), lease("b")),
        stop_b.clone(),
    ));
    let leases = world
        .api
        .wait_for("coordination.k8s.io", "leases", Some("kube-system"), |l| l.len() == 1)
        .await;
    assert_eq!(leases[0]["spec"]["holderIdentity"], "a");

    // A stops: it releases the Lease, b takes it and syncs what is new.
    stop_a.cancel();
    run_a.await.unwrap().unwrap();
    world.secret_sync("shop", "second", db_object()).await;
    world.secret("shop", "second").await;
    let leases = world.api.objects("coordination.k8s.io", "leases", Some("kube-system"));
    assert_eq!(leases[0]["spec"]["holderIdentity"], "b");
    assert_eq!(leases[0]["spec"]["leaseTransitions"], 1);
    assert_eq!(a.stats().secret_writes, 1);
    b.wait_for(|s| s.secret_writes >= 1).await;
    stop_b.cancel();
    run_b.await.unwrap().unwrap();
}

/// A holder that stops renewing without releasing (a crashed pod): a standby
/// takes the Lease once its record has not changed for the lease duration.
#[tokio::test]
async fn a_standby_takes_a_lease_its_holder_stopped_renewing() {
    let world = World::start().await;
    let lease = |identity: &str| LeaseConfig {
        lease_duration: Duration::from_millis(300),
        renew_deadline: Duration::from_millis(200),
        retry_period: Duration::from_millis(20),
        ..LeaseConfig::new("sscsi-secretsync".into(), "kube-system".into(), identity.into())
    };
    let never = CancellationToken::new();
    let mut a = Elector::new(world.client.clone(), lease("a"));
    assert!(a.acquire(&never).await);
    drop(a); // no release: as if its pod died

    let mut b = Elector::new(world.client.clone(), lease("b"));
    assert!(b.acquire(&never).await);
    let leases = world.api.objects("coordination.k8s.io", "leases", Some("kube-system"));
    assert_eq!(leases[0]["spec"]["holderIdentity"], "b");
    assert_eq!(leases[0]["spec"]["leaseTransitions"], 1);
    // The first candidate cannot take it back while b renews: b renews 20
    // times (longer than the lease duration) while a keeps trying.
    let mut again = Elector::new(world.client.clone(), lease("a"));
    let stop = CancellationToken::new();
    let holding = tokio::spawn(async move { b.hold(&stop).await });
    let gave_up = CancellationToken::new();
    let waiter = gave_up.clone();
    let attempt = tokio::spawn(async move { again.acquire(&waiter).await });
    let mut seen = leases[0]["spec"]["renewTime"].clone();
    for _ in 0..20 {
        let now = world
            .api
            .wait_for("coordination.k8s.io", "leases", Some("kube-system"), |l| {
                l[0]["spec"]["renewTime"] != seen
            })
            .await;
        assert_eq!(now[0]["spec"]["holderIdentity"], "b");
        seen = now[0]["spec"]["renewTime"].clone();
    }
    assert!(!attempt.is_finished(), "a took the lease b renews");
    gave_up.cancel();
    assert!(!attempt.await.unwrap());
    holding.abort();
}
