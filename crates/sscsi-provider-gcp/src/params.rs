//! The parameters of a `gcp` SecretProviderClass, read as the official
//! provider reads them: `secrets` as yaml.v3 (case-sensitive fields, unknown
//! fields ignored, `mode: 0600` octal) and `auth`.

use std::collections::BTreeMap;

use serde::Deserialize;
use sscsi_core::SecretBytes;
use sscsi_core::params::{ParamError, parse_yaml_v3};

use crate::resource::{Resource, ResourceError, classify};

/// The nodePublishSecretRef key holding a Google credentials file.
pub const KEY_JSON: &str = "key.json";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("missing required 'secrets' attribute")]
    NoSecrets,
    #[error("failed to unmarshal secrets attribute: {0}")]
    Yaml(ParamError),
    #[error("unknown auth configuration: {0:?}")]
    Auth(String),
    #[error("attempting to set both nodePublishSecretRef and {0} auth")]
    Both(&'static str),
    #[error("secrets[{index}]: resourceName is required")]
    NoResource { index: usize },
    #[error("{resource}: {source}")]
    Resource { resource: String, source: ResourceError },
    #[error(
        "{0}: both extractJSONKey and extractYAMLKey can't be simultaneously non empty strings"
    )]
    BothKeys(String),
    #[error("{0}: path or fileName is required")]
    NoPath(String),
    /// `mode` as YAML typed it: a plain `600` is decimal, `0600` octal.
    #[error(
        "{resource}: mode {mode} (decimal) is not a file mode in 0..=0o777; write octal as 0600"
    )]
    Mode { resource: String, mode: i32 },
}

/// How a mount authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// The pod's workload identity (the default).
    PodAdc,
    /// The driver's own identity.
    ProviderAdc,
    /// A Google credentials file from nodePublishSecretRef, when allowed.
    KeyJson(SecretBytes),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extract<'a> {
    Json(&'a str),
    Yaml(&'a str),
}

/// One entry of `secrets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    pub resource_name: String,
    pub resource: Resource,
    /// `path`, else `fileName`.
    pub path: String,
    pub extract_json_key: Option<String>,
    pub extract_yaml_key: Option<String>,
    /// `None`: the request's default mode.
    pub mode: Option<u32>,
}

impl SecretSpec {
    pub fn extract(&self) -> Option<Extract<'_>> {
        match (&self.extract_json_key, &self.extract_yaml_key) {
            (Some(key), _) => Some(Extract::Json(key)),
            (None, Some(key)) => Some(Extract::Yaml(key)),
            (None, None) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcpParams {
    pub auth: Auth,
    pub secrets: Vec<SecretSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawSecret {
    #[serde(rename = "resourceName")]
    resource_name: String,
    #[serde(rename = "fileName")]
    file_name: String,
    path: String,
    #[serde(rename = "extractJSONKey")]
    extract_json_key: String,
    #[serde(rename = "extractYAMLKey")]
    extract_yaml_key: String,
    /// `*int32` upstream.
    mode: Option<i32>,
}

impl GcpParams {
    /// `secrets` are nodePublishSecretRef's data, whose `key.json` counts only
    /// when the operator allows it (upstream's `ALLOW_NODE_PUBLISH_SECRET`).
    pub fn parse(
        parameters: &BTreeMap<String, String>,
        secrets: &BTreeMap<String, SecretBytes>,
        allow_key_json: bool,
    ) -> Result<Self, ParamsError> {
        let key_json = secrets.get(KEY_JSON).filter(|_| allow_key_json).cloned();
        let auth = match (parameters.get("auth").map(String::as_str).unwrap_or_default(), key_json)
        {
            ("provider-adc", Some(_)) => return Err(ParamsError::Both("provider-adc")),
            ("pod-adc", Some(_)) => return Err(ParamsError::Both("pod-adc")),
            ("provider-adc", None) => Auth::ProviderAdc,
            ("pod-adc" | "", None) => Auth::PodAdc,
            ("", Some(key)) => Auth::KeyJson(key),
            (other, _) => return Err(ParamsError::Auth(other.to_owned())),
        };
        let text = parameters.get("secrets").ok_or(ParamsError::NoSecrets)?;
        let raw: Option<Vec<RawSecret>> = if text.trim().is_empty() {
            None
        } else {
            parse_yaml_v3("secrets", text).map_err(ParamsError::Yaml)?
        };
        let secrets =
            raw.unwrap_or_default().into_iter().enumerate().map(spec).collect::<Result<_, _>>()?;
        Ok(Self { auth, secrets })
    }
}

fn spec((index, raw): (usize, RawSecret)) -> Result<SecretSpec, ParamsError> {
    let name = raw.resource_name;
    if name.is_empty() {
        return Err(ParamsError::NoResource { index });
    }
    let resource = classify(&name)
        .map_err(|source| ParamsError::Resource { resource: name.clone(), source })?;
    let some = |s: String| Some(s).filter(|s| !s.is_empty());
    let (extract_json_key, extract_yaml_key) =
        (some(raw.extract_json_key), some(raw.extract_yaml_key));
    if extract_json_key.is_some() && extract_yaml_key.is_some() {
        return Err(ParamsError::BothKeys(name));
    }
    let path =
        some(raw.path).or(some(raw.file_name)).ok_or_else(|| ParamsError::NoPath(name.clone()))?;
    // Upstream passes any int32 on; bits beyond 0777 (and negatives) are refused here.
    let mode = match raw.mode {
        None => None,
        Some(mode) => Some(
            u32::try_from(mode)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or(ParamsError::Mode { resource: name.clone(), mode })?,
        ),
    };
    Ok(SecretSpec { resource_name: name, resource, path, extract_json_key, extract_yaml_key, mode })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(
        pairs: &[(&str, &str)],
        secrets: &[(&str, &str)],
        allow: bool,
    ) -> Result<GcpParams, ParamsError> {
        let parameters = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let secrets =
            secrets.iter().map(|(k, v)| ((*k).to_owned(), SecretBytes::from(*v))).collect();
        GcpParams::parse(&parameters, &secrets, allow)
    }

    const ONE: &str = "- resourceName: projects/p/secrets/s/versions/latest\n  fileName: s.txt\n";

    #[test]
    fn secrets_as_upstream_reads_them() {
        let text = "\
- resourceName: projects/p/secrets/s/versions/1
  path: nested/dir/s.json
  fileName: ignored.txt
  extractJSONKey: user
  mode: 0600
  unknown: x
- resourceName: projects/p/locations/global/parameters/x/versions/v1
  fileName: x.yaml
  extractYAMLKey: host
  mode: 256
";
        let p = parse(&[("secrets", text)], &[], false).unwrap();
        assert_eq!(p.auth, Auth::PodAdc);
        let (a, b) = (&p.secrets[0], &p.secrets[1]);
        assert_eq!(a.path, "nested/dir/s.json", "path wins over fileName");
        assert_eq!(a.mode, Some(0o600), "0600 is octal, as yaml.v3 reads it");
        assert_eq!(a.extract(), Some(Extract::Json("user")));
        assert_eq!(b.path, "x.yaml");
        assert_eq!(b.mode, Some(256), "256 is decimal");
        assert_eq!(b.extract(), Some(Extract::Yaml("host")));
        assert_eq!(b.resource, Resource::Parameter { location: None });
    }

    /// `secrets` as yaml.v3 decodes it into upstream's `config.Secret`
    /// (`config/config.go`: `Mode *int32`, the rest `string`).
    #[test]
    fn secrets_typed_as_yaml_v3_types_them() {
        let with = |field: &str| {
            format!("- resourceName: projects/p/secrets/s/versions/1\n  fileName: f\n  {field}\n")
        };
        let mode = |field: &str| {
            parse(&[("secrets", &with(field))], &[], false).map(|p| p.secrets[0].mode)
        };
        for (field, want) in [
            ("mode: 0600", Some(0o600)),
            ("mode: 0o600", Some(0o600)),
            ("mode: 0x1a4", Some(0o644)),
            ("mode: 420", Some(0o644)),
            ("mode: 1_0", Some(10)),
            ("mode: 0", Some(0)),
            ("mode: 4.2e2", Some(0o644)),
            ("mode: 1.0", Some(1)),
            ("mode: ~", None),
            ("mode:", None),
        ] {
            assert_eq!(mode(field).unwrap(), want, "{field}");
        }
        for (field, message) in [
            ("mode: \"0600\"", "cannot unmarshal !!str `0600` into int32"),
            ("mode: '420'", "cannot unmarshal !!str `420` into int32"),
            ("mode: true", "cannot unmarshal !!bool `true` into int32"),
            ("mode: 2147483648", "cannot unmarshal !!int `2147483648` into int32"),
            ("mode: 600", "mode 600 (decimal) is not a file mode"),
            ("mode: -1", "mode -1 (decimal) is not a file mode"),
        ] {
            let err = mode(field).unwrap_err().to_string();
            assert!(err.contains(message), "{field}: want {message:?} in {err:?}");
        }
        // String fields take any scalar as written, and null as empty.
        let text = "- resourceName: projects/p/secrets/s/versions/1\n  fileName: 0600\n  extractJSONKey: 1e3\n  path: ~\n";
        let p = parse(&[("secrets", text)], &[], false).unwrap();
        assert_eq!(p.secrets[0].path, "0600");
        assert_eq!(p.secrets[0].extract(), Some(Extract::Json("1e3")));
        let text =
            "- resourceName: projects/p/secrets/s/versions/1\n  fileName: yes\n  extractYAMLKey:\n";
        let p = parse(&[("secrets", text)], &[], false).unwrap();
        assert_eq!((p.secrets[0].path.as_str(), p.secrets[0].extract()), ("yes", None));
        // Only the first document, as yaml.Unmarshal.
        let text = format!("{ONE}---\n- resourceName: x\n");
        assert_eq!(parse(&[("secrets", &text)], &[], false).unwrap().secrets.len(), 1);
    }

    #[test]
    fn auth_modes() {
        let key = [(KEY_JSON, "{\"type\":\"service_account\"}")];
        assert_eq!(
            parse(&[("secrets", ONE), ("auth", "provider-adc")], &[], false).unwrap().auth,
            Auth::ProviderAdc
        );
        assert!(matches!(parse(&[("secrets", ONE)], &key, true).unwrap().auth, Auth::KeyJson(_)));
        // key.json is ignored unless the operator allows it.
        assert_eq!(parse(&[("secrets", ONE)], &key, false).unwrap().auth, Auth::PodAdc);
        let refusals = [
            (
                parse(&[("secrets", ONE), ("auth", "pod-adc")], &key, true),
                "attempting to set both nodePublishSecretRef and pod-adc auth",
            ),
            (
                parse(&[("secrets", ONE), ("auth", "provider-adc")], &key, true),
                "attempting to set both nodePublishSecretRef and provider-adc auth",
            ),
            (
                parse(&[("secrets", ONE), ("auth", "node")], &[], false),
                "unknown auth configuration: \"node\"",
            ),
        ];
        for (result, message) in refusals {
            assert_eq!(result.unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn refusals_name_the_resource() {
        let cases = [
            ("", "missing required 'secrets' attribute"),
            ("- resourceName: [", "failed to unmarshal secrets attribute"),
            ("- fileName: x\n", "secrets[0]: resourceName is required"),
            (
                "- resourceName: projects/p/secrets/s\n  fileName: x\n",
                "projects/p/secrets/s: unknown resource type",
            ),
            (
                "- resourceName: projects/p/secrets/s/versions/1\n  fileName: x\n  extractJSONKey: a\n  extractYAMLKey: b\n",
                "projects/p/secrets/s/versions/1: both extractJSONKey and extractYAMLKey can't be simultaneously non empty strings",
            ),
            (
                "- resourceName: projects/p/secrets/s/versions/1\n",
                "projects/p/secrets/s/versions/1: path or fileName is required",
            ),
            (
                "- resourceName: projects/p/secrets/s/versions/1\n  fileName: x\n  mode: 04755\n",
                "mode 2541 (decimal) is not a file mode",
            ),
        ];
        for (text, message) in cases {
            let pairs: Vec<(&str, &str)> =
                if text.is_empty() { vec![] } else { vec![("secrets", text)] };
            let err = parse(&pairs, &[], false).unwrap_err().to_string();
            assert!(err.contains(message), "want {message:?} in {err:?}");
        }
    }
}
