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

pub fn json_key(payload: &[u8], key: &str) -> Result<SecretBytes, ExtractError> {
    let document: serde_json::Map<String, Value> =
        serde_json::from_slice(payload).map_err(|_| ExtractError::Invalid("JSON"))?;
    pick(document.get(key), "JSON", key)
}

pub fn yaml_key(payload: &[u8], key: &str) -> Result<SecretBytes, ExtractError> {
    let text = std::str::from_utf8(payload).map_err(|_| ExtractError::Invalid("YAML"))?;
    let document: serde_json::Map<String, Value> =
        sscsi_core::params::parse_yaml_v3("payload", text)
            .map_err(|_| ExtractError::Invalid("YAML"))?;
    pick(document.get(key), "YAML", key)
}

fn pick(
    value: Option<&Value>,
    format: &'static str,
    key: &str,
) -> Result<SecretBytes, ExtractError> {
    match value {
        None => Err(ExtractError::Missing { format, key: key.to_owned() }),
        Some(Value::String(s)) => Ok(SecretBytes::from(s.as_bytes().to_vec())),
        Some(_) => Err(ExtractError::NotString(key.to_owned())),
    }
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
}
