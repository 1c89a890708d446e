use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// The Kubernetes Secrets Store CSI driver as one binary: secrets from cloud
/// secret stores mounted into pods as files on tmpfs.
#[derive(Debug, Parser)]
#[command(name = "sscsi", version, about, long_about = None, args_override_self = true)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log filter, e.g. `info` or `sscsi_node=debug` (default: info for
    /// `node`, warn for `demo`; RUST_LOG is read when this is unset).
    #[arg(long, env = "SSCSI_LOG_LEVEL", global = true)]
    pub log_level: Option<String>,
    /// Log JSON lines instead of text.
    #[arg(long = "log-format-json", env = "SSCSI_LOG_FORMAT_JSON", global = true)]
    pub log_format_json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the CSI node plugin (what the DaemonSet runs on every node).
    Node(Box<NodeArgs>),
    /// Run the SecretSync controller: a Kubernetes Secret per SecretSync
    /// (secret-sync.x-k8s.io/v1alpha1), without a pod, kept in rotation
    /// (what the chart's `syncController` Deployment runs).
    Controller(Box<ControllerArgs>),
    /// Print the CustomResourceDefinitions (SecretProviderClass,
    /// SecretProviderClassPodStatus, SecretSync) as YAML, for `kubectl apply -f -`.
    Crds,
    /// Publish a secret volume through the real CSI server, locally: no
    /// cluster and no cloud needed. Uses real tmpfs when run as root.
    Demo(DemoArgs),
    /// Serve one compiled-in provider over the upstream provider API
    /// (v1alpha1) on a unix socket, in place of its official provider
    /// DaemonSet, for a cluster that still runs the upstream driver.
    ProviderServer(Box<ProviderServerArgs>),
    /// Check SecretProviderClasses and SecretSyncs offline with the rules a
    /// mount applies (each provider's own parameter rules): every problem is
    /// printed with its file, object and field; the exit code is 1 when any
    /// is found.
    Check(CheckArgs),
    /// Fetch what a pod would see of a SecretProviderClass into a local
    /// directory, with your own credentials (AWS: the SDK's default chain;
    /// Vault: VAULT_TOKEN) or a service-account token file: the same files,
    /// layout, modes and built files as the volume, nothing outside it.
    Render(Box<RenderArgs>),
    /// Audit the cluster of the kubeconfig as the hardening guides ask:
    /// classes by namespace and provider, which sync into Secrets and where,
    /// the Secrets the driver manages and their owners, classes and pods
    /// reading with the node's identity, and SecretSyncs. Reads no secret.
    Audit(AuditArgs),
    /// Print the version, the providers built in and how many CA certificates
    /// the system store holds (what TLS to the clouds trusts).
    Version,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// CSI endpoint kubelet connects to.
    #[arg(long, env = "SSCSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    pub endpoint: String,
    /// This node's name, reported in NodeGetInfo (the chart passes
    /// spec.nodeName). Defaults to the host name.
    #[arg(long, env = "SSCSI_NODE_ID")]
    pub nodeid: Option<String>,
    /// CSI driver name; must match the CSIDriver object.
    #[arg(long, env = "SSCSI_DRIVER_NAME", default_value = sscsi_node::DEFAULT_DRIVER_NAME)]
    pub drivername: String,
    /// Re-fetch mounted secrets on kubelet's periodic republish
    /// (needs `requiresRepublish: true` on the CSIDriver).
    #[arg(long, env = "SSCSI_ENABLE_SECRET_ROTATION")]
    pub enable_secret_rotation: bool,
    /// Least time between two fetches of one volume when rotation is on
    /// (Go duration syntax: 2m, 30s, 1h30m).
    #[arg(long, env = "SSCSI_ROTATION_POLL_INTERVAL", default_value = "2m", value_parser = parse_duration)]
    pub rotation_poll_interval: Duration,
    /// The shortest interval a class may set for itself
    /// (`sscsi.io/refresh: 30s`); a class asking less gets this.
    #[arg(long, env = "SSCSI_MIN_ROTATION_POLL_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub min_rotation_poll_interval: Duration,
    /// Each volume keeps the SecretProviderClass of its first mount until
    /// the pod restarts, so an edit of the class cannot break a rollout
    /// midway; the pod status object records the generation.
    #[arg(long, env = "SSCSI_PIN_CLASS_GENERATION")]
    pub pin_class_generation: bool,
    /// While a backend is down or throttling, mount a new pod's volume from
    /// the copy this node fetched within this long for the same identity
    /// (class and generation, namespace, service account, every attribute),
    /// with a Warning event, and fetch it again at each republish until the
    /// backend answers, rotation on or off (the CSIDriver needs
    /// `requiresRepublish`). In memory only; off unless set (Go duration:
    /// 10m, 1h).
    #[arg(long, env = "SSCSI_SERVE_LAST_KNOWN_GOOD", value_parser = parse_duration)]
    pub serve_last_known_good: Option<Duration>,
    /// Mirror SecretProviderClass `secretObjects` into Kubernetes Secrets
    /// after each successful fetch (chart `syncSecret.enabled`).
    #[arg(long, env = "SSCSI_ENABLE_SECRET_SYNC")]
    pub enable_secret_sync: bool,
    /// Namespaces Secrets may be synced into (comma-separated); all when
    /// unset. A pod elsewhere gets a Warning event instead.
    #[arg(long, env = "SSCSI_SYNC_ALLOWED_NAMESPACES", value_delimiter = ',')]
    pub sync_allowed_namespaces: Option<Vec<String>>,
    /// Listen address for Prometheus `/metrics` (`:8095` is every
    /// interface); empty disables it.
    #[arg(long, env = "SSCSI_METRICS_ADDR", default_value = ":8095")]
    pub metrics_addr: String,
    /// Label each volume's `sscsi_volume_fetch_age_seconds` with its pod's
    /// name: one series per volume instead of per class, so the number of
    /// series grows with the pods.
    #[arg(long, env = "SSCSI_METRICS_POD_LABELS")]
    pub metrics_pod_labels: bool,
    /// Listen address for `/healthz` and `/readyz` (what the livenessprobe
    /// sidecar served upstream); may equal --metrics-addr; empty disables it.
    #[arg(long, env = "SSCSI_HEALTH_ADDR", default_value = ":9808")]
    pub health_addr: String,
    /// Kubelet's plugin registry directory as mounted in this container
    /// (e.g. /registration for /var/lib/kubelet/plugins_registry). When set,
    /// sscsi registers itself with kubelet (no node-driver-registrar needed)
    /// and is ready only once kubelet confirms.
    #[arg(long, env = "SSCSI_PLUGIN_REGISTRATION_DIR")]
    pub plugin_registration_dir: Option<PathBuf>,
    /// The CSI socket path on the host, as kubelet dials it (e.g.
    /// /var/lib/kubelet/plugins/csi-secrets-store/csi.sock). Defaults to
    /// the --endpoint path.
    #[arg(long, env = "SSCSI_KUBELET_REGISTRATION_PATH")]
    pub kubelet_registration_path: Option<String>,
    /// Size cap of each volume's tmpfs (64Mi, 1Gi, 512Ki or bytes).
    #[arg(long, env = "SSCSI_TMPFS_SIZE", default_value = "64Mi", value_parser = sscsi_mount::parse_size)]
    pub tmpfs_size: u64,
    /// Read SecretProviderClasses from the YAML files of this directory
    /// instead of the Kubernetes API (development without a cluster; no
    /// pod status objects or events are written then).
    #[arg(long, env = "SSCSI_SPC_DIR")]
    pub spc_dir: Option<PathBuf>,
    /// Kubeconfig file for running outside a cluster. Default: the pod's
    /// service account, else the file KUBECONFIG names.
    #[arg(long, env = "SSCSI_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Development only: write volumes to plain directories on the node's
    /// disk instead of tmpfs, so the node plugin runs without root.
    #[arg(long, env = "SSCSI_NO_TMPFS")]
    pub no_tmpfs: bool,

    #[command(flatten, next_help_heading = "External providers (the upstream provider API)")]
    pub external: ExternalArgs,

    #[command(flatten)]
    pub provider: ProviderArgs,
}

/// Where providers that are not compiled in listen, with upstream's flag
/// names and defaults: a class naming one is served by `<dir>/<name>.sock`.
#[derive(Debug, Clone, Args)]
pub struct ExternalArgs {
    /// Directory of provider sockets, searched after
    /// --additional-provider-volume-paths.
    #[arg(long, env = "SSCSI_PROVIDER_VOLUME", default_value = sscsi_provider_grpc::DEFAULT_PROVIDER_DIR)]
    pub provider_volume: PathBuf,
    /// More directories of provider sockets, comma-separated, searched
    /// first; empty for none.
    #[arg(
        long,
        env = "SSCSI_ADDITIONAL_PROVIDER_VOLUME_PATHS",
        value_delimiter = ',',
        default_value = sscsi_provider_grpc::DEFAULT_ADDITIONAL_DIR
    )]
    pub additional_provider_volume_paths: Vec<String>,
    /// The largest answer taken from a provider, in bytes.
    #[arg(long, env = "SSCSI_MAX_CALL_RECV_MSG_SIZE", default_value_t = sscsi_provider_grpc::DEFAULT_MAX_RECV_MSG_SIZE)]
    pub max_call_recv_msg_size: usize,
    /// How long one call to a provider may take, its retries included
    /// (upstream has none of its own; this ends before kubelet's 2 min).
    #[arg(long, env = "SSCSI_PROVIDER_TIMEOUT", default_value = "100s", value_parser = parse_duration)]
    pub provider_timeout: Duration,
    /// Ask every provider in use for its Version periodically; failures are
    /// logged and `sscsi_external_provider_up` says 0.
    #[arg(long, env = "SSCSI_PROVIDER_HEALTH_CHECK")]
    pub provider_health_check: bool,
    /// How often --provider-health-check asks.
    #[arg(long, env = "SSCSI_PROVIDER_HEALTH_CHECK_INTERVAL", default_value = "2m", value_parser = parse_duration)]
    pub provider_health_check_interval: Duration,
}

#[derive(Debug, Args)]
pub struct ProviderServerArgs {
    /// The compiled-in provider to serve: aws, azure, gcp, vault (or local
    /// with --local-provider-root).
    #[arg(long = "provider", env = "SSCSI_PROVIDER")]
    pub name: String,
    /// The socket to listen on; the upstream driver dials
    /// `<its provider dir>/<name>.sock`. Default:
    /// /var/run/secrets-store-csi-providers/<provider>.sock.
    #[arg(long, env = "SSCSI_PROVIDER_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Listen address for Prometheus `/metrics`; empty disables it.
    #[arg(long, env = "SSCSI_METRICS_ADDR", default_value = ":8098")]
    pub metrics_addr: String,
    /// Listen address for `/healthz` and `/readyz`; empty disables it.
    #[arg(long, env = "SSCSI_HEALTH_ADDR", default_value = ":8099")]
    pub health_addr: String,
    /// Kubeconfig file for running outside a cluster. Default: the pod's
    /// service account, else the file KUBECONFIG names; without either,
    /// providers that read service accounts (aws roles) are not available.
    #[arg(long, env = "SSCSI_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    #[command(flatten)]
    pub provider: ProviderArgs,
}

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// How often every SecretSync is fetched again (version-aware: an
    /// unchanged secret costs a cheap check and no write); 0s turns rotation off.
    #[arg(long, env = "SSCSI_ROTATION_POLL_INTERVAL", default_value = "2m", value_parser = parse_duration)]
    pub rotation_poll_interval: Duration,
    /// Audiences of the service-account tokens requested for each
    /// SecretSync's service account, comma-separated (one TokenRequest each,
    /// 600 s, as upstream). Default: those the enabled providers take from
    /// kubelet (AWS sts.amazonaws.com and pods.eks.amazonaws.com, Azure
    /// api://AzureADTokenExchange, Vault vault).
    #[arg(long, env = "SSCSI_TOKEN_REQUEST_AUDIENCE", value_delimiter = ',')]
    pub token_request_audience: Option<Vec<String>>,
    /// Namespaces SecretSyncs are served in (comma-separated); all when
    /// unset. A SecretSync elsewhere gets a False condition.
    #[arg(long, env = "SSCSI_SYNC_ALLOWED_NAMESPACES", value_delimiter = ',')]
    pub sync_allowed_namespaces: Option<Vec<String>>,
    /// Run only while holding the Lease (for more than one replica).
    #[arg(long, env = "SSCSI_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the Lease. Default: this pod's namespace.
    #[arg(long, env = "SSCSI_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the Lease; upstream's, so sscsi and the upstream controller
    /// never write at the same time during a migration.
    #[arg(long, env = "SSCSI_LEADER_ELECTION_ID", default_value = "29f1d54e.secret-sync.x-k8s.io")]
    pub leader_election_id: String,
    /// SecretSyncs synced at once.
    #[arg(long, env = "SSCSI_CONCURRENT_SYNCS", default_value_t = 16)]
    pub concurrent_syncs: u16,
    /// Listen address for Prometheus `/metrics`; empty disables it.
    #[arg(long, env = "SSCSI_METRICS_BIND_ADDRESS", default_value = ":8085")]
    pub metrics_bind_address: String,
    /// Listen address for `/healthz` and `/readyz`; empty disables it.
    #[arg(long, env = "SSCSI_HEALTH_PROBE_BIND_ADDRESS", default_value = ":8081")]
    pub health_probe_bind_address: String,
    /// This pod's name (the chart sets it from the downward API): passed to
    /// providers as `csi.storage.k8s.io/pod.name`, as upstream does, and the
    /// start of the Lease identity.
    #[arg(long, env = "SYNC_CONTROLLER_POD_NAME", default_value = "")]
    pub pod_name: String,
    /// This pod's uid: passed to providers as `csi.storage.k8s.io/pod.uid`.
    #[arg(long, env = "SYNC_CONTROLLER_POD_UID", default_value = "")]
    pub pod_uid: String,
    /// This pod's namespace: the Lease's, unless --leader-election-namespace says otherwise.
    #[arg(long, env = "SYNC_CONTROLLER_POD_NAMESPACE", default_value = "")]
    pub pod_namespace: String,
    /// Kubeconfig file for running outside a cluster. Default: the pod's
    /// service account, else the file KUBECONFIG names.
    #[arg(long, env = "SSCSI_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    #[command(flatten, next_help_heading = "External providers (the upstream provider API)")]
    pub external: ExternalArgs,

    #[command(flatten)]
    pub provider: ProviderArgs,
}

/// Which providers serve, and their settings: the same for the node and the controller.
#[derive(Debug, Args)]
pub struct ProviderArgs {
    /// Enable the `local` provider, serving files under this directory.
    #[arg(long, env = "SSCSI_LOCAL_PROVIDER_ROOT")]
    pub local_provider_root: Option<PathBuf>,
    /// The cloud providers to serve, comma-separated (default: every one compiled in).
    #[arg(long, env = "SSCSI_PROVIDERS", value_delimiter = ',')]
    pub providers: Option<Vec<String>>,
    /// A node-wide budget per backend endpoint (a Vault address, a Key Vault,
    /// an AWS service in a region, a Secret Manager endpoint): at most this
    /// many calls a second from every volume and refresh together; calls
    /// over it wait their turn (`sscsi_backend_queued_total`), and a
    /// `Retry-After` holds them all (a minute at most). At least 0.01; 0: no
    /// budget.
    #[arg(long, env = "SSCSI_BACKEND_CALLS_PER_SECOND", default_value_t = 0.0)]
    pub backend_calls_per_second: f64,
    /// Calls to one endpoint that may go at once within the budget.
    #[arg(long, env = "SSCSI_BACKEND_BURST", default_value_t = 20)]
    pub backend_burst: u32,

    #[cfg(feature = "vault")]
    #[command(flatten, next_help_heading = "Vault provider (defaults for classes that set none)")]
    pub vault: VaultArgs,

    #[cfg(feature = "azure")]
    #[command(flatten, next_help_heading = "Azure provider")]
    pub azure: AzureArgs,

    #[cfg(feature = "gcp")]
    #[command(flatten, next_help_heading = "GCP provider")]
    pub gcp: GcpArgs,

    #[cfg(feature = "aws")]
    #[command(flatten, next_help_heading = "AWS provider")]
    pub aws: AwsArgs,
}

/// The gcp provider's settings, under the official provider's environment names.
#[cfg(feature = "gcp")]
#[derive(Debug, Clone, clap::Args)]
pub struct GcpArgs {
    /// Allow `auth: provider-adc`, which reads secrets as the driver's own identity.
    #[arg(
        id = "gcp_allow_node_identity",
        long = "gcp-allow-node-identity",
        env = "SSCSI_GCP_ALLOW_NODE_IDENTITY"
    )]
    pub allow_node_identity: bool,
    /// Honour a nodePublishSecretRef `key.json` (a Google credentials file).
    #[arg(long = "gcp-allow-node-publish-secret", env = "ALLOW_NODE_PUBLISH_SECRET")]
    pub allow_node_publish_secret: bool,
    /// The cluster's project; else the metadata server's.
    #[arg(long = "gcp-project", env = "PROJECT")]
    pub project: Option<String>,
    /// The cluster's location; else the metadata server's `cluster-location`.
    #[arg(long = "gcp-cluster-location", env = "CLUSTER_LOCATION")]
    pub cluster_location: Option<String>,
    /// The cluster's name; else the metadata server's `cluster-name`.
    #[arg(long = "gcp-cluster-name", env = "CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// The prefix of the cluster's identity provider.
    #[arg(
        long = "gcp-workload-identity-endpoint",
        env = "GKE_WORKLOAD_IDENTITY_ENDPOINT",
        default_value = "https://container.googleapis.com/v1"
    )]
    pub workload_identity_endpoint: String,
    /// A fleet workload identity `external_account` file, used when the cluster is unknown.
    #[arg(long = "gcp-credentials-file", env = "GOOGLE_APPLICATION_CREDENTIALS")]
    pub credentials_file: Option<PathBuf>,
    /// The identity binding token endpoint.
    #[arg(
        long = "gcp-token-exchange-endpoint",
        env = "GAIA_TOKEN_EXCHANGE_ENDPOINT",
        default_value = "https://securetoken.googleapis.com/v1/identitybindingtoken"
    )]
    pub token_exchange_endpoint: String,
    /// Secret Manager's endpoint (a private endpoint, a test server) [default:
    /// https://secretmanager.googleapis.com].
    #[arg(
        long = "gcp-secret-manager-endpoint",
        env = "SSCSI_GCP_SECRET_MANAGER_ENDPOINT",
        hide_short_help = true
    )]
    pub secret_manager_endpoint: Option<String>,
    /// The endpoint of regional secrets (`projects/*/locations/*/secrets/*`), instead of
    /// `https://secretmanager.<location>.rep.googleapis.com`.
    #[arg(
        long = "gcp-regional-endpoint",
        env = "SSCSI_GCP_REGIONAL_ENDPOINT",
        hide_short_help = true
    )]
    pub regional_endpoint: Option<String>,
    /// Parameter Manager's endpoint [default: https://parametermanager.googleapis.com].
    #[arg(
        long = "gcp-parameter-manager-endpoint",
        env = "SSCSI_GCP_PARAMETER_MANAGER_ENDPOINT",
        hide_short_help = true
    )]
    pub parameter_manager_endpoint: Option<String>,
    /// IAM Credentials' endpoint, for service account impersonation [default:
    /// https://iamcredentials.googleapis.com].
    #[arg(long = "gcp-iam-endpoint", env = "SSCSI_GCP_IAM_ENDPOINT", hide_short_help = true)]
    pub iam_endpoint: Option<String>,
    /// The metadata server's host[:port], as the Google libraries read it [default:
    /// metadata.google.internal].
    #[arg(long = "gcp-metadata-host", env = "GCE_METADATA_HOST", hide_short_help = true)]
    pub metadata_host: Option<String>,
}

/// The aws provider's endpoints beyond the SDK's standard `AWS_ENDPOINT_URL*`
/// variables (which it honours as ASCP does).
#[cfg(feature = "aws")]
#[derive(Debug, Clone, clap::Args)]
pub struct AwsArgs {
    /// Every AWS API at this URL, as `AWS_ENDPOINT_URL` (a VPC endpoint, a test server).
    #[arg(long = "aws-endpoint-url", env = "SSCSI_AWS_ENDPOINT_URL", hide_short_help = true)]
    pub endpoint_url: Option<String>,
    /// The EKS Pod Identity agent's credentials URL, instead of the node's
    /// `169.254.170.23` / `[fd00:ec2::23]`.
    #[arg(
        long = "aws-pod-identity-agent-url",
        env = "SSCSI_AWS_POD_IDENTITY_AGENT_URL",
        hide_short_help = true
    )]
    pub pod_identity_agent_url: Option<String>,
}

/// The azure provider's settings, with the official provider's meanings.
#[cfg(feature = "azure")]
#[derive(Debug, Clone, clap::Args)]
pub struct AzureArgs {
    /// Cloud of classes without `cloudName` (AzurePublicCloud, AzureUSGovernmentCloud,
    /// AzureChinaCloud, AzureGermanCloud).
    #[arg(
        long = "azure-cloud-name",
        env = "SSCSI_AZURE_CLOUD_NAME",
        default_value = "AzurePublicCloud"
    )]
    pub cloud_name: String,
    /// Allow `useVMManagedIdentity` and `usePodIdentity`, which authenticate as the node
    /// or through the node's aad-pod-identity agent, not as the pod.
    #[arg(long = "azure-allow-node-identity", env = "SSCSI_AZURE_ALLOW_NODE_IDENTITY")]
    pub allow_node_identity: bool,
    /// Also write `<file>.crt` and `<file>.key` next to each certificate's PEM file.
    #[arg(
        long = "azure-write-cert-and-key-in-separate-files",
        env = "SSCSI_AZURE_WRITE_CERT_AND_KEY_IN_SEPARATE_FILES"
    )]
    pub separate_cert_and_key: bool,
    /// AKS identity binding's token proxy (`useAzureTokenProxy`).
    #[arg(long = "azure-token-proxy-url", env = "SSCSI_AZURE_TOKEN_PROXY_URL", default_value = sscsi_provider_azure::binding::DEFAULT_TOKEN_PROXY_URL)]
    pub token_proxy_url: String,
    /// The token proxy's TLS server name; derived from the cluster id in the API server's
    /// certificate when unset.
    #[arg(long = "azure-sni-name", env = "SSCSI_AZURE_SNI_NAME")]
    pub sni_name: Option<String>,
    /// The cluster CA the token proxy's certificate is checked against [default: the
    /// service account's ca.crt].
    #[arg(long = "azure-cluster-ca", env = "SSCSI_AZURE_CLUSTER_CA", hide_short_help = true)]
    pub cluster_ca: Option<PathBuf>,
    /// Host names answered with fixed addresses, `host=ip:port,...` (a test server
    /// standing in for Key Vault and Entra ID).
    #[arg(long = "azure-resolve", env = "SSCSI_AZURE_RESOLVE", hide_short_help = true)]
    pub resolve: Option<String>,
    /// A PEM file of CAs to trust besides the system's.
    #[arg(long = "azure-ca-file", env = "SSCSI_AZURE_CA_FILE", hide_short_help = true)]
    pub ca_file: Option<PathBuf>,
    /// A proxy for plain-HTTP requests: the node endpoints (IMDS, NMI).
    #[arg(long = "azure-http-proxy", env = "SSCSI_AZURE_HTTP_PROXY", hide_short_help = true)]
    pub http_proxy: Option<String>,
}

/// The vault provider's defaults, with vault-csi-provider's flag names; a
/// class's parameters override them. Unset flags fall back to Vault's own
/// environment variables.
#[cfg(feature = "vault")]
#[derive(Debug, Clone, clap::Args)]
pub struct VaultArgs {
    /// Vault address for classes without `vaultAddress`.
    #[arg(long = "vault-addr", env = "VAULT_ADDR", default_value = sscsi_provider_vault::params::DEFAULT_ADDRESS)]
    pub addr: String,
    /// Vault namespace for classes without `vaultNamespace`.
    #[arg(long = "vault-namespace", env = "VAULT_NAMESPACE")]
    pub namespace: Option<String>,
    /// Auth mount (kubernetes or jwt) for classes without `vaultAuthMountPath`.
    #[arg(long = "vault-mount", default_value = sscsi_provider_vault::params::DEFAULT_AUTH_MOUNT)]
    pub mount: String,
    /// PEM file of CAs to trust for Vault.
    #[arg(long = "vault-tls-ca-cert", env = "VAULT_CACERT")]
    pub ca_cert: Option<PathBuf>,
    /// Directory of PEM files of CAs to trust for Vault.
    #[arg(long = "vault-tls-ca-directory", env = "VAULT_CAPATH")]
    pub ca_directory: Option<PathBuf>,
    /// Name to expect in Vault's certificate, when not the address's host.
    #[arg(long = "vault-tls-server-name", env = "VAULT_TLS_SERVER_NAME")]
    pub server_name: Option<String>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long = "vault-tls-client-cert", env = "VAULT_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[arg(long = "vault-tls-client-key", env = "VAULT_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,
    /// Accept any certificate from Vault (unsafe).
    #[arg(long = "vault-tls-skip-verify", env = "VAULT_SKIP_VERIFY")]
    pub skip_verify: bool,
    /// Secret holding the key of vault object versions (created when missing).
    #[arg(
        long = "hmac-secret-name",
        env = "SSCSI_VAULT_HMAC_SECRET_NAME",
        default_value = "sscsi-vault-hmac-key"
    )]
    pub hmac_secret_name: String,
    /// The driver's namespace, where that Secret lives; without it the key
    /// lasts as long as the process.
    #[arg(long = "hmac-secret-namespace", env = "POD_NAMESPACE")]
    pub hmac_secret_namespace: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Files to read: YAML, several documents as kubectl writes them, or a
    /// `kubectl get -o yaml` List; `-` reads standard input; of a `.md`
    /// file, its ```yaml blocks.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// `text`: one line per problem; `json`: a report for CI
    /// (`{"checked", "skipped", "problems": [{"source", "document", "kind",
    /// "namespace", "name", "field", "message"}]}`).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The file holding the SecretProviderClass (YAML): its first one, or
    /// the one --name names.
    #[arg(long, value_name = "FILE")]
    pub class: PathBuf,
    /// Which SecretProviderClass of the file.
    #[arg(long)]
    pub name: Option<String>,
    /// The directory to write, created when missing; laid out as the volume
    /// (`..<timestamp>/` files, `..data` and the top-level links).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The pod's namespace (default: the class's).
    #[arg(long = "namespace")]
    pub pod_namespace: Option<String>,
    /// The pod's service account.
    #[arg(long, default_value = "default")]
    pub service_account: String,
    /// The pod's name.
    #[arg(long = "pod", default_value = "sscsi-render")]
    pub pod_name: String,
    /// A service-account token as kubelet would pass it, for an audience
    /// (`sts.amazonaws.com=token.jwt`, `vault=token.jwt`); repeatable. With
    /// one for a provider's audience, that provider acts as the pod.
    #[arg(long = "token-file", value_name = "AUDIENCE=FILE")]
    pub token_files: Vec<String>,
    /// A key of the volume's nodePublishSecretRef Secret; repeatable.
    #[arg(long = "secret-file", value_name = "KEY=FILE")]
    pub secret_files: Vec<String>,
    /// A volume attribute (the pod's `csi.volumeAttributes`); repeatable.
    #[arg(long = "attribute", value_name = "KEY=VALUE")]
    pub attributes: Vec<String>,
    /// AWS with a `sts.amazonaws.com` token: the role to assume, instead of
    /// the service account's `eks.amazonaws.com/role-arn` (which needs
    /// --kubeconfig).
    #[arg(long)]
    pub aws_role_arn: Option<String>,
    /// Vault: read with this token instead of VAULT_TOKEN or a login.
    #[arg(long, value_name = "FILE")]
    pub vault_token_file: Option<PathBuf>,
    /// A cluster to read service-account annotations from and request
    /// tokens of; none by default.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    #[command(flatten, next_help_heading = "External providers (the upstream provider API)")]
    pub external: ExternalArgs,

    #[command(flatten)]
    pub provider: ProviderArgs,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Kubeconfig file. Default: KUBECONFIG, else ~/.kube/config, else the
    /// pod's service account.
    #[arg(long, env = "SSCSI_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// `text`: sections for people; `json`: the same for tools.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo's working directory instead of removing it.
    #[arg(long)]
    pub keep: bool,
}

/// A duration flag: `2m`, `30s`, `1h30m`, `500ms`, `0s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    sscsi_core::params::parse_duration(s)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "2", "m", "2x", "-1s", "1.5m", "2m3"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn node_flags_are_named_as_upstream() {
        let cli = Cli::try_parse_from([
            "sscsi",
            "node",
            "--endpoint=unix:///csi/csi.sock",
            "--nodeid=n1",
            "--drivername=secrets-store.csi.k8s.io",
            "--enable-secret-rotation",
            "--rotation-poll-interval=30s",
            "--metrics-addr=:8095",
            "--log-format-json",
        ])
        .unwrap();
        let Command::Node(args) = cli.command else { panic!("not node") };
        assert!(args.enable_secret_rotation);
        assert_eq!(args.rotation_poll_interval, Duration::from_secs(30));
        assert_eq!(args.tmpfs_size, 64 << 20);
        assert!(cli.log.log_format_json);
    }

    #[test]
    fn a_budget_is_a_rate_of_at_least_one_call_in_100_seconds() {
        let budget = |rate: &str| {
            let flag = format!("--backend-calls-per-second={rate}");
            let cli = Cli::try_parse_from(["sscsi", "node", flag.as_str()]).unwrap();
            let Command::Node(args) = cli.command else { panic!("not node") };
            crate::providers::backend_stats(&args.provider).map(|_| ()).map_err(|e| e.to_string())
        };
        for good in ["0", "0.01", "20"] {
            assert_eq!(budget(good), Ok(()), "{good}");
        }
        for bad in ["-1", "NaN", "inf", "1e-300"] {
            let error = budget(bad).unwrap_err();
            assert!(error.starts_with("--backend-calls-per-second: "), "{error}");
            assert!(error.contains("at least 0.01, or 0 for no budget"), "{error}");
        }
    }
}
