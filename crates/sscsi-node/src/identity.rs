use sscsi_proto::csi::v1::identity_server::Identity;
use sscsi_proto::csi::v1::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
    GetPluginInfoResponse, ProbeRequest, ProbeResponse,
};
use tonic::{Request, Response, Status};

use crate::{Condition, Readiness};

/// CSI Identity: who we are and whether we are ready.
#[derive(Debug, Clone)]
pub struct IdentityService {
    name: String,
    vendor_version: String,
    readiness: Readiness,
}

impl IdentityService {
    pub fn new(name: String, vendor_version: String, readiness: Readiness) -> Self {
        Self { name, vendor_version, readiness }
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        if self.name.is_empty() {
            return Err(Status::unavailable("Driver name not configured"));
        }
        if self.vendor_version.is_empty() {
            return Err(Status::unavailable("Driver is missing version"));
        }
        Ok(Response::new(GetPluginInfoResponse {
            name: self.name.clone(),
            vendor_version: self.vendor_version.clone(),
            manifest: Default::default(),
        }))
    }

    /// A node-only plugin: no CONTROLLER_SERVICE (upstream advertises one it
    /// does not implement, for the sake of an old csi-sanity) and no topology.
    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        Ok(Response::new(GetPluginCapabilitiesResponse { capabilities: Vec::new() }))
    }

    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        Ok(Response::new(ProbeResponse { ready: Some(self.readiness.is_met(Condition::Serving)) }))
    }
}
