//! The `objects` parameter of an `aws` SecretProviderClass, read as ASCP
//! reads it: a YAML list whose field names match case-insensitively (Go's
//! `encoding/json` behind `sigs.k8s.io/yaml`), unknown fields ignored, every
//! entry validated with ASCP's rules and error messages.
//!
//! One deliberate difference: scalars are read as they are written, so an
//! unquoted `filePermission: 0600` means "0600" (ASCP's YAML 1.1 reading
//! turns it into "384" and rejects it).

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

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

/// One entry of `objects`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    translate: Option<char>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JmesPathEntry {
    pub path: String,
    pub object_alias: String,
    pub file_permission: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    if arn.as_ref().is_some_and(|arn| arn.region != region) {
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
    let entries: Vec<Option<RawDescriptor>> = if objects.trim().is_empty() {
        Vec::new()
    } else {
        serde_saphyr::from_str(objects)
            .map_err(|e| DescriptorError(format!("Failed to load SecretProviderClass: {e}")))?
    };
    let mut descriptors = Vec::with_capacity(entries.len());
    // objectName -> (alias, label) of the entry first seen with it.
    let mut seen_names: HashMap<String, (String, String)> = HashMap::new();
    let mut seen_aliases: HashSet<String> = HashSet::new();
    for entry in entries {
        let Some(RawDescriptor(mut descriptor)) = entry else {
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

// ---- Case-insensitive reading, as Go's encoding/json matches field names ----

/// A scalar read as written (`0600` stays "0600"); null is empty.
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Text, E> {
                Ok(Text(String::new()))
            }
            fn visit_none<E: de::Error>(self) -> Result<Text, E> {
                Ok(Text(String::new()))
            }
        }
        d.deserialize_string(V)
    }
}

/// Reads a mapping, handing each value to `field` by its case-folded key.
fn read_map<'de, A: MapAccess<'de>>(
    mut map: A,
    mut field: impl FnMut(&str, &mut A) -> Result<bool, A::Error>,
) -> Result<(), A::Error> {
    while let Some(key) = map.next_key::<String>()? {
        if !field(&key.to_ascii_lowercase(), &mut map)? {
            map.next_value::<IgnoredAny>()?;
        }
    }
    Ok(())
}

macro_rules! struct_visitor {
    ($raw:ident, $ty:ty, $expecting:literal, |$key:ident, $map:ident, $out:ident| $body:block) => {
        struct $raw($ty);

        impl<'de> Deserialize<'de> for $raw {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $raw;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<$raw, A::Error> {
                        let mut $out = <$ty>::default();
                        read_map(map, |$key, $map| $body)?;
                        Ok($raw($out))
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}

struct_visitor!(RawDescriptor, Descriptor, "an objects entry", |key, map, out| {
    let text = |map: &mut A| map.next_value::<Text>().map(|t| t.0);
    match key {
        "objectname" => out.object_name = text(map)?,
        "objectalias" => out.object_alias = text(map)?,
        "objectversion" => out.object_version = text(map)?,
        "objectversionlabel" => out.object_version_label = text(map)?,
        "objecttype" => out.object_type = text(map)?,
        "filepermission" => out.file_permission = text(map)?,
        "jmespath" => {
            let entries: Option<Vec<RawJmes>> = map.next_value()?;
            out.jmes_path = entries.unwrap_or_default().into_iter().map(|e| e.0).collect();
        }
        "failoverobject" => {
            let failover: Option<RawFailover> = map.next_value()?;
            out.failover_object = failover.map(|f| f.0).unwrap_or_default();
        }
        _ => return Ok(false),
    }
    Ok(true)
});

struct_visitor!(RawJmes, JmesPathEntry, "a jmesPath entry", |key, map, out| {
    let text = |map: &mut A| map.next_value::<Text>().map(|t| t.0);
    match key {
        "path" => out.path = text(map)?,
        "objectalias" => out.object_alias = text(map)?,
        "filepermission" => out.file_permission = text(map)?,
        _ => return Ok(false),
    }
    Ok(true)
});

struct_visitor!(RawFailover, FailoverObject, "a failoverObject", |key, map, out| {
    let text = |map: &mut A| map.next_value::<Text>().map(|t| t.0);
    match key {
        "objectname" => out.object_name = text(map)?,
        "objectversion" => out.object_version = text(map)?,
        "objectversionlabel" => out.object_version_label = text(map)?,
        _ => return Ok(false),
    }
    Ok(true)
});

#[cfg(test)]
mod tests;
