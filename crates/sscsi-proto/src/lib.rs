//! gRPC types generated from `proto/`: the CSI Identity and Node services
//! (and ControllerGetCapabilities, `csi::v1`), the upstream provider API (`provider::v1alpha1`) and kubelet's
//! plugin registration API (`registration::v1`).
//!
//! Messages that carry secrets or tokens have hand-written `Debug` impls that
//! print only key names and sizes, so a stray `{:?}` cannot leak them
//! (the bug class of CVE-2023-2878).

use std::collections::HashMap;
use std::fmt;

#[allow(clippy::all, missing_debug_implementations, unused_qualifications)]
pub mod csi {
    pub mod v1 {
        tonic::include_proto!("csi.v1");
    }
}

#[allow(clippy::all, missing_debug_implementations, unused_qualifications)]
pub mod provider {
    pub mod v1alpha1 {
        tonic::include_proto!("v1alpha1");
    }
}

#[allow(clippy::all, missing_debug_implementations, unused_qualifications)]
pub mod registration {
    pub mod v1 {
        tonic::include_proto!("pluginregistration");
    }
}

/// The volume-context key under which kubelet passes service-account tokens.
pub const TOKENS_KEY: &str = "csi.storage.k8s.io/serviceAccount.tokens";

/// Prints a string map with every value that may be sensitive replaced by its length.
struct RedactedMap<'a> {
    map: &'a HashMap<String, String>,
    /// When false every value is redacted; when true only the tokens key is.
    show_plain_values: bool,
}

impl fmt::Debug for RedactedMap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<_> = self.map.keys().collect();
        keys.sort();
        let mut m = f.debug_map();
        for key in keys {
            let value = &self.map[key];
            if self.show_plain_values && key != TOKENS_KEY {
                m.entry(key, value);
            } else {
                m.entry(key, &format_args!("<redacted {} bytes>", value.len()));
            }
        }
        m.finish()
    }
}

fn secrets(map: &HashMap<String, String>) -> RedactedMap<'_> {
    RedactedMap { map, show_plain_values: false }
}

fn context(map: &HashMap<String, String>) -> RedactedMap<'_> {
    RedactedMap { map, show_plain_values: true }
}

impl fmt::Debug for csi::v1::NodePublishVolumeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodePublishVolumeRequest")
            .field("volume_id", &self.volume_id)
            .field("publish_context", &self.publish_context)
            .field("staging_target_path", &self.staging_target_path)
            .field("target_path", &self.target_path)
            .field("volume_capability", &self.volume_capability)
            .field("readonly", &self.readonly)
            .field("secrets", &secrets(&self.secrets))
            .field("volume_context", &context(&self.volume_context))
            .finish()
    }
}

impl fmt::Debug for csi::v1::NodeStageVolumeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeStageVolumeRequest")
            .field("volume_id", &self.volume_id)
            .field("publish_context", &self.publish_context)
            .field("staging_target_path", &self.staging_target_path)
            .field("volume_capability", &self.volume_capability)
            .field("secrets", &secrets(&self.secrets))
            .field("volume_context", &context(&self.volume_context))
            .finish()
    }
}

impl fmt::Debug for provider::v1alpha1::MountRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MountRequest")
            .field("attributes", &format_args!("<redacted {} bytes>", self.attributes.len()))
            .field("secrets", &format_args!("<redacted {} bytes>", self.secrets.len()))
            .field("target_path", &self.target_path)
            .field("permission", &self.permission)
            .field("current_object_version", &self.current_object_version)
            .finish()
    }
}

impl fmt::Debug for provider::v1alpha1::File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File")
            .field("path", &self.path)
            .field("mode", &format_args!("{:#o}", self.mode))
            .field("contents", &format_args!("<redacted {} bytes>", self.contents.len()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_publish_request_redacts_secrets_and_tokens() {
        let req = csi::v1::NodePublishVolumeRequest {
            volume_id: "vol".into(),
            secrets: HashMap::from([("password".into(), "hunter2-secret".into())]),
            volume_context: HashMap::from([
                (TOKENS_KEY.into(), r#"{"aud":{"token":"eyJhbGciOi-token"}}"#.into()),
                ("secretProviderClass".into(), "my-spc".into()),
            ]),
            ..Default::default()
        };
        let out = format!("{req:?}");
        assert!(!out.contains("hunter2-secret"), "{out}");
        assert!(!out.contains("eyJhbGciOi-token"), "{out}");
        assert!(out.contains("my-spc"), "non-sensitive context stays visible: {out}");
        assert!(out.contains("password"), "key names stay visible: {out}");
    }

    #[test]
    fn debug_of_provider_messages_redacts_contents() {
        let file = provider::v1alpha1::File {
            path: "db/pw".into(),
            mode: 0o600,
            contents: b"top-secret-bytes".to_vec(),
        };
        let req = provider::v1alpha1::MountRequest {
            attributes: r#"{"token":"abc-token-xyz"}"#.into(),
            secrets: r#"{"k":"nodepublish-secret"}"#.into(),
            ..Default::default()
        };
        let out = format!("{file:?} {req:?}");
        for leaked in ["top-secret-bytes", "abc-token-xyz", "nodepublish-secret"] {
            assert!(!out.contains(leaked), "{out}");
        }
        assert!(out.contains("0o600"), "{out}");
    }
}
