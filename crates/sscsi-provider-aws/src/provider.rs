//! The `aws` provider: parameters → regions → IRSA credentials per region →
//! objects fetched → files.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use sscsi_core::{
    ErrorCode, MountRequest, MountResponse, Provider, ProviderError, ProviderFailure,
};

use crate::auth::{
    AuthError, CredentialCache, POD_IDENTITY_IPV4, POD_IDENTITY_IPV6, PodIdentityError, RoleLookup,
};
use crate::descriptor::{DescriptorError, parse_objects};
use aws_sdk_secretsmanager::config::SharedHttpClient;

use crate::fetch::{Current, FetchError, RegionClients, SharedReads, fetch_all};
use crate::params::{AddressType, AwsParams};
use aws_sdk_secretsmanager::config::retry::RetryConfig;
use sscsi_provider_kit::{BackendStats, Calls, Coalescer, RetryPolicy};

pub const NAME: &str = "aws";

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error(transparent)]
    Parameters(#[from] DescriptorError),
    #[error("Region not found: set the \"region\" parameter or AWS_REGION")]
    NoRegion,
    #[error(transparent)]
    PodIdentity(#[from] PodIdentityError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("the caller's AWS credentials (the SDK's default chain): {0}")]
    Caller(String),
}

impl ProviderFailure for AwsError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Parameters(_) | Self::NoRegion => ErrorCode::InvalidArgument,
            Self::PodIdentity(e) => e.code(),
            Self::Auth(e) => e.code(),
            Self::Fetch(e) => e.code(),
            Self::Caller(_) => ErrorCode::Unauthenticated,
        }
    }
}

/// Where the AWS APIs are; the defaults are the real ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsEndpoints {
    /// Every AWS API at this URL (a VPC endpoint, a test server).
    pub aws: Option<String>,
    /// Per service, before `aws`.
    pub secrets_manager: Option<String>,
    pub ssm: Option<String>,
    pub sts: Option<String>,
    /// The FIPS endpoints of the region.
    pub use_fips: bool,
    /// The Pod Identity agent's credentials URL, instead of the node's.
    pub pod_identity_agent: Option<String>,
}

impl AwsEndpoints {
    /// The SDK's standard endpoint settings as ASCP users set them:
    /// `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_SECRETS_MANAGER`,
    /// `AWS_ENDPOINT_URL_SSM`, `AWS_ENDPOINT_URL_STS` (all ignored with
    /// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`) and `AWS_USE_FIPS_ENDPOINT`;
    /// `SSCSI_AWS_ENDPOINT_URL` is an alias of `AWS_ENDPOINT_URL`. Only these:
    /// never the SDK's credential chain.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Self {
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        let flag = |name: &str| env(name).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let configured = !flag("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS");
        let url = |name: &str| env(name).filter(|_| configured);
        Self {
            aws: url("AWS_ENDPOINT_URL").or_else(|| env("SSCSI_AWS_ENDPOINT_URL")),
            secrets_manager: url("AWS_ENDPOINT_URL_SECRETS_MANAGER"),
            ssm: url("AWS_ENDPOINT_URL_SSM"),
            sts: url("AWS_ENDPOINT_URL_STS"),
            use_fips: flag("AWS_USE_FIPS_ENDPOINT"),
            pod_identity_agent: env("SSCSI_AWS_POD_IDENTITY_AGENT_URL"),
        }
    }

    fn pick<'a>(&'a self, service: &'a Option<String>) -> Option<&'a str> {
        service.as_deref().or(self.aws.as_deref())
    }
}

#[derive(Debug)]
pub struct AwsProvider {
    roles: Arc<dyn RoleLookup>,
    credentials: CredentialCache,
    endpoints: AwsEndpoints,
    /// `AWS_REGION` of the driver, used when a class names no region.
    default_region: Option<String>,
    /// Identical reads by one identity share a call.
    values: Arc<Coalescer<crate::fetch::SecretRead>>,
    describes: Arc<Coalescer<crate::fetch::Described>>,
    /// Retries (ours, not the SDK's, so they are counted) and counters.
    calls: Calls,
    /// One HTTPS client (and connection pool) for every SDK client: a mount
    /// builds SDK clients with its own credentials, and they would otherwise
    /// each load the trust roots and open new connections.
    http: SharedHttpClient,
    /// SDK clients by (identity, region), kept while their credentials are
    /// the ones the cache hands out: building a Secrets Manager and an SSM
    /// client costs more than a mount should pay when nothing changed.
    clients: std::sync::Mutex<HashMap<(String, String), SdkClients>>,
    /// Credentials of whoever runs sscsi, used instead of the pod's
    /// identity (`sscsi render`); never set on a node.
    caller: Option<SharedCredentialsProvider>,
}

/// The SDK clients of one identity in one region, and the credentials they sign with.
#[derive(Clone)]
struct SdkClients {
    credentials: Credentials,
    secrets_manager: aws_sdk_secretsmanager::Client,
    ssm: aws_sdk_ssm::Client,
}

/// Not even the access key id is printed.
impl std::fmt::Debug for SdkClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdkClients").field("expiry", &self.credentials.expiry()).finish()
    }
}

impl AwsProvider {
    pub fn new(
        roles: Arc<dyn RoleLookup>,
        endpoints: AwsEndpoints,
        default_region: Option<String>,
    ) -> Self {
        Self {
            roles,
            credentials: CredentialCache::default(),
            endpoints,
            default_region,
            values: Arc::default(),
            describes: Arc::default(),
            calls: Calls::new(RetryPolicy::AWS_STANDARD),
            http: https_client(),
            clients: std::sync::Mutex::default(),
            caller: None,
        }
    }

    /// Reads with the SDK's default credential chain (environment, shared
    /// config and SSO, web identity, container and instance roles) instead
    /// of a pod's identity: what `sscsi render` does for a person.
    pub async fn with_default_chain(mut self) -> Self {
        let chain = DefaultCredentialsChain::builder().build().await;
        self.caller = Some(SharedCredentialsProvider::new(chain));
        self
    }

    /// Counts calls, throttled answers, retries, credentials and shared
    /// reads in `stats` (before any mount: the caches start empty).
    pub fn with_stats(mut self, stats: &BackendStats) -> Self {
        let stats = stats.provider(NAME);
        self.credentials = CredentialCache::counted_in(stats.clone());
        self.values = Arc::new(Coalescer::new().counted_in(stats.clone()));
        self.describes = Arc::new(Coalescer::new().counted_in(stats.clone()));
        self.calls.stats = stats;
        self
    }

    /// Retries as `policy` says instead of the SDKs' standard policy.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.calls.retry = policy;
        self
    }

    /// The agent URLs to try, in order, for `preferredAddressType`.
    fn agent_urls(&self, preference: AddressType) -> Vec<String> {
        if let Some(url) = &self.endpoints.pod_identity_agent {
            return vec![url.clone()];
        }
        let urls: &[&str] = match preference {
            AddressType::Auto => &[POD_IDENTITY_IPV4, POD_IDENTITY_IPV6],
            AddressType::Ipv4 => &[POD_IDENTITY_IPV4],
            AddressType::Ipv6 => &[POD_IDENTITY_IPV6],
        };
        urls.iter().map(|u| (*u).to_owned()).collect()
    }

    async fn fetch(&self, request: &MountRequest) -> Result<MountResponse, AwsError> {
        let params = AwsParams::parse(&request.parameters)?;
        let primary = params
            .region
            .clone()
            .or_else(|| self.default_region.clone())
            .ok_or(AwsError::NoRegion)?;
        let regions = params.regions(primary)?;
        let descriptors = parse_objects(&params.objects, params.translate, &regions)?;
        // ASCP mounts an empty (or missing) `objects` as no files.
        if descriptors.is_empty() {
            return Ok(MountResponse::default());
        }
        // Every auth parameter that picks the credentials; the region is in the read's key.
        let mode = match (&self.caller, params.use_pod_identity) {
            (Some(_), _) => "caller",
            (None, true) => "pod-identity",
            (None, false) => "irsa",
        };
        let identity = format!("{mode}/{}/{}", request.pod.namespace, request.pod.service_account);
        // The caller's and Pod Identity credentials hold in every region; IRSA's are per region.
        let held = match &self.caller {
            Some(caller) => Some(
                caller.provide_credentials().await.map_err(|e| AwsError::Caller(e.to_string()))?,
            ),
            None if params.use_pod_identity => {
                let urls = self.agent_urls(params.preferred_address_type);
                Some(self.credentials.pod_identity(&urls, request).await?)
            }
            None => None,
        };
        let current = Current::new(&request.current_versions, &request.current_files);
        let mut clients = Vec::with_capacity(regions.len());
        for (index, region) in regions.iter().enumerate() {
            let creds = match &held {
                Some(creds) => creds.clone(),
                None => {
                    self.credentials
                        .irsa(&*self.roles, || self.sts(region), region, request)
                        .await?
                }
            };
            clients.push(self.region_clients(region, index > 0, creds, &identity, request.reuse));
        }
        let (files, versions) =
            fetch_all(&clients, &descriptors, request.default_file_mode, &current).await?;
        Ok(MountResponse::new(files, versions))
    }

    /// STS needs no credentials for AssumeRoleWithWebIdentity.
    fn sts(&self, region: &str) -> aws_sdk_sts::Client {
        let mut config = aws_sdk_sts::Config::builder()
            .behavior_version_latest()
            .http_client(self.http.clone())
            .region(aws_sdk_sts::config::Region::new(region.to_owned()))
            .use_fips(self.endpoints.use_fips);
        if let Some(url) = self.endpoints.pick(&self.endpoints.sts) {
            config = config.endpoint_url(url);
        }
        aws_sdk_sts::Client::from_conf(config.build())
    }

    fn region_clients(
        &self,
        region: &str,
        failover: bool,
        creds: Credentials,
        identity: &str,
        reuse: std::time::Duration,
    ) -> RegionClients {
        let sdk = self.sdk_clients(region, creds, identity);
        RegionClients {
            region: region.to_owned(),
            failover,
            secrets_manager: sdk.secrets_manager,
            ssm: sdk.ssm,
            shared: Some(SharedReads {
                identity: identity.to_owned(),
                reuse,
                values: self.values.clone(),
                describes: self.describes.clone(),
            }),
            calls: self.calls.clone(),
        }
    }

    /// The cached clients when they sign with `creds`, else new ones (which
    /// replace them). Entries whose credentials have expired go on the way.
    fn sdk_clients(&self, region: &str, creds: Credentials, identity: &str) -> SdkClients {
        let key = (identity.to_owned(), region.to_owned());
        {
            let clients = self.clients.lock().expect("AWS clients");
            if let Some(cached) = clients.get(&key).filter(|c| c.credentials == creds) {
                return cached.clone();
            }
        }
        // Built outside the lock: a burst of first mounts of other
        // identities does not wait on each other's construction.
        let endpoints = &self.endpoints;
        let mut sm = aws_sdk_secretsmanager::Config::builder()
            .behavior_version_latest()
            .http_client(self.http.clone())
            .region(aws_sdk_secretsmanager::config::Region::new(region.to_owned()))
            .use_fips(endpoints.use_fips)
            .retry_config(RetryConfig::disabled())
            .credentials_provider(creds.clone());
        if let Some(url) = endpoints.pick(&endpoints.secrets_manager) {
            sm = sm.endpoint_url(url);
        }
        let mut ssm = aws_sdk_ssm::Config::builder()
            .behavior_version_latest()
            .http_client(self.http.clone())
            .region(aws_sdk_ssm::config::Region::new(region.to_owned()))
            .use_fips(endpoints.use_fips)
            .retry_config(RetryConfig::disabled())
            .credentials_provider(creds.clone());
        if let Some(url) = endpoints.pick(&endpoints.ssm) {
            ssm = ssm.endpoint_url(url);
        }
        let sdk = SdkClients {
            credentials: creds,
            secrets_manager: aws_sdk_secretsmanager::Client::from_conf(sm.build()),
            ssm: aws_sdk_ssm::Client::from_conf(ssm.build()),
        };
        let mut clients = self.clients.lock().expect("AWS clients");
        let now = std::time::SystemTime::now();
        clients.retain(|_, c| c.credentials.expiry().is_none_or(|at| at > now));
        clients.insert(key, sdk.clone());
        sdk
    }
}

/// The client the SDK builds by default (rustls with aws-lc, the proxy from
/// `HTTPS_PROXY`/`NO_PROXY`), once.
fn https_client() -> SharedHttpClient {
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    use aws_smithy_http_client::{Builder, ConnectorBuilder};
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector = ConnectorBuilder::default()
            .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
            .proxy_config(ProxyConfig::from_env());
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.build()
    })
}

/// The class's parameters read with the rules of a mount, offline (`sscsi
/// check`): a class without `region` is checked as if the node's region
/// matched every ARN it names.
pub fn check(parameters: &BTreeMap<String, String>) -> Result<(), ProviderError> {
    let params = AwsParams::parse(parameters).map_err(AwsError::from)?;
    let regions =
        params.regions(params.region.clone().unwrap_or_default()).map_err(AwsError::from)?;
    parse_objects(&params.objects, params.translate, &regions).map_err(AwsError::from)?;
    Ok(())
}

#[async_trait]
impl Provider for AwsProvider {
    fn name(&self) -> &str {
        NAME
    }

    async fn mount(&self, request: &MountRequest) -> Result<MountResponse, ProviderError> {
        self.fetch(request).await.map_err(ProviderError::from)
    }

    /// An unchanged secret's bytes are taken from the volume, not read again.
    fn reads_mounted_files(&self, _: &MountRequest) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_settings_from_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
        };
        let e = AwsEndpoints::from_env(env(&[
            ("AWS_ENDPOINT_URL", "https://vpce.example"),
            ("AWS_ENDPOINT_URL_SSM", "https://ssm.vpce.example"),
            ("AWS_USE_FIPS_ENDPOINT", "true"),
        ]));
        assert_eq!(e.pick(&e.ssm), Some("https://ssm.vpce.example"));
        assert_eq!(e.pick(&e.secrets_manager), Some("https://vpce.example"));
        assert_eq!(e.pick(&e.sts), Some("https://vpce.example"));
        assert!(e.use_fips);
        // The alias, and the SDK's switch that ignores configured URLs.
        let e = AwsEndpoints::from_env(env(&[("SSCSI_AWS_ENDPOINT_URL", "http://127.0.0.1:5000")]));
        assert_eq!(e.pick(&e.sts), Some("http://127.0.0.1:5000"));
        assert!(!e.use_fips);
        let e = AwsEndpoints::from_env(env(&[
            ("AWS_ENDPOINT_URL_STS", "https://sts.vpce.example"),
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
            ("AWS_USE_FIPS_ENDPOINT", "false"),
        ]));
        assert_eq!(e, AwsEndpoints::default());
    }

    #[derive(Debug)]
    struct NoRoles;

    #[async_trait]
    impl RoleLookup for NoRoles {
        async fn role_arn(&self, _: &str, _: &str) -> Result<Option<String>, AuthError> {
            Ok(None)
        }
    }

    #[tokio::test]
    async fn sdk_clients_are_kept_while_their_credentials_are_current() {
        let provider = AwsProvider::new(Arc::new(NoRoles), AwsEndpoints::default(), None);
        let in_an_hour = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        let creds = |key: &str, expiry| Credentials::new(key, "secret", None, expiry, "test");
        let first = provider.sdk_clients("eu-west-1", creds("AKIA1", Some(in_an_hour)), "irsa/a/b");
        let again = provider.sdk_clients("eu-west-1", creds("AKIA1", Some(in_an_hour)), "irsa/a/b");
        // One client, shared: its config is the same allocation.
        assert!(std::ptr::eq(first.secrets_manager.config(), again.secrets_manager.config()));
        let renewed =
            provider.sdk_clients("eu-west-1", creds("AKIA2", Some(in_an_hour)), "irsa/a/b");
        assert!(!std::ptr::eq(first.secrets_manager.config(), renewed.secrets_manager.config()));
        provider.sdk_clients("us-east-1", creds("AKIA2", Some(in_an_hour)), "irsa/a/b");
        assert_eq!(provider.clients.lock().unwrap().len(), 2, "one entry per identity and region");
        // Expired credentials leave when a new entry is made.
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
        provider.sdk_clients("eu-west-2", creds("AKIA3", Some(past)), "irsa/c/d");
        provider.sdk_clients("eu-west-3", creds("AKIA4", None), "irsa/e/f");
        let keys: Vec<_> = provider.clients.lock().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
        assert!(!keys.iter().any(|(identity, _)| identity == "irsa/c/d"));
        assert!(!format!("{provider:?}").contains("AKIA"), "no key id in Debug");
    }
}
