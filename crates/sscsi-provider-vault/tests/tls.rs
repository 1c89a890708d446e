//! TLS to Vault and Vault namespaces, against a real OpenBao dev server
//! started with its own CA, through the provider as the node calls it.

use std::collections::BTreeMap;

use serde_json::json;
use sscsi_core::{MountRequest, PodInfo, Provider, ServiceAccountToken};
use sscsi_provider_vault::VaultProvider;
use sscsi_provider_vault::params::VaultDefaults;
use sscsi_provider_vault::version::KeySource;
use sscsi_testkit::bao::BaoServer;
use sscsi_testkit::jwt::{JwtSigner, Subject};

/// jwt auth with `signer`'s key, role `app` reading `secret/data/*`, and a
/// secret `secret/data/app` holding `user`, in Vault namespace `namespace`.
async fn configure(bao: &BaoServer, signer: &JwtSigner, namespace: Option<&str>, user: &str) {
    let write = |path: &'static str, body| async move {
        bao.write_in(namespace, path, body).await.unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    if namespace.is_some() {
        write("sys/mounts/secret", json!({"type": "kv", "options": {"version": "2"}})).await;
    }
    write(
        "sys/policies/acl/app",
        json!({"policy": "path \"secret/data/*\" { capabilities = [\"read\"] }"}),
    )
    .await;
    write("sys/auth/jwt", json!({"type": "jwt"})).await;
    write("auth/jwt/config", json!({"jwt_validation_pubkeys": [signer.public_key_pem()]})).await;
    write(
        "auth/jwt/role/app",
        json!({"role_type": "jwt", "user_claim": "sub", "bound_audiences": ["vault"], "token_policies": ["app"]}),
    )
    .await;
    write("secret/data/app", json!({"data": {"user": user}})).await;
}

fn request(signer: &JwtSigner, parameters: &[(&str, &str)]) -> MountRequest {
    let mut parameters: BTreeMap<String, String> =
        parameters.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    parameters.insert("roleName".into(), "app".into());
    parameters.insert("vaultAuthMountPath".into(), "jwt".into());
    parameters.insert(
        "objects".into(),
        "- {objectName: user, secretPath: secret/data/app, secretKey: user}".into(),
    );
    let token = signer.sign(&Subject {
        namespace: "shop",
        service_account: "app",
        pod: None,
        audiences: &["vault"],
        lifetime_seconds: 600,
    });
    MountRequest {
        parameters,
        tokens: BTreeMap::from([(
            "vault".to_owned(),
            ServiceAccountToken { token: token.into(), expiration_timestamp: String::new() },
        )]),
        pod: PodInfo {
            name: "web-0".into(),
            namespace: "shop".into(),
            uid: "u".into(),
            service_account: "app".into(),
        },
        default_file_mode: 0o644,
        ..Default::default()
    }
}

async fn mount(provider: &VaultProvider, request: &MountRequest) -> Result<String, String> {
    match provider.mount(request).await {
        Ok(response) => {
            Ok(String::from_utf8(response.files[0].contents.expose().to_vec()).unwrap())
        }
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_servers_ca_its_name_or_no_verification() {
    let bao = BaoServer::start_tls();
    let signer = JwtSigner::new();
    configure(&bao, &signer, None, "admin").await;
    let provider = VaultProvider::new(
        VaultDefaults { address: bao.url(), ..Default::default() },
        None,
        KeySource::Process,
    );
    let ca = bao.ca_cert().unwrap().display().to_string();
    let ca_dir = bao.ca_cert().unwrap().parent().unwrap().join("ca");
    std::fs::create_dir(&ca_dir).unwrap();
    std::fs::copy(bao.ca_cert().unwrap(), ca_dir.join("vault-ca.pem")).unwrap();
    let ca_dir = ca_dir.display().to_string();

    let trusted = mount(&provider, &request(&signer, &[("vaultCACertPath", &ca)])).await;
    assert_eq!(trusted.as_deref(), Ok("admin"));
    let by_dir = mount(&provider, &request(&signer, &[("vaultCADirectory", &ca_dir)])).await;
    assert_eq!(by_dir.as_deref(), Ok("admin"));
    // The certificate names localhost: the server name can be set apart from the address.
    let named = request(&signer, &[("vaultCACertPath", &ca), ("vaultTLSServerName", "localhost")]);
    assert_eq!(mount(&provider, &named).await.as_deref(), Ok("admin"));
    let misnamed =
        request(&signer, &[("vaultCACertPath", &ca), ("vaultTLSServerName", "vault.example.com")]);
    let err = mount(&provider, &misnamed).await.unwrap_err();
    assert!(
        err.contains("failed to login: POST /v1/auth/jwt/login") && err.contains("certificate"),
        "{err}"
    );

    let untrusted = mount(&provider, &request(&signer, &[])).await.unwrap_err();
    assert!(untrusted.contains("certificate"), "{untrusted}");
    let skipped = mount(&provider, &request(&signer, &[("vaultSkipTLSVerify", "true")])).await;
    assert_eq!(skipped.as_deref(), Ok("admin"));

    let missing =
        mount(&provider, &request(&signer, &[("vaultCACertPath", "/nonexistent/ca.pem")]))
            .await
            .unwrap_err();
    assert!(missing.contains("TLS: CA certificate /nonexistent/ca.pem"), "{missing}");
    let half = request(&signer, &[("vaultCACertPath", &ca), ("vaultTLSClientCertPath", &ca)]);
    let err = mount(&provider, &half).await.unwrap_err();
    assert!(
        err.contains("vaultTLSClientCertPath and vaultTLSClientKeyPath must be set together"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_namespaces_are_sent_as_x_vault_namespace() {
    let bao = BaoServer::start();
    let signer = JwtSigner::new();
    configure(&bao, &signer, None, "root-admin").await;
    bao.write("sys/namespaces/team", json!({})).await;
    configure(&bao, &signer, Some("team"), "team-admin").await;
    let provider = VaultProvider::new(
        VaultDefaults { address: bao.url(), ..Default::default() },
        None,
        KeySource::Process,
    );
    let root = mount(&provider, &request(&signer, &[])).await;
    assert_eq!(root.as_deref(), Ok("root-admin"));
    let team = mount(&provider, &request(&signer, &[("vaultNamespace", "team")])).await;
    assert_eq!(team.as_deref(), Ok("team-admin"));
    // The driver's default namespace, overridden by the class.
    let provider = VaultProvider::new(
        VaultDefaults { address: bao.url(), namespace: Some("team".into()), ..Default::default() },
        None,
        KeySource::Process,
    );
    assert_eq!(mount(&provider, &request(&signer, &[])).await.as_deref(), Ok("team-admin"));
    let nowhere = mount(&provider, &request(&signer, &[("vaultNamespace", "nowhere")])).await;
    assert!(nowhere.unwrap_err().contains("failed to login"));
}
