//! What a file holds, from a Vault response, as upstream writes it.

use base64::Engine as _;
use sscsi_core::SecretBytes;

use crate::json::{GoJson, go_json};
use crate::params::{Encoding, VaultObject};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("{{{path}}}: {{key {key:?} does not exist at the secret path}}")]
    NoKey { path: String, key: String },
    /// The message names the encoding, never the bytes that failed to decode.
    #[error("{{{path}}}: {{the value of key {key:?} is not valid {encoding}}}")]
    Decode { path: String, key: String, encoding: &'static str },
}

/// The file's content: the value of `secretKey` (in `data.data` for KV v2,
/// else in `data`), decoded; or the whole response as Go's `json.Marshal`
/// writes Vault's `api.Secret`.
pub fn render(object: &VaultObject, response: &GoJson) -> Result<SecretBytes, RenderError> {
    let mut out = Vec::new();
    let Some(key) = &object.secret_key else {
        envelope(response, &mut out);
        return Ok(SecretBytes::from(out));
    };
    let data = &response["data"];
    let data = if matches!(data["data"], GoJson::Object(_)) { &data["data"] } else { data };
    let value = data
        .get(key)
        .ok_or_else(|| RenderError::NoKey { path: object.secret_path.clone(), key: key.clone() })?;
    let raw = match value {
        GoJson::String(s) => SecretBytes::from(s.as_bytes().to_vec()),
        other => {
            go_json(other, &mut out);
            SecretBytes::from(out)
        }
    };
    let failed = |encoding| RenderError::Decode {
        path: object.secret_path.clone(),
        key: key.clone(),
        encoding,
    };
    let decoded = match object.encoding {
        Encoding::Utf8 => return Ok(raw),
        // Go's decoder skips line breaks.
        Encoding::Base64 => {
            let text: zeroize::Zeroizing<Vec<u8>> = zeroize::Zeroizing::new(
                raw.expose().iter().copied().filter(|b| *b != b'\r' && *b != b'\n').collect(),
            );
            base64::engine::general_purpose::STANDARD
                .decode(&*text)
                .map_err(|_| failed("base64"))?
        }
        Encoding::Hex => hex::decode(raw.expose()).map_err(|_| failed("hex"))?,
    };
    Ok(SecretBytes::from(decoded))
}

/// `api.Secret`'s fields in declaration order; `auth`, `wrap_info` and
/// `mount_type` only when present (`omitempty`).
fn envelope(response: &GoJson, out: &mut Vec<u8>) {
    let str_or_empty = |key: &str| GoJson::String(response[key].as_str().unwrap_or("").to_owned());
    let warnings = match &response["warnings"] {
        GoJson::Array(items) if items.iter().all(|w| w.as_str().is_some()) => {
            GoJson::Array(items.clone())
        }
        _ => GoJson::Null,
    };
    // `LeaseDuration int`: a number that is not an integer fails upstream's decode.
    let lease = match &response["lease_duration"] {
        GoJson::Number(n) => n.parse::<i64>().unwrap_or(0),
        _ => 0,
    };
    let mut fields = vec![
        ("request_id", str_or_empty("request_id")),
        ("lease_id", str_or_empty("lease_id")),
        ("lease_duration", GoJson::Number(lease.to_string())),
        ("renewable", GoJson::Bool(matches!(response["renewable"], GoJson::Bool(true)))),
        ("data", response["data"].clone()),
        ("warnings", warnings),
    ];
    for key in ["auth", "wrap_info"] {
        if !response[key].is_null() {
            fields.push((key, response[key].clone()));
        }
    }
    if let Some(mount_type) = response["mount_type"].as_str().filter(|m| !m.is_empty()) {
        fields.push(("mount_type", GoJson::String(mount_type.to_owned())));
    }
    out.push(b'{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        go_json(&GoJson::String((*key).to_owned()), out);
        out.push(b':');
        go_json(value, out);
    }
    out.push(b'}');
    // The copies above hold secret strings too.
    drop(crate::json::VaultResponse(GoJson::Array(fields.into_iter().map(|(_, v)| v).collect())));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::ReadKey;

    fn object(key: Option<&str>, encoding: Encoding) -> VaultObject {
        VaultObject {
            object_name: "o".into(),
            secret_path: "secret/data/app".into(),
            secret_key: key.map(str::to_owned),
            read: ReadKey {
                method: "GET".into(),
                path: "/v1/secret/data/app".into(),
                query: String::new(),
                body: None,
            },
            file_permission: 0,
            encoding,
            config_json: "{}".into(),
        }
    }

    fn go(v: serde_json::Value) -> GoJson {
        GoJson::parse(v.to_string().as_bytes()).unwrap()
    }

    fn text(b: SecretBytes) -> String {
        String::from_utf8(b.expose().to_vec()).unwrap()
    }

    #[test]
    fn keys_from_kv_v1_and_v2() {
        let v2 = go(
            serde_json::json!({"data": {"data": {"user": "admin", "port": 5432, "tags": {"b": 1, "a": "<x>"}}, "metadata": {"version": 3}}}),
        );
        assert_eq!(text(render(&object(Some("user"), Encoding::Utf8), &v2).unwrap()), "admin");
        assert_eq!(text(render(&object(Some("port"), Encoding::Utf8), &v2).unwrap()), "5432");
        assert_eq!(
            text(render(&object(Some("tags"), Encoding::Utf8), &v2).unwrap()),
            r#"{"a":"\u003cx\u003e","b":1}"#
        );
        let v1 = go(serde_json::json!({"data": {"user": "root"}}));
        assert_eq!(text(render(&object(Some("user"), Encoding::Utf8), &v1).unwrap()), "root");
        let err = render(&object(Some("nope"), Encoding::Utf8), &v2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "{secret/data/app}: {key \"nope\" does not exist at the secret path}"
        );
    }

    #[test]
    fn encodings_decode_and_never_echo_the_value() {
        let v = go(
            serde_json::json!({"data": {"b64": "aGVs\nbG8=", "hex": "68656C6C6F", "bad": "s3cr!t"}}),
        );
        assert_eq!(text(render(&object(Some("b64"), Encoding::Base64), &v).unwrap()), "hello");
        assert_eq!(text(render(&object(Some("hex"), Encoding::Hex), &v).unwrap()), "hello");
        for encoding in [Encoding::Base64, Encoding::Hex] {
            let err = render(&object(Some("bad"), encoding), &v).unwrap_err().to_string();
            assert!(err.contains("is not valid"), "{err}");
            assert!(!err.contains("s3cr"), "{err}");
        }
    }

    #[test]
    fn whole_response_as_go_writes_api_secret() {
        let v = go(serde_json::json!({
            "request_id": "r", "lease_id": "", "renewable": false, "lease_duration": 0,
            "data": {"data": {"k": "v"}, "metadata": {"version": 1}},
            "wrap_info": null, "warnings": null, "auth": null, "mount_type": "kv"
        }));
        assert_eq!(
            text(render(&object(None, Encoding::Hex), &v).unwrap()),
            r#"{"request_id":"r","lease_id":"","lease_duration":0,"renewable":false,"data":{"data":{"k":"v"},"metadata":{"version":1}},"warnings":null,"mount_type":"kv"}"#
        );
    }

    /// Numbers as Vault wrote them (vault/api `ParseSecret` decodes with
    /// `UseNumber`; `json.Marshal` writes a `json.Number` unchanged).
    #[test]
    fn numbers_are_written_as_vault_sent_them() {
        let body = br#"{"lease_duration": 0, "data": {"data": {"price": 1.50, "big": 123456789012345678901234567890, "e": 1e3}}}"#;
        let v = GoJson::parse(body).unwrap();
        assert_eq!(text(render(&object(Some("price"), Encoding::Utf8), &v).unwrap()), "1.50");
        assert_eq!(
            text(render(&object(Some("big"), Encoding::Utf8), &v).unwrap()),
            "123456789012345678901234567890"
        );
        let whole = text(render(&object(None, Encoding::Utf8), &v).unwrap());
        assert!(
            whole.contains(
                r#""data":{"data":{"big":123456789012345678901234567890,"e":1e3,"price":1.50}}"#
            ),
            "{whole}"
        );
    }
}
