//! The parameters of a `vault` SecretProviderClass, read as vault-csi-provider
//! reads them: exact-match top-level keys, `objects` as yaml.v3 (case-sensitive
//! fields, unknown fields ignored, `0600` octal).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value};
use sscsi_core::params::{ParamError, parse_go_bool, parse_yaml_v3};

use crate::json::{GoJson, go_json};

/// The auth mount when neither the class nor the driver names one.
pub const DEFAULT_AUTH_MOUNT: &str = "kubernetes";
/// The token audience when the class names none.
pub const DEFAULT_AUDIENCE: &str = "vault";
/// The address when neither the class, the driver's flag nor `VAULT_ADDR` gives one.
pub const DEFAULT_ADDRESS: &str = "https://127.0.0.1:8200";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("missing 'roleName' in SecretProviderClass definition")]
    NoRole,
    #[error("no secrets configured - the provider will not read any secret material")]
    NoObjects,
    #[error("cannot set both vaultKubernetesMountPath and vaultAuthMountPath")]
    BothMounts,
    #[error("parameter \"vaultSkipTLSVerify\": strconv.ParseBool: parsing {0:?}: invalid syntax")]
    SkipVerify(String),
    #[error(transparent)]
    Objects(#[from] ParamError),
    #[error(
        "each `objectName` within a SecretProviderClass must be unique, but the following keys were duplicated: {0}"
    )]
    Duplicates(String),
    #[error("objects[{index}]: {field} is required")]
    Missing { index: usize, field: &'static str },
    #[error(
        "objectName {object:?}: filePermission {mode:#o} sets bits beyond 0777 (YAML reads a plain 600 as decimal: write 0600)"
    )]
    Mode { object: String, mode: u32 },
    #[error(
        "failed to parse query parameters from secretPath {path:?} for objectName {object:?}: invalid query"
    )]
    Query { path: String, object: String },
    #[error("{{{path}}}: {{invalid encoding type. Should be utf-8, base64, or hex}}")]
    Encoding { path: String },
}

/// TLS to Vault: paths on the driver's file system, as upstream reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsSettings {
    pub ca_cert: Option<PathBuf>,
    pub ca_directory: Option<PathBuf>,
    pub server_name: Option<String>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub skip_verify: bool,
}

/// The driver's own defaults (flags, else the `VAULT_*` environment), which a
/// class's parameters override field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultDefaults {
    pub address: String,
    pub namespace: Option<String>,
    pub auth_mount: String,
    pub tls: TlsSettings,
}

impl Default for VaultDefaults {
    fn default() -> Self {
        Self {
            address: DEFAULT_ADDRESS.to_owned(),
            namespace: None,
            auth_mount: DEFAULT_AUTH_MOUNT.to_owned(),
            tls: TlsSettings::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultParams {
    pub role: String,
    pub address: String,
    pub namespace: Option<String>,
    pub auth_mount: String,
    /// The audience of the pod token used to log in (`audience`, else `vault`).
    pub audience: String,
    /// `audience` exactly as written: a self-requested token asks for it, or
    /// for the API server's default audience when it is empty.
    pub requested_audience: Option<String>,
    pub tls: TlsSettings,
    pub objects: Vec<VaultObject>,
}

/// One entry of `objects`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultObject {
    pub object_name: String,
    /// `secretPath` as written, for messages.
    pub secret_path: String,
    pub secret_key: Option<String>,
    pub read: ReadKey,
    /// 0 means the request's default mode.
    pub file_permission: u32,
    pub encoding: Encoding,
    /// The object's configuration as upstream serialises it for its version HMAC.
    pub config_json: String,
}

/// One Vault request: objects that share it share one read per mount.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReadKey {
    pub method: String,
    /// `/v1/...`, without the query.
    pub path: String,
    /// The query, re-encoded with sorted keys; empty when none.
    pub query: String,
    /// `secretArgs` as JSON, sent as the body (even on GET, as upstream).
    pub body: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    #[default]
    Utf8,
    Base64,
    Hex,
}

#[derive(Debug, Deserialize)]
struct RawObject {
    #[serde(rename = "objectName", default)]
    object_name: String,
    #[serde(rename = "secretPath", default)]
    secret_path: String,
    #[serde(rename = "secretKey", default)]
    secret_key: String,
    #[serde(default)]
    method: String,
    #[serde(rename = "secretArgs", default)]
    secret_args: Option<Map<String, Value>>,
    #[serde(rename = "filePermission", default)]
    file_permission: u32,
    #[serde(default)]
    encoding: String,
}

impl VaultParams {
    pub fn parse(
        parameters: &BTreeMap<String, String>,
        defaults: &VaultDefaults,
    ) -> Result<Self, ParamsError> {
        // Upstream looks keys up exactly; an empty value counts as unset. Its
        // checks run in this order: mounts, vaultSkipTLSVerify, the objects'
        // YAML, then roleName, at least one object, unique names.
        let get = |key: &str| parameters.get(key).map(String::as_str).filter(|v| !v.is_empty());
        let auth_mount = match (
            parameters.get("vaultKubernetesMountPath"),
            parameters.get("vaultAuthMountPath"),
        ) {
            (Some(_), Some(_)) => return Err(ParamsError::BothMounts),
            (Some(mount), None) | (None, Some(mount)) if !mount.is_empty() => mount.clone(),
            _ => defaults.auth_mount.clone(),
        };
        // Present at all, even empty, it goes through strconv.ParseBool.
        let skip_verify = match parameters.get("vaultSkipTLSVerify") {
            Some(v) => parse_go_bool(v).ok_or_else(|| ParamsError::SkipVerify(v.clone()))?,
            None => defaults.tls.skip_verify,
        };
        let path =
            |key: &str, default: &Option<PathBuf>| get(key).map(PathBuf::from).or(default.clone());
        let tls = TlsSettings {
            ca_cert: path("vaultCACertPath", &defaults.tls.ca_cert),
            ca_directory: path("vaultCADirectory", &defaults.tls.ca_directory),
            server_name: get("vaultTLSServerName")
                .map(str::to_owned)
                .or(defaults.tls.server_name.clone()),
            client_cert: path("vaultTLSClientCertPath", &defaults.tls.client_cert),
            client_key: path("vaultTLSClientKeyPath", &defaults.tls.client_key),
            skip_verify,
        };
        let raw = parse_raw_objects(get("objects").unwrap_or_default())?;
        let role = get("roleName").ok_or(ParamsError::NoRole)?.to_owned();
        let objects = objects(raw)?;
        Ok(Self {
            role,
            address: get("vaultAddress").unwrap_or(&defaults.address).to_owned(),
            namespace: get("vaultNamespace").map(str::to_owned).or(defaults.namespace.clone()),
            auth_mount: auth_mount.trim_matches('/').to_owned(),
            audience: get("audience").unwrap_or(DEFAULT_AUDIENCE).to_owned(),
            requested_audience: get("audience").map(str::to_owned),
            tls,
            objects,
        })
    }
}

fn parse_raw_objects(text: &str) -> Result<Vec<RawObject>, ParamsError> {
    let raw: Option<Vec<RawObject>> =
        if text.trim().is_empty() { None } else { parse_yaml_v3("objects", text)? };
    Ok(raw.unwrap_or_default())
}

fn objects(raw: Vec<RawObject>) -> Result<Vec<VaultObject>, ParamsError> {
    if raw.is_empty() {
        return Err(ParamsError::NoObjects);
    }
    let mut seen = std::collections::HashSet::new();
    let duplicates: Vec<&str> = raw
        .iter()
        .filter(|o| !seen.insert(o.object_name.as_str()))
        .map(|o| o.object_name.as_str())
        .collect();
    if !duplicates.is_empty() {
        return Err(ParamsError::Duplicates(duplicates.join(", ")));
    }
    raw.into_iter().enumerate().map(|(index, raw)| object(index, raw)).collect()
}

fn object(index: usize, raw: RawObject) -> Result<VaultObject, ParamsError> {
    if raw.object_name.is_empty() {
        return Err(ParamsError::Missing { index, field: "objectName" });
    }
    if raw.secret_path.is_empty() {
        return Err(ParamsError::Missing { index, field: "secretPath" });
    }
    if raw.file_permission > 0o777 {
        return Err(ParamsError::Mode { object: raw.object_name, mode: raw.file_permission });
    }
    let secret_key = Some(raw.secret_key.clone()).filter(|k| !k.is_empty());
    // Upstream applies the encoding only to an extracted key, and only then
    // checks it; an unused invalid encoding is accepted as upstream accepts it.
    let encoding = match raw.encoding.to_ascii_lowercase().as_str() {
        "" | "utf-8" => Encoding::Utf8,
        "base64" => Encoding::Base64,
        "hex" => Encoding::Hex,
        _ if secret_key.is_none() => Encoding::Utf8,
        _ => return Err(ParamsError::Encoding { path: raw.secret_path }),
    };
    let full = ensure_v1_prefix(&raw.secret_path);
    let (path, query) = match full.split_once('?') {
        None => (full.clone(), String::new()),
        Some((path, query)) => {
            let query = normalise_query(query).ok_or_else(|| ParamsError::Query {
                path: full.clone(),
                object: raw.object_name.clone(),
            })?;
            (path.to_owned(), query)
        }
    };
    let method = if raw.method.is_empty() { "GET".to_owned() } else { raw.method.clone() };
    let body = raw.secret_args.as_ref().map(|args| {
        let mut out = Vec::new();
        go_json(&GoJson::from_value(&Value::Object(args.clone())), &mut out);
        String::from_utf8(out).expect("JSON is UTF-8")
    });
    Ok(VaultObject {
        config_json: config_json(&raw),
        object_name: raw.object_name,
        secret_path: raw.secret_path,
        secret_key,
        read: ReadKey { method, path, query, body },
        file_permission: raw.file_permission,
        encoding,
    })
}

/// `secret/x`, `/secret/x`, `v1/secret/x` and `/v1/secret/x` all read `/v1/secret/x`.
fn ensure_v1_prefix(path: &str) -> String {
    if path.starts_with("/v1/") {
        path.to_owned()
    } else if path.starts_with("v1/") {
        format!("/{path}")
    } else if path.starts_with('/') {
        format!("/v1{path}")
    } else {
        format!("/v1/{path}")
    }
}

/// A query re-encoded with its keys sorted, as Go's `url.Values.Encode`
/// sends it; `None` when Go's `url.ParseQuery` would refuse it (a `;`, or a
/// `%` not followed by two hex digits).
fn normalise_query(query: &str) -> Option<String> {
    if query.contains(';') {
        return None;
    }
    let bytes = query.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return None;
        }
    }
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    // Stable: values of one key keep their order, as in Go.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    Some(form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish())
}

/// The object's configuration as Go's `json.Marshal` writes upstream's
/// `config.Secret` (Go field names, declaration order), so a version is an
/// HMAC over the same bytes upstream hashes.
fn config_json(raw: &RawObject) -> String {
    let fields = [
        ("ObjectName", Value::from(raw.object_name.as_str())),
        ("SecretPath", Value::from(raw.secret_path.as_str())),
        ("SecretKey", Value::from(raw.secret_key.as_str())),
        ("Method", Value::from(raw.method.as_str())),
        ("SecretArgs", raw.secret_args.clone().map_or(Value::Null, Value::Object)),
        ("FilePermission", Value::from(raw.file_permission)),
        ("Encoding", Value::from(raw.encoding.as_str())),
    ];
    let mut out = vec![b'{'];
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        go_json(&GoJson::String((*name).to_owned()), &mut out);
        out.push(b':');
        go_json(&GoJson::from_value(value), &mut out);
    }
    out.push(b'}');
    String::from_utf8(out).expect("JSON is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<VaultParams, ParamsError> {
        let map = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        VaultParams::parse(&map, &VaultDefaults::default())
    }

    const ONE: &str = "- objectName: a\n  secretPath: secret/a\n";

    #[test]
    fn defaults_and_overrides() {
        let p = parse(&[("roleName", "app"), ("objects", ONE)]).unwrap();
        assert_eq!(p.address, DEFAULT_ADDRESS);
        assert_eq!(p.auth_mount, "kubernetes");
        assert_eq!(p.audience, "vault");
        assert_eq!(p.requested_audience, None);
        assert_eq!(p.namespace, None);
        assert_eq!(p.tls, TlsSettings::default());
        let p = parse(&[
            ("roleName", "app"),
            ("objects", ONE),
            ("vaultAddress", "http://v:8200"),
            ("vaultAuthMountPath", "jwt"),
            ("audience", "https://vault"),
            ("vaultNamespace", "team"),
            ("vaultSkipTLSVerify", "true"),
            ("vaultCACertPath", "/ca.pem"),
            ("vaultTLSServerName", "vault.internal"),
        ])
        .unwrap();
        assert_eq!(p.address, "http://v:8200");
        assert_eq!(p.auth_mount, "jwt");
        assert_eq!(p.audience, "https://vault");
        assert_eq!(p.requested_audience.as_deref(), Some("https://vault"));
        assert_eq!(p.namespace.as_deref(), Some("team"));
        assert!(p.tls.skip_verify);
        assert_eq!(p.tls.ca_cert, Some(PathBuf::from("/ca.pem")));
        assert_eq!(p.tls.server_name.as_deref(), Some("vault.internal"));
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("objects", ONE)], "missing 'roleName' in SecretProviderClass definition"),
            (&[("roleName", "r")], "no secrets configured"),
            (&[("roleName", "r"), ("objects", "[]")], "no secrets configured"),
            (
                &[
                    ("roleName", "r"),
                    ("objects", ONE),
                    ("vaultKubernetesMountPath", "k"),
                    ("vaultAuthMountPath", "j"),
                ],
                "cannot set both vaultKubernetesMountPath and vaultAuthMountPath",
            ),
            (
                &[("roleName", "r"), ("objects", ONE), ("vaultSkipTLSVerify", "yes")],
                "parameter \"vaultSkipTLSVerify\": strconv.ParseBool: parsing \"yes\": invalid syntax",
            ),
            (
                &[
                    ("roleName", "r"),
                    (
                        "objects",
                        "- objectName: a\n  secretPath: x\n- objectName: a\n  secretPath: y\n",
                    ),
                ],
                "each `objectName` within a SecretProviderClass must be unique, but the following keys were duplicated: a",
            ),
            (
                &[("roleName", "r"), ("objects", "- secretPath: x\n")],
                "objects[0]: objectName is required",
            ),
            (
                &[("roleName", "r"), ("objects", "- objectName: a\n")],
                "objects[0]: secretPath is required",
            ),
            (
                &[
                    ("roleName", "r"),
                    ("objects", "- objectName: a\n  secretPath: x\n  filePermission: 04755\n"),
                ],
                "objectName \"a\": filePermission 0o4755 sets bits beyond 0777",
            ),
            (
                &[("roleName", "r"), ("objects", "- objectName: a\n  secretPath: x?a=%zz\n")],
                "failed to parse query parameters from secretPath \"/v1/x?a=%zz\" for objectName \"a\"",
            ),
            (
                &[
                    ("roleName", "r"),
                    (
                        "objects",
                        "- objectName: a\n  secretPath: x\n  secretKey: k\n  encoding: rot13\n",
                    ),
                ],
                "{x}: {invalid encoding type. Should be utf-8, base64, or hex}",
            ),
            (
                &[("roleName", "r"), ("objects", "- objectName: [")],
                "parameter \"objects\": invalid YAML",
            ),
        ];
        for (pairs, message) in cases {
            let err = parse(pairs).unwrap_err().to_string();
            assert!(err.contains(message), "want {message:?} in {err:?}");
        }
    }

    /// `objects` as yaml.v3 decodes it into upstream's `config.Secret`
    /// (hashicorp/vault-csi-provider `internal/config/config.go`:
    /// `FilePermission os.FileMode`, `SecretArgs map[string]interface{}`,
    /// the rest `string`).
    #[test]
    fn objects_typed_as_yaml_v3_types_them() {
        let one = |extra: &str| {
            let objects = format!("- objectName: a\n  secretPath: secret/data/a\n  {extra}\n");
            parse(&[("roleName", "r"), ("objects", &objects)]).map(|mut p| p.objects.remove(0))
        };
        for (field, want) in [
            ("filePermission: 0600", 0o600),
            ("filePermission: 0o600", 0o600),
            ("filePermission: 0x1a4", 0o644),
            ("filePermission: 420", 0o644),
            ("filePermission: 420.9", 0o644),
            ("filePermission: ~", 0),
            ("filePermission:", 0),
        ] {
            assert_eq!(one(field).unwrap().file_permission, want, "{field}");
        }
        for (field, message) in [
            ("filePermission: \"0600\"", "cannot unmarshal !!str `0600` into uint32"),
            ("filePermission: true", "cannot unmarshal !!bool `true` into uint32"),
            ("filePermission: -1", "cannot unmarshal !!int `-1` into uint32"),
            ("filePermission: 4294967296", "cannot unmarshal !!int `4294967296` into uint32"),
        ] {
            let err = one(field).unwrap_err().to_string();
            assert!(err.contains(message), "{field}: want {message:?} in {err:?}");
        }
        // String fields take any scalar as written; null is empty (the whole secret).
        let o = one("secretKey: 0600").unwrap();
        assert_eq!(o.secret_key.as_deref(), Some("0600"));
        assert_eq!(one("secretKey: ~").unwrap().secret_key, None);
        assert_eq!(one("secretKey:").unwrap().secret_key, None);
        assert_eq!(one("secretKey: yes").unwrap().secret_key.as_deref(), Some("yes"));
        // secretArgs are untyped: YAML 1.2 bools only, numbers typed, floats as Go writes them.
        let o =
            one("secretArgs: {a: yes, b: true, c: 0600, d: 1e3, e: 1_000, f: 0.000001, g: off}")
                .unwrap();
        assert_eq!(
            o.read.body.as_deref(),
            Some(r#"{"a":"yes","b":true,"c":384,"d":1000,"e":1000,"f":0.000001,"g":"off"}"#)
        );
        // A null item is dropped; only the first document is read.
        let objects =
            "- objectName: a\n  secretPath: p\n- ~\n---\n- objectName: b\n  secretPath: q\n";
        assert_eq!(parse(&[("roleName", "r"), ("objects", objects)]).unwrap().objects.len(), 1);
    }

    /// Upstream's order (`internal/config/config.go` `parseParameters`, then
    /// `validate`): with several faults, the same one is reported.
    #[test]
    fn faults_are_reported_in_upstreams_order() {
        let both = [("vaultKubernetesMountPath", "a"), ("vaultAuthMountPath", "b")];
        let err = |pairs: &[(&str, &str)]| parse(pairs).unwrap_err().to_string();
        assert_eq!(err(&both), "cannot set both vaultKubernetesMountPath and vaultAuthMountPath");
        assert_eq!(
            err(&[("vaultSkipTLSVerify", ""), ("objects", "- [")]),
            "parameter \"vaultSkipTLSVerify\": strconv.ParseBool: parsing \"\": invalid syntax"
        );
        assert!(err(&[("objects", "- [")]).contains("invalid YAML"), "the YAML before roleName");
        assert_eq!(err(&[]), "missing 'roleName' in SecretProviderClass definition");
        assert_eq!(
            err(&[("roleName", "r")]),
            "no secrets configured - the provider will not read any secret material"
        );
    }

    #[test]
    fn objects_as_upstream_reads_them() {
        let objects = "\
- objectName: db
  secretPath: v1/database/creds/app?ttl=1h&a=2
  secretKey: password
  method: put
  secretArgs: {common_name: x.example.com, ttl: 24h}
  filePermission: 0600
  encoding: BASE64
  unknownField: ignored
- objectName: whole
  secretPath: /secret/data/app
  encoding: rot13
";
        let p = parse(&[("roleName", "r"), ("objects", objects)]).unwrap();
        let db = &p.objects[0];
        assert_eq!(db.read.method, "put", "the verb is used verbatim");
        assert_eq!(db.read.path, "/v1/database/creds/app");
        assert_eq!(db.read.query, "a=2&ttl=1h");
        assert_eq!(db.read.body.as_deref(), Some(r#"{"common_name":"x.example.com","ttl":"24h"}"#));
        assert_eq!(db.file_permission, 0o600);
        assert_eq!(db.encoding, Encoding::Base64);
        assert_eq!(db.secret_key.as_deref(), Some("password"));
        assert_eq!(
            db.config_json,
            r#"{"ObjectName":"db","SecretPath":"v1/database/creds/app?ttl=1h\u0026a=2","SecretKey":"password","Method":"put","SecretArgs":{"common_name":"x.example.com","ttl":"24h"},"FilePermission":384,"Encoding":"BASE64"}"#
        );
        let whole = &p.objects[1];
        assert_eq!(whole.read.path, "/v1/secret/data/app");
        assert_eq!(whole.read.method, "GET");
        assert_eq!(whole.read.body, None);
        assert_eq!(whole.secret_key, None);
        assert_eq!(whole.encoding, Encoding::Utf8, "an unused encoding is not checked");
    }

    #[test]
    fn v1_prefix() {
        for path in ["secret/x", "/secret/x", "v1/secret/x", "/v1/secret/x"] {
            assert_eq!(ensure_v1_prefix(path), "/v1/secret/x", "{path}");
        }
    }
}
