//! The v1alpha1 messages and sscsi's [`MountRequest`]/[`MountResponse`],
//! both ways, as the upstream driver writes them and the official
//! providers read them: the client and the server share these, so what one
//! writes the other reads back unchanged.

use std::collections::BTreeMap;
use std::path::PathBuf;

use sscsi_core::gojson::go_string_map;
use sscsi_core::tokens::{parse_tokens, tokens_json};
use sscsi_core::{
    BURST_WINDOW, MountRequest, MountResponse, ObjectVersion, PodInfo, SecretBytes, SecretFile,
};
use sscsi_proto::TOKENS_KEY;
use sscsi_proto::provider::v1alpha1 as pb;
use zeroize::Zeroize;

/// The protocol version both sides speak.
pub const API_VERSION: &str = "v1alpha1";

/// What the upstream sync controller sends as `target_path` when there is
/// no volume (a SecretSync): a fixed placeholder.
pub const NO_VOLUME_TARGET: &str = "/mnt/secrets-store";

/// A message that does not decode. Never quotes the attributes or secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// As the official providers word it.
    #[error(
        "failed to unmarshal {field}: not a JSON object of strings at line {line} column {column}"
    )]
    Map { field: &'static str, line: usize, column: usize },
    #[error("failed to unmarshal file permission {0:?}: not a JSON number from 0 to 4294967295")]
    Permission(String),
    #[error("failed to unmarshal attribute {TOKENS_KEY}: {0}")]
    Tokens(sscsi_core::tokens::TokensError),
}

/// The request the upstream driver sends: the parameters (class parameters
/// and volume attributes) with the tokens key, as one JSON object;
/// nodePublishSecretRef data as JSON (`null` without any, as Go marshals the
/// nil map an empty protobuf map decodes to); the default mode as a JSON
/// number; the versions held.
pub fn encode_request(req: &MountRequest) -> pb::MountRequest {
    let tokens = (!req.tokens.is_empty()).then(|| tokens_json(&req.tokens));
    let mut attributes: Vec<(&str, &str)> =
        req.parameters.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    if let Some(tokens) = &tokens {
        // The JSON written by `tokens_json` is UTF-8.
        attributes.push((TOKENS_KEY, tokens.expose_str().unwrap_or_default()));
    }
    let mut attributes_json = Vec::new();
    go_string_map(attributes, &mut attributes_json);

    let lossy: Vec<(String, String)> = req
        .secrets
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v.expose()).into_owned()))
        .collect();
    let mut secrets_json = Vec::new();
    if lossy.is_empty() {
        secrets_json.extend_from_slice(b"null");
    } else {
        go_string_map(lossy.iter().map(|(k, v)| (k.as_str(), v.as_str())), &mut secrets_json);
    }
    for (_, mut value) in lossy {
        value.zeroize();
    }
    pb::MountRequest {
        attributes: utf8(attributes_json),
        secrets: utf8(secrets_json),
        target_path: req
            .target_path
            .as_ref()
            .map_or_else(|| NO_VOLUME_TARGET.to_owned(), |p| p.display().to_string()),
        permission: req.default_file_mode.to_string(),
        current_object_version: req
            .current_versions
            .iter()
            .map(|v| pb::ObjectVersion { id: v.id.clone(), version: v.version.clone() })
            .collect(),
    }
}

/// JSON written from `&str`s is UTF-8.
fn utf8(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The request as a provider reads it: the tokens key and the pod's
/// attributes taken out of the parameters into their places.
pub fn decode_request(mut req: pb::MountRequest) -> Result<MountRequest, WireError> {
    let parsed = string_map("attributes", &req.attributes);
    req.attributes.zeroize();
    let mut parameters = parsed?;
    let tokens = match parameters.remove(TOKENS_KEY) {
        Some(mut json) => {
            let tokens = parse_tokens(&json).map_err(WireError::Tokens);
            json.zeroize();
            tokens?
        }
        None => BTreeMap::new(),
    };
    let secrets = string_map("secrets", &req.secrets);
    req.secrets.zeroize();
    let secrets = secrets?.into_iter().map(|(k, v)| (k, SecretBytes::from(v))).collect();
    let permission = req.permission.trim();
    let default_file_mode =
        permission.parse::<u32>().map_err(|_| WireError::Permission(req.permission.clone()))?;
    let attribute = |key: &str| parameters.get(key).cloned().unwrap_or_default();
    let pod = PodInfo {
        name: attribute("csi.storage.k8s.io/pod.name"),
        namespace: attribute("csi.storage.k8s.io/pod.namespace"),
        uid: attribute("csi.storage.k8s.io/pod.uid"),
        service_account: attribute("csi.storage.k8s.io/serviceAccount.name"),
    };
    Ok(MountRequest {
        parameters,
        tokens,
        secrets,
        pod,
        default_file_mode,
        current_versions: req.current_object_version.into_iter().map(version).collect(),
        current_files: BTreeMap::new(),
        // The driver says nothing of why it asks: answers of the last second
        // only, as on a first mount.
        reuse: BURST_WINDOW,
        target_path: Some(PathBuf::from(req.target_path)),
    })
}

/// A `map[string]string` as `encoding/json` reads it: `null` (and, for the
/// driver's sake, an empty string) is an empty map.
fn string_map(field: &'static str, json: &str) -> Result<BTreeMap<String, String>, WireError> {
    if json.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let map: Option<BTreeMap<String, String>> = serde_json::from_str(json)
        .map_err(|e| WireError::Map { field, line: e.line(), column: e.column() })?;
    Ok(map.unwrap_or_default())
}

fn version(v: pb::ObjectVersion) -> ObjectVersion {
    ObjectVersion { id: v.id, version: v.version }
}

/// A response the driver cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// `error.code` was set: upstream's wording; the code is the reason.
    #[error("mount request failed with provider error code {0}")]
    Code(String),
    /// Upstream requires versions.
    #[error("missing object versions")]
    NoVersions,
}

/// A provider's answer as the driver takes it: an `error.code` fails the
/// mount; no versions fail it; no files means the provider wrote them
/// itself (upstream's legacy mode). Modes keep their permission bits only,
/// as Go's `os.Chmod` applies an `os.FileMode` made from them.
pub fn decode_response(resp: pb::MountResponse) -> Result<MountResponse, ResponseError> {
    if let Some(code) = resp.error.map(|e| e.code).filter(|c| !c.is_empty()) {
        return Err(ResponseError::Code(code));
    }
    if resp.object_version.is_empty() {
        return Err(ResponseError::NoVersions);
    }
    let written_by_provider = resp.files.is_empty();
    let files = resp
        .files
        .into_iter()
        .map(|f| SecretFile {
            path: f.path,
            mode: (f.mode as u32) & 0o777,
            contents: SecretBytes::new(f.contents),
        })
        .collect();
    let versions = resp.object_version.into_iter().map(version).collect();
    Ok(MountResponse { files, versions, written_by_provider })
}

/// A provider's answer on the wire.
pub fn encode_response(resp: MountResponse) -> pb::MountResponse {
    pb::MountResponse {
        object_version: resp
            .versions
            .into_iter()
            .map(|v| pb::ObjectVersion { id: v.id, version: v.version })
            .collect(),
        error: None,
        files: resp
            .files
            .into_iter()
            .map(|f| pb::File {
                path: f.path,
                mode: f.mode as i32,
                contents: f.contents.expose().to_vec(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use sscsi_core::ServiceAccountToken;

    use super::*;

    fn request() -> MountRequest {
        MountRequest {
            parameters: BTreeMap::from([
                ("objects".into(), "- a<b\n".into()),
                ("csi.storage.k8s.io/pod.name".into(), "web-0".into()),
                ("csi.storage.k8s.io/pod.namespace".into(), "shop".into()),
                ("csi.storage.k8s.io/pod.uid".into(), "u1".into()),
                ("csi.storage.k8s.io/serviceAccount.name".into(), "web".into()),
            ]),
            tokens: BTreeMap::from([(
                "vault".into(),
                ServiceAccountToken {
                    token: "tok-1".into(),
                    expiration_timestamp: "2030-01-01T00:00:00Z".into(),
                },
            )]),
            secrets: BTreeMap::from([("password".into(), "p&w".into())]),
            target_path: Some("/var/lib/kubelet/pods/u1/volumes/kubernetes.io~csi/v/mount".into()),
            current_versions: vec![ObjectVersion { id: "a".into(), version: "3".into() }],
            ..MountRequest::default()
        }
    }

    #[test]
    fn encodes_as_the_driver_does() {
        let wire = encode_request(&request());
        assert_eq!(
            wire.attributes,
            r#"{"csi.storage.k8s.io/pod.name":"web-0","csi.storage.k8s.io/pod.namespace":"shop","csi.storage.k8s.io/pod.uid":"u1","csi.storage.k8s.io/serviceAccount.name":"web","csi.storage.k8s.io/serviceAccount.tokens":"{\"vault\":{\"token\":\"tok-1\",\"expirationTimestamp\":\"2030-01-01T00:00:00Z\"}}","objects":"- a\u003cb\n"}"#
        );
        assert_eq!(wire.secrets, r#"{"password":"p\u0026w"}"#);
        assert_eq!(wire.permission, "420");
        assert_eq!(wire.target_path, "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~csi/v/mount");
        assert_eq!(wire.current_object_version.len(), 1);
        let none = encode_request(&MountRequest::default());
        assert_eq!((none.attributes.as_str(), none.secrets.as_str()), ("{}", "null"));
        assert_eq!(none.target_path, NO_VOLUME_TARGET);
    }

    #[test]
    fn decodes_what_it_encodes() {
        let original = request();
        let back = decode_request(encode_request(&original)).unwrap();
        assert_eq!(back.parameters, original.parameters, "the tokens key is taken out");
        assert_eq!(back.tokens, original.tokens);
        assert_eq!(back.secrets, original.secrets);
        assert_eq!(back.pod.name, "web-0");
        assert_eq!(back.pod.service_account, "web");
        assert_eq!(back.default_file_mode, 0o644);
        assert_eq!(back.current_versions, original.current_versions);
        assert_eq!(back.target_path, original.target_path);
    }

    #[test]
    fn bad_requests_name_the_field_and_never_the_value() {
        let mut wire = encode_request(&request());
        wire.attributes = r#"{"objects": 3, "password": "hunter2"}"#.into();
        let err = decode_request(wire).unwrap_err().to_string();
        assert!(err.starts_with("failed to unmarshal attributes"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let mut wire = encode_request(&request());
        wire.permission = "\"0644\"".into();
        assert_eq!(decode_request(wire).unwrap_err(), WireError::Permission("\"0644\"".into()));
        let mut wire = encode_request(&request());
        wire.secrets = "null".into();
        assert!(decode_request(wire).unwrap().secrets.is_empty());
    }

    #[test]
    fn responses_as_the_driver_takes_them() {
        let file = |path: &str, mode| pb::File { path: path.into(), mode, contents: b"x".to_vec() };
        let v = || vec![pb::ObjectVersion { id: "a".into(), version: "1".into() }];
        let ok = decode_response(pb::MountResponse {
            object_version: v(),
            error: None,
            files: vec![file("a", 0o640), file("b", 0o100_644), file("c", -1)],
        })
        .unwrap();
        let modes: Vec<u32> = ok.files.iter().map(|f| f.mode).collect();
        assert_eq!(modes, [0o640, 0o644, 0o777], "permission bits only, as os.Chmod");
        assert!(!ok.written_by_provider);
        let legacy =
            decode_response(pb::MountResponse { object_version: v(), error: None, files: vec![] })
                .unwrap();
        assert!(legacy.written_by_provider);
        assert_eq!(
            decode_response(pb::MountResponse {
                files: vec![file("a", 0o644)],
                ..Default::default()
            }),
            Err(ResponseError::NoVersions)
        );
        let coded = pb::MountResponse {
            error: Some(pb::Error { code: "ThrottledByBackend".into() }),
            ..Default::default()
        };
        let code = decode_response(coded).unwrap_err();
        assert_eq!(
            code.to_string(),
            "mount request failed with provider error code ThrottledByBackend"
        );
        // An empty code is no error.
        let mut empty = pb::MountResponse { object_version: v(), ..Default::default() };
        empty.error = Some(pb::Error { code: String::new() });
        assert!(decode_response(empty).is_ok());
    }
}
