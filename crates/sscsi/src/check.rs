//! `sscsi check`: reads the files, checks them with the compiled-in
//! providers' rules (sscsi-engine's `check`), prints the report.

use std::io::{Read, Write};

use anyhow::Context;
use sscsi_engine::check::{Checks, Report};

use crate::cli::{CheckArgs, Output};

/// The compiled-in providers and their offline rules.
fn checks() -> Checks {
    let checks = Checks::new().provider("local", None);
    #[cfg(feature = "aws")]
    let checks = checks.provider("aws", Some(sscsi_provider_aws::check));
    #[cfg(feature = "azure")]
    let checks = checks.provider("azure", Some(sscsi_provider_azure::check));
    #[cfg(feature = "gcp")]
    let checks = checks.provider("gcp", Some(sscsi_provider_gcp::check));
    #[cfg(feature = "vault")]
    let checks = checks.provider("vault", Some(sscsi_provider_vault::check));
    checks
}

/// Prints the report; true when nothing was found.
pub fn run(args: CheckArgs) -> anyhow::Result<bool> {
    let checks = checks();
    let mut report = Report::default();
    for path in &args.files {
        let (source, text) = if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("standard input")?;
            ("-".to_owned(), text)
        } else {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
            (path.display().to_string(), text)
        };
        if source.ends_with(".md") {
            report.add_markdown(&source, &text, &checks);
        } else {
            report.add(&source, &text, &checks);
        }
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => {
            for problem in &report.problems {
                println!("{problem}");
            }
            // The summary goes beside the problems, not into them.
            writeln!(
                std::io::stderr(),
                "checked {} objects ({} other documents skipped): {} problems",
                report.checked,
                report.skipped,
                report.problems.len()
            )?;
        }
    }
    Ok(report.problems.is_empty())
}
