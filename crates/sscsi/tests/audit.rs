//! `sscsi audit` against the Kubernetes API test double: every section from
//! objects the cluster holds, as JSON and as text, and no Secret's data.

use std::process::Command;

use kube::api::{Api, DynamicObject, PostParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_sscsi");

async fn create(client: &kube::Client, group: &str, version: &str, plural: &str, object: Value) {
    let kind = object["kind"].as_str().unwrap().to_owned();
    let namespace = object["metadata"]["namespace"].as_str().unwrap().to_owned();
    let resource = ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() { version.into() } else { format!("{group}/{version}") },
        kind,
        plural: plural.into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource);
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
}

fn class(namespace: &str, name: &str, provider: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["provider"] = json!(provider);
    json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
           "metadata": {"name": name, "namespace": namespace}, "spec": spec})
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_answers_the_hardening_questions() {
    let api = sscsi_testkit::kube_api::ApiServer::start().await;
    let client = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    const SPC: &str = "secrets-store.csi.x-k8s.io";
    let aws = json!({"parameters": {"objects": "- {objectName: db, objectType: secretsmanager}"},
                     "secretObjects": [{"secretName": "db", "type": "Opaque",
                                        "data": [{"objectName": "db", "key": "password"}]}]});
    create(&client, SPC, "v1", "secretproviderclasses", class("shop", "db", "aws", aws)).await;
    let vm = json!({"parameters": {"useVMManagedIdentity": "true", "keyvaultName": "kv"}});
    create(&client, SPC, "v1", "secretproviderclasses", class("ops", "kv", "azure", vm)).await;
    let adc = json!({"parameters": {"auth": "provider-adc", "secrets": "[]"}});
    create(&client, SPC, "v1", "secretproviderclasses", class("ops", "gsm", "gcp", adc)).await;
    let vault = json!({"parameters": {"roleName": "app"}});
    create(&client, SPC, "v1", "secretproviderclasses", class("shop", "app", "vault", vault)).await;
    // Two pods mount the AWS class: one whose service account names a role, one not.
    for (pod, account, role) in [("web-0", "web", true), ("batch-0", "batch", false)] {
        let annotations = if role {
            json!({"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/web"})
        } else {
            json!({})
        };
        create(
            &client,
            "",
            "v1",
            "serviceaccounts",
            json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": account, "namespace": "shop", "annotations": annotations}}),
        )
        .await;
        create(
            &client,
            "",
            "v1",
            "pods",
            json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": "shop"},
            "spec": {"serviceAccountName": account, "containers": [{"name": "c", "image": "i"}]}}),
        )
        .await;
        create(
            &client,
            SPC,
            "v1",
            "secretproviderclasspodstatuses",
            json!({
            "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClassPodStatus",
            "metadata": {"name": format!("{pod}-shop-db"), "namespace": "shop"},
            "status": {"podName": pod, "secretProviderClassName": "db", "mounted": true,
                       "targetPath": "/t", "objects": [{"id": "db", "version": "v1"}]}}),
        )
        .await;
    }
    create(&client, "", "v1", "secrets", json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db", "namespace": "shop",
                     "labels": {"secrets-store.csi.k8s.io/managed": "true"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "u1"}]},
        "data": {"password": "c2VjcmV0LWJ5dGVzLTQy"}})).await;
    create(
        &client,
        "",
        "v1",
        "secrets",
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "unrelated", "namespace": "shop"}, "data": {"k": "dg=="}}),
    )
    .await;
    create(&client, "secret-sync.x-k8s.io", "v1alpha1", "secretsyncs", json!({
        "apiVersion": "secret-sync.x-k8s.io/v1alpha1", "kind": "SecretSync",
        "metadata": {"name": "app", "namespace": "shop"},
        "spec": {"secretProviderClassName": "app", "serviceAccountName": "web",
                 "secretObject": {"type": "Opaque", "data": [{"sourcePath": "p", "targetKey": "k"}]}}})).await;

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let audit = |output: &'static str| {
        let kubeconfig = kubeconfig.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                Command::new(BIN)
                    .arg("audit")
                    .arg(format!("--kubeconfig={}", kubeconfig.display()))
                    .arg(format!("--output={output}"))
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let out = audit("json").await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["classes"],
        json!([
            {"namespace": "ops", "name": "gsm", "provider": "gcp", "syncs_into": [], "mounted_by": 0},
            {"namespace": "ops", "name": "kv", "provider": "azure", "syncs_into": [], "mounted_by": 0},
            {"namespace": "shop", "name": "app", "provider": "vault", "syncs_into": [], "mounted_by": 0},
            {"namespace": "shop", "name": "db", "provider": "aws", "syncs_into": ["db"], "mounted_by": 2},
        ])
    );
    let identities: Vec<(String, Option<String>)> = report["node_identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                format!("{}/{}", n["namespace"].as_str().unwrap(), n["class"].as_str().unwrap()),
                n["pod"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        identities,
        [
            ("ops/gsm".to_owned(), None),
            ("ops/kv".to_owned(), None),
            ("shop/db".to_owned(), Some("batch-0".to_owned())),
        ]
    );
    assert!(
        report["node_identities"][2]["reason"]
            .as_str()
            .unwrap()
            .starts_with("service account batch has no eks.amazonaws.com/role-arn")
    );
    assert_eq!(
        report["managed_secrets"],
        json!([{"namespace": "shop", "name": "db", "owners": ["ReplicaSet/web-abc"]}])
    );
    assert_eq!(
        report["secret_syncs"],
        json!([{"namespace": "shop", "name": "app", "class": "app", "service_account": "web", "secret_type": "Opaque"}])
    );

    let out = audit("text").await;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for line in [
        "  shop/db: provider aws, mounted by 2 pods, syncs into Secrets db in shop",
        "  ops/kv [azure]: useVMManagedIdentity: the node's managed identity",
        "  shop/db: owned by ReplicaSet/web-abc",
        "  shop/app: class app, service account web, Secret shop/app (Opaque)",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} missing in\n{text}");
    }
    // Only metadata of Secrets is read: their data never reaches the output.
    assert!(!text.contains("c2VjcmV0") && !text.contains("secret-bytes-42"));
    assert_eq!(api.requests("GET", "secrets"), 2, "one list of managed Secrets per audit");
}
