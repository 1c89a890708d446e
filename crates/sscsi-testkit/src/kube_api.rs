//! A small, honest Kubernetes API server for tests.
//!
//! It serves the REST paths kube's client uses (`/api/v1/...` and
//! `/apis/<group>/<version>/...`) for any resource, with what sscsi needs:
//! get, list and watch (resourceVersion, label and field selectors), create,
//! update (replace), JSON merge patch and server-side apply patch, delete,
//! the status subresource, TokenRequest (signed JWTs) and TokenReview of the tokens it signed. Like the real server it refuses what is wrong: create of
//! an existing object is 409 AlreadyExists, an update with a stale
//! resourceVersion is 409 Conflict, a missing object is 404 NotFound, and
//! errors come as `Status` objects; `metadata.generation` moves with the
//! spec; a write that changes nothing is no write; deleting an object
//! deletes what it alone owns (the garbage collector's background policy).
//! Not modelled: authentication, admission, schema validation, subresources
//! other than `status` and `token`, strategic merge patch (415, as for
//! custom resources), and server-side apply's field ownership (an apply is
//! a merge patch that creates).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// Where an object lives: API group ("" for core), resource plural, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    group: String,
    resource: String,
    namespace: String,
    name: String,
}

#[derive(Debug, Clone)]
struct Change {
    kind: &'static str,
    group: String,
    resource: String,
    object: Value,
    rv: u64,
}

#[derive(Debug, Default)]
struct State {
    /// (method, resource) → how many more such requests fail, and with what.
    failures: BTreeMap<(String, String), (u32, StatusCode)>,
    /// (method, resource) → requests seen.
    requests: BTreeMap<(String, String), u32>,
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<Change>,
    uid: u64,
}

/// A running API server double. Dropping it stops nothing; the task ends
/// with the test's runtime.
#[derive(Debug, Clone)]
pub struct ApiServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    changes: broadcast::Sender<Change>,
    signer: Arc<crate::jwt::JwtSigner>,
}

impl ApiServer {
    pub async fn start() -> Self {
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the API double");
        let addr = listener.local_addr().expect("local address");
        let (changes, _) = broadcast::channel(16384);
        let signer = Arc::new(crate::jwt::JwtSigner::new());
        let server = Self { addr, state: Arc::default(), changes, signer };
        let handler = server.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let handler = handler.clone();
                async move { handler.handle(method, uri, headers, body).await }
            },
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        server
    }

    /// The key this server signs service-account tokens with (TokenRequest)
    /// and checks them against (TokenReview).
    pub fn signer(&self) -> &crate::jwt::JwtSigner {
        &self.signer
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig file's text pointing at this server, for the binary.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n\
             current-context: test\nusers:\n- name: test\n  user: {{}}\n",
            self.url()
        )
    }

    /// Every stored object of a resource in a namespace (`None`: all).
    pub fn objects(&self, group: &str, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        let state = self.state.lock().expect("state");
        state
            .objects
            .iter()
            .filter(|(k, _)| k.group == group && k.resource == resource)
            .filter(|(k, _)| namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The next `count` `method` requests on `resource` fail with `code`
    /// (503 ServiceUnavailable, 500 InternalError, ...).
    pub fn fail_next(&self, method: &str, resource: &str, count: u32, code: u16) {
        let code = StatusCode::from_u16(code).expect("an HTTP status");
        let mut state = self.state.lock().expect("state");
        state.failures.insert((method.to_owned(), resource.to_owned()), (count, code));
    }

    /// How many `method` requests on `resource` arrived, failed ones included.
    pub fn requests(&self, method: &str, resource: &str) -> u32 {
        let state = self.state.lock().expect("state");
        state.requests.get(&(method.to_owned(), resource.to_owned())).copied().unwrap_or(0)
    }

    /// The objects of a resource once `ready` holds for them. Every stored
    /// change wakes the wait (no polling); after 30 s it panics with what is
    /// there, so a test that never gets its write fails instead of hanging.
    pub async fn wait_for(
        &self,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
        ready: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let mut changes = self.changes.subscribe();
        let wait = async {
            loop {
                let objects = self.objects(group, resource, namespace);
                if ready(&objects) {
                    return objects;
                }
                // A lagged receiver only means several changes: read again.
                let _ = changes.recv().await;
            }
        };
        match tokio::time::timeout(std::time::Duration::from_secs(30), wait).await {
            Ok(objects) => objects,
            Err(_) => panic!(
                "{resource} never became ready: {:?}",
                self.objects(group, resource, namespace)
            ),
        }
    }

    async fn handle(&self, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let Some(path) = ApiPath::parse(uri.path()) else {
            return status_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("no route for {}", uri.path()),
            );
        };
        {
            let key = (method.to_string(), path.resource.clone());
            let mut state = self.state.lock().expect("state");
            *state.requests.entry(key.clone()).or_default() += 1;
            if let Some((left, code)) = state.failures.get_mut(&key).filter(|(n, _)| *n > 0) {
                *left -= 1;
                // The reasons the API server's Status carries for these codes.
                let reason = match code.as_u16() {
                    429 => "TooManyRequests",
                    500 => "InternalError",
                    503 => "ServiceUnavailable",
                    504 => "Timeout",
                    _ => "Failure",
                };
                return status_error(*code, reason, "injected by the test");
            }
        }
        let query = parse_query(uri.query().unwrap_or_default());
        let body: Option<Value> = if body.is_empty() {
            None
        } else {
            match serde_json::from_slice(&body) {
                Ok(v) => Some(v),
                Err(e) => {
                    return status_error(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        &format!("invalid JSON body: {e}"),
                    );
                }
            }
        };
        // `Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1`
        // (kube's metadata_watcher, get_metadata): metadata alone, as the
        // API server answers it.
        let metadata_only = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("as=PartialObjectMetadata"));
        match (&method, &path.name, path.subresource.as_deref()) {
            (&Method::GET, None, None)
                if query.get("watch").is_some_and(|w| w == "true" || w == "1") =>
            {
                self.watch(&path, &query, metadata_only)
            }
            (&Method::GET, None, None) => self.list(&path, &query, metadata_only),
            (&Method::GET, Some(_), None) if metadata_only => match self.lookup(&path) {
                Some(obj) => (StatusCode::OK, axum::Json(partial(&obj))).into_response(),
                None => not_found(&path, path.name.as_deref().unwrap_or_default()),
            },
            (&Method::GET, Some(_), None) => self.get(&path),
            (&Method::POST, None, None) if path.resource == "tokenreviews" => {
                self.token_review(body)
            }
            (&Method::POST, None, None) => self.create(&path, body),
            (&Method::POST, Some(_), Some("token")) => self.token_request(&path, body),
            (&Method::PUT, Some(_), None) => self.replace(&path, body),
            (&Method::PATCH, Some(_), None) => {
                let content_type =
                    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
                self.patch(&path, content_type, body)
            }
            (&Method::DELETE, Some(_), None) => self.delete(&path),
            (&Method::GET, Some(_), Some("status")) => self.get(&path),
            (&Method::PUT | &Method::PATCH, Some(_), Some("status")) => {
                let merge = method == Method::PATCH;
                self.write_status(&path, merge, body)
            }
            _ => status_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                &format!("{method} {} is not supported", uri.path()),
            ),
        }
    }

    fn key(path: &ApiPath, name: &str) -> Key {
        Key {
            group: path.group.clone(),
            resource: path.resource.clone(),
            namespace: path.namespace.clone().unwrap_or_default(),
            name: name.to_owned(),
        }
    }

    fn get(&self, path: &ApiPath) -> Response {
        let name = path.name.as_deref().unwrap_or_default();
        match self.state.lock().expect("state").objects.get(&Self::key(path, name)) {
            Some(obj) => (StatusCode::OK, axum::Json(obj.clone())).into_response(),
            None => not_found(path, name),
        }
    }

    fn lookup(&self, path: &ApiPath) -> Option<Value> {
        let name = path.name.as_deref()?;
        self.state.lock().expect("state").objects.get(&Self::key(path, name)).cloned()
    }

    fn list(
        &self,
        path: &ApiPath,
        query: &BTreeMap<String, String>,
        metadata_only: bool,
    ) -> Response {
        let state = self.state.lock().expect("state");
        let items: Vec<Value> = state
            .objects
            .iter()
            .filter(|(k, v)| path.matches(k) && selected(v, query))
            .map(|(_, v)| if metadata_only { partial(v) } else { v.clone() })
            .collect();
        let (api_version, kind) = match metadata_only {
            true => ("meta.k8s.io/v1".to_owned(), "PartialObjectMetadataList".to_owned()),
            false => (path.api_version(), format!("{}List", kind_of(&path.resource))),
        };
        let list = json!({
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"resourceVersion": state.rv.to_string()},
            "items": items,
        });
        (StatusCode::OK, axum::Json(list)).into_response()
    }

    fn watch(
        &self,
        path: &ApiPath,
        query: &BTreeMap<String, String>,
        metadata_only: bool,
    ) -> Response {
        // Subscribe before reading history, so no change falls in between.
        let live = self.changes.subscribe();
        let since: u64 = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
        let history: Vec<Change> = {
            let state = self.state.lock().expect("state");
            state.history.iter().filter(|c| c.rv > since).cloned().collect()
        };
        let last_replayed = history.last().map_or(since, |c| c.rv);
        let timeout = query.get("timeoutSeconds").and_then(|v| v.parse().ok()).unwrap_or(300u64);
        let path = path.clone();
        let query = query.clone();
        let relevant = {
            let (path, query) = (path.clone(), query.clone());
            move |c: &Change| {
                c.group == path.group
                    && c.resource == path.resource
                    && path
                        .namespace
                        .as_ref()
                        .is_none_or(|ns| c.object["metadata"]["namespace"] == *ns)
                    && selected(&c.object, &query)
            }
        };
        let replay = futures::stream::iter(history.into_iter().filter(relevant.clone()));
        // A watcher that fell behind the broadcast has missed changes: end
        // its watch, as the API server ends one it cannot serve, so the
        // client watches again from its last resourceVersion and the
        // history replays what it missed. Never skip silently.
        let live = tokio_stream::wrappers::BroadcastStream::new(live)
            .take_while(|c| std::future::ready(c.is_ok()))
            .filter_map(|c| async move { c.ok() })
            .filter(move |c| std::future::ready(c.rv > last_replayed))
            .filter(move |c| std::future::ready(relevant(c)));
        let events = replay
            .chain(live)
            .map(move |c| {
                let object = if metadata_only { partial(&c.object) } else { c.object };
                let line = json!({"type": c.kind, "object": object}).to_string() + "\n";
                Ok::<_, Infallible>(Bytes::from(line))
            })
            .take_until(tokio::time::sleep(Duration::from_secs(timeout)));
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(events))
            .expect("a valid response")
    }

    fn create(&self, path: &ApiPath, body: Option<Value>) -> Response {
        let Some(mut obj) = body.filter(Value::is_object) else {
            return status_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the body must be an object",
            );
        };
        let Some(name) = obj["metadata"]["name"].as_str().map(str::to_owned) else {
            return status_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                "metadata.name: Required value",
            );
        };
        let mut state = self.state.lock().expect("state");
        let key = Self::key(path, &name);
        if state.objects.contains_key(&key) {
            return status_error(
                StatusCode::CONFLICT,
                "AlreadyExists",
                &format!("{}.{} \"{name}\" already exists", path.resource, path.group),
            );
        }
        state.uid += 1;
        let uid = format!("00000000-0000-4000-8000-{:012}", state.uid);
        let meta = &mut obj["metadata"];
        if let Some(ns) = &path.namespace {
            meta["namespace"] = json!(ns);
        }
        meta["uid"] = json!(uid);
        meta["creationTimestamp"] =
            json!(jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        self.store(&mut state, key.clone(), obj, "ADDED");
        (StatusCode::CREATED, axum::Json(state.objects[&key].clone())).into_response()
    }

    fn replace(&self, path: &ApiPath, body: Option<Value>) -> Response {
        self.update(path, body, |current, mut obj| {
            for field in ["uid", "creationTimestamp", "namespace"] {
                obj["metadata"][field] = current["metadata"][field].take();
            }
            *current = obj;
        })
    }

    /// An update of an existing object: refuses a missing object and a stale
    /// resourceVersion, then lets `apply` compute the new object from the
    /// stored one and the body.
    fn update(
        &self,
        path: &ApiPath,
        body: Option<Value>,
        apply: impl FnOnce(&mut Value, Value),
    ) -> Response {
        let Some(body) = body.filter(Value::is_object) else {
            return status_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the body must be an object",
            );
        };
        let name = path.name.clone().unwrap_or_default();
        let mut state = self.state.lock().expect("state");
        let key = Self::key(path, &name);
        let Some(mut obj) = state.objects.get(&key).cloned() else {
            return not_found(path, &name);
        };
        if stale(&body, &obj) {
            return conflict(path, &name);
        }
        apply(&mut obj, body);
        self.store(&mut state, key.clone(), obj, "MODIFIED");
        (StatusCode::OK, axum::Json(state.objects[&key].clone())).into_response()
    }

    fn patch(&self, path: &ApiPath, content_type: &str, body: Option<Value>) -> Response {
        let Some(patch) = body else {
            return status_error(StatusCode::BAD_REQUEST, "BadRequest", "empty patch");
        };
        let name = path.name.clone().unwrap_or_default();
        let apply = content_type.starts_with("application/apply-patch");
        if !apply && !content_type.starts_with("application/merge-patch+json") {
            return status_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                &format!(
                    "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/apply-patch+yaml; got {content_type}"
                ),
            );
        }
        let key = Self::key(path, &name);
        let current = self.state.lock().expect("state").objects.get(&key).cloned();
        match current {
            Some(mut obj) => {
                if stale(&patch, &obj) {
                    return conflict(path, &name);
                }
                merge_patch(&mut obj, &patch);
                let mut state = self.state.lock().expect("state");
                self.store(&mut state, key.clone(), obj, "MODIFIED");
                (StatusCode::OK, axum::Json(state.objects[&key].clone())).into_response()
            }
            // Server-side apply creates; a merge patch of nothing is NotFound.
            None if apply => {
                let mut obj = patch;
                obj["metadata"]["name"] = json!(name);
                self.create(path, Some(obj))
            }
            None => not_found(path, &name),
        }
    }

    fn delete(&self, path: &ApiPath) -> Response {
        let name = path.name.clone().unwrap_or_default();
        let mut state = self.state.lock().expect("state");
        let key = Self::key(path, &name);
        match state.objects.remove(&key) {
            Some(obj) => {
                let obj = self.deleted(&mut state, key, obj);
                if let Some(uid) = obj["metadata"]["uid"].as_str() {
                    self.collect_garbage(&mut state, uid);
                }
                (StatusCode::OK, axum::Json(obj)).into_response()
            }
            None => not_found(path, &name),
        }
    }

    /// The garbage collector's background deletion after `uid` went: an
    /// object whose every owner is gone in this cascade goes too, and what
    /// it owns in turn. Owners the double never held (tests name pods'
    /// ReplicaSets without creating them) keep their dependents.
    fn collect_garbage(&self, state: &mut State, uid: &str) {
        let mut gone = std::collections::BTreeSet::from([uid.to_owned()]);
        loop {
            let orphan = state.objects.iter().find_map(|(key, obj)| {
                let owners = obj["metadata"]["ownerReferences"].as_array()?;
                let orphaned = !owners.is_empty()
                    && owners.iter().all(|o| o["uid"].as_str().is_some_and(|u| gone.contains(u)));
                orphaned.then(|| key.clone())
            });
            let Some(key) = orphan else { return };
            let obj = state.objects.remove(&key).expect("found above");
            if let Some(uid) = obj["metadata"]["uid"].as_str() {
                gone.insert(uid.to_owned());
            }
            self.deleted(state, key, obj);
        }
    }

    /// Records and announces the deletion of `obj` (removed from `state`):
    /// a new resourceVersion and a DELETED change. Returns it as deleted.
    fn deleted(&self, state: &mut State, key: Key, mut obj: Value) -> Value {
        state.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(state.rv.to_string());
        let change = Change {
            kind: "DELETED",
            group: key.group,
            resource: key.resource,
            object: obj.clone(),
            rv: state.rv,
        };
        state.history.push(change);
        let _ = self.changes.send(state.history.last().expect("just pushed").clone());
        obj
    }

    /// The status subresource: only `.status` changes, whatever else the
    /// body says, as for a resource that declares the subresource.
    fn write_status(&self, path: &ApiPath, merge: bool, body: Option<Value>) -> Response {
        self.update(path, body, |obj, body| {
            if merge {
                merge_patch(&mut obj["status"], &body["status"]);
            } else {
                obj["status"] = body["status"].clone();
            }
        })
    }

    /// TokenRequest: a JWT signed by [`Self::signer`] for the requested
    /// audiences (the API server's own when none), bound to the pod named in
    /// `boundObjectRef`.
    fn token_request(&self, path: &ApiPath, body: Option<Value>) -> Response {
        if path.resource != "serviceaccounts" {
            return status_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "token is a subresource of serviceaccounts",
            );
        }
        let name = path.name.clone().unwrap_or_default();
        let mut request = body.unwrap_or_else(|| json!({}));
        let seconds = request["spec"]["expirationSeconds"].as_i64().unwrap_or(3600);
        let expiry = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(seconds);
        let mut audiences: Vec<String> = request["spec"]["audiences"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        if audiences.is_empty() {
            audiences.push(crate::jwt::ISSUER.to_owned());
        }
        let ns = path.namespace.clone().unwrap_or_default();
        let bound = &request["spec"]["boundObjectRef"];
        let pod = bound["name"].as_str().zip(bound["uid"].as_str());
        let token = self.signer.sign(&crate::jwt::Subject {
            namespace: &ns,
            service_account: &name,
            pod,
            audiences: &audiences.iter().map(String::as_str).collect::<Vec<_>>(),
            lifetime_seconds: seconds,
        });
        request["status"] = json!({
            "token": token,
            "expirationTimestamp": expiry.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        });
        (StatusCode::CREATED, axum::Json(request)).into_response()
    }

    /// TokenReview: authenticated when the token carries this server's
    /// signature and has not expired, with the service account as the user.
    fn token_review(&self, body: Option<Value>) -> Response {
        let mut review = body.unwrap_or_else(|| json!({}));
        let token = review["spec"]["token"].as_str().unwrap_or_default();
        review["status"] = match self.signer.verify(token) {
            Some(claims) => {
                let k8s = &claims["kubernetes.io"];
                let ns = k8s["namespace"].as_str().unwrap_or_default();
                json!({
                    "authenticated": true,
                    "user": {
                        "username": claims["sub"],
                        "uid": k8s["serviceaccount"]["uid"],
                        "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
                    },
                    "audiences": claims["aud"],
                })
            }
            None => json!({"authenticated": false, "error": "invalid bearer token"}),
        };
        (StatusCode::CREATED, axum::Json(review)).into_response()
    }

    /// Stores a write as the API server does: `metadata.generation` starts
    /// at 1 and moves when anything but metadata and status changes; a write
    /// that changes nothing is no write (no new resourceVersion, no event).
    fn store(&self, state: &mut State, key: Key, mut obj: Value, kind: &'static str) {
        let previous = state.objects.get(&key);
        let spec_of = |v: &Value| {
            let mut v = v.clone();
            if let Some(map) = v.as_object_mut() {
                map.remove("metadata");
                map.remove("status");
            }
            v
        };
        let generation = match previous {
            None => 1,
            Some(prev) => {
                let old = prev["metadata"]["generation"].as_i64().unwrap_or(1);
                if spec_of(prev) == spec_of(&obj) { old } else { old + 1 }
            }
        };
        obj["metadata"]["generation"] = json!(generation);
        if let Some(prev) = previous {
            let mut same = obj.clone();
            same["metadata"]["resourceVersion"] = prev["metadata"]["resourceVersion"].clone();
            if same == *prev {
                return;
            }
        }
        state.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(state.rv.to_string());
        let change = Change {
            kind,
            group: key.group.clone(),
            resource: key.resource.clone(),
            object: obj.clone(),
            rv: state.rv,
        };
        state.objects.insert(key, obj);
        state.history.push(change.clone());
        let _ = self.changes.send(change);
    }
}

/// A parsed REST path.
#[derive(Debug, Clone)]
struct ApiPath {
    group: String,
    version: String,
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    subresource: Option<String>,
}

impl ApiPath {
    fn parse(path: &str) -> Option<Self> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match parts.as_slice() {
            ["api", version, rest @ ..] => (String::new(), (*version).to_owned(), rest),
            ["apis", group, version, rest @ ..] => {
                ((*group).to_owned(), (*version).to_owned(), rest)
            }
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
            _ => (None, rest),
        };
        let (resource, name, subresource) = match rest {
            [resource] => (*resource, None, None),
            [resource, name] => (*resource, Some(*name), None),
            [resource, name, sub] => (*resource, Some(*name), Some(*sub)),
            _ => return None,
        };
        Some(Self {
            group,
            version,
            namespace,
            resource: resource.to_owned(),
            name: name.map(str::to_owned),
            subresource: subresource.map(str::to_owned),
        })
    }

    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn matches(&self, key: &Key) -> bool {
        key.group == self.group
            && key.resource == self.resource
            && self.namespace.as_ref().is_none_or(|ns| *ns == key.namespace)
    }
}

fn kind_of(resource: &str) -> String {
    match resource {
        "secretproviderclasses" => "SecretProviderClass",
        "secretproviderclasspodstatuses" => "SecretProviderClassPodStatus",
        "events" => "Event",
        "pods" => "Pod",
        "secrets" => "Secret",
        "serviceaccounts" => "ServiceAccount",
        "nodes" => "Node",
        "secretsyncs" => "SecretSync",
        "leases" => "Lease",
        _ => "",
    }
    .to_owned()
}

/// Label selectors (`k=v`, `k==v`, `k!=v`, `k`, comma-separated) and field
/// selectors on `metadata.name` / `metadata.namespace`.
fn selected(obj: &Value, query: &BTreeMap<String, String>) -> bool {
    let labels = &obj["metadata"]["labels"];
    let label_ok = query.get("labelSelector").is_none_or(|sel| {
        sel.split(',').filter(|t| !t.is_empty()).all(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                labels[k.trim()].as_str() != Some(v.trim())
            } else if let Some((k, v)) = term.split_once('=') {
                labels[k.trim()].as_str() == Some(v.trim_start_matches('=').trim())
            } else {
                !labels[term.trim()].is_null()
            }
        })
    });
    let field_ok = query.get("fieldSelector").is_none_or(|sel| {
        sel.split(',').filter(|t| !t.is_empty()).all(|term| match term.split_once('=') {
            Some((field, v)) => {
                let v = v.trim_start_matches('=');
                let pointer = format!("/{}", field.replace('.', "/"));
                obj.pointer(&pointer).and_then(Value::as_str) == Some(v)
            }
            None => false,
        })
    });
    label_ok && field_ok
}

/// A write that names a resourceVersion other than the stored one is stale
/// (optimistic concurrency); one that names none is unconditional.
fn stale(write: &Value, current: &Value) -> bool {
    write["metadata"]["resourceVersion"]
        .as_str()
        .is_some_and(|rv| rv != current["metadata"]["resourceVersion"])
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let target = target.as_object_mut().expect("an object");
    for (k, v) in fields {
        if v.is_null() {
            target.remove(k);
        } else {
            merge_patch(target.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An object as `as=PartialObjectMetadata` returns it.
fn partial(object: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": object["metadata"],
    })
}

fn status_error(code: StatusCode, reason: &str, message: &str) -> Response {
    let status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    (code, axum::Json(status)).into_response()
}

fn not_found(path: &ApiPath, name: &str) -> Response {
    status_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{}.{} \"{name}\" not found", path.resource, path.group),
    )
}

fn conflict(path: &ApiPath, name: &str) -> Response {
    status_error(
        StatusCode::CONFLICT,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {}.{} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            path.resource, path.group
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let p = ApiPath::parse(
            "/apis/secrets-store.csi.x-k8s.io/v1/namespaces/ns/secretproviderclasses/a",
        )
        .unwrap();
        assert_eq!(
            (p.group.as_str(), p.namespace.as_deref(), p.resource.as_str(), p.name.as_deref()),
            ("secrets-store.csi.x-k8s.io", Some("ns"), "secretproviderclasses", Some("a"))
        );
        let p =
            ApiPath::parse("/apis/secrets-store.csi.x-k8s.io/v1/secretproviderclasses").unwrap();
        assert_eq!((p.namespace, p.name), (None, None));
        let p = ApiPath::parse("/api/v1/namespaces/ns/serviceaccounts/sa/token").unwrap();
        assert_eq!((p.group.as_str(), p.subresource.as_deref()), ("", Some("token")));
        assert!(ApiPath::parse("/healthz").is_none());
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn selectors_and_decoding() {
        let q = parse_query(
            "labelSelector=internal.secrets-store.csi.k8s.io%2Fnode-name%3Dn1&watch=true",
        );
        assert_eq!(q["labelSelector"], "internal.secrets-store.csi.k8s.io/node-name=n1");
        let obj = json!({"metadata": {"name": "x", "labels": {"internal.secrets-store.csi.k8s.io/node-name": "n1"}}});
        assert!(selected(&obj, &q));
        let other = parse_query("labelSelector=internal.secrets-store.csi.k8s.io%2Fnode-name%3Dn2");
        assert!(!selected(&obj, &other));
        assert!(selected(&obj, &parse_query("fieldSelector=metadata.name%3Dx")));
        assert!(!selected(&obj, &parse_query("fieldSelector=metadata.name%3Dy")));
    }
}
