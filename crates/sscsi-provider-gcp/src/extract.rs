//! `extractJSONKey` and `extractYAMLKey`: a top-level key whose value must be
//! a string, with upstream's messages. The messages never quote the payload.

use serde_json::Value;
use sscsi_core::SecretBytes;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("failed to unmarshal {0}. Invalid {0} format for key extraction")]
    Invalid(&'static str),
    #[error("key '{key}' not found in {format}")]
    Missing { format: &'static str, key: String },
    #[error("unsupported value type for key '{0}'")]
    NotString(String),
}

/// Upstream decodes into `map[string]interface{}` with `encoding/json`: a
/// `null` document is an empty map.
pub fn json_key(payload: &[u8], key: &str) -> Result<SecretBytes, ExtractError> {
    let document: Option<serde_json::Map<String, Value>> =
        serde_json::from_slice(payload).map_err(|_| ExtractError::Invalid("JSON"))?;
    match document.as_ref().and_then(|d| d.get(key)) {
        None => Err(ExtractError::Missing { format: "JSON", key: key.to_owned() }),
        Some(Value::String(s)) => Ok(SecretBytes::from(s.as_bytes().to_vec())),
        Some(_) => Err(ExtractError::NotString(key.to_owned())),
    }
}

/// Upstream decodes with yaml.v3 into `map[string]interface{}`: only a value
/// yaml.v3 types as a string is written (`yes` is one, an unquoted date or
/// `5432` is not), and a null document is an empty map.
pub fn yaml_key(payload: &[u8], key: &str) -> Result<SecretBytes, ExtractError> {
    use sscsi_core::goyaml::{GoValue, interface};
    let text = std::str::from_utf8(payload).map_err(|_| ExtractError::Invalid("YAML"))?;
    let mut document = interface("payload", text).map_err(|_| ExtractError::Invalid("YAML"))?;
    let result = match &mut document {
        GoValue::Map(entries) => match entries.iter_mut().find(|(k, _)| k == key) {
            None => Err(ExtractError::Missing { format: "YAML", key: key.to_owned() }),
            Some((_, GoValue::String(s))) => Ok(SecretBytes::from(std::mem::take(s).into_bytes())),
            Some(_) => Err(ExtractError::NotString(key.to_owned())),
        },
        GoValue::Null => Err(ExtractError::Missing { format: "YAML", key: key.to_owned() }),
        _ => Err(ExtractError::Invalid("YAML")),
    };
    // The rest of the payload is secret too.
    zeroize::Zeroize::zeroize(&mut document);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_string_values_only() {
        let json = br#"{"user":"admin","port":5432,"nested":{"a":"b"}}"#;
        assert_eq!(json_key(json, "user").unwrap().expose(), b"admin");
        assert_eq!(
            json_key(json, "port").unwrap_err().to_string(),
            "unsupported value type for key 'port'"
        );
        assert_eq!(json_key(json, "a").unwrap_err().to_string(), "key 'a' not found in JSON");
        let yaml = b"user: admin\nport: 5432\n";
        assert_eq!(yaml_key(yaml, "user").unwrap().expose(), b"admin");
        assert_eq!(yaml_key(yaml, "nope").unwrap_err().to_string(), "key 'nope' not found in YAML");
        let err = json_key(b"s3cret-not-json", "k").unwrap_err().to_string();
        assert_eq!(err, "failed to unmarshal JSON. Invalid JSON format for key extraction");
        assert!(yaml_key(b"- a list, not a map", "k").is_err());
    }

    /// yaml.v3 into `map[string]interface{}` (GoogleCloudPlatform/secrets-store-csi-driver-provider-gcp
    /// `util/key_extractor.go`): only a Go string is written, as its bytes.
    #[test]
    fn yaml_values_typed_as_yaml_v3_types_them() {
        let doc = b"a: yes\nb: '5432'\nc: 5432\nd: 2001-12-14\ne: .inf\nf: !!binary aGVsbG8=\ng: ~\nh: 0600\n";
        for (key, want) in [("a", Ok("yes")), ("b", Ok("5432")), ("f", Ok("hello"))] {
            let got = yaml_key(doc, key).map(|v| String::from_utf8(v.expose().to_vec()).unwrap());
            assert_eq!(got.as_deref().map_err(|_| ()), want.map_err(|_: ()| ()), "{key}");
        }
        for key in ["c", "d", "e", "g", "h"] {
            assert_eq!(
                yaml_key(doc, key).unwrap_err(),
                ExtractError::NotString(key.into()),
                "{key}"
            );
        }
        let missing = |format: &'static str| ExtractError::Missing { format, key: "k".into() };
        assert_eq!(yaml_key(b"~", "k").unwrap_err(), missing("YAML"));
        assert_eq!(yaml_key(b"", "k").unwrap_err(), missing("YAML"));
        assert_eq!(yaml_key(b"k: first\n---\nk: second\n", "k").unwrap().expose(), b"first");
        assert_eq!(yaml_key(b"k: a\nk: b\n", "k").unwrap_err(), ExtractError::Invalid("YAML"));
        assert_eq!(json_key(b"null", "k").unwrap_err(), missing("JSON"));
    }
}
