//! sscsi: the Kubernetes Secrets Store CSI driver as one binary.
//! This file only composes: parse the command line, set up logs, dispatch.

mod audit;
mod check;
mod cli;
mod controller;
mod demo;
mod logging;
mod node;
mod provider_server;
mod providers;
mod render;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        cli::Command::Node(args) => {
            logging::init(&cli.log, "info");
            runtime.block_on(node::run(*args))
        }
        cli::Command::Controller(args) => {
            logging::init(&cli.log, "info");
            runtime.block_on(controller::run(*args))
        }
        cli::Command::ProviderServer(args) => {
            logging::init(&cli.log, "info");
            runtime.block_on(provider_server::run(*args))
        }
        cli::Command::Crds => {
            for (_, yaml) in sscsi_api::crd_documents() {
                print!("---\n{yaml}");
            }
            Ok(())
        }
        cli::Command::Check(args) => {
            logging::init(&cli.log, "warn");
            let clean = check::run(args)?;
            std::process::exit(if clean { 0 } else { 1 })
        }
        cli::Command::Render(args) => {
            logging::init(&cli.log, "info");
            runtime.block_on(render::run(*args))
        }
        cli::Command::Audit(args) => {
            logging::init(&cli.log, "warn");
            runtime.block_on(audit::run(args))
        }
        cli::Command::Version => {
            version();
            Ok(())
        }
        cli::Command::Demo(args) => {
            logging::init(&cli.log, "warn");
            runtime.block_on(demo::run(args))
        }
    }
}

fn version() {
    println!("sscsi {}", env!("CARGO_PKG_VERSION"));
    let providers: Vec<&str> = providers::COMPILED.iter().copied().chain(["local"]).collect();
    println!("providers: {}", providers.join(" "));
    let native = rustls_native_certs::load_native_certs();
    match native.errors.first() {
        None => println!("CA certificates: {}", native.certs.len()),
        Some(error) => println!("CA certificates: {} ({error})", native.certs.len()),
    }
}
