//! `sscsi audit`: the hardening guide's questions about a cluster, answered
//! from the API in one pass: which classes exist by namespace and
//! provider, which sync into Secrets and where, which Secrets the driver
//! manages and who owns them, which classes (or pods) read with the node's
//! identity instead of their own, and which SecretSyncs exist. Only names,
//! parameters and metadata are read: never a Secret's data.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::{Api, ListParams};
use serde::Serialize;
use sscsi_api::{SecretProviderClass, SecretProviderClassPodStatus, SecretSync};
use sscsi_core::params::parse_go_bool;

use crate::Client;
use crate::sync::MANAGED_LABEL;

/// What the audit found, sorted by namespace and name.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Audit {
    pub classes: Vec<Class>,
    pub managed_secrets: Vec<ManagedSecret>,
    /// Classes, or pods mounting them, that read with the node's identity.
    pub node_identities: Vec<NodeIdentity>,
    pub secret_syncs: Vec<Sync>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Class {
    pub namespace: String,
    pub name: String,
    pub provider: String,
    /// The Secrets its `secretObjects` write, in its namespace (the pod's).
    pub syncs_into: Vec<String>,
    /// Pods mounting it now (its pod status objects).
    pub mounted_by: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManagedSecret {
    pub namespace: String,
    pub name: String,
    /// `Kind/name` of each owner reference.
    pub owners: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeIdentity {
    pub namespace: String,
    pub class: String,
    pub provider: String,
    /// The pod, when the finding is about a pod rather than the class.
    pub pod: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sync {
    pub namespace: String,
    pub name: String,
    pub class: String,
    pub service_account: String,
    /// The Secret it writes: its own name, in its namespace.
    pub secret_type: String,
}

/// Why a class reads with the node's identity, from its parameters alone.
fn class_node_identity(provider: &str, parameters: &BTreeMap<String, String>) -> Option<String> {
    let set = |key: &str| parameters.get(key).and_then(|v| parse_go_bool(v)).unwrap_or(false);
    match provider {
        "azure" if set("useVMManagedIdentity") => {
            Some("useVMManagedIdentity: the node's managed identity".to_owned())
        }
        "azure" if set("usePodIdentity") => {
            Some("usePodIdentity: aad-pod-identity's node-level NMI".to_owned())
        }
        "gcp" if parameters.get("auth").map(String::as_str) == Some("provider-adc") => {
            Some("auth: provider-adc: the node's service account".to_owned())
        }
        _ => None,
    }
}

/// Reads the cluster. Lists every SecretProviderClass, pod status object,
/// SecretSync and managed Secret (metadata only); for AWS classes mounted
/// with IRSA, the mounting pods' service accounts (metadata only).
pub async fn audit(client: &Client) -> Result<Audit, kube::Error> {
    let all = ListParams::default();
    let classes = Api::<SecretProviderClass>::all(client.clone()).list(&all).await?.items;
    let statuses = Api::<SecretProviderClassPodStatus>::all(client.clone()).list(&all).await?.items;
    let syncs = Api::<SecretSync>::all(client.clone()).list(&all).await?.items;
    let managed = ListParams::default().labels(&format!("{MANAGED_LABEL}=true"));
    let secrets = Api::<Secret>::all(client.clone()).list_metadata(&managed).await?.items;

    let mut audit = Audit::default();
    // (namespace, class) → the pods mounting it.
    let mut mounts: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for status in &statuses {
        let Some(s) = &status.status else { continue };
        let namespace = status.metadata.namespace.clone().unwrap_or_default();
        mounts
            .entry((namespace, s.secret_provider_class_name.clone()))
            .or_default()
            .push(s.pod_name.clone());
    }
    for class in &classes {
        let namespace = class.namespace_or_default();
        let name = class.name_str().to_owned();
        let provider = class.spec.provider.clone();
        let pods = mounts.get(&(namespace.clone(), name.clone())).cloned().unwrap_or_default();
        audit.classes.push(Class {
            namespace: namespace.clone(),
            name: name.clone(),
            provider: provider.clone(),
            syncs_into: class
                .spec
                .secret_objects
                .iter()
                .flatten()
                .map(|o| o.secret_name.clone())
                .collect(),
            mounted_by: pods.len(),
        });
        let parameters = class.parameters();
        if let Some(reason) = class_node_identity(&provider, parameters) {
            let (namespace, class, provider) = (namespace.clone(), name.clone(), provider.clone());
            audit.node_identities.push(NodeIdentity {
                namespace,
                class,
                provider,
                pod: None,
                reason,
            });
        }
        // ASCP with IRSA needs the pod's service account to name a role;
        // without one, only the node's credentials are left to read with.
        let pod_identity = parameters.get("usePodIdentity").and_then(|v| parse_go_bool(v));
        if provider == "aws" && pod_identity != Some(true) {
            for pod in pods {
                if let Some(reason) = aws_without_role(client, &namespace, &pod).await? {
                    audit.node_identities.push(NodeIdentity {
                        namespace: namespace.clone(),
                        class: name.clone(),
                        provider: provider.clone(),
                        pod: Some(pod),
                        reason,
                    });
                }
            }
        }
    }
    for secret in secrets {
        let meta = secret.metadata;
        audit.managed_secrets.push(ManagedSecret {
            namespace: meta.namespace.unwrap_or_default(),
            name: meta.name.unwrap_or_default(),
            owners: meta
                .owner_references
                .unwrap_or_default()
                .into_iter()
                .map(|o| format!("{}/{}", o.kind, o.name))
                .collect(),
        });
    }
    for sync in &syncs {
        audit.secret_syncs.push(Sync {
            namespace: sync.namespace_str().to_owned(),
            name: sync.name_str().to_owned(),
            class: sync.spec.secret_provider_class_name.clone(),
            service_account: sync.spec.service_account_name.clone(),
            secret_type: sync.spec.secret_object.type_.clone(),
        });
    }
    audit.classes.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    audit.managed_secrets.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    audit
        .node_identities
        .sort_by(|a, b| (&a.namespace, &a.class, &a.pod).cmp(&(&b.namespace, &b.class, &b.pod)));
    audit.secret_syncs.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(audit)
}

/// Why `pod` would read an AWS class with no role of its own, if it would.
async fn aws_without_role(
    client: &Client,
    namespace: &str,
    pod: &str,
) -> Result<Option<String>, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let Some(pod) = pods.get_opt(pod).await? else { return Ok(None) };
    let account = pod
        .spec
        .and_then(|s| s.service_account_name)
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "default".to_owned());
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let annotations =
        accounts.get_metadata_opt(&account).await?.and_then(|a| a.metadata.annotations);
    let role = annotations.as_ref().and_then(|a| a.get("eks.amazonaws.com/role-arn"));
    Ok(match role {
        Some(role) if !role.is_empty() => None,
        _ => Some(format!(
            "service account {account} has no eks.amazonaws.com/role-arn and the class does not set usePodIdentity: only the node's role could serve it (sscsi and ASCP refuse the mount)"
        )),
    })
}
