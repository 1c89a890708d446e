//! `sscsi demo`: one secret volume published, rotated and unpublished through
//! the real CSI server on a real unix socket, with the `local` provider.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use prometheus_client::registry::Registry;
use sscsi_core::{PodInfo, ProviderRegistry};
use sscsi_mount::{FakeMounter, Mounter, TmpfsMounter};
use sscsi_node::observer::NoObserver;
use sscsi_node::spc::DirSpcSource;
use sscsi_node::{Backoff, NodeConfig, Parts, Plugin, client};
use sscsi_proto::csi::v1::identity_client::IdentityClient;
use sscsi_proto::csi::v1::node_client::NodeClient;
use sscsi_proto::csi::v1::{NodePublishVolumeRequest, NodeUnpublishVolumeRequest, ProbeRequest};
use sscsi_provider_local::LocalProvider;
use tokio::sync::oneshot;

use crate::cli::DemoArgs;

const SPC: &str = "\
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: demo-secrets
  namespace: default
spec:
  provider: local
  parameters:
    objects: |
      - objectName: db/password
        objectAlias: db-password
        filePermission: \"0600\"
      - objectName: api/token
        objectAlias: api-token
";

const POD_UID: &str = "5f0e6c1a-demo-4c1b-9d2e-000000000001";
const VOLUME_ID: &str = "csi-5f0e6c1a4c1b9d2e";

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let work = tempfile::Builder::new().prefix("sscsi-demo-").tempdir()?;
    let dir = work.path().to_owned();
    println!("sscsi demo: a real CSI publish of a secret volume, no cluster or cloud needed");
    println!("working directory: {}\n", dir.display());

    let store = dir.join("store");
    write(&store.join("db/password"), "correct-horse-battery-staple")?;
    write(&store.join("api/token"), "token-v1")?;
    let spc_dir = dir.join("spc");
    write(&spc_dir.join("demo-secrets.yaml"), SPC)?;
    println!(
        "1. A secret store for the `local` provider at {}, and this SecretProviderClass:\n",
        store.display()
    );
    println!("{}", indent(SPC));

    let mounter: Arc<dyn Mounter> = if nix::unistd::geteuid().is_root() {
        Arc::new(TmpfsMounter::new(16 << 20))
    } else {
        println!(
            "WARNING: not running as root, so the volume is a plain directory on disk instead of a tmpfs."
        );
        println!("         Run as root (e.g. sudo) to see the real tmpfs mount.\n");
        Arc::new(FakeMounter::new())
    };
    let target = dir.join(format!("pods/{POD_UID}/volumes/kubernetes.io~csi/secrets/mount"));
    let _unmount_on_exit = UnmountOnDrop { mounter: mounter.clone(), target: target.clone() };

    // The node server, in-process, on a real unix socket. Rotation with a zero
    // poll interval makes every republish re-fetch, to show an update.
    let mut providers = ProviderRegistry::new();
    providers.register(Arc::new(LocalProvider::new(&store)?));
    let config = NodeConfig {
        driver_name: sscsi_node::DEFAULT_DRIVER_NAME.into(),
        vendor_version: env!("CARGO_PKG_VERSION").into(),
        node_id: "demo-node".into(),
        rotation_poll_interval: Some(Duration::ZERO),
        refresh_backoff: Backoff::default(),
        min_rotation_interval: Duration::ZERO,
        pin_class_generation: false,
        metrics_pod_labels: false,
        serve_last_known_good: None,
    };
    let parts = Parts {
        mounter: mounter.clone(),
        spcs: Arc::new(DirSpcSource::new(&spc_dir)),
        providers,
        observer: Arc::new(NoObserver),
        readiness: Default::default(),
        registry: Registry::default(),
    };
    let socket = dir.join("csi/csi.sock");
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let plugin = Plugin::new(config, parts);
    let server = plugin.serve(&socket, shutdown, Duration::from_secs(5))?;

    let channel = client::connect(&socket).await.context("connect to the CSI socket")?;
    let mut identity = IdentityClient::new(channel.clone());
    let mut node = NodeClient::new(channel);
    let ready = identity.probe(ProbeRequest {}).await?.into_inner().ready;
    println!(
        "2. The CSI node server listens on unix://{} (Probe: ready={})\n",
        socket.display(),
        ready.unwrap_or(false)
    );

    println!("3. NodePublishVolume, with the volume context kubelet sends for an inline volume:");
    println!("   target {}\n", target.display());
    node.node_publish_volume(publish_request(&target)).await.context("NodePublishVolume")?;
    if mounter.in_memory() {
        println!("   mounted: {}\n", mount_options(&target).unwrap_or_else(|| "tmpfs".into()));
    }
    show(&target)?;

    println!("4. The token changes in the store; kubelet's periodic republish picks it up.");
    println!(
        "   The new version is written beside the old one and `..data` is swapped atomically:\n"
    );
    write(&store.join("api/token"), "token-v2")?;
    node.node_publish_volume(publish_request(&target)).await.context("republish")?;
    show(&target)?;

    println!("5. NodeUnpublishVolume");
    node.node_unpublish_volume(NodeUnpublishVolumeRequest {
        volume_id: VOLUME_ID.into(),
        target_path: target.display().to_string(),
    })
    .await
    .context("NodeUnpublishVolume")?;
    if target.exists() {
        bail!("target {} still exists after unpublish", target.display());
    }
    let done = if mounter.in_memory() { "unmounted and removed" } else { "removed" };
    println!("   {done} {}\n", target.display());

    println!("6. What Prometheus would scrape from /metrics (upstream's names and labels):");
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &plugin.registry)?;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("node_") || l.starts_with("rotation_reconcile_total"))
    {
        println!("   {line}");
    }
    println!();

    let _ = stop.send(());
    server.await??;
    if args.keep {
        let kept = work.keep();
        println!("Done. Kept the working directory {}", kept.display());
    } else {
        println!("Done. Cleaned up {}", dir.display());
    }
    Ok(())
}

fn publish_request(target: &Path) -> NodePublishVolumeRequest {
    let pod = PodInfo {
        name: "demo-app".into(),
        namespace: "default".into(),
        uid: POD_UID.into(),
        service_account: "default".into(),
    };
    client::inline_volume_publish_request(VOLUME_ID, target, "demo-secrets", &pod)
}

/// Prints the volume's tree and what an application reads from it.
fn show(target: &Path) -> anyhow::Result<()> {
    let mut out = String::new();
    let mut entries: Vec<_> = std::fs::read_dir(target)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in &entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(entry.path())?;
        if meta.file_type().is_symlink() {
            writeln!(out, "   {name} -> {}", std::fs::read_link(entry.path())?.display())?;
        } else if meta.is_dir() {
            writeln!(out, "   {name}/")?;
            let mut files: Vec<_> = std::fs::read_dir(entry.path())?.collect::<Result<_, _>>()?;
            files.sort_by_key(|e| e.file_name());
            for f in files {
                let m = f.metadata()?;
                writeln!(
                    out,
                    "   {name}/{}  ({:o}, {} bytes)",
                    f.file_name().to_string_lossy(),
                    m.permissions().mode() & 0o777,
                    m.len()
                )?;
            }
        }
    }
    println!("{out}");
    println!("   what the application reads:");
    for entry in &entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") {
            // Demo values only: a real deployment never prints secrets.
            println!("   cat {name}: {}", std::fs::read_to_string(entry.path())?);
        }
    }
    println!();
    Ok(())
}

fn mount_options(target: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let target = target.canonicalize().ok()?.display().to_string();
    info.lines().rfind(|l| l.split(' ').nth(4) == Some(target.as_str())).map(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        let (opts, rest) = (fields[5], l.split(" - ").nth(1).unwrap_or_default());
        format!("{opts} {rest}")
    })
}

fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(path.parent().expect("has a parent"))?;
    std::fs::write(path, contents).with_context(|| format!("write {}", path.display()))
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("   {l}\n")).collect()
}

/// Makes sure a failed demo run leaves no tmpfs mounted behind.
struct UnmountOnDrop {
    mounter: Arc<dyn Mounter>,
    target: PathBuf,
}

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        let _ = self.mounter.unmount(&self.target);
    }
}
