//! Plays kubelet's plugin watcher against the built-in registration socket.

use std::path::Path;
use std::time::{Duration, Instant};

use sscsi_node::registration::{self, RegistrationConfig};
use sscsi_node::{Condition, Readiness, client};
use sscsi_proto::registration::v1::registration_client::RegistrationClient;
use sscsi_proto::registration::v1::{InfoRequest, RegistrationStatus};
use tokio_util::sync::CancellationToken;

async fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn answers_as_node_driver_registrar_and_retries_a_failed_registration() {
    let dir = tempfile::tempdir().unwrap();
    let config = RegistrationConfig {
        registry_dir: dir.path().join("plugins_registry"),
        driver_name: "secrets-store.csi.k8s.io".into(),
        kubelet_endpoint: "/var/lib/kubelet/plugins/csi-secrets-store/csi.sock".into(),
    };
    let socket = config.socket_path();
    assert_eq!(socket, dir.path().join("plugins_registry/secrets-store.csi.k8s.io-reg.sock"));
    let readiness = Readiness::default();
    readiness.mark(Condition::Serving, true);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(registration::run(config, readiness.clone(), shutdown.clone()));

    wait_for(&socket).await;
    assert!(!readiness.is_ready(), "not ready before kubelet registered us");
    let mut kubelet = RegistrationClient::new(client::connect(&socket).await.unwrap());
    let info = kubelet.get_info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.r#type, "CSIPlugin");
    assert_eq!(info.name, "secrets-store.csi.k8s.io");
    assert_eq!(info.endpoint, "/var/lib/kubelet/plugins/csi-secrets-store/csi.sock");
    assert_eq!(info.supported_versions, vec!["1.0.0"]);

    kubelet
        .notify_registration_status(RegistrationStatus {
            plugin_registered: true,
            error: String::new(),
        })
        .await
        .unwrap();
    assert!(readiness.is_ready());

    // A failed registration: unready, and the socket is recreated so kubelet retries.
    let first = std::fs::metadata(&socket).unwrap();
    kubelet
        .notify_registration_status(RegistrationStatus {
            plugin_registered: false,
            error: "driver name secrets-store.csi.k8s.io already registered".into(),
        })
        .await
        .unwrap();
    assert_eq!(readiness.pending(), vec!["kubelet-registration"]);
    drop(kubelet);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        use std::os::unix::fs::MetadataExt;
        let recreated = std::fs::metadata(&socket)
            .is_ok_and(|m| m.ino() != first.ino() || m.ctime_nsec() != first.ctime_nsec());
        if recreated {
            break;
        }
        assert!(Instant::now() < deadline, "registration socket was not recreated");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut kubelet = RegistrationClient::new(client::connect(&socket).await.unwrap());
    kubelet.get_info(InfoRequest {}).await.unwrap();
    kubelet
        .notify_registration_status(RegistrationStatus {
            plugin_registered: true,
            error: String::new(),
        })
        .await
        .unwrap();
    assert!(readiness.is_ready());
    drop(kubelet);

    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert!(!socket.exists(), "socket removed on shutdown");
}
