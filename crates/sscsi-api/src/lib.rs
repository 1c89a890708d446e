//! The resources of API group `secrets-store.csi.x-k8s.io` that sscsi reads.
//!
//! Field names and shapes follow the upstream CRDs (v1, and v1alpha1 which has
//! the same schema), so any SecretProviderClass written for upstream parses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const GROUP: &str = "secrets-store.csi.x-k8s.io";
pub const SPC_KIND: &str = "SecretProviderClass";
/// API versions served for SecretProviderClass; v1 is the storage version.
pub const SPC_VERSIONS: &[&str] = &["v1", "v1alpha1"];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A SecretProviderClass: which provider serves a volume and with what parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretProviderClass {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: SecretProviderClassSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretProviderClassSpec {
    /// Name of the provider (`aws`, `azure`, `gcp`, `vault`, ...).
    #[serde(default)]
    pub provider: String,
    /// Provider-specific parameters, all strings; some hold YAML documents.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Kubernetes Secrets to mirror mounted objects into.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_objects: Vec<SecretObject>,
}

/// One Kubernetes Secret built from mounted files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretObject {
    #[serde(default)]
    pub secret_name: String,
    #[serde(default, rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub data: Vec<SecretObjectData>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretObjectData {
    /// The mounted file (object alias or name) the value comes from.
    #[serde(default)]
    pub object_name: String,
    /// The key in the Secret's data.
    #[serde(default)]
    pub key: String,
}

impl SecretProviderClass {
    /// True for the kind and an API version of this group that we serve.
    pub fn is_secret_provider_class(api_version: &str, kind: &str) -> bool {
        kind == SPC_KIND
            && api_version
                .strip_prefix(GROUP)
                .and_then(|v| v.strip_prefix('/'))
                .is_some_and(|v| SPC_VERSIONS.contains(&v))
    }

    /// The namespace, `default` when unset (as kubectl applies it).
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_served_versions() {
        assert!(SecretProviderClass::is_secret_provider_class(
            "secrets-store.csi.x-k8s.io/v1",
            "SecretProviderClass"
        ));
        assert!(SecretProviderClass::is_secret_provider_class(
            "secrets-store.csi.x-k8s.io/v1alpha1",
            "SecretProviderClass"
        ));
        assert!(!SecretProviderClass::is_secret_provider_class(
            "secrets-store.csi.x-k8s.io/v2",
            "SecretProviderClass"
        ));
        assert!(!SecretProviderClass::is_secret_provider_class(
            "v1", "Secret"
        ));
    }
}
