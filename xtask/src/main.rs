//! `cargo xtask <task>`: project automation in Rust, no shell scripts.

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
    /// The checks CI runs: rustfmt, clippy with warnings denied, the test suite.
    Ci,
    /// rustfmt and clippy only.
    Lint,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Ci => {
            lint()?;
            cargo(&["test", "--workspace"])
        }
        Task::Lint => lint(),
    }
}

fn lint() -> anyhow::Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .status()
        .with_context(|| format!("run {cargo}"))?;
    if !status.success() {
        bail!("cargo {} failed: {status}", args.join(" "));
    }
    Ok(())
}
