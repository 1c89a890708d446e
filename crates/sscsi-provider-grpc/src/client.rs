//! External providers: a class whose provider is not served in process
//! goes to `<dir>/<provider>.sock` over v1alpha1, found and dialled as the
//! upstream driver finds and dials it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sscsi_core::{
    ErrorCode, ExternalProviders, MountRequest, MountResponse, Provider, ProviderError,
    ProviderFailure,
};
use sscsi_core::{MAX_EXTERNAL_NAME_LEN as MAX_NAME_LEN, valid_external_name as valid_name};
use sscsi_proto::provider::v1alpha1::csi_driver_provider_client::CsiDriverProviderClient;
use sscsi_proto::provider::v1alpha1::{self as pb, VersionRequest};
use sscsi_provider_kit::stats::Outcome;
use sscsi_provider_kit::{BackendStats, CallStats};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::wire::{self, API_VERSION, ResponseError};

/// Upstream's provider directories, searched in this order: the
/// `--additional-provider-volume-paths` default, then `--provider-volume`'s.
pub const DEFAULT_ADDITIONAL_DIR: &str = "/etc/kubernetes/secrets-store-csi-providers";
pub const DEFAULT_PROVIDER_DIR: &str = "/var/run/secrets-store-csi-providers";
/// Upstream's `--max-call-recv-msg-size` default.
pub const DEFAULT_MAX_RECV_MSG_SIZE: usize = 4 * 1024 * 1024;
/// Upstream's health check allows a `Version` call this long.
pub const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// How external providers are found and called.
#[derive(Debug, Clone)]
pub struct SocketOptions {
    /// Searched in order; the first holding `<name>.sock` wins.
    pub dirs: Vec<PathBuf>,
    /// The largest answer taken (`--max-call-recv-msg-size`).
    pub max_recv_msg_size: usize,
    /// How long one `Mount` may take, retries included.
    pub timeout: Duration,
    /// Calls answered `UNAVAILABLE` are tried this many times in all, with
    /// `retry_backoff` growing by 1.1 between tries: upstream's service
    /// config (3 attempts, 1 s).
    pub attempts: u32,
    pub retry_backoff: Duration,
}

impl Default for SocketOptions {
    fn default() -> Self {
        Self {
            dirs: vec![DEFAULT_ADDITIONAL_DIR.into(), DEFAULT_PROVIDER_DIR.into()],
            max_recv_msg_size: DEFAULT_MAX_RECV_MSG_SIZE,
            timeout: Duration::from_secs(100),
            attempts: 3,
            retry_backoff: Duration::from_secs(1),
        }
    }
}

/// Every external provider a class has named, one client each for the
/// life of the process (as upstream); gRPC reconnects by itself, so a
/// provider restarted on the same socket is dialled again.
#[derive(Debug)]
pub struct ExternalSockets {
    options: SocketOptions,
    clients: Mutex<BTreeMap<String, Arc<GrpcProvider>>>,
    stats: BackendStats,
    up: Family<ProviderLabel, Gauge>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: String,
}

impl ExternalSockets {
    /// `stats`: the process's backend counters, where retries are counted
    /// by provider name beside those of the compiled-in providers.
    pub fn new(options: SocketOptions, stats: &BackendStats) -> Self {
        Self {
            options,
            clients: Mutex::new(BTreeMap::new()),
            stats: stats.clone(),
            up: Family::default(),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sscsi_external_provider_up",
            "Whether the last health check of an external provider got its Version (1) or not (0)",
            self.up.clone(),
        );
    }

    pub fn options(&self) -> &SocketOptions {
        &self.options
    }

    /// Asks every provider dialled so far for its `Version` (upstream's
    /// `--provider-health-check`); logs the answer and sets
    /// `sscsi_external_provider_up`. Returns (name, healthy).
    pub async fn check_health(&self) -> Vec<(String, bool)> {
        let clients: Vec<Arc<GrpcProvider>> = self.lock().values().cloned().collect();
        let mut results = Vec::with_capacity(clients.len());
        for client in clients {
            let healthy = match client.version(HEALTH_CHECK_TIMEOUT).await {
                Ok(v) => {
                    tracing::debug!(
                        provider = client.name, socket = %client.socket.display(),
                        version = v.version, runtime = v.runtime_name,
                        runtime_version = v.runtime_version, "provider health check"
                    );
                    true
                }
                Err(e) => {
                    tracing::warn!(provider = client.name, error = %e, "provider health check failed");
                    false
                }
            };
            let label = ProviderLabel { provider: client.name.clone() };
            self.up.get_or_create(&label).set(i64::from(healthy));
            results.push((client.name.clone(), healthy));
        }
        results
    }

    /// [`Self::check_health`] every `interval` until `shutdown`.
    pub fn spawn_health_checks(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => { self.check_health().await; }
                    () = shutdown.cancelled() => return,
                }
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<GrpcProvider>>> {
        self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The first `<dir>/<name>.sock` that exists.
    fn socket(&self, name: &str) -> Option<PathBuf> {
        self.options
            .dirs
            .iter()
            .map(|dir| dir.join(format!("{name}.sock")))
            .find(|path| std::fs::symlink_metadata(path).is_ok())
    }
}

impl ExternalProviders for ExternalSockets {
    fn find(&self, name: &str) -> Result<Arc<dyn Provider>, String> {
        if !valid_name(name) {
            return Err(format!(
                "{name:?} is not a valid provider name (letters, digits, '_' and '-', at most {MAX_NAME_LEN})"
            ));
        }
        if let Some(client) = self.lock().get(name) {
            return Ok(client.clone());
        }
        let Some(socket) = self.socket(name) else {
            let dirs: Vec<String> =
                self.options.dirs.iter().map(|d| d.display().to_string()).collect();
            return Err(format!("provider not found: no {name}.sock in {}", dirs.join(", ")));
        };
        let mut clients = self.lock();
        let client = clients.entry(name.to_owned()).or_insert_with(|| {
            tracing::info!(provider = name, socket = %socket.display(), "using external provider");
            Arc::new(GrpcProvider::new(name, socket, &self.options, self.stats.provider(name)))
        });
        Ok(client.clone())
    }
}

/// One external provider behind its socket.
#[derive(Debug)]
pub struct GrpcProvider {
    name: String,
    socket: PathBuf,
    client: CsiDriverProviderClient<Channel>,
    options: SocketOptions,
    stats: CallStats,
}

impl GrpcProvider {
    /// Dials lazily: a provider not running yet is not an error until a
    /// call needs it. The `:authority` is `localhost`, as upstream sends it.
    pub fn new(name: &str, socket: PathBuf, options: &SocketOptions, stats: CallStats) -> Self {
        let path = socket.clone();
        let channel = Endpoint::from_static("http://localhost").connect_with_connector_lazy(
            tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }),
        );
        let client = CsiDriverProviderClient::new(channel)
            .max_decoding_message_size(options.max_recv_msg_size);
        Self { name: name.to_owned(), socket, client, options: options.clone(), stats }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The provider's `Version`, within `timeout`.
    pub async fn version(&self, timeout: Duration) -> Result<pb::VersionResponse, ExternalError> {
        let request = VersionRequest { version: API_VERSION.to_owned() };
        let mut client = self.client.clone();
        match tokio::time::timeout(timeout, client.version(request)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.status_error(status)),
            Err(_) => Err(self.error(Failure::Timeout(timeout))),
        }
    }

    async fn call(&self, request: pb::MountRequest) -> Result<pb::MountResponse, Failure> {
        let mut backoff = self.options.retry_backoff;
        let mut attempt = 1;
        loop {
            let mut req = tonic::Request::new(request.clone());
            req.set_timeout(self.options.timeout);
            let started = tokio::time::Instant::now();
            let answer = self.client.clone().mount(req).await;
            let outcome = match &answer {
                Ok(_) => Outcome::Ok,
                Err(status) => match status.code() {
                    tonic::Code::NotFound => Outcome::NotFound,
                    tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => Outcome::Denied,
                    tonic::Code::ResourceExhausted => Outcome::Throttled,
                    _ => Outcome::Error,
                },
            };
            self.stats.call("Mount", outcome, started.elapsed());
            match answer {
                Ok(response) => return Ok(response.into_inner()),
                Err(status)
                    if status.code() == tonic::Code::Unavailable
                        && attempt < self.options.attempts =>
                {
                    self.stats.retried();
                    attempt += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.mul_f64(1.1);
                }
                Err(status) => return Err(Failure::Status(status)),
            }
        }
    }

    fn error(&self, failure: Failure) -> ExternalError {
        ExternalError { provider: self.name.clone(), socket: self.socket.clone(), failure }
    }

    fn status_error(&self, status: tonic::Status) -> ExternalError {
        self.error(Failure::Status(status))
    }
}

#[async_trait]
impl Provider for GrpcProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn mount(&self, request: &MountRequest) -> Result<MountResponse, ProviderError> {
        let wire = wire::encode_request(request);
        let timeout = self.options.timeout;
        let started = std::time::Instant::now();
        let response = match tokio::time::timeout(timeout, self.call(wire)).await {
            Ok(Ok(response)) => response,
            // The provider got our deadline as `grpc-timeout` and may give up
            // first (grpc-go: DEADLINE_EXCEEDED, tonic: CANCELLED); its clock
            // started after ours, so it never ends before our timeout.
            Ok(Err(Failure::Status(status)))
                if started.elapsed() >= timeout
                    && matches!(
                        status.code(),
                        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
                    ) =>
            {
                return Err(self.error(Failure::Timeout(timeout)).into());
            }
            Ok(Err(failure)) => return Err(self.error(failure).into()),
            Err(_) => return Err(self.error(Failure::Timeout(timeout)).into()),
        };
        wire::decode_response(response).map_err(|e| self.error(Failure::Response(e)).into())
    }

    fn writes_target(&self) -> bool {
        true
    }
}

/// A call to an external provider that failed, naming the provider and its
/// socket.
#[derive(Debug, thiserror::Error)]
#[error("provider {provider:?} at {}: {failure}", socket.display())]
pub struct ExternalError {
    provider: String,
    socket: PathBuf,
    failure: Failure,
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{}", describe(.0))]
    Status(tonic::Status),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Response(ResponseError),
}

/// A status as an operator needs it: the code, the provider's message, and
/// for a transport failure what the socket said (refused, missing).
fn describe(status: &tonic::Status) -> String {
    let mut out = format!("{:?}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    if too_large(status) {
        out.push_str(" (raise --max-call-recv-msg-size to take larger answers)");
    } else if status.code() == tonic::Code::Unavailable {
        out.push_str(" (is the provider running?)");
    }
    out
}

/// tonic refuses an answer over the limit with OUT_OF_RANGE, grpc-go with
/// RESOURCE_EXHAUSTED.
fn too_large(status: &tonic::Status) -> bool {
    matches!(status.code(), tonic::Code::OutOfRange | tonic::Code::ResourceExhausted)
        && status.message().contains("message length too large")
}

impl ProviderFailure for ExternalError {
    fn code(&self) -> ErrorCode {
        match &self.failure {
            Failure::Status(status) if too_large(status) => ErrorCode::ResourceExhausted,
            Failure::Status(status) => match status.code() {
                tonic::Code::InvalidArgument | tonic::Code::OutOfRange => {
                    ErrorCode::InvalidArgument
                }
                tonic::Code::NotFound => ErrorCode::NotFound,
                tonic::Code::PermissionDenied => ErrorCode::PermissionDenied,
                tonic::Code::Unauthenticated => ErrorCode::Unauthenticated,
                tonic::Code::FailedPrecondition => ErrorCode::FailedPrecondition,
                tonic::Code::ResourceExhausted => ErrorCode::ResourceExhausted,
                tonic::Code::Unavailable => ErrorCode::Unavailable,
                tonic::Code::DeadlineExceeded => ErrorCode::DeadlineExceeded,
                _ => ErrorCode::Internal,
            },
            Failure::Timeout(_) => ErrorCode::DeadlineExceeded,
            Failure::Response(ResponseError::Code(_)) => ErrorCode::Internal,
            Failure::Response(ResponseError::NoVersions) => ErrorCode::Internal,
        }
    }

    /// Upstream: the provider's own `error.code`, else `GRPCProviderError`.
    fn reason(&self) -> &str {
        match &self.failure {
            Failure::Response(ResponseError::Code(code)) => code,
            _ => "GRPCProviderError",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_leave_the_directory_are_refused() {
        let long = "x".repeat(31);
        for name in ["../x", "a/b", "a.b", "a b", long.as_str()] {
            assert!(!valid_name(name), "{name:?}");
        }
        for name in ["akeyless", "conjur_1", "ibm-secrets", "A9"] {
            assert!(valid_name(name), "{name}");
        }
    }

    #[test]
    fn sockets_are_found_in_order() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(b.path().join("akeyless.sock"), "").unwrap();
        let options =
            SocketOptions { dirs: vec![a.path().into(), b.path().into()], ..Default::default() };
        let sockets = ExternalSockets::new(options, &BackendStats::default());
        assert_eq!(sockets.socket("akeyless"), Some(b.path().join("akeyless.sock")));
        std::fs::write(a.path().join("akeyless.sock"), "").unwrap();
        assert_eq!(
            sockets.socket("akeyless"),
            Some(a.path().join("akeyless.sock")),
            "first dir wins"
        );
        let err = sockets.find("conjur").unwrap_err();
        assert_eq!(
            err,
            format!(
                "provider not found: no conjur.sock in {}, {}",
                a.path().display(),
                b.path().display()
            )
        );
        assert!(
            sockets.find("../../etc/passwd").unwrap_err().contains("not a valid provider name")
        );
    }
}
