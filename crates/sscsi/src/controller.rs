//! `sscsi controller`: the SecretSync controller from its flags, behind
//! leader election when asked, until SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::registry::Registry;
use sscsi_engine::Engine;
use sscsi_kube::secretsync::{self, ControllerConfig, SecretSyncController};
use sscsi_kube::{Elector, LeaseConfig};
use sscsi_node::Readiness;
use sscsi_node::http::{self, HttpState};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::ControllerArgs;
use crate::node::{listen_addr, serve_http, shutdown_on_signal, wait_all};

/// How long the last event writes may take after SIGTERM.
const OUTBOX_GRACE: Duration = Duration::from_secs(5);
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    let ControllerArgs {
        rotation_poll_interval,
        token_request_audience,
        sync_allowed_namespaces,
        leader_elect,
        leader_election_namespace,
        leader_election_id,
        concurrent_syncs,
        metrics_bind_address,
        health_probe_bind_address,
        pod_name,
        pod_uid,
        pod_namespace,
        kubeconfig,
        external,
        provider,
    } = args;
    let metrics_addr = listen_addr("--metrics-bind-address", &metrics_bind_address)?;
    let health_addr = listen_addr("--health-probe-bind-address", &health_probe_bind_address)?;
    let client =
        sscsi_kube::client(kubeconfig.as_deref()).await.context("connect to Kubernetes")?;
    let mut registry = Registry::default();
    let backend_stats = crate::providers::backend_stats(&provider)?;
    backend_stats.register(&mut registry);
    let shutdown = CancellationToken::new();
    let mut providers =
        crate::providers::build(provider, Some(&client), None, &backend_stats, Default::default())
            .await?;
    crate::providers::attach_external(
        &mut providers,
        external,
        &backend_stats,
        &mut registry,
        &shutdown,
    );
    let audiences = match token_request_audience {
        Some(list) => {
            list.into_iter().map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()).collect()
        }
        None => crate::providers::kubelet_audiences(&providers),
    };
    let config = ControllerConfig {
        rotation_poll_interval,
        audiences,
        allowed_namespaces: sync_allowed_namespaces.map(|n| {
            n.into_iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
        }),
        pod_name: pod_name.clone(),
        pod_uid,
        concurrency: concurrent_syncs.max(1),
        ..ControllerConfig::default()
    };
    tracing::info!(
        rotation = ?config.rotation_poll_interval, audiences = ?config.audiences,
        allowed_namespaces = ?config.allowed_namespaces, leader_elect, "starting sscsi controller"
    );
    // A rotation pass takes answers up to half an interval old: SecretSyncs
    // of one identity share each check within a pass, and no pass reuses
    // what the previous one read.
    let engine = Engine::new(providers, rotation_poll_interval / 2);
    let controller = SecretSyncController::new(client.clone(), engine, config);
    controller.register(&mut registry);

    let signals = shutdown_on_signal(shutdown.clone())?;
    let mut tasks = JoinSet::new();
    let state = Arc::new(HttpState {
        readiness: Readiness::new(&[]),
        registry: Arc::new(registry),
        csi_socket: Default::default(),
    });
    // A standby replica is healthy and ready too: it only waits for the Lease.
    let routes =
        [(health_addr, http::answer_routes()), (metrics_addr, http::metrics_routes(state))];
    serve_http(&mut tasks, routes, &shutdown).await?;

    let work = controller.clone();
    let stop = shutdown.clone();
    if leader_elect {
        let namespace = match leader_election_namespace.filter(|n| !n.is_empty()) {
            Some(namespace) => namespace,
            None if !pod_namespace.is_empty() => pod_namespace,
            None => std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
                .map(|n| n.trim().to_owned())
                .context("--leader-election-namespace is needed outside a cluster")?,
        };
        let identity = lease_identity(&pod_name);
        let lease = LeaseConfig::new(leader_election_id, namespace, identity);
        let elector = Elector::new(client, lease);
        tasks.spawn(async move {
            secretsync::run_elected(work, elector, stop).await.context("leader election")
        });
    } else {
        tasks.spawn(async move {
            work.run(stop).await;
            Ok(())
        });
    }

    let result = wait_all(tasks, &shutdown).await;
    if tokio::time::timeout(OUTBOX_GRACE, controller.settled()).await.is_err() {
        tracing::warn!("stopping with event writes not yet accepted by the API server");
    }
    signals.abort();
    tracing::info!("sscsi controller stopped");
    result
}

/// The pod name and a random suffix, as client-go's leader election names
/// a candidate (two processes of one pod stay distinct).
fn lease_identity(pod_name: &str) -> String {
    let host = match pod_name {
        "" => nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "sscsi".to_owned()),
        name => name.to_owned(),
    };
    format!("{host}_{:08x}", rand_suffix())
}

fn rand_suffix() -> u32 {
    rand::random()
}
