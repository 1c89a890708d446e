//! The `aws` provider: parameters → regions → IRSA credentials per region →
//! objects fetched → files.

use std::sync::Arc;

use async_trait::async_trait;
use aws_credential_types::Credentials;
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

pub const NAME: &str = "aws";

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error(transparent)]
    Parameters(#[from] DescriptorError),
    #[error("parameter \"objects\" is required")]
    NoObjects,
    #[error("Region not found: set the \"region\" parameter or AWS_REGION")]
    NoRegion,
    #[error(transparent)]
    PodIdentity(#[from] PodIdentityError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
}

impl ProviderFailure for AwsError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Parameters(_) | Self::NoObjects | Self::NoRegion => ErrorCode::InvalidArgument,
            Self::PodIdentity(e) => e.code(),
            Self::Auth(e) => e.code(),
            Self::Fetch(e) => e.code(),
        }
    }
}

/// Where the AWS APIs are; the defaults are the real ones.
#[derive(Debug, Clone, Default)]
pub struct AwsEndpoints {
    /// Every AWS API at this URL (a test server).
    pub aws: Option<String>,
    /// The Pod Identity agent's credentials URL, instead of the node's.
    pub pod_identity_agent: Option<String>,
}

#[derive(Debug)]
pub struct AwsProvider {
    roles: Arc<dyn RoleLookup>,
    credentials: CredentialCache,
    endpoints: AwsEndpoints,
    /// `AWS_REGION` of the driver, used when a class names no region.
    default_region: Option<String>,
    /// Identical reads by one identity share a call.
    values: Arc<sscsi_core::coalesce::Coalescer<crate::fetch::SecretRead>>,
    describes: Arc<sscsi_core::coalesce::Coalescer<crate::fetch::Described>>,
    /// One HTTPS client (and connection pool) for every SDK client: a mount
    /// builds SDK clients with its own credentials, and they would otherwise
    /// each load the trust roots and open new connections.
    http: SharedHttpClient,
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
            http: https_client(),
        }
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
        if params.objects.trim().is_empty() {
            return Err(AwsError::NoObjects);
        }
        let primary = params
            .region
            .clone()
            .or_else(|| self.default_region.clone())
            .ok_or(AwsError::NoRegion)?;
        let regions = params.regions(primary)?;
        let descriptors = parse_objects(&params.objects, params.translate, &regions)?;
        // Every auth parameter that picks the credentials; the region is in the read's key.
        let mode = if params.use_pod_identity { "pod-identity" } else { "irsa" };
        let identity = format!("{mode}/{}/{}", request.pod.namespace, request.pod.service_account);
        // Pod Identity credentials hold in every region; IRSA's are per region.
        let pod_identity = if params.use_pod_identity {
            let urls = self.agent_urls(params.preferred_address_type);
            Some(self.credentials.pod_identity(&urls, request).await?)
        } else {
            None
        };
        let current = Current::new(&request.current_versions, &request.current_files);
        let mut clients = Vec::with_capacity(regions.len());
        for (index, region) in regions.iter().enumerate() {
            let creds = match &pod_identity {
                Some(creds) => creds.clone(),
                None => {
                    self.credentials
                        .irsa(&*self.roles, || self.sts(region), region, request)
                        .await?
                }
            };
            clients.push(self.region_clients(region, index > 0, creds, &identity));
        }
        let (files, versions) =
            fetch_all(&clients, &descriptors, request.default_file_mode, &current).await?;
        Ok(MountResponse { files, versions })
    }

    /// STS needs no credentials for AssumeRoleWithWebIdentity.
    fn sts(&self, region: &str) -> aws_sdk_sts::Client {
        let mut config = aws_sdk_sts::Config::builder()
            .behavior_version_latest()
            .http_client(self.http.clone())
            .region(aws_sdk_sts::config::Region::new(region.to_owned()));
        if let Some(url) = &self.endpoints.aws {
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
    ) -> RegionClients {
        let sm = aws_sdk_secretsmanager::Config::builder()
            .behavior_version_latest()
            .http_client(self.http.clone())
            .region(aws_sdk_secretsmanager::config::Region::new(region.to_owned()))
            .credentials_provider(creds.clone());
        let ssm = aws_sdk_ssm::Config::builder()
            .behavior_version_latest()
            .http_client(self.http.clone())
            .region(aws_sdk_ssm::config::Region::new(region.to_owned()))
            .credentials_provider(creds);
        let (sm, ssm) = match &self.endpoints.aws {
            Some(url) => (sm.endpoint_url(url), ssm.endpoint_url(url)),
            None => (sm, ssm),
        };
        RegionClients {
            region: region.to_owned(),
            failover,
            secrets_manager: aws_sdk_secretsmanager::Client::from_conf(sm.build()),
            ssm: aws_sdk_ssm::Client::from_conf(ssm.build()),
            shared: Some(SharedReads {
                identity: identity.to_owned(),
                values: self.values.clone(),
                describes: self.describes.clone(),
            }),
        }
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

#[async_trait]
impl Provider for AwsProvider {
    fn name(&self) -> &str {
        NAME
    }

    async fn mount(&self, request: &MountRequest) -> Result<MountResponse, ProviderError> {
        self.fetch(request).await.map_err(ProviderError::from)
    }
}
