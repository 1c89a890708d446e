//! The `vault` provider: parameters → Vault token (cached per identity) →
//! one read per distinct request → files and versions.
//!
//! Reads (GET without a body) are shared by the mounts of one identity (see
//! [`sscsi_provider_kit::coalesce`]): a burst of pods, or a rotation pass over their
//! volumes, reads each KV path once. An answer that carries a lease (a
//! dynamic secret: database credentials and the like) is never handed to a
//! mount that did not make the call; that mount reads its own, so every pod
//! keeps its own lease, as upstream.
//!
//! KV v2 refreshes are version-aware: a refresh that holds every object of a
//! `<mount>/data/<path>` read asks `<mount>/metadata/<path>` for the current
//! version first, and reads no data while it is the version the held files
//! were made from. An identity whose policy does not grant the metadata read
//! (vault-csi-provider's documented policy grants `<mount>/data/*` only) is
//! asked once per process, then read as before.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use sscsi_core::{
    ErrorCode, MountRequest, MountResponse, ObjectVersion, Provider, ProviderError,
    ProviderFailure, SecretBytes, SecretFile,
};
use sscsi_provider_kit::coalesce::Coalescer;
use sscsi_provider_kit::{BackendStats, Classified, Failure};

use crate::auth::{AuthError, Login, Tokens, identity};
use crate::client::{Call, ClientError, Clients, VaultHttp};
use crate::json::{GoJson, VaultResponse};
use crate::params::{ParamsError, ReadKey, VaultDefaults, VaultObject, VaultParams};
use crate::render::{RenderError, render};
use crate::version::{KeySource, VersionKey, version};

pub const NAME: &str = "vault";

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(transparent)]
    Params(#[from] ParamsError),
    #[error(transparent)]
    Client(ClientError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// `role`: the Vault role and auth mount the token came from, so a 403
    /// says whose policy refused.
    #[error("couldn't read secret {object:?} as Vault role {role}: {source}")]
    Read { object: String, role: String, source: ClientError },
    #[error("couldn't read secret {object:?}: the response from {path:?} is not JSON")]
    NotJson { object: String, path: String },
    #[error("empty response from {path:?}, warnings: {warnings:?}")]
    Empty { path: String, warnings: Vec<String> },
    #[error(transparent)]
    Render(#[from] RenderError),
}

impl ProviderFailure for VaultError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Params(_) | Self::Client(ClientError::Address(_)) => ErrorCode::InvalidArgument,
            Self::Client(_) => ErrorCode::FailedPrecondition,
            // Vault answers a login with an unknown role or a rejected JWT with 400.
            Self::Auth(AuthError::Login(e)) => match e.status().map(|s| s.as_u16()) {
                Some(429) => ErrorCode::ResourceExhausted,
                Some(400..=499) => ErrorCode::PermissionDenied,
                _ => ErrorCode::Unavailable,
            },
            Self::Read { source: e, .. } => match e.failure() {
                // As vault-csi-provider users know them: a 401 is a denial, a 400 a precondition.
                Failure::Unauthenticated => ErrorCode::PermissionDenied,
                Failure::Invalid => ErrorCode::FailedPrecondition,
                other => other.code(),
            },
            Self::Auth(AuthError::NoToken { .. }) => ErrorCode::FailedPrecondition,
            Self::Auth(AuthError::TokenRequest { .. } | AuthError::NoClientToken { .. }) => {
                ErrorCode::Unavailable
            }
            Self::NotJson { .. } | Self::Empty { .. } | Self::Render(_) => {
                ErrorCode::FailedPrecondition
            }
        }
    }
}

pub struct VaultProvider {
    defaults: VaultDefaults,
    /// For TokenRequest when a mount brings no token for the audience.
    kube: Option<kube::Client>,
    clients: Clients,
    tokens: Tokens,
    version_key: VersionKey,
    reads: Arc<Coalescer<Result<Bytes, ClientError>>>,
    /// KV v2: the version each (identity, data path, objects) was last read
    /// at, and the object versions it made.
    kv: Mutex<HashMap<(String, String), KvHeld>>,
    /// (identity, metadata path) → when its metadata read was refused; asked
    /// again after [`METADATA_RETRY`] (the refusal may have been a revoked token).
    no_metadata: Mutex<HashMap<(String, String), std::time::Instant>>,
    /// A Vault token of whoever runs sscsi, used instead of logging in as
    /// the pod (`sscsi render`); never set on a node.
    caller_token: Option<SecretBytes>,
}

const METADATA_RETRY: std::time::Duration = std::time::Duration::from_secs(3600);

/// A KV v2 read as it was last answered.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KvHeld {
    version: u64,
    /// Object name → the version (HMAC) it was written with.
    objects: BTreeMap<String, String>,
}

impl std::fmt::Debug for VaultProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultProvider")
            .field("defaults", &self.defaults)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

impl VaultProvider {
    pub fn new(defaults: VaultDefaults, kube: Option<kube::Client>, key: KeySource) -> Self {
        Self {
            defaults,
            kube,
            clients: Clients::default(),
            tokens: Tokens::default(),
            version_key: VersionKey::new(key),
            reads: Arc::default(),
            kv: Mutex::default(),
            no_metadata: Mutex::default(),
            caller_token: None,
        }
    }

    /// Reads with `token` (the caller's `VAULT_TOKEN`) instead of logging
    /// in with the pod's service-account token.
    pub fn with_caller_token(mut self, token: SecretBytes) -> Self {
        self.caller_token = Some(token);
        self
    }

    /// Counts calls, throttled answers, retries, logins and shared reads
    /// in `stats` (before any mount: the caches start empty).
    pub fn with_stats(mut self, stats: &BackendStats) -> Self {
        let stats = stats.provider(NAME);
        self.tokens = Tokens::counted_in(stats.clone());
        self.reads = Arc::new(Coalescer::new().counted_in(stats.clone()));
        self.clients.calls.stats = stats;
        self
    }

    /// Vault logins made so far.
    pub fn logins(&self) -> u64 {
        self.tokens.logins()
    }

    /// Sends `call`; a GET without a body is shared with identical reads of
    /// the same identity, unless its answer holds a lease.
    async fn read(
        &self,
        http: &VaultHttp,
        call: &Call<'_>,
        identity: &str,
        reuse: std::time::Duration,
    ) -> Result<Bytes, ClientError> {
        if call.method != "GET" || call.body.is_some() {
            return http.send(call).await;
        }
        let key = serde_json::json!([identity, call.path, call.query, call.namespace]).to_string();
        let (path, query) = (call.path.to_owned(), call.query.to_owned());
        let (token, namespace) = (call.token.cloned(), call.namespace.map(str::to_owned));
        let shared_http = http.clone();
        let (answer, started) = self
            .reads
            .read(key, reuse, move || async move {
                let call = Call {
                    method: "GET",
                    path: &path,
                    query: &query,
                    body: None,
                    token: token.as_ref(),
                    namespace: namespace.as_deref(),
                };
                shared_http.send(&call).await
            })
            .await;
        match answer {
            Ok(body) if !started && has_lease(&body) => http.send(call).await,
            answer => answer,
        }
    }

    async fn fetch(&self, request: &MountRequest) -> Result<MountResponse, VaultError> {
        let params = VaultParams::parse(&request.parameters, &self.defaults)?;
        let http = self.clients.get(&params.address, &params.tls).map_err(VaultError::Client)?;
        let login = Login { http: &http, params: &params, request, kube: self.kube.as_ref() };
        // Whose policy a read is judged by, for messages.
        let role = match &self.caller_token {
            Some(_) => "(the caller's token)".to_owned(),
            None => format!("{:?} (auth mount {:?})", params.role, params.auth_mount),
        };
        let (token, fresh, identity) = match &self.caller_token {
            // The caller's own token: a refusal is final, there is no login to retry.
            Some(token) => (token.clone(), true, format!("caller/{}", identity(&params, request))),
            None => {
                let identity = identity(&params, request);
                let (token, fresh) = self.tokens.token(&identity, None, &login).await?;
                (token, fresh, identity)
            }
        };
        // One read per distinct request: objects on one dynamic path see one credential.
        let mut reads: BTreeMap<&ReadKey, Vec<&VaultObject>> = BTreeMap::new();
        for object in &params.objects {
            reads.entry(&object.read).or_default().push(object);
        }
        // On a refresh, the KV v2 reads whose held files stand: no data read.
        let held: HashMap<&str, &str> =
            request.current_versions.iter().map(|v| (v.id.as_str(), v.version.as_str())).collect();
        let mut unchanged: HashSet<&ReadKey> = HashSet::new();
        if !held.is_empty() {
            let refresh = Refresh {
                http: &http,
                params: &params,
                request,
                held: &held,
                identity: &identity,
                token: &token,
            };
            let checks =
                reads.iter().map(|(read, objects)| self.kv_unchanged(&refresh, read, objects));
            let checked = futures::future::join_all(checks).await;
            unchanged =
                reads.keys().zip(checked).filter(|(_, same)| *same).map(|(r, _)| *r).collect();
        }
        let results = futures::future::join_all(
            reads.iter().filter(|(read, _)| !unchanged.contains(*read)).map(|(read, objects)| {
                let object = &objects[0].object_name;
                let (http, token, login, identity, role) =
                    (&http, &token, &login, &identity, &role);
                let namespace = params.namespace.as_deref();
                async move {
                    let mut call = Call {
                        method: &read.method,
                        path: &read.path,
                        query: &read.query,
                        body: read.body.as_ref().map(|b| SecretBytes::from(b.as_bytes().to_vec())),
                        token: Some(token),
                        namespace,
                    };
                    let answer = match self.read(http, &call, identity, request.reuse).await {
                        // A token Vault no longer honours (revoked, expired early):
                        // log in again once, unless it was just issued.
                        Err(e) if e.status() == Some(StatusCode::FORBIDDEN) && !fresh => {
                            let (renewed, _) =
                                self.tokens.token(identity, Some(token), login).await?;
                            call.token = Some(&renewed);
                            http.send(&call).await
                        }
                        other => other,
                    };
                    let body = answer.map_err(|source| VaultError::Read {
                        object: (*object).to_owned(),
                        role: role.clone(),
                        source,
                    })?;
                    let response =
                        VaultResponse(GoJson::parse(&body).ok_or_else(|| VaultError::NotJson {
                            object: (*object).to_owned(),
                            path: read.path.clone(),
                        })?);
                    Ok::<_, VaultError>(response)
                }
            }),
        )
        .await;
        let mut responses = BTreeMap::new();
        let fetched = reads.keys().filter(|read| !unchanged.contains(*read));
        for (read, result) in fetched.zip(results) {
            responses.insert(*read, result?);
        }
        let key = self.version_key.get().await;
        let mut files = Vec::with_capacity(params.objects.len());
        let mut versions = Vec::with_capacity(params.objects.len());
        for object in &params.objects {
            let mode = match object.file_permission {
                0 => request.default_file_mode,
                mode => mode,
            };
            let Some(response) = responses.get(&object.read) else {
                // Unchanged: the held file and version stand.
                let held = held.get(object.object_name.as_str()).copied().unwrap_or_default();
                let contents =
                    request.current_files.get(&object.object_name).cloned().unwrap_or_default();
                versions.push(ObjectVersion {
                    id: object.object_name.clone(),
                    version: held.to_owned(),
                });
                files.push(SecretFile { path: object.object_name.clone(), mode, contents });
                continue;
            };
            let response = &response.0;
            if response["data"].is_null() {
                let warnings = response["warnings"]
                    .as_array()
                    .map(|w| w.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                return Err(VaultError::Empty { path: object.secret_path.clone(), warnings });
            }
            let contents = render(object, response)?;
            versions.push(ObjectVersion {
                id: object.object_name.clone(),
                version: version(key, &object.config_json, contents.expose()),
            });
            files.push(SecretFile { path: object.object_name.clone(), mode, contents });
        }
        self.remember_kv(&identity, &reads, &responses, &versions);
        Ok(MountResponse::new(files, versions))
    }
}

impl VaultProvider {
    /// Whether a KV v2 read can be skipped on this refresh: every object it
    /// serves is held at the version remembered for it, and the metadata
    /// names the KV version those were read at.
    async fn kv_unchanged(
        &self,
        refresh: &Refresh<'_>,
        read: &ReadKey,
        objects: &[&VaultObject],
    ) -> bool {
        let Refresh { http, params, request, held, identity, token } = *refresh;
        let Some(metadata) = kv_metadata_path(read) else { return false };
        let key = kv_key(identity, read, objects);
        let Some(remembered) = self.kv.lock().expect("kv lock").get(&key).cloned() else {
            return false;
        };
        let all_held = objects.iter().all(|o| {
            // An empty version (no HMAC key) says nothing about the configuration.
            let version = remembered.objects.get(&o.object_name).map(String::as_str);
            version.is_some_and(|v| !v.is_empty())
                && version == held.get(o.object_name.as_str()).copied()
                && request.current_files.contains_key(&o.object_name)
        });
        let refused = (identity.to_owned(), metadata.clone());
        let recently_refused = self
            .no_metadata
            .lock()
            .expect("metadata lock")
            .get(&refused)
            .is_some_and(|at| at.elapsed() < METADATA_RETRY);
        if !all_held || recently_refused {
            return false;
        }
        let call = Call {
            method: "GET",
            path: &metadata,
            query: "",
            body: None,
            token: Some(token),
            namespace: params.namespace.as_deref(),
        };
        match self.read(http, &call, identity, request.reuse).await {
            Ok(body) => current_version(&body) == Some(remembered.version),
            Err(e) => {
                tracing::debug!(path = %metadata, error = %e, "no KV v2 metadata; reading the data instead");
                let now = std::time::Instant::now();
                self.no_metadata.lock().expect("metadata lock").insert(refused, now);
                false
            }
        }
    }

    /// Remembers the KV version of each KV v2 read answered now.
    fn remember_kv(
        &self,
        identity: &str,
        reads: &BTreeMap<&ReadKey, Vec<&VaultObject>>,
        responses: &BTreeMap<&ReadKey, VaultResponse>,
        versions: &[ObjectVersion],
    ) {
        let made: HashMap<&str, &str> =
            versions.iter().map(|v| (v.id.as_str(), v.version.as_str())).collect();
        let mut kv = self.kv.lock().expect("kv lock");
        for (read, response) in responses {
            let Some(version) =
                kv_metadata_path(read).and(kv_version(&response.0["data"]["metadata"]["version"]))
            else {
                continue;
            };
            let objects = &reads[read];
            let made = objects
                .iter()
                .filter_map(|o| {
                    let v = made.get(o.object_name.as_str())?;
                    Some((o.object_name.clone(), (*v).to_owned()))
                })
                .collect();
            kv.insert(kv_key(identity, read, objects), KvHeld { version, objects: made });
        }
    }
}

/// What a refresh's version checks share.
#[derive(Clone, Copy)]
struct Refresh<'a> {
    http: &'a VaultHttp,
    params: &'a VaultParams,
    request: &'a MountRequest,
    /// The versions held, by object name.
    held: &'a HashMap<&'a str, &'a str>,
    identity: &'a str,
    token: &'a SecretBytes,
}

/// The identity, the path and the objects a read serves: two classes that
/// read one path for different objects are remembered apart.
fn kv_key(identity: &str, read: &ReadKey, objects: &[&VaultObject]) -> (String, String) {
    let names: Vec<&str> = objects.iter().map(|o| o.object_name.as_str()).collect();
    (identity.to_owned(), format!("{}\n{}", read.path, names.join("\n")))
}

/// A KV version number as the answer writes it.
fn kv_version(value: &GoJson) -> Option<u64> {
    match value {
        GoJson::Number(n) => n.parse().ok(),
        _ => None,
    }
}

/// `/v1/<mount>/metadata/<path>` for a plain KV v2 read of
/// `/v1/<mount>/data/<path>` (a GET with no query and no body); the mount is
/// what comes before the first `/data/`.
fn kv_metadata_path(read: &ReadKey) -> Option<String> {
    if read.method != "GET" || !read.query.is_empty() || read.body.is_some() {
        return None;
    }
    let (mount, path) = read.path.strip_prefix("/v1/")?.split_once("/data/")?;
    (!mount.is_empty() && !path.is_empty()).then(|| format!("/v1/{mount}/metadata/{path}"))
}

/// `data.current_version` of a KV v2 metadata answer.
fn current_version(body: &[u8]) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value["data"]["current_version"].as_u64()
}

/// Whether a response carries a lease (`lease_id`), as dynamic secrets do.
fn has_lease(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Lease {
        #[serde(default)]
        lease_id: String,
    }
    serde_json::from_slice::<Lease>(body).is_ok_and(|l| !l.lease_id.is_empty())
}

/// The class's parameters read with the rules of a mount, offline (`sscsi
/// check`), with the node's defaults for what the class leaves out.
pub fn check(parameters: &BTreeMap<String, String>) -> Result<(), ProviderError> {
    VaultParams::parse(parameters, &VaultDefaults::default()).map_err(VaultError::from)?;
    Ok(())
}

#[async_trait]
impl Provider for VaultProvider {
    fn name(&self) -> &str {
        NAME
    }

    async fn mount(&self, request: &MountRequest) -> Result<MountResponse, ProviderError> {
        self.fetch(request).await.map_err(ProviderError::from)
    }

    /// A KV v2 object whose version stands is taken from the volume.
    fn reads_mounted_files(&self, _: &MountRequest) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::has_lease;

    #[test]
    fn only_an_answer_with_a_lease_id_has_a_lease() {
        assert!(has_lease(br#"{"lease_id":"database/creds/app/abc","data":{}}"#));
        assert!(!has_lease(br#"{"lease_id":"","lease_duration":2764800,"data":{}}"#));
        assert!(!has_lease(br#"{"data":{"data":{"k":"v"}}}"#));
        assert!(!has_lease(b"not json"));
    }
}
