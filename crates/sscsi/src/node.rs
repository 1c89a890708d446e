use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::registry::Registry;
use sscsi_core::ProviderRegistry;
use sscsi_kube::{KubeObserver, SpcCache, SyncPolicy};
use sscsi_mount::{FakeMounter, Mounter, TmpfsMounter};
use sscsi_node::http::{self, HttpState};
use sscsi_node::metrics::NodeMetrics;
use sscsi_node::observer::{NoObserver, VolumeObserver};
use sscsi_node::registration::{self, RegistrationConfig};
use sscsi_node::spc::{DirSpcSource, SpcSource};
use sscsi_node::{Backoff, Condition, Endpoint, NodeConfig, NodeDeps, Readiness, server, services};
use sscsi_provider_local::LocalProvider;
use tokio_util::sync::CancellationToken;

use crate::cli::NodeArgs;

/// How long in-flight calls may run after SIGTERM: within the pod's default
/// 30 s termination grace period.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let NodeArgs {
        endpoint,
        nodeid,
        drivername,
        enable_secret_rotation,
        rotation_poll_interval,
        enable_secret_sync,
        sync_allowed_namespaces,
        metrics_addr,
        health_addr,
        plugin_registration_dir,
        kubelet_registration_path,
        tmpfs_size,
        spc_dir,
        kubeconfig,
        local_provider_root,
        no_tmpfs,
    } = args;
    let endpoint: Endpoint = endpoint.parse().map_err(anyhow::Error::msg).context("--endpoint")?;
    let node_id = match nodeid {
        Some(id) if !id.is_empty() => id,
        _ => nix::unistd::gethostname()?.to_string_lossy().into_owned(),
    };
    let listen = |flag: &str, addr: &str| -> anyhow::Result<_> {
        (!addr.is_empty())
            .then(|| {
                http::parse_listen_addr(addr).map_err(anyhow::Error::msg).context(flag.to_owned())
            })
            .transpose()
    };
    let metrics_addr = listen("--metrics-addr", &metrics_addr)?;
    let health_addr = listen("--health-addr", &health_addr)?;

    let mounter: Arc<dyn Mounter> = if no_tmpfs {
        tracing::warn!(
            "--no-tmpfs: volumes are plain directories on disk; never use this in production"
        );
        Arc::new(FakeMounter::new())
    } else {
        Arc::new(TmpfsMounter::new(tmpfs_size))
    };
    let mut providers = ProviderRegistry::new();
    if let Some(root) = local_provider_root {
        let local = LocalProvider::new(&root)
            .with_context(|| format!("--local-provider-root {}", root.display()))?;
        providers.register(Arc::new(local));
    }
    let config = NodeConfig {
        driver_name: drivername,
        vendor_version: env!("CARGO_PKG_VERSION").to_owned(),
        node_id,
        rotation_poll_interval: enable_secret_rotation.then_some(rotation_poll_interval),
        refresh_backoff: Backoff::default(),
    };
    tracing::info!(
        endpoint = %endpoint.path.display(), node_id = config.node_id, driver = config.driver_name,
        rotation = ?config.rotation_poll_interval, providers = ?providers.names(), "starting sscsi node"
    );
    let registration = plugin_registration_dir.map(|registry_dir| RegistrationConfig {
        registry_dir,
        driver_name: config.driver_name.clone(),
        kubelet_endpoint: kubelet_registration_path
            .unwrap_or_else(|| endpoint.path.display().to_string()),
    });
    let readiness = Readiness::default();
    let mut registry = Registry::default();
    let metrics = NodeMetrics::new(&mut registry);
    let shutdown = CancellationToken::new();
    let (spcs, observer, client): (Arc<dyn SpcSource>, Arc<dyn VolumeObserver>, _) = match spc_dir {
        Some(dir) => {
            tracing::info!(dir = %dir.display(), "SecretProviderClasses from files; no pod status or events");
            (Arc::new(DirSpcSource::new(dir)), Arc::new(NoObserver), None)
        }
        None => {
            let client = sscsi_kube::client(kubeconfig.as_deref())
                .await
                .context("connect to Kubernetes (or run with --spc-dir)")?;
            let (cache, _) = SpcCache::start(client.clone(), readiness.clone(), shutdown.clone());
            let sync = if enable_secret_sync {
                let allowed_namespaces =
                    sync_allowed_namespaces.map(|names| names.into_iter().collect());
                SyncPolicy::Enabled { allowed_namespaces }
            } else {
                SyncPolicy::Disabled
            };
            let observer =
                KubeObserver::new(client.clone(), config.node_id.clone()).with_secret_sync(sync);
            (Arc::new(cache), Arc::new(observer), Some(client))
        }
    };
    let deps =
        NodeDeps { mounter, spcs, providers, readiness: readiness.clone(), metrics, observer };
    let node_id = config.node_id.clone();
    let (identity, node) = services(config, deps);
    if let Some(client) = client {
        sscsi_kube::watch_refresh_requests(client, &node_id, node.refresher(), shutdown.clone());
    }

    // Handlers first: a SIGTERM right after the socket appears must still be graceful.
    let signals = shutdown_on_signal(shutdown.clone())?;
    let mut tasks = tokio::task::JoinSet::new();

    let state = Arc::new(HttpState {
        readiness: readiness.clone(),
        registry,
        csi_socket: endpoint.path.clone(),
    });
    let mut routes: Vec<(std::net::SocketAddr, axum::Router)> = Vec::new();
    for (addr, router) in [
        (health_addr, http::health_routes(state.clone())),
        (metrics_addr, http::metrics_routes(state.clone())),
    ] {
        let Some(addr) = addr else { continue };
        match routes.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, existing)) => *existing = existing.clone().merge(router),
            None => routes.push((addr, router)),
        }
    }
    for (addr, router) in routes {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen on {addr}"))?;
        tracing::info!(%addr, "serving HTTP");
        let stop = shutdown.clone();
        tasks.spawn(async move {
            http::serve(listener, router, stop.cancelled_owned()).await.context("HTTP server")
        });
    }

    let listener = server::bind_private(&endpoint.path)
        .with_context(|| format!("listen on {}", endpoint.path.display()))?;
    readiness.mark(Condition::Serving, true);
    let stop = shutdown.clone();
    tasks.spawn(async move {
        server::serve(listener, identity, node, stop.cancelled_owned(), SHUTDOWN_GRACE)
            .await
            .context("CSI server")
    });
    if let Some(config) = registration {
        let (readiness, stop) = (readiness.clone(), shutdown.clone());
        tasks.spawn(async move {
            registration::run(config, readiness, stop).await.context("registration")
        });
    }

    // The first task to end (normally all, after a signal) decides the exit.
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined.context("task panicked").and_then(|r| r);
        if let Err(e) = outcome {
            if result.is_ok() {
                result = Err(e);
            }
            shutdown.cancel();
        }
    }
    signals.abort();
    tracing::info!("sscsi node stopped");
    result
}

/// Installs the SIGTERM/SIGINT handlers now; cancels `token` on the first.
fn shutdown_on_signal(token: CancellationToken) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        token.cancel();
    }))
}
