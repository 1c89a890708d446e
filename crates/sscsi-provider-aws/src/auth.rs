//! IRSA: the pod's token for audience `sts.amazonaws.com`, the role named by
//! its service account's `eks.amazonaws.com/role-arn` annotation, and STS
//! `AssumeRoleWithWebIdentity`. The credentials are cached per identity
//! (role, namespace, service account) until 5 minutes before they expire,
//! instead of one STS call per mount per region as ASCP makes.

use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::Credentials;
use sscsi_core::{ErrorCode, MountRequest, ProviderFailure};
use sscsi_provider_kit::Failure;
use sscsi_provider_kit::stats::Outcome;
use sscsi_provider_kit::{CallStats, IdentityCache, RefreshRule, ServiceAccountAnnotations};

pub const IRSA_AUDIENCE: &str = "sts.amazonaws.com";
pub const ROLE_ARN_ANNOTATION: &str = "eks.amazonaws.com/role-arn";

/// Credentials are reused until this long before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "CSI token error: serviceAccount.tokens not provided - ensure tokenRequests is configured in CSIDriver spec"
    )]
    NoTokens,
    #[error(
        "IRSA token extraction failed: token for audience {0:?} not found - ensure tokenRequests includes this audience in CSIDriver"
    )]
    NoToken(&'static str),
    #[error("failed to get service account {namespace}/{name}: {message}")]
    ServiceAccount { namespace: String, name: String, message: String },
    #[error("An IAM role must be associated with service account {name} (namespace: {namespace})")]
    NoRole { namespace: String, name: String },
    #[error("{region}: AssumeRoleWithWebIdentity for {role}: {message}")]
    Sts { region: String, role: String, message: String, failure: Failure },
}

impl ProviderFailure for AuthError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::NoTokens | Self::NoToken(_) | Self::NoRole { .. } => {
                ErrorCode::FailedPrecondition
            }
            Self::ServiceAccount { .. } => ErrorCode::Unavailable,
            // STS down or throttling is an outage; anything else refuses the role.
            Self::Sts { failure: Failure::Unavailable, .. } => ErrorCode::Unavailable,
            Self::Sts { failure: Failure::Throttled, .. } => ErrorCode::ResourceExhausted,
            Self::Sts { .. } => ErrorCode::PermissionDenied,
        }
    }
}

/// Where a service account's role comes from.
#[async_trait]
pub trait RoleLookup: Send + Sync + fmt::Debug {
    async fn role_arn(&self, namespace: &str, name: &str) -> Result<Option<String>, AuthError>;
}

/// One role for every service account, or none: what a person names to
/// `sscsi render` instead of the annotation a cluster would hold.
#[derive(Debug, Clone)]
pub struct FixedRole(pub Option<String>);

#[async_trait]
impl RoleLookup for FixedRole {
    async fn role_arn(&self, _: &str, _: &str) -> Result<Option<String>, AuthError> {
        Ok(self.0.clone())
    }
}

/// The role annotation read through the Kubernetes API, remembered briefly.
pub struct KubeRoles {
    client: kube::Client,
    annotations: ServiceAccountAnnotations,
}

impl fmt::Debug for KubeRoles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeRoles").finish_non_exhaustive()
    }
}

impl KubeRoles {
    pub fn new(client: kube::Client) -> Self {
        Self { client, annotations: ServiceAccountAnnotations::default() }
    }
}

#[async_trait]
impl RoleLookup for KubeRoles {
    async fn role_arn(&self, namespace: &str, name: &str) -> Result<Option<String>, AuthError> {
        let failed = |message: String| AuthError::ServiceAccount {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            message,
        };
        let annotations = self
            .annotations
            .get(&self.client, namespace, name)
            .await
            .map_err(|e| failed(e.to_string()))?
            .ok_or_else(|| failed(format!("serviceaccounts \"{name}\" not found")))?;
        Ok(annotations.get(ROLE_ARN_ANNOTATION).filter(|r| !r.is_empty()).cloned())
    }
}

/// Exchanged credentials, by (role, namespace, service account, region),
/// one exchange at a time per identity.
#[derive(Debug)]
pub struct CredentialCache(IdentityCache<Credentials>);

impl Default for CredentialCache {
    fn default() -> Self {
        Self::counted_in(CallStats::default())
    }
}

impl CredentialCache {
    /// Counts exchanges, reuses and STS calls in `stats`.
    pub fn counted_in(stats: CallStats) -> Self {
        Self(IdentityCache::new(RefreshRule::BeforeExpiry(REFRESH_BEFORE_EXPIRY)).counted_in(stats))
    }

    /// The credentials for `key`: cached while fresh, else made by `exchange`.
    async fn get_or_exchange<E, F>(
        &self,
        key: [&str; 4],
        exchange: impl FnOnce() -> F,
    ) -> Result<Credentials, E>
    where
        F: std::future::Future<Output = Result<Credentials, E>>,
    {
        let key = key.join("\n");
        let exchange = || async {
            let creds = exchange().await?;
            // Credentials without an expiry are not reused.
            let lifetime = creds.expiry().map_or(Duration::ZERO, |exp| {
                exp.duration_since(SystemTime::now()).unwrap_or_default()
            });
            Ok((creds, Some(lifetime)))
        };
        self.0.get(&key, |_| false, exchange).await.map(|(creds, _)| creds)
    }

    /// The pod's credentials in `region`, from the cache or from STS (its
    /// client made by `sts` only when a call is needed).
    pub async fn irsa(
        &self,
        roles: &dyn RoleLookup,
        sts: impl FnOnce() -> aws_sdk_sts::Client,
        region: &str,
        request: &MountRequest,
    ) -> Result<Credentials, AuthError> {
        if request.tokens.is_empty() {
            return Err(AuthError::NoTokens);
        }
        let token = request.tokens.get(IRSA_AUDIENCE).ok_or(AuthError::NoToken(IRSA_AUDIENCE))?;
        let (namespace, sa) = (&request.pod.namespace, &request.pod.service_account);
        let role = roles
            .role_arn(namespace, sa)
            .await?
            .ok_or_else(|| AuthError::NoRole { namespace: namespace.clone(), name: sa.clone() })?;
        let key = [role.as_str(), namespace.as_str(), sa.as_str(), region];
        self.get_or_exchange(key, || async {
            let web_identity = token.token.expose_str().unwrap_or_default().to_owned();
            self.0.stats().admit(&format!("sts.{region}")).await;
            let started = tokio::time::Instant::now();
            let response = sts()
                .assume_role_with_web_identity()
                .role_arn(&role)
                .role_session_name(
                    format!("sscsi-{namespace}-{sa}").chars().take(64).collect::<String>(),
                )
                .web_identity_token(web_identity)
                .send()
                .await;
            let failure = response.as_ref().err().map(crate::fetch::failure);
            let outcome = failure.map_or(Outcome::Ok, Outcome::failed);
            self.0.stats().call("AssumeRoleWithWebIdentity", outcome, started.elapsed());
            let response = response.map_err(|e| AuthError::Sts {
                region: region.to_owned(),
                role: role.clone(),
                message: crate::fetch::sdk_message(&e),
                failure: failure.unwrap_or(Failure::Rejected),
            })?;
            let issued = response.credentials.ok_or_else(|| AuthError::Sts {
                region: region.to_owned(),
                role: role.clone(),
                message: "the answer carries no credentials".to_owned(),
                failure: Failure::Rejected,
            })?;
            let expiry = SystemTime::try_from(issued.expiration).ok();
            Ok(Credentials::new(
                issued.access_key_id,
                issued.secret_access_key,
                Some(issued.session_token),
                expiry,
                "sscsi-irsa",
            ))
        })
        .await
    }
}

pub const POD_IDENTITY_AUDIENCE: &str = "pods.eks.amazonaws.com";
/// The EKS Pod Identity agent, on every node.
pub const POD_IDENTITY_IPV4: &str = "http://169.254.170.23/v1/credentials";
pub const POD_IDENTITY_IPV6: &str = "http://[fd00:ec2::23]/v1/credentials";

/// The Pod Identity agent's answer.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AgentCredentials {
    access_key_id: String,
    secret_access_key: String,
    token: String,
    #[serde(default)]
    expiration: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PodIdentityError {
    #[error(
        "Pod Identity token extraction failed: token for audience {0:?} not found - ensure tokenRequests includes this audience in CSIDriver"
    )]
    NoToken(&'static str),
    #[error(
        "CSI token error: serviceAccount.tokens not provided - ensure tokenRequests is configured in CSIDriver spec"
    )]
    NoTokens,
    #[error("failed to get AWS config from pod identity agent: {0}")]
    Agent(String),
}

impl ProviderFailure for PodIdentityError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::NoToken(_) | Self::NoTokens => ErrorCode::FailedPrecondition,
            Self::Agent(_) => ErrorCode::Unavailable,
        }
    }
}

impl CredentialCache {
    /// EKS Pod Identity: the `pods.eks.amazonaws.com` token sent to the node's
    /// agent, trying each endpoint in turn. The credentials hold for every
    /// region; they are cached per namespace and service account.
    pub async fn pod_identity(
        &self,
        endpoints: &[String],
        request: &MountRequest,
    ) -> Result<Credentials, PodIdentityError> {
        if request.tokens.is_empty() {
            return Err(PodIdentityError::NoTokens);
        }
        let token = request
            .tokens
            .get(POD_IDENTITY_AUDIENCE)
            .ok_or(PodIdentityError::NoToken(POD_IDENTITY_AUDIENCE))?;
        let (namespace, sa) = (&request.pod.namespace, &request.pod.service_account);
        let key = ["pod-identity", namespace.as_str(), sa.as_str(), ""];
        self.get_or_exchange(key, || async {
            let mut failures = Vec::new();
            for endpoint in endpoints {
                match ask_agent(endpoint, token.token.expose_str().unwrap_or_default()).await {
                    Ok(creds) => return Ok(creds),
                    Err(e) => failures.push(format!("{endpoint}: {e}")),
                }
            }
            Err(PodIdentityError::Agent(failures.join("; ")))
        })
        .await
    }
}

async fn ask_agent(endpoint: &str, token: &str) -> Result<Credentials, String> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let request = http::Request::get(endpoint)
        .header(http::header::AUTHORIZATION, token)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(5), client.request(request))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    let answer: AgentCredentials = serde_json::from_slice(&body)
        .map_err(|e| format!("invalid answer at line {}", e.line()))?;
    let expiry = answer
        .expiration
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(SystemTime::from);
    Ok(Credentials::new(
        answer.access_key_id,
        answer.secret_access_key,
        Some(answer.token),
        expiry,
        "sscsi-pod-identity",
    ))
}
