use std::sync::Mutex;

use sscsi_core::{MountResponse, ProviderFailure};

use super::*;

/// A provider that answers from what it was asked, and keeps the request:
/// the engine's own contract is what it passes on.
#[derive(Debug, Default)]
struct Echo {
    reads_files: bool,
    asked: Mutex<Vec<MountRequest>>,
}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

impl ProviderFailure for Refused {
    fn code(&self) -> sscsi_core::ErrorCode {
        sscsi_core::ErrorCode::PermissionDenied
    }
}

#[async_trait]
impl Provider for Echo {
    fn name(&self) -> &str {
        if self.reads_files { "files" } else { "echo" }
    }

    async fn mount(&self, request: &MountRequest) -> Result<MountResponse, ProviderError> {
        self.asked.lock().unwrap().push(request.clone());
        if request.parameters.contains_key("refuse") {
            return Err(Refused.into());
        }
        let versions = ["b", "a"]
            .into_iter()
            .map(|id| ObjectVersion { id: id.into(), version: "1".into() })
            .collect();
        let files = vec![SecretFile {
            path: "a".into(),
            mode: request.default_file_mode,
            contents: "x".into(),
        }];
        Ok(MountResponse::new(files, versions))
    }

    fn reads_mounted_files(&self, request: &MountRequest) -> bool {
        assert!(request.current_files.is_empty(), "asked before the files are read");
        self.reads_files
    }
}

struct Mounted;

#[async_trait]
impl MountedFiles for Mounted {
    async fn read(&self) -> BTreeMap<String, SecretBytes> {
        BTreeMap::from([("a".to_owned(), SecretBytes::from("held"))])
    }
}

fn class(provider: &str, parameters: serde_json::Value) -> SecretProviderClass {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": "app", "namespace": "shop"},
        "spec": {"provider": provider, "parameters": parameters},
    }))
    .unwrap()
}

/// What kubelet passed for a pod, held for the fetches of a test.
#[derive(Default)]
struct Pod {
    attributes: BTreeMap<String, String>,
    info: PodInfo,
    tokens: BTreeMap<String, ServiceAccountToken>,
    secrets: BTreeMap<String, SecretBytes>,
}

impl Pod {
    fn fetch<'a>(
        &'a self,
        class: &'a SecretProviderClass,
        held: &'a [ObjectVersion],
        mounted: Option<&'a dyn MountedFiles>,
        purpose: Purpose,
    ) -> Fetch<'a> {
        let identity = Identity { pod: &self.info, tokens: &self.tokens, secrets: &self.secrets };
        Fetch {
            class,
            attributes: &self.attributes,
            identity,
            held,
            mounted,
            purpose,
            target_path: None,
        }
    }
}

fn engine() -> (Engine, Arc<Echo>, Arc<Echo>) {
    let (echo, files) =
        (Arc::new(Echo::default()), Arc::new(Echo { reads_files: true, ..Default::default() }));
    let mut providers = ProviderRegistry::new();
    providers.register(echo.clone());
    providers.register(files.clone());
    (Engine::new(providers, Duration::from_secs(120)), echo, files)
}

#[tokio::test]
async fn the_request_merges_attributes_over_parameters_and_says_how_fresh() {
    let (engine, echo, _) = engine();
    let class = class("echo", serde_json::json!({"objects": "from-class", "region": "a"}));
    let pod = Pod {
        attributes: BTreeMap::from([("region".to_owned(), "b".to_owned())]),
        info: PodInfo { name: "web-0".into(), namespace: "shop".into(), ..Default::default() },
        ..Default::default()
    };
    let held = [ObjectVersion { id: "a".into(), version: "0".into() }];
    for (purpose, held, reuse) in [
        (Purpose::FirstMount, &held[..0], BURST_WINDOW),
        (Purpose::Rotation, &held[..], Duration::from_secs(120)),
        (Purpose::Forced, &held[..], Duration::ZERO),
    ] {
        let fetched =
            engine.fetch(pod.fetch(&class, held, Some(&Mounted), purpose)).await.0.unwrap();
        let ids: Vec<&str> = fetched.versions.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"], "versions come back sorted");
        let asked = echo.asked.lock().unwrap().pop().unwrap();
        assert_eq!(asked.parameters["region"], "b");
        assert_eq!(asked.parameters["objects"], "from-class");
        assert_eq!(asked.reuse, reuse, "{purpose:?}");
        assert_eq!(asked.current_versions, held);
        assert_eq!(asked.default_file_mode, 0o644);
        assert!(asked.current_files.is_empty(), "a provider that reads none gets none");
    }
}

#[tokio::test]
async fn mounted_files_only_for_a_provider_that_reads_them_on_a_refresh() {
    let (engine, _, files) = engine();
    let class = class("files", serde_json::json!({}));
    let pod = Pod::default();
    let held = [ObjectVersion { id: "a".into(), version: "1".into() }];
    for (held, want) in [(&held[..0], 0), (&held[..], 1)] {
        engine.fetch(pod.fetch(&class, held, Some(&Mounted), Purpose::Rotation)).await.0.unwrap();
        let asked = files.asked.lock().unwrap().pop().unwrap();
        assert_eq!(asked.current_files.len(), want);
    }
}

#[tokio::test]
async fn unknown_providers_and_failures_name_the_class_and_provider() {
    let (engine, _, _) = engine();
    let mut pod = Pod::default();
    pod.info.namespace = "shop".into();
    pod.info.service_account = "web".into();
    let fetch = |class| pod.fetch(class, &[], None, Purpose::FirstMount);
    let missing = class("gcp", serde_json::json!({}));
    let (result, call) = engine.fetch(fetch(&missing)).await;
    assert_eq!(
        result.unwrap_err().to_string(),
        r#"SecretProviderClass shop/app: provider "gcp" is not available in this sscsi; available: echo, files"#
    );
    assert!(call.is_none(), "no provider was called");
    let refused = class("echo", serde_json::json!({"refuse": "yes"}));
    let (result, call) = engine.fetch(fetch(&refused)).await;
    let err = result.unwrap_err();
    // Whose permissions were refused is said.
    assert_eq!(err.to_string(), r#"provider "echo" (as service account shop/web): refused"#);
    assert!(
        matches!(&err, FetchError::Provider { source, .. } if source.code() == sscsi_core::ErrorCode::PermissionDenied)
    );
    assert!(!call.unwrap().ok);
}

/// sscsi's own parameters never reach a provider; the files they declare
/// come back beside the provider's, and a wrong declaration is refused
/// before the provider is asked anything.
#[tokio::test]
async fn built_files_are_added_and_their_parameters_kept_from_the_provider() {
    let (engine, echo, _) = engine();
    let files = "- {path: a.env, format: env, entries: {A: a}}";
    let good = class(
        "echo",
        serde_json::json!({"objects": "o", "sscsi.io/files": files, "sscsi.io/other": "x"}),
    );
    let pod = Pod::default();
    let fetched = engine.fetch(pod.fetch(&good, &[], None, Purpose::FirstMount)).await.0.unwrap();
    let paths: Vec<(&str, &[u8])> =
        fetched.files.iter().map(|f| (f.path.as_str(), f.contents.expose())).collect();
    assert_eq!(paths, [("a", &b"x"[..]), ("a.env", &b"A=x\n"[..])]);
    let asked = echo.asked.lock().unwrap().pop().unwrap();
    assert_eq!(asked.parameters.keys().collect::<Vec<_>>(), ["objects"]);

    // From a pod's volume attributes they are dropped, never obeyed.
    let pod = Pod {
        attributes: BTreeMap::from([
            ("sscsi.io/files".to_owned(), "- {path: b, format: toml}".to_owned()),
            ("sscsi.io/refresh".to_owned(), "sometimes".to_owned()),
        ]),
        ..Default::default()
    };
    let plain = class("echo", serde_json::json!({"objects": "o"}));
    let fetched = engine.fetch(pod.fetch(&plain, &[], None, Purpose::FirstMount)).await.0.unwrap();
    assert_eq!(fetched.files.len(), 1);
    let asked = echo.asked.lock().unwrap().pop().unwrap();
    assert_eq!(asked.parameters.keys().collect::<Vec<_>>(), ["objects"]);
    let pod = Pod::default();

    let bad = class("echo", serde_json::json!({"sscsi.io/files": "- {path: a, format: toml}"}));
    let err = engine.fetch(pod.fetch(&bad, &[], None, Purpose::FirstMount)).await.0.unwrap_err();
    assert!(matches!(err, FetchError::Files { .. }), "{err}");
    assert!(echo.asked.lock().unwrap().is_empty(), "the provider was not asked");
}

#[tokio::test]
async fn a_class_refreshed_more_often_takes_no_older_answers_than_its_interval() {
    let (engine, echo, _) = engine();
    let held = [ObjectVersion { id: "a".into(), version: "0".into() }];
    let pod = Pod::default();
    for (refresh, reuse) in [("30s", 30), ("1h", 120), ("once", 120), ("default", 120)] {
        let class = class("echo", serde_json::json!({"sscsi.io/refresh": refresh}));
        engine.fetch(pod.fetch(&class, &held, None, Purpose::Rotation)).await.0.unwrap();
        let asked = echo.asked.lock().unwrap().pop().unwrap();
        assert_eq!(asked.reuse, Duration::from_secs(reuse), "{refresh}");
        assert!(asked.parameters.is_empty(), "sscsi's parameters stay with sscsi");
    }
    let class = class("echo", serde_json::json!({"sscsi.io/refresh": "sometimes"}));
    let err = engine.fetch(pod.fetch(&class, &held, None, Purpose::Rotation)).await.0.unwrap_err();
    assert!(err.to_string().contains("parameter \"sscsi.io/refresh\""), "{err}");
}
