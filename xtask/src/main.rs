//! `cargo xtask <task>`: project automation in Rust, no shell scripts.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
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
    /// denied, the test suite.
    Ci,
    /// rustfmt and clippy only.
    Lint,
    /// Write the files generated from the code (the CRDs under deploy/crds).
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
            cargo(&["test", "--workspace"])
        }
        Task::Lint => lint(),
        Task::Codegen { check } => codegen(check),
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_owned()
}

fn codegen(check: bool) -> anyhow::Result<()> {
    let dir = root().join("deploy/crds");
    let mut stale = Vec::new();
    for (file, yaml) in sscsi_api::crd_documents() {
        let path = dir.join(&file);
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current == yaml {
            continue;
        }
        if check {
            stale.push(path.display().to_string());
        } else {
            std::fs::create_dir_all(&dir)?;
            std::fs::write(&path, yaml).with_context(|| format!("write {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    if !stale.is_empty() {
        bail!(
            "generated files differ from the code; run `cargo xtask codegen`:\n  {}",
            stale.join("\n  ")
        );
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
