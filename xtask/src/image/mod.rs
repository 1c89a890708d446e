//! `cargo xtask image`: the sscsi image as an OCI image layout archive,
//! written by the project with no container engine and no registry.
//!
//! Two layers: the base (glibc, libgcc_s and CA certificates from pinned
//! Debian packages, as distroless builds its images, plus passwd, group and
//! nsswitch.conf) and the app (`/sscsi` and its SBOM). The archive holds an
//! OCI layout (`oci-layout`, `index.json`, `blobs/`) and Docker's
//! `manifest.json` beside it, so `docker load`, `podman load`,
//! `ctr images import` and `kind load image-archive` all take it.
//!
//! Reproducible: every input is pinned or given (the binary, the commit and
//! its time, the package pins), every tar is written in path order with one
//! mtime (the commit's) and fixed owners and modes, gzip carries no time,
//! and JSON is written with sorted keys.

mod deb;
mod sbom;
mod tree;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, HistoryBuilder, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, Os, RootFsBuilder, Sha256Digest,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use tree::{Node, Tree};

/// The one image name: the chart's `image.repository` default.
pub const REPOSITORY: &str = "sscsi";

#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// Providers to build in, as for the Dockerfile's FEATURES (comma-separated;
    /// empty for the local provider only).
    #[arg(long, env = "FEATURES", default_value = "aws,azure,gcp,vault")]
    pub features: String,
    /// Put this binary in the image instead of building one (it must be built
    /// with the same features, for the SBOM).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// The archive to write (default target/image/sscsi-<tag>.tar).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Everything the image is made of; the same inputs give the same bytes.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub binary: PathBuf,
    pub features: String,
    pub version: String,
    pub revision: String,
    /// Seconds since the epoch: every file's mtime and the config's `created`.
    pub epoch: i64,
}

impl Inputs {
    /// `0.1.0` with every provider, `0.1.0-aws` with one, `0.1.0-local`.
    pub fn tag(&self) -> String {
        tag(&self.version, &self.features)
    }
}

/// One spelling per set, so `vault,aws` and `aws, vault` build one tag.
fn feature_set(features: &str) -> String {
    let mut set: Vec<&str> = features.split(',').map(str::trim).filter(|f| !f.is_empty()).collect();
    set.sort_unstable();
    set.dedup();
    set.join(",")
}

pub fn tag(version: &str, features: &str) -> String {
    match features {
        "aws,azure,gcp,vault" => version.to_owned(),
        "" => format!("{version}-local"),
        some => format!("{version}-{}", some.replace(',', "-")),
    }
}

/// What was written, for the caller to print or check.
#[derive(Debug)]
pub struct Built {
    pub archive: PathBuf,
    pub manifest_digest: String,
    /// Sum of the gzip layers, what a registry stores and a node pulls.
    pub compressed: u64,
    /// Sum of the layer tars, what the node's disk holds once unpacked.
    pub uncompressed: u64,
}

pub fn run(args: ImageArgs) -> anyhow::Result<()> {
    let root = crate::root();
    let features = feature_set(&args.features);
    let binary = match args.binary {
        Some(binary) => binary,
        None => {
            crate::cargo(&[
                "build",
                "--profile",
                "dist",
                "--locked",
                "-p",
                "sscsi",
                "--no-default-features",
                "--features",
                &features,
            ])?;
            crate::target_dir().join("dist/sscsi")
        }
    };
    let inputs = Inputs {
        binary,
        features,
        version: env!("CARGO_PKG_VERSION").into(),
        revision: git(&["rev-parse", "HEAD"]).unwrap_or_else(|_| "unknown".into()),
        epoch: epoch()?,
    };
    let out =
        args.out.unwrap_or_else(|| root.join(format!("target/image/sscsi-{}.tar", inputs.tag())));
    let built = build(&inputs, &out)?;
    let mib = |n: u64| n as f64 / (1024.0 * 1024.0);
    println!(
        "wrote {} ({REPOSITORY}:{}, manifest {}): {:.1} MiB compressed, {:.1} MiB uncompressed",
        built.archive.display(),
        inputs.tag(),
        built.manifest_digest,
        mib(built.compressed),
        mib(built.uncompressed),
    );
    println!("SBOM: {}", out.with_extension("spdx.json").display());
    Ok(())
}

/// `SOURCE_DATE_EPOCH` when set (it must be whole seconds), else the
/// commit's time, else 0 outside a git checkout.
fn epoch() -> anyhow::Result<i64> {
    if let Ok(value) = std::env::var("SOURCE_DATE_EPOCH") {
        return value.trim().parse().with_context(|| {
            format!("SOURCE_DATE_EPOCH={value:?} is not seconds since 1970 (e.g. 1700000000)")
        });
    }
    Ok(git(&["log", "-1", "--format=%ct"]).ok().and_then(|s| s.parse().ok()).unwrap_or(0))
}

fn git(args: &[&str]) -> anyhow::Result<String> {
    let output =
        std::process::Command::new("git").args(args).current_dir(crate::root()).output()?;
    if !output.status.success() {
        bail!("git {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// Writes the archive to `out` and the SBOM beside it (`.spdx.json`).
pub fn build(inputs: &Inputs, out: &Path) -> anyhow::Result<Built> {
    let root = crate::root();
    let mtime = u64::try_from(inputs.epoch)
        .with_context(|| format!("the image's time {} is before 1970", inputs.epoch))?;
    let created = jiff::Timestamp::from_second(inputs.epoch)?.to_string();

    let mut base = Tree::default();
    let mut packages = Vec::new();
    let pins = deb::pins(&std::fs::read_to_string(root.join("xtask/image-packages.txt"))?)?;
    for pin in pins {
        let bytes = deb::fetch(&pin, &deb::cache(&root))?;
        packages.push(deb::unpack(pin, &bytes, &mut base, keep)?);
    }
    for package in &packages {
        base.insert(
            &format!("var/lib/dpkg/status.d/{}", package.pin.name),
            Node::File(package.control.clone().into_bytes()),
            0o644,
        );
    }
    base.insert("etc/ssl/certs/ca-certificates.crt", Node::File(ca_bundle(&base)?), 0o644);
    // Root for the node (mounts need it), and distroless's nonroot for anyone
    // who runs the image without privileges.
    let etc: [(&str, &str); 3] = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
        ),
        ("etc/group", "root:x:0:\nnonroot:x:65532:\n"),
        ("etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n"),
    ];
    for (path, text) in etc {
        base.insert(path, Node::File(text.as_bytes().to_vec()), 0o644);
    }
    base.insert("root", Node::Dir, 0o700);
    base.insert_owned("home/nonroot", Node::Dir, 0o700, 65532);
    base.insert("tmp", Node::Dir, 0o1777);

    let crates = sbom::crates(&inputs.features)?;
    let document =
        sbom::document(REPOSITORY, &inputs.tag(), &inputs.revision, &created, &crates, &packages);
    let document = serde_json::to_vec_pretty(&canonical(document))?;
    let mut app = Tree::default();
    let binary = std::fs::read(&inputs.binary)
        .with_context(|| format!("read the binary {}", inputs.binary.display()))?;
    app.insert("sscsi", Node::File(binary), 0o755);
    app.insert("usr/share/sscsi/sbom.spdx.json", Node::File(document.clone()), 0o644);

    let mut blobs = Tree::default();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    let (mut compressed, mut uncompressed) = (0, 0);
    for layer in [&base, &app] {
        let tar = layer.tar(mtime)?;
        diff_ids.push(format!("sha256:{}", hex::encode(Sha256::digest(&tar))));
        uncompressed += tar.len() as u64;
        let gz = gzip(&tar)?;
        compressed += gz.len() as u64;
        layers.push(add_blob(&mut blobs, MediaType::ImageLayerGzip, gz)?);
    }

    let labels: HashMap<String, String> = [
        ("org.opencontainers.image.title", REPOSITORY.to_owned()),
        (
            "org.opencontainers.image.description",
            "The Kubernetes Secrets Store CSI driver as one Rust binary".into(),
        ),
        ("org.opencontainers.image.version", inputs.tag()),
        ("org.opencontainers.image.revision", inputs.revision.clone()),
        ("org.opencontainers.image.source", "https://github.com/sscsi/sscsi".into()),
        ("org.opencontainers.image.licenses", "Apache-2.0".into()),
        ("org.opencontainers.image.created", created.clone()),
        ("io.sscsi.features", inputs.features.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .created(created.clone())
        .config(
            ConfigBuilder::default()
                .entrypoint(vec!["/sscsi".to_owned()])
                .cmd(vec!["node".to_owned()])
                .env(vec![
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
                ])
                .working_dir("/")
                .labels(labels.clone())
                .build()?,
        )
        .rootfs(RootFsBuilder::default().typ("layers").diff_ids(diff_ids).build()?)
        .history(vec![
            HistoryBuilder::default()
                .created(created.clone())
                .created_by("cargo xtask image: Debian packages from xtask/image-packages.txt")
                .build()?,
            HistoryBuilder::default()
                .created(created.clone())
                .created_by(format!("cargo xtask image: /sscsi (features: {})", inputs.features))
                .build()?,
        ])
        .build()?;
    let config = add_blob(&mut blobs, MediaType::ImageConfig, json_bytes(&config)?)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config.clone())
        .layers(layers.clone())
        .annotations(HashMap::from([(
            "org.opencontainers.image.created".to_owned(),
            created.clone(),
        )]))
        .build()?;
    let mut manifest = add_blob(&mut blobs, MediaType::ImageManifest, json_bytes(&manifest)?)?;
    let tag = inputs.tag();
    manifest.set_annotations(Some(HashMap::from([
        ("org.opencontainers.image.ref.name".to_owned(), tag.clone()),
        ("io.containerd.image.name".to_owned(), format!("docker.io/library/{REPOSITORY}:{tag}")),
    ])));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest.clone()])
        .build()?;
    let blob_path = |d: &Descriptor| format!("blobs/sha256/{}", d.digest().digest());
    let docker = json!([{
        "Config": blob_path(&config),
        "RepoTags": [format!("{REPOSITORY}:{tag}")],
        "Layers": layers.iter().map(blob_path).collect::<Vec<_>>(),
    }]);
    let mut archive = blobs;
    archive.insert("oci-layout", Node::File(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()), 0o644);
    archive.insert("index.json", Node::File(json_bytes(&index)?), 0o644);
    archive.insert("manifest.json", Node::File(json_bytes(&docker)?), 0o644);

    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_atomically(out, &archive.tar(mtime)?)?;
    write_atomically(&out.with_extension("spdx.json"), &document)?;
    Ok(Built {
        archive: out.to_owned(),
        manifest_digest: manifest.digest().to_string(),
        compressed,
        uncompressed,
    })
}

/// What of a package the image keeps: no manuals, no docs but the copyright
/// files, no programs (the image has no shell to run them), and no iconv
/// modules (nothing in sscsi calls iconv).
fn keep(path: &str) -> bool {
    let dropped = ["usr/share/man/", "usr/share/info/", "usr/share/lintian/", "usr/sbin/"];
    if dropped.iter().any(|p| path.starts_with(p)) || path.contains("/gconv") {
        return false;
    }
    match path.strip_prefix("usr/share/doc/") {
        Some(rest) => !rest.contains('/') || rest.ends_with("/copyright"),
        None => true,
    }
}

/// /etc/ssl/certs/ca-certificates.crt as update-ca-certificates makes it with
/// Debian's default configuration: every Mozilla certificate, in name order.
fn ca_bundle(base: &Tree) -> anyhow::Result<Vec<u8>> {
    let mut bundle = Vec::new();
    for (path, node) in base.under("usr/share/ca-certificates/mozilla/") {
        if let Node::File(pem) = node
            && path.ends_with(".crt")
        {
            bundle.extend_from_slice(pem);
            if !pem.ends_with(b"\n") {
                bundle.push(b'\n');
            }
        }
    }
    if bundle.is_empty() {
        bail!("ca-certificates holds no usr/share/ca-certificates/mozilla/*.crt");
    }
    Ok(bundle)
}

fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    // No file name and mtime 0 in the header: the bytes depend on the input alone.
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::with_capacity(bytes.len() / 2), flate2::Compression::default());
    encoder.write_all(bytes)?;
    encoder.finish()
}

fn add_blob(blobs: &mut Tree, media_type: MediaType, bytes: Vec<u8>) -> anyhow::Result<Descriptor> {
    let hex = hex::encode(Sha256::digest(&bytes));
    let descriptor = DescriptorBuilder::default()
        .media_type(media_type)
        .digest(hex.parse::<Sha256Digest>()?)
        .size(bytes.len() as u64)
        .build()?;
    blobs.insert(&format!("blobs/sha256/{hex}"), Node::File(bytes), 0o644);
    Ok(descriptor)
}

/// JSON with every object's keys sorted, whatever map type serde_json uses.
fn json_bytes(value: &impl serde::Serialize) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(&canonical(serde_json::to_value(value)?))?)
}

fn canonical(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, canonical(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes).with_context(|| format!("write {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests;
