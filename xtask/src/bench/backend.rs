//! The backends a bench scenario runs against: moto (AWS), a real OpenBao
//! dev server (Vault) and a directory (local). Each starts fresh per run,
//! holds the objects a scenario writes, counts the calls sscsi makes, and
//! reads the objects directly for the lower bound.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use sscsi_core::PodInfo;
use sscsi_testkit::bao::{BaoServer, ROOT_TOKEN};
use sscsi_testkit::jwt::{ISSUER, Subject};
use sscsi_testkit::kube_api::ApiServer;
use sscsi_testkit::moto::{CountingProxy, MotoServer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Kind {
    Local,
    Aws,
    Vault,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Aws => "aws",
            Self::Vault => "vault",
        }
    }

    /// The audience of the tokens this backend's provider logs in with.
    pub fn audience(self) -> &'static str {
        match self {
            Self::Local | Self::Aws => "sts.amazonaws.com",
            Self::Vault => "vault",
        }
    }

    /// The calls the upstream driver and provider make to publish `volumes`
    /// volumes of `objects` objects each on a node where nothing is cached
    /// (reference/providers.md §1.4 and §4.4): AWS builds credentials per
    /// mount (one STS call) and reads every object; the Vault provider keys
    /// its token cache on the pod, so each new pod logs in, then reads one
    /// path per object.
    pub fn upstream_publish_calls(self, volumes: usize, objects: usize) -> BTreeMap<String, usize> {
        let calls: &[(&str, usize)] = match self {
            Self::Local => &[],
            Self::Aws => &[(STS_LOGIN, volumes), (GET_SECRET, volumes * objects)],
            Self::Vault => {
                &[(VAULT_LOGIN, volumes), (VAULT_READ, volumes * objects), (VAULT_METADATA, 0)]
            }
        };
        calls.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    /// The calls upstream makes for one rotation pass over `volumes` mounted
    /// volumes of `objects` objects, `changed` of them holding a changed
    /// object: ASCP makes credentials again and asks `DescribeSecret` per
    /// object, then `GetSecretValue` for a changed one; the Vault provider
    /// re-reads every path with the pod's cached token.
    pub fn upstream_rotation_calls(
        self,
        volumes: usize,
        objects: usize,
        changed: usize,
    ) -> BTreeMap<String, usize> {
        let calls: &[(&str, usize)] = match self {
            Self::Local => &[],
            Self::Aws => {
                &[(STS_LOGIN, volumes), (DESCRIBE_SECRET, volumes * objects), (GET_SECRET, changed)]
            }
            Self::Vault => {
                &[(VAULT_LOGIN, 0), (VAULT_READ, volumes * objects), (VAULT_METADATA, 0)]
            }
        };
        calls.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }
}

pub const STS_LOGIN: &str = "sts:AssumeRoleWithWebIdentity";
pub const GET_SECRET: &str = "secretsmanager:GetSecretValue";
pub const DESCRIBE_SECRET: &str = "secretsmanager:DescribeSecret";
pub const VAULT_LOGIN: &str = "vault:login";
pub const VAULT_READ: &str = "vault:read";
/// KV v2 metadata reads: the version check of a refresh.
pub const VAULT_METADATA: &str = "vault:read metadata";

/// Where the bench's pods live.
pub const NAMESPACE: &str = "bench";
const REGION: &str = "us-west-2";
const ROLE: &str = "bench";

#[expect(clippy::large_enum_variant, reason = "one backend per run")]
pub enum Backend {
    Local {
        root: tempfile::TempDir,
    },
    Aws {
        moto: MotoServer,
        /// In front of moto: counts what sscsi asks for.
        proxy: CountingProxy,
        client: aws_sdk_secretsmanager::Client,
    },
    Vault {
        bao: BaoServer,
        http: Client<HttpConnector, Full<Bytes>>,
        /// A token of the role the pods log in with, for the direct reads.
        token: String,
    },
}

impl Backend {
    /// A fresh server (or directory) for one run.
    pub async fn start(kind: Kind, api: &ApiServer) -> anyhow::Result<Self> {
        Ok(match kind {
            Kind::Local => Self::Local { root: tempfile::tempdir()? },
            Kind::Aws => {
                let moto = MotoServer::start();
                let proxy = CountingProxy::start(moto.url()).await;
                let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(aws_config::Region::new(REGION))
                    .endpoint_url(moto.url())
                    .credentials_provider(aws_credential_types::Credentials::new(
                        "bench", "bench", None, None, "bench",
                    ))
                    .load()
                    .await;
                let client = aws_sdk_secretsmanager::Client::new(&config);
                Self::Aws { moto, proxy, client }
            }
            Kind::Vault => {
                let bao = BaoServer::start();
                let http = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
                let mut backend = Self::Vault { bao, http, token: String::new() };
                backend.configure_vault(api).await?;
                backend
            }
        })
    }

    pub fn kind(&self) -> Kind {
        match self {
            Self::Local { .. } => Kind::Local,
            Self::Aws { .. } => Kind::Aws,
            Self::Vault { .. } => Kind::Vault,
        }
    }

    /// The jwt auth method trusting the API double's signing key, a role
    /// for every service account in [`NAMESPACE`], read access to KV v2 and
    /// its metadata (which version-aware refresh asks).
    async fn configure_vault(&mut self, api: &ApiServer) -> anyhow::Result<()> {
        let policy = r#"path "secret/data/*" { capabilities = ["read"] }
path "secret/metadata/*" { capabilities = ["read"] }"#;
        self.vault("PUT", "sys/policies/acl/bench", None, json!({ "policy": policy })).await?;
        self.vault("POST", "sys/auth/jwt", None, json!({"type": "jwt"})).await?;
        let pem = api.signer().public_key_pem();
        let config = json!({"jwt_validation_pubkeys": [pem], "bound_issuer": ISSUER});
        self.vault("POST", "auth/jwt/config", None, config).await?;
        let role = json!({"role_type": "jwt", "user_claim": "sub", "bound_audiences": ["vault"],
                          "token_policies": ["bench"], "token_ttl": "1h"});
        self.vault("POST", &format!("auth/jwt/role/{ROLE}"), None, role).await?;
        let pod = PodInfo {
            name: "direct".into(),
            namespace: NAMESPACE.into(),
            uid: "uid-direct".into(),
            service_account: "direct".into(),
        };
        let jwt = vault_jwt(api, &pod);
        let login =
            self.vault("POST", "auth/jwt/login", None, json!({"jwt": jwt, "role": ROLE})).await?;
        let token = login["auth"]["client_token"].as_str().context("no client token")?.to_owned();
        if let Self::Vault { token: t, .. } = self {
            *t = token;
        }
        Ok(())
    }

    /// One Vault API call with the root token, or `token`.
    async fn vault(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> anyhow::Result<Value> {
        let Self::Vault { bao, http, .. } = self else { bail!("not a Vault backend") };
        let body = if body.is_null() { Bytes::new() } else { Bytes::from(body.to_string()) };
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{}/v1/{path}", bao.url()))
            .header("X-Vault-Token", token.unwrap_or(ROOT_TOKEN))
            .body(Full::new(body))?;
        let response = http.request(request).await.with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("{method} {path}: {status} {}", String::from_utf8_lossy(&bytes));
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Creates or changes object `name`.
    pub async fn put(&self, name: &str, value: &str) -> anyhow::Result<()> {
        match self {
            Self::Local { root } => std::fs::write(root.path().join(name), value)?,
            Self::Aws { client, .. } => {
                let exists = client.describe_secret().secret_id(name).send().await.is_ok();
                if exists {
                    client.put_secret_value().secret_id(name).secret_string(value).send().await?;
                } else {
                    client.create_secret().name(name).secret_string(value).send().await?;
                }
            }
            Self::Vault { .. } => {
                let body = json!({"data": {"value": value}});
                self.vault("POST", &format!("secret/data/{name}"), None, body).await?;
            }
        }
        Ok(())
    }

    /// OpenBao answers at most `per_second` requests a second, from any
    /// client to any path, and 429 (with `Retry-After`) to the rest: a
    /// global rate-limit quota, as an operator sets one.
    pub async fn throttle(&self, per_second: u32) -> anyhow::Result<()> {
        let quota = json!({"rate": per_second, "interval": "1s"});
        self.vault("POST", "sys/quotas/rate-limit/bench", None, quota).await?;
        Ok(())
    }

    /// When the backend answered each call it served (OpenBao's audit log).
    pub fn answer_times(&self) -> anyhow::Result<Vec<jiff::Timestamp>> {
        match self {
            Self::Vault { bao, .. } => Ok(bao.answer_times()),
            _ => bail!("only OpenBao logs when it answered"),
        }
    }

    /// `spec.parameters` of a SecretProviderClass mounting `names`, each as
    /// a file of its own name.
    pub fn class_parameters(&self, names: &[String]) -> Value {
        let each = |object: &dyn Fn(&str) -> String| -> String {
            names.iter().map(|n| object(n)).collect()
        };
        match self {
            Self::Local { .. } => json!({"objects": each(&|n| format!("- objectName: {n}\n"))}),
            Self::Aws { .. } => json!({
                "region": REGION,
                "objects": each(&|n| format!("- objectName: {n}\n  objectType: secretsmanager\n")),
            }),
            Self::Vault { .. } => json!({
                "roleName": ROLE,
                "vaultAuthMountPath": "jwt",
                "objects": each(&|n| {
                    format!("- objectName: {n}\n  secretPath: secret/data/{n}\n  secretKey: value\n")
                }),
            }),
        }
    }

    /// `sscsi node` arguments and environment for this backend; `counted`
    /// routes AWS calls through the counting proxy.
    pub fn node_config(&self, counted: bool) -> (Vec<String>, Vec<(String, String)>) {
        match self {
            Self::Local { root } => {
                (vec![format!("--local-provider-root={}", root.path().display())], vec![])
            }
            Self::Aws { moto, proxy, .. } => {
                let url = if counted { proxy.url() } else { moto.url() };
                (vec!["--providers=aws".into()], vec![("SSCSI_AWS_ENDPOINT_URL".into(), url)])
            }
            Self::Vault { bao, .. } => (
                vec!["--providers=vault".into()],
                vec![
                    ("VAULT_ADDR".into(), bao.url()),
                    ("POD_NAMESPACE".into(), "sscsi-system".into()),
                ],
            ),
        }
    }

    /// The service-account tokens kubelet passes for `pod` (the CSIDriver's
    /// `tokenRequests`), as the volume context's JSON.
    pub fn tokens(&self, api: &ApiServer, pod: &PodInfo) -> Option<String> {
        let (audience, token) = match self {
            Self::Local { .. } => return None,
            // moto's STS takes any web identity token.
            Self::Aws { .. } => ("sts.amazonaws.com", format!("irsa-{}", pod.uid)),
            Self::Vault { .. } => ("vault", vault_jwt(api, pod)),
        };
        let expiry = "2030-01-01T00:00:00Z";
        Some(json!({ audience: {"token": token, "expirationTimestamp": expiry} }).to_string())
    }

    /// The service account objects need: AWS reads the role from it.
    pub fn service_account(&self, name: &str) -> Value {
        let mut sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                            "metadata": {"name": name, "namespace": NAMESPACE}});
        if let Self::Aws { .. } = self {
            sa["metadata"]["annotations"] = json!({"eks.amazonaws.com/role-arn": format!("arn:aws:iam::123456789012:role/{name}")});
        }
        sa
    }

    /// Calls sscsi has made so far, by kind, counted at the server (moto's
    /// proxy, OpenBao's audit log).
    pub fn calls(&self) -> BTreeMap<String, usize> {
        let calls = match self {
            Self::Local { .. } => vec![],
            Self::Aws { proxy, .. } => vec![
                (STS_LOGIN, proxy.count("AssumeRoleWithWebIdentity")),
                (GET_SECRET, proxy.count("secretsmanager.GetSecretValue")),
                (DESCRIBE_SECRET, proxy.count("secretsmanager.DescribeSecret")),
            ],
            Self::Vault { bao, .. } => vec![
                (VAULT_LOGIN, bao.answered("update", "auth/jwt/login")),
                (VAULT_READ, bao.answered_under("read", "secret/data/")),
                (VAULT_METADATA, bao.answered_under("read", "secret/metadata/")),
            ],
        };
        calls.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    /// The lower bound: `names` read directly with the same client sscsi
    /// uses (the AWS SDK, HTTP to Vault, the filesystem), concurrently as
    /// sscsi reads them, with credentials in hand. Returns the bytes read.
    pub async fn read_directly(&self, names: &[String]) -> anyhow::Result<usize> {
        let sizes: Vec<anyhow::Result<usize>> = match self {
            Self::Local { root } => {
                names.iter().map(|n| Ok(std::fs::read(root.path().join(n))?.len())).collect()
            }
            Self::Aws { client, .. } => {
                futures::future::join_all(names.iter().map(|n| async move {
                    let answer = client.get_secret_value().secret_id(n).send().await?;
                    Ok(answer.secret_string().map_or(0, str::len))
                }))
                .await
            }
            Self::Vault { token, .. } => {
                futures::future::join_all(names.iter().map(|n| async move {
                    let path = format!("secret/data/{n}");
                    let answer = self.vault("GET", &path, Some(token), Value::Null).await?;
                    Ok(answer["data"]["data"]["value"].as_str().map_or(0, str::len))
                }))
                .await
            }
        };
        sizes.into_iter().sum()
    }

    /// The version string of the test server, for the report.
    pub fn server_version(kind: Kind) -> String {
        let run = |program: &str, args: &[&str]| {
            std::process::Command::new(sscsi_testkit::program(program))
                .args(args)
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_else(|| "not installed".into())
        };
        match kind {
            Kind::Local => "-".into(),
            Kind::Aws => {
                format!("moto {}", run("python3", &["-c", "import moto; print(moto.__version__)"]))
            }
            Kind::Vault => run("bao", &["version"]),
        }
    }
}

/// A service-account JWT for audience `vault`, signed as the API server does.
fn vault_jwt(api: &ApiServer, pod: &PodInfo) -> String {
    api.signer().sign(&Subject {
        namespace: &pod.namespace,
        service_account: &pod.service_account,
        pod: Some((&pod.name, &pod.uid)),
        audiences: &["vault"],
        lifetime_seconds: 3600,
    })
}

/// A directory the node may mount into: volumes live under `pods/`.
pub fn work_dir() -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::Builder::new().prefix("sscsi-bench-").tempdir()?;
    let pods = dir.path().join("pods");
    std::fs::create_dir(&pods)?;
    Ok((dir, pods))
}
