//! The `objects` parameter of an `aws` SecretProviderClass, read as ASCP
//! reads it: `sigs.k8s.io/yaml` into Go structs whose fields are all strings
//! ([`Dialect::SigsYaml`]): YAML 1.1 typing first, so an unquoted
//! `objectVersion: 010` is "8", `yes` is "true" and `filePermission: 0600` is
//! "384" (which ASCP's permission check then refuses, as here); field names
//! match case-insensitively, unknown fields are ignored; every entry is
//! validated with ASCP's rules and error messages.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use sscsi_core::goyaml::{self, Dialect};

/// Where an object lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretType {
    SsmParameter,
    SecretsManager,
}

impl SecretType {
    /// `objectType` values and ARN services; `ssm` only counts as an ARN service.
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "secretsmanager" => Some(Self::SecretsManager),
            "ssmparameter" | "ssm" => Some(Self::SsmParameter),
            _ => None,
        }
    }
}

/// One entry of `objects` (ASCP's `SecretDescriptor`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Descriptor {
    pub object_name: String,
    pub object_alias: String,
    pub object_version: String,
    pub object_version_label: String,
    pub object_type: String,
    pub file_permission: String,
    pub jmes_path: Vec<JmesPathEntry>,
    pub failover_object: FailoverObject,
    /// The `pathTranslation` character; `None` when translation is off.
    #[serde(skip)]
    translate: Option<char>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JmesPathEntry {
    pub path: String,
    pub object_alias: String,
    pub file_permission: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FailoverObject {
    pub object_name: String,
    pub object_version: String,
    pub object_version_label: String,
}

/// A rejected `objects` or `pathTranslation`, with ASCP's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DescriptorError(pub String);

macro_rules! fail {
    ($($arg:tt)*) => { return Err(DescriptorError(format!($($arg)*))) };
}

impl Descriptor {
    /// The file the object is written to: the alias, else the name, with
    /// `/` translated (or, with translation off, leading `/` stripped).
    pub fn file_name(&self) -> String {
        let name =
            if self.object_alias.is_empty() { &self.object_name } else { &self.object_alias };
        match self.translate {
            Some(c) => name.replace('/', &c.to_string()),
            None => name.trim_start_matches('/').to_owned(),
        }
    }

    /// `objectType`, else the service of the ARN in `objectName`.
    fn object_type_name(&self) -> &str {
        if self.object_type.is_empty() {
            self.object_name.split(':').nth(2).unwrap_or_default()
        } else {
            &self.object_type
        }
    }

    pub fn secret_type(&self) -> SecretType {
        SecretType::from_name(self.object_type_name()).unwrap_or(SecretType::SsmParameter)
    }

    /// Mode bits from `filePermission`, else `default`.
    pub fn file_mode(&self, default: u32) -> u32 {
        mode(&self.file_permission, default)
    }

    /// The descriptor a `jmesPath` entry writes: its alias, the parent's type,
    /// its own permission else the parent's.
    pub fn jmes_descriptor(&self, entry: &JmesPathEntry) -> Descriptor {
        let file_permission = if entry.file_permission.is_empty() {
            &self.file_permission
        } else {
            &entry.file_permission
        };
        Descriptor {
            object_alias: entry.object_alias.clone(),
            object_type: self.object_type_name().to_owned(),
            file_permission: file_permission.clone(),
            translate: self.translate,
            ..Default::default()
        }
    }

    /// The name, version and label to read in the primary region, or in the
    /// failover region when `failover` (falling back to the primary's).
    pub fn name_in(&self, failover: bool) -> &str {
        pick(failover, &self.failover_object.object_name, &self.object_name)
    }

    pub fn version_in(&self, failover: bool) -> &str {
        pick(failover, &self.failover_object.object_version, &self.object_version)
    }

    pub fn version_label_in(&self, failover: bool) -> &str {
        pick(failover, &self.failover_object.object_version_label, &self.object_version_label)
    }

    fn validate(&self, regions: &[String]) -> Result<(), DescriptorError> {
        let name = &self.object_name;
        if name.is_empty() {
            fail!("Object name must be specified");
        }
        validate_object_name(name, &self.object_type, &regions[0])?;
        let ssm = self.secret_type() == SecretType::SsmParameter;
        if ssm && !self.object_version.is_empty() && !self.object_version_label.is_empty() {
            fail!(
                "ssm parameters can not specify both objectVersion and objectVersionLabel: {name}"
            );
        }
        if has_parent_segment(&self.file_name()) {
            fail!("path can not contain ../: {name}");
        }
        validate_file_permission(&self.file_permission)?;
        for entry in &self.jmes_path {
            if entry.path.is_empty() {
                fail!("Path must be specified for JMES object");
            }
            if entry.object_alias.is_empty() {
                fail!("Object alias must be specified for JMES object");
            }
            validate_file_permission(&entry.file_permission)?;
        }
        let failover = &self.failover_object;
        if !failover.object_name.is_empty() {
            if self.object_alias.is_empty() {
                fail!("object alias must be specified for objects with failover entries: {name}");
            }
            if regions.len() < 2 {
                fail!("failover object allowed only when failover region is defined: {name}");
            }
            validate_object_name(&failover.object_name, &self.object_type, &regions[1])?;
            if ssm
                && !failover.object_version.is_empty()
                && !failover.object_version_label.is_empty()
            {
                fail!(
                    "ssm parameters can not specify both objectVersion and objectVersionLabel: {name}"
                );
            }
            if failover.object_version != self.object_version {
                fail!("object versions must match between primary and failover regions: {name}");
            }
        }
        Ok(())
    }
}

fn pick<'a>(failover: bool, failover_value: &'a str, primary: &'a str) -> &'a str {
    if failover && !failover_value.is_empty() { failover_value } else { primary }
}

fn mode(permission: &str, default: u32) -> u32 {
    if permission.is_empty() {
        default
    } else {
        u32::from_str_radix(permission, 8).unwrap_or(default)
    }
}

/// ASCP's `(/\.\./)|(^\.\./)|(/\.\.$)` on the file name.
fn has_parent_segment(name: &str) -> bool {
    name.contains("/../") || name.starts_with("../") || name.ends_with("/..")
}

/// Exactly four octal digits, or nothing.
fn validate_file_permission(permission: &str) -> Result<(), DescriptorError> {
    if permission.is_empty()
        || (permission.len() == 4 && permission.bytes().all(|b| (b'0'..=b'7').contains(&b)))
    {
        return Ok(());
    }
    fail!("Invalid File Permission: {permission}")
}

/// The parts of an ARN, as Go's `arn.Parse` splits them.
struct Arn<'a> {
    service: &'a str,
    region: &'a str,
}

fn parse_arn(s: &str) -> Option<Arn<'_>> {
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    (parts.len() == 6 && parts[0] == "arn").then(|| Arn { service: parts[2], region: parts[3] })
}

fn validate_object_name(
    name: &str,
    object_type: &str,
    region: &str,
) -> Result<(), DescriptorError> {
    let arn = if name.starts_with("arn:") {
        match parse_arn(name) {
            Some(arn) => Some(arn),
            None => fail!("Invalid ARN format in object name: {name}"),
        }
    } else {
        None
    };
    // An empty region is one not known yet (`sscsi check`, offline): any matches.
    if arn.as_ref().is_some_and(|arn| !region.is_empty() && arn.region != region) {
        fail!("ARN region must match region {region}: {name}");
    }
    if object_type.is_empty() {
        match &arn {
            None => fail!("Must use objectType when a full ARN is not specified: {name}"),
            Some(arn) if SecretType::from_name(arn.service).is_none() => {
                fail!("Invalid service in ARN: {}", arn.service)
            }
            Some(_) => {}
        }
    } else {
        let Some(declared) = SecretType::from_name(object_type).filter(|_| object_type != "ssm")
        else {
            fail!("Invalid objectType: {object_type}")
        };
        if arn.as_ref().is_some_and(|arn| SecretType::from_name(arn.service) != Some(declared)) {
            fail!("objectType does not match ARN: {name}");
        }
    }
    Ok(())
}

/// Reads `pathTranslation`: default `_`, `False` (any case) turns it off,
/// otherwise exactly one character.
pub fn path_translation(value: Option<&str>) -> Result<Option<char>, DescriptorError> {
    match value.unwrap_or_default() {
        "" => Ok(Some('_')),
        v if v.eq_ignore_ascii_case("false") => Ok(None),
        v => {
            let mut chars = v.chars();
            match (chars.next(), chars.next()) {
                // Go counts bytes: a multi-byte character is more than one.
                (Some(c), None) if c.len_utf8() == 1 => Ok(Some(c)),
                _ => fail!("pathTranslation must be either 'False' or a single character string"),
            }
        }
    }
}

/// Parses and validates `objects`. `regions` holds the primary region and,
/// when set, the failover region.
pub fn parse_objects(
    objects: &str,
    translate: Option<char>,
    regions: &[String],
) -> Result<Vec<Descriptor>, DescriptorError> {
    // `[]*SecretDescriptor`: a null entry is a nil pointer, reported below.
    let entries: Vec<Option<Descriptor>> = goyaml::from_str(Dialect::SigsYaml, "objects", objects)
        .map_err(|e| {
            DescriptorError(format!("Failed to load SecretProviderClass: {}", e.message))
        })?;
    let mut descriptors = Vec::with_capacity(entries.len());
    // objectName -> (alias, label) of the entry first seen with it.
    let mut seen_names: HashMap<String, (String, String)> = HashMap::new();
    let mut seen_aliases: HashSet<String> = HashSet::new();
    for entry in entries {
        let Some(mut descriptor) = entry else {
            fail!("Empty descriptor entry in SecretProviderClass");
        };
        descriptor.translate = translate;
        descriptor.validate(regions)?;
        check_duplicates(&descriptor, &mut seen_names, &mut seen_aliases)?;
        descriptors.push(descriptor);
    }
    Ok(descriptors)
}

/// ASCP's duplicate rules: the same objectName twice is refused when the
/// entries cannot be told apart by alias or version label; aliases
/// (including jmesPath aliases) are unique.
fn check_duplicates(
    d: &Descriptor,
    seen_names: &mut HashMap<String, (String, String)>,
    seen_aliases: &mut HashSet<String>,
) -> Result<(), DescriptorError> {
    if let Some((alias, label)) = seen_names.get(&d.object_name) {
        let prefix = format!("found descriptor with duplicate object name {}", d.object_name);
        let (a, l) = (&d.object_alias, &d.object_version_label);
        let (has_a, has_l, had_a, had_l) =
            (!a.is_empty(), !l.is_empty(), !alias.is_empty(), !label.is_empty());
        if has_a && had_a && !has_l && !had_l && a == alias {
            fail!("{prefix}, duplicate object alias {a}, and no version label");
        }
        if !has_a && !had_a && has_l && had_l && l == label {
            fail!("{prefix}, no object alias, and duplicate version label {l}");
        }
        if has_a && had_a && has_l && had_l && a == alias && l == label {
            fail!("{prefix}, duplicate object alias {a}, and duplicate version label {l}");
        }
        if !has_a && !had_a && !has_l && !had_l {
            fail!("{prefix}, no object alias, and no version label");
        }
    }
    seen_names
        .insert(d.object_name.clone(), (d.object_alias.clone(), d.object_version_label.clone()));
    if seen_aliases.contains(&d.object_alias) {
        fail!("found duplicate object alias {}", d.object_alias);
    }
    if !d.object_alias.is_empty() {
        seen_aliases.insert(d.object_alias.clone());
    }
    for entry in &d.jmes_path {
        if !seen_aliases.insert(entry.object_alias.clone()) {
            fail!(
                "Name already in use for objectAlias: found duplicate object alias {} in JMES path entry {}",
                entry.object_alias,
                entry.path
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
