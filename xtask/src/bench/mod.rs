//! `cargo xtask bench`: the binary as it ships (the `dist` profile), driven through its CSI socket
//! against moto (AWS), a real OpenBao server (Vault) and the local
//! provider; figures in `bench/results.json` and `bench/REPORT.md`.
//!
//! The xtask binary that `cargo xtask` runs is a debug build. It builds the
//! dist binaries, then hands over to a release build of itself
//! (`--harness`), so the harness's own parts (the API server double, the
//! counting proxy, the direct reads) do not run at debug speed beside the
//! binary they measure.

mod backend;
mod node;
mod report;
mod scenario;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use backend::{Backend, Kind};
use scenario::Plan;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// A smoke run: one run per scenario, fewer publishes, 200 volumes for
    /// rotation, no single-provider builds.
    #[arg(long)]
    quick: bool,
    /// Where results.json, REPORT.md and the plots go.
    #[arg(long, default_value = "bench")]
    out: PathBuf,
    /// Measure this sscsi binary (built with every provider) and build
    /// nothing: the harness then runs in this xtask build (debug under
    /// `cargo xtask`, which the report says), with no single-provider sizes.
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Also measure this binary (the previous build, say) in the same run:
    /// start, idle memory, size and publish latency, side by side.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Only these backends (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    backends: Vec<Kind>,
    /// Run the scenarios in this process (what the launcher hands over to).
    #[arg(long, hide = true)]
    harness: bool,
    /// Seconds the launcher spent building.
    #[arg(long, hide = true)]
    build_seconds: Option<f64>,
    /// The commit the launcher started from.
    #[arg(long, hide = true)]
    commit: Option<String>,
}

const SINGLE: [&str; 4] = ["aws", "azure", "gcp", "vault"];

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    // moto and OpenBao; the harness, started below, finds them where this put them.
    if !args.harness {
        crate::testenv::ensure()?;
    }
    if args.harness || args.binary.is_some() {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        return runtime.block_on(harness(args));
    }
    let root = crate::root();
    let started = Instant::now();
    // Taken now: the binaries are built from this tree.
    let commit = commit();
    let binaries = root.join("target/bench");
    std::fs::create_dir_all(&binaries)?;
    // Single-provider builds first: each one replaces target/dist/sscsi.
    if !args.quick {
        for feature in SINGLE {
            build_sscsi(&["--no-default-features", "--features", feature])?;
            copy_binary(&binaries.join(format!("sscsi-{feature}")))?;
        }
    }
    build_sscsi(&[])?;
    let binary = binaries.join("sscsi-all");
    copy_binary(&binary)?;
    crate::cargo(&["build", "--release", "--locked", "-p", "xtask"])?;
    let mut harness = Command::new(crate::target_dir().join("release/xtask"));
    harness
        .args(["bench", "--harness", "--out"])
        .arg(root.join(&args.out))
        .arg("--binary")
        .arg(&binary)
        .arg(format!("--build-seconds={:.0}", started.elapsed().as_secs_f64()))
        .arg(format!("--commit={commit}"));
    if let Some(baseline) = &args.baseline {
        harness.arg("--baseline").arg(baseline);
    }
    if args.quick {
        harness.arg("--quick");
    }
    for kind in &args.backends {
        harness.arg(format!("--backends={}", kind.name()));
    }
    let status = harness.status().context("run the release harness")?;
    if !status.success() {
        bail!("the bench failed: {status}");
    }
    Ok(())
}

/// `--quick --binary <binary>` into a directory thrown away: every scenario
/// runs and checks its files; the figures are not kept.
pub fn smoke(binary: &Path) -> anyhow::Result<()> {
    let out = tempfile::tempdir()?;
    run(BenchArgs {
        quick: true,
        out: out.path().to_owned(),
        binary: Some(binary.to_owned()),
        baseline: None,
        backends: Vec::new(),
        harness: false,
        build_seconds: None,
        commit: None,
    })
}

/// The `dist` profile: what the image ships.
fn build_sscsi(features: &[&str]) -> anyhow::Result<()> {
    let mut args = vec!["build", "--profile", "dist", "--locked", "-p", "sscsi"];
    args.extend_from_slice(features);
    crate::cargo(&args)
}

fn copy_binary(to: &Path) -> anyhow::Result<()> {
    std::fs::copy(crate::target_dir().join("dist/sscsi"), to)
        .with_context(|| format!("copy the dist binary to {}", to.display()))?;
    Ok(())
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The SecretSync API group.
const SYNC_GROUP: &str = "secret-sync.x-k8s.io";

async fn harness(args: BenchArgs) -> anyhow::Result<()> {
    let binary = args.binary.context("--binary is required with --harness")?;
    let plan = Plan::new(args.quick);
    let kinds: Vec<Kind> = match args.backends.is_empty() {
        true => vec![Kind::Local, Kind::Aws, Kind::Vault],
        false => args.backends.clone(),
    };
    if !is_root() {
        println!("WARNING: not running as root: volumes are plain directories, not tmpfs");
    }
    let started = Instant::now();
    let step = |what: &str| println!("[{:>5.0} s] {what}", started.elapsed().as_secs_f64());

    step("start to /readyz, idle memory");
    let startup = scenario::startup(&plan, &binary).await?;
    let mut latency = Vec::new();
    for &kind in &kinds {
        step(&format!("publish latency: {}", kind.name()));
        latency.extend(scenario::latency(kind, &plan, &binary).await?);
    }
    let mut paired = Vec::new();
    for &kind in &kinds {
        for variant in [scenario::Variant::Socket, scenario::Variant::BuiltFiles] {
            step(&format!("publish latency {}: {}", variant.name(), kind.name()));
            paired.push(scenario::paired_latency(kind, variant, &plan, &binary).await?);
        }
    }
    let (mut burst, mut rotation, mut sync) = (Vec::new(), Vec::new(), Vec::new());
    let mut throttled = None;
    for &kind in kinds.iter().filter(|k| **k != Kind::Local) {
        step(&format!("burst of {} volumes: {}", plan.burst_volumes, kind.name()));
        burst.push(scenario::burst(kind, &plan, &binary).await?);
        if kind == Kind::Vault {
            step(&format!("burst of {} volumes, throttled: vault", plan.burst_volumes));
            throttled = Some(scenario::throttled_burst(&plan, &binary).await?);
        }
        step(&format!("rotation pass over {} volumes: {}", plan.rotation_volumes, kind.name()));
        rotation.push(scenario::rotation(kind, &plan, &binary).await?);
        step(&format!("{} SecretSyncs and a rotation pass: {}", plan.syncs, kind.name()));
        sync.push(scenario::secret_sync(kind, &plan, &binary).await?);
    }
    let baseline = match &args.baseline {
        None => None,
        Some(path) => {
            step(&format!("baseline {}: start to /readyz, idle memory", path.display()));
            let startup = scenario::startup(&plan, path).await?;
            let mut latency = Vec::new();
            for &kind in &kinds {
                step(&format!("baseline: publish latency: {}", kind.name()));
                latency.extend(scenario::latency(kind, &plan, path).await?);
            }
            Some(report::Baseline {
                binary: path.display().to_string(),
                binary_mib: size_mib(path)?,
                startup,
                latency,
            })
        }
    };
    step("done");

    let mut binary_mib = BTreeMap::new();
    binary_mib.insert("all".to_owned(), size_mib(&binary)?);
    if !args.quick {
        for feature in SINGLE {
            let single = binary.with_file_name(format!("sscsi-{feature}"));
            if single.exists() {
                binary_mib.insert(feature.to_owned(), size_mib(&single)?);
            }
        }
    }
    let results = report::Results {
        mode: if args.quick { "quick" } else { "full" },
        date: jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC").to_string(),
        commit: args.commit.clone().unwrap_or_else(commit),
        machine: machine(),
        servers: kinds
            .iter()
            .filter(|k| **k != Kind::Local)
            .map(|k| (k.name().to_owned(), Backend::server_version(*k)))
            .collect(),
        harness_build: if cfg!(debug_assertions) { "debug" } else { "release" },
        binary: match binary.strip_prefix(crate::root()) {
            Ok(relative) => relative.display().to_string(),
            Err(_) => binary.display().to_string(),
        },
        run_seconds: started.elapsed().as_secs_f64(),
        build_seconds: args.build_seconds,
        latency,
        paired,
        burst,
        throttled,
        rotation,
        sync,
        startup,
        binary_mib,
        baseline,
    };
    let out = &args.out;
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&results)? + "\n")?;
    std::fs::write(out.join("REPORT.md"), report::markdown(&results))?;
    std::fs::write(out.join("latency.svg"), report::latency_svg(&results.latency))?;
    std::fs::write(out.join("calls.svg"), report::calls_svg(&results.burst, &results.rotation))?;
    println!("wrote {}/REPORT.md, results.json, latency.svg, calls.svg", out.display());
    Ok(())
}

fn size_mib(path: &Path) -> anyhow::Result<f64> {
    Ok(std::fs::metadata(path)?.len() as f64 / (1024.0 * 1024.0))
}

fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(crate::root())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let head = git(&["rev-parse", "--short", "HEAD"]);
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
    if dirty { format!("{head} (with uncommitted changes)") } else { head }
}

fn machine() -> report::Machine {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let memory_kib: f64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    report::Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: memory_kib / (1024.0 * 1024.0),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        root: is_root(),
    }
}
