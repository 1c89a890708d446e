//! The `aws` provider: parameters → regions → IRSA credentials per region →
//! objects fetched → files.

use std::sync::Arc;

use async_trait::async_trait;
use aws_credential_types::Credentials;
use sscsi_core::{
    ErrorCode, MountRequest, MountResponse, Provider, ProviderError, ProviderFailure,
};

use crate::auth::{AuthError, CredentialCache, RoleLookup};
use crate::descriptor::{DescriptorError, parse_objects};
use crate::fetch::{FetchError, RegionClients, fetch_all};
use crate::params::AwsParams;

pub const NAME: &str = "aws";

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error(transparent)]
    Parameters(#[from] DescriptorError),
    #[error("parameter \"objects\" is required")]
    NoObjects,
    #[error("Region not found: set the \"region\" parameter or AWS_REGION")]
    NoRegion,
    #[error("usePodIdentity (EKS Pod Identity) is not supported by sscsi yet; use IRSA")]
    PodIdentity,
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
}

impl ProviderFailure for AwsError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Parameters(_) | Self::NoObjects | Self::NoRegion => ErrorCode::InvalidArgument,
            Self::PodIdentity => ErrorCode::FailedPrecondition,
            Self::Auth(e) => e.code(),
            Self::Fetch(e) => e.code(),
        }
    }
}

#[derive(Debug)]
pub struct AwsProvider {
    roles: Arc<dyn RoleLookup>,
    credentials: CredentialCache,
    /// Every AWS API at this URL (a test server); `None`: the real endpoints.
    endpoint_url: Option<String>,
    /// `AWS_REGION` of the driver, used when a class names no region.
    default_region: Option<String>,
}

impl AwsProvider {
    pub fn new(
        roles: Arc<dyn RoleLookup>,
        endpoint_url: Option<String>,
        default_region: Option<String>,
    ) -> Self {
        Self { roles, credentials: CredentialCache::default(), endpoint_url, default_region }
    }

    async fn fetch(&self, request: &MountRequest) -> Result<MountResponse, AwsError> {
        let params = AwsParams::parse(&request.parameters)?;
        if params.objects.trim().is_empty() {
            return Err(AwsError::NoObjects);
        }
        if params.use_pod_identity {
            return Err(AwsError::PodIdentity);
        }
        let primary = params
            .region
            .clone()
            .or_else(|| self.default_region.clone())
            .ok_or(AwsError::NoRegion)?;
        let regions = params.regions(primary)?;
        let descriptors = parse_objects(&params.objects, params.translate, &regions)?;
        let mut clients = Vec::with_capacity(regions.len());
        for (index, region) in regions.iter().enumerate() {
            let creds =
                self.credentials.irsa(&*self.roles, &self.sts(region), region, request).await?;
            clients.push(self.region_clients(region, index > 0, creds));
        }
        let (files, versions) =
            fetch_all(&clients, &descriptors, request.default_file_mode).await?;
        Ok(MountResponse { files, versions })
    }

    /// STS needs no credentials for AssumeRoleWithWebIdentity.
    fn sts(&self, region: &str) -> aws_sdk_sts::Client {
        let mut config = aws_sdk_sts::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_sts::config::Region::new(region.to_owned()));
        if let Some(url) = &self.endpoint_url {
            config = config.endpoint_url(url);
        }
        aws_sdk_sts::Client::from_conf(config.build())
    }

    fn region_clients(&self, region: &str, failover: bool, creds: Credentials) -> RegionClients {
        let sm = aws_sdk_secretsmanager::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_secretsmanager::config::Region::new(region.to_owned()))
            .credentials_provider(creds.clone());
        let ssm = aws_sdk_ssm::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_ssm::config::Region::new(region.to_owned()))
            .credentials_provider(creds);
        let (sm, ssm) = match &self.endpoint_url {
            Some(url) => (sm.endpoint_url(url), ssm.endpoint_url(url)),
            None => (sm, ssm),
        };
        RegionClients {
            region: region.to_owned(),
            failover,
            secrets_manager: aws_sdk_secretsmanager::Client::from_conf(sm.build()),
            ssm: aws_sdk_ssm::Client::from_conf(ssm.build()),
        }
    }
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
