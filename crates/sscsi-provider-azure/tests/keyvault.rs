//! `azure` SecretProviderClasses mounted through the real CSI server on a
//! unix socket, against the testkit's AAD and Key Vault double over TLS: the
//! official SDK clients, as in production, with only DNS and the trusted CA
//! pointed at the double.

use std::path::Path;
use std::sync::Arc;

use kube::api::{Api, PostParams};
use sscsi_core::ProviderRegistry;
use sscsi_provider_azure::{AzureOptions, AzureProvider};
use sscsi_testkit::azure::{AzureServer, CLUSTER_ID, TOKEN_PROXY_HOST};
use sscsi_testkit::csi::{Class, Publish, TestNode};
use sscsi_testkit::jwt::{JwtSigner, Subject};
use sscsi_testkit::kube_api::ApiServer;
use sscsi_testkit::pki::{TestCa, pkcs12};
use tonic::Code;

const WI: &str = "api://AzureADTokenExchange";

struct Setup {
    azure: AzureServer,
    signer: JwtSigner,
    node: TestNode,
    api: ApiServer,
}

/// The double with workload identity `app-client` for `shop/app`, a service
/// principal, and a node serving `classes` (each given `keyvaultName: kv1`,
/// tenant and the double's cloud unless it sets them).
async fn setup(classes: &[(&str, &str)], options: AzureOptions) -> Setup {
    let azure = AzureServer::start().await;
    let api = ApiServer::start().await;
    let signer = JwtSigner::new();
    azure.trust(signer.verifier());
    azure.federate("tenant", "app-client", "system:serviceaccount:shop:app");
    azure.federate("tenant", "annotated-client", "system:serviceaccount:shop:app");
    azure.principal("tenant", "sp-client", "sp-secret");
    let dir = tempfile::tempdir().unwrap().keep();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, azure.ca_pem()).unwrap();
    let env = dir.join("env.json");
    std::fs::write(&env, azure.environment_json()).unwrap();
    let kube = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    let provider = AzureProvider::new(
        AzureOptions {
            extra_ca: Some(ca.clone()),
            resolve: azure.hosts(&["kv1", "kv2"]),
            http_proxy: Some(azure.node_proxy()),
            token_proxy_url: format!("https://{TOKEN_PROXY_HOST}"),
            cluster_ca: ca.clone(),
            ..options
        },
        Some(kube),
    )
    .unwrap();
    let mut providers = ProviderRegistry::new();
    providers.register(Arc::new(provider));
    let parameters: Vec<(String, String)> = classes
        .iter()
        .map(|(name, params)| {
            let mut p = String::new();
            for (key, default) in [
                ("keyvaultName", "kv1"),
                ("tenantID", "tenant"),
                ("cloudName", "AzureStackCloud"),
                ("cloudEnvFileName", env.to_str().unwrap()),
            ] {
                if !params.contains(&format!("{key}:")) {
                    p.push_str(&format!("{key}: {default:?}\n"));
                }
            }
            p.push_str(params);
            ((*name).to_owned(), p)
        })
        .collect();
    let classes: Vec<Class> = parameters
        .iter()
        .map(|(name, parameters)| Class { name, provider: "azure", parameters })
        .collect();
    let node = TestNode::start(providers, &classes, Some(std::time::Duration::ZERO)).await;
    Setup { azure, signer, node, api }
}

impl Setup {
    fn token(&self) -> String {
        self.signer.sign(&Subject {
            namespace: "shop",
            service_account: "app",
            pod: None,
            audiences: &[WI],
            lifetime_seconds: 600,
        })
    }

    async fn publish(&self, class: &str, pod: &str) -> Result<std::path::PathBuf, tonic::Status> {
        let token = self.token();
        let extra = Publish { tokens: &[(WI, &token)], secrets: &[] };
        self.node.publish(class, &TestNode::pod(pod), &extra).await
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(path: &Path) -> String {
    String::from_utf8(read(path)).unwrap()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// One object of Azure's `objects` dialect per YAML document.
fn objects(docs: &[&str]) -> String {
    let mut out = String::from("objects: |\n  array:\n");
    for doc in docs {
        out.push_str("    - |\n");
        for line in doc.lines() {
            out.push_str(&format!("      {line}\n"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_encodings_modes_versions_and_history() {
    let secrets = format!(
        "clientID: app-client\n{}",
        objects(&[
            "objectName: db\nobjectType: secret",
            "objectName: db-b64\nobjectType: secret\nobjectAlias: conf/hello\nobjectEncoding: base64\nfilePermission: \"0600\"",
            "objectName: db-hex\nobjectType: secret\nobjectEncoding: HEX",
            "objectName: db\nobjectType: secret\nobjectAlias: db-first\nobjectVersion: FIRST",
            "objectName: db\nobjectType: secret\nobjectAlias: hist\nobjectVersionHistory: 3",
        ])
    );
    let s = setup(&[("secrets", &secrets)], AzureOptions::default()).await;
    let first = s.azure.set_secret("kv1", "db", "v1");
    for value in ["v2", "v3-disabled", "v4", "v5"] {
        let version = s.azure.set_secret("kv1", "db", value);
        if value.ends_with("disabled") {
            s.azure.disable("kv1", "secrets", "db", &version);
        }
    }
    s.azure.set_secret("kv1", "db-b64", "aGVs\nbG8=");
    s.azure.set_secret("kv1", "db-hex", "776F726C64");
    // The pinned version is the first one's id.
    let node_class =
        std::fs::read_dir(s.node.dir.path().join("spc")).unwrap().next().unwrap().unwrap().path();
    let yaml = std::fs::read_to_string(&node_class).unwrap().replace("FIRST", &first);
    std::fs::write(&node_class, yaml).unwrap();

    let target = s.publish("secrets", "web-0").await.unwrap();
    assert_eq!(text(&target.join("db")), "v5");
    assert_eq!(mode(&target.join("db")), 0o644);
    assert_eq!(text(&target.join("conf/hello")), "hello");
    assert_eq!(mode(&target.join("conf/hello")), 0o600);
    assert_eq!(text(&target.join("db-hex")), "world");
    assert_eq!(text(&target.join("db-first")), "v1");
    // Three enabled versions, newest first; the disabled one skipped; exactly three.
    let history: Vec<String> = (0..3).map(|i| text(&target.join(format!("hist/{i}")))).collect();
    assert_eq!(history, ["v5", "v4", "v2"]);
    assert!(!target.join("hist/3").exists(), "upstream's N+1 file is not written");

    // Rotation picks up a new version.
    s.azure.set_secret("kv1", "db", "v6");
    s.publish("secrets", "web-0").await.unwrap();
    assert_eq!(text(&target.join("db")), "v6");
    assert_eq!(text(&target.join("hist/0")), "v6");
    assert_eq!(text(&target.join("hist/2")), "v4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_and_keys() {
    let certs = format!(
        "clientID: app-client\n{}",
        objects(&[
            "objectName: web\nobjectType: secret\nobjectAlias: web.pem",
            "objectName: web\nobjectType: secret\nobjectAlias: web.pfx\nobjectFormat: pfx\nobjectEncoding: base64",
            "objectName: web\nobjectType: cert\nobjectAlias: web.crt",
            "objectName: pem\nobjectType: secret",
            "objectName: rsa\nobjectType: key",
            "objectName: ec\nobjectType: key",
        ])
    );
    let s = setup(
        &[("certs", &certs)],
        AzureOptions { separate_cert_and_key: true, ..Default::default() },
    )
    .await;
    // A three-level chain, the issuers packed out of order as PKCS#12 allows.
    let root = TestCa::new("Test Root");
    let intermediate = root.intermediate("Test Intermediate");
    let leaf = intermediate.issue("web.example.com", &["web.example.com"]);
    let pfx =
        pkcs12(&leaf.key_der, &[root.cert_der(), leaf.cert_der.clone(), intermediate.cert_der()]);
    s.azure.import_certificate("kv1", "web", &leaf.cert_der, &pfx, None);
    s.azure.import_certificate(
        "kv1",
        "pem",
        &leaf.cert_der,
        &[],
        Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
    );
    let rsa = rcgen_spki(true);
    let ec = rcgen_spki(false);
    s.azure.set_rsa_key("kv1", "rsa", &rsa.1[0], &rsa.1[1]);
    s.azure.set_ec_key("kv1", "ec", "P-256", &ec.1[0], &ec.1[1]);

    let target = s.publish("certs", "web-0").await.unwrap();
    let blocks = pem::parse_many(read(&target.join("web.pem"))).unwrap();
    let tags: Vec<&str> = blocks.iter().map(|b| b.tag()).collect();
    assert_eq!(tags, ["PRIVATE KEY", "CERTIFICATE", "CERTIFICATE", "CERTIFICATE"]);
    assert_eq!(blocks[0].contents(), leaf.key_der, "the key as PKCS#8");
    let chain: Vec<&[u8]> = blocks[1..].iter().map(|b| b.contents()).collect();
    assert_eq!(
        chain,
        [&leaf.cert_der[..], &intermediate.cert_der(), &root.cert_der()],
        "leaf → intermediate → root"
    );
    // The separate files, as upstream's --write-cert-and-key-in-separate-files.
    assert_eq!(pem::parse_many(read(&target.join("web.pem.crt"))).unwrap().len(), 3);
    assert_eq!(pem::parse_many(read(&target.join("web.pem.key"))).unwrap()[0].tag(), "PRIVATE KEY");
    assert_eq!(
        read(&target.join("web.pfx")),
        pfx,
        "objectFormat pfx with base64 decoding: the archive"
    );
    let cert = pem::parse(read(&target.join("web.crt"))).unwrap();
    assert_eq!((cert.tag(), cert.contents()), ("CERTIFICATE", &leaf.cert_der[..]));
    assert!(text(&target.join("pem")).starts_with("-----BEGIN CERTIFICATE-----\nAAAA"));
    for (file, (spki, _)) in [("rsa", &rsa), ("ec", &ec)] {
        let key = pem::parse(read(&target.join(file))).unwrap();
        assert_eq!((key.tag(), key.contents()), ("PUBLIC KEY", &spki[..]), "{file}");
    }
}

/// A key's SubjectPublicKeyInfo and its JWK numbers: (n, e) for RSA, (x, y) for EC P-256.
fn rcgen_spki(rsa: bool) -> (Vec<u8>, [Vec<u8>; 2]) {
    use x509_parser::prelude::FromDer;
    use x509_parser::public_key::PublicKey;
    use x509_parser::x509::SubjectPublicKeyInfo;
    let key = if rsa {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap()
    } else {
        rcgen::KeyPair::generate().unwrap()
    };
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    let (_, info) = SubjectPublicKeyInfo::from_der(&spki).unwrap();
    let numbers = match info.parsed().unwrap() {
        PublicKey::RSA(k) => [k.modulus.to_vec(), k.exponent.to_vec()],
        PublicKey::EC(point) => {
            let raw = point.data();
            [raw[1..33].to_vec(), raw[33..65].to_vec()]
        }
        other => panic!("unexpected key {other:?}"),
    };
    (spki, numbers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_token_reuse_throttling_and_refusals() {
    let one = |name: &str, object_type: &str| {
        objects(&[&format!("objectName: {name}\nobjectType: {object_type}")])
    };
    let classes = [
        ("wi", format!("clientID: app-client\n{}", one("db", "secret"))),
        ("annotated", one("db", "secret")),
        ("principal", one("db", "secret")),
        ("node-identity", format!("useVMManagedIdentity: \"true\"\n{}", one("db", "secret"))),
        ("missing", format!("clientID: app-client\n{}", one("nope", "secret"))),
        ("denied", format!("clientID: app-client\nkeyvaultName: kv2\n{}", one("db", "secret"))),
        ("bad-type", format!("clientID: app-client\n{}", one("db", "Secret"))),
        ("oct", format!("clientID: app-client\n{}", one("oct", "key"))),
        ("bad-vault", format!("clientID: app-client\nkeyvaultName: k\n{}", one("db", "secret"))),
        (
            "bad-mode",
            format!(
                "clientID: app-client\n{}",
                objects(&["objectName: db\nobjectType: secret\nfilePermission: \"0999\""])
            ),
        ),
        (
            "two-modes",
            format!(
                "usePodIdentity: \"true\"\nuseAzureTokenProxy: \"true\"\n{}",
                one("db", "secret")
            ),
        ),
    ];
    let classes: Vec<(&str, &str)> = classes.iter().map(|(n, p)| (*n, p.as_str())).collect();
    let s = setup(&classes, AzureOptions::default()).await;
    s.azure.set_secret("kv1", "db", "kv1-secret");
    s.azure.set_secret("kv2", "db", "kv2-secret");
    s.azure.set_oct_key("kv1", "oct");
    s.azure.grant("kv2", &["someone-else"]);

    // Workload identity: 5 pods of one service account, one AAD token.
    for pod in ["a", "b", "c", "d", "e"] {
        let target = s.publish("wi", pod).await.unwrap();
        assert_eq!(text(&target.join("db")), "kv1-secret");
    }
    assert_eq!(s.azure.token_requests(), 1, "5 mounts by one identity");

    // Concurrent mounts of one object by one identity share one read (once
    // the last mount's answer no longer serves a burst).
    tokio::time::sleep(sscsi_provider_kit::coalesce::WINDOW).await;
    s.azure.delay(std::time::Duration::from_millis(300));
    let before = s.azure.vault_requests();
    let mounts = ["p1", "p2", "p3", "p4", "p5"].map(|pod| s.publish("wi", pod));
    for result in futures::future::join_all(mounts).await {
        assert_eq!(text(&result.unwrap().join("db")), "kv1-secret");
    }
    assert_eq!(s.azure.vault_requests() - before, 1, "5 concurrent mounts, 1 Key Vault read");
    s.azure.delay(std::time::Duration::ZERO);

    // Throttled: the SDK waits out Retry-After and tries again.
    tokio::time::sleep(sscsi_provider_kit::coalesce::WINDOW).await;
    s.azure.throttle(1);
    let before = s.azure.vault_requests();
    let target = s.publish("wi", "f").await.unwrap();
    assert_eq!(text(&target.join("db")), "kv1-secret");
    assert_eq!(s.azure.vault_requests() - before, 2, "one 429, one retry");

    // No clientID: the service account's annotation names the client.
    let sa: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "app", "namespace": "shop",
                         "annotations": {"azure.workload.identity/client-id": "annotated-client"}}
        }))
        .unwrap();
    let kube = kube::Client::try_from(kube::Config::new(s.api.url().parse().unwrap())).unwrap();
    Api::namespaced(kube, "shop").create(&PostParams::default(), &sa).await.unwrap();
    let target = s.publish("annotated", "g").await.unwrap();
    assert_eq!(text(&target.join("db")), "kv1-secret");
    assert_eq!(s.azure.token_requests(), 2, "a second identity, a second token");

    // A service principal from nodePublishSecretRef (keys in any case).
    let extra = Publish {
        tokens: &[],
        secrets: &[("ClientID", "sp-client"), ("clientsecret", "sp-secret")],
    };
    let target = s.node.publish("principal", &TestNode::pod("h"), &extra).await.unwrap();
    assert_eq!(text(&target.join("db")), "kv1-secret");
    let err =
        s.node.publish("principal", &TestNode::pod("i"), &Publish::default()).await.unwrap_err();
    assert!(err.message().contains("nodePublishSecretRef secret is not set"), "{}", err.message());
    let extra = Publish { tokens: &[], secrets: &[("clientid", "sp-client")] };
    let err = s.node.publish("principal", &TestNode::pod("i"), &extra).await.unwrap_err();
    assert!(err.message().contains("could not find clientsecret in secrets"), "{}", err.message());
    let extra = Publish {
        tokens: &[],
        secrets: &[("clientid", "sp-client"), ("clientsecret", "wrong-secret-77")],
    };
    let err = s.node.publish("principal", &TestNode::pod("i"), &extra).await.unwrap_err();
    assert!(!err.message().contains("wrong-secret-77"), "the secret leaked: {}", err.message());

    let refused = [
        (
            "node-identity",
            Code::FailedPrecondition,
            "useVMManagedIdentity uses the node's identity, which this driver does not allow: start sscsi with --azure-allow-node-identity",
        ),
        (
            "missing",
            Code::NotFound,
            "failed to get objectType:secret, objectName:nope, objectVersion:",
        ),
        ("denied", Code::PermissionDenied, "does not have get permission on key vault 'kv2'"),
        (
            "bad-type",
            Code::InvalidArgument,
            "failed to get objectType:Secret, objectName:db, objectVersion:: Invalid vaultObjectTypes. Should be secret, key, or cert",
        ),
        (
            "oct",
            Code::FailedPrecondition,
            "failed to get key. key type 'oct' currently not supported",
        ),
        (
            "bad-vault",
            Code::InvalidArgument,
            "failed to get vault: Invalid vault name: \"k\", must be between 3 and 24 chars",
        ),
        ("bad-mode", Code::InvalidArgument, "filePermission"),
        ("two-modes", Code::InvalidArgument, "only one identity mode can be enabled at a time"),
    ];
    for (class, code, message) in refused {
        let status = s.publish(class, "z").await.unwrap_err();
        assert_eq!(status.code(), code, "{class}: {}", status.message());
        assert!(
            status.message().contains(message),
            "{class}: want {message:?} in {:?}",
            status.message()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_identities_when_the_operator_allows_them() {
    let one = objects(&["objectName: db\nobjectType: secret"]);
    let classes = [
        (
            "vm-user",
            format!("useVMManagedIdentity: \"true\"\nuserAssignedIdentityID: mi-client\n{one}"),
        ),
        ("vm-system", format!("useVMManagedIdentity: \"true\"\n{one}")),
        (
            "vm-unknown",
            format!("useVMManagedIdentity: \"true\"\nuserAssignedIdentityID: nobody\n{one}"),
        ),
        ("pod-identity", format!("usePodIdentity: \"true\"\n{one}")),
    ];
    let classes: Vec<(&str, &str)> = classes.iter().map(|(n, p)| (*n, p.as_str())).collect();
    let s = setup(&classes, AzureOptions { allow_node_identity: true, ..Default::default() }).await;
    s.azure.set_secret("kv1", "db", "node-read");
    s.azure.node_identity(Some("mi-client"));
    s.azure.node_identity(None);
    s.azure.pod_identity("shop", "pod-a", "pi-client");
    for (class, pod) in
        [("vm-user", "a"), ("vm-system", "b"), ("vm-user", "c"), ("pod-identity", "pod-a")]
    {
        let target =
            s.publish(class, pod).await.unwrap_or_else(|e| panic!("{class}: {}", e.message()));
        assert_eq!(text(&target.join("db")), "node-read", "{class}");
    }
    assert_eq!(s.azure.token_requests(), 3, "one token per node identity and one for the pod");
    let err = s.publish("vm-unknown", "d").await.unwrap_err();
    assert!(
        err.message().contains("The requested identity has not been assigned to this resource"),
        "{}",
        err.message()
    );
    let err = s.publish("pod-identity", "pod-b").await.unwrap_err();
    assert!(err.message().contains("pod identity (NMI): status 403"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_binding_through_the_aks_token_proxy() {
    let one = objects(&["objectName: db\nobjectType: secret"]);
    let classes = [
        ("binding", format!("useAzureTokenProxy: \"true\"\nclientID: app-client\n{one}")),
        ("binding-no-client", format!("useAzureTokenProxy: \"true\"\n{one}")),
    ];
    let classes: Vec<(&str, &str)> = classes.iter().map(|(n, p)| (*n, p.as_str())).collect();
    let s = setup(&classes, AzureOptions::default()).await;
    s.azure.set_secret("kv1", "db", "bound-read");
    let token = s.signer.sign(&Subject {
        namespace: "shop",
        service_account: "app",
        pod: None,
        audiences: &["api://AKSIdentityBinding"],
        lifetime_seconds: 600,
    });
    let extra = Publish { tokens: &[("api://AKSIdentityBinding", &token)], secrets: &[] };
    for pod in ["a", "b"] {
        let target = s.node.publish("binding", &TestNode::pod(pod), &extra).await.unwrap();
        assert_eq!(text(&target.join("db")), "bound-read");
    }
    // The exchange went to the token proxy, named for the cluster id in the
    // API server's certificate, once for both mounts.
    let sni = sscsi_provider_azure::binding::sni_name(CLUSTER_ID);
    assert_eq!(s.azure.proxied(), [(sni, TOKEN_PROXY_HOST.to_owned())]);
    assert_eq!(s.azure.token_requests(), 1);

    let err = s.node.publish("binding-no-client", &TestNode::pod("c"), &extra).await.unwrap_err();
    assert!(err.message().contains("failed to build auth config for mode AzureTokenProxy: clientID is required for identity binding"), "{}", err.message());
    let wi_only = s.token();
    let extra = Publish { tokens: &[("api://AzureADTokenExchange", &wi_only)], secrets: &[] };
    let err = s.node.publish("binding", &TestNode::pod("d"), &extra).await.unwrap_err();
    assert!(
        err.message().contains("failed to parse service account token for identity binding"),
        "{}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_versions_name_the_key_vault_versions() {
    use sscsi_core::{MountRequest, ObjectVersion, Provider, ServiceAccountToken};
    let azure = AzureServer::start().await;
    let signer = JwtSigner::new();
    azure.trust(signer.verifier());
    azure.federate("tenant", "app-client", "system:serviceaccount:shop:app");
    let v1 = azure.set_secret("kv1", "db", "one");
    let v2 = azure.set_secret("kv1", "db", "two");
    let dir = tempfile::tempdir().unwrap();
    let (ca, env) = (dir.path().join("ca.pem"), dir.path().join("env.json"));
    std::fs::write(&ca, azure.ca_pem()).unwrap();
    std::fs::write(&env, azure.environment_json()).unwrap();
    let options =
        AzureOptions { extra_ca: Some(ca), resolve: azure.hosts(&["kv1"]), ..Default::default() };
    let provider = AzureProvider::new(options, None).unwrap();
    let objects = "array:\n  - |\n    objectName: db\n    objectType: secret\n  - |\n    objectName: db\n    objectType: secret\n    objectAlias: h\n    objectVersionHistory: 2\n";
    let token = signer.sign(&Subject {
        namespace: "shop",
        service_account: "app",
        pod: None,
        audiences: &[WI],
        lifetime_seconds: 600,
    });
    let request = MountRequest {
        parameters: [
            ("keyvaultName", "kv1"),
            ("tenantID", "tenant"),
            ("clientID", "app-client"),
            ("cloudName", "AzureStackCloud"),
            ("cloudEnvFileName", env.to_str().unwrap()),
            ("objects", objects),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        tokens: [(
            WI.to_owned(),
            ServiceAccountToken { token: token.into(), expiration_timestamp: String::new() },
        )]
        .into(),
        pod: TestNode::pod("web-0"),
        default_file_mode: 0o644,
        ..Default::default()
    };
    let response = provider.mount(&request).await.unwrap();
    let version =
        |id: &str, version: &str| ObjectVersion { id: id.into(), version: version.into() };
    assert_eq!(
        response.versions,
        [version("secret/db", &v2), version("secret/db/0", &v2), version("secret/db/1", &v1)]
    );
    let paths: Vec<&str> = response.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["db", "h/0", "h/1"]);
}

/// A pinned `objectVersion` is immutable: a refresh that holds it keeps the
/// mounted file and asks Key Vault nothing for it, while `latest` is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_does_not_read_a_pinned_version_again() {
    let class = format!(
        "clientID: app-client\n{}",
        objects(&[
            "objectName: db\nobjectType: secret\nobjectVersion: FIRST",
            "objectName: api\nobjectType: secret",
        ])
    );
    let s = setup(&[("pinned", &class)], AzureOptions::default()).await;
    let first = s.azure.set_secret("kv1", "db", "db-v1");
    s.azure.set_secret("kv1", "db", "db-v2");
    s.azure.set_secret("kv1", "api", "api-v1");
    let node_class =
        std::fs::read_dir(s.node.dir.path().join("spc")).unwrap().next().unwrap().unwrap().path();
    let yaml = std::fs::read_to_string(&node_class).unwrap().replace("FIRST", &first);
    std::fs::write(&node_class, yaml).unwrap();

    let target = s.publish("pinned", "web-0").await.unwrap();
    assert_eq!(
        (text(&target.join("db")), text(&target.join("api"))),
        ("db-v1".into(), "api-v1".into())
    );
    s.azure.set_secret("kv1", "api", "api-v2");
    let before = s.azure.vault_requests();
    // Every republish refreshes (interval zero): only `api` is read.
    s.publish("pinned", "web-0").await.unwrap();
    assert_eq!(
        (text(&target.join("db")), text(&target.join("api"))),
        ("db-v1".into(), "api-v2".into())
    );
    assert_eq!(s.azure.vault_requests() - before, 1, "the pinned version is not read again");
}
