//! The providers a process serves, from `ProviderArgs`: the node and the
//! controller build them the same way.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use sscsi_core::ProviderRegistry;
use sscsi_kube::Client;
use sscsi_provider_kit::BackendStats;
use sscsi_provider_local::LocalProvider;

#[cfg(feature = "aws")]
use crate::cli::AwsArgs;
#[cfg(feature = "azure")]
use crate::cli::AzureArgs;
#[cfg(feature = "gcp")]
use crate::cli::GcpArgs;
#[cfg(feature = "vault")]
use crate::cli::VaultArgs;
use crate::cli::{ExternalArgs, ProviderArgs};

/// The backend counters of a process, with the node-wide budget per
/// endpoint that `args` sets (`--backend-calls-per-second`).
pub fn backend_stats(args: &ProviderArgs) -> anyhow::Result<BackendStats> {
    let rate = args.backend_calls_per_second;
    let min = sscsi_provider_kit::budget::MIN_CALLS_PER_SECOND;
    if !rate.is_finite() || rate < 0.0 || (rate > 0.0 && rate < min) {
        anyhow::bail!(
            "--backend-calls-per-second: {rate} is not a rate: at least {min}, or 0 for no budget"
        );
    }
    let stats = BackendStats::default();
    Ok(if rate > 0.0 {
        stats.with_budget(sscsi_provider_kit::Budget::new(rate, args.backend_burst))
    } else {
        stats
    })
}

/// Whose credentials the providers read with: the pods' (the node, the
/// controller, the provider server: the default), or those of the person
/// running `sscsi render`.
#[derive(Debug, Default)]
pub struct Caller {
    /// The role every service account assumes with its `sts.amazonaws.com`
    /// token, instead of its annotation.
    #[cfg(feature = "aws")]
    pub aws_role_arn: Option<String>,
    /// AWS reads with the SDK's default credential chain, not a pod's.
    #[cfg(feature = "aws")]
    pub aws_default_chain: bool,
    /// Vault reads with this token instead of logging in as the pod.
    #[cfg(feature = "vault")]
    pub vault_token: Option<sscsi_core::SecretBytes>,
}

/// Every provider `args` enables. `node_id`: the node whose region label
/// is AWS's default region (none for the controller, which has no node).
pub async fn build(
    args: ProviderArgs,
    client: Option<&Client>,
    node_id: Option<&str>,
    stats: &BackendStats,
    caller: Caller,
) -> anyhow::Result<ProviderRegistry> {
    let ProviderArgs {
        local_provider_root,
        providers: cloud_providers,
        backend_calls_per_second: _,
        backend_burst: _,
        #[cfg(feature = "vault")]
        vault,
        #[cfg(feature = "azure")]
        azure,
        #[cfg(feature = "gcp")]
        gcp,
        #[cfg(feature = "aws")]
        aws,
    } = args;
    let enabled = Enabled::new(cloud_providers).context("--providers")?;
    let mut providers = local(local_provider_root)?;
    // AWS needs the cluster (the role is a service-account annotation)
    // unless the caller names the role or brings credentials.
    #[cfg(feature = "aws")]
    if enabled.has("aws")
        && (client.is_some() || caller.aws_role_arn.is_some() || caller.aws_default_chain)
    {
        register_aws(&mut providers, client, node_id, aws, stats, &caller).await;
    }
    #[cfg(feature = "vault")]
    if enabled.has("vault") {
        register_vault(&mut providers, client, vault, stats, caller.vault_token.clone());
    }
    #[cfg(feature = "azure")]
    if enabled.has("azure") {
        register_azure(&mut providers, client, azure, stats)?;
    }
    #[cfg(feature = "gcp")]
    if enabled.has("gcp") {
        register_gcp(&mut providers, client, gcp, stats);
    }
    let _ = (client, node_id, stats, &enabled, &caller);
    tracing::info!(providers = ?providers.names(), "providers");
    Ok(providers)
}

#[cfg(feature = "vault")]
fn register_vault(
    providers: &mut ProviderRegistry,
    client: Option<&Client>,
    args: VaultArgs,
    stats: &BackendStats,
    caller_token: Option<sscsi_core::SecretBytes>,
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
    let mut provider = VaultProvider::new(defaults, client.cloned(), key).with_stats(stats);
    if let Some(token) = caller_token {
        provider = provider.with_caller_token(token);
    }
    providers.register(Arc::new(provider));
}

/// The azure provider needs no cluster: without one, workload identity
/// needs `clientID` in the class.
#[cfg(feature = "azure")]
fn register_azure(
    providers: &mut ProviderRegistry,
    client: Option<&Client>,
    args: AzureArgs,
    stats: &BackendStats,
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
    let provider =
        AzureProvider::new(options, client.cloned()).map_err(anyhow::Error::msg)?.with_stats(stats);
    providers.register(Arc::new(provider));
    Ok(())
}

/// The gcp provider needs the cluster for service-account annotations and
/// TokenRequest.
#[cfg(feature = "gcp")]
fn register_gcp(
    providers: &mut ProviderRegistry,
    client: Option<&Client>,
    args: GcpArgs,
    stats: &BackendStats,
) {
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
    providers.register(Arc::new(GcpProvider::new(options, client.cloned()).with_stats(stats)));
}

#[cfg(feature = "aws")]
async fn register_aws(
    providers: &mut ProviderRegistry,
    client: Option<&Client>,
    node_id: Option<&str>,
    args: AwsArgs,
    stats: &BackendStats,
    caller: &Caller,
) {
    use sscsi_provider_aws::auth::{FixedRole, KubeRoles, RoleLookup};
    use sscsi_provider_aws::{AwsEndpoints, AwsProvider};
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let roles: Arc<dyn RoleLookup> = match (&caller.aws_role_arn, client) {
        (None, Some(client)) => Arc::new(KubeRoles::new(client.clone())),
        (role, _) => Arc::new(FixedRole(role.clone())),
    };
    // The SDK's standard variables, with our two options in their places.
    let endpoints = AwsEndpoints::from_env(|name| match name {
        "SSCSI_AWS_ENDPOINT_URL" => args.endpoint_url.clone(),
        "SSCSI_AWS_POD_IDENTITY_AGENT_URL" => args.pod_identity_agent_url.clone(),
        _ => std::env::var(name).ok(),
    });
    // A class without `region` uses AWS_REGION, else this node's region label.
    let region = match env("AWS_REGION") {
        Some(region) => Some(region),
        None => match (node_id, client) {
            (Some(node_id), Some(client)) => sscsi_kube::node_region(client, node_id).await,
            _ => None,
        },
    };
    let mut provider = AwsProvider::new(roles, endpoints, region).with_stats(stats);
    if caller.aws_default_chain {
        provider = provider.with_default_chain().await;
    }
    providers.register(Arc::new(provider));
}

/// Classes naming a provider `providers` does not serve go to
/// `<dir>/<provider>.sock`, as upstream: a compiled-in provider that is
/// enabled wins over a socket of the same name.
pub fn attach_external(
    providers: &mut ProviderRegistry,
    args: ExternalArgs,
    stats: &BackendStats,
    metrics: &mut prometheus_client::registry::Registry,
    shutdown: &tokio_util::sync::CancellationToken,
) {
    use sscsi_provider_grpc::{ExternalSockets, SocketOptions};
    let mut dirs: Vec<PathBuf> = args
        .additional_provider_volume_paths
        .into_iter()
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect();
    dirs.push(args.provider_volume);
    let served = providers.names();
    let by_socket: Vec<&str> =
        COMPILED.iter().copied().filter(|name| !served.iter().any(|s| s == name)).collect();
    tracing::info!(
        ?dirs, in_process = ?served,
        "classes naming any other provider are served by <dir>/<provider>.sock; an enabled compiled-in provider wins over a socket of its name"
    );
    if !by_socket.is_empty() {
        tracing::info!(providers = ?by_socket, "compiled in but not enabled by --providers: classes naming them go to their sockets");
    }
    let options = SocketOptions {
        dirs,
        max_recv_msg_size: args.max_call_recv_msg_size,
        timeout: args.provider_timeout,
        ..SocketOptions::default()
    };
    let sockets = Arc::new(ExternalSockets::new(options, stats));
    sockets.register(metrics);
    if args.provider_health_check {
        sockets.clone().spawn_health_checks(args.provider_health_check_interval, shutdown.clone());
    }
    providers.set_external(sockets);
}

/// The audiences kubelet requests tokens for on behalf of the enabled
/// providers (the chart's CSIDriver `tokenRequests`): what the controller
/// requests when no `--token-request-audience` is given. GCP's audience is
/// the cluster's workload identity pool; without it the provider requests
/// its own token.
pub fn kubelet_audiences(providers: &ProviderRegistry) -> Vec<String> {
    let names = providers.names();
    let has = |name: &str| names.iter().any(|n| n == name);
    let mut audiences = Vec::new();
    if has("aws") {
        audiences.extend(["sts.amazonaws.com", "pods.eks.amazonaws.com"]);
    }
    if has("azure") {
        audiences.push("api://AzureADTokenExchange");
    }
    if has("vault") {
        audiences.push("vault");
    }
    audiences.into_iter().map(str::to_owned).collect()
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

fn local(local_provider_root: Option<PathBuf>) -> anyhow::Result<ProviderRegistry> {
    let mut providers = ProviderRegistry::new();
    if let Some(root) = local_provider_root {
        let local = LocalProvider::new(&root)
            .with_context(|| format!("--local-provider-root {}", root.display()))?;
        providers.register(Arc::new(local));
    }
    Ok(providers)
}
