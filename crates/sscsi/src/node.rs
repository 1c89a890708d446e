//! `sscsi node`: builds the node plugin from its flags and runs its servers
//! until SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::registry::Registry;
use sscsi_kube::{Client, KubeObserver, SpcCache, SyncPolicy};
use sscsi_mount::{FakeMounter, Mounter, TmpfsMounter};
use sscsi_node::http::{self, HttpState};
use sscsi_node::observer::{NoObserver, VolumeObserver};
use sscsi_node::registration::{self, RegistrationConfig};
use sscsi_node::spc::{DirSpcSource, SpcSource};
use sscsi_node::{Backoff, Endpoint, NodeConfig, Parts, Plugin, Readiness};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::NodeArgs;
use crate::providers::{Caller, attach_external, build};

/// How long in-flight calls may run after SIGTERM: within the pod's default
/// 30 s termination grace period.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// How long the last status and event writes may take after that.
const OUTBOX_GRACE: Duration = Duration::from_secs(5);

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let NodeArgs {
        endpoint,
        nodeid,
        drivername,
        enable_secret_rotation,
        rotation_poll_interval,
        min_rotation_poll_interval,
        pin_class_generation,
        enable_secret_sync,
        sync_allowed_namespaces,
        metrics_addr,
        metrics_pod_labels,
        serve_last_known_good,
        health_addr,
        plugin_registration_dir,
        kubelet_registration_path,
        tmpfs_size,
        spc_dir,
        kubeconfig,
        no_tmpfs,
        external,
        provider,
    } = args;
    let endpoint: Endpoint = endpoint.parse().map_err(anyhow::Error::msg).context("--endpoint")?;
    let node_id = match nodeid {
        Some(id) if !id.is_empty() => id,
        _ => nix::unistd::gethostname()?.to_string_lossy().into_owned(),
    };
    let metrics_addr = listen_addr("--metrics-addr", &metrics_addr)?;
    let health_addr = listen_addr("--health-addr", &health_addr)?;
    let config = NodeConfig {
        driver_name: drivername,
        vendor_version: env!("CARGO_PKG_VERSION").to_owned(),
        node_id,
        rotation_poll_interval: enable_secret_rotation.then_some(rotation_poll_interval),
        refresh_backoff: Backoff::default(),
        min_rotation_interval: min_rotation_poll_interval,
        pin_class_generation,
        metrics_pod_labels,
        serve_last_known_good,
    };
    tracing::info!(
        endpoint = %endpoint.path.display(), node_id = config.node_id, driver = config.driver_name,
        rotation = ?config.rotation_poll_interval, "starting sscsi node"
    );
    let registration = plugin_registration_dir.map(|registry_dir| RegistrationConfig {
        registry_dir,
        driver_name: config.driver_name.clone(),
        kubelet_endpoint: kubelet_registration_path
            .unwrap_or_else(|| endpoint.path.display().to_string()),
    });

    let readiness = Readiness::default();
    let shutdown = CancellationToken::new();
    let mut registry = Registry::default();
    // Throttled answers and retries of the providers that retry themselves.
    let backend_stats = crate::providers::backend_stats(&provider)?;
    backend_stats.register(&mut registry);
    let sync = match enable_secret_sync {
        true => SyncPolicy::Enabled {
            allowed_namespaces: sync_allowed_namespaces.map(|names| names.into_iter().collect()),
        },
        false => SyncPolicy::Disabled,
    };
    let cluster = match spc_dir {
        Some(dir) => {
            tracing::info!(dir = %dir.display(), "SecretProviderClasses from files; no pod status or events");
            Cluster::files(dir)
        }
        None => Cluster::connect(kubeconfig, &config.node_id, sync, &readiness, &shutdown).await?,
    };
    let mut providers = build(
        provider,
        cluster.client.as_ref(),
        Some(&config.node_id),
        &backend_stats,
        Caller::default(),
    )
    .await?;
    attach_external(&mut providers, external, &backend_stats, &mut registry, &shutdown);
    let outbox = cluster.kube_observer.clone();
    let parts = Parts {
        mounter: mounter(no_tmpfs, tmpfs_size),
        spcs: cluster.spcs,
        providers,
        observer: cluster.observer,
        readiness: readiness.clone(),
        registry,
    };
    let node_id = config.node_id.clone();
    let plugin = Plugin::new(config, parts);
    if let Some(client) = cluster.client {
        sscsi_kube::watch_refresh_requests(client, &node_id, plugin.refresher(), shutdown.clone());
    }

    // Handlers first: a SIGTERM right after the socket appears must still be graceful.
    let signals = shutdown_on_signal(shutdown.clone())?;
    let mut tasks = JoinSet::new();
    let state = Arc::new(HttpState {
        readiness: readiness.clone(),
        registry: plugin.registry.clone(),
        csi_socket: endpoint.path.clone(),
    });
    let routes = [
        (health_addr, http::health_routes(state.clone())),
        (metrics_addr, http::metrics_routes(state)),
    ];
    serve_http(&mut tasks, routes, &shutdown).await?;
    let server = plugin
        .serve(&endpoint.path, shutdown.clone().cancelled_owned(), SHUTDOWN_GRACE)
        .with_context(|| format!("listen on {}", endpoint.path.display()))?;
    tasks.spawn(async move { server.await?.context("CSI server") });
    if let Some(config) = registration {
        let (readiness, stop) = (readiness.clone(), shutdown.clone());
        tasks.spawn(async move {
            registration::run(config, readiness, stop).await.context("registration")
        });
    }

    let result = wait_all(tasks, &shutdown).await;
    // Statuses and events are written off the publish path; give the last
    // ones a moment to land.
    if let Some(outbox) = outbox
        && tokio::time::timeout(OUTBOX_GRACE, outbox.settled()).await.is_err()
    {
        tracing::warn!(
            "stopping with pod status or event writes not yet accepted by the API server"
        );
    }
    signals.abort();
    tracing::info!("sscsi node stopped");
    result
}

/// Where SecretProviderClasses come from and who hears about mounts.
struct Cluster {
    spcs: Arc<dyn SpcSource>,
    observer: Arc<dyn VolumeObserver>,
    /// The same observer, to wait on its writes at shutdown.
    kube_observer: Option<KubeObserver>,
    client: Option<Client>,
}

impl Cluster {
    /// `--spc-dir`: classes from files, nobody to tell.
    fn files(dir: PathBuf) -> Self {
        Self {
            spcs: Arc::new(DirSpcSource::new(dir)),
            observer: Arc::new(NoObserver),
            kube_observer: None,
            client: None,
        }
    }

    /// The Kubernetes API: a watch-backed class cache, pod status objects,
    /// events and Secret sync.
    async fn connect(
        kubeconfig: Option<PathBuf>,
        node_id: &str,
        sync: SyncPolicy,
        readiness: &Readiness,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let client = sscsi_kube::client(kubeconfig.as_deref())
            .await
            .context("connect to Kubernetes (or run with --spc-dir)")?;
        let (cache, _) = SpcCache::start(client.clone(), readiness.clone(), shutdown.clone());
        let observer = KubeObserver::new(client.clone(), node_id.to_owned()).with_secret_sync(sync);
        Ok(Self {
            spcs: Arc::new(cache),
            observer: Arc::new(observer.clone()),
            kube_observer: Some(observer),
            client: Some(client),
        })
    }
}

pub(crate) fn mounter(no_tmpfs: bool, tmpfs_size: u64) -> Arc<dyn Mounter> {
    if no_tmpfs {
        tracing::warn!(
            "--no-tmpfs: volumes are plain directories on disk; never use this in production"
        );
        Arc::new(FakeMounter::new())
    } else {
        Arc::new(TmpfsMounter::new(tmpfs_size))
    }
}

/// An HTTP listen address flag; empty disables that listener.
pub(crate) fn listen_addr(flag: &str, addr: &str) -> anyhow::Result<Option<SocketAddr>> {
    if addr.is_empty() {
        return Ok(None);
    }
    http::parse_listen_addr(addr).map(Some).map_err(anyhow::Error::msg).context(flag.to_owned())
}

/// Binds each listener (health and metrics share one address when their
/// flags name the same) and serves it in `tasks` until `shutdown`.
pub(crate) async fn serve_http(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    routes: [(Option<SocketAddr>, axum::Router); 2],
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    for (addr, router) in http_listeners(routes) {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen on {addr}"))?;
        tracing::info!(%addr, "serving HTTP");
        let stop = shutdown.clone().cancelled_owned();
        tasks
            .spawn(async move { http::serve(listener, router, stop).await.context("HTTP server") });
    }
    Ok(())
}

/// One listener per distinct address: health and metrics share one when
/// their flags name the same address.
fn http_listeners(
    routes: [(Option<SocketAddr>, axum::Router); 2],
) -> Vec<(SocketAddr, axum::Router)> {
    let mut listeners: Vec<(SocketAddr, axum::Router)> = Vec::new();
    for (addr, router) in routes {
        let Some(addr) = addr else { continue };
        match listeners.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, existing)) => *existing = existing.clone().merge(router),
            None => listeners.push((addr, router)),
        }
    }
    listeners
}

/// Waits for every task; the first failure stops the others and is returned.
pub(crate) async fn wait_all(
    mut tasks: JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined.context("task panicked").and_then(|r| r) {
            if result.is_ok() {
                result = Err(e);
            }
            shutdown.cancel();
        }
    }
    result
}

/// Installs the SIGTERM/SIGINT handlers now; cancels `token` on the first.
pub(crate) fn shutdown_on_signal(
    token: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
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
