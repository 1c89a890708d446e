//! Files built by sscsi from the objects a SecretProviderClass mounts, for
//! every provider: `.env` and `.properties` files, JSON and YAML documents,
//! PEM bundles in chain order, PKCS#12 keystores, one key out of a JSON or
//! YAML object, and templates.
//!
//! A class declares them in one parameter, [`FILES_PARAMETER`], under a
//! prefix no provider reads ([`RESERVED_PREFIX`]); the engine takes it out
//! before the provider is called, so the same class still mounts with the
//! upstream driver (whose providers ignore parameters they do not know),
//! without the built files.
//!
//! ```yaml
//! sscsi.io/files: |
//!   - path: db.env            # a file in the volume, beside the provider's
//!     format: env
//!     from: db-credentials    # a JSON (or YAML) object: one line per key
//!     mode: "0640"
//!   - path: config.json
//!     format: json
//!     entries: {user: db/username, password: db/password}
//!   - path: app.conf
//!     format: template
//!     template: |
//!       url=postgres://{{ object("db/username") }}@db:5432/app
//! ```
//!
//! Objects are named by the path the provider gave them in the volume. A
//! file is built from the fetched bytes only: a template sees that mount's
//! objects and nothing else (no file, network or environment), and its work
//! and output are bounded ([`template`]).

mod formats;
pub mod template;

use std::collections::BTreeMap;

use serde::Deserialize;
use sscsi_core::path::validate_relative_path;
use sscsi_core::{SecretBytes, SecretFile};

pub use sscsi_core::RESERVED_PREFIX;
/// The built files of a class: a YAML list of [`FileSpec`]s.
pub const FILES_PARAMETER: &str = "sscsi.io/files";

/// A built file that cannot be declared or built. Names the parameter, the
/// file's index and path; never holds a secret byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilesError {
    #[error("parameter {FILES_PARAMETER:?}: {0}")]
    Parameter(String),
    #[error("parameter {FILES_PARAMETER:?}: files[{index}] ({path:?}): {message}")]
    File { index: usize, path: String, message: String },
}

/// One built file, as declared.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSpec {
    pub path: String,
    pub mode: u32,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `NAME=value` lines, `key=value` lines, a JSON or a YAML mapping.
    Entries {
        format: EntriesFormat,
        source: Entries,
    },
    /// The value of one top-level key of a JSON or YAML object, as bytes.
    Extract {
        object: String,
        key: String,
    },
    /// Every certificate of `objects`, leaf first, then each issuer.
    PemBundle {
        objects: Vec<String>,
    },
    /// A PKCS#12 archive of a PKCS#8 key and its chain.
    Pkcs12 {
        key: String,
        certificates: Vec<String>,
        password: Option<String>,
    },
    Template {
        text: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntriesFormat {
    Env,
    Properties,
    Json,
    Yaml,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Entries {
    /// Name → the object whose bytes are the value.
    Named(BTreeMap<String, String>),
    /// The top-level keys of one JSON or YAML object.
    From(String),
}

/// What a class writes; every field optional, so each format can say which
/// of them it takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    path: String,
    format: String,
    mode: Option<String>,
    entries: Option<BTreeMap<String, String>>,
    from: Option<String>,
    object: Option<String>,
    key: Option<String>,
    objects: Option<Vec<String>>,
    certificates: Option<Vec<String>>,
    password: Option<String>,
    template: Option<String>,
}

impl Raw {
    /// The fields present, by name.
    fn present(&self) -> Vec<&'static str> {
        [
            ("entries", self.entries.is_some()),
            ("from", self.from.is_some()),
            ("object", self.object.is_some()),
            ("key", self.key.is_some()),
            ("objects", self.objects.is_some()),
            ("certificates", self.certificates.is_some()),
            ("password", self.password.is_some()),
            ("template", self.template.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

/// The built files a class declares, or none without the parameter.
/// `default_mode` is the mode of a file that sets none.
pub fn parse(
    parameters: &BTreeMap<String, String>,
    default_mode: u32,
) -> Result<Vec<FileSpec>, FilesError> {
    let Some(text) = parameters.get(FILES_PARAMETER) else {
        return Ok(Vec::new());
    };
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let raws: Vec<Raw> = serde_saphyr::from_str(text)
        .map_err(|e| FilesError::Parameter(format!("invalid YAML: {e}")))?;
    let mut paths = BTreeMap::new();
    let mut specs = Vec::with_capacity(raws.len());
    for (index, raw) in raws.into_iter().enumerate() {
        let path = raw.path.clone();
        let error = |message: String| FilesError::File { index, path: path.clone(), message };
        validate_relative_path(&raw.path).map_err(|e| error(e.to_string()))?;
        if let Some(first) = paths.insert(raw.path.clone(), index) {
            return Err(error(format!("files[{first}] has the same path")));
        }
        specs.push(spec(raw, default_mode).map_err(error)?);
    }
    Ok(specs)
}

fn spec(raw: Raw, default_mode: u32) -> Result<FileSpec, String> {
    let mode = match &raw.mode {
        Some(mode) => sscsi_core::params::parse_octal_mode("mode", mode).map_err(|e| e.message)?,
        None => default_mode,
    };
    let format = raw.format.as_str();
    let takes: &[&str] = match format {
        "env" | "properties" => &["entries", "from"],
        "json" | "yaml" => &["entries"],
        "extract" => &["object", "key"],
        "pem-bundle" => &["objects"],
        "pkcs12" => &["key", "certificates", "password"],
        "template" => &["template"],
        other => {
            return Err(format!(
                "format {other:?} is not one of env, properties, json, yaml, extract, pem-bundle, pkcs12, template"
            ));
        }
    };
    if let Some(field) = raw.present().into_iter().find(|f| !takes.contains(f)) {
        return Err(format!("{field:?} does not apply to format {format:?} (it takes {takes:?})"));
    }
    let missing = |field: &str| format!("format {format:?} needs {field:?}");
    let kind = match format {
        "env" | "properties" | "json" | "yaml" => {
            let format = match format {
                "env" => EntriesFormat::Env,
                "properties" => EntriesFormat::Properties,
                "json" => EntriesFormat::Json,
                _ => EntriesFormat::Yaml,
            };
            let source = match (raw.entries, raw.from) {
                (Some(_), Some(_)) => {
                    return Err("\"entries\" and \"from\": one or the other".into());
                }
                (Some(entries), None) => {
                    if format == EntriesFormat::Env
                        && let Some(name) = entries.keys().find(|n| !formats::is_env_name(n))
                    {
                        return Err(format!("entry {name:?} is not a variable name"));
                    }
                    Entries::Named(entries)
                }
                (None, Some(object)) => Entries::From(object),
                (None, None) => return Err(missing("entries")),
            };
            Kind::Entries { format, source }
        }
        "extract" => Kind::Extract {
            object: raw.object.ok_or_else(|| missing("object"))?,
            key: raw.key.ok_or_else(|| missing("key"))?,
        },
        "pem-bundle" => {
            let objects =
                raw.objects.filter(|o| !o.is_empty()).ok_or_else(|| missing("objects"))?;
            Kind::PemBundle { objects }
        }
        "pkcs12" => Kind::Pkcs12 {
            key: raw.key.ok_or_else(|| missing("key"))?,
            certificates: raw
                .certificates
                .filter(|c| !c.is_empty())
                .ok_or_else(|| missing("certificates"))?,
            password: raw.password,
        },
        _ => {
            let text = raw.template.ok_or_else(|| missing("template"))?;
            template::check(&raw.path, &text)?;
            Kind::Template { text }
        }
    };
    Ok(FileSpec { path: raw.path, mode, kind })
}

/// The built files, from the files the provider returned (`mounted`, by
/// path). Fails on the first file that cannot be built, naming it; nothing
/// is written then, so a failed rotation keeps the previous files.
pub fn build(specs: &[FileSpec], mounted: &[SecretFile]) -> Result<Vec<SecretFile>, FilesError> {
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let objects: BTreeMap<&str, &SecretBytes> =
        mounted.iter().map(|f| (f.path.as_str(), &f.contents)).collect();
    specs
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            let contents = build_one(spec, &objects).map_err(|message| FilesError::File {
                index,
                path: spec.path.clone(),
                message,
            })?;
            Ok(SecretFile { path: spec.path.clone(), mode: spec.mode, contents })
        })
        .collect()
}

/// The mounted objects by path.
pub(crate) type Objects<'a> = BTreeMap<&'a str, &'a SecretBytes>;

/// The bytes of `name`, or an error listing what the mount holds.
pub(crate) fn object<'a>(objects: &Objects<'a>, name: &str) -> Result<&'a SecretBytes, String> {
    objects.get(name).copied().ok_or_else(|| {
        let names: Vec<&str> = objects.keys().copied().collect();
        format!("object {name:?} is not mounted by this class (it mounts {names:?})")
    })
}

fn build_one(spec: &FileSpec, objects: &Objects<'_>) -> Result<SecretBytes, String> {
    match &spec.kind {
        Kind::Entries { format, source } => formats::entries(*format, source, objects),
        Kind::Extract { object, key } => formats::extract(objects, object, key),
        Kind::PemBundle { objects: names } => formats::pem_bundle(objects, names),
        Kind::Pkcs12 { key, certificates, password } => {
            formats::pkcs12(objects, &spec.path, key, certificates, password.as_deref())
        }
        Kind::Template { text } => template::render(&spec.path, text, objects),
    }
}

#[cfg(test)]
mod tests;
