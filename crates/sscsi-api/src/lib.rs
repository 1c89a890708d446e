//! The resources of API group `secrets-store.csi.x-k8s.io`, as upstream
//! defines them: SecretProviderClass and SecretProviderClassPodStatus, in
//! versions v1 (storage) and v1alpha1 (served, deprecated; same schema).
//!
//! Field names and shapes follow upstream's CRDs, so every object written for
//! upstream parses. The CRDs add printer columns that upstream lacks.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::crd::merge_crds;
use kube::{CustomResource, CustomResourceExt, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "secrets-store.csi.x-k8s.io";
/// Served versions; v1 is the storage version.
pub const VERSIONS: &[&str] = &["v1", "v1alpha1"];
/// Label on every SecretProviderClassPodStatus: the node that mounted it.
pub const NODE_NAME_LABEL: &str = "internal.secrets-store.csi.k8s.io/node-name";

mod secretsync;

pub use secretsync::*;
pub use v1::{
    SecretObject, SecretObjectData, SecretProviderClass, SecretProviderClassObject,
    SecretProviderClassPodStatus, SecretProviderClassPodStatusStatus, SecretProviderClassSpec,
    SecretProviderClassStatus,
};

/// The storage version.
pub mod v1 {
    use super::*;

    /// A SecretProviderClass: which provider serves a volume and with what parameters.
    #[derive(
        CustomResource, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
    )]
    #[kube(
        group = "secrets-store.csi.x-k8s.io",
        version = "v1",
        kind = "SecretProviderClass",
        doc = "SecretProviderClass names the provider that serves a secrets-store CSI volume and its parameters",
        plural = "secretproviderclasses",
        namespaced,
        status = "SecretProviderClassStatus",
        printcolumn = r#"{"name": "Provider", "type": "string", "jsonPath": ".spec.provider"}"#,
        printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
    )]
    #[serde(rename_all = "camelCase")]
    pub struct SecretProviderClassSpec {
        /// Name of the provider (`aws`, `azure`, `gcp`, `vault`, ...).
        #[serde(default)]
        pub provider: String,
        /// Provider-specific parameters, all strings; some hold YAML documents.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub parameters: Option<BTreeMap<String, String>>,
        /// Kubernetes Secrets to mirror mounted objects into.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub secret_objects: Option<Vec<SecretObject>>,
    }

    /// Empty in v1, as upstream.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    pub struct SecretProviderClassStatus {}

    /// One Kubernetes Secret built from mounted files.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct SecretObject {
        /// Name of the Secret.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub secret_name: String,
        /// Type of the Secret (`Opaque`, `kubernetes.io/tls`, ...).
        #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
        pub type_: String,
        /// Labels copied onto the Secret.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub labels: Option<BTreeMap<String, String>>,
        /// Annotations copied onto the Secret.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub annotations: Option<BTreeMap<String, String>>,
        /// Keys of the Secret and the mounted files their values come from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub data: Option<Vec<SecretObjectData>>,
    }

    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct SecretObjectData {
        /// The mounted file (object alias or name) the value comes from.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub object_name: String,
        /// The key in the Secret's data.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub key: String,
    }

    /// What is mounted for one pod and one SecretProviderClass, written by
    /// the node that mounted it. Named `<pod>-<namespace>-<class>`, owned by
    /// the pod; it has no spec, only a status.
    #[derive(
        CustomResource, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
    )]
    #[kube(
        group = "secrets-store.csi.x-k8s.io",
        version = "v1",
        kind = "SecretProviderClassPodStatus",
        doc = "SecretProviderClassPodStatus records what is mounted for one pod and one SecretProviderClass",
        plural = "secretproviderclasspodstatuses",
        namespaced,
        no_spec,
        status = "SecretProviderClassPodStatusStatus",
        printcolumn = r#"{"name": "Pod", "type": "string", "jsonPath": ".status.podName"}"#,
        printcolumn = r#"{"name": "SecretProviderClass", "type": "string", "jsonPath": ".status.secretProviderClassName"}"#,
        printcolumn = r#"{"name": "Mounted", "type": "boolean", "jsonPath": ".status.mounted"}"#,
        printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
    )]
    pub struct SecretProviderClassPodStatusFields {}

    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct SecretProviderClassPodStatusStatus {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub pod_name: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub secret_provider_class_name: String,
        #[serde(default)]
        pub mounted: bool,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub target_path: String,
        /// The mounted objects' versions, sorted by id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub objects: Option<Vec<SecretProviderClassObject>>,
    }

    #[derive(
        Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
    )]
    pub struct SecretProviderClassObject {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub id: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub version: String,
    }
}

/// The deprecated version: the same schema, served so old manifests keep
/// applying. No conversion is needed between the two.
pub mod v1alpha1 {
    use super::*;

    #[derive(
        CustomResource, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
    )]
    #[kube(
        group = "secrets-store.csi.x-k8s.io",
        version = "v1alpha1",
        kind = "SecretProviderClass",
        doc = "SecretProviderClass names the provider that serves a secrets-store CSI volume and its parameters",
        plural = "secretproviderclasses",
        namespaced,
        deprecated = "secrets-store.csi.x-k8s.io/v1alpha1 is deprecated. Use secrets-store.csi.x-k8s.io/v1",
        status = "SecretProviderClassStatus",
        printcolumn = r#"{"name": "Provider", "type": "string", "jsonPath": ".spec.provider"}"#,
        printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
    )]
    #[serde(rename_all = "camelCase")]
    pub struct SecretProviderClassSpec {
        #[serde(default)]
        pub provider: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub parameters: Option<BTreeMap<String, String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub secret_objects: Option<Vec<v1::SecretObject>>,
    }

    /// v1alpha1 still carries the legacy `byPod` list, unused since v0.0.12.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct SecretProviderClassStatus {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub by_pod: Option<Vec<ByPodStatus>>,
    }

    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    pub struct ByPodStatus {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub id: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub namespace: String,
    }

    #[derive(
        CustomResource, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
    )]
    #[kube(
        group = "secrets-store.csi.x-k8s.io",
        version = "v1alpha1",
        kind = "SecretProviderClassPodStatus",
        doc = "SecretProviderClassPodStatus records what is mounted for one pod and one SecretProviderClass",
        plural = "secretproviderclasspodstatuses",
        namespaced,
        no_spec,
        deprecated = "secrets-store.csi.x-k8s.io/v1alpha1 is deprecated. Use secrets-store.csi.x-k8s.io/v1",
        status = "v1::SecretProviderClassPodStatusStatus",
        printcolumn = r#"{"name": "Pod", "type": "string", "jsonPath": ".status.podName"}"#,
        printcolumn = r#"{"name": "SecretProviderClass", "type": "string", "jsonPath": ".status.secretProviderClassName"}"#,
        printcolumn = r#"{"name": "Mounted", "type": "boolean", "jsonPath": ".status.mounted"}"#,
        printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
    )]
    pub struct SecretProviderClassPodStatusFields {}
}

/// Every CRD: SecretProviderClass and its pod status (every version
/// merged, v1 stored), then SecretSync.
///
/// Like upstream's there is no status subresource: the status is written
/// with the object, so objects written by either driver look the same.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let merge = |crds| {
        let mut crd: CustomResourceDefinition =
            merge_crds(crds, "v1").expect("the versions of one CRD share group, kind and scope");
        for version in &mut crd.spec.versions {
            version.subresources = None;
        }
        crd
    };
    vec![
        merge(vec![v1::SecretProviderClass::crd(), v1alpha1::SecretProviderClass::crd()]),
        merge(vec![
            v1::SecretProviderClassPodStatus::crd(),
            v1alpha1::SecretProviderClassPodStatus::crd(),
        ]),
        // The sync controller's CRD keeps its status subresource.
        SecretSync::crd(),
    ]
}

/// Each CRD as a YAML document, with the file name controller-gen would
/// give it (`<group>_<plural>.yaml`): what `sscsi crds` prints and
/// `cargo xtask codegen` writes.
pub fn crd_documents() -> Vec<(String, String)> {
    crds()
        .iter()
        .map(|crd| {
            let file = format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural);
            let yaml = serde_saphyr::to_string(crd).expect("a CRD serializes");
            (file, yaml)
        })
        .collect()
}

/// Upstream's name for the status object of one pod and class.
pub fn pod_status_name(pod: &str, namespace: &str, spc: &str) -> String {
    format!("{pod}-{namespace}-{spc}")
}

impl SecretObject {
    /// The first field a sync needs that this entry leaves empty (blank
    /// counts as empty): `secretName`, `type`, `data`, then `data[].key`.
    pub fn missing_field(&self) -> Option<&'static str> {
        let data = self.data.as_deref().unwrap_or_default();
        if self.secret_name.trim().is_empty() {
            Some("secretName")
        } else if self.type_.trim().is_empty() {
            Some("type")
        } else if data.is_empty() {
            Some("data")
        } else if data.iter().any(|d| d.key.trim().is_empty()) {
            Some("data[].key")
        } else {
            None
        }
    }
}

impl SecretProviderClass {
    /// The namespace, `default` when unset (as kubectl applies it).
    pub fn namespace_or_default(&self) -> String {
        self.namespace().unwrap_or_else(|| "default".to_owned())
    }

    pub fn name_str(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    /// `namespace/name`, for messages.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.namespace_or_default(), self.name_str())
    }

    pub fn parameters(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.spec.parameters.as_ref().unwrap_or(&EMPTY)
    }

    /// True for the kind and an API version of this group that we serve.
    pub fn is_served(api_version: &str, kind: &str) -> bool {
        kind == "SecretProviderClass"
            && api_version
                .strip_prefix(GROUP)
                .and_then(|v| v.strip_prefix('/'))
                .is_some_and(|v| VERSIONS.contains(&v))
    }
}

#[cfg(test)]
mod tests;
