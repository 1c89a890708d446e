use std::sync::Arc;
use std::time::Instant;

use sscsi_proto::csi::v1::node_server::Node;
use sscsi_proto::csi::v1::node_service_capability::rpc::Type as RpcType;
use sscsi_proto::csi::v1::node_service_capability::{Rpc, Type as CapabilityType};
use sscsi_proto::csi::v1::{
    NodeGetCapabilitiesRequest, NodeGetCapabilitiesResponse, NodeGetInfoRequest,
    NodeGetInfoResponse, NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse,
    NodePublishVolumeRequest, NodePublishVolumeResponse, NodeServiceCapability,
    NodeStageVolumeRequest, NodeStageVolumeResponse, NodeUnpublishVolumeRequest,
    NodeUnpublishVolumeResponse, NodeUnstageVolumeRequest, NodeUnstageVolumeResponse,
};
use tonic::{Request, Response, Status};

use sscsi_engine::Engine;

use crate::error::StageError;
use crate::guard::VolumeGuards;
use crate::last_known_good::LastKnownGood;
use crate::publish::Publisher;
use crate::volumes::VolumeTable;
use crate::{NodeConfig, NodeDeps};

/// CSI Node: publish and unpublish secret volumes.
#[derive(Debug, Clone)]
pub struct NodeService {
    node_id: String,
    publisher: Arc<Publisher>,
}

impl NodeService {
    pub fn new(config: NodeConfig, deps: NodeDeps) -> Self {
        let NodeDeps { mounter, spcs, providers, readiness: _, metrics, observer } = deps;
        // Every republish checks when the interval is zero.
        let interval = config.rotation_poll_interval.unwrap_or_default();
        // The publisher's table; the metrics read it.
        let volumes = VolumeTable::default();
        metrics.read_volumes_from(
            &volumes,
            config.metrics_pod_labels,
            config.rotation_poll_interval,
        );
        let publisher = Publisher {
            rotation_poll_interval: config.rotation_poll_interval,
            refresh_backoff: config.refresh_backoff,
            min_rotation_interval: config.min_rotation_interval,
            pin_class_generation: config.pin_class_generation,
            mounter,
            spcs,
            engine: Engine::new(providers, interval),
            guards: VolumeGuards::default(),
            volumes,
            metrics,
            observer,
            last_known_good: config.serve_last_known_good.map(LastKnownGood::new),
        };
        Self { node_id: config.node_id, publisher: Arc::new(publisher) }
    }
}

impl NodeService {
    /// A handle for on-demand refreshes of mounted volumes.
    pub fn refresher(&self) -> Refresher {
        Refresher(self.publisher.clone())
    }
}

/// Re-fetches a pod's volumes now (the `secrets-store.csi.k8s.io/refresh`
/// annotation), with the request kubelet last sent for each.
#[derive(Debug, Clone)]
pub struct Refresher(Arc<Publisher>);

impl Refresher {
    /// Returns how many volumes were re-fetched.
    pub async fn refresh_pod(&self, namespace: &str, name: &str) -> usize {
        self.0.refresh_pod(namespace, name).await
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    /// Mounts the volume's secrets. Idempotent: a second call for a mounted
    /// volume succeeds without a provider call unless a rotation is due.
    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let started = Instant::now();
        let req = request.into_inner();
        let (volume_id, target) = (req.volume_id.clone(), req.target_path.clone());
        match self.publisher.publish(req).await {
            Ok(outcome) => {
                tracing::info!(
                    volume_id,
                    target,
                    outcome = outcome.describe(),
                    // Fractional: most publishes take less than a millisecond.
                    elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                    "node publish volume complete"
                );
                Ok(Response::new(NodePublishVolumeResponse {}))
            }
            Err(e) => {
                tracing::warn!(
                    volume_id, target, code = ?e.code(), reason = e.reason(), error = %e,
                    "node publish volume failed"
                );
                Err(e.into())
            }
        }
    }

    /// Unmounts and removes the target. Idempotent: a missing target succeeds.
    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let (volume_id, target) = (req.volume_id.clone(), req.target_path.clone());
        match self.publisher.unpublish(req).await {
            Ok(()) => {
                tracing::info!(volume_id, target, "node unpublish volume complete");
                Ok(Response::new(NodeUnpublishVolumeResponse {}))
            }
            Err(e) => {
                tracing::warn!(volume_id, target, code = ?e.code(), error = %e, "node unpublish volume failed");
                Err(e.into())
            }
        }
    }

    /// Kubelet never stages ephemeral inline volumes; like upstream this only
    /// validates its arguments.
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.is_empty() {
            return Err(StageError::MissingVolumeId.into());
        }
        if req.staging_target_path.is_empty() {
            return Err(StageError::MissingStagingPath.into());
        }
        if req.volume_capability.is_none() {
            return Err(StageError::MissingCapability.into());
        }
        Ok(Response::new(NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.is_empty() {
            return Err(StageError::MissingVolumeId.into());
        }
        if req.staging_target_path.is_empty() {
            return Err(StageError::MissingStagingPath.into());
        }
        Ok(Response::new(NodeUnstageVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        _: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        Err(Status::unimplemented("NodeGetVolumeStats is not implemented"))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        // VOLUME_MOUNT_GROUP: kubelet then passes the pod's fsGroup, which it
        // never applies itself to a read-only inline volume.
        let capabilities = [RpcType::StageUnstageVolume, RpcType::VolumeMountGroup]
            .into_iter()
            .map(|rpc| NodeServiceCapability {
                r#type: Some(CapabilityType::Rpc(Rpc { r#type: rpc as i32 })),
            })
            .collect();
        Ok(Response::new(NodeGetCapabilitiesResponse { capabilities }))
    }

    async fn node_get_info(
        &self,
        _: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }
}
