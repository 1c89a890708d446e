//! SecretProviderClasses from a watch-backed cache: kubelet republishes every
//! volume about once a minute, and a GET per publish would load the API
//! server for nothing. Like upstream the cache is cluster-wide.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use sscsi_api::SecretProviderClass;
use sscsi_node::spc::{SpcError, SpcSource};
use sscsi_node::{Condition, Readiness};
use tokio_util::sync::CancellationToken;

/// How long a publish waits for the first list before answering NotFound.
const SYNC_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct SpcCache {
    store: Store<SecretProviderClass>,
}

impl std::fmt::Debug for SpcCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpcCache").field("classes", &self.store.state().len()).finish()
    }
}

impl SpcCache {
    /// Starts the watch; marks [`Condition::CachesSynced`] once the first
    /// list is in. The task ends with `shutdown`.
    pub fn start(
        client: Client,
        readiness: Readiness,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        readiness.mark(Condition::CachesSynced, false);
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(
            writer,
            watcher(Api::<SecretProviderClass>::all(client), watcher::Config::default()),
        )
        .default_backoff()
        .applied_objects();
        let ready = store.clone();
        let task = tokio::spawn(async move {
            let synced = async {
                if ready.wait_until_ready().await.is_ok() {
                    readiness.mark(Condition::CachesSynced, true);
                    tracing::info!("SecretProviderClass cache synced");
                }
                std::future::pending::<()>().await
            };
            let drive = stream.for_each(|event| async move {
                if let Err(e) = event {
                    tracing::warn!(error = %e, "SecretProviderClass watch failed; retrying");
                }
            });
            tokio::select! {
                () = drive => {}
                () = synced => {}
                () = shutdown.cancelled() => {}
            }
        });
        (Self { store }, task)
    }
}

#[async_trait]
impl SpcSource for SpcCache {
    async fn get(&self, namespace: &str, name: &str) -> Result<SecretProviderClass, SpcError> {
        // Before the first list a miss means nothing; wait for it, briefly.
        let _ = tokio::time::timeout(SYNC_WAIT, self.store.wait_until_ready()).await;
        self.store
            .get(&ObjectRef::new(name).within(namespace))
            .map(|spc| (*spc).clone())
            .ok_or_else(|| SpcError::NotFound {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                source_name: "the API server".to_owned(),
            })
    }
}
