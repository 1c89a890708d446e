//! The scenarios. Each run starts its own API server double, backend
//! server and node, so nothing one run cached serves another.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use sscsi_proto::csi::v1::node_client::NodeClient;
use sscsi_testkit::kube_api::ApiServer;
use tonic::transport::Channel;

use super::backend::{Backend, Kind, NAMESPACE};
use super::node::{
    ControllerProcess, NodeProcess, ProviderServerProcess, Volume, metric_sum, publish, unpublish,
};
use super::report::{
    BurstResult, CallCount, LatencyResult, PairedLatency, Rotation, Spread, StartupResult,
    SyncResult, ThrottledBurst, ThrottledRun, percentile,
};

/// How much each scenario does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Runs per scenario; each figure is the median over them.
    pub runs: usize,
    /// Timed publishes per run and volume size.
    pub iterations: usize,
    pub sizes: Vec<usize>,
    pub service_accounts: usize,
    pub secrets_per_account: usize,
    pub burst_volumes: usize,
    pub rotation_volumes: usize,
    /// The share of secrets changed before a rotation pass.
    pub rotation_changed: f64,
    /// `--rotation-poll-interval` of the rotation pass: longer than the
    /// pass, so every volume is due once during it.
    pub rotation_interval: Duration,
    pub startup_runs: usize,
    /// The SecretSync scenario: SecretSyncs, their service accounts, the
    /// secrets they share, and the controller's rotation interval.
    pub syncs: usize,
    pub sync_accounts: usize,
    pub sync_secrets: usize,
    pub sync_interval: Duration,
}

impl Plan {
    pub fn new(quick: bool) -> Self {
        Self {
            runs: if quick { 1 } else { 3 },
            iterations: if quick { 5 } else { 15 },
            sizes: vec![1, 10, 50],
            service_accounts: 20,
            secrets_per_account: 5,
            burst_volumes: 200,
            rotation_volumes: if quick { 200 } else { 1000 },
            rotation_changed: 0.01,
            rotation_interval: Duration::from_secs(if quick { 3 } else { 10 }),
            startup_runs: if quick { 3 } else { 5 },
            syncs: if quick { 100 } else { 500 },
            sync_accounts: if quick { 10 } else { 50 },
            sync_secrets: 20,
            sync_interval: Duration::from_secs(if quick { 15 } else { 30 }),
        }
    }
}

/// The AWS and Vault providers let an answer serve identical reads of one
/// identity for a moment after it arrives (`sscsi_provider_kit::coalesce::WINDOW`):
/// repeated publishes of one class wait that long, so every timed publish
/// reads the backend.
fn coalesce_window(kind: Kind) -> Duration {
    match kind {
        Kind::Aws | Kind::Vault => {
            sscsi_provider_kit::coalesce::WINDOW + Duration::from_millis(100)
        }
        Kind::Local => Duration::ZERO,
    }
}

/// A secret's bytes: 128 of them, naming the secret and its version.
pub fn value(name: &str, version: u32) -> String {
    format!("{name}:v{version}:{}", "x".repeat(128)).chars().take(128).collect()
}

/// One run's world: the API server double, the backend, a directory.
struct World {
    api: ApiServer,
    kube: kube::Client,
    backend: Backend,
    dir: tempfile::TempDir,
    pods: PathBuf,
}

/// Volumes of several service accounts, each mounting its account's class.
struct Population {
    /// Kubelet's order: pod 0 of every account, then pod 1, ...
    volumes: Vec<Volume>,
    /// Class → its objects.
    objects: BTreeMap<String, Vec<String>>,
}

impl World {
    async fn start(kind: Kind) -> anyhow::Result<Self> {
        let api = ApiServer::start().await;
        let kube = kube::Client::try_from(kube::Config::new(api.url().parse()?))?;
        let backend = Backend::start(kind, &api).await?;
        let (dir, pods) = super::backend::work_dir()?;
        Ok(Self { api, kube, backend, dir, pods })
    }

    async fn create(&self, object: Value) -> anyhow::Result<()> {
        let api_version = object["apiVersion"].as_str().context("apiVersion")?;
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let kind = object["kind"].as_str().context("kind")?.to_owned();
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &kind));
        let object: DynamicObject = serde_json::from_value(object)?;
        Api::<DynamicObject>::namespaced_with(self.kube.clone(), NAMESPACE, &resource)
            .create(&PostParams::default(), &object)
            .await
            .with_context(|| format!("create {kind}"))?;
        Ok(())
    }

    async fn class(&self, name: &str, objects: &[String]) -> anyhow::Result<()> {
        self.class_of(name, self.backend.kind().name(), objects, json!({})).await
    }

    /// A class of this backend's parameters and `extra` ones, naming `provider`.
    async fn class_of(
        &self,
        name: &str,
        provider: &str,
        objects: &[String],
        extra: Value,
    ) -> anyhow::Result<()> {
        let mut parameters = self.backend.class_parameters(objects);
        if let (Some(parameters), Value::Object(extra)) = (parameters.as_object_mut(), extra) {
            parameters.extend(extra);
        }
        self.create(json!({
            "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"provider": provider, "parameters": parameters}
        }))
        .await
    }

    async fn service_account(&self, name: &str) -> anyhow::Result<()> {
        self.create(self.backend.service_account(name)).await
    }

    /// `accounts` service accounts with `secrets` secrets each, a class per
    /// account holding its secrets, and `pods` pods per account.
    async fn population(
        &self,
        prefix: &str,
        accounts: usize,
        secrets: usize,
        pods: usize,
    ) -> anyhow::Result<Population> {
        let mut objects = BTreeMap::new();
        for a in 0..accounts {
            let names: Vec<String> =
                (0..secrets).map(|s| format!("{prefix}-sa{a:02}-s{s}")).collect();
            for name in &names {
                self.backend.put(name, &value(name, 1)).await?;
            }
            let class = format!("{prefix}-sa{a:02}");
            self.class(&class, &names).await?;
            self.service_account(&format!("sa{a:02}")).await?;
            objects.insert(class, names);
        }
        let mut volumes = Vec::with_capacity(accounts * pods);
        for p in 0..pods {
            for a in 0..accounts {
                let pod = format!("{prefix}-sa{a:02}-p{p:03}");
                volumes.push(Volume::new(
                    &self.pods,
                    &format!("{prefix}-sa{a:02}"),
                    &format!("sa{a:02}"),
                    &pod,
                ));
            }
        }
        Ok(Population { volumes, objects })
    }

    /// Kubelet's burst: every volume's NodePublishVolume at once, the
    /// requests (with fresh tokens) built before the clock starts. Each
    /// answer, and the seconds until the last.
    async fn publish_at_once(
        &self,
        csi: &NodeClient<Channel>,
        volumes: &[Volume],
    ) -> (Vec<anyhow::Result<()>>, f64) {
        let requests: Vec<_> =
            volumes.iter().map(|v| v.publish_request(&self.backend, &self.api)).collect();
        let start = Instant::now();
        let published =
            futures::future::join_all(requests.into_iter().map(|r| publish(csi, r))).await;
        (published, start.elapsed().as_secs_f64())
    }

    fn node(&self, binary: &Path, counted: bool, extra: &[&str]) -> anyhow::Result<NodeProcess> {
        let (mut args, env) = self.backend.node_config(counted);
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        NodeProcess::spawn(binary, self.dir.path(), &self.api, &args, &env)
    }
}

impl Drop for World {
    /// A failed run may leave volumes mounted: detach them, so the
    /// directory can go.
    fn drop(&mut self) {
        let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else { return };
        let root = self.dir.path().display().to_string();
        for target in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
            if target.starts_with(&root) {
                let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// Checks the files of `volume` hold `version` of every object.
fn check_files(volume: &Volume, names: &[String], version: u32) -> anyhow::Result<()> {
    for name in names {
        let path = volume.target.join(name);
        let bytes =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        if bytes != value(name, version) {
            bail!("{} does not hold version {version} of {name}", path.display());
        }
    }
    Ok(())
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Publish latency by volume size, against reading the same objects directly.
pub async fn latency(kind: Kind, plan: &Plan, binary: &Path) -> anyhow::Result<Vec<LatencyResult>> {
    // Size → per run: (sscsi p50, sscsi p99, direct p50, direct p99).
    let mut runs: BTreeMap<usize, Vec<[f64; 4]>> = BTreeMap::new();
    for _ in 0..plan.runs {
        let world = World::start(kind).await?;
        let mut sets = Vec::new();
        for &size in &plan.sizes {
            let names: Vec<String> = (0..size).map(|i| format!("lat{size}-{i:02}")).collect();
            for name in &names {
                world.backend.put(name, &value(name, 1)).await?;
            }
            world.class(&format!("lat-{size}"), &names).await?;
            sets.push((size, names));
        }
        world.service_account("app").await?;
        let mut node = world.node(binary, false, &[])?;
        node.ready().await?;
        let csi = node.csi().await?;
        let mut samples: BTreeMap<usize, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
        let mut last: BTreeMap<usize, Instant> = BTreeMap::new();
        let mut pod = 0;
        // Iteration 0 warms up: credentials, connections, the class cache.
        for iteration in 0..=plan.iterations {
            for (size, names) in &sets {
                if let Some(at) = last.get(size) {
                    tokio::time::sleep_until((*at + coalesce_window(kind)).into()).await;
                }
                pod += 1;
                let volume =
                    Volume::new(&world.pods, &format!("lat-{size}"), "app", &format!("app-{pod}"));
                let request = volume.publish_request(&world.backend, &world.api);
                let direct = async {
                    let start = Instant::now();
                    world.backend.read_directly(names).await.map(|_| start.elapsed())
                };
                let sscsi = async {
                    let start = Instant::now();
                    publish(&csi, request).await.map(|()| start.elapsed())
                };
                // One after the other, alternating which goes first.
                let (direct, sscsi) = if iteration % 2 == 0 {
                    let d = direct.await?;
                    (d, sscsi.await?)
                } else {
                    let s = sscsi.await?;
                    (direct.await?, s)
                };
                last.insert(*size, Instant::now());
                check_files(&volume, names, 1)?;
                unpublish(&csi, &volume).await?;
                if iteration > 0 {
                    let entry = samples.entry(*size).or_default();
                    entry.0.push(millis(sscsi));
                    entry.1.push(millis(direct));
                }
            }
        }
        drop(csi);
        node.stop()?;
        for (size, (sscsi, direct)) in samples {
            runs.entry(size).or_default().push([
                percentile(&sscsi, 50.0),
                percentile(&sscsi, 99.0),
                percentile(&direct, 50.0),
                percentile(&direct, 99.0),
            ]);
        }
    }
    Ok(runs
        .into_iter()
        .map(|(objects, runs)| {
            let column = |i: usize| Spread::of(&runs.iter().map(|r| r[i]).collect::<Vec<_>>());
            let ratios: Vec<f64> = runs.iter().map(|r| r[0] / r[2]).collect();
            LatencyResult {
                backend: kind.name().into(),
                objects,
                runs: runs.len(),
                samples_per_run: plan.iterations,
                sscsi_p50_ms: column(0),
                sscsi_p99_ms: column(1),
                direct_p50_ms: column(2),
                direct_p99_ms: column(3),
                ratio_p50: Spread::of(&ratios),
            }
        })
        .collect())
}

/// What a paired latency run sets against the plain class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The same class served by `sscsi provider-server` through upstream's
    /// provider API socket: the cost of the socket, the JSON and the second
    /// process.
    Socket,
    /// The same class with three templated files built from its objects
    /// (`sscsi.io/files`): the cost of building them.
    BuiltFiles,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Self::Socket => "through the provider socket",
            Self::BuiltFiles => "with 3 templated files",
        }
    }
}

/// Three templates over every object of the class: a `.env`-like listing,
/// a JSON document and a config file naming each object.
fn templated_files(names: &[String]) -> String {
    let conf: String = names.iter().map(|n| format!("{n} = {{{{ object(\"{n}\") }}}}\n")).collect();
    format!(
        "- path: all.env\n  format: template\n  template: |\n    {{% for k, v in objects|items %}}{{{{ k|upper|replace(\"-\", \"_\") }}}}={{{{ v }}}}\n    {{% endfor %}}\n\
         - path: all.json\n  format: template\n  template: '{{{{ objects|tojson }}}}'\n\
         - path: app.conf\n  format: template\n  template: |\n{}",
        conf.lines().map(|l| format!("    {l}\n")).collect::<String>()
    )
}

/// Publish latency of one class of 10 objects beside the same class with
/// `variant`, published alternately by the same node: p50 of each, and
/// their ratio per run.
pub async fn paired_latency(
    kind: Kind,
    variant: Variant,
    plan: &Plan,
    binary: &Path,
) -> anyhow::Result<PairedLatency> {
    const OBJECTS: usize = 10;
    // For the socket: the class's provider names the socket, and any name
    // the node does not serve itself goes to one.
    let external = format!("bench-{}", kind.name());
    // Per run: (plain p50, variant p50).
    let mut runs = Vec::new();
    for _ in 0..plan.runs {
        let world = World::start(kind).await?;
        let names: Vec<String> = (0..OBJECTS).map(|i| format!("pair-{i:02}")).collect();
        for name in &names {
            world.backend.put(name, &value(name, 1)).await?;
        }
        world.class("plain", &names).await?;
        let sockets = world.dir.path().join("providers");
        let mut server = None;
        let mut node_args = Vec::new();
        match variant {
            Variant::Socket => {
                world.class_of("variant", &external, &names, json!({})).await?;
                std::fs::create_dir_all(&sockets)?;
                let (args, env) = world.backend.node_config(false);
                let provider_args: Vec<String> =
                    args.iter().filter(|a| !a.starts_with("--providers=")).cloned().collect();
                let mut process = ProviderServerProcess::spawn(
                    binary,
                    world.dir.path(),
                    &world.api,
                    kind.name(),
                    &sockets.join(format!("{external}.sock")),
                    &provider_args,
                    &env,
                )?;
                process.ready().await?;
                server = Some(process);
                node_args.push(format!("--provider-volume={}", sockets.display()));
                node_args.push("--additional-provider-volume-paths=".to_owned());
            }
            Variant::BuiltFiles => {
                let files = json!({"sscsi.io/files": templated_files(&names)});
                world.class_of("variant", kind.name(), &names, files).await?;
            }
        }
        world.service_account("app").await?;
        let node_args: Vec<&str> = node_args.iter().map(String::as_str).collect();
        let mut node = world.node(binary, false, &node_args)?;
        node.ready().await?;
        let csi = node.csi().await?;
        let (mut plain, mut paired) = (Vec::new(), Vec::new());
        let mut last: Option<Instant> = None;
        let mut pod = 0;
        // Iteration 0 warms up both; then they alternate which goes first.
        for iteration in 0..=plan.iterations {
            let order =
                if iteration % 2 == 0 { ["plain", "variant"] } else { ["variant", "plain"] };
            for class in order {
                if let Some(at) = last {
                    tokio::time::sleep_until((at + coalesce_window(kind)).into()).await;
                }
                pod += 1;
                let volume = Volume::new(&world.pods, class, "app", &format!("app-{pod}"));
                let request = volume.publish_request(&world.backend, &world.api);
                let start = Instant::now();
                publish(&csi, request).await?;
                let took = millis(start.elapsed());
                last = Some(Instant::now());
                check_files(&volume, &names, 1)?;
                if class == "variant" && variant == Variant::BuiltFiles {
                    let conf = std::fs::read_to_string(volume.target.join("app.conf"))?;
                    if !conf.contains(&value(&names[0], 1)) {
                        bail!("app.conf of {} does not hold {}", volume.pod.name, names[0]);
                    }
                }
                unpublish(&csi, &volume).await?;
                if iteration > 0 {
                    match class {
                        "variant" => paired.push(took),
                        _ => plain.push(took),
                    }
                }
            }
        }
        drop(csi);
        node.stop()?;
        if let Some(server) = server {
            server.stop()?;
        }
        runs.push([percentile(&plain, 50.0), percentile(&paired, 50.0)]);
    }
    let column = |i: usize| Spread::of(&runs.iter().map(|r| r[i]).collect::<Vec<_>>());
    let ratios: Vec<f64> = runs.iter().map(|r| r[1] / r[0]).collect();
    Ok(PairedLatency {
        backend: kind.name().into(),
        variant: variant.name(),
        objects: OBJECTS,
        runs: runs.len(),
        samples_per_run: plan.iterations,
        plain_p50_ms: column(0),
        variant_p50_ms: column(1),
        ratio_p50: Spread::of(&ratios),
    })
}

/// Calls made between two readings of the backend's counters.
fn calls_since(
    before: &BTreeMap<String, usize>,
    after: BTreeMap<String, usize>,
) -> BTreeMap<String, usize> {
    after.into_iter().map(|(k, v)| (k.clone(), v - before.get(&k).copied().unwrap_or(0))).collect()
}

/// Per call kind: sscsi's counts over the runs beside upstream's.
fn call_counts(
    runs: &[BTreeMap<String, usize>],
    upstream: &BTreeMap<String, usize>,
) -> BTreeMap<String, CallCount> {
    let kinds: BTreeSet<&String> =
        runs.iter().flat_map(|r| r.keys()).chain(upstream.keys()).collect();
    kinds
        .into_iter()
        .map(|kind| {
            let counts: Vec<f64> =
                runs.iter().map(|r| r.get(kind).copied().unwrap_or(0) as f64).collect();
            let upstream = upstream.get(kind).copied().unwrap_or(0);
            (kind.clone(), CallCount { sscsi: Spread::of(&counts), upstream })
        })
        .collect()
}

async fn unpublish_all(csi: &NodeClient<Channel>, volumes: &[Volume]) -> anyhow::Result<()> {
    futures::stream::iter(volumes)
        .map(|v| unpublish(csi, v))
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// A burst of pods landing on one node at once.
pub async fn burst(kind: Kind, plan: &Plan, binary: &Path) -> anyhow::Result<BurstResult> {
    let pods = plan.burst_volumes / plan.service_accounts;
    let volumes = pods * plan.service_accounts;
    let (mut seconds, mut peaks, mut calls) = (vec![], vec![], vec![]);
    for _ in 0..plan.runs {
        let world = World::start(kind).await?;
        let population = world
            .population("burst", plan.service_accounts, plan.secrets_per_account, pods)
            .await?;
        let mut node = world.node(binary, true, &[])?;
        node.ready().await?;
        let csi = node.csi().await?;
        let before = world.backend.calls();
        let (published, took) = world.publish_at_once(&csi, &population.volumes).await;
        seconds.push(took);
        published.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        calls.push(calls_since(&before, world.backend.calls()));
        peaks.push(mib(node.memory()?.peak_kib));
        for volume in &population.volumes {
            check_files(volume, &population.objects[&volume.class], 1)?;
        }
        unpublish_all(&csi, &population.volumes).await?;
        drop(csi);
        node.stop()?;
    }
    let upstream = kind.upstream_publish_calls(volumes, plan.secrets_per_account);
    Ok(BurstResult {
        backend: kind.name().into(),
        volumes,
        service_accounts: plan.service_accounts,
        secrets_per_account: plan.secrets_per_account,
        seconds: Spread::of(&seconds),
        peak_rss_mib: Spread::of(&peaks),
        calls: call_counts(&calls, &upstream),
    })
}

/// The throttled burst: OpenBao's quota, and the budget kept below it: at
/// most `BUDGET + BUDGET_BURST` calls within any second.
const LIMIT: u32 = 20;
const BUDGET: u32 = 15;
const BUDGET_BURST: u32 = 3;

/// The burst of [`burst`] against OpenBao with a rate-limit quota of
/// [`LIMIT`] calls a second: with a budget below it, and without one.
pub async fn throttled_burst(plan: &Plan, binary: &Path) -> anyhow::Result<ThrottledBurst> {
    let pods = plan.burst_volumes / plan.service_accounts;
    let volumes = pods * plan.service_accounts;
    let budget =
        [format!("--backend-calls-per-second={BUDGET}"), format!("--backend-burst={BUDGET_BURST}")];
    // Per variant, per run: mounted, seconds, calls, peak, throttled, queued.
    let mut runs: [Vec<[f64; 6]>; 2] = [vec![], vec![]];
    for _ in 0..plan.runs {
        for (with_budget, figures) in [true, false].into_iter().zip(&mut runs) {
            let world = World::start(Kind::Vault).await?;
            let population = world
                .population("throttle", plan.service_accounts, plan.secrets_per_account, pods)
                .await?;
            world.backend.throttle(LIMIT).await?;
            let args: Vec<&str> =
                if with_budget { budget.iter().map(String::as_str).collect() } else { vec![] };
            let mut node = world.node(binary, true, &args)?;
            node.ready().await?;
            let csi = node.csi().await?;
            let (before, answered) = (world.backend.calls(), world.backend.answer_times()?.len());
            let (published, seconds) = world.publish_at_once(&csi, &population.volumes).await;
            let mut mounted = 0;
            for (volume, published) in population.volumes.iter().zip(&published) {
                if published.is_ok() {
                    check_files(volume, &population.objects[&volume.class], 1)?;
                    mounted += 1;
                }
            }
            if with_budget && let Some(Err(e)) = published.iter().find(|p| p.is_err()) {
                bail!("within the budget every pod mounts: {e:#}");
            }
            let calls: usize = calls_since(&before, world.backend.calls()).values().sum();
            let times = world.backend.answer_times()?;
            let metrics = node.metrics().await?;
            let outcome = [("outcome", "throttled")];
            figures.push([
                f64::from(mounted),
                seconds,
                calls as f64,
                most_within_a_second(&times[answered..]) as f64,
                metric_sum(&metrics, "sscsi_backend_calls_total", &outcome),
                metric_sum(&metrics, "sscsi_backend_queued_total", &[]),
            ]);
            unpublish_all(&csi, &population.volumes).await?;
            drop(csi);
            node.stop()?;
        }
    }
    let run = |figures: &[[f64; 6]]| {
        let column = |i: usize| Spread::of(&figures.iter().map(|f| f[i]).collect::<Vec<_>>());
        ThrottledRun {
            mounted: column(0),
            seconds: column(1),
            calls: column(2),
            peak_per_second: column(3),
            throttled: column(4),
            queued: column(5),
        }
    };
    Ok(ThrottledBurst {
        backend: Kind::Vault.name().into(),
        volumes,
        service_accounts: plan.service_accounts,
        secrets_per_account: plan.secrets_per_account,
        limit_per_second: LIMIT,
        budget_per_second: BUDGET,
        budget_burst: BUDGET_BURST,
        with_budget: run(&runs[0]),
        without_budget: run(&runs[1]),
    })
}

/// The most of `times` within any one second.
fn most_within_a_second(times: &[jiff::Timestamp]) -> usize {
    let mut times = times.to_vec();
    times.sort();
    let second = jiff::SignedDuration::from_secs(1);
    let mut first = 0;
    let mut most = 0;
    for (last, at) in times.iter().enumerate() {
        while at.duration_since(times[first]) >= second {
            first += 1;
        }
        most = most.max(last + 1 - first);
    }
    most
}

/// Every mounted volume due for a refresh, a share of the secrets changed.
pub async fn rotation(kind: Kind, plan: &Plan, binary: &Path) -> anyhow::Result<Rotation> {
    let pods = plan.rotation_volumes / plan.service_accounts;
    let volumes = pods * plan.service_accounts;
    let secrets = plan.service_accounts * plan.secrets_per_account;
    let changed_count = ((secrets as f64 * plan.rotation_changed).ceil() as usize).max(1);
    let (mut calls, mut rewritten, mut pass, mut propagation, mut rss) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut scraped_rss, mut scrape_kib) = (vec![], vec![]);
    let mut affected_count = 0;
    for _ in 0..plan.runs {
        let world = World::start(kind).await?;
        let population =
            world.population("rot", plan.service_accounts, plan.secrets_per_account, pods).await?;
        let interval = format!("--rotation-poll-interval={}s", plan.rotation_interval.as_secs());
        let mut node = world.node(binary, true, &["--enable-secret-rotation", &interval])?;
        node.ready().await?;
        let csi = node.csi().await?;
        futures::stream::iter(&population.volumes)
            .map(|v| publish(&csi, v.publish_request(&world.backend, &world.api)))
            .buffer_unordered(32)
            .try_collect::<Vec<()>>()
            .await?;
        rss.push(mib(node.memory()?.rss_kib));
        // What `/metrics` costs with every volume mounted: a few scrapes
        // (freshness is computed from the volume table at each), then RSS.
        let mut size = 0;
        for _ in 0..3 {
            size = node.scrape().await?;
        }
        scrape_kib.push(size as f64 / 1024.0);
        scraped_rss.push(mib(node.memory()?.rss_kib));
        // Changed: the first secret of every 1/changed_count-th account.
        let all: Vec<&String> = population.objects.values().flatten().collect();
        let changed: BTreeSet<String> =
            (0..changed_count).map(|i| all[i * all.len() / changed_count].clone()).collect();
        let affected: Vec<bool> = population
            .volumes
            .iter()
            .map(|v| population.objects[&v.class].iter().any(|n| changed.contains(n)))
            .collect();
        affected_count = affected.iter().filter(|a| **a).count();
        let links: Vec<Option<PathBuf>> = population.volumes.iter().map(Volume::data_dir).collect();
        let requests: Vec<_> = population
            .volumes
            .iter()
            .map(|v| v.publish_request(&world.backend, &world.api))
            .collect();
        // One interval after the last mount every volume is due, and no
        // answer of the mounts is young enough to serve a refresh.
        tokio::time::sleep(plan.rotation_interval + Duration::from_millis(100)).await;
        for name in &changed {
            world.backend.put(name, &value(name, 2)).await?;
        }
        let before = world.backend.calls();
        let changed_at = Instant::now();
        // Kubelet republishes every volume (all are due), a few at a time.
        let updated: Vec<Option<Duration>> =
            futures::stream::iter(population.volumes.iter().zip(requests).zip(&affected))
                .map(|((volume, request), affected)| {
                    let (csi, population, changed) = (&csi, &population, &changed);
                    async move {
                        publish(csi, request).await?;
                        if !*affected {
                            return Ok(None);
                        }
                        for name in &population.objects[&volume.class] {
                            let version = if changed.contains(name) { 2 } else { 1 };
                            check_files(volume, std::slice::from_ref(name), version)?;
                        }
                        Ok::<_, anyhow::Error>(Some(changed_at.elapsed()))
                    }
                })
                .buffer_unordered(16)
                .try_collect()
                .await?;
        pass.push(changed_at.elapsed().as_secs_f64());
        propagation.push(updated.iter().flatten().max().copied().unwrap_or_default().as_secs_f64());
        calls.push(calls_since(&before, world.backend.calls()));
        let now: Vec<Option<PathBuf>> = population.volumes.iter().map(Volume::data_dir).collect();
        rewritten.push(links.iter().zip(&now).filter(|(a, b)| a != b).count() as f64);
        unpublish_all(&csi, &population.volumes).await?;
        drop(csi);
        node.stop()?;
    }
    let upstream = kind.upstream_rotation_calls(volumes, plan.secrets_per_account, affected_count);
    Ok(Rotation {
        backend: kind.name().into(),
        interval_seconds: plan.rotation_interval.as_secs(),
        volumes,
        secrets,
        changed_secrets: changed_count,
        affected_volumes: affected_count,
        calls: call_counts(&calls, &upstream),
        files_rewritten: CallCount { sscsi: Spread::of(&rewritten), upstream: affected_count },
        pass_seconds: Spread::of(&pass),
        propagation_seconds: Spread::of(&propagation),
        rss_mounted_mib: Spread::of(&rss),
        rss_scraped_mib: Spread::of(&scraped_rss),
        metrics_kib: Spread::of(&scrape_kib),
    })
}

/// From process start to `/readyz`, with the classes of a small cluster to
/// list, and the resident memory once idle.
pub async fn startup(plan: &Plan, binary: &Path) -> anyhow::Result<StartupResult> {
    let (mut ready, mut idle) = (vec![], vec![]);
    for _ in 0..plan.startup_runs {
        let world = World::start(Kind::Local).await?;
        for c in 0..20 {
            world.class(&format!("class-{c}"), &[format!("object-{c}")]).await?;
        }
        // Every compiled-in provider serves: none is restricted.
        let mut node = world.node(binary, false, &[])?;
        ready.push(millis(node.ready().await?));
        tokio::time::sleep(Duration::from_secs(1)).await;
        idle.push(mib(node.memory()?.rss_kib));
        node.stop()?;
    }
    Ok(StartupResult { ready_ms: Spread::of(&ready), idle_rss_mib: Spread::of(&idle) })
}

/// TokenRequests, as the API double counts them (POST on serviceaccounts/<name>/token).
const TOKEN_REQUESTS: &str = "TokenRequest";

/// SecretSyncs without pods: `plan.syncs` of them over `plan.sync_accounts`
/// service accounts, each syncing one of `plan.sync_secrets` shared secrets
/// through its own class; then one rotation pass with 1 % of the secrets
/// changed.
pub async fn secret_sync(kind: Kind, plan: &Plan, binary: &Path) -> anyhow::Result<SyncResult> {
    let (syncs, accounts, secrets) = (plan.syncs, plan.sync_accounts, plan.sync_secrets);
    let changed_count = ((secrets as f64 * plan.rotation_changed).ceil() as usize).max(1);
    let (mut create_seconds, mut create_calls, mut pass_calls, mut written, mut rss) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut affected = 0;
    for _ in 0..plan.runs {
        let world = World::start(kind).await?;
        let names: Vec<String> = (0..secrets).map(|s| format!("sync-s{s:02}")).collect();
        for (s, name) in names.iter().enumerate() {
            world.backend.put(name, &value(name, 1)).await?;
            world.class(&format!("sync-c{s:02}"), std::slice::from_ref(name)).await?;
        }
        for a in 0..accounts {
            world.service_account(&format!("sa{a:02}")).await?;
        }
        let (mut args, env) = world.backend.node_config(true);
        args.push(format!("--rotation-poll-interval={}s", plan.sync_interval.as_secs()));
        args.push(format!("--token-request-audience={}", kind.audience()));
        let mut controller =
            ControllerProcess::spawn(binary, world.dir.path(), &world.api, &args, &env)?;
        let before = sync_calls(&world);
        let start = Instant::now();
        futures::stream::iter(0..syncs)
            .map(|k| {
                let world = &world;
                let (secret, class) = (&names[k % secrets], format!("sync-c{:02}", k % secrets));
                world.create(json!({
                    "apiVersion": "secret-sync.x-k8s.io/v1alpha1", "kind": "SecretSync",
                    "metadata": {"name": format!("sync-{k:03}"), "namespace": NAMESPACE},
                    "spec": {"serviceAccountName": format!("sa{:02}", k % accounts),
                             "secretProviderClassName": class,
                             "secretObject": {"data": [{"sourcePath": secret, "targetKey": "value"}]}}
                }))
            })
            .buffer_unordered(32)
            .try_collect::<Vec<()>>()
            .await?;
        until(&mut controller, "every Secret written", || {
            world.api.objects("", "secrets", Some(NAMESPACE)).len() == syncs
        })
        .await?;
        create_seconds.push(start.elapsed().as_secs_f64());
        create_calls.push(calls_since(&before, sync_calls(&world)));
        check_synced(&world, &names, &[], secrets)?;

        // The first pass may take answers of the last creations (a pass reuses
        // answers up to half an interval old): let it finish, then change a
        // secret and measure the next pass, which reuses nothing.
        until(&mut controller, "a first rotation pass over every SecretSync", || {
            world.api.objects(super::SYNC_GROUP, "secretsyncs", Some(NAMESPACE)).iter().all(|s| {
                s["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Update"))
            })
        })
        .await?;
        let changed: Vec<String> =
            (0..changed_count).map(|i| names[i * secrets / changed_count].clone()).collect();
        for name in &changed {
            world.backend.put(name, &value(name, 2)).await?;
        }
        affected = (0..syncs).filter(|k| changed.contains(&names[k % secrets])).count();
        let before = sync_calls(&world);
        let patches = world.api.requests("PATCH", "secrets");
        until(&mut controller, "the affected Secrets written", || {
            check_synced(&world, &names, &changed, secrets).is_ok()
        })
        .await?;
        // The pass ends when the backend has seen no call for two seconds.
        let mut last = sync_calls(&world);
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let now = sync_calls(&world);
            if now == last {
                break;
            }
            last = now;
        }
        pass_calls.push(calls_since(&before, last));
        written.push(f64::from(world.api.requests("PATCH", "secrets") - patches));
        check_synced(&world, &names, &changed, secrets)?;
        rss.push(mib(controller.memory()?.rss_kib));
        controller.stop()?;
    }
    // The per-SecretSync algorithm: one token and one provider Mount per
    // SecretSync and pass, each Mount building its credentials and reading
    // its object.
    let per_sync = kind.upstream_publish_calls(syncs, 1);
    let mut upstream = per_sync.clone();
    upstream.insert(TOKEN_REQUESTS.to_owned(), syncs);
    let mut upstream_pass = per_sync;
    upstream_pass.insert(TOKEN_REQUESTS.to_owned(), syncs);
    Ok(SyncResult {
        backend: kind.name().into(),
        syncs,
        service_accounts: accounts,
        secrets,
        changed_secrets: changed_count,
        affected_syncs: affected,
        interval_seconds: plan.sync_interval.as_secs(),
        create_seconds: Spread::of(&create_seconds),
        create_calls: call_counts(&create_calls, &upstream),
        pass_calls: call_counts(&pass_calls, &upstream_pass),
        secrets_written: CallCount { sscsi: Spread::of(&written), upstream: affected },
        rss_mib: Spread::of(&rss),
    })
}

/// Backend calls and TokenRequests so far.
fn sync_calls(world: &World) -> BTreeMap<String, usize> {
    let mut calls = world.backend.calls();
    calls.insert(TOKEN_REQUESTS.to_owned(), world.api.requests("POST", "serviceaccounts") as usize);
    calls
}

/// Polls `done` (the API double's objects) until it holds, for at most two
/// minutes, failing early if the controller exits.
async fn until(
    controller: &mut ControllerProcess,
    what: &str,
    done: impl Fn() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        controller.check()?;
        if Instant::now() > deadline {
            bail!(
                "{what}: not within two minutes; the controller's log:\n{}",
                controller.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Every synced Secret holds its secret's bytes: version 2 for `changed`.
fn check_synced(
    world: &World,
    names: &[String],
    changed: &[String],
    secrets: usize,
) -> anyhow::Result<()> {
    use base64::Engine as _;
    for secret in world.api.objects("", "secrets", Some(NAMESPACE)) {
        let name = secret["metadata"]["name"].as_str().unwrap_or_default();
        let k: usize = name.trim_start_matches("sync-").parse().context("a SecretSync's Secret")?;
        let source = &names[k % secrets];
        let version = if changed.contains(source) { 2 } else { 1 };
        let data = secret["data"]["value"].as_str().unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD.decode(data)?;
        if bytes != value(source, version).as_bytes() {
            bail!("Secret {name} does not hold version {version} of {source}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::most_within_a_second;

    fn at(millis: &[i64]) -> Vec<jiff::Timestamp> {
        millis.iter().map(|m| jiff::Timestamp::from_millisecond(*m).unwrap()).collect()
    }

    #[test]
    fn counts_the_busiest_second_in_any_order() {
        assert_eq!(most_within_a_second(&[]), 0);
        assert_eq!(most_within_a_second(&at(&[0, 1000, 2000])), 1, "a second apart: one each");
        assert_eq!(most_within_a_second(&at(&[0, 999, 1000])), 2);
        assert_eq!(most_within_a_second(&at(&[1500, 100, 900, 1200, 2600])), 3);
    }
}
