//! The fixed formats. Every writer appends to one buffer that becomes the
//! file's [`SecretBytes`], so the bytes are not copied again on the way.

use std::fmt::Write as _;

use serde_json::Value;
use sscsi_core::SecretBytes;
use zeroize::Zeroize;

use crate::{Entries, EntriesFormat, Objects, object};

/// A shell variable name, as `.env` readers (docker compose, python-dotenv,
/// `set -a; . ./file`) all take it.
pub(crate) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An object's bytes as text; secrets of these formats are text.
fn text<'a>(objects: &Objects<'a>, name: &str) -> Result<&'a str, String> {
    std::str::from_utf8(object(objects, name)?.expose())
        .map_err(|_| format!("object {name:?} is not UTF-8 text"))
}

/// A JSON object, else a YAML mapping: the generic form of the GCP
/// provider's `extractJSONKey`/`extractYAMLKey`. The parsers' messages are
/// not passed on, as they may quote the secret.
fn mapping(objects: &Objects<'_>, name: &str) -> Result<serde_json::Map<String, Value>, String> {
    let text = text(objects, name)?;
    let value = serde_json::from_str::<Value>(text)
        .ok()
        .or_else(|| serde_saphyr::from_str::<Value>(text).ok());
    match value {
        Some(Value::Object(map)) => Ok(map),
        _ => Err(format!("object {name:?} is not a JSON or YAML object")),
    }
}

/// A top-level value as a line of text: strings as they are, numbers and
/// booleans as JSON writes them, null as empty; nested values are refused.
fn scalar(object: &str, key: &str, value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Bool(_) | Value::Number(_) => Ok(value.to_string()),
        Value::Array(_) | Value::Object(_) => {
            Err(format!("key {key:?} of object {object:?} is not a string, number or boolean"))
        }
    }
}

/// Name → value, sorted by name.
fn pairs(source: &Entries, objects: &Objects<'_>) -> Result<Vec<(String, String)>, String> {
    match source {
        Entries::Named(named) => named
            .iter()
            .map(|(name, object)| Ok((name.clone(), text(objects, object)?.to_owned())))
            .collect(),
        Entries::From(object) => mapping(objects, object)?
            .iter()
            .map(|(k, v)| Ok((k.clone(), scalar(object, k, v)?)))
            .collect(),
    }
}

pub(crate) fn entries(
    format: EntriesFormat,
    source: &Entries,
    objects: &Objects<'_>,
) -> Result<SecretBytes, String> {
    let mut pairs = pairs(source, objects)?;
    pairs.sort();
    let mut out = String::new();
    match format {
        EntriesFormat::Env => {
            for (name, value) in &pairs {
                if !is_env_name(name) {
                    return Err(format!("key {name:?} is not a variable name"));
                }
                match env_value(name, value) {
                    Ok(value) => {
                        let _ = writeln!(out, "{name}={value}");
                    }
                    Err(e) => {
                        out.zeroize();
                        return Err(e);
                    }
                }
            }
        }
        EntriesFormat::Properties => {
            for (key, value) in &pairs {
                let _ = writeln!(
                    out,
                    "{}={}",
                    properties_escape(key, true),
                    properties_escape(value, false)
                );
            }
        }
        EntriesFormat::Json => {
            let map: serde_json::Map<String, Value> =
                pairs.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
            out = serde_json::to_string_pretty(&map).map_err(|e| e.to_string())? + "\n";
            for value in map.into_iter().map(|(_, v)| v) {
                if let Value::String(mut s) = value {
                    s.zeroize();
                }
            }
        }
        EntriesFormat::Yaml => {
            // Double-quoted scalars with JSON's escapes: YAML 1.2 reads
            // them back exactly, whatever the value holds.
            for (key, value) in &pairs {
                let _ = writeln!(out, "{}: {}", yaml_string(key), yaml_string(value));
            }
        }
    }
    // The copies of the values go as they came: wiped.
    for (_, value) in &mut pairs {
        value.zeroize();
    }
    Ok(SecretBytes::new(out.into_bytes()))
}

/// Bare when it needs no quoting; else in single quotes, which sh, docker
/// compose and python-dotenv all read back literally as long as the value
/// holds no `'` and no `\`. Such a value has no spelling they agree on, so
/// it is refused rather than written for one of them.
fn env_value(name: &str, value: &str) -> Result<String, String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./:@%+,-=".contains(c);
    if value.chars().all(plain) {
        return Ok(value.to_owned());
    }
    if value.contains(['\'', '\\']) {
        return Err(format!(
            "the value of {name:?} holds ' or \\, which .env readers quote differently: \
             build this file with format template"
        ));
    }
    Ok(format!("'{value}'"))
}

/// A double-quoted YAML scalar: JSON's escapes, and the line breaks YAML
/// 1.1 readers see in U+0085, U+2028 and U+2029 escaped too.
fn yaml_string(text: &str) -> String {
    Value::from(text)
        .to_string()
        .replace('\u{85}', "\\u0085")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// `java.util.Properties.store`'s escaping: `\`, `=`, `:`, `#`, `!` and
/// (in keys, or leading in values) spaces; `\t \n \r \f`; every other
/// character outside printable ASCII as `\uXXXX` (UTF-16).
fn properties_escape(text: &str, key: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.chars().enumerate() {
        match c {
            ' ' if key || i == 0 => out.push_str("\\ "),
            '\\' | '=' | ':' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04X}");
                }
            }
        }
    }
    out
}

pub(crate) fn extract(objects: &Objects<'_>, name: &str, key: &str) -> Result<SecretBytes, String> {
    let map = mapping(objects, name)?;
    match map.get(key) {
        Some(Value::String(value)) => Ok(SecretBytes::new(value.clone().into_bytes())),
        Some(_) => Err(format!("key {key:?} of object {name:?} is not a string")),
        None => Err(format!("object {name:?} has no key {key:?}")),
    }
}

/// Every `CERTIFICATE` block of `names`, each once, in chain order: the one
/// certificate no other names as its issuer first, then its issuer, and so
/// on. Anything that is not one chain is refused, naming what is wrong.
fn chain(objects: &Objects<'_>, names: &[String]) -> Result<Vec<Vec<u8>>, String> {
    let mut ders: Vec<Vec<u8>> = Vec::new();
    for name in names {
        let blocks = pem::parse_many(object(objects, name)?.expose())
            .map_err(|_| format!("object {name:?} is not PEM"))?;
        let certs: Vec<Vec<u8>> = blocks
            .into_iter()
            .filter(|b| b.tag() == "CERTIFICATE")
            .map(pem::Pem::into_contents)
            .collect();
        if certs.is_empty() {
            return Err(format!("object {name:?} holds no CERTIFICATE"));
        }
        for der in certs {
            if !ders.contains(&der) {
                ders.push(der);
            }
        }
    }
    let names: Vec<(Vec<u8>, Vec<u8>)> = ders
        .iter()
        .map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der)
                .map_err(|_| "a CERTIFICATE block is not an X.509 certificate".to_owned())?;
            Ok((cert.subject().as_raw().to_vec(), cert.issuer().as_raw().to_vec()))
        })
        .collect::<Result<_, String>>()?;
    let issued_by = |i: usize, j: usize| i != j && names[i].1 == names[j].0;
    let leaves: Vec<usize> =
        (0..ders.len()).filter(|&i| !(0..ders.len()).any(|j| issued_by(j, i))).collect();
    let [leaf] = leaves[..] else {
        return Err(format!(
            "the certificates are not one chain ({} of them are issuers of none of the others)",
            leaves.len()
        ));
    };
    let mut order = vec![leaf];
    while let Some(next) = (0..ders.len()).find(|&j| issued_by(*order.last().unwrap_or(&leaf), j)) {
        if order.contains(&next) {
            break;
        }
        order.push(next);
    }
    if order.len() != ders.len() {
        return Err("the certificates are not one chain (some issue none of the others)".into());
    }
    Ok(order.into_iter().map(|i| ders[i].clone()).collect())
}

pub(crate) fn pem_bundle(objects: &Objects<'_>, names: &[String]) -> Result<SecretBytes, String> {
    let blocks: Vec<pem::Pem> =
        chain(objects, names)?.into_iter().map(|der| pem::Pem::new("CERTIFICATE", der)).collect();
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    Ok(SecretBytes::new(pem::encode_many_config(&blocks, config).into_bytes()))
}

pub(crate) fn pkcs12(
    objects: &Objects<'_>,
    path: &str,
    key: &str,
    certificates: &[String],
    password: Option<&str>,
) -> Result<SecretBytes, String> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
    let blocks = pem::parse_many(object(objects, key)?.expose())
        .map_err(|_| format!("object {key:?} is not PEM"))?;
    let Some(block) = blocks.iter().find(|b| b.tag() == "PRIVATE KEY") else {
        return Err(format!("object {key:?} holds no PKCS#8 \"PRIVATE KEY\""));
    };
    let private = PrivateKey::from_der(block.contents())
        .map_err(|_| format!("object {key:?}: the PRIVATE KEY is not PKCS#8"))?;
    let certs = chain(objects, certificates)?
        .iter()
        .map(|der| {
            Certificate::from_der(der).map_err(|_| "a certificate cannot be packed".to_owned())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let password = match password {
        Some(name) => text(objects, name)?.trim_end_matches(['\r', '\n']),
        None => "",
    };
    let alias = path.rsplit('/').next().unwrap_or(path);
    let mut store = KeyStore::new();
    store.add_entry(
        alias,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(alias, private, certs)),
    );
    let archive =
        store.writer(password).write().map_err(|e| format!("cannot write PKCS#12: {e}"))?;
    Ok(SecretBytes::new(archive))
}
