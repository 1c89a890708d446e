//! `sscsi node`: builds the node plugin from its flags and runs its servers
//! until SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::registry::Registry;
use sscsi_core::ProviderRegistry;
use sscsi_kube::{Client, KubeObserver, SpcCache, SyncPolicy};
use sscsi_mount::{FakeMounter, Mounter, TmpfsMounter};
use sscsi_node::http::{self, HttpState};
use sscsi_node::observer::{NoObserver, VolumeObserver};
use sscsi_node::registration::{self, RegistrationConfig};
use sscsi_node::spc::{DirSpcSource, SpcSource};
use sscsi_node::{Backoff, Endpoint, NodeConfig, Parts, Plugin, Readiness};
use sscsi_provider_kit::BackendStats;
use sscsi_provider_local::LocalProvider;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[cfg(feature = "aws")]
use crate::cli::AwsArgs;
#[cfg(feature = "azure")]
use crate::cli::AzureArgs;
#[cfg(feature = "gcp")]
use crate::cli::GcpArgs;
use crate::cli::NodeArgs;
#[cfg(feature = "vault")]
use crate::cli::VaultArgs;

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
        providers: cloud_providers,
        #[cfg(feature = "vault")]
        vault,
        #[cfg(feature = "azure")]
        azure,
        #[cfg(feature = "gcp")]
        gcp,
        #[cfg(feature = "aws")]
        aws,
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
    };
    let enabled = Enabled::new(cloud_providers).context("--providers")?;
    let providers = providers(local_provider_root)?;
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
    let shutdown = CancellationToken::new();
    let mut registry = Registry::default();
    // Throttled answers and retries of the providers that retry themselves.
    let backend_stats = BackendStats::default();
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
    let mut providers = providers;
    // AWS needs the cluster: the role is a service-account annotation.
    #[cfg(feature = "aws")]
    if let Some(client) = cluster.client.as_ref().filter(|_| enabled.has("aws")) {
        register_aws(&mut providers, client, &config.node_id, aws, &backend_stats).await;
    }
    #[cfg(feature = "vault")]
    if enabled.has("vault") {
        register_vault(&mut providers, cluster.client.as_ref(), vault, &backend_stats);
    }
    #[cfg(feature = "azure")]
    if enabled.has("azure") {
        register_azure(&mut providers, cluster.client.as_ref(), azure)?;
    }
    #[cfg(feature = "gcp")]
    if enabled.has("gcp") {
        register_gcp(&mut providers, cluster.client.as_ref(), gcp);
    }
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
    for (addr, router) in http_listeners(health_addr, metrics_addr, state) {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen on {addr}"))?;
        tracing::info!(%addr, "serving HTTP");
        let stop = shutdown.clone().cancelled_owned();
        tasks
            .spawn(async move { http::serve(listener, router, stop).await.context("HTTP server") });
    }
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

fn mounter(no_tmpfs: bool, tmpfs_size: u64) -> Arc<dyn Mounter> {
    if no_tmpfs {
        tracing::warn!(
            "--no-tmpfs: volumes are plain directories on disk; never use this in production"
        );
        Arc::new(FakeMounter::new())
    } else {
        Arc::new(TmpfsMounter::new(tmpfs_size))
    }
}

/// The providers that need the Kubernetes API (service accounts, tokens).
/// The vault provider needs no cluster: without one it cannot request pod
/// tokens, and its version key lasts as long as the process.
#[cfg(feature = "vault")]
fn register_vault(
    providers: &mut ProviderRegistry,
    client: Option<&Client>,
    args: VaultArgs,
    stats: &BackendStats,
) {
    use sscsi_provider_vault::VaultProvider;
    use sscsi_provider_vault::params::{TlsSettings, VaultDefaults};
    use sscsi_provider_vault::version::KeySource;
    let defaults = VaultDefaults {
        address: args.addr,
        namespace: args.namespace.filter(|n| !n.is_empty()),
        auth_mount: args.mount,
        tls: TlsSettings {
            ca_cert: args.ca_cert,
            ca_directory: args.ca_directory,
            server_name: args.server_name.filter(|n| !n.is_empty()),
            client_cert: args.client_cert,
            client_key: args.client_key,
            skip_verify: args.skip_verify,
        },
    };
    let key = match (client, args.hmac_secret_namespace.filter(|n| !n.is_empty())) {
        (Some(client), Some(namespace)) => {
            KeySource::Secret { client: client.clone(), namespace, name: args.hmac_secret_name }
        }
        _ => KeySource::Process,
    };
    let provider = VaultProvider::new(defaults, client.cloned(), key).with_stats(stats);
    providers.register(Arc::new(provider));
}

/// The azure provider needs no cluster: without one, workload identity
/// needs `clientID` in the class.
#[cfg(feature = "azure")]
fn register_azure(
    providers: &mut ProviderRegistry,
    client: Option<&Client>,
    args: AzureArgs,
) -> anyhow::Result<()> {
    use sscsi_provider_azure::{AzureOptions, AzureProvider};
    let mut resolve = Vec::new();
    for pair in args.resolve.as_deref().unwrap_or_default().split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("--azure-resolve: {pair:?} is not host=ip:port");
        let (host, addr) = pair.split_once('=').with_context(bad)?;
        resolve.push((host.to_owned(), addr.parse().with_context(bad)?));
    }
    let options = AzureOptions {
        default_cloud: args.cloud_name,
        allow_node_identity: args.allow_node_identity,
        separate_cert_and_key: args.separate_cert_and_key,
        extra_ca: args.ca_file.filter(|p| !p.as_os_str().is_empty()),
        resolve,
        http_proxy: args.http_proxy.filter(|p| !p.is_empty()),
        token_proxy_url: args.token_proxy_url,
        sni_name: args.sni_name.filter(|n| !n.is_empty()),
        cluster_ca: args
            .cluster_ca
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| sscsi_provider_azure::binding::DEFAULT_CA_FILE.into()),
    };
    let provider = AzureProvider::new(options, client.cloned()).map_err(anyhow::Error::msg)?;
    providers.register(Arc::new(provider));
    Ok(())
}

/// The gcp provider needs the cluster for service-account annotations and
/// TokenRequest.
#[cfg(feature = "gcp")]
fn register_gcp(providers: &mut ProviderRegistry, client: Option<&Client>, args: GcpArgs) {
    use sscsi_provider_gcp::auth::{AuthEndpoints, WorkloadSettings};
    use sscsi_provider_gcp::{GcpEndpoints, GcpOptions, GcpProvider};
    // An empty value is no value, as the official provider reads its variables.
    let set = |v: Option<String>| v.filter(|v| !v.is_empty());
    let defaults = GcpEndpoints::default();
    let endpoints = GcpEndpoints {
        secret_manager: set(args.secret_manager_endpoint).unwrap_or(defaults.secret_manager),
        regional: set(args.regional_endpoint),
        parameter_manager: set(args.parameter_manager_endpoint)
            .unwrap_or(defaults.parameter_manager),
        auth: AuthEndpoints {
            metadata: set(args.metadata_host)
                .map_or(defaults.auth.metadata, |host| format!("http://{host}")),
            token_exchange: args.token_exchange_endpoint,
            iam: set(args.iam_endpoint).unwrap_or(defaults.auth.iam),
        },
    };
    let options = GcpOptions {
        allow_node_identity: args.allow_node_identity,
        allow_key_json: args.allow_node_publish_secret,
        workload: WorkloadSettings {
            project: args.project.filter(|v| !v.is_empty()),
            cluster_location: args.cluster_location.filter(|v| !v.is_empty()),
            cluster_name: args.cluster_name.filter(|v| !v.is_empty()),
            provider_endpoint: args.workload_identity_endpoint,
            credentials_file: args.credentials_file,
        },
        endpoints,
    };
    providers.register(Arc::new(GcpProvider::new(options, client.cloned())));
}

#[cfg(feature = "aws")]
async fn register_aws(
    providers: &mut ProviderRegistry,
    client: &Client,
    node_id: &str,
    args: AwsArgs,
    stats: &BackendStats,
) {
    use sscsi_provider_aws::{AwsEndpoints, AwsProvider, auth::KubeRoles};
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let roles = Arc::new(KubeRoles::new(client.clone()));
    // The SDK's standard variables, with our two options in their places.
    let endpoints = AwsEndpoints::from_env(|name| match name {
        "SSCSI_AWS_ENDPOINT_URL" => args.endpoint_url.clone(),
        "SSCSI_AWS_POD_IDENTITY_AGENT_URL" => args.pod_identity_agent_url.clone(),
        _ => std::env::var(name).ok(),
    });
    // A class without `region` uses AWS_REGION, else this node's region label.
    let region = match env("AWS_REGION") {
        Some(region) => Some(region),
        None => sscsi_kube::node_region(client, node_id).await,
    };
    let provider = AwsProvider::new(roles, endpoints, region).with_stats(stats);
    providers.register(Arc::new(provider));
}

/// The cloud providers compiled into this binary (`local` always is).
pub const COMPILED: &[&str] = &[
    #[cfg(feature = "aws")]
    "aws",
    #[cfg(feature = "azure")]
    "azure",
    #[cfg(feature = "gcp")]
    "gcp",
    #[cfg(feature = "vault")]
    "vault",
];

/// Which compiled-in cloud providers `--providers` enables (all when unset).
struct Enabled(Option<Vec<String>>);

impl Enabled {
    fn new(names: Option<Vec<String>>) -> anyhow::Result<Self> {
        let names: Option<Vec<String>> = names.map(|n| {
            n.into_iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
        });
        for name in names.iter().flatten() {
            if !COMPILED.contains(&name.as_str()) {
                anyhow::bail!(
                    "unknown provider {name:?}; this binary has: {}",
                    COMPILED.join(", ")
                );
            }
        }
        Ok(Self(names))
    }

    fn has(&self, name: &str) -> bool {
        self.0.as_ref().is_none_or(|names| names.iter().any(|n| n == name))
    }
}

fn providers(local_provider_root: Option<PathBuf>) -> anyhow::Result<ProviderRegistry> {
    let mut providers = ProviderRegistry::new();
    if let Some(root) = local_provider_root {
        let local = LocalProvider::new(&root)
            .with_context(|| format!("--local-provider-root {}", root.display()))?;
        providers.register(Arc::new(local));
    }
    Ok(providers)
}

/// An HTTP listen address flag; empty disables that listener.
fn listen_addr(flag: &str, addr: &str) -> anyhow::Result<Option<SocketAddr>> {
    if addr.is_empty() {
        return Ok(None);
    }
    http::parse_listen_addr(addr).map(Some).map_err(anyhow::Error::msg).context(flag.to_owned())
}

/// One listener per distinct address: health and metrics share one when
/// their flags name the same address.
fn http_listeners(
    health: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
    state: Arc<HttpState>,
) -> Vec<(SocketAddr, axum::Router)> {
    let mut listeners: Vec<(SocketAddr, axum::Router)> = Vec::new();
    for (addr, router) in
        [(health, http::health_routes(state.clone())), (metrics, http::metrics_routes(state))]
    {
        let Some(addr) = addr else { continue };
        match listeners.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, existing)) => *existing = existing.clone().merge(router),
            None => listeners.push((addr, router)),
        }
    }
    listeners
}

/// Waits for every task; the first failure stops the others and is returned.
async fn wait_all(
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
