//! Logging in to Vault with the pod's service-account token, and reusing the
//! Vault token: one login per identity (namespace, service account, role,
//! address, auth mount, Vault namespace, TLS, audience) while the token is
//! valid, shared by every mount and rotation of that identity. Upstream keeps
//! one token per pod and SecretProviderClass.

use std::time::Duration;

use sscsi_core::{MountRequest, SecretBytes};
use sscsi_provider_kit::{IdentityCache, RefreshRule, request_pod_token};

use crate::client::{Call, ClientError, VaultHttp};
use crate::json::{GoJson, VaultResponse, go_json};
use crate::params::VaultParams;

/// A self-requested pod token lives 15 minutes, as upstream's.
const SELF_TOKEN_SECONDS: i64 = 900;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("failed to login: {0}")]
    Login(ClientError),
    #[error("failed to login: POST {path}: the response has no auth.client_token")]
    NoClientToken { path: String },
    #[error(
        "failed to create a service account token for requesting pod {namespace}/{pod}: {message}"
    )]
    TokenRequest { namespace: String, pod: String, message: String },
    #[error(
        "no service account token for audience {audience:?} in the mount request, and no Kubernetes API to request one"
    )]
    NoToken { audience: String },
}

/// Vault tokens by identity, each obtained by one login at a time and
/// renewed once two thirds of its life are over.
pub struct Tokens(IdentityCache<SecretBytes>);

impl Default for Tokens {
    fn default() -> Self {
        Self::counted_in(sscsi_provider_kit::CallStats::default())
    }
}

impl Tokens {
    /// Counts logins and reuses in `stats`.
    pub fn counted_in(stats: sscsi_provider_kit::CallStats) -> Self {
        Self(IdentityCache::new(RefreshRule::AfterShare(2.0 / 3.0)).counted_in(stats))
    }
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("logins", &self.logins()).finish_non_exhaustive()
    }
}

/// The identity a Vault token belongs to.
pub fn identity(params: &VaultParams, request: &MountRequest) -> String {
    serde_json::json!([
        request.pod.namespace,
        request.pod.service_account,
        params.role,
        params.address,
        params.auth_mount,
        params.namespace,
        params.audience,
        params.requested_audience,
        format!("{:?}", params.tls),
    ])
    .to_string()
}

impl Tokens {
    /// Logins made so far.
    pub fn logins(&self) -> u64 {
        self.0.exchanges()
    }

    /// The identity's Vault token, logging in when there is none, it is
    /// nearly expired, or it is `failed` (refused with a 403). The flag says
    /// whether this call logged in.
    pub async fn token(
        &self,
        key: &str,
        failed: Option<&SecretBytes>,
        login: &Login<'_>,
    ) -> Result<(SecretBytes, bool), AuthError> {
        let refused = |held: &SecretBytes| failed == Some(held);
        self.0
            .get(key, refused, || async {
                tracing::debug!(role = %login.params.role, mount = %login.params.auth_mount, "logging in to Vault");
                login.run().await
            })
            .await
    }
}

/// What one login needs.
pub struct Login<'a> {
    pub http: &'a VaultHttp,
    pub params: &'a VaultParams,
    pub request: &'a MountRequest,
    pub kube: Option<&'a kube::Client>,
}

impl std::fmt::Debug for Login<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login").field("role", &self.params.role).finish_non_exhaustive()
    }
}

impl Login<'_> {
    /// `POST /v1/auth/<mount>/login` with `{jwt, role}`: the same call for the
    /// kubernetes and the jwt auth methods. Returns the token and its TTL.
    async fn run(&self) -> Result<(SecretBytes, Option<Duration>), AuthError> {
        let jwt = self.jwt().await?;
        let path = format!("/v1/auth/{}/login", self.params.auth_mount);
        let body = VaultResponse(GoJson::Object(
            [
                ("jwt".to_owned(), GoJson::String(jwt.expose_str().unwrap_or_default().to_owned())),
                ("role".to_owned(), GoJson::String(self.params.role.clone())),
            ]
            .into(),
        ));
        let mut encoded = Vec::new();
        go_json(&body.0, &mut encoded);
        let call = Call {
            method: "POST",
            path: &path,
            query: "",
            body: Some(SecretBytes::from(encoded)),
            token: None,
            namespace: self.params.namespace.as_deref(),
        };
        let response = self.http.send(&call).await.map_err(AuthError::Login)?;
        let response = VaultResponse(
            GoJson::parse(&response)
                .ok_or_else(|| AuthError::NoClientToken { path: path.clone() })?,
        );
        let auth = &response.0["auth"];
        let token = auth["client_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::NoClientToken { path })?;
        let ttl = match &auth["lease_duration"] {
            GoJson::Number(n) => n.parse::<u64>().ok().filter(|s| *s > 0).map(Duration::from_secs),
            _ => None,
        };
        Ok((SecretBytes::from(token.as_bytes().to_vec()), ttl))
    }

    /// The pod's token for the audience, else one requested for the pod
    /// (upstream falls back to TokenRequest even when other audiences were passed).
    async fn jwt(&self) -> Result<SecretBytes, AuthError> {
        if let Some(token) = self.request.tokens.get(&self.params.audience) {
            return Ok(token.token.clone());
        }
        let pod = &self.request.pod;
        let Some(kube) = self.kube else {
            return Err(AuthError::NoToken { audience: self.params.audience.clone() });
        };
        let audiences = self.params.requested_audience.clone().into_iter().collect();
        request_pod_token(kube, pod, audiences, SELF_TOKEN_SECONDS).await.map_err(|e| {
            AuthError::TokenRequest {
                namespace: pod.namespace.clone(),
                pod: pod.name.clone(),
                message: e.to_string(),
            }
        })
    }
}
