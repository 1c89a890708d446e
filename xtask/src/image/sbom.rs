//! The image's SBOM, SPDX 2.3 JSON: the Rust crates linked into the binary
//! (Cargo.lock as resolved for the features built, normal dependencies only:
//! build scripts and proc macros do not ship) and the Debian packages.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use serde_json::{Value, json};

use super::deb::Package;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Crate {
    pub name: String,
    pub version: String,
    pub license: Option<String>,
    /// crates.io, or none for the workspace's own crates.
    pub registry: bool,
}

/// The crates the `sscsi` package links with `features`, from `cargo metadata`.
pub fn crates(features: &str) -> anyhow::Result<Vec<Crate>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = std::process::Command::new(&cargo);
    command
        .args(["metadata", "--format-version", "1", "--locked", "--no-default-features"])
        .current_dir(crate::root());
    if !features.is_empty() {
        let qualified: Vec<String> = features.split(',').map(|f| format!("sscsi/{f}")).collect();
        command.args(["--features", &qualified.join(",")]);
    }
    let output = command.output().with_context(|| format!("run {cargo} metadata"))?;
    if !output.status.success() {
        anyhow::bail!("cargo metadata: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    let metadata: Value = serde_json::from_slice(&output.stdout)?;
    linked(&metadata, "sscsi")
}

/// Walks the resolve graph from `root` along normal dependency edges.
fn linked(metadata: &Value, root: &str) -> anyhow::Result<Vec<Crate>> {
    let packages: BTreeMap<&str, &Value> = metadata["packages"]
        .as_array()
        .context("metadata without packages")?
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let nodes: BTreeMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .context("metadata without a resolve graph")?
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let start = packages
        .iter()
        .find(|(_, p)| p["name"] == root && p["source"].is_null())
        .map(|(id, _)| *id)
        .with_context(|| format!("no package {root} in the workspace"))?;
    let mut seen = BTreeSet::from([start]);
    let mut queue = vec![start];
    while let Some(id) = queue.pop() {
        for dep in nodes.get(id).and_then(|n| n["deps"].as_array()).into_iter().flatten() {
            let normal = dep["dep_kinds"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k["kind"].is_null()));
            if let Some(dep_id) = dep["pkg"].as_str()
                && normal
                && seen.insert(dep_id)
            {
                queue.push(dep_id);
            }
        }
    }
    let mut crates: Vec<Crate> = seen
        .into_iter()
        .filter_map(|id| packages.get(id))
        .map(|p| Crate {
            name: p["name"].as_str().unwrap_or_default().into(),
            version: p["version"].as_str().unwrap_or_default().into(),
            license: p["license"].as_str().map(spdx_expression),
            registry: !p["source"].is_null(),
        })
        .collect();
    crates.sort();
    Ok(crates)
}

/// Old Cargo manifests write `MIT/Apache-2.0`; SPDX wants `OR`.
fn spdx_expression(license: &str) -> String {
    license.split('/').map(str::trim).collect::<Vec<_>>().join(" OR ")
}

/// The document. `created` is the commit's time, so it is reproducible.
pub fn document(
    name: &str,
    version: &str,
    revision: &str,
    created: &str,
    crates: &[Crate],
    packages: &[Package],
) -> Value {
    let id = |kind: &str, name: &str, version: &str| {
        let clean: String = format!("{name}-{version}")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' })
            .collect();
        format!("SPDXRef-{kind}-{clean}")
    };
    let mut spdx_packages = vec![json!({
        "SPDXID": "SPDXRef-Image",
        "name": name,
        "versionInfo": version,
        "downloadLocation": "https://github.com/sscsi/sscsi",
        "sourceInfo": format!("built from commit {revision}"),
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "Apache-2.0",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Image",
    })];
    let mut contains = |element: String| {
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": element,
        }));
    };
    for krate in crates {
        let spdx_id = id("Crate", &krate.name, &krate.version);
        let purl = format!("pkg:cargo/{}@{}", krate.name, krate.version);
        spdx_packages.push(json!({
            "SPDXID": spdx_id,
            "name": krate.name,
            "versionInfo": krate.version,
            "downloadLocation": if krate.registry {
                format!("https://crates.io/api/v1/crates/{}/{}/download", krate.name, krate.version)
            } else {
                "NOASSERTION".into()
            },
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": krate.license.as_deref().unwrap_or("NOASSERTION"),
            "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": "LIBRARY",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl,
            }],
        }));
        contains(spdx_id);
    }
    for package in packages {
        let pin = &package.pin;
        let arch = package.field("Architecture").unwrap_or("all");
        let spdx_id = id("Deb", &pin.name, &pin.version);
        spdx_packages.push(json!({
            "SPDXID": spdx_id,
            "name": pin.name,
            "versionInfo": pin.version,
            "supplier": "Organization: Debian",
            "downloadLocation": format!("http://deb.debian.org/{}", pin.path),
            "checksums": [{"algorithm": "SHA256", "checksumValue": pin.sha256}],
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": "LIBRARY",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": format!(
                    "pkg:deb/debian/{}@{}?arch={arch}&distro=debian-12",
                    pin.name,
                    pin.version.replace('+', "%2B").replace('~', "%7E")
                ),
            }],
        }));
        contains(spdx_id);
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{name}-{version}"),
        "documentNamespace": format!("https://github.com/sscsi/sscsi/spdx/{name}-{version}-{revision}"),
        "creationInfo": {"created": created, "creators": ["Tool: cargo-xtask-image"]},
        "packages": spdx_packages,
        "relationships": relationships,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_normal_dependencies_ship() {
        let metadata = json!({
            "packages": [
                {"id": "a", "name": "sscsi", "version": "0.1.0", "source": null, "license": "Apache-2.0"},
                {"id": "b", "name": "tokio", "version": "1.0.0", "source": "registry", "license": "MIT"},
                {"id": "c", "name": "cc", "version": "1.0.0", "source": "registry", "license": "MIT/Apache-2.0"},
                {"id": "d", "name": "bytes", "version": "1.0.0", "source": "registry", "license": null},
                {"id": "e", "name": "unused", "version": "1.0.0", "source": "registry", "license": "MIT"},
            ],
            "resolve": {"nodes": [
                {"id": "a", "deps": [
                    {"pkg": "b", "dep_kinds": [{"kind": null}]},
                    {"pkg": "c", "dep_kinds": [{"kind": "build"}]},
                ]},
                {"id": "b", "deps": [{"pkg": "d", "dep_kinds": [{"kind": "dev"}, {"kind": null}]}]},
                {"id": "c", "deps": []},
                {"id": "d", "deps": []},
                {"id": "e", "deps": []},
            ]},
        });
        let names: Vec<String> =
            linked(&metadata, "sscsi").unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["bytes", "sscsi", "tokio"]);
        assert_eq!(spdx_expression("MIT/Apache-2.0"), "MIT OR Apache-2.0");
    }
}
