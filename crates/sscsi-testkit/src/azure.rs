//! Azure's AAD token endpoint and Key Vault REST API, served over TLS with a
//! test CA, following the public REST reference: client-credential grants
//! with a client secret or a federated client assertion; secrets, keys and
//! certificates by name and version; version lists with paging (`nextLink`);
//! the bearer challenge (401 with `WWW-Authenticate`); 403 for identities
//! without access; 429 with `Retry-After`. Hosts: `login.test` and
//! `<vault>.vault.test`, which clients resolve to [`AzureServer::addr`].
//!
//! The node's own endpoints, IMDS (`169.254.169.254`) and aad-pod-identity's
//! NMI (`localhost:2579`), are served over plain HTTP at
//! [`AzureServer::node_proxy`], which a client uses as its HTTP proxy.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use crate::jwt::JwtVerifier;
use crate::pki::TestCa;

pub const LOGIN_HOST: &str = "login.test";
/// The AKS token proxy's address (the API server's service name in a cluster).
pub const TOKEN_PROXY_HOST: &str = "kubernetes.test";
/// The cluster id in the double's certificate, as AKS API servers carry it.
pub const CLUSTER_ID: &str = "testcluster";
pub const VAULT_DNS_SUFFIX: &str = "vault.test";
/// A version list's page size, small so that tests page.
const PAGE: usize = 2;

#[derive(Debug, Clone)]
struct Version {
    id: String,
    created: i64,
    enabled: bool,
    /// The kind's fields besides the id and attributes.
    fields: Value,
}

#[derive(Debug, Default)]
struct State {
    verifier: Option<JwtVerifier>,
    /// (tenant, client id) → the subject whose tokens it accepts.
    federated: HashMap<(String, String), String>,
    /// (tenant, client id) → client secret.
    principals: HashMap<(String, String), String>,
    /// Access token → client id.
    tokens: HashMap<String, String>,
    token_requests: usize,
    vault_requests: usize,
    /// Vault → client ids allowed; a vault not listed allows every identity.
    grants: HashMap<String, HashSet<String>>,
    /// (vault, kind, name) → versions, oldest first.
    objects: BTreeMap<(String, String, String), Vec<Version>>,
    throttle: usize,
    /// How long each Key Vault answer takes.
    delay: std::time::Duration,
    next_version: u64,
    /// Client ids of the node's managed identities ("system" for system-assigned).
    node_identities: HashSet<String>,
    /// (namespace, pod) → client id, for NMI.
    pod_identities: HashMap<(String, String), String>,
    proxied: Vec<(String, String)>,
}

const WORKLOAD_AUDIENCE: &str = "api://AzureADTokenExchange";
/// What the AKS token proxy accepts in place of the workload-identity audience.
const BINDING_AUDIENCE: &str = "api://AKSIdentityBinding";

/// The TLS server name a connection asked for.
#[derive(Debug, Clone)]
struct Sni(String);

#[derive(Debug, Clone)]
pub struct AzureServer {
    addr: SocketAddr,
    node_addr: SocketAddr,
    ca_pem: String,
    state: Arc<Mutex<State>>,
}

impl AzureServer {
    pub async fn start() -> Self {
        let ca = TestCa::new("sscsi test CA");
        let cluster_name = format!("hcp-kubernetes.{CLUSTER_ID}.svc.cluster.local");
        let server = ca.issue(
            "azure test double",
            &[
                LOGIN_HOST,
                &format!("*.{VAULT_DNS_SUFFIX}"),
                TOKEN_PROXY_HOST,
                &cluster_name,
                "*.ests.aks",
            ],
        );
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![server.cert_der.into()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(server.key_der.into()),
        )
        .expect("the server certificate");
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let node = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let node_addr = node.local_addr().expect("local address");
        let this = Self { addr, node_addr, ca_pem: ca.cert_pem(), state: Arc::default() };
        let handler = this.clone();
        let node_app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let handler = handler.clone();
            async move { handler.node_endpoint(&uri, &headers) }
        });
        tokio::spawn(async move { axum::serve(node, node_app).await });
        let handler = this.clone();
        let app = axum::Router::new().fallback(
            move |axum::Extension(Sni(sni)): axum::Extension<Sni>,
                  method: Method,
                  uri: Uri,
                  headers: HeaderMap,
                  body: Bytes| {
                let handler = handler.clone();
                async move {
                    let delay = handler.state().delay;
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    handler.handle(sni, method, uri, headers, body)
                }
            },
        );
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let sni = tls.get_ref().1.server_name().unwrap_or_default().to_owned();
                    let app = app.layer(axum::Extension(Sni(sni)));
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        this
    }

    /// Where every host of this server resolves.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The host names a client must resolve to [`Self::addr`] for `vaults`.
    pub fn hosts(&self, vaults: &[&str]) -> Vec<(String, SocketAddr)> {
        let mut hosts =
            vec![(LOGIN_HOST.to_owned(), self.addr), (TOKEN_PROXY_HOST.to_owned(), self.addr)];
        hosts.extend(vaults.iter().map(|v| (format!("{v}.{VAULT_DNS_SUFFIX}"), self.addr)));
        hosts
    }

    /// `http://<addr>`: the proxy through which IMDS and NMI are reached.
    pub fn node_proxy(&self) -> String {
        format!("http://{}", self.node_addr)
    }

    /// A managed identity of the node (`None`: the system-assigned one).
    pub fn node_identity(&self, client_id: Option<&str>) {
        self.state().node_identities.insert(client_id.unwrap_or("system").to_owned());
    }

    /// An aad-pod-identity binding of a pod to a client id.
    pub fn pod_identity(&self, namespace: &str, pod: &str, client_id: &str) {
        self.state().pod_identities.insert((namespace.into(), pod.into()), client_id.into());
    }

    fn issue(&self, state: &mut State, client_id: &str) -> String {
        state.token_requests += 1;
        let token = format!("access-token-{}", state.token_requests);
        state.tokens.insert(token.clone(), client_id.to_owned());
        token
    }

    fn node_endpoint(&self, uri: &Uri, headers: &HeaderMap) -> Response {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
        let query: HashMap<String, String> =
            form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let resource = query.get("resource").cloned().unwrap_or_default();
        let expires_on = (jiff::Timestamp::now().as_second() + 3600).to_string();
        let mut state = self.state();
        match (host, uri.path()) {
            ("169.254.169.254", "/metadata/identity/oauth2/token") => {
                if headers.get("metadata").and_then(|h| h.to_str().ok()) != Some("true") {
                    return (StatusCode::BAD_REQUEST, "Required metadata header not specified")
                        .into_response();
                }
                let client_id = query.get("client_id").cloned().unwrap_or_else(|| "system".into());
                if !state.node_identities.contains(&client_id) {
                    return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_request", "error_description": "Identity not found"}))).into_response();
                }
                let token = self.issue(&mut state, &client_id);
                axum::Json(
                    json!({"access_token": token, "client_id": client_id, "expires_in": "3599",
                    "expires_on": expires_on, "resource": resource, "token_type": "Bearer"}),
                )
                .into_response()
            }
            ("localhost:2579", "/host/token/") => {
                let header = |name: &str| {
                    headers.get(name).and_then(|h| h.to_str().ok()).unwrap_or_default().to_owned()
                };
                let Some(client_id) =
                    state.pod_identities.get(&(header("podns"), header("podname"))).cloned()
                else {
                    return (StatusCode::FORBIDDEN, "no AzureIdentity matches the pod")
                        .into_response();
                };
                let token = self.issue(&mut state, &client_id);
                axum::Json(json!({"token": {"access_token": token, "expires_in": "3599", "expires_on": expires_on,
                    "resource": resource, "token_type": "Bearer"}, "clientid": client_id}))
                .into_response()
            }
            _ => (StatusCode::NOT_FOUND, format!("no node endpoint {host}{}", uri.path()))
                .into_response(),
        }
    }

    /// The CA that signed the server's certificate, as PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A go-autorest environment file's content for this server's cloud.
    pub fn environment_json(&self) -> String {
        json!({
            "name": "AzureStackCloud",
            "activeDirectoryEndpoint": format!("https://{LOGIN_HOST}/"),
            "keyVaultEndpoint": format!("https://{VAULT_DNS_SUFFIX}/"),
            "keyVaultDNSSuffix": VAULT_DNS_SUFFIX,
        })
        .to_string()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("azure state")
    }

    /// Trust tokens of this issuer as client assertions.
    pub fn trust(&self, verifier: JwtVerifier) {
        self.state().verifier = Some(verifier);
    }

    /// Workload identity: `client_id` in `tenant` accepts assertions for `subject`.
    pub fn federate(&self, tenant: &str, client_id: &str, subject: &str) {
        self.state().federated.insert((tenant.into(), client_id.into()), subject.into());
    }

    /// A service principal with a client secret.
    pub fn principal(&self, tenant: &str, client_id: &str, secret: &str) {
        self.state().principals.insert((tenant.into(), client_id.into()), secret.into());
    }

    /// Only these client ids may read `vault`.
    pub fn grant(&self, vault: &str, client_ids: &[&str]) {
        self.state()
            .grants
            .insert(vault.into(), client_ids.iter().map(|c| (*c).to_owned()).collect());
    }

    /// The next `n` Key Vault requests are answered 429.
    pub fn throttle(&self, n: usize) {
        self.state().throttle = n;
    }

    /// Every answer takes `delay` from now on.
    pub fn delay(&self, delay: std::time::Duration) {
        self.state().delay = delay;
    }

    /// Token requests answered with a token.
    pub fn token_requests(&self) -> usize {
        self.state().token_requests
    }

    /// Key Vault requests received (challenges and refusals included).
    pub fn vault_requests(&self) -> usize {
        self.state().vault_requests
    }

    fn add(&self, vault: &str, kind: &str, name: &str, fields: Value) -> String {
        let mut state = self.state();
        state.next_version += 1;
        let id = format!("{:032x}", state.next_version);
        // Strictly increasing creation times, as versions made in one second still sort.
        let created = 1_700_000_000 + state.next_version as i64;
        state.objects.entry((vault.into(), kind.into(), name.into())).or_default().push(Version {
            id: id.clone(),
            created,
            enabled: true,
            fields,
        });
        id
    }

    /// A new version of a secret; returns its version id.
    pub fn set_secret(&self, vault: &str, name: &str, value: &str) -> String {
        self.add(vault, "secrets", name, json!({"value": value}))
    }

    /// An RSA key (modulus and exponent, big-endian).
    pub fn set_rsa_key(&self, vault: &str, name: &str, n: &[u8], e: &[u8]) -> String {
        let fields =
            json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e)});
        self.add(vault, "keys", name, fields)
    }

    /// An EC key on `crv` (`P-256`, ...).
    pub fn set_ec_key(&self, vault: &str, name: &str, crv: &str, x: &[u8], y: &[u8]) -> String {
        let fields = json!({"kty": "EC", "crv": crv, "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)});
        self.add(vault, "keys", name, fields)
    }

    /// A symmetric key, which has no public half.
    pub fn set_oct_key(&self, vault: &str, name: &str) -> String {
        self.add(vault, "keys", name, json!({"kty": "oct"}))
    }

    /// A certificate, as Key Vault keeps one: the certificate (its leaf's
    /// DER) and a secret of the same name and version holding the PKCS#12
    /// archive, or PEM when `pem` is given.
    pub fn import_certificate(
        &self,
        vault: &str,
        name: &str,
        leaf_der: &[u8],
        pfx: &[u8],
        pem: Option<&str>,
    ) -> String {
        let version =
            self.add(vault, "certificates", name, json!({"cer": STANDARD.encode(leaf_der)}));
        let (value, content_type) = match pem {
            Some(pem) => (pem.to_owned(), "application/x-pem-file"),
            None => (STANDARD.encode(pfx), "application/x-pkcs12"),
        };
        let host = format!("https://{vault}.{VAULT_DNS_SUFFIX}");
        let fields = json!({"value": value, "contentType": content_type, "kid": format!("{host}/keys/{name}/{version}"), "managed": true});
        let mut state = self.state();
        let created = 1_700_000_000 + state.next_version as i64;
        state
            .objects
            .entry((vault.into(), "secrets".into(), name.into()))
            .or_default()
            .push(Version { id: version.clone(), created, enabled: true, fields });
        version
    }

    /// Disables one version of an object (`kind`: secrets, keys, certificates).
    pub fn disable(&self, vault: &str, kind: &str, name: &str, version: &str) {
        let mut state = self.state();
        let versions =
            state.objects.get_mut(&(vault.into(), kind.into(), name.into())).expect("object");
        versions.iter_mut().filter(|v| v.id == version).for_each(|v| v.enabled = false);
    }

    fn handle(
        &self,
        sni: String,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        if host == LOGIN_HOST {
            return self.token(&method, uri.path(), &body, WORKLOAD_AUDIENCE);
        }
        if host == TOKEN_PROXY_HOST {
            self.state().proxied.push((
                sni,
                headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
            ));
            return self.token(&method, uri.path(), &body, BINDING_AUDIENCE);
        }
        let Some(vault) = host.strip_suffix(&format!(".{VAULT_DNS_SUFFIX}")).map(str::to_owned)
        else {
            return (StatusCode::NOT_FOUND, "unknown host").into_response();
        };
        self.vault(&vault, &host, &method, &uri, &headers)
    }

    /// Token requests through the token proxy: (TLS server name, Host header).
    pub fn proxied(&self) -> Vec<(String, String)> {
        self.state().proxied.clone()
    }

    fn token(&self, method: &Method, path: &str, body: &[u8], audience: &str) -> Response {
        let refuse = |status: StatusCode, error: &str, description: &str| {
            (status, axum::Json(json!({"error": error, "error_description": description})))
                .into_response()
        };
        let tenant = path.trim_matches('/').split('/').next().unwrap_or_default().to_owned();
        if method != Method::POST || !path.ends_with("/oauth2/v2.0/token") {
            return refuse(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
        }
        let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
        let get = |k: &str| form.get(k).cloned().unwrap_or_default();
        if get("grant_type") != "client_credentials" {
            return refuse(StatusCode::BAD_REQUEST, "unsupported_grant_type", "AADSTS70003");
        }
        if !get("scope").ends_with("/.default") {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                "AADSTS70011: The provided value for the input parameter 'scope' is not valid.",
            );
        }
        let client_id = get("client_id");
        let key = (tenant, client_id.clone());
        let mut state = self.state();
        let authenticated = if let Some(assertion) = form.get("client_assertion") {
            let claims = state.verifier.as_ref().and_then(|v| v.verify(assertion));
            let audience_ok = claims.as_ref().is_some_and(|c| {
                c["aud"].as_array().is_some_and(|a| a.iter().any(|v| v == audience))
            });
            audience_ok
                && claims.as_ref().and_then(|c| c["sub"].as_str())
                    == state.federated.get(&key).map(String::as_str)
        } else {
            form.get("client_secret").is_some_and(|s| state.principals.get(&key) == Some(s))
        };
        if !authenticated {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "AADSTS700213: No matching federated identity record found for presented assertion subject, or invalid client secret.",
            );
        }
        let token = self.issue(&mut state, &client_id);
        axum::Json(json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}))
            .into_response()
    }

    fn vault(
        &self,
        vault: &str,
        host: &str,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Response {
        let kv_error = |status: StatusCode, code: &str, message: String| {
            (status, axum::Json(json!({"error": {"code": code, "message": message}})))
                .into_response()
        };
        let mut state = self.state();
        state.vault_requests += 1;
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "));
        let Some(client_id) = bearer.and_then(|t| state.tokens.get(t)).cloned() else {
            let challenge = format!(
                "Bearer authorization=\"https://{LOGIN_HOST}/tenant\", resource=\"https://{VAULT_DNS_SUFFIX}\""
            );
            return Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header(header::WWW_AUTHENTICATE, challenge)
                .body(Body::from(r#"{"error":{"code":"Unauthorized","message":"AKV10000: Request is missing a Bearer or PoP token."}}"#))
                .expect("a response");
        };
        if state.throttle > 0 {
            state.throttle -= 1;
            return Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header(header::RETRY_AFTER, "1")
                .body(Body::from(r#"{"error":{"code":"Throttled","message":"Rate limit is exceeded. Try again in 1 seconds."}}"#))
                .expect("a response");
        }
        if state.grants.get(vault).is_some_and(|allowed| !allowed.contains(&client_id)) {
            return kv_error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "The user, group or application 'appid={client_id}' does not have get permission on key vault '{vault}'."
                ),
            );
        }
        if method != Method::GET {
            return kv_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "BadParameter",
                "only GET is served".into(),
            );
        }
        let parts: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
        let (kind, name, rest) = match parts.as_slice() {
            [kind, name] => (*kind, *name, None),
            [kind, name, rest] => (*kind, *name, Some(*rest)),
            _ => {
                return kv_error(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("no route {}", uri.path()),
                );
            }
        };
        let not_found = |what: &str| {
            let (code, noun) = match kind {
                "keys" => ("KeyNotFound", "key"),
                "certificates" => ("CertificateNotFound", "certificate"),
                _ => ("SecretNotFound", "secret"),
            };
            kv_error(
                StatusCode::NOT_FOUND,
                code,
                format!("A {noun} with (name/id) {what} was not found in this key vault."),
            )
        };
        let Some(versions) = state.objects.get(&(vault.into(), kind.into(), name.into())) else {
            return not_found(name);
        };
        let base = format!("https://{host}/{kind}/{name}");
        if rest == Some("versions") {
            let skip: usize = uri
                .query()
                .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "$skiptoken"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let page: Vec<Value> = versions
                .iter()
                .skip(skip)
                .take(PAGE)
                .map(|v| {
                    let mut item = json!({"attributes": attributes(v)});
                    let id = format!("{base}/{}", v.id);
                    item[if kind == "keys" { "kid" } else { "id" }] = json!(id);
                    item
                })
                .collect();
            let mut answer = json!({"value": page});
            if skip + PAGE < versions.len() {
                answer["nextLink"] =
                    json!(format!("{base}/versions?api-version=7.6&$skiptoken={}", skip + PAGE));
            }
            return axum::Json(answer).into_response();
        }
        let version = match rest {
            None | Some("") => versions.last(),
            Some(wanted) => versions.iter().find(|v| v.id == wanted),
        };
        let Some(version) = version else {
            return not_found(&format!("{name}/{}", rest.unwrap_or_default()));
        };
        if !version.enabled {
            return kv_error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("Operation get is not allowed on a disabled {kind}."),
            );
        }
        let id = format!("{base}/{}", version.id);
        let answer = match kind {
            "keys" => {
                let mut key = version.fields.clone();
                key["kid"] = json!(id);
                json!({"key": key, "attributes": attributes(version)})
            }
            _ => {
                let mut answer = version.fields.clone();
                answer["id"] = json!(id);
                answer["attributes"] = attributes(version);
                answer
            }
        };
        axum::Json(answer).into_response()
    }
}

fn attributes(v: &Version) -> Value {
    json!({"enabled": v.enabled, "created": v.created, "updated": v.created, "recoveryLevel": "Recoverable+Purgeable"})
}
