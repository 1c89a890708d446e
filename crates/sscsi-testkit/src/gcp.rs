//! Google Cloud for tests. [`DrongoServer`] runs PyPI's `drongo` emulator,
//! which serves the Secret Manager REST API (global resources). [`GcpServer`]
//! serves, following the public REST reference, what drongo lacks: the GKE
//! metadata server, the identity binding token exchange, IAM Credentials
//! `generateAccessToken`, regional Secret Manager and Parameter Manager.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::jwt::JwtVerifier;

/// `drongo server` on a free loopback port.
#[derive(Debug)]
pub struct DrongoServer {
    child: Child,
    port: u16,
}

impl DrongoServer {
    pub fn start() -> Self {
        let (child, port) = crate::process::start_on_free_port(
            "drongo",
            crate::process::PROVISION,
            |port| {
                let mut command = Command::new(crate::process::program("drongo"));
                command
                    .args(["server", "--host", "127.0.0.1", "--port", &port.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                command
            },
            |_| true,
        );
        Self { child, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates secret `id` in `project` if needed and adds a version holding
    /// `data`; returns the version's name.
    pub async fn add_version(&self, project: &str, id: &str, data: &[u8]) -> String {
        let base = self.url();
        // 409 when the secret exists, which is fine.
        let _ = post(
            &format!("{base}/v1/projects/{project}/secrets?secretId={id}"),
            json!({"replication": {"automatic": {}}}),
        )
        .await;
        let version = post(
            &format!("{base}/v1/projects/{project}/secrets/{id}:addVersion"),
            json!({"payload": {"data": STANDARD.encode(data)}}),
        )
        .await
        .expect("addVersion");
        version["name"].as_str().expect("a version name").to_owned()
    }
}

impl Drop for DrongoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn post(url: &str, body: Value) -> Result<Value, String> {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = axum::http::Request::post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

pub const PROJECT: &str = "test-project";
pub const CLUSTER_LOCATION: &str = "us-central1";
pub const CLUSTER_NAME: &str = "test-cluster";
/// The workload identity pool of [`PROJECT`].
pub const POOL: &str = "test-project.svc.id.goog";

#[derive(Debug, Default)]
struct State {
    verifier: Option<JwtVerifier>,
    /// Issued access tokens → who they stand for.
    tokens: HashMap<String, String>,
    exchanges: usize,
    impersonations: usize,
    node_tokens: usize,
    /// Google service account → Kubernetes subjects allowed to act as it.
    impersonators: HashMap<String, HashSet<String>>,
    /// Resource name (without version) → versions' payloads, oldest first.
    secrets: BTreeMap<String, Vec<Vec<u8>>>,
    parameters: BTreeMap<String, Vec<Vec<u8>>>,
    /// Regional `AccessSecretVersion` and `GetSecretVersion` calls answered.
    accesses: usize,
    version_reads: usize,
}

/// The Google endpoints drongo does not serve, over plain HTTP.
#[derive(Debug, Clone)]
pub struct GcpServer {
    url: String,
    state: Arc<Mutex<State>>,
}

impl GcpServer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let this = Self { url, state: Arc::default() };
        let handler = this.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let handler = handler.clone();
                async move { handler.handle(&method, &uri, &headers, &body) }
            },
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        this
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The identity provider of the test cluster, as GKE names it.
    pub fn provider(&self) -> String {
        format!(
            "https://container.googleapis.com/v1/projects/{PROJECT}/locations/{CLUSTER_LOCATION}/clusters/{CLUSTER_NAME}"
        )
    }

    /// The audience of the token exchange.
    pub fn audience(&self) -> String {
        format!("identitynamespace:{POOL}:{}", self.provider())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("gcp state")
    }

    /// Trust this issuer's service-account tokens.
    pub fn trust(&self, verifier: JwtVerifier) {
        self.state().verifier = Some(verifier);
    }

    /// Lets Kubernetes subject `system:serviceaccount:<ns>:<name>` act as `gsa`.
    pub fn allow_impersonation(&self, gsa: &str, subject: &str) {
        self.state().impersonators.entry(gsa.into()).or_default().insert(subject.into());
    }

    /// Token exchanges answered with a token.
    pub fn exchanges(&self) -> usize {
        self.state().exchanges
    }

    pub fn impersonations(&self) -> usize {
        self.state().impersonations
    }

    pub fn node_tokens(&self) -> usize {
        self.state().node_tokens
    }

    /// Regional secret payloads served (`AccessSecretVersion`).
    pub fn accesses(&self) -> usize {
        self.state().accesses
    }

    /// Regional secret versions described (`GetSecretVersion`).
    pub fn version_reads(&self) -> usize {
        self.state().version_reads
    }

    /// A new version of a regional secret (`projects/P/locations/L/secrets/S`);
    /// returns the version's name.
    pub fn add_secret_version(&self, secret: &str, data: &[u8]) -> String {
        let mut state = self.state();
        let versions = state.secrets.entry(secret.into()).or_default();
        versions.push(data.to_vec());
        format!("{secret}/versions/{}", versions.len())
    }

    /// A new version `v<n>` of a parameter (`projects/P/locations/L/parameters/X`).
    pub fn add_parameter_version(&self, parameter: &str, data: &[u8]) -> String {
        let mut state = self.state();
        let versions = state.parameters.entry(parameter.into()).or_default();
        versions.push(data.to_vec());
        format!("{parameter}/versions/v{}", versions.len())
    }

    fn issue(&self, state: &mut State, prefix: &str, subject: &str) -> String {
        let token = format!("{prefix}-{}", state.tokens.len() + 1);
        state.tokens.insert(token.clone(), subject.to_owned());
        token
    }

    fn handle(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
        let path = uri.path();
        let google_error = |status: StatusCode, message: &str| {
            let name = match status.as_u16() {
                400 => "INVALID_ARGUMENT",
                401 => "UNAUTHENTICATED",
                403 => "PERMISSION_DENIED",
                _ => "NOT_FOUND",
            };
            (
                status,
                axum::Json(
                    json!({"error": {"code": status.as_u16(), "message": message, "status": name}}),
                ),
            )
                .into_response()
        };
        if let Some(item) = path.strip_prefix("/computeMetadata/v1/") {
            if headers.get("metadata-flavor").and_then(|h| h.to_str().ok()) != Some("Google") {
                return (StatusCode::FORBIDDEN, "Missing Metadata-Flavor:Google header.")
                    .into_response();
            }
            return match item {
                "project/project-id" => PROJECT.into_response(),
                "instance/attributes/cluster-location" => CLUSTER_LOCATION.into_response(),
                "instance/attributes/cluster-name" => CLUSTER_NAME.into_response(),
                "instance/service-accounts/default/token" => {
                    let mut state = self.state();
                    state.node_tokens += 1;
                    let token = self.issue(&mut state, "node", "node");
                    axum::Json(
                        json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}),
                    )
                    .into_response()
                }
                _ => (StatusCode::NOT_FOUND, "not found").into_response(),
            };
        }
        if method == Method::POST && path == "/v1/identitybindingtoken" {
            let request: Value = serde_json::from_slice(body).unwrap_or_default();
            let mut state = self.state();
            let claims = state
                .verifier
                .as_ref()
                .and_then(|v| v.verify(request["subject_token"].as_str().unwrap_or_default()));
            let audience_ok = request["audience"] == self.audience();
            let pool_ok = claims.as_ref().is_some_and(|c| {
                c["aud"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|v| v == POOL || *v == self.audience()))
            });
            let grant_ok =
                request["grant_type"] == "urn:ietf:params:oauth:grant-type:token-exchange";
            let Some(claims) = claims.filter(|_| audience_ok && pool_ok && grant_ok) else {
                return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_grant", "error_description": "The subject token is invalid."}))).into_response();
            };
            state.exchanges += 1;
            let subject = claims["sub"].as_str().unwrap_or_default().to_owned();
            let token = self.issue(&mut state, "federated", &subject);
            return axum::Json(json!({"access_token": token, "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer", "expires_in": 3600})).into_response();
        }
        let mut state = self.state();
        let caller = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .and_then(|t| state.tokens.get(t))
            .cloned();
        let Some(caller) = caller else {
            return google_error(
                StatusCode::UNAUTHORIZED,
                "Request had invalid authentication credentials.",
            );
        };
        if let Some(rest) = path.strip_prefix("/v1/projects/-/serviceAccounts/") {
            let Some(gsa) = rest.strip_suffix(":generateAccessToken") else {
                return google_error(StatusCode::NOT_FOUND, "no such method");
            };
            if !state.impersonators.get(gsa).is_some_and(|allowed| allowed.contains(&caller)) {
                return google_error(
                    StatusCode::FORBIDDEN,
                    "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
                );
            }
            state.impersonations += 1;
            let token = self.issue(&mut state, "gsa", gsa);
            let expiry =
                (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600)).to_string();
            return axum::Json(json!({"accessToken": token, "expireTime": expiry})).into_response();
        }
        let name = path.trim_start_matches("/v1/");
        let (resource, action, store) = if let Some(n) = name.strip_suffix(":access") {
            (n, "access", &state.secrets)
        } else if let Some(n) = name.strip_suffix(":render") {
            (n, "render", &state.parameters)
        } else if name.contains("/secrets/") {
            // GetSecretVersion: the version's metadata, no payload.
            (name, "get", &state.secrets)
        } else {
            return google_error(StatusCode::NOT_FOUND, "no such method");
        };
        let Some((parent, version)) = resource.rsplit_once("/versions/") else {
            return google_error(StatusCode::NOT_FOUND, "no such resource");
        };
        let Some(versions) = store.get(parent) else {
            return google_error(StatusCode::NOT_FOUND, &format!("Resource [{parent}] not found."));
        };
        let index = match version {
            "latest" => versions.len(),
            v => v.trim_start_matches('v').parse().unwrap_or(0),
        };
        let Some(data) = index.checked_sub(1).and_then(|i| versions.get(i)) else {
            return google_error(
                StatusCode::NOT_FOUND,
                &format!("Version [{resource}] not found."),
            );
        };
        let data = STANDARD.encode(data);
        let version_name = format!("{parent}/versions/{index}");
        if action == "get" {
            state.version_reads += 1;
            return axum::Json(json!({"name": version_name, "state": "ENABLED"})).into_response();
        }
        if action == "access" {
            state.accesses += 1;
            axum::Json(
                json!({"name": format!("{parent}/versions/{index}"), "payload": {"data": data}}),
            )
            .into_response()
        } else {
            axum::Json(json!({"parameterVersion": format!("{parent}/versions/v{index}"), "payload": {"data": data}, "renderedPayload": data})).into_response()
        }
    }
}
