//! End-to-end tests of the built `sscsi` binary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sscsi_proto::TOKENS_KEY;
use sscsi_proto::csi::v1::identity_client::IdentityClient;
use sscsi_proto::csi::v1::node_client::NodeClient;
use sscsi_proto::csi::v1::{
    NodePublishVolumeRequest, NodeUnpublishVolumeRequest, ProbeRequest, VolumeCapability,
};

const BIN: &str = env!("CARGO_BIN_EXE_sscsi");

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn demo_publishes_rotates_and_unpublishes() {
    let out = Command::new(BIN).arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "Probe: ready=true",
        "cat api-token: token-v1",
        "cat api-token: token-v2",
        "cat db-password: correct-horse-battery-staple",
        "..data -> ..",
        "Done. Cleaned up",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    if is_root() {
        assert!(stdout.contains("nosuid,nodev,noexec"), "{stdout}");
        assert!(stdout.contains("tmpfs"), "{stdout}");
    } else {
        assert!(stdout.contains("WARNING: not running as root"), "{stdout}");
    }
    let workdir = stdout
        .lines()
        .find_map(|l| l.strip_prefix("working directory: "))
        .unwrap();
    assert!(!Path::new(workdir).exists(), "demo cleans up {workdir}");
}

#[test]
fn node_rejects_a_non_unix_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["node", "--endpoint", "tcp://127.0.0.1:10000", "--spc-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--endpoint") && stderr.contains("must be a unix socket"),
        "{stderr}"
    );
}

struct Node {
    child: Child,
    socket: PathBuf,
    /// stdout and stderr go to a file: trace logs would fill a pipe nobody reads yet.
    log: PathBuf,
}

impl Node {
    fn start(dir: &Path, extra: &[&str]) -> Self {
        let socket = dir.join("plugin/csi.sock");
        let mut cmd = Command::new(BIN);
        cmd.arg("node")
            .arg(format!("--endpoint=unix://{}", socket.display()))
            .args(["--nodeid=node-a", "--log-level=trace"])
            .arg(format!("--spc-dir={}", dir.join("spc").display()))
            .arg(format!(
                "--local-provider-root={}",
                dir.join("store").display()
            ))
            .args(extra);
        let log = dir.join("node.log");
        let file = std::fs::File::create(&log).unwrap();
        cmd.stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file));
        if !is_root() {
            cmd.arg("--no-tmpfs");
        }
        let child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "node did not create its socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Node { child, socket, log }
    }

    /// SIGTERM, then wait: the process must exit cleanly and remove its
    /// socket. Returns its output.
    fn stop(mut self) -> String {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        let status = self.child.wait().unwrap();
        let log = std::fs::read_to_string(&self.log).unwrap();
        assert!(status.success(), "exit status {status:?}\n{log}");
        assert!(!self.socket.exists(), "socket left behind");
        log
    }
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("store")).unwrap();
    std::fs::create_dir_all(dir.path().join("spc")).unwrap();
    std::fs::write(dir.path().join("store/password"), "very-secret-value-42").unwrap();
    std::fs::write(
        dir.path().join("spc/app.yaml"),
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n\
         metadata: {name: app, namespace: team}\nspec:\n  provider: local\n  parameters:\n    objects: |\n      - objectName: password\n",
    )
    .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn node_serves_kubelet_over_its_socket_and_never_logs_secrets() {
    let dir = setup();
    let node = Node::start(dir.path(), &[]);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&node.socket).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "socket is private");

    let channel = sscsi_node::client::connect(&node.socket).await.unwrap();
    let probe = IdentityClient::new(channel.clone())
        .probe(ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(probe.ready, Some(true));

    let target = dir
        .path()
        .join("pods/u1/volumes/kubernetes.io~csi/secrets/mount");
    let mut client = NodeClient::new(channel);
    let request = NodePublishVolumeRequest {
        volume_id: "csi-e2e".into(),
        target_path: target.display().to_string(),
        volume_capability: Some(VolumeCapability::default()),
        readonly: true,
        secrets: HashMap::from([("nodepublish-key".into(), "node-publish-secret-value".into())]),
        volume_context: HashMap::from([
            ("secretProviderClass".into(), "app".into()),
            ("csi.storage.k8s.io/pod.name".into(), "app-0".into()),
            ("csi.storage.k8s.io/pod.namespace".into(), "team".into()),
            ("csi.storage.k8s.io/pod.uid".into(), "u1".into()),
            (TOKENS_KEY.into(), r#"{"vault":{"token":"sa-token-value-xyz","expirationTimestamp":"2030-01-01T00:00:00Z"}}"#.into()),
        ]),
        ..Default::default()
    };
    client.node_publish_volume(request.clone()).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(target.join("password")).unwrap(),
        "very-secret-value-42"
    );
    client.node_publish_volume(request).await.unwrap();
    client
        .node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: "csi-e2e".into(),
            target_path: target.display().to_string(),
        })
        .await
        .unwrap();
    assert!(!target.exists());

    // Close our connection and wait off the runtime, as kubelet would go away.
    drop(client);
    let logs = tokio::task::spawn_blocking(move || node.stop())
        .await
        .unwrap();
    assert!(
        logs.contains("node publish volume complete"),
        "trace logs were captured:\n{logs}"
    );
    for secret in [
        "very-secret-value-42",
        "sa-token-value-xyz",
        "node-publish-secret-value",
    ] {
        assert!(
            !logs.contains(secret),
            "{secret} leaked into the logs:\n{logs}"
        );
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = setup();
    let node = Node::start(dir.path(), &["--log-format-json"]);
    let stderr = node.stop();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.iter().any(|l| l.contains("starting sscsi node")),
        "{stderr}"
    );
    for line in lines {
        assert!(
            line.starts_with('{') && line.ends_with('}'),
            "not a JSON line: {line}"
        );
    }
}
