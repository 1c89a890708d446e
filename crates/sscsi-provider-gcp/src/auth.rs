//! Access tokens for a mount, as the official provider obtains them, but
//! cached per identity until shortly before they expire (upstream makes the
//! whole exchange on every mount):
//!
//! - pod-adc (workload identity): the pod's token for the pool, exchanged at
//!   the identity binding token endpoint for a federated token; then, when
//!   the service account names a Google service account
//!   (`iam.gke.io/gcp-service-account`, with optional delegates), IAM
//!   Credentials `generateAccessToken`.
//! - provider-adc: the node's token from the metadata server, only when the
//!   operator allows node identity.
//! - key.json: a credentials file from nodePublishSecretRef, through
//!   google-cloud-auth.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use sscsi_core::{MountRequest, SecretBytes};
use sscsi_provider_kit::{
    IdentityCache, RefreshRule, ServiceAccountAnnotations, request_pod_token,
};

pub const GSA_ANNOTATION: &str = "iam.gke.io/gcp-service-account";
pub const DELEGATES_ANNOTATION: &str = "iam.gke.io/gcp-service-account-delegates";
const CLOUD_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Tokens are used until this long before they expire.
const MARGIN: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("unable to obtain auth for mount: unable to obtain workload identity auth: {0}")]
    Workload(String),
    #[error(
        "unable to obtain auth for mount: provider-adc uses the node's identity, which this driver does not allow: start sscsi with --gcp-allow-node-identity to permit it"
    )]
    NodeIdentity,
    #[error("unable to obtain auth for mount: {0}")]
    Other(String),
}

/// Where the workload identity pool and provider come from.
#[derive(Debug, Clone, Default)]
pub struct WorkloadSettings {
    /// `PROJECT`, `CLUSTER_LOCATION`, `CLUSTER_NAME`; each else from the metadata server.
    pub project: Option<String>,
    pub cluster_location: Option<String>,
    pub cluster_name: Option<String>,
    /// `GKE_WORKLOAD_IDENTITY_ENDPOINT`.
    pub provider_endpoint: String,
    /// `GOOGLE_APPLICATION_CREDENTIALS`: a fleet `external_account` file, used
    /// when the cluster is not known.
    pub credentials_file: Option<PathBuf>,
}

/// The endpoints of the identity calls.
#[derive(Debug, Clone)]
pub struct AuthEndpoints {
    pub metadata: String,
    pub token_exchange: String,
    pub iam: String,
}

impl Default for AuthEndpoints {
    fn default() -> Self {
        Self {
            metadata: "http://metadata.google.internal".into(),
            token_exchange: "https://securetoken.googleapis.com/v1/identitybindingtoken".into(),
            iam: "https://iamcredentials.googleapis.com".into(),
        }
    }
}

/// The pool and the audience of the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Federation {
    pub pool: String,
    pub audience: String,
}

/// An access token for a mount and the key of its identity.
#[derive(Clone)]
pub struct Access {
    pub key: String,
    pub token: SecretBytes,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access").field("key", &self.key).finish_non_exhaustive()
    }
}

pub struct Auth {
    http: reqwest::Client,
    endpoints: AuthEndpoints,
    workload: WorkloadSettings,
    kube: Option<kube::Client>,
    federation: tokio::sync::OnceCell<Federation>,
    annotations: ServiceAccountAnnotations,
    tokens: IdentityCache<SecretBytes>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("endpoints", &self.endpoints).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default)]
struct Annotations {
    gsa: Option<String>,
    delegates: Vec<String>,
}

impl Auth {
    pub fn new(
        http: reqwest::Client,
        endpoints: AuthEndpoints,
        workload: WorkloadSettings,
        kube: Option<kube::Client>,
    ) -> Self {
        Self {
            http,
            endpoints,
            workload,
            kube,
            federation: tokio::sync::OnceCell::new(),
            annotations: ServiceAccountAnnotations::default(),
            tokens: IdentityCache::new(RefreshRule::BeforeExpiry(MARGIN)),
        }
    }

    /// Counts token exchanges and reuses in `stats` (before any mount).
    pub fn count_in(&mut self, stats: sscsi_provider_kit::CallStats) {
        self.tokens = IdentityCache::new(RefreshRule::BeforeExpiry(MARGIN)).counted_in(stats);
    }

    /// The identity's token, from the cache or from `obtain`, one exchange at
    /// a time per identity.
    async fn cached<F>(&self, key: String, obtain: F) -> Result<Access, AuthError>
    where
        F: std::future::Future<Output = Result<(SecretBytes, Duration), AuthError>>,
    {
        let (token, _) = self
            .tokens
            .get(
                &key,
                |_| false,
                || async {
                    tracing::debug!(identity = %key, "obtaining a Google access token");
                    obtain.await.map(|(token, lifetime)| (token, Some(lifetime)))
                },
            )
            .await?;
        Ok(Access { key, token })
    }

    /// The node's own token (provider-adc).
    pub async fn node(&self) -> Result<Access, AuthError> {
        self.cached("node".into(), async {
            let url = format!(
                "{}/computeMetadata/v1/instance/service-accounts/default/token",
                self.endpoints.metadata
            );
            let body = self.get_metadata_json(&url).await.map_err(AuthError::Other)?;
            token_of(&body, "access_token", "expires_in").map_err(AuthError::Other)
        })
        .await
    }

    /// The pod's workload identity token.
    pub async fn workload(&self, request: &MountRequest) -> Result<Access, AuthError> {
        let failed = |e: String| AuthError::Workload(e);
        let federation = self.federation().await.map_err(failed)?;
        let pod = &request.pod;
        let annotations =
            self.annotations(&pod.namespace, &pod.service_account).await.map_err(failed)?;
        // Upstream's rule: passed tokens must include the pool's (or the
        // audience's); only when none were passed is one requested.
        let passed = if request.tokens.is_empty() {
            None
        } else {
            let token = request
                .tokens
                .get(&federation.pool)
                .or_else(|| request.tokens.get(&federation.audience))
                .ok_or_else(|| failed("unable to fetch SA token from driver: no token has audience value of idPool".into()))?;
            Some(token.token.clone())
        };
        let key = json!([
            "workload",
            pod.namespace,
            pod.service_account,
            annotations.gsa,
            annotations.delegates,
            federation.audience
        ])
        .to_string();
        self.cached(key, async {
            let ksa_token = match passed {
                Some(token) => token,
                None => self.request_token(request, &federation).await.map_err(failed)?,
            };
            let (federated, lifetime) =
                self.exchange(&ksa_token, &federation.audience).await.map_err(failed)?;
            match &annotations.gsa {
                None => Ok((federated, lifetime)),
                Some(gsa) => {
                    self.impersonate(&federated, gsa, &annotations.delegates).await.map_err(failed)
                }
            }
        })
        .await
    }

    async fn federation(&self) -> Result<Federation, String> {
        self.federation
            .get_or_try_init(|| async {
                match self.gke().await {
                    Ok(federation) => Ok(federation),
                    Err(gke) => self.fleet().map_err(|fleet| format!("{gke}; {fleet}")),
                }
            })
            .await
            .cloned()
    }

    /// GKE: the project's pool and the cluster's provider.
    async fn gke(&self) -> Result<Federation, String> {
        let w = &self.workload;
        let meta = |item: &'static str| {
            let url = format!("{}/computeMetadata/v1/{item}", self.endpoints.metadata);
            async move { self.get_metadata_text(&url).await }
        };
        let project = match &w.project {
            Some(p) => p.clone(),
            None => meta("project/project-id")
                .await
                .map_err(|e| format!("unable to get project id: {e}"))?,
        };
        let location = match &w.cluster_location {
            Some(l) => l.clone(),
            None => meta("instance/attributes/cluster-location")
                .await
                .map_err(|e| format!("unable to determine cluster location: {e}"))?,
        };
        let name = match &w.cluster_name {
            Some(n) => n.clone(),
            None => meta("instance/attributes/cluster-name")
                .await
                .map_err(|e| format!("unable to determine cluster name: {e}"))?,
        };
        let pool = format!("{project}.svc.id.goog");
        let provider = format!(
            "{}/projects/{project}/locations/{location}/clusters/{name}",
            w.provider_endpoint
        );
        Ok(Federation { audience: format!("identitynamespace:{pool}:{provider}"), pool })
    }

    /// Fleet workload identity: the `external_account` file's audience.
    fn fleet(&self) -> Result<Federation, String> {
        let path = self
            .workload
            .credentials_file
            .as_ref()
            .ok_or("no GOOGLE_APPLICATION_CREDENTIALS file")?;
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let file: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if file["type"] != "external_account" {
            return Err(format!(
                "google: unexpected credentials type: {}, expected: external_account",
                file["type"]
            ));
        }
        let audience = file["audience"].as_str().unwrap_or_default().to_owned();
        let parts: Vec<&str> = audience.splitn(3, ':').collect();
        match parts.as_slice() {
            [_, pool, _] => Ok(Federation { pool: (*pool).to_owned(), audience: audience.clone() }),
            _ => Ok(Federation { pool: String::new(), audience }),
        }
    }

    async fn annotations(&self, namespace: &str, name: &str) -> Result<Annotations, String> {
        let Some(kube) = &self.kube else { return Ok(Annotations::default()) };
        let map = self
            .annotations
            .get(kube, namespace, name)
            .await
            .map_err(|e| format!("unable to fetch SA info: {e}"))?
            .ok_or_else(|| {
                format!("unable to fetch SA info: serviceaccounts \"{name}\" not found")
            })?;
        let gsa = map.get(GSA_ANNOTATION).cloned().filter(|g| !g.is_empty());
        let delegates = match map.get(DELEGATES_ANNOTATION) {
            None => Vec::new(),
            Some(text) => serde_json::from_str(text)
                .map_err(|e| format!("unable to parse delegates annotation on SA: {e}"))?,
        };
        Ok(Annotations { gsa, delegates })
    }

    async fn request_token(
        &self,
        request: &MountRequest,
        federation: &Federation,
    ) -> Result<SecretBytes, String> {
        let kube = self
            .kube
            .as_ref()
            .ok_or("unable to fetch pod token: no Kubernetes API to request one")?;
        let pod = &request.pod;
        let audience =
            if federation.pool.is_empty() { &federation.audience } else { &federation.pool };
        request_pod_token(kube, pod, vec![audience.clone()], 900)
            .await
            .map_err(|e| format!("unable to fetch pod token: {e}"))
    }

    /// The identity binding token exchange.
    async fn exchange(
        &self,
        ksa_token: &SecretBytes,
        audience: &str,
    ) -> Result<(SecretBytes, Duration), String> {
        let body = SecretBytes::from(
            json!({
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "subject_token": ksa_token.expose_str().unwrap_or_default(),
                "audience": audience,
                "scope": CLOUD_SCOPE,
            })
            .to_string(),
        );
        let response = self
            .http
            .post(&self.endpoints.token_exchange)
            .header("content-type", "application/json")
            .body(body.expose().to_vec())
            .send()
            .await
            .map_err(|e| format!("unable to fetch identitybindingtoken: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!(
                "unable to fetch identitybindingtoken: could not get idbindtoken token, status: {}",
                status.as_u16()
            ));
        }
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        let body: Value = serde_json::from_slice(&body).map_err(|_| {
            "unable to fetch identitybindingtoken: the answer is not JSON".to_owned()
        })?;
        token_of(&body, "access_token", "expires_in")
    }

    /// IAM Credentials `generateAccessToken` for `gsa`, as the federated identity.
    async fn impersonate(
        &self,
        federated: &SecretBytes,
        gsa: &str,
        delegates: &[String],
    ) -> Result<(SecretBytes, Duration), String> {
        let url = format!(
            "{}/v1/projects/-/serviceAccounts/{gsa}:generateAccessToken",
            self.endpoints.iam
        );
        let delegates: Vec<String> =
            delegates.iter().map(|d| format!("projects/-/serviceAccounts/{d}")).collect();
        let response = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("authorization", bearer(federated))
            .body(json!({"scope": [CLOUD_SCOPE], "delegates": delegates}).to_string())
            .send()
            .await
            .map_err(|e| format!("unable to fetch gcp service account token: {e}"))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        let body: Value = serde_json::from_slice(&body).unwrap_or_default();
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or_default();
            return Err(format!(
                "unable to fetch gcp service account token: {} {message}",
                status.as_u16()
            ));
        }
        let token = body["accessToken"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or("unable to fetch gcp service account token: no accessToken")?;
        let lifetime = body["expireTime"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| {
                Duration::from_secs(
                    (t.as_second() - jiff::Timestamp::now().as_second()).max(0) as u64
                )
            })
            .unwrap_or(Duration::from_secs(3600));
        Ok((SecretBytes::from(token.as_bytes().to_vec()), lifetime))
    }

    async fn get_metadata_text(&self, url: &str) -> Result<String, String> {
        let response = self
            .http
            .get(url)
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("metadata server: status {}", response.status().as_u16()));
        }
        response.text().await.map_err(|e| e.to_string())
    }

    async fn get_metadata_json(&self, url: &str) -> Result<Value, String> {
        let text = SecretBytes::from(self.get_metadata_text(url).await?);
        serde_json::from_slice(text.expose())
            .map_err(|_| "metadata server: the answer is not JSON".to_owned())
    }
}

/// `Bearer <token>` as a header value.
pub fn bearer(token: &SecretBytes) -> String {
    format!("Bearer {}", token.expose_str().unwrap_or_default())
}

fn token_of(
    body: &Value,
    token: &str,
    expires_in: &str,
) -> Result<(SecretBytes, Duration), String> {
    let access = body[token]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("the answer has no {token}"))?;
    let seconds = body[expires_in]
        .as_u64()
        .or_else(|| body[expires_in].as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(3600);
    Ok((SecretBytes::from(access.as_bytes().to_vec()), Duration::from_secs(seconds)))
}
