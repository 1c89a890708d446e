//! kubelet's service-account tokens attribute
//! (`csi.storage.k8s.io/serviceAccount.tokens`): a JSON map of audience to
//! `{"token": …, "expirationTimestamp": …}`, read by the node and the
//! provider server and written again for an external provider.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{SecretBytes, ServiceAccountToken};

/// The attribute does not parse. Says where, never what: it holds tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a map of audience to token at line {line} column {column}")]
pub struct TokensError {
    pub line: usize,
    pub column: usize,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenJson {
    token: String,
    #[serde(default)]
    expiration_timestamp: String,
}

/// Parses the attribute; an empty one is no tokens.
pub fn parse_tokens(json: &str) -> Result<BTreeMap<String, ServiceAccountToken>, TokensError> {
    if json.is_empty() {
        return Ok(BTreeMap::new());
    }
    let parsed: BTreeMap<String, TokenJson> = serde_json::from_str(json)
        .map_err(|e| TokensError { line: e.line(), column: e.column() })?;
    Ok(parsed
        .into_iter()
        .map(|(audience, t)| {
            let token = ServiceAccountToken {
                token: SecretBytes::from(t.token),
                expiration_timestamp: t.expiration_timestamp,
            };
            (audience, token)
        })
        .collect())
}

/// The attribute as kubelet writes it (`json.Marshal` of
/// `map[string]TokenRequestStatus`: audiences sorted, `token` first).
pub fn tokens_json(tokens: &BTreeMap<String, ServiceAccountToken>) -> SecretBytes {
    let mut out =
        Vec::with_capacity(64 + tokens.values().map(|t| t.token.len() + 48).sum::<usize>());
    out.push(b'{');
    for (i, (audience, token)) in tokens.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        crate::gojson::go_string(audience, &mut out);
        out.extend_from_slice(b":{\"token\":");
        crate::gojson::go_string(&String::from_utf8_lossy(token.token.expose()), &mut out);
        out.extend_from_slice(b",\"expirationTimestamp\":");
        crate::gojson::go_string(&token.expiration_timestamp, &mut out);
        out.push(b'}');
    }
    out.push(b'}');
    SecretBytes::new(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_kubelets_shape() {
        let json = r#"{"sts.amazonaws.com":{"token":"a<b","expirationTimestamp":"2030-01-01T00:00:00Z"},"vault":{"token":"t2","expirationTimestamp":""}}"#;
        let tokens = parse_tokens(json).unwrap();
        assert_eq!(tokens["sts.amazonaws.com"].token.expose(), b"a<b");
        let written = tokens_json(&tokens);
        // Go escapes `<` in strings; parsing that gives the same map back.
        assert_eq!(written.expose_str().unwrap(), json.replace("a<b", "a\\u003cb"),);
        assert_eq!(parse_tokens(written.expose_str().unwrap()).unwrap(), tokens);
        assert_eq!(tokens_json(&BTreeMap::new()).expose(), b"{}");
    }

    #[test]
    fn errors_never_quote_the_tokens() {
        let err = parse_tokens(r#"{"aud":"eyJ-secret"}"#).unwrap_err();
        assert!(!err.to_string().contains("eyJ"), "{err}");
        assert_eq!(parse_tokens("").unwrap(), BTreeMap::new());
    }
}
