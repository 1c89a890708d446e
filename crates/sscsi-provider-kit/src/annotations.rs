//! One cache of service-account annotations for every provider.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use tokio::time::Instant;

/// How long an account's annotations are reused: an annotation edit reaches
/// mounts within a minute, and a burst of mounts reads each account once.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// An account's annotations, shared by every reader.
pub type Annotations = Arc<BTreeMap<String, String>>;

/// Annotations per (namespace, name), each read again once `ttl` has passed.
/// A missing account is not remembered, so creating it takes effect at once;
/// nor is an error.
pub struct ServiceAccountAnnotations {
    ttl: Duration,
    cache: Mutex<HashMap<(String, String), (Annotations, Instant)>>,
}

impl std::fmt::Debug for ServiceAccountAnnotations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountAnnotations").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl Default for ServiceAccountAnnotations {
    fn default() -> Self {
        Self::new(DEFAULT_TTL)
    }
}

impl ServiceAccountAnnotations {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, cache: Mutex::default() }
    }

    /// The annotations of service account `namespace/name`; `None` when it
    /// does not exist.
    pub async fn get(
        &self,
        client: &kube::Client,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Annotations>, kube::Error> {
        let key = (namespace.to_owned(), name.to_owned());
        let cached = self.cache.lock().expect("annotations lock").get(&key).cloned();
        if let Some((annotations, _)) = cached.filter(|(_, at)| at.elapsed() < self.ttl) {
            return Ok(Some(annotations));
        }
        let api: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), namespace);
        let Some(account) = api.get_metadata_opt(name).await? else {
            self.cache.lock().expect("annotations lock").remove(&key);
            return Ok(None);
        };
        let annotations: Annotations = Arc::new(account.metadata.annotations.unwrap_or_default());
        self.cache
            .lock()
            .expect("annotations lock")
            .insert(key, (annotations.clone(), Instant::now()));
        Ok(Some(annotations))
    }
}

#[cfg(test)]
mod tests {
    use kube::api::{Api, Patch, PatchParams, PostParams};
    use sscsi_testkit::kube_api::ApiServer;

    use super::*;

    async fn account(client: &kube::Client, name: &str, role: &str) {
        let sa: ServiceAccount = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop", "annotations": {"role": role}}
        }))
        .unwrap();
        Api::namespaced(client.clone(), "shop").create(&PostParams::default(), &sa).await.unwrap();
    }

    async fn annotate(client: &kube::Client, name: &str, role: &str) {
        let patch = serde_json::json!({"metadata": {"annotations": {"role": role}}});
        Api::<ServiceAccount>::namespaced(client.clone(), "shop")
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }

    fn role(annotations: Option<Annotations>) -> Option<String> {
        annotations.and_then(|a| a.get("role").cloned())
    }

    #[tokio::test]
    async fn read_once_per_ttl_and_absence_not_remembered() {
        let api = ApiServer::start().await;
        let client = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
        account(&client, "app", "a").await;

        // Within the TTL the first answer serves, even after an edit.
        let cached = ServiceAccountAnnotations::new(Duration::from_secs(3600));
        assert_eq!(role(cached.get(&client, "shop", "app").await.unwrap()), Some("a".into()));
        annotate(&client, "app", "b").await;
        assert_eq!(role(cached.get(&client, "shop", "app").await.unwrap()), Some("a".into()));
        // Past it (a zero TTL: always past), the account is read again.
        let fresh = ServiceAccountAnnotations::new(Duration::ZERO);
        assert_eq!(role(fresh.get(&client, "shop", "app").await.unwrap()), Some("b".into()));

        // A missing account is `None`, and once created it is seen at once.
        assert_eq!(cached.get(&client, "shop", "later").await.unwrap(), None);
        account(&client, "later", "c").await;
        assert_eq!(role(cached.get(&client, "shop", "later").await.unwrap()), Some("c".into()));
    }
}
