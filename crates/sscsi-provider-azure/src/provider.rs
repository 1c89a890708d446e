//! The `azure` provider: parameters → cloud → identity → Key Vault reads →
//! files and versions.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::http::{ClientOptions, Transport, Url};
use sscsi_core::{
    ErrorCode, MountRequest, MountResponse, ObjectVersion, Provider, ProviderError,
    ProviderFailure, SecretFile,
};
use sscsi_provider_kit::{BackendStats, CallStats, Coalescer};

use crate::auth::{Annotations, AuthError, Channels, Credentials, WORKLOAD_IDENTITY_AUDIENCE};
use crate::binding::{
    DEFAULT_CA_FILE, DEFAULT_TOKEN_PROXY_URL, IDENTITY_BINDING_AUDIENCE, ProxyClient, cluster_id,
    sni_name,
};
use crate::cloud::{CloudError, resolve};
use crate::keyvault::{FetchError, Part, Vault, history};
use crate::params::{AzureParams, IdentityMode, KeyVaultObject, ParamsError};

pub const NAME: &str = "azure";

#[derive(Debug, thiserror::Error)]
pub enum AzureError {
    #[error(transparent)]
    Params(#[from] ParamsError),
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(
        "failed to get objectType:{object_type}, objectName:{name}, objectVersion:{version}: the version is not among the enabled versions"
    )]
    NoSuchVersion { object_type: String, name: String, version: String },
    #[error("failed to build auth config for mode AzureTokenProxy: token proxy: {0}")]
    TokenProxy(String),
}

impl ProviderFailure for AzureError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Params(_) | Self::Cloud(_) => ErrorCode::InvalidArgument,
            Self::Auth(AuthError::ServiceAccount { .. } | AuthError::Credential(_)) => {
                ErrorCode::Unavailable
            }
            Self::Auth(_) => ErrorCode::FailedPrecondition,
            Self::Fetch(e) => e.code(),
            Self::NoSuchVersion { .. } => ErrorCode::NotFound,
            Self::TokenProxy(_) => ErrorCode::Unavailable,
        }
    }
}

/// The driver's settings for the provider.
#[derive(Debug, Clone)]
pub struct AzureOptions {
    /// The cloud of classes without `cloudName` (upstream's `--cloud-name`).
    pub default_cloud: String,
    /// Allow `useVMManagedIdentity` and `usePodIdentity`, which act as the node.
    pub allow_node_identity: bool,
    /// Also write `<file>.crt` and `<file>.key` for certificates (upstream's
    /// `--write-cert-and-key-in-separate-files`).
    pub separate_cert_and_key: bool,
    /// CAs to trust besides the system's (a test server's).
    pub extra_ca: Option<PathBuf>,
    /// Host names resolved to fixed addresses (a test server's).
    pub resolve: Vec<(String, SocketAddr)>,
    /// A proxy for plain-HTTP requests: the node endpoints (IMDS, NMI) of a
    /// test server.
    pub http_proxy: Option<String>,
    /// AKS identity binding: the token proxy (upstream's `--token-proxy-url`),
    /// its TLS server name (`--sni-name`; derived from the cluster id in the
    /// API server's certificate when unset), and the cluster CA.
    pub token_proxy_url: String,
    pub sni_name: Option<String>,
    pub cluster_ca: PathBuf,
}

impl Default for AzureOptions {
    fn default() -> Self {
        Self {
            default_cloud: "AzurePublicCloud".into(),
            allow_node_identity: false,
            separate_cert_and_key: false,
            extra_ca: None,
            resolve: Vec::new(),
            http_proxy: None,
            token_proxy_url: DEFAULT_TOKEN_PROXY_URL.into(),
            sni_name: None,
            cluster_ca: DEFAULT_CA_FILE.into(),
        }
    }
}

pub struct AzureProvider {
    options: AzureOptions,
    kube: Option<kube::Client>,
    http: reqwest::Client,
    credentials: Credentials,
    annotations: Annotations,
    vaults: Mutex<HashMap<(String, String), Vault>>,
    /// The AKS token proxy's client, made at the first identity-binding mount.
    proxy: tokio::sync::OnceCell<Arc<ProxyClient>>,
    /// Reads by (identity, vault, type, name, version): mounts of one
    /// object by one identity share one request.
    reads: Arc<Coalescer<Result<Vec<Part>, FetchError>>>,
    /// Where Key Vault calls and shared reads are counted.
    stats: CallStats,
}

impl std::fmt::Debug for AzureProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureProvider").field("options", &self.options).finish_non_exhaustive()
    }
}

impl AzureProvider {
    pub fn new(options: AzureOptions, kube: Option<kube::Client>) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder();
        if let Some(path) = &options.extra_ca {
            let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            builder = builder.tls_certs_merge(certs);
        }
        if let Some(proxy) = &options.http_proxy {
            builder =
                builder.proxy(reqwest::Proxy::http(proxy).map_err(|e| format!("{proxy}: {e}"))?);
        }
        for (host, addr) in &options.resolve {
            builder = builder.resolve(host, *addr);
        }
        let http = builder.build().map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            options,
            kube,
            http,
            credentials: Credentials::default(),
            annotations: Annotations::default(),
            vaults: Mutex::default(),
            proxy: tokio::sync::OnceCell::new(),
            reads: Arc::default(),
            stats: CallStats::default(),
        })
    }

    /// Counts Key Vault calls and shared reads in `stats` (before any mount).
    pub fn with_stats(mut self, stats: &BackendStats) -> Self {
        self.stats = stats.provider(NAME);
        self.reads = Arc::new(Coalescer::new().counted_in(self.stats.clone()));
        self
    }

    async fn fetch(&self, request: &MountRequest) -> Result<MountResponse, AzureError> {
        let params = AzureParams::parse(&request.parameters)?;
        let cloud = resolve(
            params.cloud_name.as_deref(),
            params.cloud_env_file.as_deref(),
            &self.options.default_cloud,
        )?;
        let mut custom = CustomConfiguration::default();
        custom.authority_host = cloud.authority_host.clone();
        let client_options = ClientOptions {
            transport: Some(Transport::new(Arc::new(self.http.clone()))),
            cloud: Some(Arc::new(CloudConfiguration::from(custom))),
            ..Default::default()
        };
        // Workload identity or identity binding without `clientID`: the
        // service account's annotation.
        let federated = [WORKLOAD_IDENTITY_AUDIENCE, IDENTITY_BINDING_AUDIENCE];
        let client_id = match (&params.client_id, &self.kube) {
            (Some(id), _) => Some(id.clone()),
            (None, Some(kube)) if federated.iter().any(|a| request.tokens.contains_key(*a)) => {
                let pod = &request.pod;
                self.annotations.client_id(kube, &pod.namespace, &pod.service_account).await?
            }
            _ => None,
        };
        let binding = match params.mode {
            IdentityMode::TokenProxy => Some(self.binding_options().await?),
            _ => None,
        };
        let channels = Channels {
            options: &client_options,
            binding: binding.as_ref(),
            http: &self.http,
            allow_node_identity: self.options.allow_node_identity,
        };
        let identity =
            self.credentials.identity(&params, client_id.as_deref(), request, &channels)?;
        let url = format!("https://{}.{}/", params.keyvault_name, cloud.key_vault_dns_suffix);
        let vault = {
            let mut vaults = self.vaults.lock().expect("vaults lock");
            match vaults.get(&(url.clone(), identity.key.clone())) {
                Some(vault) => vault.clone(),
                None => {
                    let vault = Vault::new(&url, identity.credential.clone(), &client_options)?;
                    vaults.insert((url.clone(), identity.key.clone()), vault.clone());
                    vault
                }
            }
        };
        let results = futures::future::join_all(
            params
                .objects
                .iter()
                .map(|object| self.object(&vault, &url, &identity.key, object, request)),
        )
        .await;
        let mut files = Vec::new();
        let mut versions = BTreeSet::new();
        for (object, result) in params.objects.iter().zip(results) {
            for (index, parts) in result?.into_iter().enumerate() {
                let (path, uid) = if object.history() {
                    (format!("{}/{index}", object.alias), object.uid(Some(index)))
                } else {
                    (object.alias.clone(), object.uid(None))
                };
                for part in parts {
                    versions.insert(ObjectVersion { id: uid.clone(), version: part.version });
                    files.push(SecretFile {
                        path: format!("{path}{}", part.suffix),
                        mode: object.mode.unwrap_or(request.default_file_mode),
                        contents: part.contents,
                    });
                }
            }
        }
        Ok(MountResponse::new(files, versions.into_iter().collect()))
    }

    /// Client options that send AAD requests through the AKS token proxy.
    async fn binding_options(&self) -> Result<ClientOptions, AzureError> {
        let url = Url::parse(&self.options.token_proxy_url).map_err(|e| {
            AzureError::TokenProxy(format!("{}: {e}", self.options.token_proxy_url))
        })?;
        let proxy = self
            .proxy
            .get_or_try_init(|| async {
                let (ca, resolve) = (&self.options.cluster_ca, &self.options.resolve);
                let sni = match &self.options.sni_name {
                    Some(name) => name.clone(),
                    None => sni_name(&cluster_id(&url, ca, resolve).await?),
                };
                ProxyClient::new(&url, sni, ca, resolve).await.map(Arc::new)
            })
            .await
            .map_err(AzureError::TokenProxy)?;
        let mut custom = CustomConfiguration::default();
        custom.authority_host = self.options.token_proxy_url.clone();
        Ok(ClientOptions {
            transport: Some(Transport::new(proxy.clone())),
            cloud: Some(Arc::new(CloudConfiguration::from(custom))),
            ..Default::default()
        })
    }

    /// The parts of every version of `object` to write: one version, or the
    /// newest N with `objectVersionHistory`.
    async fn object(
        &self,
        vault: &Vault,
        url: &str,
        identity: &str,
        object: &KeyVaultObject,
        request: &MountRequest,
    ) -> Result<Vec<Vec<Part>>, AzureError> {
        let reuse = request.reuse;
        if let Some(parts) = held_pinned(object, request, self.options.separate_cert_and_key) {
            return Ok(vec![parts]);
        }
        if !object.history() {
            return Ok(vec![
                self.shared_read(vault, url, identity, object, &object.version, reuse).await?,
            ]);
        }
        let all = self.stats.timed(url, "ListVersions", vault.versions(object)).await?;
        let wanted = history(object, &all);
        if wanted.is_empty() && !all.is_empty() {
            return Err(AzureError::NoSuchVersion {
                object_type: object.object_type.clone(),
                name: object.name.clone(),
                version: object.version.clone(),
            });
        }
        let reads = wanted.iter().map(|v| self.shared_read(vault, url, identity, object, v, reuse));
        Ok(futures::future::try_join_all(reads).await?)
    }

    async fn shared_read(
        &self,
        vault: &Vault,
        url: &str,
        identity: &str,
        object: &KeyVaultObject,
        version: &str,
        reuse: Duration,
    ) -> Result<Vec<Part>, FetchError> {
        let key = serde_json::json!([
            identity,
            url,
            object.object_type,
            object.name,
            version,
            object.pfx,
            format!("{:?}", object.encoding)
        ])
        .to_string();
        let (vault, object, version) = (vault.clone(), object.clone(), version.to_owned());
        let separate = self.options.separate_cert_and_key;
        let (stats, endpoint) = (self.stats.clone(), url.to_owned());
        let operation = match object.object_type.as_str() {
            crate::params::OBJECT_KEY => "GetKey",
            crate::params::OBJECT_CERT => "GetCertificate",
            _ => "GetSecret",
        };
        let read = move || async move {
            stats.timed(&endpoint, operation, vault.fetch(&object, &version, separate)).await
        };
        self.reads.read(key, reuse, read).await.0
    }
}

/// A pinned `objectVersion` is immutable: on a refresh that holds it, its
/// files as mounted (the PEM file, and `.crt` and `.key` when they were
/// written beside it).
fn held_pinned(
    object: &KeyVaultObject,
    request: &MountRequest,
    separate_cert_and_key: bool,
) -> Option<Vec<Part>> {
    if object.history() || object.version.is_empty() {
        return None;
    }
    let uid = object.uid(None);
    let held = request.current_versions.iter().find(|v| v.id == uid)?;
    if held.version != object.version {
        return None;
    }
    let file = |suffix: &'static str| {
        let contents = request.current_files.get(&format!("{}{suffix}", object.alias))?.clone();
        Some(Part { suffix, contents, version: held.version.clone() })
    };
    let mut parts = Vec::new();
    if separate_cert_and_key {
        parts.extend([".crt", ".key"].into_iter().filter_map(file));
    }
    parts.push(file("")?);
    Some(parts)
}

/// The class's parameters read with the rules of a mount, offline (`sscsi
/// check`). A `cloudEnvFileName` names a file on the node, so its cloud is
/// not read.
pub fn check(parameters: &std::collections::BTreeMap<String, String>) -> Result<(), ProviderError> {
    let params = AzureParams::parse(parameters).map_err(AzureError::from)?;
    if params.cloud_env_file.is_none() {
        resolve(params.cloud_name.as_deref(), None, "AzurePublicCloud")
            .map_err(AzureError::from)?;
    }
    Ok(())
}

#[async_trait]
impl Provider for AzureProvider {
    fn name(&self) -> &str {
        NAME
    }

    async fn mount(&self, request: &MountRequest) -> Result<MountResponse, ProviderError> {
        self.fetch(request).await.map_err(ProviderError::from)
    }

    /// A pinned version's files are taken from the volume; a class that
    /// pins none needs no mounted files.
    fn reads_mounted_files(&self, request: &MountRequest) -> bool {
        AzureParams::parse(&request.parameters)
            .is_ok_and(|p| p.objects.iter().any(|o| !o.history() && !o.version.is_empty()))
    }
}
