//! The image as a loader sees it: built from the debug binary `cargo test`
//! builds for the sscsi crate's own tests (target/debug/sscsi), with fixed
//! inputs, then read back as an OCI layout and run.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::OnceLock;

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use super::*;

fn inputs(epoch: i64) -> Inputs {
    Inputs {
        binary: crate::target_dir().join("debug/sscsi"),
        features: "aws,azure,gcp,vault".into(),
        version: "0.1.0".into(),
        revision: "0123456789abcdef0123456789abcdef01234567".into(),
        epoch,
    }
}

/// One build shared by the tests that only read it.
fn built() -> &'static (tempfile::TempDir, Built) {
    static BUILT: OnceLock<(tempfile::TempDir, Built)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let built = build(&inputs(1_700_000_000), &dir.path().join("sscsi.tar")).unwrap();
        (dir, built)
    })
}

/// The regular files of a tar, by path.
fn files(tar: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(tar);
    let mut files = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type() == tar::EntryType::Regular {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            files.insert(entry.path().unwrap().display().to_string(), bytes);
        }
    }
    files
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

/// The blob a descriptor names, checked against its digest and size.
fn blob<'a>(files: &'a BTreeMap<String, Vec<u8>>, d: &Descriptor) -> &'a [u8] {
    let hex = d.digest().digest();
    let bytes =
        files.get(&format!("blobs/sha256/{hex}")).unwrap_or_else(|| panic!("no blob {hex}"));
    assert_eq!(hex::encode(Sha256::digest(bytes)), hex, "digest of {hex}");
    assert_eq!(bytes.len() as u64, d.size(), "size of {hex}");
    bytes
}

#[test]
fn the_archive_is_an_oci_layout_whose_digests_and_sizes_match() {
    let (_, built) = built();
    let files = files(&std::fs::read(&built.archive).unwrap());
    assert_eq!(files["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);

    let index: ImageIndex = serde_json::from_slice(&files["index.json"]).unwrap();
    let [manifest] = index.manifests().as_slice() else { panic!("one manifest") };
    assert_eq!(manifest.digest().to_string(), built.manifest_digest);
    let names = manifest.annotations().as_ref().unwrap();
    assert_eq!(names["org.opencontainers.image.ref.name"], "0.1.0");
    assert_eq!(names["io.containerd.image.name"], "docker.io/library/sscsi:0.1.0");

    let manifest: ImageManifest = serde_json::from_slice(blob(&files, manifest)).unwrap();
    let config: ImageConfiguration =
        serde_json::from_slice(blob(&files, manifest.config())).unwrap();
    let run = config.config().as_ref().unwrap();
    assert_eq!(run.entrypoint().as_deref(), Some(&["/sscsi".to_owned()][..]));
    assert_eq!(run.cmd().as_deref(), Some(&["node".to_owned()][..]));
    let labels = run.labels().as_ref().unwrap();
    assert_eq!(labels["org.opencontainers.image.revision"], inputs(0).revision);
    assert_eq!(labels["org.opencontainers.image.version"], "0.1.0");
    assert_eq!(config.created().as_deref(), Some("2023-11-14T22:13:20Z"));

    // Each layer's diff_id is the digest of its uncompressed tar.
    let layers: Vec<Vec<u8>> = manifest.layers().iter().map(|l| gunzip(blob(&files, l))).collect();
    let diff_ids: Vec<String> =
        layers.iter().map(|t| format!("sha256:{}", hex::encode(Sha256::digest(t)))).collect();
    assert_eq!(config.rootfs().diff_ids(), &diff_ids);
    let sizes = |f: fn(&Descriptor) -> u64| manifest.layers().iter().map(f).sum::<u64>();
    assert_eq!(built.compressed, sizes(|d| d.size()));
    assert_eq!(built.uncompressed, layers.iter().map(|l| l.len() as u64).sum::<u64>());

    // Docker's manifest.json names the same blobs.
    let docker: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    assert_eq!(docker[0]["RepoTags"], json!(["sscsi:0.1.0"]));
    assert_eq!(
        docker[0]["Config"],
        format!("blobs/sha256/{}", manifest.config().digest().digest())
    );
    let docker_layers: Vec<String> =
        manifest.layers().iter().map(|l| format!("blobs/sha256/{}", l.digest().digest())).collect();
    assert_eq!(docker[0]["Layers"], json!(docker_layers));

    // The binary is the one given, executable; the base holds the C runtime.
    let app = files_of(&layers[1]);
    assert_eq!(app["sscsi"].0, std::fs::read(&inputs(0).binary).unwrap());
    assert_eq!(app["sscsi"].1, 0o755);
    let base = files_of(&layers[0]);
    for path in [
        "lib/x86_64-linux-gnu/libc.so.6",
        "lib/x86_64-linux-gnu/libgcc_s.so.1",
        "etc/ssl/certs/ca-certificates.crt",
        "var/lib/dpkg/status.d/libc6",
    ] {
        assert!(base.contains_key(path), "{path} missing from the base layer");
    }
    assert!(!base.keys().any(|p| p.contains("gconv") || p.starts_with("usr/share/man/")));
}

/// Files and links of a layer, by path, with their bytes (a link's target) and mode.
fn files_of(tar: &[u8]) -> BTreeMap<String, (Vec<u8>, u32)> {
    let mut archive = tar::Archive::new(tar);
    let mut out = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let mode = entry.header().mode().unwrap();
        let mut bytes = Vec::new();
        match entry.header().entry_type() {
            tar::EntryType::Regular => entry.read_to_end(&mut bytes).map(drop).unwrap(),
            tar::EntryType::Symlink => {
                bytes = entry.link_name_bytes().unwrap().into_owned();
            }
            _ => continue,
        }
        out.insert(path, (bytes, mode));
    }
    out
}

#[test]
fn the_same_inputs_give_the_same_archive_and_another_commit_another() {
    let (_, first) = built();
    let dir = tempfile::tempdir().unwrap();
    let again = build(&inputs(1_700_000_000), &dir.path().join("again.tar")).unwrap();
    assert_eq!(again.manifest_digest, first.manifest_digest);
    assert!(std::fs::read(&again.archive).unwrap() == std::fs::read(&first.archive).unwrap());
    assert_eq!(
        std::fs::read(again.archive.with_extension("spdx.json")).unwrap(),
        std::fs::read(first.archive.with_extension("spdx.json")).unwrap()
    );
    let later = build(&inputs(1_700_000_001), &dir.path().join("later.tar")).unwrap();
    assert_ne!(later.manifest_digest, first.manifest_digest);
}

#[test]
fn the_binary_in_the_image_runs_and_finds_its_ca_bundle() {
    let (_, built) = built();
    let files = files(&std::fs::read(&built.archive).unwrap());
    let index: ImageIndex = serde_json::from_slice(&files["index.json"]).unwrap();
    let manifest: ImageManifest =
        serde_json::from_slice(blob(&files, &index.manifests()[0])).unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    for layer in manifest.layers() {
        let tar = gunzip(blob(&files, layer));
        let mut archive = tar::Archive::new(tar.as_slice());
        archive.set_preserve_permissions(true);
        archive.unpack(rootfs.path()).unwrap();
    }
    // As root, chroot proves nothing of the host is used; otherwise the
    // image's own loader and libraries run it, with its CA bundle.
    let root = rootfs.path();
    let output = if nix::unistd::geteuid().is_root() {
        std::process::Command::new("chroot").arg(root).args(["/sscsi", "version"]).output()
    } else {
        let libs = root.join("lib/x86_64-linux-gnu");
        std::process::Command::new(libs.join("ld-linux-x86-64.so.2"))
            .arg("--library-path")
            .arg(&libs)
            .arg(root.join("sscsi"))
            .arg("version")
            .env("SSL_CERT_FILE", root.join("etc/ssl/certs/ca-certificates.crt"))
            .output()
    }
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.starts_with("sscsi 0.1.0\nproviders: aws azure gcp vault local\n"), "{stdout}");
    let count: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CA certificates: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no clean CA count in {stdout}"));
    assert!(count > 100, "{count} CA certificates");
}

#[test]
fn the_sbom_names_the_crates_linked_and_the_debian_packages() {
    let (_, built) = built();
    let sbom: Value =
        serde_json::from_slice(&std::fs::read(built.archive.with_extension("spdx.json")).unwrap())
            .unwrap();
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    let packages = sbom["packages"].as_array().unwrap();
    let purls: Vec<&str> =
        packages.iter().filter_map(|p| p["externalRefs"][0]["referenceLocator"].as_str()).collect();
    for wanted in ["pkg:cargo/tokio@", "pkg:cargo/aws-sdk-secretsmanager@", "pkg:deb/debian/libc6@"]
    {
        assert!(purls.iter().any(|p| p.starts_with(wanted)), "no {wanted} in the SBOM");
    }
    // Test-only and build-time crates do not ship.
    for absent in ["pkg:cargo/sscsi-testkit@", "pkg:cargo/tonic-prost-build@", "pkg:cargo/cc@"] {
        assert!(!purls.iter().any(|p| p.starts_with(absent)), "{absent} in the SBOM");
    }
    let pins = deb::pins(include_str!("../../image-packages.txt")).unwrap();
    let libc = packages.iter().find(|p| p["name"] == "libc6").unwrap();
    assert_eq!(libc["checksums"][0]["checksumValue"], pins[0].sha256);
    assert_eq!(libc["versionInfo"], pins[0].version);
}

#[test]
fn a_feature_set_has_one_spelling_and_one_tag() {
    assert_eq!(feature_set(" vault, aws,vault"), "aws,vault");
    assert_eq!(tag("0.1.0", &feature_set("vault,gcp,azure,aws")), "0.1.0");
    assert_eq!(tag("0.1.0", &feature_set("")), "0.1.0-local");
    assert_eq!(tag("0.1.0", &feature_set("vault,aws")), "0.1.0-aws-vault");
}
