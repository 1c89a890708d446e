//! Identities for Key Vault: workload identity (the pod's token for
//! `api://AzureADTokenExchange` as a client assertion) and a service
//! principal from nodePublishSecretRef, through azure_identity's credentials.
//! A credential is kept per identity, so its token cache serves every mount of
//! that identity: N mounts make one AAD token request, where upstream makes one
//! per mount. The node's own identities are refused unless the operator allows
//! them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::http::{ClientMethodOptions, ClientOptions};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId,
};
use sscsi_core::{MountRequest, SecretBytes, ServiceAccountToken, content_digest};
use sscsi_provider_kit::ServiceAccountAnnotations;

use crate::binding::IDENTITY_BINDING_AUDIENCE;

use crate::params::{AzureParams, IdentityMode};

pub const WORKLOAD_IDENTITY_AUDIENCE: &str = "api://AzureADTokenExchange";
pub const CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "failed to build auth config for mode {mode}: failed to parse workload identity tokens, error: no token for audience {WORKLOAD_IDENTITY_AUDIENCE:?} - ensure tokenRequests includes it in the CSIDriver"
    )]
    NoToken { mode: &'static str },
    #[error("nodePublishSecretRef secret is not set")]
    NoSecretRef,
    #[error("could not find {0} in secrets")]
    NoSecretKey(&'static str),
    #[error(
        "{0} uses the node's identity, which this driver does not allow: start sscsi with --azure-allow-node-identity to permit it"
    )]
    NodeIdentity(&'static str),
    #[error("failed to build auth config for mode AzureTokenProxy: {0}")]
    Binding(&'static str),
    #[error("failed to get service account {namespace}/{name}: {message}")]
    ServiceAccount { namespace: String, name: String, message: String },
    #[error("failed to create credential: {0}")]
    Credential(String),
}

/// The pod's service-account token, handed to AAD as the client assertion;
/// replaced by each mount with the newest token kubelet passed.
#[derive(Debug, Clone, Default)]
struct PodAssertion(Arc<Mutex<SecretBytes>>);

#[async_trait::async_trait]
impl ClientAssertion for PodAssertion {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        let token = self.0.lock().expect("assertion lock").clone();
        Ok(token.expose_str().unwrap_or_default().to_owned())
    }
}

/// A credential for a mount, and the key that names its identity.
pub struct Identity {
    pub key: String,
    pub credential: Arc<dyn TokenCredential>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("key", &self.key).finish_non_exhaustive()
    }
}

/// A workload identity's credential and the assertion it sends.
type Workload = (PodAssertion, Arc<dyn TokenCredential>);

/// Credentials by identity.
#[derive(Default)]
pub struct Credentials {
    workload: Mutex<HashMap<String, Workload>>,
    principals: Mutex<HashMap<String, Arc<dyn TokenCredential>>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

/// How a mount's credential reaches AAD.
#[derive(Debug)]
pub struct Channels<'a> {
    /// Options of every AAD request (cloud, transport).
    pub options: &'a ClientOptions,
    /// The same through the AKS token proxy, for identity binding.
    pub binding: Option<&'a ClientOptions>,
    /// The plain client, for aad-pod-identity's NMI.
    pub http: &'a reqwest::Client,
    pub allow_node_identity: bool,
}

impl Credentials {
    /// The credential for `request`, given the class's parameters and the
    /// client id (`clientID`, else the service account's annotation).
    pub fn identity(
        &self,
        params: &AzureParams,
        client_id: Option<&str>,
        request: &MountRequest,
        channels: &Channels<'_>,
    ) -> Result<Identity, AuthError> {
        let Channels { options, binding, http, allow_node_identity } = *channels;
        let authority = format!("{:?}", options.cloud);
        match params.mode {
            IdentityMode::PodIdentity if !allow_node_identity => {
                return Err(AuthError::NodeIdentity("usePodIdentity"));
            }
            IdentityMode::VmManagedIdentity if !allow_node_identity => {
                return Err(AuthError::NodeIdentity("useVMManagedIdentity"));
            }
            IdentityMode::PodIdentity => {
                let pod = &request.pod;
                let key = serde_json::json!(["nmi", pod.namespace, pod.name]).to_string();
                let credential = self.node(&key, || {
                    Ok(Arc::new(NmiCredential {
                        http: http.clone(),
                        pod: pod.name.clone(),
                        namespace: pod.namespace.clone(),
                        cached: Mutex::default(),
                    }))
                })?;
                return Ok(Identity { key, credential });
            }
            IdentityMode::VmManagedIdentity => {
                let id = params.user_assigned_identity_id.clone();
                let key = serde_json::json!(["vm", id]).to_string();
                let credential = self.node(&key, || {
                    let options = ManagedIdentityCredentialOptions {
                        user_assigned_id: id.map(UserAssignedId::ClientId),
                        client_options: options.clone(),
                    };
                    let credential = ManagedIdentityCredential::new(Some(options))
                        .map_err(|e| AuthError::Credential(e.to_string()))?;
                    Ok(credential as Arc<dyn TokenCredential>)
                })?;
                return Ok(Identity { key, credential });
            }
            IdentityMode::TokenProxy => {
                let binding =
                    binding.ok_or(AuthError::Binding("the token proxy is not available"))?;
                let client_id = client_id
                    .ok_or(AuthError::Binding("clientID is required for identity binding"))?;
                if request.tokens.is_empty() {
                    return Err(AuthError::Binding(
                        "service account tokens are required for identity binding",
                    ));
                }
                let token = request.tokens.get(IDENTITY_BINDING_AUDIENCE).ok_or(AuthError::Binding(
                    "failed to parse service account token for identity binding, error: no token for audience \"api://AKSIdentityBinding\"",
                ))?;
                let key = serde_json::json!([
                    "binding",
                    params.tenant_id,
                    client_id,
                    request.pod.namespace,
                    request.pod.service_account
                ])
                .to_string();
                return self.assertion(key, &params.tenant_id, client_id, token, binding);
            }
            IdentityMode::Default => {}
        }
        if let Some(client_id) = client_id {
            let token = request
                .tokens
                .get(WORKLOAD_IDENTITY_AUDIENCE)
                .ok_or(AuthError::NoToken { mode: "default" })?;
            let key = serde_json::json!([
                "workload",
                authority,
                params.tenant_id,
                client_id,
                request.pod.namespace,
                request.pod.service_account
            ])
            .to_string();
            return self.assertion(key, &params.tenant_id, client_id, token, options);
        }
        // A service principal from nodePublishSecretRef; keys matched case-insensitively.
        if request.secrets.is_empty() {
            return Err(AuthError::NoSecretRef);
        }
        let find = |name: &'static str| {
            request
                .secrets
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .ok_or(AuthError::NoSecretKey(name))
        };
        let (client_id, secret) = (find("clientid")?, find("clientsecret")?);
        let client_id = client_id.expose_str().unwrap_or_default().trim().to_owned();
        // The key names the secret by digest, never by value.
        let key = serde_json::json!([
            "principal",
            authority,
            params.tenant_id,
            client_id,
            content_digest(secret.expose())
        ])
        .to_string();
        let mut map = self.principals.lock().expect("credentials lock");
        if let Some(credential) = map.get(&key) {
            return Ok(Identity { key, credential: credential.clone() });
        }
        let credential = ClientSecretCredential::new(
            &params.tenant_id,
            client_id,
            Secret::new(secret.expose_str().unwrap_or_default().trim().to_owned()),
            Some(ClientSecretCredentialOptions { client_options: options.clone() }),
        )
        .map_err(|e| AuthError::Credential(e.to_string()))?
            as Arc<dyn TokenCredential>;
        map.insert(key.clone(), credential.clone());
        Ok(Identity { key, credential })
    }
}

impl Credentials {
    /// A client-assertion credential under `key` (workload identity or
    /// identity binding), made once, sending the newest pod token.
    fn assertion(
        &self,
        key: String,
        tenant: &str,
        client_id: &str,
        token: &ServiceAccountToken,
        options: &ClientOptions,
    ) -> Result<Identity, AuthError> {
        let mut map = self.workload.lock().expect("credentials lock");
        let (assertion, credential) = match map.get(&key) {
            Some(entry) => entry.clone(),
            None => {
                let assertion = PodAssertion::default();
                let credential = ClientAssertionCredential::new(
                    tenant.to_owned(),
                    client_id.to_owned(),
                    assertion.clone(),
                    Some(ClientAssertionCredentialOptions { client_options: options.clone() }),
                )
                .map_err(|e| AuthError::Credential(e.to_string()))?;
                let entry = (assertion, credential as Arc<dyn TokenCredential>);
                map.insert(key.clone(), entry.clone());
                entry
            }
        };
        *assertion.0.lock().expect("assertion lock") = token.token.clone();
        Ok(Identity { key, credential })
    }

    /// The node-level credential under `key`, made once.
    fn node(
        &self,
        key: &str,
        make: impl FnOnce() -> Result<Arc<dyn TokenCredential>, AuthError>,
    ) -> Result<Arc<dyn TokenCredential>, AuthError> {
        let mut map = self.principals.lock().expect("credentials lock");
        if let Some(credential) = map.get(key) {
            return Ok(credential.clone());
        }
        let credential = make()?;
        map.insert(key.to_owned(), credential.clone());
        Ok(credential)
    }
}

/// aad-pod-identity's NMI on the node (`usePodIdentity`, deprecated
/// upstream): a token for the pod, named by the `podname` and `podns` headers.
struct NmiCredential {
    http: reqwest::Client,
    pod: String,
    namespace: String,
    cached: Mutex<Option<AccessToken>>,
}

pub const NMI_URL: &str = "http://localhost:2579/host/token/";

impl std::fmt::Debug for NmiCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NmiCredential").field("pod", &self.pod).finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenCredential for NmiCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let soon =
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::minutes(5);
        if let Some(token) =
            self.cached.lock().expect("nmi lock").as_ref().filter(|t| t.expires_on > soon)
        {
            return Ok(token.clone());
        }
        let failed = |message: String| {
            azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                format!("pod identity (NMI): {message}"),
            )
        };
        let resource = scopes.first().map(|s| s.trim_end_matches("/.default")).unwrap_or_default();
        let response = self
            .http
            .get(format!(
                "{NMI_URL}?{}",
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("resource", resource)
                    .finish()
            ))
            .header("podname", &self.pod)
            .header("podns", &self.namespace)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(failed(format!("status {status}")));
        }
        let body = response.bytes().await.map_err(|e| failed(e.to_string()))?;
        let body: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| failed("the answer is not JSON".into()))?;
        let access = body["token"]["access_token"].as_str().filter(|t| !t.is_empty());
        let client = body["clientid"].as_str().filter(|c| !c.is_empty());
        let (Some(access), Some(_)) = (access, client) else {
            return Err(failed("the answer has no token.access_token or clientid".into()));
        };
        let expires = body["token"]["expires_on"]
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .or_else(|| body["token"]["expires_on"].as_i64())
            .and_then(|s| azure_core::time::OffsetDateTime::from_unix_timestamp(s).ok())
            .ok_or_else(|| failed("the answer has no token.expires_on".into()))?;
        let token = AccessToken { token: Secret::new(access.to_owned()), expires_on: expires };
        *self.cached.lock().expect("nmi lock") = Some(token.clone());
        Ok(token)
    }
}

/// Client-id annotations by (namespace, service account), read through the
/// API and remembered for a minute (kubelet republishes every volume about
/// once a minute).
#[derive(Debug, Default)]
pub struct Annotations(ServiceAccountAnnotations);

impl Annotations {
    /// The client id in the service account's `azure.workload.identity/client-id`
    /// annotation, for classes without `clientID` (upstream never reads it).
    pub async fn client_id(
        &self,
        client: &kube::Client,
        namespace: &str,
        name: &str,
    ) -> Result<Option<String>, AuthError> {
        let annotations =
            self.0.get(client, namespace, name).await.map_err(|e| AuthError::ServiceAccount {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                message: e.to_string(),
            })?;
        Ok(annotations
            .and_then(|a| a.get(CLIENT_ID_ANNOTATION).cloned())
            .map(|id| id.trim().to_owned())
            .filter(|id| !id.is_empty()))
    }
}
