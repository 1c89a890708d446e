//! `gcp` SecretProviderClasses mounted through the real CSI server on a unix
//! socket: Secret Manager (global) from drongo's emulator through the
//! official SDK client; the metadata server, the identity binding token
//! exchange, IAM Credentials, regional Secret Manager and Parameter Manager
//! from the testkit's double.

use std::path::Path;
use std::sync::Arc;

use kube::api::{Api, PostParams};
use sscsi_core::ProviderRegistry;
use sscsi_provider_gcp::auth::{AuthEndpoints, WorkloadSettings};
use sscsi_provider_gcp::{GcpEndpoints, GcpOptions, GcpProvider};
use sscsi_testkit::csi::{Class, Publish, TestNode};
use sscsi_testkit::gcp::{DrongoServer, GcpServer, POOL, PROJECT};
use sscsi_testkit::jwt::Subject;
use sscsi_testkit::kube_api::ApiServer;
use tonic::Code;

struct Setup {
    gcp: GcpServer,
    api: ApiServer,
    node: TestNode,
    _drongo: DrongoServer,
}

async fn setup(
    classes: &[(&str, &str)],
    gsa: Option<&str>,
    drongo_secrets: &[(&str, &[u8])],
) -> Setup {
    setup_with(classes, gsa, drongo_secrets, false).await
}

async fn setup_with(
    classes: &[(&str, &str)],
    gsa: Option<&str>,
    drongo_secrets: &[(&str, &[u8])],
    allow_node_identity: bool,
) -> Setup {
    let (gcp, api, drongo) =
        (GcpServer::start().await, ApiServer::start().await, DrongoServer::start());
    gcp.trust(api.signer().verifier());
    for (id, data) in drongo_secrets {
        drongo.add_version(PROJECT, id, data).await;
    }
    let kube = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    let mut annotations = serde_json::Map::new();
    if let Some(gsa) = gsa {
        annotations.insert("iam.gke.io/gcp-service-account".into(), gsa.into());
        annotations.insert(
            "iam.gke.io/gcp-service-account-delegates".into(),
            r#"["d1@p.iam.gserviceaccount.com"]"#.into(),
        );
    }
    let sa: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "app", "namespace": "shop", "annotations": annotations}
        }))
        .unwrap();
    Api::namespaced(kube.clone(), "shop").create(&PostParams::default(), &sa).await.unwrap();
    let options = GcpOptions {
        workload: WorkloadSettings {
            provider_endpoint: "https://container.googleapis.com/v1".into(),
            ..Default::default()
        },
        endpoints: GcpEndpoints {
            secret_manager: drongo.url(),
            regional: Some(gcp.url()),
            parameter_manager: gcp.url(),
            auth: AuthEndpoints {
                metadata: gcp.url(),
                token_exchange: format!("{}/v1/identitybindingtoken", gcp.url()),
                iam: gcp.url(),
            },
        },
        allow_node_identity,
        ..Default::default()
    };
    let mut providers = ProviderRegistry::new();
    providers.register(Arc::new(GcpProvider::new(options, Some(kube))));
    let classes: Vec<Class> = classes
        .iter()
        .map(|(name, parameters)| Class { name, provider: "gcp", parameters })
        .collect();
    let node = TestNode::start(providers, &classes, Some(std::time::Duration::ZERO)).await;
    Setup { gcp, api, node, _drongo: drongo }
}

impl Setup {
    /// Publishes for pod `pod` with a token for `audience` (none: no tokens at all).
    async fn publish(
        &self,
        class: &str,
        pod: &str,
        audience: Option<&str>,
    ) -> Result<std::path::PathBuf, tonic::Status> {
        let info = TestNode::pod(pod);
        let token = audience.map(|aud| {
            self.api.signer().sign(&Subject {
                namespace: "shop",
                service_account: "app",
                pod: Some((pod, &info.uid)),
                audiences: &[aud],
                lifetime_seconds: 600,
            })
        });
        let tokens: Vec<(&str, &str)> = audience.iter().copied().zip(token.as_deref()).collect();
        self.node.publish(class, &info, &Publish { tokens: &tokens, secrets: &[] }).await
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn secrets(entries: &[&str]) -> String {
    let mut out = String::from("secrets: |\n");
    for entry in entries {
        for (i, line) in entry.lines().enumerate() {
            out.push_str(if i == 0 { "  - " } else { "    " });
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_secret_manager_and_parameter_manager() {
    let all = secrets(&[
        "resourceName: projects/test-project/secrets/db/versions/latest\npath: db.txt\nmode: 0600",
        "resourceName: projects/test-project/secrets/json/versions/1\nfileName: user\nextractJSONKey: user",
        "resourceName: projects/test-project/secrets/yaml/versions/latest\nfileName: host\nextractYAMLKey: host",
        "resourceName: projects/test-project/locations/us-east1/secrets/regional/versions/latest\npath: nested/dir/regional",
        "resourceName: projects/test-project/locations/global/parameters/conf/versions/v1\nfileName: conf.yaml",
        "resourceName: projects/test-project/locations/europe-west4/parameters/conf/versions/latest\nfileName: conf-eu.yaml",
        "resourceName: projects/test-project/secrets/binary/versions/1\nfileName: blob",
    ]);
    let classes = [("all", all.as_str())];
    let binary: &[u8] = &[0, 159, 146, 150, 255];
    let drongo_secrets: &[(&str, &[u8])] = &[
        ("db", b"s3cret-v1"),
        ("db", b"s3cret-v2"),
        ("json", br#"{"user":"admin","port":5432}"#),
        ("yaml", b"host: db.internal\nport: 5432\n"),
        ("binary", binary),
    ];
    let s = setup(&classes, None, drongo_secrets).await;
    s.gcp.add_secret_version(
        "projects/test-project/locations/us-east1/secrets/regional",
        b"regional-value",
    );
    s.gcp.add_parameter_version(
        "projects/test-project/locations/global/parameters/conf",
        b"level: info\n",
    );
    s.gcp.add_parameter_version(
        "projects/test-project/locations/europe-west4/parameters/conf",
        b"level: eu\n",
    );

    for pod in ["a", "b", "c"] {
        let target =
            s.publish("all", pod, Some(POOL)).await.unwrap_or_else(|e| panic!("{}", e.message()));
        assert_eq!(read(&target.join("db.txt")), "s3cret-v2");
        assert_eq!(mode(&target.join("db.txt")), 0o600);
        assert_eq!(read(&target.join("user")), "admin");
        assert_eq!(read(&target.join("host")), "db.internal");
        assert_eq!(read(&target.join("nested/dir/regional")), "regional-value");
        assert_eq!(read(&target.join("conf.yaml")), "level: info\n");
        assert_eq!(read(&target.join("conf-eu.yaml")), "level: eu\n");
        assert_eq!(std::fs::read(target.join("blob")).unwrap(), binary, "byte for byte");
    }
    assert_eq!(s.gcp.exchanges(), 1, "three mounts by one service account, one exchange");
    assert_eq!(s.gcp.impersonations(), 0, "no Google service account: the federated token");

    // No tokens passed: the provider requests one for the pod.
    let target = s.publish("all", "d", None).await.unwrap();
    assert_eq!(read(&target.join("db.txt")), "s3cret-v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_service_account_and_refusals() {
    let one = |entry: &str| secrets(&[entry]);
    let classes = [
        ("db", one("resourceName: projects/test-project/secrets/db/versions/latest\nfileName: db")),
        (
            "bad-json",
            one(
                "resourceName: projects/test-project/secrets/db/versions/latest\nfileName: x\nextractJSONKey: k",
            ),
        ),
        (
            "missing-key",
            one(
                "resourceName: projects/test-project/secrets/json/versions/1\nfileName: x\nextractJSONKey: nope",
            ),
        ),
        (
            "yaml-missing",
            one(
                "resourceName: projects/test-project/secrets/json/versions/1\nfileName: x\nextractYAMLKey: nope",
            ),
        ),
        (
            "yaml-number",
            one(
                "resourceName: projects/test-project/secrets/json/versions/1\nfileName: x\nextractYAMLKey: port",
            ),
        ),
        (
            "number",
            one(
                "resourceName: projects/test-project/secrets/json/versions/1\nfileName: x\nextractJSONKey: port",
            ),
        ),
        (
            "missing",
            one("resourceName: projects/test-project/secrets/nope/versions/1\nfileName: x"),
        ),
        ("unknown", one("resourceName: projects/test-project/secrets/db\nfileName: x")),
        (
            "both-keys",
            one(
                "resourceName: projects/test-project/secrets/db/versions/1\nfileName: x\nextractJSONKey: a\nextractYAMLKey: b",
            ),
        ),
        (
            "provider-adc",
            format!(
                "auth: provider-adc\n{}",
                one("resourceName: projects/test-project/secrets/db/versions/1\nfileName: x")
            ),
        ),
        (
            "bad-auth",
            format!(
                "auth: node\n{}",
                one("resourceName: projects/test-project/secrets/db/versions/1\nfileName: x")
            ),
        ),
        (
            "two-failures",
            secrets(&[
                "resourceName: projects/test-project/secrets/nope/versions/1\nfileName: a",
                "resourceName: projects/test-project/secrets/json/versions/1\nfileName: b\nextractJSONKey: port",
            ]),
        ),
    ];
    let classes: Vec<(&str, &str)> = classes.iter().map(|(n, p)| (*n, p.as_str())).collect();
    let drongo_secrets: &[(&str, &[u8])] = &[("db", b"plain-text"), ("json", br#"{"port":5432}"#)];
    let s = setup(&classes, Some("app@test-project.iam.gserviceaccount.com"), drongo_secrets).await;

    // The Google service account does not let this identity act as it yet.
    let err = s.publish("db", "a", Some(POOL)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(err.message().contains("unable to obtain auth for mount: unable to obtain workload identity auth: unable to fetch gcp service account token: 403 Permission 'iam.serviceAccounts.getAccessToken' denied"), "{}", err.message());
    s.gcp.allow_impersonation(
        "app@test-project.iam.gserviceaccount.com",
        "system:serviceaccount:shop:app",
    );
    for pod in ["b", "c"] {
        let target = s.publish("db", pod, Some(POOL)).await.unwrap();
        assert_eq!(read(&target.join("db")), "plain-text");
    }
    assert_eq!(s.gcp.impersonations(), 1, "one generateAccessToken for two mounts");

    let err = s.publish("db", "d", Some("some-other-audience")).await.unwrap_err();
    assert!(err.message().contains("no token has audience value of idPool"), "{}", err.message());

    let refused = [
        (
            "bad-json",
            Code::FailedPrecondition,
            "failed to unmarshal JSON. Invalid JSON format for key extraction",
        ),
        ("missing-key", Code::FailedPrecondition, "key 'nope' not found in JSON"),
        // JSON is YAML too, as yaml.v3 reads it.
        ("yaml-missing", Code::FailedPrecondition, "key 'nope' not found in YAML"),
        ("yaml-number", Code::FailedPrecondition, "unsupported value type for key 'port'"),
        ("number", Code::FailedPrecondition, "unsupported value type for key 'port'"),
        ("missing", Code::NotFound, "projects/test-project/secrets/nope/versions/1: "),
        (
            "unknown",
            Code::InvalidArgument,
            "projects/test-project/secrets/db: unknown resource type",
        ),
        (
            "both-keys",
            Code::InvalidArgument,
            "both extractJSONKey and extractYAMLKey can't be simultaneously non empty strings",
        ),
        (
            "provider-adc",
            Code::PermissionDenied,
            "provider-adc uses the node's identity, which this driver does not allow: start sscsi with --gcp-allow-node-identity",
        ),
        ("bad-auth", Code::InvalidArgument, "unknown auth configuration: \"node\""),
        (
            "two-failures",
            Code::Internal,
            "projects/test-project/secrets/json/versions/1: unsupported value type for key 'port'",
        ),
    ];
    for (class, code, message) in refused {
        let status = s.publish(class, "z", Some(POOL)).await.unwrap_err();
        assert_eq!(status.code(), code, "{class}: {}", status.message());
        assert!(
            status.message().contains(message),
            "{class}: want {message:?} in {:?}",
            status.message()
        );
    }
    let both = s.publish("two-failures", "z", Some(POOL)).await.unwrap_err();
    assert!(
        both.message().contains("projects/test-project/secrets/nope/versions/1"),
        "every failure is listed: {}",
        both.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_identity_when_the_operator_allows_it() {
    let class = format!(
        "auth: provider-adc\n{}",
        secrets(&[
            "resourceName: projects/test-project/locations/us-east1/secrets/regional/versions/1\nfileName: r"
        ])
    );
    let s = setup_with(&[("node", class.as_str())], None, &[], true).await;
    s.gcp.add_secret_version(
        "projects/test-project/locations/us-east1/secrets/regional",
        b"read-as-node",
    );
    for pod in ["a", "b"] {
        let target = s.publish("node", pod, None).await.unwrap();
        assert_eq!(read(&target.join("r")), "read-as-node");
    }
    assert_eq!(s.gcp.node_tokens(), 1, "the node's token is reused");
    assert_eq!(s.gcp.exchanges(), 0, "no workload identity exchange");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_the_resolved_version_names() {
    use sscsi_core::{MountRequest, ObjectVersion, Provider};
    let (gcp, api, drongo) =
        (GcpServer::start().await, ApiServer::start().await, DrongoServer::start());
    gcp.trust(api.signer().verifier());
    drongo.add_version(PROJECT, "db", b"one").await;
    let second = drongo.add_version(PROJECT, "db", b"two").await;
    let parameter = gcp
        .add_parameter_version("projects/test-project/locations/global/parameters/conf", b"x: 1");
    let (provider, token) = direct(&gcp, &api, &drongo);
    let request = MountRequest {
        parameters: [(
            "secrets".to_owned(),
            "- resourceName: projects/test-project/secrets/db/versions/latest\n  path: db\n- resourceName: projects/test-project/locations/global/parameters/conf/versions/latest\n  path: conf\n".to_owned(),
        )]
        .into(),
        tokens: token,
        pod: TestNode::pod("web-0"),
        default_file_mode: 0o644,
        ..Default::default()
    };
    let response = provider.mount(&request).await.unwrap();
    let version =
        |id: &str, version: &str| ObjectVersion { id: id.into(), version: version.into() };
    assert_eq!(
        response.versions,
        [
            version("projects/test-project/secrets/db/versions/latest", &second),
            version(
                "projects/test-project/locations/global/parameters/conf/versions/latest",
                &parameter
            ),
        ]
    );
}

/// A provider called directly (no node), for a cluster the settings name,
/// and the pod's token for the pool.
fn direct(
    gcp: &GcpServer,
    api: &ApiServer,
    drongo: &DrongoServer,
) -> (GcpProvider, std::collections::BTreeMap<String, sscsi_core::ServiceAccountToken>) {
    let options = GcpOptions {
        workload: WorkloadSettings {
            project: Some(PROJECT.into()),
            cluster_location: Some("us-central1".into()),
            cluster_name: Some("test-cluster".into()),
            provider_endpoint: "https://container.googleapis.com/v1".into(),
            credentials_file: None,
        },
        endpoints: GcpEndpoints {
            secret_manager: drongo.url(),
            regional: Some(gcp.url()),
            parameter_manager: gcp.url(),
            auth: AuthEndpoints {
                metadata: "http://127.0.0.1:9".into(),
                token_exchange: format!("{}/v1/identitybindingtoken", gcp.url()),
                iam: gcp.url(),
            },
        },
        ..Default::default()
    };
    // No cluster: no annotations to read, and the settings name the cluster.
    let provider = GcpProvider::new(options, None);
    let token = api.signer().sign(&Subject {
        namespace: "shop",
        service_account: "app",
        pod: None,
        audiences: &[POOL],
        lifetime_seconds: 600,
    });
    let token = sscsi_core::ServiceAccountToken {
        token: token.into(),
        expiration_timestamp: String::new(),
    };
    (provider, [(POOL.to_owned(), token)].into())
}

/// A refresh that holds the mounted versions asks `GetSecretVersion` for
/// `latest` and reads no payload while it names the version held; a
/// numbered version is immutable and costs no call; a new version is read.
/// An extracted key's file is kept as it was extracted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_reads_only_versions_that_changed() {
    use sscsi_core::{MountRequest, Provider};
    let (gcp, api, drongo) =
        (GcpServer::start().await, ApiServer::start().await, DrongoServer::start());
    gcp.trust(api.signer().verifier());
    let secret = "projects/test-project/locations/us-east1/secrets/db";
    gcp.add_secret_version(secret, br#"{"user":"admin"}"#);
    let (provider, tokens) = direct(&gcp, &api, &drongo);
    let secrets = format!(
        "- resourceName: {secret}/versions/latest\n  path: user\n  extractJSONKey: user\n- resourceName: {secret}/versions/1\n  path: pinned\n"
    );
    let request = MountRequest {
        parameters: [("secrets".to_owned(), secrets)].into(),
        tokens,
        pod: TestNode::pod("web-0"),
        default_file_mode: 0o644,
        // Every mount here asks the backend, not an answer shared before.
        reuse: std::time::Duration::ZERO,
        ..Default::default()
    };
    let refresh = |previous: &sscsi_core::MountResponse| MountRequest {
        current_versions: previous.versions.clone(),
        current_files: previous
            .files
            .iter()
            .map(|f| (f.path.clone(), f.contents.clone()))
            .collect(),
        ..request.clone()
    };
    let text = |r: &sscsi_core::MountResponse, path: &str| {
        let file = r.files.iter().find(|f| f.path == path).unwrap();
        String::from_utf8(file.contents.expose().to_vec()).unwrap()
    };
    let first = provider.mount(&request).await.unwrap();
    assert_eq!(
        (text(&first, "user"), text(&first, "pinned")),
        ("admin".into(), r#"{"user":"admin"}"#.into())
    );
    assert_eq!((gcp.accesses(), gcp.version_reads()), (2, 0));

    let again = provider.mount(&refresh(&first)).await.unwrap();
    assert_eq!(again, first);
    assert_eq!((gcp.accesses(), gcp.version_reads()), (2, 1), "one check for latest, no payload");

    gcp.add_secret_version(secret, br#"{"user":"root"}"#);
    let rotated = provider.mount(&refresh(&again)).await.unwrap();
    assert_eq!(
        (text(&rotated, "user"), text(&rotated, "pinned")),
        ("root".into(), r#"{"user":"admin"}"#.into())
    );
    assert_eq!(rotated.versions[0].version, format!("{secret}/versions/2"));
    assert_eq!((gcp.accesses(), gcp.version_reads()), (3, 2), "the new version is read");
}
