//! The HTTP side: `/healthz` and `/readyz` for kubelet's probes (replacing
//! the livenessprobe sidecar) and `/metrics` for Prometheus.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use sscsi_proto::csi::v1::ProbeRequest;
use sscsi_proto::csi::v1::identity_client::IdentityClient;

use crate::{Readiness, client};

/// As the livenessprobe sidecar's default `--probe-timeout`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub struct HttpState {
    pub readiness: Readiness,
    pub registry: std::sync::Arc<Registry>,
    /// Our own CSI socket: `/healthz` calls Probe on it, as kubelet's
    /// livenessprobe sidecar does for upstream.
    pub csi_socket: PathBuf,
}

/// `/healthz`: the process answers and so does its CSI socket.
/// `/readyz`: every readiness condition holds.
pub fn health_routes(state: Arc<HttpState>) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(state)
}

/// `/healthz` and `/readyz` for a process without a CSI socket or
/// conditions of its own to wait for: answering is being healthy.
pub fn answer_routes() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ok\n" }))
}

/// `/metrics` in the Prometheus text format.
pub fn metrics_routes(state: Arc<HttpState>) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(state)
}

async fn healthz(State(state): State<Arc<HttpState>>) -> Response {
    let probe = async {
        let channel = client::connect(&state.csi_socket).await.map_err(|e| e.to_string())?;
        let response =
            IdentityClient::new(channel).probe(ProbeRequest {}).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(response.into_inner().ready.unwrap_or(false))
    };
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Ok(true)) => (StatusCode::OK, "ok\n").into_response(),
        Ok(Ok(false)) => {
            (StatusCode::SERVICE_UNAVAILABLE, "CSI Probe: not ready\n").into_response()
        }
        Ok(Err(e)) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("CSI Probe failed: {e}\n")).into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "CSI Probe timed out\n").into_response(),
    }
}

async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    let pending = state.readiness.pending();
    if pending.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: waiting for {}\n", pending.join(", ")),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("encode metrics: {e}\n")).into_response()
        }
    }
}

/// Parses a listen address: `:8095` (all interfaces, as Go writes it),
/// `127.0.0.1:8095` or `[::1]:8095`.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') { format!("0.0.0.0{s}") } else { s.to_owned() };
    full.parse().map_err(|_| format!("{s:?} is not a listen address like :8095 or 127.0.0.1:8095"))
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen_addr(":8095"), Ok("0.0.0.0:8095".parse().unwrap()));
        assert_eq!(parse_listen_addr("127.0.0.1:9808"), Ok("127.0.0.1:9808".parse().unwrap()));
        assert_eq!(parse_listen_addr("[::1]:80"), Ok("[::1]:80".parse().unwrap()));
        assert!(parse_listen_addr("8095").is_err());
        assert!(parse_listen_addr("localhost:8095").is_err());
    }
}
