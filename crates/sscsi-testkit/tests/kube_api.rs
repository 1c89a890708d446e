//! The API double answers the real kube client as the API server would.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use sscsi_testkit::kube_api::ApiServer;

fn config_map(name: &str, value: &str) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.metadata.labels = Some([("app".to_owned(), "web".to_owned())].into());
    cm.data = Some([("k".to_owned(), value.to_owned())].into());
    cm
}

async fn client(api: &ApiServer) -> kube::Client {
    kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap()
}

fn code(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason),
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test]
async fn crud_with_the_api_servers_refusals() {
    let server = ApiServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "ns");
    let pp = PostParams::default();

    let created = api.create(&pp, &config_map("a", "1")).await.unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("ns"));
    assert!(created.metadata.uid.is_some() && created.metadata.resource_version.is_some());
    assert_eq!(
        code(api.create(&pp, &config_map("a", "2")).await.unwrap_err()),
        (409, "AlreadyExists".into())
    );
    assert_eq!(code(api.get("missing").await.unwrap_err()), (404, "NotFound".into()));
    assert!(api.get_opt("missing").await.unwrap().is_none());

    // Optimistic concurrency: a write with a stale resourceVersion is a Conflict.
    let mut update = created.clone();
    update.data = Some([("k".to_owned(), "2".to_owned())].into());
    let updated = api.replace("a", &pp, &update).await.unwrap();
    assert_ne!(updated.metadata.resource_version, created.metadata.resource_version);
    assert_eq!(code(api.replace("a", &pp, &update).await.unwrap_err()), (409, "Conflict".into()));

    // Merge patch, and server-side apply that creates.
    let patched = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"k": "3", "x": "y"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["k"], "3");
    let applied = api
        .patch("b", &PatchParams::apply("test"), &Patch::Apply(config_map("b", "9")))
        .await
        .unwrap();
    assert_eq!(applied.data.unwrap()["k"], "9");
    let strategic =
        api.patch("a", &PatchParams::default(), &Patch::Strategic(serde_json::json!({}))).await;
    assert_eq!(code(strategic.unwrap_err()).0, 415);

    let listed = api.list(&ListParams::default().labels("app=web")).await.unwrap();
    assert_eq!(listed.items.len(), 2);
    assert_eq!(api.list(&ListParams::default().labels("app=db")).await.unwrap().items.len(), 0);
    assert_eq!(
        api.list(&ListParams::default().fields("metadata.name=b")).await.unwrap().items.len(),
        1
    );

    api.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(code(api.delete("a", &DeleteParams::default()).await.unwrap_err()).0, 404);
}

#[tokio::test]
async fn watch_sees_existing_and_later_changes() {
    let server = ApiServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "ns");
    api.create(&PostParams::default(), &config_map("before", "1")).await.unwrap();
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    let mut seen = Vec::new();
    let writer = {
        let api = api.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            api.create(&PostParams::default(), &config_map("after", "2")).await.unwrap();
            api.delete("before", &DeleteParams::default()).await.unwrap();
        })
    };
    while seen.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match event {
            watcher::Event::InitApply(cm) | watcher::Event::Apply(cm) => {
                seen.push(format!("+{}", cm.metadata.name.unwrap()))
            }
            watcher::Event::Delete(cm) => seen.push(format!("-{}", cm.metadata.name.unwrap())),
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }
    writer.await.unwrap();
    assert_eq!(seen, vec!["+before", "+after", "-before"]);
}

#[tokio::test]
async fn token_request_returns_a_bound_token() {
    let server = ApiServer::start().await;
    let api: Api<ServiceAccount> = Api::namespaced(client(&server).await, "ns");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec!["vault".into()],
            expiration_seconds: Some(600),
            ..Default::default()
        },
        ..Default::default()
    };
    let response = api.create_token_request("app", &PostParams::default(), &request).await.unwrap();
    let status = response.status.unwrap();
    assert!(!status.token.is_empty());
    assert_eq!(response.spec.audiences, vec!["vault"]);
}

#[tokio::test]
async fn status_subresource_changes_only_the_status() {
    use k8s_openapi::api::core::v1::{Pod, PodStatus};
    let server = ApiServer::start().await;
    let api: Api<Pod> = Api::namespaced(client(&server).await, "ns");
    let mut pod = Pod::default();
    pod.metadata.name = Some("p".into());
    pod.metadata.labels = Some([("a".to_owned(), "1".to_owned())].into());
    api.create(&PostParams::default(), &pod).await.unwrap();

    let patch =
        serde_json::json!({"metadata": {"labels": {"a": "2"}}, "status": {"phase": "Running"}});
    let patched =
        api.patch_status("p", &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    assert_eq!(patched.status.unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(
        patched.metadata.labels.unwrap()["a"],
        "1",
        "metadata is not changed through status"
    );

    let mut replaced = api.get_status("p").await.unwrap();
    replaced.status = Some(PodStatus { phase: Some("Succeeded".into()), ..Default::default() });
    let stored = api.replace_status("p", &PostParams::default(), &replaced).await.unwrap();
    assert_eq!(stored.status.unwrap().phase.as_deref(), Some("Succeeded"));
    assert_eq!(code(api.get_status("gone").await.unwrap_err()).0, 404);
}

/// kube's metadata calls ask for `as=PartialObjectMetadata`: the answer holds
/// the metadata alone, for a get, a list and a watch.
#[tokio::test]
async fn metadata_requests_get_metadata_only() {
    let server = ApiServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "ns");
    api.create(&PostParams::default(), &config_map("a", "1")).await.unwrap();

    let meta = api.get_metadata_opt("a").await.unwrap().unwrap();
    assert_eq!(meta.metadata.labels.unwrap()["app"], "web");
    assert_eq!(meta.types.unwrap().kind, "PartialObjectMetadata");
    assert!(api.get_metadata_opt("missing").await.unwrap().is_none());
    let list = api.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].types.as_ref().unwrap().kind, "PartialObjectMetadata");

    let meta: Api<kube::core::PartialObjectMeta<ConfigMap>> =
        Api::namespaced(client(&server).await, "ns");
    let mut events = watcher(meta, watcher::Config::default()).boxed();
    api.create(&PostParams::default(), &config_map("b", "2")).await.unwrap();
    let mut names = Vec::new();
    while names.len() < 2 {
        match events.next().await.unwrap().unwrap() {
            watcher::Event::InitApply(m) | watcher::Event::Apply(m) => {
                names.push(m.metadata.name.unwrap())
            }
            _ => {}
        }
    }
    names.sort();
    assert_eq!(names, ["a", "b"]);

    // The object itself is untouched.
    assert_eq!(api.get("a").await.unwrap().data.unwrap()["k"], "1");
}
