//! `sscsi provider-server`: one compiled-in provider on a v1alpha1 socket,
//! for the upstream driver, in place of that provider's official DaemonSet.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::registry::Registry;
use sscsi_node::Readiness;
use sscsi_node::http::{self, HttpState};
use sscsi_provider_grpc::{DEFAULT_PROVIDER_DIR, ProviderService, Runtime};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::ProviderServerArgs;
use crate::node::{listen_addr, serve_http, shutdown_on_signal, wait_all};

/// In-flight mounts may finish within the pod's 30 s grace period.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// What the official provider of each name answers to `Version`, so the
/// driver's logs and health checks read the same.
fn runtime_name(provider: &str) -> String {
    match provider {
        "aws" | "azure" | "gcp" => format!("secrets-store-csi-driver-provider-{provider}"),
        "vault" => "vault-csi-provider".to_owned(),
        other => format!("sscsi-provider-{other}"),
    }
}

pub async fn run(args: ProviderServerArgs) -> anyhow::Result<()> {
    let ProviderServerArgs { name, socket, metrics_addr, health_addr, kubeconfig, mut provider } =
        args;
    if provider.providers.is_some() {
        anyhow::bail!(
            "provider-server serves one provider: name it with --provider, not --providers"
        );
    }
    let cloud = crate::providers::COMPILED.contains(&name.as_str());
    provider.providers = Some(if cloud { vec![name.clone()] } else { Vec::new() });
    let metrics_addr = listen_addr("--metrics-addr", &metrics_addr)?;
    let health_addr = listen_addr("--health-addr", &health_addr)?;
    let socket =
        socket.unwrap_or_else(|| PathBuf::from(DEFAULT_PROVIDER_DIR).join(format!("{name}.sock")));

    // The cluster is optional: the driver passes the pod's tokens, and only
    // some providers read service accounts (aws: the role annotation).
    let client = match sscsi_kube::client(kubeconfig.as_deref()).await {
        Ok(client) => Some(client),
        Err(e) if kubeconfig.is_none() => {
            tracing::warn!(error = %e, "no Kubernetes API: providers that read service accounts cannot serve");
            None
        }
        Err(e) => return Err(e).context("connect to Kubernetes"),
    };
    let mut registry = Registry::default();
    let stats = crate::providers::backend_stats(&provider)?;
    stats.register(&mut registry);
    let providers =
        crate::providers::build(provider, client.as_ref(), None, &stats, Default::default())
            .await?;
    let served =
        providers.get(&name).with_context(|| format!("--provider {name}: cannot serve it here"))?;
    let runtime =
        Runtime { name: runtime_name(&name), version: env!("CARGO_PKG_VERSION").to_owned() };
    tracing::info!(provider = name, socket = %socket.display(), runtime = runtime.name, "starting sscsi provider-server");
    let service = ProviderService::new(served, runtime);

    let shutdown = CancellationToken::new();
    let signals = shutdown_on_signal(shutdown.clone())?;
    let mut tasks = JoinSet::new();
    let state = Arc::new(HttpState {
        readiness: Readiness::new(&[]),
        registry: Arc::new(registry),
        csi_socket: PathBuf::new(),
    });
    // Bound first, so `/readyz` answering means the socket takes calls.
    let listener = sscsi_node::server::bind_private(&socket)
        .with_context(|| format!("listen on {}", socket.display()))?;
    let routes =
        [(health_addr, http::answer_routes()), (metrics_addr, http::metrics_routes(state))];
    serve_http(&mut tasks, routes, &shutdown).await?;
    let routes = service.into_routes();
    let stop = shutdown.clone().cancelled_owned();
    tasks.spawn(async move {
        sscsi_node::server::serve_routes(listener, routes, stop, SHUTDOWN_GRACE)
            .await
            .context("provider server")
    });
    let result = wait_all(tasks, &shutdown).await;
    signals.abort();
    tracing::info!("sscsi provider-server stopped");
    result
}
