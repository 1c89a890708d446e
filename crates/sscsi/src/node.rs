use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sscsi_core::ProviderRegistry;
use sscsi_mount::{FakeMounter, Mounter, TmpfsMounter};
use sscsi_node::spc::DirSpcSource;
use sscsi_node::{Endpoint, NodeConfig, Readiness, server, services};
use sscsi_provider_local::LocalProvider;

use crate::cli::NodeArgs;

/// How long in-flight calls may run after SIGTERM: within the pod's default
/// 30 s termination grace period.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let NodeArgs {
        endpoint,
        nodeid,
        drivername,
        enable_secret_rotation,
        rotation_poll_interval,
        metrics_addr: _, // accepted for upstream compatibility; no metrics server yet
        tmpfs_size,
        spc_dir,
        local_provider_root,
        no_tmpfs,
    } = args;
    let endpoint: Endpoint = endpoint
        .parse()
        .map_err(anyhow::Error::msg)
        .context("--endpoint")?;
    let node_id = match nodeid {
        Some(id) if !id.is_empty() => id,
        _ => nix::unistd::gethostname()?.to_string_lossy().into_owned(),
    };

    let mounter: Arc<dyn Mounter> = if no_tmpfs {
        tracing::warn!(
            "--no-tmpfs: volumes are plain directories on disk; never use this in production"
        );
        Arc::new(FakeMounter::new())
    } else {
        Arc::new(TmpfsMounter::new(tmpfs_size))
    };
    let mut providers = ProviderRegistry::new();
    if let Some(root) = local_provider_root {
        let local = LocalProvider::new(&root)
            .with_context(|| format!("--local-provider-root {}", root.display()))?;
        providers.register(Arc::new(local));
    }
    let config = NodeConfig {
        driver_name: drivername,
        vendor_version: env!("CARGO_PKG_VERSION").to_owned(),
        node_id,
        rotation_poll_interval: enable_secret_rotation.then_some(rotation_poll_interval),
    };
    tracing::info!(
        endpoint = %endpoint.path.display(), node_id = config.node_id, driver = config.driver_name,
        rotation = ?config.rotation_poll_interval, providers = ?providers.names(), "starting sscsi node"
    );
    let readiness = Readiness::default();
    let (identity, node) = services(
        config,
        mounter,
        Arc::new(DirSpcSource::new(spc_dir)),
        providers,
        readiness.clone(),
    );
    // Handlers first: a SIGTERM right after the socket appears must still be graceful.
    let shutdown = shutdown_signal()?;
    let listener = server::bind_private(&endpoint.path)
        .with_context(|| format!("listen on {}", endpoint.path.display()))?;
    readiness.set_ready();
    server::serve(listener, identity, node, shutdown, SHUTDOWN_GRACE).await?;
    tracing::info!("sscsi node stopped");
    Ok(())
}

/// Installs the handlers now; the future resolves on SIGTERM (kubelet
/// stopping the pod) or SIGINT.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}
