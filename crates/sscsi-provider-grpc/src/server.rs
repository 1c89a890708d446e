//! A compiled-in provider served over v1alpha1, for the upstream driver
//! (`sscsi provider-server`): the driver's requests decoded as the official
//! providers decode them, the provider's answer or failure sent back.

use std::sync::Arc;

use sscsi_core::{ErrorCode, Provider};
use sscsi_proto::provider::v1alpha1::csi_driver_provider_server::{
    CsiDriverProvider, CsiDriverProviderServer,
};
use sscsi_proto::provider::v1alpha1::{
    MountRequest, MountResponse, VersionRequest, VersionResponse,
};
use tonic::{Request, Response, Status};

use crate::wire::{self, API_VERSION};

/// What `Version` answers besides the protocol version.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub name: String,
    pub version: String,
}

/// The v1alpha1 service for one provider.
#[derive(Debug, Clone)]
pub struct ProviderService {
    provider: Arc<dyn Provider>,
    runtime: Runtime,
}

impl ProviderService {
    pub fn new(provider: Arc<dyn Provider>, runtime: Runtime) -> Self {
        Self { provider, runtime }
    }

    /// The service, to serve on a socket.
    pub fn into_routes(self) -> tonic::service::Routes {
        tonic::service::Routes::new(CsiDriverProviderServer::new(self))
    }
}

#[tonic::async_trait]
impl CsiDriverProvider for ProviderService {
    async fn version(
        &self,
        _request: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: API_VERSION.to_owned(),
            runtime_name: self.runtime.name.clone(),
            runtime_version: self.runtime.version.clone(),
        }))
    }

    async fn mount(
        &self,
        request: Request<MountRequest>,
    ) -> Result<Response<MountResponse>, Status> {
        let request = wire::decode_request(request.into_inner())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let pod = format!("{}/{}", request.pod.namespace, request.pod.name);
        match self.provider.mount(&request).await {
            Ok(response) => {
                tracing::info!(
                    pod,
                    provider = self.provider.name(),
                    files = response.files.len(),
                    "mount request served"
                );
                Ok(Response::new(wire::encode_response(response)))
            }
            Err(e) => {
                tracing::warn!(pod, provider = self.provider.name(), reason = e.reason(), error = %e, "mount request failed");
                Err(Status::new(status_code(e.code()), e.to_string()))
            }
        }
    }
}

fn status_code(code: ErrorCode) -> tonic::Code {
    match code {
        ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorCode::NotFound => tonic::Code::NotFound,
        ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
        ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
        ErrorCode::ResourceExhausted => tonic::Code::ResourceExhausted,
        ErrorCode::Unavailable => tonic::Code::Unavailable,
        ErrorCode::DeadlineExceeded => tonic::Code::DeadlineExceeded,
        ErrorCode::Internal => tonic::Code::Internal,
    }
}
