//! A CSI node plugin (the real gRPC server on a unix socket) serving
//! SecretProviderClasses from files, driven the way kubelet drives it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use sscsi_core::{PodInfo, ProviderRegistry};
use sscsi_mount::FakeMounter;
use sscsi_node::observer::NoObserver;
use sscsi_node::spc::DirSpcSource;
use sscsi_node::{Backoff, NodeConfig, Parts, Plugin, client};
use sscsi_proto::TOKENS_KEY;
use sscsi_proto::csi::v1::node_client::NodeClient;
use tonic::transport::Channel;

/// One SecretProviderClass: its name (in namespace `shop`), provider and
/// `spec.parameters` as YAML (one `key: value` per line, block scalars allowed).
#[derive(Debug, Clone, Copy)]
pub struct Class<'a> {
    pub name: &'a str,
    pub provider: &'a str,
    pub parameters: &'a str,
}

#[derive(Debug)]
pub struct TestNode {
    pub dir: crate::MountDir,
    csi: NodeClient<Channel>,
}

/// What a publish brings besides the class: kubelet's tokens (audience →
/// token) and nodePublishSecretRef's data.
#[derive(Debug, Clone, Default)]
pub struct Publish<'a> {
    pub tokens: &'a [(&'a str, &'a str)],
    pub secrets: &'a [(&'a str, &'a str)],
}

impl TestNode {
    /// Serves `classes` with `providers`, with `--rotation-poll-interval`
    /// `rotation` (`None`: rotation off; zero: every republish re-fetches).
    pub async fn start(
        providers: ProviderRegistry,
        classes: &[Class<'_>],
        rotation: Option<Duration>,
    ) -> Self {
        Self::start_with(providers, classes, rotation, None).await
    }

    /// As [`TestNode::start`], serving last-known-good copies for `copies`
    /// (`--serve-last-known-good`).
    pub async fn start_with(
        providers: ProviderRegistry,
        classes: &[Class<'_>],
        rotation: Option<Duration>,
        copies: Option<Duration>,
    ) -> Self {
        let dir = crate::MountDir::new();
        let spc_dir = dir.path().join("spc");
        std::fs::create_dir(&spc_dir).expect("the class directory");
        for class in classes {
            let parameters: String =
                class.parameters.lines().map(|l| format!("    {l}\n")).collect();
            let yaml = format!(
                "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n\
                 metadata: {{name: {}, namespace: shop}}\nspec:\n  provider: {}\n  parameters:\n{parameters}",
                class.name, class.provider
            );
            std::fs::write(spc_dir.join(format!("{}.yaml", class.name)), yaml)
                .expect("a class file");
        }
        let config = NodeConfig {
            driver_name: "secrets-store.csi.k8s.io".into(),
            vendor_version: "test".into(),
            node_id: "n".into(),
            rotation_poll_interval: rotation,
            refresh_backoff: Backoff::default(),
            min_rotation_interval: Duration::ZERO,
            pin_class_generation: false,
            metrics_pod_labels: false,
            serve_last_known_good: copies,
        };
        let parts = Parts {
            mounter: Arc::new(FakeMounter::new()),
            spcs: Arc::new(DirSpcSource::new(&spc_dir)),
            providers,
            observer: Arc::new(NoObserver),
            readiness: Default::default(),
            registry: Registry::default(),
        };
        let socket = dir.path().join("csi.sock");
        Plugin::new(config, parts)
            .serve(&socket, std::future::pending(), Duration::from_secs(1))
            .expect("the CSI socket");
        let csi = NodeClient::new(client::connect(&socket).await.expect("a connection"));
        Self { dir, csi }
    }

    /// The CSI socket, for clients other than the one this node holds.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("csi.sock")
    }

    /// Pod `pod` of service account `app` in namespace `shop`.
    pub fn pod(pod: &str) -> PodInfo {
        PodInfo {
            name: pod.into(),
            namespace: "shop".into(),
            uid: format!("uid-{pod}"),
            service_account: "app".into(),
        }
    }

    /// NodePublishVolume of `class` for `pod`, as kubelet sends it; the
    /// target directory on success.
    pub async fn publish(
        &self,
        class: &str,
        pod: &PodInfo,
        extra: &Publish<'_>,
    ) -> Result<PathBuf, tonic::Status> {
        let target = self
            .dir
            .path()
            .join(format!("pods/{}/volumes/kubernetes.io~csi/{class}/mount", pod.uid));
        let mut request = client::inline_volume_publish_request(
            &format!("csi-{class}-{}", pod.name),
            &target,
            class,
            pod,
        );
        if !extra.tokens.is_empty() {
            let tokens: serde_json::Map<String, serde_json::Value> = extra
                .tokens
                .iter()
                .map(|(aud, token)| {
                    let entry = serde_json::json!({"token": token, "expirationTimestamp": "2030-01-01T00:00:00Z"});
                    ((*aud).to_owned(), entry)
                })
                .collect();
            request.volume_context.extend(HashMap::from([(
                TOKENS_KEY.to_owned(),
                serde_json::Value::Object(tokens).to_string(),
            )]));
        }
        request.secrets =
            extra.secrets.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.csi.clone().node_publish_volume(request).await.map(|_| target)
    }
}
