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
    let workdir = stdout.lines().find_map(|l| l.strip_prefix("working directory: ")).unwrap();
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
    assert!(stderr.contains("--endpoint") && stderr.contains("must be a unix socket"), "{stderr}");
}

#[test]
fn node_rejects_an_unknown_provider() {
    let dir = tempfile::tempdir().unwrap();
    let socket = format!("unix://{}", dir.path().join("csi.sock").display());
    let out = Command::new(BIN)
        .args(["node", "--endpoint", &socket, "--providers", "vault,nope", "--spc-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--providers")
            && stderr
                .contains("unknown provider \"nope\"; this binary has: aws, azure, gcp, vault"),
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
        Self::start_with_env(dir, extra, &[])
    }

    fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let socket = dir.join("plugin/csi.sock");
        let mut cmd = Command::new(BIN);
        cmd.envs(env.iter().copied());
        // HTTP off unless a test asks for it: tests run in parallel.
        cmd.arg("node")
            .args(["--metrics-addr=", "--health-addr="])
            .arg(format!("--endpoint=unix://{}", socket.display()))
            .args(["--nodeid=node-a", "--log-level=trace"])
            .arg(format!("--local-provider-root={}", dir.join("store").display()))
            .args(extra);
        // Files unless the test points the node at an API server.
        if !extra.iter().any(|a| a.starts_with("--kubeconfig")) {
            cmd.arg(format!("--spc-dir={}", dir.join("spc").display()));
        }
        let log = dir.join("node.log");
        let file = std::fs::File::create(&log).unwrap();
        cmd.stdout(Stdio::from(file.try_clone().unwrap())).stderr(Stdio::from(file));
        if !is_root() {
            cmd.arg("--no-tmpfs");
        }
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("node exited with {status}:\n{}", std::fs::read_to_string(&log).unwrap());
            }
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

/// `sscsi controller` against an API server, as a child process.
struct SyncController {
    child: Child,
    log: PathBuf,
}

/// A failed test must not leave the process running.
impl Drop for SyncController {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SyncController {
    fn start(dir: &Path, kubeconfig: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let log = dir.join("controller.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .envs(env.iter().copied())
            .arg("controller")
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(["--metrics-bind-address=", "--health-probe-bind-address=", "--log-level=trace"])
            .args(["--rotation-poll-interval=0s"])
            .args(extra)
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        Self { child, log }
    }

    /// SIGTERM, then wait for a clean exit; returns the log.
    fn stop(mut self) -> String {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        let status = self.child.wait().unwrap();
        let log = std::fs::read_to_string(&self.log).unwrap();
        assert!(status.success(), "exit status {status:?}\n{log}");
        log
    }
}

/// A SecretSync of class `class` for service account `app` in `team`,
/// syncing `source` into key `value`: the Secret must hold the bytes of the
/// file a mount of the same class wrote. Returns the controller's log.
async fn synced_like_the_mount(
    api: &sscsi_testkit::kube_api::ApiServer,
    dir: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
    class: &str,
    source: &str,
    mounted: &Path,
) -> String {
    use base64::Engine as _;
    use kube::api::{Api, DynamicObject, PostParams};
    use kube::core::{ApiResource, GroupVersionKind};
    let client = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    let gvk = GroupVersionKind::gvk("secret-sync.x-k8s.io", "v1alpha1", "SecretSync");
    let sync: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "secret-sync.x-k8s.io/v1alpha1", "kind": "SecretSync",
        "metadata": {"name": format!("{class}-synced"), "namespace": "team"},
        "spec": {"serviceAccountName": "app", "secretProviderClassName": class,
                 "secretObject": {"type": "Opaque", "data": [{"sourcePath": source, "targetKey": "value"}]}}
    }))
    .unwrap();
    Api::<DynamicObject>::namespaced_with(client, "team", &ApiResource::from_gvk(&gvk))
        .create(&PostParams::default(), &sync)
        .await
        .unwrap();
    let kubeconfig = dir.join("kubeconfig");
    let controller = SyncController::start(dir, &kubeconfig, extra, env);
    let name = format!("{class}-synced");
    let secrets = api
        .wait_for("", "secrets", Some("team"), |all| {
            all.iter().any(|s| s["metadata"]["name"] == name)
        })
        .await;
    let secret = secrets.iter().find(|s| s["metadata"]["name"] == name).unwrap();
    let value = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["value"].as_str().unwrap())
        .unwrap();
    assert_eq!(value, std::fs::read(mounted).unwrap(), "the Secret holds the mounted bytes");
    api.wait_for("secret-sync.x-k8s.io", "secretsyncs", Some("team"), |all| {
        all.iter().any(|s| {
            s["metadata"]["name"] == name
                && s["status"]["conditions"][0]["reason"] == "CreateSucceeded"
        })
    })
    .await;
    let log = tokio::task::spawn_blocking(move || controller.stop()).await.unwrap();
    // The controller's own service-account tokens (JWTs) never reach its log.
    assert!(!log.contains("eyJ"), "a token in the controller's log:\n{log}");
    log
}

/// `sscsi provider-server` as a child process, on `<dir>/providers/<name>.sock`.
struct ProviderServer {
    child: Child,
    log: PathBuf,
}

impl Drop for ProviderServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ProviderServer {
    fn start(dir: &Path, provider: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let socket = dir.join(format!("providers/{provider}.sock"));
        let log = dir.join(format!("provider-server-{provider}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(BIN)
            .envs(env.iter().copied())
            .args(["provider-server", "--provider", provider, "--log-level=trace"])
            .arg(format!("--socket={}", socket.display()))
            .args(["--metrics-addr=", "--health-addr="])
            .args(extra)
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "provider-server exited with {status}:\n{}",
                    std::fs::read_to_string(&log).unwrap()
                );
            }
            assert!(Instant::now() < deadline, "provider-server did not create its socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, log }
    }

    fn stop(mut self) -> String {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        let status = self.child.wait().unwrap();
        let log = std::fs::read_to_string(&self.log).unwrap();
        assert!(status.success(), "exit status {status:?}\n{log}");
        log
    }
}

/// What a pod sees in a volume: every visible name, its bytes and its mode.
fn volume_listing(target: &Path) -> Vec<(String, Vec<u8>, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut files: Vec<_> = std::fs::read_dir(target)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with(".."))
        .map(|name| {
            let path = target.join(&name);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            (name, std::fs::read(&path).unwrap(), mode)
        })
        .collect();
    files.sort();
    files
}

/// `sscsi render` of `class` (YAML) into `<dir>/render-<label>`: the same
/// names, bytes and modes as the volume at `target`, laid out as a volume.
/// Returns its log.
fn rendered_like_the_mount(
    dir: &Path,
    label: &str,
    class: &str,
    args: &[&str],
    env: &[(&str, &str)],
    target: &Path,
) -> String {
    let file = dir.join(format!("render-{label}.yaml"));
    std::fs::write(&file, class).unwrap();
    let out = dir.join(format!("render-{label}"));
    let output = Command::new(BIN)
        .args(["--log-level=debug", "render"])
        .arg(format!("--class={}", file.display()))
        .arg(format!("--out={}", out.display()))
        .args(args)
        .env_remove("VAULT_TOKEN")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "sscsi render {label}: {log}");
    assert_eq!(volume_listing(&out), volume_listing(target), "render {label}");
    assert!(std::fs::symlink_metadata(out.join("..data")).unwrap().is_symlink(), "{label}");
    log
}

/// The class of `request` mounted again, by a second node that does not
/// serve `provider` itself, through `sscsi provider-server --provider
/// <provider>` on its socket: the volume must hold the same files, bytes
/// and modes as the in-process mount at `first`. Returns both logs.
async fn same_through_the_provider_server(
    dir: &Path,
    provider: &str,
    env: &[(&str, &str)],
    mut request: sscsi_proto::csi::v1::NodePublishVolumeRequest,
    first: &Path,
) -> String {
    let kubeconfig = format!("--kubeconfig={}", dir.join("kubeconfig").display());
    let server = ProviderServer::start(dir, provider, &[&kubeconfig], env);
    let second = dir.join("second");
    std::fs::create_dir_all(second.join("store")).unwrap();
    let node = Node::start_with_env(
        &second,
        &[
            &kubeconfig,
            "--providers=",
            &format!("--provider-volume={}", dir.join("providers").display()),
            "--additional-provider-volume-paths=",
        ],
        env,
    );
    let mut csi = NodeClient::new(sscsi_node::client::connect(&node.socket).await.unwrap());
    let target = second.join("pods/u2/volumes/kubernetes.io~csi/v/mount");
    request.target_path = target.display().to_string();
    request.volume_id = format!("{}-through-socket", request.volume_id);
    publish_once_the_class_is_cached(&mut csi, request).await;
    assert_eq!(volume_listing(&target), volume_listing(first), "the same files through the socket");
    drop(csi);
    let node_log = tokio::task::spawn_blocking(move || node.stop()).await.unwrap();
    assert!(node_log.contains("using external provider"), "{node_log}");
    let server_log = server.stop();
    assert!(server_log.contains("mount request served"), "{server_log}");
    node_log + &server_log
}

/// Creates SecretProviderClass `name` in namespace `team` through the API.
async fn create_class(
    client: kube::Client,
    name: &str,
    provider: &str,
    parameters: serde_json::Value,
) {
    use kube::api::{Api, DynamicObject, PostParams};
    use kube::core::{ApiResource, GroupVersionKind};
    let gvk = GroupVersionKind::gvk("secrets-store.csi.x-k8s.io", "v1", "SecretProviderClass");
    let spc: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
        "metadata": {"name": name, "namespace": "team"},
        "spec": {"provider": provider, "parameters": parameters}
    }))
    .unwrap();
    Api::<DynamicObject>::namespaced_with(client, "team", &ApiResource::from_gvk(&gvk))
        .create(&PostParams::default(), &spc)
        .await
        .unwrap();
}

/// Publishes `request`, retrying while its class has not reached the node's
/// cache yet (shortly after the node starts).
async fn publish_once_the_class_is_cached(
    csi: &mut NodeClient<tonic::transport::Channel>,
    request: sscsi_proto::csi::v1::NodePublishVolumeRequest,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match csi.node_publish_volume(request.clone()).await {
            Ok(_) => return,
            Err(e) if e.code() == tonic::Code::NotFound && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("publish failed: {e}"),
        }
    }
}

fn setup() -> sscsi_testkit::MountDir {
    let dir = sscsi_testkit::MountDir::new();
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
    let probe =
        IdentityClient::new(channel.clone()).probe(ProbeRequest {}).await.unwrap().into_inner();
    assert_eq!(probe.ready, Some(true));

    let target = dir.path().join("pods/u1/volumes/kubernetes.io~csi/secrets/mount");
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
    assert_eq!(std::fs::read_to_string(target.join("password")).unwrap(), "very-secret-value-42");
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
    let logs = tokio::task::spawn_blocking(move || node.stop()).await.unwrap();
    assert!(logs.contains("node publish volume complete"), "trace logs were captured:\n{logs}");
    // stderr is a file here, as in a container: no colour escapes.
    assert!(!logs.contains('\x1b'), "ANSI escapes in logs that go to a file:\n{logs}");
    for secret in ["very-secret-value-42", "sa-token-value-xyz", "node-publish-secret-value"] {
        assert!(!logs.contains(secret), "{secret} leaked into the logs:\n{logs}");
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = setup();
    let node = Node::start(dir.path(), &["--log-format-json"]);
    let stderr = node.stop();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.iter().any(|l| l.contains("starting sscsi node")), "{stderr}");
    for line in lines {
        assert!(line.starts_with('{') && line.ends_with('}'), "not a JSON line: {line}");
        assert!(!line.contains('\x1b'), "ANSI escapes in a JSON line: {line:?}");
    }
}

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A plain HTTP/1.1 GET: (status code, body).
fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn wait_http(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "HTTP port {port} never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn registers_with_kubelet_and_serves_health_readiness_and_metrics() {
    use sscsi_proto::registration::v1::registration_client::RegistrationClient;
    use sscsi_proto::registration::v1::{InfoRequest, RegistrationStatus};

    let dir = setup();
    let (health, metrics) = (free_port(), free_port());
    let registry = dir.path().join("plugins_registry");
    let node = Node::start(
        dir.path(),
        &[
            &format!("--health-addr=127.0.0.1:{health}"),
            &format!("--metrics-addr=127.0.0.1:{metrics}"),
            &format!("--plugin-registration-dir={}", registry.display()),
            "--kubelet-registration-path=/var/lib/kubelet/plugins/csi-secrets-store/csi.sock",
        ],
    );
    let get = |port, path: &'static str| tokio::task::spawn_blocking(move || http_get(port, path));
    tokio::task::spawn_blocking(move || (wait_http(health), wait_http(metrics))).await.unwrap();

    let (status, body) = get(health, "/readyz").await.unwrap();
    assert_eq!((status, body.as_str()), (503, "not ready: waiting for kubelet-registration\n"));
    let (_, scraped) = get(metrics, "/metrics").await.unwrap();
    let pending = r#"sscsi_ready{condition="kubelet-registration"} 0"#;
    assert!(scraped.lines().any(|l| l == pending), "{scraped}");
    let (status, body) = get(health, "/healthz").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"), "the CSI socket answers Probe");

    // Kubelet's plugin watcher finds the socket and registers the driver.
    let socket = registry.join("secrets-store.csi.k8s.io-reg.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "no registration socket");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut kubelet = RegistrationClient::new(sscsi_node::client::connect(&socket).await.unwrap());
    let info = kubelet.get_info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(
        (info.r#type.as_str(), info.name.as_str(), info.endpoint.as_str()),
        (
            "CSIPlugin",
            "secrets-store.csi.k8s.io",
            "/var/lib/kubelet/plugins/csi-secrets-store/csi.sock"
        )
    );
    assert_eq!(info.supported_versions, vec!["1.0.0"]);
    kubelet
        .notify_registration_status(RegistrationStatus {
            plugin_registered: true,
            error: String::new(),
        })
        .await
        .unwrap();
    drop(kubelet);
    let (status, body) = get(health, "/readyz").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ready\n"));

    // A publish shows up under upstream's metric names.
    let channel = sscsi_node::client::connect(&node.socket).await.unwrap();
    let target = dir.path().join("pods/u2/volumes/kubernetes.io~csi/secrets/mount");
    let pod = sscsi_core::PodInfo {
        name: "p".into(),
        namespace: "team".into(),
        uid: "u2".into(),
        service_account: "sa".into(),
    };
    let request = sscsi_node::client::inline_volume_publish_request("csi-m", &target, "app", &pod);
    NodeClient::new(channel.clone()).node_publish_volume(request).await.unwrap();
    NodeClient::new(channel)
        .node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: "csi-m".into(),
            target_path: target.display().to_string(),
        })
        .await
        .unwrap();
    let (status, body) = get(metrics, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    for line in [
        r#"node_publish_total{provider="local",os_type="linux"} 1"#,
        r#"node_unpublish_total{os_type="linux"} 1"#,
        r#"sscsi_ready{condition="kubelet-registration"} 1"#,
    ] {
        assert!(body.lines().any(|l| l == line), "missing {line} in\n{body}");
    }
    assert_eq!(get(metrics, "/healthz").await.unwrap().0, 404, "health is on its own port");

    let log = tokio::task::spawn_blocking(move || node.stop()).await.unwrap();
    assert!(!socket.exists(), "registration socket removed on shutdown:\n{log}");
}

/// `sscsi node` against the Kubernetes API test double: the class comes
/// from the API, the pod status object and events go to it, and nothing
/// secret reaches the logs at the most verbose level.
#[tokio::test(flavor = "multi_thread")]
async fn node_in_a_cluster_records_pod_status_and_events() {
    use kube::api::{Api, DynamicObject, PostParams};
    use kube::core::{ApiResource, GroupVersionKind};

    let api = sscsi_testkit::kube_api::ApiServer::start().await;
    let dir = setup();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let client = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    let gvk = GroupVersionKind::gvk("secrets-store.csi.x-k8s.io", "v1", "SecretProviderClass");
    let spcs: Api<DynamicObject> =
        Api::namespaced_with(client, "team", &ApiResource::from_gvk(&gvk));
    let spc: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": "app", "namespace": "team"},
        "spec": {"provider": "local", "parameters": {"objects": "- objectName: password\n"}}
    }))
    .unwrap();
    spcs.create(&PostParams::default(), &spc).await.unwrap();

    let health = free_port();
    let node = Node::start(
        dir.path(),
        &[
            &format!("--kubeconfig={}", kubeconfig.display()),
            &format!("--health-addr=127.0.0.1:{health}"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) =
            tokio::task::spawn_blocking(move || http_get(health, "/readyz")).await.unwrap();
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let channel = sscsi_node::client::connect(&node.socket).await.unwrap();
    let mut csi = NodeClient::new(channel);
    let pod = sscsi_core::PodInfo {
        name: "app-0".into(),
        namespace: "team".into(),
        uid: "u-app-0".into(),
        service_account: "app".into(),
    };
    let target = dir.path().join("pods/u-app-0/volumes/kubernetes.io~csi/secrets/mount");
    let mut request =
        sscsi_node::client::inline_volume_publish_request("csi-k", &target, "app", &pod);
    request.secrets.insert("nodepublish-key".into(), "node-publish-secret-value".into());
    request.volume_context.insert(
        TOKENS_KEY.into(),
        r#"{"vault":{"token":"sa-token-value-xyz","expirationTimestamp":"2030-01-01T00:00:00Z"}}"#
            .into(),
    );
    csi.node_publish_volume(request.clone()).await.unwrap();
    assert_eq!(std::fs::read_to_string(target.join("password")).unwrap(), "very-secret-value-42");

    // The status is written off the publish path: wait for it.
    let statuses = written_statuses(&api).await;
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0]["metadata"]["name"], "app-0-team-app");
    assert_eq!(statuses[0]["status"]["objects"][0]["id"], "password");

    // A class that does not exist: NotFound and a Warning event on the pod.
    let missing_target = dir.path().join("pods/u-app-0/volumes/kubernetes.io~csi/other/mount");
    let mut missing =
        sscsi_node::client::inline_volume_publish_request("csi-x", &missing_target, "nope", &pod);
    missing.secrets = request.secrets.clone();
    let err = csi.node_publish_volume(missing).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    api.wait_for("events.k8s.io", "events", Some("team"), |events| {
        events
            .iter()
            .any(|e| e["type"] == "Warning" && e["reason"] == "SecretProviderClassNotFound")
    })
    .await;

    drop(csi);
    let logs = tokio::task::spawn_blocking(move || node.stop()).await.unwrap();
    let recorded =
        serde_json::to_string(&(api.objects("events.k8s.io", "events", None), statuses)).unwrap();
    for secret in ["very-secret-value-42", "sa-token-value-xyz", "node-publish-secret-value"] {
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
        assert!(!recorded.contains(secret), "{secret} leaked into the API");
    }
}

/// The `aws` provider end to end: IRSA through the API double's service
/// account and moto's STS, the secret from moto's Secrets Manager.
#[cfg(feature = "aws")]
/// moto holding `prod/db` = `value`, and the API double with service
/// account team/app (IRSA role `app`) and class team/aws-db reading it
/// (mode 0600).
async fn aws_cluster(
    value: &str,
) -> (sscsi_testkit::moto::MotoServer, sscsi_testkit::kube_api::ApiServer) {
    use aws_config::{BehaviorVersion, Region};
    use kube::api::{Api, PostParams};

    let moto = sscsi_testkit::moto::MotoServer::start();
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-west-2"))
        .endpoint_url(moto.url())
        .credentials_provider(aws_credential_types::Credentials::new("t", "t", None, None, "test"))
        .load()
        .await;
    aws_sdk_secretsmanager::Client::new(&config)
        .create_secret()
        .name("prod/db")
        .secret_string(value)
        .send()
        .await
        .unwrap();

    let api = sscsi_testkit::kube_api::ApiServer::start().await;
    let client = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    let sa: k8s_openapi::api::core::v1::ServiceAccount = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "app", "namespace": "team",
                     "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/app"}}
    }))
    .unwrap();
    Api::namespaced(client.clone(), "team").create(&PostParams::default(), &sa).await.unwrap();
    create_class(client, "aws-db", "aws", serde_json::json!({
            "region": "us-west-2",
            "objects": "- objectName: prod/db\n  objectType: secretsmanager\n  filePermission: \"0600\"\n"
        })).await;
    (moto, api)
}

#[cfg(feature = "aws")]
/// `sscsi node` in `dir` against the cluster double `api`, reading AWS at
/// `endpoint` (moto, or a proxy in front of it), with `extra` flags; and
/// its CSI client.
async fn aws_node(
    dir: &Path,
    api: &sscsi_testkit::kube_api::ApiServer,
    endpoint: &str,
    extra: &[&str],
) -> (Node, NodeClient<tonic::transport::Channel>) {
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let mut args = vec![format!("--kubeconfig={}", kubeconfig.display())];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Node::start_with_env(dir, &args, &[("SSCSI_AWS_ENDPOINT_URL", endpoint)]);
    let csi = NodeClient::new(sscsi_node::client::connect(&node.socket).await.unwrap());
    (node, csi)
}

#[cfg(feature = "aws")]
/// Kubelet's NodePublishVolume of class team/aws-db for pod `pod` of
/// service account `account`, with IRSA token `token`; and its target.
fn irsa_request(
    dir: &Path,
    pod: &str,
    account: &str,
    token: &str,
) -> (NodePublishVolumeRequest, PathBuf) {
    let info = sscsi_core::PodInfo {
        name: pod.into(),
        namespace: "team".into(),
        uid: format!("u-{pod}"),
        service_account: account.into(),
    };
    let target = dir.join(format!("pods/u-{pod}/volumes/kubernetes.io~csi/aws/mount"));
    let mut request = sscsi_node::client::inline_volume_publish_request(
        &format!("csi-{pod}"),
        &target,
        "aws-db",
        &info,
    );
    let tokens = serde_json::json!({"sts.amazonaws.com":
        {"token": token, "expirationTimestamp": "2030-01-01T00:00:00Z"}});
    request.volume_context.insert(TOKENS_KEY.into(), tokens.to_string());
    (request, target)
}

#[tokio::test(flavor = "multi_thread")]
async fn node_in_a_cluster_mounts_an_aws_secret_with_irsa() {
    let (moto, api) = aws_cluster("aws-secret-value-77").await;

    let dir = setup();
    let (node, mut csi) = aws_node(dir.path(), &api, &moto.url(), &[]).await;
    let (request, target) = irsa_request(dir.path(), "app-0", "app", "irsa-token-value-55");
    publish_once_the_class_is_cached(&mut csi, request.clone()).await;
    let file = target.join("prod_db");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "aws-secret-value-77");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let moto_env = [("SSCSI_AWS_ENDPOINT_URL", moto.url())];
    let moto_env: Vec<(&str, &str)> = moto_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let through_socket =
        same_through_the_provider_server(dir.path(), "aws", &moto_env, request, &target).await;

    // `sscsi render` of the same class: with the SDK's default chain (here
    // the environment's keys), and as the pod with its token and role.
    let class = "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata: {name: aws-db, namespace: team}\nspec:\n  provider: aws\n  parameters:\n    region: us-west-2\n    objects: |\n      - objectName: prod/db\n        objectType: secretsmanager\n        filePermission: \"0600\"\n";
    let keys = [
        ("SSCSI_AWS_ENDPOINT_URL", moto.url()),
        ("AWS_ACCESS_KEY_ID", "caller-key".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "caller-secret".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ];
    let keys: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut rendered = rendered_like_the_mount(dir.path(), "aws-chain", class, &[], &keys, &target);
    let token = dir.path().join("irsa.jwt");
    std::fs::write(&token, "irsa-token-value-55").unwrap();
    let as_pod = [
        format!("--token-file=sts.amazonaws.com={}", token.display()),
        "--aws-role-arn=arn:aws:iam::123456789012:role/app".to_owned(),
        "--service-account=app".to_owned(),
    ];
    let as_pod: Vec<&str> = as_pod.iter().map(String::as_str).collect();
    rendered +=
        &rendered_like_the_mount(dir.path(), "aws-irsa", class, &as_pod, &moto_env, &target);

    // The same class through a SecretSync: the controller's own token for the role.
    let env = [("SSCSI_AWS_ENDPOINT_URL", moto.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let synced = synced_like_the_mount(
        &api,
        dir.path(),
        &["--providers=aws"],
        &env,
        "aws-db",
        "prod_db",
        &file,
    )
    .await;

    drop(csi);
    let logs = tokio::task::spawn_blocking(move || node.stop()).await.unwrap()
        + &synced
        + &through_socket
        + &rendered;
    for secret in ["aws-secret-value-77", "irsa-token-value-55", "caller-secret"] {
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
    }
}

/// A backend's refusal is explained where people look: the gRPC message
/// kubelet shows and the pod's Warning event carry AWS's own words, the
/// object, and whose identity asked (the service account; AWS names the
/// assumed role and session), and never the pod's token.
#[tokio::test(flavor = "multi_thread")]
async fn an_aws_denial_reaches_the_pod_with_the_backends_words_and_the_identity() {
    let (moto, api) = aws_cluster("aws-secret-value-78").await;
    let proxy = sscsi_testkit::moto::CountingProxy::start(moto.url()).await;
    let aws_words = "User: arn:aws:sts::123456789012:assumed-role/app/sscsi-team-app is not authorized to perform: secretsmanager:GetSecretValue on resource: prod/db because no identity-based policy allows the secretsmanager:GetSecretValue action";
    proxy.fail_next_with("secretsmanager.GetSecretValue", 400, "AccessDeniedException", aws_words);

    let dir = setup();
    let (node, mut csi) = aws_node(dir.path(), &api, &proxy.url(), &[]).await;
    let (request, _) = irsa_request(dir.path(), "app-0", "app", "irsa-token-value-56");
    // The class reaches the node's cache shortly after it starts.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = csi.node_publish_volume(request.clone()).await.unwrap_err();
        if status.code() != tonic::Code::NotFound || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{}", status.message());
    let message = status.message().to_owned();
    for part in [
        "failed to mount secrets store objects for pod team/app-0 (as service account team/app)",
        "Failed fetching secret prod/db",
        &format!("AccessDeniedException: {aws_words}"),
    ] {
        assert!(message.contains(part), "{part:?} missing in {message:?}");
    }
    let events = api
        .wait_for("events.k8s.io", "events", Some("team"), |events| {
            events.iter().any(|e| e["type"] == "Warning" && e["reason"] == "ProviderError")
        })
        .await;
    let event = events.iter().find(|e| e["reason"] == "ProviderError").unwrap();
    let note = event["note"].as_str().unwrap();
    assert!(note.contains(aws_words) && note.contains("(as service account team/app)"), "{note}");
    drop(csi);
    let logs = tokio::task::spawn_blocking(move || node.stop()).await.unwrap();
    let everything = format!("{logs}{message}{}", serde_json::to_string(&events).unwrap());
    assert!(!everything.contains("irsa-token-value-56"), "the pod's token leaked");
}

/// `--serve-last-known-good` with moto answering 503 through a proxy: a
/// second pod of the same service account mounts the copy the first
/// fetched, and gets a `ServedLastKnownGood` Warning; a pod of another
/// service account is refused.
#[tokio::test(flavor = "multi_thread")]
async fn an_aws_outage_is_bridged_for_the_same_identity_only() {
    use kube::api::{Api, PostParams};
    let (moto, api) = aws_cluster("aws-secret-value-79").await;
    let proxy = sscsi_testkit::moto::CountingProxy::start(moto.url()).await;
    let client = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    let sa: k8s_openapi::api::core::v1::ServiceAccount = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "batch", "namespace": "team",
                     "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/batch"}}
    }))
    .unwrap();
    Api::namespaced(client, "team").create(&PostParams::default(), &sa).await.unwrap();
    let dir = setup();
    let (node, mut csi) =
        aws_node(dir.path(), &api, &proxy.url(), &["--serve-last-known-good=10m"]).await;
    let request =
        |pod: &str, account: &str| irsa_request(dir.path(), pod, account, "irsa-token-value-57");
    let (first, target) = request("app-0", "app");
    publish_once_the_class_is_cached(&mut csi, first).await;
    assert_eq!(std::fs::read_to_string(target.join("prod_db")).unwrap(), "aws-secret-value-79");

    // The backend goes down, past the first mount's shared answer (1 s).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..12 {
        proxy.fail_next("secretsmanager.GetSecretValue", 503, "ServiceUnavailable");
        proxy.fail_next("AssumeRoleWithWebIdentity", 503, "ServiceUnavailable");
    }
    let (second, copy) = request("app-1", "app");
    csi.node_publish_volume(second).await.expect("the copy of the same identity");
    assert_eq!(std::fs::read_to_string(copy.join("prod_db")).unwrap(), "aws-secret-value-79");
    let (other, refused) = request("batch-0", "batch");
    let status = csi.node_publish_volume(other).await.unwrap_err();
    assert!(
        matches!(status.code(), tonic::Code::Unavailable | tonic::Code::ResourceExhausted),
        "{status:?}"
    );
    assert!(!refused.join("prod_db").exists());
    let events = api
        .wait_for("events.k8s.io", "events", Some("team"), |events| {
            events.iter().any(|e| e["reason"] == "ServedLastKnownGood")
        })
        .await;
    let event = events.iter().find(|e| e["reason"] == "ServedLastKnownGood").unwrap();
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["regarding"]["name"], "app-1");
    drop(csi);
    let logs = tokio::task::spawn_blocking(move || node.stop()).await.unwrap();
    let everything = format!("{logs}{}", serde_json::to_string(&events).unwrap());
    assert!(!everything.contains("aws-secret-value-79"), "the secret leaked");
}

#[tokio::test(flavor = "multi_thread")]
async fn node_in_a_cluster_mounts_a_vault_secret_with_kubernetes_auth() {
    use serde_json::json;

    let api = sscsi_testkit::kube_api::ApiServer::start().await;
    let bao = sscsi_testkit::bao::BaoServer::start();
    bao.write(
        "sys/policies/acl/app",
        json!({"policy": "path \"secret/data/*\" { capabilities = [\"read\"] }"}),
    )
    .await;
    bao.write("sys/mounts/pki", json!({"type": "pki"})).await;
    let ca = bao.write("pki/root/generate/internal", json!({"common_name": "cluster-ca"})).await;
    bao.write("sys/auth/kubernetes", json!({"type": "kubernetes"})).await;
    bao.write(
        "auth/kubernetes/config",
        json!({"kubernetes_host": api.url(), "kubernetes_ca_cert": ca["data"]["certificate"]}),
    )
    .await;
    bao.write(
        "auth/kubernetes/role/app",
        json!({"bound_service_account_names": ["app"], "bound_service_account_namespaces": ["team"],
               "token_policies": ["app"]}),
    )
    .await;
    bao.write("secret/data/db", json!({"data": {"password": "vault-secret-value-91"}})).await;

    let client = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    create_class(client, "vault-db", "vault", serde_json::json!({
            "roleName": "app",
            "objects": "- objectName: password\n  secretPath: secret/data/db\n  secretKey: password\n"
        })).await;

    let dir = setup();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    // The address from Vault's own variable; the version key in the driver's namespace.
    let node = Node::start_with_env(
        dir.path(),
        &[&format!("--kubeconfig={}", kubeconfig.display()), "--providers=vault"],
        &[("VAULT_ADDR", &bao.url()), ("POD_NAMESPACE", "sscsi-system")],
    );
    let mut csi = NodeClient::new(sscsi_node::client::connect(&node.socket).await.unwrap());
    let pod = sscsi_core::PodInfo {
        name: "app-0".into(),
        namespace: "team".into(),
        uid: "u-vault".into(),
        service_account: "app".into(),
    };
    let target = dir.path().join("pods/u-vault/volumes/kubernetes.io~csi/vault/mount");
    // No token for audience `vault`: the provider requests one for the pod.
    let request =
        sscsi_node::client::inline_volume_publish_request("csi-vault", &target, "vault-db", &pod);
    publish_once_the_class_is_cached(&mut csi, request.clone()).await;
    assert_eq!(std::fs::read_to_string(target.join("password")).unwrap(), "vault-secret-value-91");
    let vault_env = [("VAULT_ADDR", bao.url()), ("POD_NAMESPACE", "sscsi-system".to_owned())];
    let vault_env: Vec<(&str, &str)> = vault_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let through_socket =
        same_through_the_provider_server(dir.path(), "vault", &vault_env, request, &target).await;
    // `sscsi render` of the same class: with the caller's VAULT_TOKEN, and
    // as the pod, logging in with its service-account token.
    let class = "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata: {name: vault-db, namespace: team}\nspec:\n  provider: vault\n  parameters:\n    roleName: app\n    objects: |\n      - objectName: password\n        secretPath: secret/data/db\n        secretKey: password\n";
    let caller =
        [("VAULT_ADDR", bao.url()), ("VAULT_TOKEN", sscsi_testkit::bao::ROOT_TOKEN.to_owned())];
    let caller: Vec<(&str, &str)> = caller.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut rendered =
        rendered_like_the_mount(dir.path(), "vault-token", class, &[], &caller, &target);
    let jwt = api.signer().sign(&sscsi_testkit::jwt::Subject {
        namespace: "team",
        service_account: "app",
        pod: None,
        audiences: &["vault"],
        lifetime_seconds: 600,
    });
    let token = dir.path().join("vault.jwt");
    std::fs::write(&token, &jwt).unwrap();
    let as_pod =
        [format!("--token-file=vault={}", token.display()), "--service-account=app".into()];
    let as_pod: Vec<&str> = as_pod.iter().map(String::as_str).collect();
    let url = bao.url();
    let addr = [("VAULT_ADDR", url.as_str())];
    rendered += &rendered_like_the_mount(dir.path(), "vault-login", class, &as_pod, &addr, &target);
    assert!(!rendered.contains(&jwt), "the service-account token leaked into the log");

    let keys = api.objects("", "secrets", Some("sscsi-system"));
    assert_eq!(keys.len(), 1, "the version key's Secret");
    assert_eq!(keys[0]["metadata"]["name"], "sscsi-vault-hmac-key");
    assert_eq!(keys[0]["immutable"], true);
    let status = written_statuses(&api).await;
    let version = status[0]["status"]["objects"][0]["version"].as_str().unwrap_or_default();
    assert_eq!(version.len(), 44, "an HMAC version: {version:?}");

    // The same class through a SecretSync, with the controller's `vault` token.
    let env = [("VAULT_ADDR", bao.url()), ("POD_NAMESPACE", "sscsi-system".to_owned())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mounted = target.join("password");
    let synced = synced_like_the_mount(
        &api,
        dir.path(),
        &["--providers=vault"],
        &env,
        "vault-db",
        "password",
        &mounted,
    )
    .await;

    drop(csi);
    let logs = tokio::task::spawn_blocking(move || node.stop()).await.unwrap()
        + &synced
        + &through_socket
        + &rendered;
    assert!(!logs.contains("vault-secret-value-91"), "the secret leaked into the logs");
    assert!(
        !logs.contains("hvs.") && !logs.contains("s.root"),
        "a Vault token leaked into the logs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn node_in_a_cluster_mounts_an_azure_secret_with_workload_identity() {
    use kube::api::{Api, PostParams};
    use serde_json::json;

    let api = sscsi_testkit::kube_api::ApiServer::start().await;
    let azure = sscsi_testkit::azure::AzureServer::start().await;
    azure.trust(api.signer().verifier());
    azure.federate("tenant", "annotated-client", "system:serviceaccount:team:app");
    azure.set_secret("kv1", "db", "azure-secret-value-63");
    let client = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    let sa: k8s_openapi::api::core::v1::ServiceAccount = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "app", "namespace": "team",
                     "annotations": {"azure.workload.identity/client-id": "annotated-client"}}
    }))
    .unwrap();
    Api::namespaced(client.clone(), "team").create(&PostParams::default(), &sa).await.unwrap();

    let dir = setup();
    let env_file = dir.path().join("cloud.json");
    std::fs::write(&env_file, azure.environment_json()).unwrap();
    create_class(
        client,
        "azure-db",
        "azure",
        serde_json::json!({
            "keyvaultName": "kv1", "tenantID": "tenant", "cloudName": "AzureStackCloud",
            "cloudEnvFileName": env_file.display().to_string(),
            "objects": "array:\n  - |\n    objectName: db\n    objectType: secret\n"
        }),
    )
    .await;

    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let ca = dir.path().join("azure-ca.pem");
    std::fs::write(&ca, azure.ca_pem()).unwrap();
    let resolve: Vec<String> =
        azure.hosts(&["kv1"]).iter().map(|(host, addr)| format!("{host}={addr}")).collect();
    let node = Node::start_with_env(
        dir.path(),
        &[&format!("--kubeconfig={}", kubeconfig.display())],
        &[
            ("SSCSI_AZURE_RESOLVE", &resolve.join(",")),
            ("SSCSI_AZURE_CA_FILE", ca.to_str().unwrap()),
        ],
    );
    let mut csi = NodeClient::new(sscsi_node::client::connect(&node.socket).await.unwrap());
    let pod = sscsi_core::PodInfo {
        name: "app-0".into(),
        namespace: "team".into(),
        uid: "u-azure".into(),
        service_account: "app".into(),
    };
    let jwt = api.signer().sign(&sscsi_testkit::jwt::Subject {
        namespace: "team",
        service_account: "app",
        pod: Some(("app-0", "u-azure")),
        audiences: &["api://AzureADTokenExchange"],
        lifetime_seconds: 600,
    });
    let target = dir.path().join("pods/u-azure/volumes/kubernetes.io~csi/azure/mount");
    let mut request =
        sscsi_node::client::inline_volume_publish_request("csi-azure", &target, "azure-db", &pod);
    request.volume_context.insert(
        TOKENS_KEY.into(),
        json!({"api://AzureADTokenExchange": {"token": jwt, "expirationTimestamp": "2030-01-01T00:00:00Z"}})
            .to_string(),
    );
    publish_once_the_class_is_cached(&mut csi, request).await;
    assert_eq!(std::fs::read_to_string(target.join("db")).unwrap(), "azure-secret-value-63");

    drop(csi);
    let logs = tokio::task::spawn_blocking(move || node.stop()).await.unwrap();
    assert!(!logs.contains("azure-secret-value-63"), "the secret leaked into the logs");
    assert!(!logs.contains(&jwt), "the pod's token leaked into the logs");
    assert!(!logs.contains("access-token-1"), "the AAD token leaked into the logs");
}

#[tokio::test(flavor = "multi_thread")]
async fn node_in_a_cluster_mounts_a_gcp_secret_with_workload_identity() {
    use kube::api::{Api, PostParams};
    use serde_json::json;
    use sscsi_testkit::gcp::{DrongoServer, GcpServer, POOL, PROJECT};

    let api = sscsi_testkit::kube_api::ApiServer::start().await;
    let (gcp, drongo) = (GcpServer::start().await, DrongoServer::start());
    gcp.trust(api.signer().verifier());
    drongo.add_version(PROJECT, "db", b"gcp-secret-value-48").await;
    let client = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    let sa: k8s_openapi::api::core::v1::ServiceAccount = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": "team"}
    }))
    .unwrap();
    Api::namespaced(client.clone(), "team").create(&PostParams::default(), &sa).await.unwrap();
    create_class(
        client,
        "gcp-db",
        "gcp",
        json!({"secrets": "- resourceName: projects/test-project/secrets/db/versions/latest\n  path: db\n"}),
    )
    .await;

    let dir = setup();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let metadata_host = gcp.url().trim_start_matches("http://").to_owned();
    let exchange = format!("{}/v1/identitybindingtoken", gcp.url());
    let node = Node::start_with_env(
        dir.path(),
        &[&format!("--kubeconfig={}", kubeconfig.display())],
        &[
            ("SSCSI_GCP_SECRET_MANAGER_ENDPOINT", &drongo.url()),
            ("GCE_METADATA_HOST", &metadata_host),
            ("GAIA_TOKEN_EXCHANGE_ENDPOINT", &exchange),
        ],
    );
    let mut csi = NodeClient::new(sscsi_node::client::connect(&node.socket).await.unwrap());
    let pod = sscsi_core::PodInfo {
        name: "app-0".into(),
        namespace: "team".into(),
        uid: "u-gcp".into(),
        service_account: "app".into(),
    };
    let jwt = api.signer().sign(&sscsi_testkit::jwt::Subject {
        namespace: "team",
        service_account: "app",
        pod: Some(("app-0", "u-gcp")),
        audiences: &[POOL],
        lifetime_seconds: 600,
    });
    let target = dir.path().join("pods/u-gcp/volumes/kubernetes.io~csi/gcp/mount");
    let mut request =
        sscsi_node::client::inline_volume_publish_request("csi-gcp", &target, "gcp-db", &pod);
    request.volume_context.insert(
        TOKENS_KEY.into(),
        json!({POOL: {"token": jwt, "expirationTimestamp": "2030-01-01T00:00:00Z"}}).to_string(),
    );
    publish_once_the_class_is_cached(&mut csi, request).await;
    assert_eq!(std::fs::read_to_string(target.join("db")).unwrap(), "gcp-secret-value-48");
    assert_eq!(gcp.exchanges(), 1);

    // The same class through a SecretSync: the provider asks for its own
    // (unbound) token of the pool's audience, as no kubelet passes one.
    let env = [
        ("SSCSI_GCP_SECRET_MANAGER_ENDPOINT", drongo.url()),
        ("GCE_METADATA_HOST", metadata_host.clone()),
        ("GAIA_TOKEN_EXCHANGE_ENDPOINT", exchange.clone()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mounted = target.join("db");
    let synced = synced_like_the_mount(
        &api,
        dir.path(),
        &["--providers=gcp"],
        &env,
        "gcp-db",
        "db",
        &mounted,
    )
    .await;
    assert_eq!(gcp.exchanges(), 2, "the controller's identity exchanged once");

    drop(csi);
    let logs = tokio::task::spawn_blocking(move || node.stop()).await.unwrap() + &synced;
    assert!(!logs.contains("gcp-secret-value-48"), "the secret leaked into the logs");
    assert!(!logs.contains(&jwt), "the pod's token leaked into the logs");
    assert!(!logs.contains("federated-"), "the federated token leaked into the logs");
}

/// The pod status objects in `team`, once there is one: they are written off
/// the publish path.
async fn written_statuses(api: &sscsi_testkit::kube_api::ApiServer) -> Vec<serde_json::Value> {
    let resource = "secretproviderclasspodstatuses";
    api.wait_for("secrets-store.csi.x-k8s.io", resource, Some("team"), |o| !o.is_empty()).await
}

/// The chart's alerts and dashboard (`metrics.prometheusRule`,
/// `metrics.dashboard`) query only metrics the node's `/metrics` exports:
/// every PromQL expression is parsed as Prometheus parses it, and every
/// metric it selects must be a family the running binary serves. The
/// dashboard is read through Grafana's own dashboard model.
#[tokio::test(flavor = "multi_thread")]
async fn the_charts_alerts_and_dashboard_query_only_exported_metrics() {
    use sscsi_testkit::provider::{Answer, FakeProvider};
    let dir = setup();
    // A class per kind of outcome: local (rotated, then failing), one whose
    // object is missing, and one of an external provider (backend calls).
    let class = |name: &str, provider: &str, object: &str| {
        format!(
            "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n\
             metadata: {{name: {name}, namespace: team}}\nspec:\n  provider: {provider}\n  parameters:\n    objects: |\n      - objectName: {object}\n"
        )
    };
    std::fs::write(dir.path().join("spc/missing.yaml"), class("missing", "local", "nope")).unwrap();
    std::fs::write(dir.path().join("spc/ext.yaml"), class("ext", "ext", "token")).unwrap();
    let sockets = dir.path().join("providers");
    let file = vec![("token".to_owned(), 0o644, b"tok".to_vec())];
    let _ext = FakeProvider::start(
        &sockets,
        "ext",
        Answer::Files(file, vec![("token".into(), "1".into())]),
    );
    let metrics = free_port();
    let node = Node::start(
        dir.path(),
        &[
            &format!("--metrics-addr=127.0.0.1:{metrics}"),
            &format!("--provider-volume={}", sockets.display()),
            "--additional-provider-volume-paths=",
            "--provider-health-check",
            "--provider-health-check-interval=1s",
            "--enable-secret-rotation",
            "--rotation-poll-interval=0s",
        ],
    );
    let channel = sscsi_node::client::connect(&node.socket).await.unwrap();
    let publish = |volume: &str, class: &str| {
        let target = dir.path().join(format!("pods/u9/volumes/kubernetes.io~csi/{volume}/mount"));
        let pod = sscsi_core::PodInfo {
            name: "p".into(),
            namespace: "team".into(),
            uid: "u9".into(),
            service_account: "sa".into(),
        };
        let request =
            sscsi_node::client::inline_volume_publish_request(volume, &target, class, &pod);
        let mut client = NodeClient::new(channel.clone());
        async move { client.node_publish_volume(request).await.map(|_| ()) }
    };
    publish("a", "app").await.unwrap();
    std::fs::write(dir.path().join("store/password"), "rotated").unwrap();
    publish("a", "app").await.unwrap();
    std::fs::remove_file(dir.path().join("store/password")).unwrap();
    publish("a", "app").await.expect("a failed refresh keeps the files");
    publish("b", "missing").await.unwrap_err();
    publish("c", "ext").await.unwrap();
    // The health check's first answer, awaited (not slept for).
    let body = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = http_get(metrics, "/metrics");
            assert_eq!(status, 200);
            if body.contains("sscsi_external_provider_up{") {
                return body;
            }
            assert!(Instant::now() < deadline, "no health check answered:\n{body}");
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    tokio::task::spawn_blocking(move || node.stop()).await.unwrap();
    let exported = exported_names(&body);
    for name in ["sscsi_volume_fetch_age_seconds", "sscsi_backend_calls_total", "sscsi_ready"] {
        assert!(exported.contains(name), "{name} not in {exported:?}");
    }

    let charts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts");
    let values = serde_json::json!({"metrics": {
        "prometheusRule": {"enabled": true}, "dashboard": {"enabled": true}, "podMonitor": {"enabled": true}
    }});
    let output = Command::new(sscsi_testkit::program("python3"))
        .arg(charts.join("render.py"))
        .args(["--values", &values.to_string()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let rendered: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let objects = rendered["objects"].as_array().unwrap();
    let find =
        |kind: &str| objects.iter().find(|o| o["kind"] == kind).unwrap_or_else(|| panic!("{kind}"));

    let mut queries: Vec<(String, String)> = Vec::new();
    for rule in find("PrometheusRule")["spec"]["groups"][0]["rules"].as_array().unwrap() {
        let alert = rule["alert"].as_str().unwrap().to_owned();
        queries.push((format!("alert {alert}"), rule["expr"].as_str().unwrap().to_owned()));
    }
    let dashboard = dir.path().join("dashboard.json");
    std::fs::write(&dashboard, find("ConfigMap")["data"]["sscsi.json"].as_str().unwrap()).unwrap();
    let output = Command::new(sscsi_testkit::program("python3"))
        .arg(charts.join("dashboard.py"))
        .arg(&dashboard)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let exprs: Vec<String> = serde_json::from_slice(&output.stdout).unwrap();
    assert!(exprs.len() >= 15, "{exprs:?}");
    queries.extend(exprs.into_iter().map(|e| ("dashboard".to_owned(), e)));

    for (source, expr) in &queries {
        let parsed = promql_parser::parser::parse(expr)
            .unwrap_or_else(|e| panic!("{source}: {expr:?} is not PromQL: {e}"));
        let mut selected = Vec::new();
        selectors(&parsed, &mut selected);
        assert!(!selected.is_empty(), "{source}: {expr:?} selects no metric");
        for name in selected {
            assert!(exported.contains(&name), "{source}: {name} is not exported (in {expr:?})");
        }
    }
}

/// The series names `/metrics` can serve: the samples' names and, for
/// families with no sample yet, the names their type gives them.
fn exported_names(body: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in body.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let (family, kind) = declared.split_once(' ').unwrap();
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{family}{s}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            names.insert(line.split(['{', ' ']).next().unwrap().to_owned());
        }
    }
    names
}

/// The metric names an expression selects.
fn selectors(expr: &promql_parser::parser::Expr, out: &mut Vec<String>) {
    use promql_parser::parser::Expr;
    match expr {
        Expr::VectorSelector(vs) => out.extend(vs.name.clone()),
        Expr::MatrixSelector(ms) => out.extend(ms.vs.name.clone()),
        Expr::Aggregate(a) => {
            selectors(&a.expr, out);
            if let Some(param) = &a.param {
                selectors(param, out);
            }
        }
        Expr::Unary(u) => selectors(&u.expr, out),
        Expr::Binary(b) => {
            selectors(&b.lhs, out);
            selectors(&b.rhs, out);
        }
        Expr::Paren(p) => selectors(&p.expr, out),
        Expr::Subquery(s) => selectors(&s.expr, out),
        Expr::Call(call) => call.args.args.iter().for_each(|a| selectors(a, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}
