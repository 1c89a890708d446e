//! moto's AWS API emulator (`moto_server`, from PyPI's `moto[server]`), run
//! as a child process on a free loopback port for the duration of a test.

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    port: u16,
}

impl MotoServer {
    /// Starts `moto_server` and waits until it accepts connections. Panics
    /// with a clear message when it is not installed (`cargo xtask test` provisions it).
    pub fn start() -> Self {
        let (child, port) = crate::process::start_on_free_port(
            "moto_server",
            crate::process::PROVISION,
            |port| {
                let mut command = Command::new(crate::process::program("moto_server"));
                command
                    .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                command
            },
            |_| true,
        );
        Self { child, port }
    }

    /// `http://127.0.0.1:<port>`, for an SDK client's endpoint URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A proxy in front of moto that counts the AWS API calls passing through,
/// by operation (`secretsmanager.GetSecretValue`, `AssumeRoleWithWebIdentity`,
/// ...), so a test can prove how many backend calls a scenario made. It can
/// also answer the next calls of an operation with an AWS error instead of
/// moto's answer ([`CountingProxy::fail_next`]), as AWS's JSON protocols
/// send one: the status, `x-amzn-ErrorType` and a `__type` body.
#[derive(Debug, Clone)]
pub struct CountingProxy {
    url: String,
    counts: std::sync::Arc<Mutex<std::collections::BTreeMap<String, usize>>>,
    faults: Faults,
}

type Faults = std::sync::Arc<
    Mutex<std::collections::BTreeMap<String, std::collections::VecDeque<(u16, String, String)>>>,
>;

impl CountingProxy {
    pub async fn start(upstream: String) -> Self {
        use axum::body::{Body, Bytes};
        use axum::http::{HeaderMap, Method, Uri};
        use http_body_util::{BodyExt, Full};
        use hyper_util::client::legacy::Client;
        use hyper_util::rt::TokioExecutor;

        let counts: std::sync::Arc<Mutex<std::collections::BTreeMap<String, usize>>> =
            Default::default();
        let faults: Faults = Default::default();
        let pending = faults.clone();
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let seen = counts.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (client, seen, upstream) = (client.clone(), seen.clone(), upstream.clone());
                let pending = pending.clone();
                async move {
                    let operation = operation(&headers, &body);
                    *seen.lock().expect("counts").entry(operation.clone()).or_default() += 1;
                    let fault = pending
                        .lock()
                        .expect("faults")
                        .get_mut(&operation)
                        .and_then(std::collections::VecDeque::pop_front);
                    if let Some((status, error_type, message)) = fault {
                        let body = serde_json::json!({"__type": error_type, "message": message});
                        return axum::http::Response::builder()
                            .status(status)
                            .header("content-type", "application/x-amz-json-1.1")
                            .header("x-amzn-errortype", &error_type)
                            .body(Body::from(body.to_string()))
                            .expect("response");
                    }
                    let target =
                        format!("{upstream}{}", uri.path_and_query().map_or("/", |p| p.as_str()));
                    let mut request = axum::http::Request::builder().method(method).uri(target);
                    for (name, value) in &headers {
                        if name != axum::http::header::HOST {
                            request = request.header(name, value);
                        }
                    }
                    let response =
                        client.request(request.body(Full::new(body)).expect("request")).await;
                    match response {
                        Ok(response) => {
                            let (parts, body) = response.into_parts();
                            let bytes =
                                body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            axum::http::Response::from_parts(parts, Body::from(bytes))
                        }
                        Err(e) => axum::http::Response::builder()
                            .status(502)
                            .body(Body::from(e.to_string()))
                            .expect("response"),
                    }
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, counts, faults }
    }

    /// The next call of `operation` is answered with `status` and AWS error
    /// code `error_type`; calls queue up in order.
    pub fn fail_next(&self, operation: &str, status: u16, error_type: &str) {
        self.fail_next_with(operation, status, error_type, &format!("injected {error_type}"));
    }

    /// As [`CountingProxy::fail_next`], with the message AWS would send.
    pub fn fail_next_with(&self, operation: &str, status: u16, error_type: &str, message: &str) {
        self.faults.lock().expect("faults").entry(operation.to_owned()).or_default().push_back((
            status,
            error_type.to_owned(),
            message.to_owned(),
        ));
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// How many calls of `operation` went through.
    pub fn count(&self, operation: &str) -> usize {
        self.counts.lock().expect("counts").get(operation).copied().unwrap_or(0)
    }
}

/// JSON protocols name the operation in `X-Amz-Target`, query protocols in
/// the `Action` form field.
fn operation(headers: &axum::http::HeaderMap, body: &[u8]) -> String {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        return target.to_owned();
    }
    String::from_utf8_lossy(body)
        .split('&')
        .find_map(|pair| pair.strip_prefix("Action="))
        .unwrap_or("unknown")
        .to_owned()
}
