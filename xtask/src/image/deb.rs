//! The pinned Debian packages of the image (xtask/image-packages.txt): fetched
//! once into target/image/debs, checked against their SHA-256, and read as
//! dpkg would unpack them (the `data.tar` member), with their control file.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use super::tree::{Node, Tree};

const MIRROR: &str = "deb.debian.org";

/// One line of image-packages.txt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub name: String,
    pub version: String,
    pub sha256: String,
    /// Path under http://deb.debian.org/, percent-encoded as in the pool.
    pub path: String,
}

pub fn pins(text: &str) -> anyhow::Result<Vec<Pin>> {
    let mut pins = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, version, sha256, path] = fields[..] else {
            bail!("image-packages.txt line {}: want `package version sha256 path`", n + 1);
        };
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("image-packages.txt line {}: {name}: the SHA-256 is not 64 hex digits", n + 1);
        }
        pins.push(Pin {
            name: name.into(),
            version: version.into(),
            sha256: sha256.to_ascii_lowercase(),
            path: path.into(),
        });
    }
    Ok(pins)
}

/// A package as the image holds it.
#[derive(Debug)]
pub struct Package {
    pub pin: Pin,
    /// The control file (Package, Version, Architecture, ...), written to
    /// /var/lib/dpkg/status.d/<name> as distroless does, so scanners see it.
    pub control: String,
}

impl Package {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.control.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
    }
}

/// The `.deb` of `pin`, from the cache or the mirror; fails unless its
/// SHA-256 is the pinned one.
pub fn fetch(pin: &Pin, cache: &Path) -> anyhow::Result<Vec<u8>> {
    let file = cache.join(format!("{}_{}.deb", pin.name, pin.version.replace(':', "%3a")));
    if let Ok(bytes) = std::fs::read(&file)
        && hex::encode(Sha256::digest(&bytes)) == pin.sha256
    {
        return Ok(bytes);
    }
    let bytes = download(&pin.path)
        .with_context(|| format!("download {} {} from {MIRROR}", pin.name, pin.version))?;
    let got = hex::encode(Sha256::digest(&bytes));
    if got != pin.sha256 {
        bail!(
            "{} {}: http://{MIRROR}/{} has SHA-256 {got}, not the pinned {}",
            pin.name,
            pin.version,
            pin.path,
            pin.sha256
        );
    }
    std::fs::create_dir_all(cache)?;
    let partial = file.with_extension("partial");
    std::fs::write(&partial, &bytes)?;
    std::fs::rename(&partial, &file)?;
    Ok(bytes)
}

/// Plain HTTP: the pinned digest, not the transport, makes the bytes trusted,
/// as apt's signed indexes do.
fn download(path: &str) -> anyhow::Result<Vec<u8>> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
        let uri: http::Uri = format!("http://{MIRROR}/{path}").parse()?;
        let response = client.get(uri.clone()).await.with_context(|| format!("GET {uri}"))?;
        if !response.status().is_success() {
            bail!(
                "GET {uri}: {} (the pin may be older than the mirror; see image-packages.txt)",
                response.status()
            );
        }
        Ok(response.into_body().collect().await?.to_bytes().to_vec())
    })
}

/// Unpacks `deb` into `tree` (leaving out what `keep` refuses) and returns its
/// control file.
pub fn unpack(
    pin: Pin,
    deb: &[u8],
    tree: &mut Tree,
    keep: impl Fn(&str) -> bool,
) -> anyhow::Result<Package> {
    let mut archive = ar::Archive::new(deb);
    let mut control = None;
    let mut unpacked = false;
    while let Some(member) = archive.next_entry() {
        let mut member = member.with_context(|| format!("{}: not an ar archive", pin.name))?;
        let name = String::from_utf8_lossy(member.header().identifier()).into_owned();
        let mut bytes = Vec::new();
        member.read_to_end(&mut bytes)?;
        if let Some(kind) = name.strip_prefix("control.tar") {
            let mut tar = tar::Archive::new(decompress(kind, &bytes, &pin)?);
            for entry in tar.entries()? {
                let mut entry = entry?;
                if entry.path()?.to_string_lossy().trim_start_matches("./") == "control" {
                    let mut text = String::new();
                    entry.read_to_string(&mut text)?;
                    control = Some(text);
                }
            }
        } else if let Some(kind) = name.strip_prefix("data.tar") {
            let mut tar = tar::Archive::new(decompress(kind, &bytes, &pin)?);
            for entry in tar.entries()? {
                let mut entry = entry?;
                let path = entry.path()?.to_string_lossy().trim_start_matches("./").to_owned();
                let path = path.trim_end_matches('/');
                if path.is_empty() {
                    continue;
                }
                let mode = entry.header().mode()? & 0o7777;
                let node = match entry.header().entry_type() {
                    tar::EntryType::Directory => Node::Dir,
                    tar::EntryType::Symlink => Node::Symlink(
                        entry.link_name()?.context("a symlink without a target")?.into_owned(),
                    ),
                    tar::EntryType::Regular => {
                        let mut bytes = Vec::new();
                        entry.read_to_end(&mut bytes)?;
                        Node::File(bytes)
                    }
                    other => bail!("{}: {path}: unexpected tar entry {other:?}", pin.name),
                };
                if keep(path) {
                    tree.insert(path, node, mode);
                }
            }
            unpacked = true;
        }
    }
    if !unpacked {
        bail!("{}: no data.tar member", pin.name);
    }
    Ok(Package { control: control.with_context(|| format!("{}: no control file", pin.name))?, pin })
}

fn decompress<'a>(kind: &str, bytes: &'a [u8], pin: &Pin) -> anyhow::Result<Box<dyn Read + 'a>> {
    Ok(match kind {
        "" => Box::new(bytes),
        ".xz" => Box::new(liblzma::read::XzDecoder::new(bytes)),
        ".gz" => Box::new(flate2::read::GzDecoder::new(bytes)),
        other => bail!("{}: unsupported compression `tar{other}`", pin.name),
    })
}

/// target/image/debs under the workspace.
pub fn cache(root: &Path) -> PathBuf {
    root.join("target/image/debs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_read_the_committed_file() {
        let pins = pins(include_str!("../../image-packages.txt")).unwrap();
        let names: Vec<&str> = pins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["libc6", "libgcc-s1", "ca-certificates"]);
        assert!(pins.iter().all(|p| p.path.ends_with(".deb")));
    }

    #[test]
    fn a_bad_pin_names_its_line() {
        let err = pins("# c\nlibc6 1 abc path.deb\n").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("libc6"), "{err}");
        let err = pins("libc6 1\n").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
