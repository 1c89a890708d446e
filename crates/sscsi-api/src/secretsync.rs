//! SecretSync (`secret-sync.x-k8s.io/v1alpha1`): a Kubernetes Secret built
//! from a SecretProviderClass without a pod, as
//! kubernetes-sigs/secrets-store-sync-controller defines it
//! (`api/v1alpha1/secretsync_types.go`): the same fields, validation
//! patterns, CEL rules and defaults, so its manifests apply unchanged.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const SYNC_GROUP: &str = "secret-sync.x-k8s.io";
pub const SYNC_VERSION: &str = "v1alpha1";

/// The label and annotation key reserved for the controller: every Secret
/// it writes carries the label with an empty value.
pub const SYNC_RESERVED_KEY: &str = "secrets-store.sync.x-k8s.io";

/// A DNS subdomain (RFC 1123), as `secretProviderClassName` and
/// `serviceAccountName` must be.
pub const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// `sourcePath` and `targetKey`.
pub const DATA_KEY_PATTERN: &str =
    r"^[A-Za-z0-9.]([-A-Za-z0-9]+([-._a-zA-Z0-9]?[A-Za-z0-9])*)?(\/([0-9]+))*$";
/// `forceSynchronization`.
pub const FORCE_SYNC_PATTERN: &str = r"^[A-Za-z0-9]([-A-Za-z0-9]+([-._a-zA-Z0-9]?[A-Za-z0-9])*)?$";

/// A Secret, of the SecretSync's name and namespace, kept in sync with a SecretProviderClass.
#[derive(
    CustomResource, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "secret-sync.x-k8s.io",
    version = "v1alpha1",
    kind = "SecretSync",
    doc = "SecretSync keeps a Kubernetes Secret, named after it, in sync with the objects of a SecretProviderClass",
    plural = "secretsyncs",
    namespaced,
    status = "SecretSyncStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct SecretSyncSpec {
    /// The controller that serves this SecretSync (informational, as upstream).
    #[serde(default)]
    #[schemars(default = "empty")]
    pub secret_sync_controller_name: String,
    /// The SecretProviderClass, in the SecretSync's namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub secret_provider_class_name: String,
    /// The service account whose identity fetches the objects, in the SecretSync's namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub service_account_name: String,
    pub secret_object: SecretSyncObject,
    /// Change it to sync again at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(max = 253), regex(pattern = FORCE_SYNC_PATTERN))]
    pub force_synchronization: Option<String>,
}

fn empty() -> String {
    String::new()
}

fn opaque() -> String {
    "Opaque".to_owned()
}

/// The Secret to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretSyncObject {
    /// The Secret's type.
    #[serde(rename = "type", default = "opaque")]
    #[schemars(length(max = 253))]
    pub type_: String,
    /// Keys of the Secret and the provider files their values come from.
    #[schemars(length(min = 1))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["targetKey".into()]))]
    pub data: Vec<SecretSyncData>,
    /// Labels of the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = Rule::new("(self.all(x, x.size() <= 317 && self[x].size() <= 63) == true)").message("Label keys must not exceed 317 characters (254 for prefix+separator, 63 for name), label values must not exceed 63 characters."),
        validation = Rule::new("(self.all(x, x.startsWith('secrets-store.sync.x-k8s.io') == false))").message("Labels should not contain secrets-store.sync.x-k8s.io. This key is reserved for the controller.")
    )]
    #[schemars(with = "BTreeMap<String, String>")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations of the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = Rule::new("(self.all(x, x.size() < 317 && self[x].size() <= 262144) == true)").message("Annotations keys must not exceed 317 characters (254 for prefix+separator, 63 for name), annotation values must not exceed 256 kB."),
        validation = Rule::new("(self.all(x, x.startsWith('secrets-store.sync.x-k8s.io') == false))").message("Annotations should not contain secrets-store.sync.x-k8s.io. This key is reserved for the controller.")
    )]
    #[schemars(with = "BTreeMap<String, String>")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Default for SecretSyncObject {
    fn default() -> Self {
        Self { type_: opaque(), data: Vec::new(), labels: None, annotations: None }
    }
}

/// One key of the Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretSyncData {
    /// The path of a file the provider returns.
    #[schemars(length(min = 1, max = 253), regex(pattern = DATA_KEY_PATTERN))]
    pub source_path: String,
    /// The key in the Secret's data.
    #[schemars(length(min = 1, max = 253), regex(pattern = DATA_KEY_PATTERN))]
    pub target_key: String,
}

/// What the controller last did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretSyncStatus {
    /// Digest of what was written (data, class and SecretSync identity and generation, forceSynchronization), as upstream computes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub sync_hash: Option<String>,
    /// When the Secret was last written from the provider (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub last_successful_sync_time: Option<String>,
    /// `Create` and `Update`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// `metav1.Condition`, with its schema.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    #[schemars(
        length(max = 316),
        regex(
            pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
        )
    )]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[schemars(extend("enum" = ["True", "False", "Unknown"]))]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "i64", range(min = 0))]
    pub observed_generation: Option<i64>,
    /// RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
    #[schemars(
        length(min = 1, max = 1024),
        regex(pattern = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    )]
    pub reason: String,
    #[schemars(length(max = 32768))]
    pub message: String,
}

impl SecretSyncObject {
    /// A label or annotation under the controller's reserved key, as
    /// (`"labels"` or `"annotations"`, the key): the CRD refuses them, and
    /// the controller for objects written before it did.
    pub fn reserved_key(&self) -> Option<(&'static str, &str)> {
        fn reserved(map: &Option<BTreeMap<String, String>>) -> Option<&str> {
            map.iter().flatten().map(|(k, _)| k.as_str()).find(|k| k.starts_with(SYNC_RESERVED_KEY))
        }
        reserved(&self.labels)
            .map(|key| ("labels", key))
            .or_else(|| reserved(&self.annotations).map(|key| ("annotations", key)))
    }
}

impl SecretSync {
    pub fn name_str(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    pub fn namespace_str(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }

    /// `namespace/name`, for messages.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.namespace_str(), self.name_str())
    }
}
