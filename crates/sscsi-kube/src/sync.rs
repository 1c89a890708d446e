//! Secret sync: a SecretProviderClass's `secretObjects` mirrored into
//! Kubernetes Secrets in the pod's namespace after every successful fetch.
//!
//! As upstream: `secretName`, `type`, `labels` (plus
//! `secrets-store.csi.k8s.io/managed=true`), `annotations`, and
//! `data[].objectName` → `data[].key` from the mounted files; owners are the
//! pod's owners (the pod itself when it has none), merged across pods.
//! `kubernetes.io/tls` Secrets get `tls.crt`/`tls.key` cut out of a PEM
//! bundle (see [`crate::tls`]). Beyond upstream: the Secret is written only
//! when its data, type, labels, annotations or owners differ, and only into
//! namespaces the operator allows.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{Api, PostParams};
use sscsi_api::SecretObject;
use sscsi_core::{PodInfo, SecretFile};

use crate::tls::{TlsError, tls_part};

/// The label upstream puts on every Secret it syncs.
pub const MANAGED_LABEL: &str = "secrets-store.csi.k8s.io/managed";

const TLS_TYPE: &str = "kubernetes.io/tls";

/// Which namespaces Secrets may be synced into.
#[derive(Debug, Clone, Default)]
pub enum SyncPolicy {
    /// `--enable-secret-sync` is off.
    #[default]
    Disabled,
    /// Every namespace, or only these.
    Enabled { allowed_namespaces: Option<BTreeSet<String>> },
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(
        "syncing Secrets into namespace {0} is not allowed by this driver (--sync-allowed-namespaces)"
    )]
    NamespaceNotAllowed(String),
    #[error("secretObjects[{index}].{field} is required")]
    Missing { index: usize, field: &'static str },
    #[error(
        "secretObjects[{index}] (Secret {secret}): file matching objectName {object:?} not found in the pod"
    )]
    FileNotFound { index: usize, secret: String, object: String },
    #[error(
        "secretObjects[{index}] (Secret {secret}): objectName {object:?} for key {key}: {source}"
    )]
    Tls { index: usize, secret: String, object: String, key: String, source: TlsError },
    #[error("Secret {namespace}/{name}: {source}")]
    Api { namespace: String, name: String, source: kube::Error },
}

impl SyncError {
    /// The reason of the Warning event on the pod.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NamespaceNotAllowed(_) => "SecretSyncNotAllowed",
            Self::Tls { .. } => "SecretTypeNotSupported",
            // Upstream's reason for every other sync failure.
            Self::Missing { .. } | Self::FileNotFound { .. } | Self::Api { .. } => {
                "FailedToCreateSecret"
            }
        }
    }
}

/// What one sync did.
#[derive(Debug, Default)]
pub struct SyncOutcome {
    /// Secrets now in sync (written, or already up to date).
    pub synced: usize,
    /// One error per Secret that failed, or one for the whole namespace.
    pub errors: Vec<SyncError>,
}

impl SyncOutcome {
    fn failed(error: SyncError) -> Self {
        Self { synced: 0, errors: vec![error] }
    }
}

/// Syncs every secretObject.
pub async fn sync_secrets(
    client: &Client,
    policy: &SyncPolicy,
    pod: &PodInfo,
    objects: &[SecretObject],
    files: &[SecretFile],
) -> SyncOutcome {
    let SyncPolicy::Enabled { allowed_namespaces } = policy else {
        return SyncOutcome::default();
    };
    if objects.is_empty() {
        return SyncOutcome::default();
    }
    if allowed_namespaces.as_ref().is_some_and(|allowed| !allowed.contains(&pod.namespace)) {
        return SyncOutcome::failed(SyncError::NamespaceNotAllowed(pod.namespace.clone()));
    }
    let owners = match owners_of(client, pod).await {
        Ok(owners) => owners,
        Err(source) => {
            let (namespace, name) = (pod.namespace.clone(), pod.name.clone());
            return SyncOutcome::failed(SyncError::Api { namespace, name, source });
        }
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), &pod.namespace);
    let mut outcome = SyncOutcome::default();
    for (index, object) in objects.iter().enumerate() {
        let result = match desired_secret(index, object, files, &pod.namespace, &owners) {
            Ok(secret) => apply(&api, secret).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => outcome.synced += 1,
            Err(e) => outcome.errors.push(e),
        }
    }
    outcome
}

/// The pod's own owners (ReplicaSet, StatefulSet, Job, ...), reduced to the
/// identifying fields; the pod itself when it has none.
async fn owners_of(client: &Client, pod: &PodInfo) -> Result<Vec<OwnerReference>, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let owners = pods
        .get_metadata_opt(&pod.name)
        .await?
        .and_then(|p| p.metadata.owner_references)
        .unwrap_or_default();
    let owners: Vec<OwnerReference> = owners
        .into_iter()
        .map(|o| OwnerReference {
            api_version: o.api_version,
            kind: o.kind,
            name: o.name,
            uid: o.uid,
            ..Default::default()
        })
        .collect();
    if owners.is_empty() {
        return Ok(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            ..Default::default()
        }]);
    }
    Ok(owners)
}

fn desired_secret(
    index: usize,
    object: &SecretObject,
    files: &[SecretFile],
    namespace: &str,
    owners: &[OwnerReference],
) -> Result<Secret, SyncError> {
    if let Some(field) = object.missing_field() {
        return Err(SyncError::Missing { index, field });
    }
    let name = object.secret_name.trim().to_owned();
    let type_ = object.type_.trim();
    let entries = object.data.as_deref().unwrap_or_default();
    let mut data = BTreeMap::new();
    for entry in entries {
        let object_name = entry.object_name.trim();
        let key = entry.key.trim();
        let file = files.iter().find(|f| f.path == object_name).ok_or_else(|| {
            SyncError::FileNotFound { index, secret: name.clone(), object: object_name.to_owned() }
        })?;
        let value = if type_ == TLS_TYPE {
            tls_part(key, file.contents.expose()).map_err(|source| SyncError::Tls {
                index,
                secret: name.clone(),
                object: object_name.to_owned(),
                key: key.to_owned(),
                source,
            })?
        } else {
            file.contents.expose().to_vec()
        };
        data.insert(key.to_owned(), ByteString(value));
    }
    let mut labels = object.labels.clone().unwrap_or_default();
    labels.insert(MANAGED_LABEL.to_owned(), "true".to_owned());
    let mut secret =
        Secret { data: Some(data), type_: Some(type_.to_owned()), ..Default::default() };
    secret.metadata.name = Some(name);
    secret.metadata.namespace = Some(namespace.to_owned());
    secret.metadata.labels = Some(labels);
    secret.metadata.annotations = object.annotations.clone().filter(|a| !a.is_empty());
    secret.metadata.owner_references = Some(owners.to_vec());
    Ok(secret)
}

/// Creates the Secret, or updates it when something differs; owners already
/// on it are kept (other pods of other owners share it).
async fn apply(api: &Api<Secret>, desired: Secret) -> Result<(), SyncError> {
    let name = desired.metadata.name.clone().unwrap_or_default();
    let namespace = desired.metadata.namespace.clone().unwrap_or_default();
    let api_err =
        |source| SyncError::Api { namespace: namespace.clone(), name: name.clone(), source };
    for _ in 0..2 {
        let result = match api.get_opt(&name).await.map_err(api_err)? {
            None => api.create(&PostParams::default(), &desired).await.map(drop),
            Some(current) => {
                let mut next = desired.clone();
                let mut owners = current.metadata.owner_references.clone().unwrap_or_default();
                for owner in desired.metadata.owner_references.iter().flatten() {
                    if !owners.iter().any(|o| o.uid == owner.uid) {
                        owners.push(owner.clone());
                    }
                }
                next.metadata.owner_references = Some(owners);
                if unchanged(&current, &next) {
                    return Ok(());
                }
                next.metadata.resource_version = current.metadata.resource_version;
                api.replace(&name, &PostParams::default(), &next).await.map(drop)
            }
        };
        match result {
            // Raced with another writer: read again and retry once.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            other => return other.map_err(api_err),
        }
    }
    Ok(())
}

fn unchanged(current: &Secret, next: &Secret) -> bool {
    let owners = |s: &Secret| {
        s.metadata.owner_references.iter().flatten().map(|o| o.uid.clone()).collect::<BTreeSet<_>>()
    };
    current.data == next.data
        && current.type_ == next.type_
        && current.metadata.labels == next.metadata.labels
        && current.metadata.annotations.clone().filter(|a| !a.is_empty())
            == next.metadata.annotations.clone().filter(|a| !a.is_empty())
        && owners(current) == owners(next)
}
