//! SecretProviderClassPodStatus objects and Events on the pod.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use sscsi_api::{
    NODE_NAME_LABEL, SecretProviderClassObject, SecretProviderClassPodStatus,
    SecretProviderClassPodStatusStatus, pod_status_name,
};
use sscsi_core::PodInfo;
use sscsi_node::Backoff;
use sscsi_node::observer::{
    FailedPublish, MountedReport, MountedVolume, ObserverError, VolumeObserver,
};

use crate::outbox::Outbox;
use crate::sync::{SyncPolicy, sync_secrets};

/// Retries of a failed status or event write: soon, then at most every 30 s.
const WRITE_BACKOFF: Backoff =
    Backoff { base: Duration::from_millis(500), cap: Duration::from_secs(30) };

/// The event source, as upstream's controller names itself.
const REPORTER: &str = "csi-secrets-store-controller";

#[derive(Clone)]
pub struct KubeObserver {
    client: Client,
    node_id: String,
    outbox: Outbox,
    sync: SyncPolicy,
}

impl std::fmt::Debug for KubeObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeObserver").field("node_id", &self.node_id).finish()
    }
}

impl KubeObserver {
    /// Starts the writer of statuses and events (see [`Outbox`]) on the
    /// current runtime.
    pub fn new(client: Client, node_id: String) -> Self {
        Self::with_write_backoff(client, node_id, WRITE_BACKOFF)
    }

    /// As [`KubeObserver::new`], retrying failed writes after `backoff`.
    pub fn with_write_backoff(client: Client, node_id: String, backoff: Backoff) -> Self {
        let reporter =
            Reporter { controller: REPORTER.to_owned(), instance: Some(node_id.clone()) };
        let recorder = Recorder::new(client.clone(), reporter);
        let outbox = Outbox::start(client.clone(), recorder, backoff);
        Self { client, node_id, outbox, sync: SyncPolicy::Disabled }
    }

    /// Resolves once every status and event reported so far is written.
    pub async fn settled(&self) {
        self.outbox.settled().await;
    }

    /// Mirrors `secretObjects` into Kubernetes Secrets under `policy`.
    pub fn with_secret_sync(mut self, policy: SyncPolicy) -> Self {
        self.sync = policy;
        self
    }

    fn desired(&self, name: &str, volume: &MountedVolume<'_>) -> SecretProviderClassPodStatus {
        let pod = volume.pod;
        let mut objects: Vec<SecretProviderClassObject> = volume
            .versions
            .iter()
            .map(|v| SecretProviderClassObject { id: v.id.clone(), version: v.version.clone() })
            .collect();
        objects.sort();
        let mut status = SecretProviderClassPodStatus::new(name, Default::default());
        status.metadata = ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(pod.namespace.clone()),
            labels: Some(BTreeMap::from([(NODE_NAME_LABEL.to_owned(), self.node_id.clone())])),
            annotations: volume.pinned_generation.map(|generation| {
                BTreeMap::from([(CLASS_GENERATION_ANNOTATION.to_owned(), generation.to_string())])
            }),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".to_owned(),
                kind: "Pod".to_owned(),
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        status.status = Some(SecretProviderClassPodStatusStatus {
            pod_name: pod.name.clone(),
            secret_provider_class_name: volume.secret_provider_class.to_owned(),
            mounted: true,
            target_path: volume.target_path.display().to_string(),
            objects: Some(objects),
        });
        status
    }

    fn event(&self, pod: &PodInfo, type_: EventType, reason: &str, note: String) {
        let reference = ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Pod".to_owned()),
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            uid: Some(pod.uid.clone()).filter(|u| !u.is_empty()),
            ..Default::default()
        };
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(truncate(note, MAX_NOTE_BYTES)),
            action: "NodePublishVolume".to_owned(),
            secondary: None,
        };
        self.outbox.event(event, reference);
    }
}

/// On the pod status object with `--pin-class-generation`: the
/// `metadata.generation` of the SecretProviderClass the volume keeps using.
pub const CLASS_GENERATION_ANNOTATION: &str = "sscsi.io/class-generation";

/// The API server rejects an event note over 1 KiB.
const MAX_NOTE_BYTES: usize = 1024;

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max - 3;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

pub(crate) fn same(
    current: &SecretProviderClassPodStatus,
    desired: &SecretProviderClassPodStatus,
) -> bool {
    let label = |s: &SecretProviderClassPodStatus| {
        s.metadata.labels.as_ref().and_then(|l| l.get(NODE_NAME_LABEL)).cloned()
    };
    let owners = |s: &SecretProviderClassPodStatus| {
        s.metadata
            .owner_references
            .iter()
            .flatten()
            .map(|o| (o.kind.clone(), o.name.clone(), o.uid.clone()))
            .collect::<Vec<_>>()
    };
    let generation = |s: &SecretProviderClassPodStatus| {
        s.metadata.annotations.as_ref().and_then(|a| a.get(CLASS_GENERATION_ANNOTATION)).cloned()
    };
    current.status == desired.status
        && label(current) == label(desired)
        && generation(current) == generation(desired)
        && owners(current) == owners(desired)
}

#[async_trait]
impl VolumeObserver for KubeObserver {
    async fn mounted(&self, volume: MountedVolume<'_>) -> Result<MountedReport, ObserverError> {
        // Written off the publish path (we differ from upstream on purpose:
        // a pod does not wait for, nor fail on, the API server's answer).
        if volume.versions_changed {
            let name = pod_status_name(
                &volume.pod.name,
                &volume.pod.namespace,
                volume.secret_provider_class,
            );
            self.outbox.status(self.desired(&name, &volume), !volume.refresh);
        }
        if volume.refresh && volume.content_changed {
            let note = format!(
                "successfully rotated mounted contents for SecretProviderClass {}/{} (provider {})",
                volume.pod.namespace, volume.secret_provider_class, volume.provider
            );
            self.event(volume.pod, EventType::Normal, "SecretRotationComplete", note);
        }
        // Sync never fails the mount: its errors are events and metrics.
        let outcome =
            sync_secrets(&self.client, &self.sync, volume.pod, volume.secret_objects, volume.files)
                .await;
        let mut report =
            MountedReport { secrets_synced: outcome.synced, sync_failures: Vec::new() };
        for e in outcome.errors {
            tracing::warn!(pod = volume.pod.name, namespace = volume.pod.namespace, error = %e, "secret sync failed");
            report.sync_failures.push(e.reason());
            let note = format!(
                "SecretProviderClass {}/{}: {e}",
                volume.pod.namespace, volume.secret_provider_class
            );
            self.event(volume.pod, EventType::Warning, e.reason(), note);
        }
        Ok(report)
    }

    async fn publish_failed(&self, failure: FailedPublish<'_>) {
        // Events need a reason; upstream has none for argument errors.
        let reason = if failure.reason.is_empty() { "FailedMount" } else { failure.reason };
        let provider = if failure.provider.is_empty() { "unknown" } else { failure.provider };
        let note = format!(
            "SecretProviderClass {}/{}, provider {provider}: {}",
            failure.pod.namespace, failure.secret_provider_class, failure.message
        );
        self.event(failure.pod, EventType::Warning, reason, note);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_cut_to_what_the_api_accepts() {
        assert_eq!(truncate("short".into(), 1024), "short");
        let long = truncate("é".repeat(1000), 1024);
        assert!(long.len() <= 1024 && long.ends_with("..."), "{}", long.len());
    }
}
