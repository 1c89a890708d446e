//! The parameters of an `azure` SecretProviderClass, read as the official
//! provider reads them: exact-match keys, values trimmed, `objects` as a
//! mapping whose `array:` holds one YAML document per object (yaml.v3: keys
//! case-sensitive, unknown keys ignored), every string field trimmed.

use std::collections::BTreeMap;

use serde::Deserialize;
use sscsi_core::params::{ParamError, parse_go_bool, parse_yaml_v3};
use sscsi_core::path::validate_relative_path;

pub const OBJECT_SECRET: &str = "secret";
pub const OBJECT_KEY: &str = "key";
pub const OBJECT_CERT: &str = "cert";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("keyvaultName is not provided")]
    NoVault,
    #[error("tenantId is not provided")]
    NoTenant,
    #[error("objects is not set")]
    NoObjects,
    #[error(
        "failed to parse {flag} flag, error: strconv.ParseBool: parsing {value:?}: invalid syntax"
    )]
    Bool { flag: &'static str, value: String },
    #[error(
        "only one identity mode can be enabled at a time: usePodIdentity, useVMManagedIdentity, or useAzureTokenProxy"
    )]
    Modes,
    #[error("failed to get vault: Invalid vault name: {0:?}, must be between 3 and 24 chars")]
    VaultLength(String),
    #[error("failed to get vault: Invalid vault name: {0:?}, must match [-a-zA-Z0-9]{{3,24}}")]
    VaultChars(String),
    #[error("failed to yaml unmarshal objects, error: {0}")]
    Array(ParamError),
    #[error("unmarshal failed for keyVaultObjects at index {index}, error: {source}")]
    Object { index: usize, source: ParamError },
    #[error(
        "failed to get objectType:{object_type}, objectName:{name}, objectVersion:{version}: {message}"
    )]
    Invalid { object_type: String, name: String, version: String, message: String },
    #[error("no objects in \"objects\": is the list under \"array:\"?")]
    Empty,
}

/// Which identity a mount uses; the first that applies, as upstream picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityMode {
    PodIdentity,
    VmManagedIdentity,
    /// AKS identity binding (`useAzureTokenProxy`).
    TokenProxy,
    /// Workload identity when a client id is known, else a service principal
    /// from nodePublishSecretRef.
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureParams {
    pub keyvault_name: String,
    pub tenant_id: String,
    /// `clientID`; when empty, the service account's annotation may give one.
    pub client_id: Option<String>,
    pub mode: IdentityMode,
    pub user_assigned_identity_id: Option<String>,
    pub cloud_name: Option<String>,
    pub cloud_env_file: Option<String>,
    pub objects: Vec<KeyVaultObject>,
}

/// One object, after trimming and validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVaultObject {
    pub name: String,
    pub object_type: String,
    pub alias: String,
    pub version: String,
    pub version_history: i32,
    pub pfx: bool,
    pub encoding: Encoding,
    /// `None`: the request's default mode.
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    #[default]
    Utf8,
    Base64,
    Hex,
}

#[derive(Debug, Default, Deserialize)]
struct StringArray {
    #[serde(default)]
    array: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawObject {
    #[serde(rename = "objectName")]
    name: String,
    #[serde(rename = "objectAlias")]
    alias: String,
    #[serde(rename = "objectVersion")]
    version: String,
    #[serde(rename = "objectVersionHistory")]
    version_history: i32,
    #[serde(rename = "objectType")]
    object_type: String,
    #[serde(rename = "objectFormat")]
    format: String,
    #[serde(rename = "objectEncoding")]
    encoding: String,
    #[serde(rename = "filePermission")]
    file_permission: String,
}

impl AzureParams {
    pub fn parse(parameters: &BTreeMap<String, String>) -> Result<Self, ParamsError> {
        let get = |key: &str| parameters.get(key).map(|v| v.trim()).unwrap_or_default();
        let flag = |key: &'static str| match get(key) {
            "" => Ok(false),
            value => parse_go_bool(value)
                .ok_or_else(|| ParamsError::Bool { flag: key, value: value.to_owned() }),
        };
        let modes = [
            (flag("usePodIdentity")?, IdentityMode::PodIdentity),
            (flag("useVMManagedIdentity")?, IdentityMode::VmManagedIdentity),
            (flag("useAzureTokenProxy")?, IdentityMode::TokenProxy),
        ];
        let enabled: Vec<IdentityMode> =
            modes.iter().filter(|(on, _)| *on).map(|(_, mode)| *mode).collect();
        let mode = match enabled.as_slice() {
            [] => IdentityMode::Default,
            [mode] => *mode,
            _ => return Err(ParamsError::Modes),
        };
        let keyvault_name = get("keyvaultName").to_owned();
        if keyvault_name.is_empty() {
            return Err(ParamsError::NoVault);
        }
        let tenant_id = match get("tenantID") {
            "" => get("tenantId"),
            id => id,
        };
        if tenant_id.is_empty() {
            return Err(ParamsError::NoTenant);
        }
        let objects = get("objects");
        if objects.is_empty() {
            return Err(ParamsError::NoObjects);
        }
        let objects = parse_objects(objects)?;
        if !(3..=24).contains(&keyvault_name.len()) {
            return Err(ParamsError::VaultLength(keyvault_name));
        }
        if !keyvault_name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(ParamsError::VaultChars(keyvault_name));
        }
        let optional = |key: &str| Some(get(key).to_owned()).filter(|v| !v.is_empty());
        Ok(Self {
            keyvault_name,
            tenant_id: tenant_id.to_owned(),
            client_id: optional("clientID"),
            mode,
            user_assigned_identity_id: optional("userAssignedIdentityID"),
            cloud_name: optional("cloudName"),
            cloud_env_file: optional("cloudEnvFileName"),
            objects,
        })
    }
}

fn parse_objects(text: &str) -> Result<Vec<KeyVaultObject>, ParamsError> {
    let array: Option<StringArray> = parse_yaml_v3("objects", text).map_err(ParamsError::Array)?;
    let array = array.unwrap_or_default().array;
    // Upstream mounts nothing here and the driver then fails on the empty
    // answer; saying why is kinder.
    if array.is_empty() {
        return Err(ParamsError::Empty);
    }
    array
        .iter()
        .enumerate()
        .map(|(index, doc)| {
            let raw: Option<RawObject> = parse_yaml_v3("objects", doc)
                .map_err(|source| ParamsError::Object { index, source })?;
            validate(raw.unwrap_or_default())
        })
        .collect()
}

/// `strconv.ParseInt(s, 8, 32)` (an optional sign, octal digits), within 0..=0o777.
fn go_octal_mode(s: &str) -> Option<u32> {
    let digits = s.strip_prefix('+').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    let digits = digits.trim_start_matches('0');
    if digits.len() > 3 {
        return None;
    }
    u32::from_str_radix(if digits.is_empty() { "0" } else { digits }, 8).ok()
}

fn validate(raw: RawObject) -> Result<KeyVaultObject, ParamsError> {
    let name = raw.name.trim().to_owned();
    let object_type = raw.object_type.trim().to_owned();
    let version = raw.version.trim().to_owned();
    let invalid = |message: String| ParamsError::Invalid {
        object_type: object_type.clone(),
        name: name.clone(),
        version: version.clone(),
        message,
    };
    if ![OBJECT_SECRET, OBJECT_KEY, OBJECT_CERT].contains(&object_type.as_str()) {
        return Err(invalid("Invalid vaultObjectTypes. Should be secret, key, or cert".into()));
    }
    let format = raw.format.trim();
    let is_pfx = format.eq_ignore_ascii_case("pfx");
    if !format.is_empty() && !is_pfx && !format.eq_ignore_ascii_case("pem") {
        return Err(invalid(format!("invalid objectFormat: {format}, should be PEM or PFX")));
    }
    // Upstream's check compares case-sensitively, so `PFX` on a key passes
    // (and, the format applying to secrets only, changes nothing).
    if format == "pfx" && object_type != OBJECT_SECRET {
        return Err(invalid("PFX format only supported for objectType: secret".into()));
    }
    let pfx = is_pfx && object_type == OBJECT_SECRET;
    let encoding = raw.encoding.trim();
    if !encoding.is_empty() && object_type != OBJECT_SECRET {
        return Err(invalid("objectEncoding only supported for objectType: secret".into()));
    }
    let encoding = match encoding.to_ascii_lowercase().as_str() {
        "" | "utf-8" => Encoding::Utf8,
        "base64" => Encoding::Base64,
        "hex" => Encoding::Hex,
        _ => {
            return Err(invalid(format!(
                "invalid objectEncoding: {encoding}, should be hex, base64 or utf-8"
            )));
        }
    };
    let alias = match raw.alias.trim() {
        "" => name.clone(),
        alias => alias.to_owned(),
    };
    if alias.is_empty() {
        return Err(invalid("file name must not be empty".into()));
    }
    if alias.starts_with('/') {
        return Err(invalid("file name must be a relative path".into()));
    }
    if alias.contains("..") {
        return Err(invalid("file name must not contain '..'".into()));
    }
    validate_relative_path(&alias).map_err(|e| invalid(e.to_string()))?;
    // Upstream reads the mode with `strconv.ParseInt(s, 8, 32)`, ignores a
    // failure and writes mode 0; we refuse it, and bits beyond 0777.
    let mode = match raw.file_permission.trim() {
        "" => None,
        mode => Some(go_octal_mode(mode).ok_or_else(|| {
            invalid(format!("filePermission {mode:?} is not an octal file mode like \"0644\""))
        })?),
    };
    Ok(KeyVaultObject {
        name,
        object_type,
        alias,
        version,
        version_history: raw.version_history,
        pfx,
        encoding,
        mode,
    })
}

impl KeyVaultObject {
    /// More than one version is written (`objectVersionHistory` > 1).
    pub fn history(&self) -> bool {
        self.version_history > 1
    }

    /// The version id in the pod status: `<type>/<name>`, with `/<index>`
    /// for one of several versions.
    pub fn uid(&self, index: Option<usize>) -> String {
        match index {
            None => format!("{}/{}", self.object_type, self.name),
            Some(i) => format!("{}/{}/{i}", self.object_type, self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<AzureParams, ParamsError> {
        let map = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        AzureParams::parse(&map)
    }

    const ONE: &str = "array:\n  - |\n    objectName: db\n    objectType: secret\n";

    fn with_object(object: &str) -> Result<AzureParams, ParamsError> {
        let doc: String = object.lines().map(|l| format!("    {l}\n")).collect();
        let objects = format!("array:\n  - |\n{doc}");
        parse(&[("keyvaultName", "kv1"), ("tenantID", "t"), ("objects", &objects)])
    }

    #[test]
    fn parameters_as_upstream_reads_them() {
        let p = parse(&[
            ("keyvaultName", " my-kv1 "),
            ("tenantId", "tenant"),
            ("clientID", " app "),
            ("objects", ONE),
            ("useVMManagedIdentity", "True"),
            ("userAssignedIdentityID", "mi"),
            ("cloudName", "AzureChinaCloud"),
            ("resourceGroup", "ignored"),
        ])
        .unwrap();
        assert_eq!(p.keyvault_name, "my-kv1");
        assert_eq!(p.tenant_id, "tenant");
        assert_eq!(p.client_id.as_deref(), Some("app"));
        assert_eq!(p.mode, IdentityMode::VmManagedIdentity);
        assert_eq!(p.user_assigned_identity_id.as_deref(), Some("mi"));
        assert_eq!(p.cloud_name.as_deref(), Some("AzureChinaCloud"));
        assert_eq!(p.objects[0].alias, "db");
        assert_eq!(p.objects[0].uid(None), "secret/db");
        let p = parse(&[
            ("keyvaultName", "kv1"),
            ("tenantID", "new"),
            ("tenantId", "old"),
            ("objects", ONE),
        ])
        .unwrap();
        assert_eq!(p.tenant_id, "new", "tenantID wins over tenantId");
        assert_eq!(p.mode, IdentityMode::Default);
    }

    #[test]
    fn objects_trimmed_and_validated() {
        let o = with_object(
            "objectName: ' cert1 '\nobjectType: secret\nobjectAlias: tls/cert.pem\nobjectFormat: PFX\nobjectEncoding: Base64\nfilePermission: '0600'\nobjectVersionHistory: 3\nunknown: x",
        )
        .unwrap()
        .objects
        .remove(0);
        assert_eq!(o.name, "cert1");
        assert_eq!(o.alias, "tls/cert.pem");
        assert!(o.pfx);
        assert_eq!(o.encoding, Encoding::Base64);
        assert_eq!(o.mode, Some(0o600));
        assert!(o.history());
        assert_eq!(o.uid(Some(2)), "secret/cert1/2");
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let top: &[(&[(&str, &str)], &str)] = &[
            (&[("tenantID", "t"), ("objects", ONE)], "keyvaultName is not provided"),
            (&[("keyvaultName", "kv1"), ("objects", ONE)], "tenantId is not provided"),
            (&[("keyvaultName", "kv1"), ("tenantID", "t")], "objects is not set"),
            (
                &[("keyvaultName", "kv"), ("tenantID", "t"), ("objects", ONE)],
                "failed to get vault: Invalid vault name: \"kv\", must be between 3 and 24 chars",
            ),
            (
                &[("keyvaultName", "kv_1"), ("tenantID", "t"), ("objects", ONE)],
                "failed to get vault: Invalid vault name: \"kv_1\", must match [-a-zA-Z0-9]{3,24}",
            ),
            (
                &[
                    ("keyvaultName", "kv1"),
                    ("tenantID", "t"),
                    ("objects", ONE),
                    ("usePodIdentity", "yes"),
                ],
                "failed to parse usePodIdentity flag, error: strconv.ParseBool: parsing \"yes\": invalid syntax",
            ),
            (
                &[
                    ("keyvaultName", "kv1"),
                    ("tenantID", "t"),
                    ("objects", ONE),
                    ("usePodIdentity", "true"),
                    ("useAzureTokenProxy", "true"),
                ],
                "only one identity mode can be enabled at a time",
            ),
            (
                &[("keyvaultName", "kv1"), ("tenantID", "t"), ("objects", "- objectName: x\n")],
                "failed to yaml unmarshal objects",
            ),
            (
                &[("keyvaultName", "kv1"), ("tenantID", "t"), ("objects", "array: []\n")],
                "no objects in \"objects\"",
            ),
        ];
        for (pairs, message) in top {
            let err = parse(pairs).unwrap_err().to_string();
            assert!(err.contains(message), "want {message:?} in {err:?}");
        }
        let objects = [
            (
                "objectName: a\nobjectType: Secret",
                "failed to get objectType:Secret, objectName:a, objectVersion:: Invalid vaultObjectTypes. Should be secret, key, or cert",
            ),
            (
                "objectName: a\nobjectType: key\nobjectFormat: pfx",
                "PFX format only supported for objectType: secret",
            ),
            (
                "objectName: a\nobjectType: secret\nobjectFormat: der",
                "invalid objectFormat: der, should be PEM or PFX",
            ),
            (
                "objectName: a\nobjectType: cert\nobjectEncoding: hex",
                "objectEncoding only supported for objectType: secret",
            ),
            (
                "objectName: a\nobjectType: secret\nobjectEncoding: rot13",
                "invalid objectEncoding: rot13, should be hex, base64 or utf-8",
            ),
            (
                "objectName: a\nobjectType: secret\nobjectAlias: /etc/x",
                "file name must be a relative path",
            ),
            (
                "objectName: a\nobjectType: secret\nobjectAlias: x/../../y",
                "file name must not contain '..'",
            ),
            (
                "objectName: a\nobjectType: secret\nobjectAlias: a..b",
                "file name must not contain '..'",
            ),
            ("objectType: secret", "file name must not be empty"),
            ("objectName: a\nobjectType: secret\nfilePermission: '0999'", "filePermission"),
        ];
        for (object, message) in objects {
            let err = with_object(object).unwrap_err().to_string();
            assert!(err.contains(message), "want {message:?} in {err:?}");
        }
    }

    /// `objects` as yaml.v3 decodes each document into upstream's
    /// `KeyVaultObject` (`pkg/provider/types/types.go`: `ObjectVersionHistory
    /// int32`, the rest `string`; `filePermission` then `strconv.ParseInt(s, 8, 32)`).
    #[test]
    fn objects_typed_as_yaml_v3_types_them() {
        let object = |extra: &str| {
            with_object(&format!("objectName: a\nobjectType: secret\n{extra}"))
                .map(|mut p| p.objects.remove(0))
        };
        for (field, want) in [
            ("objectVersionHistory: 3", 3),
            ("objectVersionHistory: 010", 8),
            ("objectVersionHistory: 0x10", 16),
            ("objectVersionHistory: 3.5", 3),
            ("objectVersionHistory: ~", 0),
            ("objectVersionHistory:", 0),
        ] {
            assert_eq!(object(field).unwrap().version_history, want, "{field}");
        }
        for field in [
            "objectVersionHistory: \"3\"",
            "objectVersionHistory: true",
            "objectVersionHistory: 2147483648",
        ] {
            let err = object(field).unwrap_err().to_string();
            assert!(err.contains("cannot unmarshal"), "{field}: {err}");
        }
        for (field, want) in [
            ("filePermission: 0600", Some(0o600)),
            ("filePermission: \"0600\"", Some(0o600)),
            ("filePermission: 600", Some(0o600)),
            ("filePermission: 420", Some(0o420)),
            ("filePermission: 00644", Some(0o644)),
            ("filePermission: +644", Some(0o644)),
            ("filePermission: ~", None),
            ("filePermission:", None),
        ] {
            assert_eq!(object(field).unwrap().mode, want, "{field}");
        }
        for field in [
            "filePermission: 0o600",
            "filePermission: 0x1a4",
            "filePermission: -1",
            "filePermission: 07777",
        ] {
            assert!(object(field).is_err(), "{field}");
        }
        // String fields: any scalar as written, null as empty (the latest version).
        let o = object("objectVersion: 0600\nobjectAlias: 1e3").unwrap();
        assert_eq!((o.version.as_str(), o.alias.as_str()), ("0600", "1e3"));
        assert_eq!(object("objectVersion:").unwrap().version, "");
        assert_eq!(object("objectVersion: ~\nobjectAlias: yes").unwrap().alias, "yes");
        // `PFX` on a key passes upstream's case-sensitive check.
        let key = with_object("objectName: a\nobjectType: key\nobjectFormat: PFX").unwrap();
        assert!(!key.objects[0].pfx);
        // Only the first document of an object string.
        assert_eq!(object("objectAlias: x\n---\nobjectAlias: y").unwrap().alias, "x");
    }
}
