//! The `gcp` provider: parameters → access token (cached per identity) →
//! every resource read concurrently → files and versions; any failure fails
//! the mount and lists every failure.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use futures::FutureExt;
use futures::future::BoxFuture;
use google_cloud_auth::credentials::{
    CacheableResource, Credentials, CredentialsProvider, EntityTag,
};
use google_cloud_secretmanager_v1::client::SecretManagerService;
use sscsi_core::{
    ErrorCode, MountRequest, MountResponse, ObjectVersion, Provider, ProviderError,
    ProviderFailure, SecretBytes, SecretFile,
};

use sscsi_provider_kit::{BackendStats, CallStats, Classified, Coalescer};

use crate::auth::{Access, Auth, AuthEndpoints, AuthError, WorkloadSettings, bearer};
use crate::extract::{json_key, yaml_key};
use crate::params::{self, Extract, GcpParams, ParamsError, SecretSpec};
use crate::resource::Resource;

pub const NAME: &str = "gcp";

#[derive(Debug, thiserror::Error)]
pub enum GcpError {
    #[error(transparent)]
    Params(#[from] ParamsError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Every resource that failed, each with its reason.
    #[error("{}", .0.iter().map(|f| format!("{}: {}", f.resource, f.message)).collect::<Vec<_>>().join(", "))]
    Fetch(Vec<Failure>),
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub resource: String,
    pub code: ErrorCode,
    pub message: String,
}

/// For the metrics: a failed call's outcome by the code it was given.
impl Classified for Failure {
    fn failure(&self) -> sscsi_provider_kit::Failure {
        use sscsi_provider_kit::Failure as F;
        match self.code {
            ErrorCode::NotFound => F::NotFound,
            ErrorCode::PermissionDenied => F::Denied,
            ErrorCode::Unauthenticated => F::Unauthenticated,
            ErrorCode::ResourceExhausted => F::Throttled,
            ErrorCode::Unavailable | ErrorCode::DeadlineExceeded | ErrorCode::Internal => {
                F::Unavailable
            }
            ErrorCode::InvalidArgument => F::Invalid,
            ErrorCode::FailedPrecondition => F::Rejected,
        }
    }
}

impl ProviderFailure for GcpError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Params(_) => ErrorCode::InvalidArgument,
            Self::Auth(_) => ErrorCode::PermissionDenied,
            // One kind of failure keeps its code; a mix is Internal, as upstream answers.
            Self::Fetch(failures) => match failures.as_slice() {
                [first, rest @ ..] if rest.iter().all(|f| f.code == first.code) => first.code,
                _ => ErrorCode::Internal,
            },
        }
    }
}

/// Where the APIs are; the defaults are Google's.
#[derive(Debug, Clone)]
pub struct GcpEndpoints {
    pub secret_manager: String,
    /// Every region's Secret Manager and Parameter Manager at this URL (a
    /// test server), instead of `https://<api>.<location>.rep.googleapis.com`.
    pub regional: Option<String>,
    pub parameter_manager: String,
    pub auth: AuthEndpoints,
}

impl Default for GcpEndpoints {
    fn default() -> Self {
        Self {
            secret_manager: "https://secretmanager.googleapis.com".into(),
            regional: None,
            parameter_manager: "https://parametermanager.googleapis.com".into(),
            auth: AuthEndpoints::default(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct GcpOptions {
    /// Allow `auth: provider-adc`, the driver's own identity.
    pub allow_node_identity: bool,
    /// Honour nodePublishSecretRef's `key.json` (upstream's `ALLOW_NODE_PUBLISH_SECRET`).
    pub allow_key_json: bool,
    pub workload: WorkloadSettings,
    pub endpoints: GcpEndpoints,
}

/// The bearer token a Secret Manager client sends; replaced as it renews.
#[derive(Debug, Clone, Default)]
struct Bearer(Arc<Mutex<SecretBytes>>);

impl CredentialsProvider for Bearer {
    async fn headers(
        &self,
        _: http::Extensions,
    ) -> Result<CacheableResource<http::HeaderMap>, google_cloud_auth::errors::CredentialsError>
    {
        let token = self.0.lock().expect("bearer lock").clone();
        let mut value = http::HeaderValue::from_str(&bearer(&token)).map_err(|_| {
            google_cloud_auth::errors::CredentialsError::from_msg(
                false,
                "the access token is not a header value",
            )
        })?;
        value.set_sensitive(true);
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value);
        Ok(CacheableResource::New { entity_tag: EntityTag::new(), data: headers })
    }

    async fn universe_domain(&self) -> Option<String> {
        None
    }
}

type Read = Result<(SecretBytes, String), Failure>;

pub struct GcpProvider {
    options: GcpOptions,
    http: reqwest::Client,
    auth: Auth,
    /// Secret Manager clients by (endpoint, identity), with their bearer.
    clients: Arc<Clients>,
    /// Reads by (identity, resource), shared by the mounts that ask.
    reads: Arc<Coalescer<Read>>,
    /// Version checks of a refresh, likewise.
    checks: Arc<Coalescer<Result<String, Failure>>>,
    /// Where Secret Manager and Parameter Manager calls are counted.
    stats: CallStats,
}

/// One object of a mount.
enum Object {
    /// The mounted file's bytes stand: the backend names the version held.
    Unchanged(SecretBytes, String),
    /// The payload read, and the version it is.
    Read(SecretBytes, String),
}

impl std::fmt::Debug for GcpProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpProvider").field("options", &self.options).finish_non_exhaustive()
    }
}

impl GcpProvider {
    pub fn new(options: GcpOptions, kube: Option<kube::Client>) -> Self {
        let http = reqwest::Client::new();
        let auth =
            Auth::new(http.clone(), options.endpoints.auth.clone(), options.workload.clone(), kube);
        Self {
            options,
            http,
            auth,
            clients: Default::default(),
            reads: Arc::default(),
            checks: Arc::default(),
            stats: CallStats::default(),
        }
    }

    /// Counts calls, tokens and shared reads in `stats` (before any mount).
    pub fn with_stats(mut self, stats: &BackendStats) -> Self {
        self.stats = stats.provider(NAME);
        self.auth.count_in(self.stats.clone());
        self.reads = Arc::new(Coalescer::new().counted_in(self.stats.clone()));
        self.checks = Arc::new(Coalescer::new().counted_in(self.stats.clone()));
        self
    }

    /// The mount's access token, by its `auth`.
    async fn access(&self, params: &GcpParams, request: &MountRequest) -> Result<Access, GcpError> {
        Ok(match &params.auth {
            params::Auth::PodAdc => self.auth.workload(request).await?,
            params::Auth::ProviderAdc if !self.options.allow_node_identity => {
                return Err(AuthError::NodeIdentity.into());
            }
            params::Auth::ProviderAdc => self.auth.node().await?,
            params::Auth::KeyJson(json) => key_json(json).await?,
        })
    }

    async fn fetch(&self, request: &MountRequest) -> Result<MountResponse, GcpError> {
        let params =
            GcpParams::parse(&request.parameters, &request.secrets, self.options.allow_key_json)?;
        let access = self.access(&params, request).await?;
        let reads = params.secrets.iter().map(|spec| self.object(spec, &access, request));
        let results = futures::future::join_all(reads).await;
        let mut files = Vec::new();
        let mut versions = Vec::new();
        let mut failures = Vec::new();
        for (spec, result) in params.secrets.iter().zip(results) {
            let extracted = result.and_then(|object| {
                let (payload, version) = match object {
                    // The mounted file is what the extraction gave before.
                    Object::Unchanged(contents, version) => return Ok((contents, version)),
                    Object::Read(payload, version) => (payload, version),
                };
                let contents = match spec.extract() {
                    None => Ok(payload),
                    Some(Extract::Json(key)) => json_key(payload.expose(), key),
                    Some(Extract::Yaml(key)) => yaml_key(payload.expose(), key),
                };
                contents.map(|c| (c, version)).map_err(|e| Failure {
                    resource: spec.resource_name.clone(),
                    code: ErrorCode::FailedPrecondition,
                    message: e.to_string(),
                })
            });
            match extracted {
                Ok((contents, version)) => {
                    versions.push(ObjectVersion { id: spec.resource_name.clone(), version });
                    let mode = spec.mode.unwrap_or(request.default_file_mode);
                    files.push(SecretFile { path: spec.path.clone(), mode, contents });
                }
                Err(failure) => failures.push(failure),
            }
        }
        if !failures.is_empty() {
            return Err(GcpError::Fetch(failures));
        }
        Ok(MountResponse::new(files, versions))
    }

    /// One object: on a refresh of a Secret Manager version that holds its
    /// mounted version and file, the version's metadata first (`latest`
    /// resolved to a number; a numbered version is immutable and needs no
    /// call), and no `access` when it names the version held. Parameter
    /// Manager versions are rendered every time: what they reference may
    /// change under the same version.
    async fn object(
        &self,
        spec: &SecretSpec,
        access: &Access,
        request: &MountRequest,
    ) -> Result<Object, Failure> {
        let held = request
            .current_versions
            .iter()
            .find(|v| v.id == spec.resource_name)
            .zip(request.current_files.get(&spec.path));
        let (Resource::Secret { .. }, Some((held, contents))) = (&spec.resource, held) else {
            let (payload, version) = self.shared_read(spec, access, request.reuse).await?;
            return Ok(Object::Read(payload, version));
        };
        let pinned =
            spec.resource_name.rsplit('/').next().is_some_and(|v| v.parse::<u64>().is_ok());
        let current = if pinned {
            spec.resource_name.clone()
        } else {
            self.shared_check(spec, access, request.reuse).await?
        };
        if current == held.version {
            return Ok(Object::Unchanged(contents.clone(), current));
        }
        let (payload, version) = self.shared_read(spec, access, request.reuse).await?;
        Ok(Object::Read(payload, version))
    }

    /// The version name a Secret Manager resource resolves to now
    /// (`GetSecretVersion`, no payload), shared as reads are.
    async fn shared_check(
        &self,
        spec: &SecretSpec,
        access: &Access,
        reuse: Duration,
    ) -> Result<String, Failure> {
        let key = serde_json::json!([access.key, "version", spec.resource_name]).to_string();
        let (clients, endpoint) = (self.clients.clone(), self.secret_endpoint(spec));
        let (name, access) = (spec.resource_name.clone(), access.clone());
        // The client is looked up only when the check is made, not when an
        // answer is shared.
        let check = async move {
            let failed = |code, message| Failure { resource: name.clone(), code, message };
            let client = clients
                .get(&endpoint, &access)
                .await
                .map_err(|message| failed(ErrorCode::Internal, message))?;
            let version =
                client.get_secret_version().set_name(&name).send().await.map_err(|e| {
                    let code =
                        e.status().map_or(ErrorCode::Unavailable, |s| status_code(s.code as i32));
                    failed(code, e.to_string())
                })?;
            Ok(version.name)
        };
        let (stats, budget_key) = (self.stats.clone(), self.secret_endpoint(spec));
        let check = async move { stats.timed(&budget_key, "GetSecretVersion", check).await };
        self.checks.read(key, reuse, move || check).await.0
    }

    fn secret_endpoint(&self, spec: &SecretSpec) -> String {
        match (&spec.resource, &self.options.endpoints.regional) {
            (Resource::Secret { location: Some(_) }, Some(url)) => url.clone(),
            (Resource::Secret { location: Some(l) }, None) => {
                format!("https://secretmanager.{l}.rep.googleapis.com")
            }
            _ => self.options.endpoints.secret_manager.clone(),
        }
    }

    /// One read per (identity, resource), however many mounts ask for it
    /// (see [`Coalescer`]).
    async fn shared_read(&self, spec: &SecretSpec, access: &Access, reuse: Duration) -> Read {
        let key = serde_json::json!([access.key, spec.resource_name]).to_string();
        let operation = match spec.resource {
            Resource::Secret { .. } => "AccessSecretVersion",
            Resource::Parameter { .. } => "RenderParameterVersion",
        };
        let read = || {
            let (stats, read) = (self.stats.clone(), self.read(spec.clone(), access.clone()));
            let endpoint = match spec.resource {
                Resource::Secret { .. } => self.secret_endpoint(spec),
                Resource::Parameter { .. } => self.options.endpoints.parameter_manager.clone(),
            };
            async move { stats.timed(&endpoint, operation, read).await }
        };
        self.reads.read(key, reuse, read).await.0
    }

    /// The read of one resource, ready to run; its client is looked up when
    /// it runs.
    fn read(&self, spec: SecretSpec, access: Access) -> BoxFuture<'static, Read> {
        match &spec.resource {
            Resource::Secret { .. } => {
                let (clients, endpoint) = (self.clients.clone(), self.secret_endpoint(&spec));
                let name = spec.resource_name;
                async move {
                    let failed = |code, message| Failure { resource: name.clone(), code, message };
                    let client = clients
                        .get(&endpoint, &access)
                        .await
                        .map_err(|message| failed(ErrorCode::Internal, message))?;
                    let response =
                        client.access_secret_version().set_name(&name).send().await.map_err(
                            |e| {
                                let code = e
                                    .status()
                                    .map_or(ErrorCode::Unavailable, |s| status_code(s.code as i32));
                                failed(code, e.to_string())
                            },
                        )?;
                    let data = response.payload.map(|p| p.data.to_vec()).unwrap_or_default();
                    Ok((SecretBytes::from(data), response.name))
                }
                .boxed()
            }
            Resource::Parameter { location } => {
                let base = match (location, &self.options.endpoints.regional) {
                    (None, _) => self.options.endpoints.parameter_manager.clone(),
                    (Some(_), Some(url)) => url.clone(),
                    (Some(l), None) => format!("https://parametermanager.{l}.rep.googleapis.com"),
                };
                let (http, name) = (self.http.clone(), spec.resource_name);
                async move { render(&http, &base, &name, &access.token).await }.boxed()
            }
        }
    }
}

/// Secret Manager clients by (endpoint, identity), each with the bearer it
/// sends, updated to the caller's token whenever one is handed out.
#[derive(Default)]
struct Clients(tokio::sync::Mutex<HashMap<(String, String), (SecretManagerService, Bearer)>>);

impl Clients {
    async fn get(&self, endpoint: &str, access: &Access) -> Result<SecretManagerService, String> {
        let mut clients = self.0.lock().await;
        let key = (endpoint.to_owned(), access.key.clone());
        if let Some((client, bearer)) = clients.get(&key) {
            *bearer.0.lock().expect("bearer lock") = access.token.clone();
            return Ok(client.clone());
        }
        let bearer = Bearer::default();
        *bearer.0.lock().expect("bearer lock") = access.token.clone();
        let client = SecretManagerService::builder()
            .with_endpoint(endpoint)
            .with_credentials(Credentials::from(bearer.clone()))
            .build()
            .await
            .map_err(|e| format!("Secret Manager client for {endpoint}: {e}"))?;
        clients.insert(key, (client.clone(), bearer));
        Ok(client)
    }
}

/// Parameter Manager `RenderParameterVersion` over REST: the rendered payload
/// (secret references resolved by the service) and the version's name.
async fn render(http: &reqwest::Client, base: &str, name: &str, token: &SecretBytes) -> Read {
    let failed =
        |code: ErrorCode, message: String| Failure { resource: name.to_owned(), code, message };
    let response = http
        .get(format!("{base}/v1/{name}:render"))
        .header("authorization", bearer(token))
        .send()
        .await
        .map_err(|e| failed(ErrorCode::Unavailable, e.to_string()))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| failed(ErrorCode::Unavailable, e.to_string()))?;
    let body = SecretBytes::from(body.to_vec());
    let json: serde_json::Value = serde_json::from_slice(body.expose()).unwrap_or_default();
    if !status.is_success() {
        let message = json["error"]["message"].as_str().unwrap_or("no message").to_owned();
        return Err(failed(http_code(status.as_u16()), format!("{} {message}", status.as_u16())));
    }
    let data = base64::engine::general_purpose::STANDARD
        .decode(json["renderedPayload"].as_str().unwrap_or_default())
        .map_err(|_| failed(ErrorCode::Internal, "the rendered payload is not base64".into()))?;
    let version = json["parameterVersion"].as_str().unwrap_or(name).to_owned();
    Ok((SecretBytes::from(data), version))
}

/// A Google credentials file from nodePublishSecretRef.
async fn key_json(json: &SecretBytes) -> Result<Access, AuthError> {
    let failed =
        |e: String| AuthError::Other(format!("unable to generate credentials from key.json: {e}"));
    let value: serde_json::Value =
        serde_json::from_slice(json.expose()).map_err(|_| failed("not JSON".into()))?;
    if value["type"] != "service_account" {
        return Err(failed(format!("credentials of type {} are not supported", value["type"])));
    }
    let credentials = google_cloud_auth::credentials::service_account::Builder::new(value)
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let headers = match credentials
        .headers(http::Extensions::new())
        .await
        .map_err(|e| failed(e.to_string()))?
    {
        CacheableResource::New { data, .. } => data,
        CacheableResource::NotModified => return Err(failed("no headers".into())),
    };
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| failed("no authorization".into()))?;
    let token = value.to_str().unwrap_or_default().trim_start_matches("Bearer ").to_owned();
    // A credentials file is its own identity; its digest names it.
    Ok(Access {
        key: format!("key.json/{}", sscsi_core::content_digest(json.expose())),
        token: SecretBytes::from(token),
    })
}

fn status_code(code: i32) -> ErrorCode {
    // google.rpc.Code numbers.
    match code {
        3 => ErrorCode::InvalidArgument,
        5 => ErrorCode::NotFound,
        7 => ErrorCode::PermissionDenied,
        8 => ErrorCode::ResourceExhausted,
        9 => ErrorCode::FailedPrecondition,
        16 => ErrorCode::Unauthenticated,
        4 => ErrorCode::DeadlineExceeded,
        14 => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    }
}

fn http_code(status: u16) -> ErrorCode {
    sscsi_provider_kit::Failure::classify(Some(status), None).code()
}

/// The class's parameters read with the rules of a mount, offline (`sscsi
/// check`), as for a volume without a nodePublishSecretRef.
pub fn check(parameters: &BTreeMap<String, String>) -> Result<(), ProviderError> {
    GcpParams::parse(parameters, &BTreeMap::new(), false).map_err(GcpError::from)?;
    Ok(())
}

#[async_trait]
impl Provider for GcpProvider {
    fn name(&self) -> &str {
        NAME
    }

    async fn mount(&self, request: &MountRequest) -> Result<MountResponse, ProviderError> {
        self.fetch(request).await.map_err(ProviderError::from)
    }

    /// An unchanged Secret Manager version's file is taken from the volume.
    fn reads_mounted_files(&self, _: &MountRequest) -> bool {
        true
    }
}
