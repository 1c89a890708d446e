use sscsi_proto::csi::v1::controller_server::Controller;
use sscsi_proto::csi::v1::controller_service_capability::{Rpc, Type, rpc};
use sscsi_proto::csi::v1::{
    ControllerGetCapabilitiesRequest, ControllerGetCapabilitiesResponse,
    ControllerServiceCapability,
};
use tonic::{Request, Response, Status};

/// The Controller service as upstream serves it: one capability of type
/// `UNKNOWN`, so tools that ask (csi-sanity's Node specs, in their
/// `BeforeEach`) get an answer; every other Controller RPC is left out of the
/// proto, so gRPC answers it `Unimplemented`, as upstream does.
#[derive(Debug, Clone, Copy, Default)]
pub struct ControllerService;

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn controller_get_capabilities(
        &self,
        _: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        let unknown = ControllerServiceCapability {
            r#type: Some(Type::Rpc(Rpc { r#type: rpc::Type::Unknown as i32 })),
        };
        Ok(Response::new(ControllerGetCapabilitiesResponse { capabilities: vec![unknown] }))
    }
}
