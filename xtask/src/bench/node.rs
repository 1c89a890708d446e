//! `sscsi node` as a child process, the way the DaemonSet runs it: API
//! server from a kubeconfig, CSI on a unix socket, `/readyz` on a port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sscsi_core::PodInfo;
use sscsi_proto::TOKENS_KEY;
use sscsi_proto::csi::v1::node_client::NodeClient;
use sscsi_proto::csi::v1::{NodePublishVolumeRequest, NodeUnpublishVolumeRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

use super::backend::{Backend, NAMESPACE};
use sscsi_testkit::kube_api::ApiServer;

pub struct NodeProcess {
    child: Child,
    spawned: Instant,
    socket: PathBuf,
    health_port: u16,
    /// `/metrics` is served here, as the chart serves it.
    metrics_port: u16,
    log: PathBuf,
}

/// Resident memory of the node, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// VmRSS: resident now.
    pub rss_kib: u64,
    /// VmHWM: the most ever resident.
    pub peak_kib: u64,
}

impl NodeProcess {
    /// Starts `binary` serving the classes of `api` in `dir`; `extra`
    /// arguments and `env` choose the provider and its backend.
    pub fn spawn(
        binary: &Path,
        dir: &Path,
        api: &ApiServer,
        extra: &[String],
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let socket = dir.join("csi.sock");
        let (health_port, metrics_port) = (free_port()?, free_port()?);
        let log = dir.join("node.log");
        let mut command = sscsi_command(binary, "node", dir, api, &log, extra, env)?;
        command
            .arg(format!("--endpoint=unix://{}", socket.display()))
            .arg(format!("--health-addr=127.0.0.1:{health_port}"))
            .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
            .arg("--nodeid=bench-node");
        if !super::is_root() {
            command.arg("--no-tmpfs");
        }
        let spawned = Instant::now();
        let child = command.spawn().with_context(|| format!("start {}", binary.display()))?;
        Ok(Self { child, spawned, socket, health_port, metrics_port, log })
    }

    /// One scrape of `/metrics`: its body's size in bytes.
    pub async fn scrape(&self) -> anyhow::Result<usize> {
        Ok(self.metrics().await?.len())
    }

    /// One scrape of `/metrics`: the exposition text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).await?;
        let request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        stream.write_all(request).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        if !answer.starts_with(b"HTTP/1.1 200") {
            bail!(
                "/metrics answered {:?}",
                String::from_utf8_lossy(&answer[..answer.len().min(40)])
            );
        }
        let body = answer.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |at| at + 4);
        Ok(String::from_utf8(answer.split_off(body))?)
    }

    /// Waits for `/readyz` to answer 200 (the CSI socket serves and every
    /// class is cached); the time since the process was started.
    pub async fn ready(&mut self) -> anyhow::Result<Duration> {
        wait_ready(&mut self.child, self.spawned, self.health_port, "node", &self.log).await
    }

    pub async fn csi(&self) -> anyhow::Result<NodeClient<Channel>> {
        Ok(NodeClient::new(sscsi_node::client::connect(&self.socket).await?))
    }

    pub fn memory(&self) -> anyhow::Result<Memory> {
        memory_of(&self.child)
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        stop(&mut self.child, "node", &self.log)
    }
}

/// `sscsi controller` as a child process, as the chart's Deployment runs it.
pub struct ControllerProcess {
    child: Child,
    log: PathBuf,
}

impl ControllerProcess {
    pub fn spawn(
        binary: &Path,
        dir: &Path,
        api: &ApiServer,
        extra: &[String],
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let log = dir.join("controller.log");
        let child = sscsi_command(binary, "controller", dir, api, &log, extra, env)?
            .args(["--metrics-bind-address=", "--health-probe-bind-address="])
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        Ok(Self { child, log })
    }

    pub fn memory(&self) -> anyhow::Result<Memory> {
        memory_of(&self.child)
    }

    /// Fails with the log's tail if the process has exited.
    pub fn check(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("sscsi controller exited with {status}:\n{}", log_tail(&self.log));
        }
        Ok(())
    }

    pub fn stop(mut self) -> anyhow::Result<()> {
        stop(&mut self.child, "controller", &self.log)
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

/// `sscsi provider-server` as a child process, as the chart's
/// `providerServer` DaemonSet runs it beside the upstream driver.
pub struct ProviderServerProcess {
    child: Child,
    spawned: Instant,
    health_port: u16,
    log: PathBuf,
}

impl ProviderServerProcess {
    /// Serves `provider` on `socket`; `extra` and `env` are the provider's
    /// settings, as the node takes them.
    pub fn spawn(
        binary: &Path,
        dir: &Path,
        api: &ApiServer,
        provider: &str,
        socket: &Path,
        extra: &[String],
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let health_port = free_port()?;
        let log = dir.join(format!("provider-server-{provider}.log"));
        let spawned = Instant::now();
        let child = sscsi_command(binary, "provider-server", dir, api, &log, extra, env)?
            .args(["--provider", provider, "--metrics-addr="])
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--health-addr=127.0.0.1:{health_port}"))
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        Ok(Self { child, spawned, health_port, log })
    }

    /// Waits for `/readyz`, which answers once the socket is bound.
    pub async fn ready(&mut self) -> anyhow::Result<Duration> {
        wait_ready(&mut self.child, self.spawned, self.health_port, "provider-server", &self.log)
            .await
    }

    pub fn stop(mut self) -> anyhow::Result<()> {
        stop(&mut self.child, "provider-server", &self.log)
    }
}

impl Drop for ProviderServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `/readyz` on `port` until 200, for at most 60 s from `spawned`,
/// failing early with the log's tail if the process exits.
async fn wait_ready(
    child: &mut Child,
    spawned: Instant,
    port: u16,
    what: &str,
    log: &Path,
) -> anyhow::Result<Duration> {
    let deadline = spawned + Duration::from_secs(60);
    loop {
        if readyz(port).await {
            return Ok(spawned.elapsed());
        }
        if let Some(status) = child.try_wait()? {
            bail!("sscsi {what} exited with {status}:\n{}", log_tail(log));
        }
        if Instant::now() > deadline {
            bail!("sscsi {what} not ready after 60 s:\n{}", log_tail(log));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `binary <subcommand>` against `api` (a kubeconfig in `dir`), with
/// `extra` arguments and `env`, its output into `log`.
fn sscsi_command(
    binary: &Path,
    subcommand: &str,
    dir: &Path,
    api: &ApiServer,
    log: &Path,
    extra: &[String],
    env: &[(String, String)],
) -> anyhow::Result<Command> {
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig())?;
    let out = std::fs::File::create(log)?;
    let mut command = Command::new(binary);
    command
        .arg(subcommand)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    Ok(command)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// VmRSS and VmHWM of a child, from `/proc/<pid>/status`.
fn memory_of(child: &Child) -> anyhow::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .with_context(|| format!("no {name} in /proc status"))?;
        Ok(line.trim().trim_end_matches("kB").trim().parse()?)
    };
    Ok(Memory { rss_kib: field("VmRSS:")?, peak_kib: field("VmHWM:")? })
}

fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// SIGTERM, then wait for a clean exit.
fn stop(child: &mut Child, what: &str, log: &Path) -> anyhow::Result<()> {
    use nix::sys::signal::{Signal, kill};
    kill(nix::unistd::Pid::from_raw(child.id() as i32), Signal::SIGTERM)?;
    let status = child.wait()?;
    if !status.success() {
        bail!("sscsi {what} exited with {status}:\n{}", log_tail(log));
    }
    Ok(())
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `GET /readyz`, true on 200.
async fn readyz(port: u16) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let request = b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let mut answer = Vec::new();
    stream.write_all(request).await.is_ok()
        && stream.read_to_end(&mut answer).await.is_ok()
        && answer.starts_with(b"HTTP/1.1 200")
}

/// One pod's secrets-store volume.
#[derive(Debug, Clone)]
pub struct Volume {
    pub pod: PodInfo,
    pub class: String,
    pub target: PathBuf,
}

impl Volume {
    /// Pod `pod` of service account `sa`, mounting `class`, under `pods`.
    pub fn new(pods: &Path, class: &str, sa: &str, pod: &str) -> Self {
        let uid = format!("uid-{pod}");
        let target = pods.join(&uid).join("volumes/kubernetes.io~csi/secrets/mount");
        let pod = PodInfo {
            name: pod.into(),
            namespace: NAMESPACE.into(),
            uid,
            service_account: sa.into(),
        };
        Self { pod, class: class.into(), target }
    }

    pub fn id(&self) -> String {
        format!("csi-{}", self.pod.uid)
    }

    /// The NodePublishVolume kubelet sends, with fresh tokens: built before
    /// the clock starts.
    pub fn publish_request(&self, backend: &Backend, api: &ApiServer) -> NodePublishVolumeRequest {
        let mut request = sscsi_node::client::inline_volume_publish_request(
            &self.id(),
            &self.target,
            &self.class,
            &self.pod,
        );
        if let Some(tokens) = backend.tokens(api, &self.pod) {
            request.volume_context.insert(TOKENS_KEY.into(), tokens);
        }
        request
    }

    /// Where the `..data` link points: a new directory after each rewrite.
    pub fn data_dir(&self) -> Option<PathBuf> {
        std::fs::read_link(self.target.join("..data")).ok()
    }
}

pub async fn publish(
    csi: &NodeClient<Channel>,
    request: NodePublishVolumeRequest,
) -> anyhow::Result<()> {
    let id = request.volume_id.clone();
    match csi.clone().node_publish_volume(request).await {
        Ok(_) => Ok(()),
        Err(status) => bail!("publish {id}: {:?}: {}", status.code(), status.message()),
    }
}

pub async fn unpublish(csi: &NodeClient<Channel>, volume: &Volume) -> anyhow::Result<()> {
    let request = NodeUnpublishVolumeRequest {
        volume_id: volume.id(),
        target_path: volume.target.display().to_string(),
    };
    match csi.clone().node_unpublish_volume(request).await {
        Ok(_) => Ok(()),
        Err(status) => {
            bail!("unpublish {}: {:?}: {}", volume.id(), status.code(), status.message())
        }
    }
}

/// The sum of every sample of metric `name` in exposition `text` whose
/// labels include each of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            let matches = match rest.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                Some(set) => {
                    let pairs: Vec<&str> = set.split(',').collect();
                    labels.iter().all(|(k, v)| pairs.contains(&format!("{k}=\"{v}\"").as_str()))
                }
                None => rest.is_empty() && labels.is_empty(),
            };
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        // From +0: an empty `sum()` of floats is -0.
        .fold(0.0, |sum, v| sum + v)
}

#[cfg(test)]
mod tests {
    use super::metric_sum;

    const TEXT: &str = "# HELP sscsi_backend_calls_total Backend calls.\n\
# TYPE sscsi_backend_calls_total counter\n\
sscsi_backend_calls_total{provider=\"vault\",operation=\"read\",outcome=\"ok\"} 100\n\
sscsi_backend_calls_total{provider=\"vault\",operation=\"read\",outcome=\"throttled\"} 7\n\
sscsi_backend_calls_total{provider=\"vault\",operation=\"login\",outcome=\"throttled\"} 2\n\
sscsi_backend_calls_total_extra{outcome=\"throttled\"} 1000\n\
sscsi_backend_queued_total 117\n";

    #[test]
    fn sums_the_samples_whose_labels_match() {
        assert_eq!(metric_sum(TEXT, "sscsi_backend_calls_total", &[("outcome", "throttled")]), 9.0);
        let read = [("operation", "read"), ("outcome", "throttled")];
        assert_eq!(metric_sum(TEXT, "sscsi_backend_calls_total", &read), 7.0);
        assert_eq!(metric_sum(TEXT, "sscsi_backend_calls_total", &[]), 109.0);
        assert_eq!(metric_sum(TEXT, "sscsi_backend_queued_total", &[]), 117.0);
    }

    #[test]
    fn nothing_matching_is_a_positive_zero() {
        let none = metric_sum(TEXT, "sscsi_backend_calls_total", &[("outcome", "denied")]);
        assert!(none == 0.0 && none.is_sign_positive());
        assert!(metric_sum(TEXT, "sscsi_backend_queued_total", &[("provider", "vault")]) == 0.0);
    }
}
