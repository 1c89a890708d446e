//! On-demand refresh: a new value of the pod annotation
//! `secrets-store.csi.k8s.io/refresh` makes the node re-fetch that pod's
//! volumes at once, whatever the poll interval (upstream has no way to,
//! issue #2061). Only pods on this node are watched.

use std::collections::HashMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use sscsi_node::Refresher;
use tokio_util::sync::CancellationToken;

pub const REFRESH_ANNOTATION: &str = "secrets-store.csi.k8s.io/refresh";

/// Watches this node's pods until `shutdown`.
pub fn watch_refresh_requests(
    client: Client,
    node_name: &str,
    refresher: Refresher,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    // Metadata only: the annotation is all this reads, and full pods would be
    // decoded (and their decoder linked) for nothing.
    let mut events =
        watcher(Api::<PartialObjectMeta<Pod>>::all(client), config).default_backoff().boxed();
    tokio::spawn(async move {
        // The annotation's value per pod, as last seen.
        let mut seen: HashMap<(String, String), Option<String>> = HashMap::new();
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                () = shutdown.cancelled() => return,
            };
            match event {
                Some(Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                    let key = (pod.namespace().unwrap_or_default(), pod.name_any());
                    let value = pod.annotations().get(REFRESH_ANNOTATION).cloned();
                    // A pod seen for the first time only sets the baseline.
                    let changed = seen
                        .insert(key.clone(), value.clone())
                        .is_some_and(|before| before != value);
                    if changed && value.is_some() {
                        let refresher = refresher.clone();
                        tokio::spawn(async move {
                            let n = refresher.refresh_pod(&key.0, &key.1).await;
                            tracing::info!(
                                namespace = key.0,
                                pod = key.1,
                                volumes = n,
                                "refresh requested by annotation"
                            );
                        });
                    }
                }
                Some(Ok(watcher::Event::Delete(pod))) => {
                    seen.remove(&(pod.namespace().unwrap_or_default(), pod.name_any()));
                }
                Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => {}
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                None => return,
            }
        }
    })
}
