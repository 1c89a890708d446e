//! `vault` SecretProviderClasses mounted through the real CSI server on a unix
//! socket, against a real OpenBao dev server configured as an operator would:
//! KV v1 and v2, PKI, the jwt and kubernetes auth methods (the latter asking
//! the Kubernetes API double's TokenReview), namespaces and TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use sscsi_core::ProviderRegistry;
use sscsi_provider_vault::VaultProvider;
use sscsi_provider_vault::params::VaultDefaults;
use sscsi_provider_vault::version::KeySource;
use sscsi_testkit::bao::BaoServer;
use sscsi_testkit::csi::{Class, Publish, TestNode};
use sscsi_testkit::jwt::{ISSUER, Subject};
use sscsi_testkit::kube_api::ApiServer;
use tonic::Code;

const POLICY: &str = r#"
path "secret/data/*" { capabilities = ["read"] }
path "kv1/*" { capabilities = ["read"] }
path "pki/issue/web" { capabilities = ["create", "update"] }
"#;

/// A CSI node serving `vault` classes.
struct Node {
    node: TestNode,
    provider: Arc<VaultProvider>,
    api: ApiServer,
    /// What the provider counted for `/metrics`.
    stats: sscsi_provider_kit::CallStats,
}

impl Node {
    async fn start(api: ApiServer, defaults: VaultDefaults, classes: &[(&str, &str)]) -> Self {
        let stats = sscsi_provider_kit::BackendStats::default();
        Self::start_with(api, defaults, classes, stats, None).await
    }

    /// `copies`: `--serve-last-known-good`.
    async fn start_with(
        api: ApiServer,
        defaults: VaultDefaults,
        classes: &[(&str, &str)],
        stats: sscsi_provider_kit::BackendStats,
        copies: Option<std::time::Duration>,
    ) -> Self {
        let kube = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
        let provider = VaultProvider::new(defaults, Some(kube), KeySource::Process);
        let provider = Arc::new(provider.with_stats(&stats));
        let mut providers = ProviderRegistry::new();
        providers.register(provider.clone());
        let classes: Vec<Class> = classes
            .iter()
            .map(|(name, parameters)| Class { name, provider: "vault", parameters })
            .collect();
        // A republish re-fetches once a second has passed, and one read
        // serves an identity's refreshes for that second; each round of
        // the tests waits one out.
        let rotation = Some(sscsi_provider_kit::coalesce::WINDOW);
        let node = TestNode::start_with(providers, &classes, rotation, copies).await;
        Self { node, provider, api, stats: stats.provider("vault") }
    }

    /// Publishes `class` for pod `pod` of service account `app` in `shop`,
    /// with a token for audience `vault` unless `token` is false.
    async fn publish(&self, class: &str, pod: &str, token: bool) -> Result<PathBuf, tonic::Status> {
        self.publish_as(class, pod, "app", token).await
    }

    /// As [`Node::publish`], for a pod of service account `account`.
    async fn publish_as(
        &self,
        class: &str,
        pod: &str,
        account: &str,
        token: bool,
    ) -> Result<PathBuf, tonic::Status> {
        let info = sscsi_core::PodInfo { service_account: account.into(), ..TestNode::pod(pod) };
        let jwt = self.api.signer().sign(&Subject {
            namespace: "shop",
            service_account: account,
            pod: Some((pod, &info.uid)),
            audiences: &["vault"],
            lifetime_seconds: 600,
        });
        let tokens = [("vault", jwt.as_str())];
        let extra = Publish { tokens: if token { &tokens } else { &[] }, secrets: &[] };
        self.node.publish(class, &info, &extra).await
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The jwt (with the API double's signing key) and kubernetes (with the
/// double's TokenReview) auth methods, both with role `app` for
/// `shop/app`, and a policy `app`, in Vault namespace `namespace`.
async fn configure_auth(bao: &BaoServer, api: &ApiServer, namespace: Option<&str>) {
    let write = |path: &'static str, body| async move {
        bao.write_in(namespace, path, body).await.unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    write("sys/policies/acl/app", json!({"policy": POLICY})).await;
    write("sys/auth/jwt", json!({"type": "jwt"})).await;
    write(
        "auth/jwt/config",
        json!({"jwt_validation_pubkeys": [api.signer().public_key_pem()], "bound_issuer": ISSUER}),
    )
    .await;
    write(
        "auth/jwt/role/app",
        json!({"role_type": "jwt", "user_claim": "sub", "bound_audiences": ["vault"],
               "bound_subject": "system:serviceaccount:shop:app", "token_policies": ["app"], "token_ttl": "1h"}),
    )
    .await;
    // A PKI mount whose root also stands in for the cluster's CA, which the
    // kubernetes auth method insists on though the API double speaks plain HTTP.
    write("sys/mounts/pki", json!({"type": "pki"})).await;
    let root =
        write("pki/root/generate/internal", json!({"common_name": "test-ca", "ttl": "8760h"}))
            .await;
    write("sys/auth/kubernetes", json!({"type": "kubernetes"})).await;
    write(
        "auth/kubernetes/config",
        json!({"kubernetes_host": api.url(), "kubernetes_ca_cert": root["data"]["certificate"]}),
    )
    .await;
    write(
        "auth/kubernetes/role/app",
        json!({"bound_service_account_names": ["app"], "bound_service_account_namespaces": ["shop"],
               "token_policies": ["app"], "token_ttl": "1h"}),
    )
    .await;
}

const CLASSES: &[(&str, &str)] = &[
    (
        "kv2",
        "roleName: app\nvaultAuthMountPath: jwt\nobjects: |\n\
         \x20 - objectName: user\n    secretPath: secret/data/app\n    secretKey: user\n\
         \x20 - objectName: port\n    secretPath: /secret/data/app\n    secretKey: port\n\
         \x20 - objectName: conf/b64\n    secretPath: v1/secret/data/app\n    secretKey: b64\n    encoding: base64\n    filePermission: 0600\n\
         \x20 - objectName: hex\n    secretPath: secret/data/app\n    secretKey: hex\n    encoding: HEX\n\
         \x20 - objectName: first\n    secretPath: secret/data/app?version=1\n    secretKey: user\n\
         \x20 - objectName: whole.json\n    secretPath: secret/data/app\n",
    ),
    (
        "kv1",
        "roleName: app\nobjects: |\n\
         \x20 - objectName: user\n    secretPath: kv1/legacy\n    secretKey: user\n\
         \x20 - objectName: whole.json\n    secretPath: kv1/legacy\n",
    ),
    (
        "pki",
        "roleName: app\nvaultKubernetesMountPath: kubernetes\nobjects: |\n\
         \x20 - objectName: tls.crt\n    secretPath: pki/issue/web\n    method: PUT\n    secretKey: certificate\n    secretArgs: {common_name: web.example.com}\n\
         \x20 - objectName: tls.key\n    secretPath: pki/issue/web\n    method: PUT\n    secretKey: private_key\n    secretArgs: {common_name: web.example.com}\n",
    ),
    (
        "wrong-role",
        "roleName: nope\nvaultAuthMountPath: jwt\nobjects: |\n  - {objectName: a, secretPath: secret/data/app}\n",
    ),
    (
        "denied",
        "roleName: app\nvaultAuthMountPath: jwt\nobjects: |\n  - {objectName: a, secretPath: secret/metadata/app}\n",
    ),
    (
        "missing-key",
        "roleName: app\nvaultAuthMountPath: jwt\nobjects: |\n  - {objectName: a, secretPath: secret/data/app, secretKey: nope}\n",
    ),
    (
        "missing-path",
        "roleName: app\nvaultAuthMountPath: jwt\nobjects: |\n  - {objectName: a, secretPath: secret/data/nothing}\n",
    ),
    (
        "both-mounts",
        "roleName: app\nvaultAuthMountPath: jwt\nvaultKubernetesMountPath: kubernetes\nobjects: |\n  - {objectName: a, secretPath: secret/data/app}\n",
    ),
    ("no-objects", "roleName: app\nobjects: \"\"\n"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_classes_through_the_csi_socket() {
    let (api, bao) = (ApiServer::start().await, BaoServer::start());
    configure_auth(&bao, &api, None).await;
    bao.write("sys/mounts/kv1", json!({"type": "kv", "options": {"version": "1"}})).await;
    bao.write("kv1/legacy", json!({"user": "root"})).await;
    bao.write(
        "secret/data/app",
        json!({"data": {"user": "admin", "port": 5432, "b64": "aGVsbG8=", "hex": "776F726C64"}}),
    )
    .await;
    bao.write(
        "pki/roles/web",
        json!({"allowed_domains": ["example.com"], "allow_subdomains": true, "max_ttl": "72h"}),
    )
    .await;
    let defaults = VaultDefaults { address: bao.url(), ..Default::default() };
    let node = Node::start(api, defaults, CLASSES).await;

    // KV v2 with the jwt auth method: keys, encodings, modes, query parameters.
    let kv2 = node.publish("kv2", "web-0", true).await.unwrap();
    assert_eq!(read(&kv2.join("user")), "admin");
    assert_eq!(read(&kv2.join("port")), "5432", "a number is written as JSON");
    assert_eq!(read(&kv2.join("conf/b64")), "hello");
    assert_eq!(mode(&kv2.join("conf/b64")), 0o600, "filePermission: 0600 is octal");
    assert_eq!(read(&kv2.join("hex")), "world");
    assert_eq!(mode(&kv2.join("hex")), 0o644, "the request's default mode");
    let whole: serde_json::Value = serde_json::from_str(&read(&kv2.join("whole.json"))).unwrap();
    assert_eq!(whole["data"]["data"]["user"], "admin");
    assert_eq!(whole["data"]["metadata"]["version"], 1);
    let keys: Vec<&str> = whole.as_object().unwrap().keys().map(String::as_str).collect();
    for key in ["request_id", "lease_id", "lease_duration", "renewable", "data", "warnings"] {
        assert!(keys.contains(&key), "{key} in the envelope: {keys:?}");
    }
    // Six objects on three distinct requests (`?version=1` is its own).
    assert_eq!(bao.answered("read", "secret/data/app"), 2);

    // Rotation picks up a `kv put`; the pinned version stays. (Past the
    // coalescing window first: until then the last read answers.)
    bao.write(
        "secret/data/app",
        json!({"data": {"user": "admin2", "port": 5432, "b64": "aGVsbG8=", "hex": "00"}}),
    )
    .await;
    tokio::time::sleep(sscsi_provider_kit::coalesce::WINDOW).await;
    node.publish("kv2", "web-0", true).await.unwrap();
    assert_eq!(read(&kv2.join("user")), "admin2");
    assert_eq!(read(&kv2.join("first")), "admin");
    assert_eq!(std::fs::read(kv2.join("hex")).unwrap(), [0u8]);

    // KV v1 through the kubernetes auth method, reviewed by the API double.
    let kv1 = node.publish("kv1", "web-0", true).await.unwrap();
    assert_eq!(read(&kv1.join("user")), "root");
    let whole: serde_json::Value = serde_json::from_str(&read(&kv1.join("whole.json"))).unwrap();
    assert_eq!(whole["data"], json!({"user": "root"}));
    assert_eq!(bao.answered("update", "auth/kubernetes/login"), 1);

    // PUT to pki/issue: one request for both files, so key and certificate match;
    // no token passed, so the provider requests one (TokenRequest) for the pod.
    let pki = node.publish("pki", "web-1", false).await.unwrap();
    assert!(read(&pki.join("tls.crt")).starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(read(&pki.join("tls.key")).contains("PRIVATE KEY-----"));
    assert_eq!(bao.answered("update", "pki/issue/web"), 1);
    let requests = node.api.objects("", "serviceaccounts", Some("shop"));
    assert!(requests.is_empty(), "TokenRequest stores nothing: {requests:?}");

    let refused = [
        ("wrong-role", Code::PermissionDenied, "failed to login: POST /v1/auth/jwt/login: 400"),
        (
            "denied",
            Code::PermissionDenied,
            "(as service account shop/app): provider \"vault\": couldn't read secret \"a\" as Vault role \"app\" (auth mount \"jwt\"): GET /v1/secret/metadata/app: 403 Forbidden: permission denied",
        ),
        (
            "missing-key",
            Code::FailedPrecondition,
            "{secret/data/app}: {key \"nope\" does not exist at the secret path}",
        ),
        (
            "missing-path",
            Code::NotFound,
            "couldn't read secret \"a\" as Vault role \"app\" (auth mount \"jwt\"): GET /v1/secret/data/nothing: 404",
        ),
        (
            "both-mounts",
            Code::InvalidArgument,
            "cannot set both vaultKubernetesMountPath and vaultAuthMountPath",
        ),
        (
            "no-objects",
            Code::InvalidArgument,
            "no secrets configured - the provider will not read any secret material",
        ),
    ];
    for (class, code, message) in refused {
        let status = node.publish(class, "web-2", true).await.unwrap_err();
        assert_eq!(status.code(), code, "{class}: {}", status.message());
        assert!(
            status.message().contains(message),
            "{class}: want {message:?} in {:?}",
            status.message()
        );
    }
    // Nothing of a refused mount was written.
    let refused_target =
        node.node.dir.path().join("pods/uid-web-2/volumes/kubernetes.io~csi/denied/mount");
    assert!(std::fs::read_dir(&refused_target).map_or(true, |mut d| d.next().is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_login_serves_every_mount_and_rotation_of_a_service_account() {
    let (api, bao) = (ApiServer::start().await, BaoServer::start());
    configure_auth(&bao, &api, None).await;
    bao.write("secret/data/app", json!({"data": {"user": "admin"}})).await;
    let class = "roleName: app\nvaultAuthMountPath: jwt\nobjects: |\n  - {objectName: user, secretPath: secret/data/app, secretKey: user}\n";
    let defaults = VaultDefaults { address: bao.url(), ..Default::default() };
    let node = Node::start(api, defaults, &[("app", class)]).await;
    let pods = ["a", "b", "c", "d", "e"];
    for pod in pods {
        node.publish("app", pod, true).await.unwrap();
    }
    for round in 0..3 {
        bao.write("secret/data/app", json!({"data": {"user": format!("v{round}")}})).await;
        tokio::time::sleep(sscsi_provider_kit::coalesce::WINDOW).await;
        for pod in pods {
            let target = node.publish("app", pod, true).await.unwrap();
            assert_eq!(read(&target.join("user")), format!("v{round}"));
        }
    }
    assert_eq!(bao.answered("update", "auth/jwt/login"), 1, "5 mounts and 15 rotations");
    assert_eq!(node.provider.logins(), 1);
    use sscsi_provider_kit::stats::Outcome;
    assert_eq!(node.stats.calls_count("login", Outcome::Ok), 1);
    assert_eq!(node.stats.credential_counts(), (1, 19), "one login, 19 reuses");
    // The five pods of a service account share one read per round.
    assert_eq!(bao.answered("read", "secret/data/app"), 4, "1 for the mounts, 1 per round");
    assert_eq!(node.stats.calls_count("read", Outcome::Ok), 4);
    assert_eq!(node.stats.calls_count("metadata", Outcome::Denied), 1);
    // The policy grants no metadata read: asked once, then not again.
    assert_eq!(bao.answered("read", "secret/metadata/app"), 1);

    // A token Vault stops honouring (revoked) is replaced by one new login.
    bao.write("sys/leases/revoke-prefix/auth/jwt/login", json!({"sync": true})).await;
    tokio::time::sleep(sscsi_provider_kit::coalesce::WINDOW).await;
    let target = node.publish("app", "a", true).await.unwrap();
    assert_eq!(read(&target.join("user")), "v2");
    assert_eq!(bao.answered("update", "auth/jwt/login"), 2);
}

/// With a policy that lets it read KV v2 metadata, a refresh asks
/// `<mount>/metadata/<path>` for the current version and reads no data while
/// the held files were made from it; a new version is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kv_v2_refresh_reads_data_only_when_the_version_moved() {
    let (api, bao) = (ApiServer::start().await, BaoServer::start());
    configure_auth(&bao, &api, None).await;
    let policy = format!("{POLICY}\npath \"secret/metadata/*\" {{ capabilities = [\"read\"] }}\n");
    bao.write("sys/policies/acl/app", json!({"policy": policy})).await;
    bao.write("secret/data/app", json!({"data": {"user": "admin", "pass": "one"}})).await;
    let class = "roleName: app\nvaultAuthMountPath: jwt\nobjects: |\n  - {objectName: user, secretPath: secret/data/app, secretKey: user}\n  - {objectName: pass, secretPath: secret/data/app, secretKey: pass}\n";
    let defaults = VaultDefaults { address: bao.url(), ..Default::default() };
    let node = Node::start(api, defaults, &[("app", class)]).await;
    let target = node.publish("app", "a", true).await.unwrap();
    assert_eq!(bao.answered("read", "secret/data/app"), 1);

    tokio::time::sleep(sscsi_provider_kit::coalesce::WINDOW).await;
    node.publish("app", "a", true).await.unwrap();
    assert_eq!(
        (read(&target.join("user")), read(&target.join("pass"))),
        ("admin".into(), "one".into())
    );
    assert_eq!(bao.answered("read", "secret/metadata/app"), 1);
    assert_eq!(bao.answered("read", "secret/data/app"), 1, "the version held stands: no data read");

    bao.write("secret/data/app", json!({"data": {"user": "admin", "pass": "two"}})).await;
    tokio::time::sleep(sscsi_provider_kit::coalesce::WINDOW).await;
    node.publish("app", "a", true).await.unwrap();
    assert_eq!(read(&target.join("pass")), "two");
    assert_eq!(bao.answered("read", "secret/metadata/app"), 2);
    assert_eq!(bao.answered("read", "secret/data/app"), 2, "a new version is read");
}

/// OpenBao with a rate-limit quota (5 reads a second under `secret/`, then
/// 429 with Retry-After): a burst of 12 mounts of 12 secrets within a
/// budget of 4 calls a second reaches it without a single throttled answer,
/// every mount succeeds, and the calls that waited are counted. The same
/// burst without a budget is throttled (the quota works).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_keeps_a_burst_under_the_backends_rate_limit() {
    use sscsi_provider_kit::stats::Outcome;
    use sscsi_provider_kit::{BackendStats, Budget};
    let (api, bao) = (ApiServer::start().await, BaoServer::start());
    configure_auth(&bao, &api, None).await;
    let names: Vec<String> = (0..12).map(|i| format!("s{i}")).collect();
    for name in &names {
        bao.write(&format!("secret/data/{name}"), json!({"data": {"k": name}})).await;
    }
    bao.write(
        "sys/quotas/rate-limit/reads",
        json!({"path": "secret/", "rate": 5, "interval": "1s", "block_interval": "1s"}),
    )
    .await;
    let classes: Vec<(String, String)> = names
        .iter()
        .map(|n| {
            let class = format!(
                "roleName: app\nvaultAuthMountPath: jwt\nobjects: |\n  - {{objectName: k, secretPath: secret/data/{n}, secretKey: k}}\n"
            );
            (n.clone(), class)
        })
        .collect();
    let classes: Vec<(&str, &str)> =
        classes.iter().map(|(n, c)| (n.as_str(), c.as_str())).collect();
    async fn burst(node: &Node, names: &[String]) -> Vec<Result<PathBuf, tonic::Status>> {
        futures::future::join_all(names.iter().map(|n| node.publish(n, n, true))).await
    }

    let defaults = VaultDefaults { address: bao.url(), ..Default::default() };
    let stats = BackendStats::default().with_budget(Budget::new(4.0, 2));
    let node = Node::start_with(api, defaults.clone(), &classes, stats, None).await;
    for (mounted, name) in burst(&node, &names).await.into_iter().zip(&names) {
        assert_eq!(read(&mounted.unwrap().join("k")), *name);
    }
    assert_eq!(node.stats.calls_count("read", Outcome::Throttled), 0, "never over the quota");
    assert_eq!(node.stats.calls_count("read", Outcome::Ok), 12);
    assert!(
        node.stats.queued_count() >= 8,
        "the burst waited its turn: {}",
        node.stats.queued_count()
    );

    // Without a budget the same burst meets the quota.
    let Node { api, .. } = node;
    let node = Node::start(api, defaults, &classes).await;
    let _ = burst(&node, &names).await;
    assert!(node.stats.calls_count("read", Outcome::Throttled) > 0, "the quota throttles");
}

/// `--serve-last-known-good` against OpenBao stopped mid-test: a new pod of
/// the same service account mounts the copy fetched before; a pod of
/// another service account is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_stopped_a_new_pod_of_the_same_identity_mounts_the_last_known_good_copy() {
    let (api, bao) = (ApiServer::start().await, BaoServer::start());
    configure_auth(&bao, &api, None).await;
    bao.write("secret/data/app", json!({"data": {"user": "admin"}})).await;
    let class = "roleName: app\nvaultAuthMountPath: jwt\nobjects: |\n  - {objectName: user, secretPath: secret/data/app, secretKey: user}\n";
    let defaults = VaultDefaults { address: bao.url(), ..Default::default() };
    let stats = sscsi_provider_kit::BackendStats::default();
    let copies = Some(std::time::Duration::from_secs(600));
    let node = Node::start_with(api, defaults, &[("app", class)], stats, copies).await;
    node.publish("app", "a", true).await.unwrap();

    drop(bao);
    let copy = node.publish("app", "b", true).await.expect("the copy of the same identity");
    assert_eq!(read(&copy.join("user")), "admin");
    let other = node.publish_as("app", "c", "other", true).await.unwrap_err();
    assert_eq!(other.code(), Code::Unavailable, "{}", other.message());
}
