//! sscsi as a client of external providers: the real client against a
//! v1alpha1 server on a real unix socket.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sscsi_core::{ErrorCode, ExternalProviders, MountRequest, ObjectVersion, ServiceAccountToken};
use sscsi_provider_grpc::{ExternalSockets, SocketOptions};
use sscsi_provider_kit::BackendStats;
use sscsi_testkit::provider::{Answer, FakeProvider};

fn options(dir: &std::path::Path) -> SocketOptions {
    SocketOptions {
        dirs: vec![dir.join("etc"), dir.join("var")],
        max_recv_msg_size: 64 * 1024,
        timeout: Duration::from_millis(500),
        attempts: 3,
        retry_backoff: Duration::from_millis(1),
    }
}

fn request(target: PathBuf) -> MountRequest {
    MountRequest {
        parameters: BTreeMap::from([
            ("objects".into(), "- name: db\n".into()),
            ("csi.storage.k8s.io/pod.name".into(), "web-0".into()),
            ("csi.storage.k8s.io/pod.namespace".into(), "shop".into()),
        ]),
        tokens: BTreeMap::from([(
            "akeyless".into(),
            ServiceAccountToken {
                token: "tok-9".into(),
                expiration_timestamp: "2030-01-01T00:00:00Z".into(),
            },
        )]),
        secrets: BTreeMap::from([("client-secret".into(), "cs-1".into())]),
        current_versions: vec![ObjectVersion { id: "db".into(), version: "1".into() }],
        target_path: Some(target),
        ..MountRequest::default()
    }
}

fn files(answer: &[(&str, i32, &str)]) -> Vec<(String, i32, Vec<u8>)> {
    answer.iter().map(|(p, m, c)| ((*p).to_owned(), *m, c.as_bytes().to_vec())).collect()
}

fn v(id: &str, version: &str) -> Vec<(String, String)> {
    vec![(id.to_owned(), version.to_owned())]
}

#[tokio::test]
async fn mounts_through_the_socket_as_the_driver_does() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProvider::start(
        &dir.path().join("var"),
        "akeyless",
        Answer::Files(files(&[("db", 0o600, "s3cr3t"), ("nested/cfg", 0o644, "x")]), v("db", "2")),
    );
    let sockets = ExternalSockets::new(options(dir.path()), &BackendStats::default());
    let provider = sockets.find("akeyless").unwrap();
    assert!(provider.writes_target());
    let response = provider.mount(&request(dir.path().join("target"))).await.unwrap();
    assert_eq!(response.files.len(), 2);
    assert_eq!(response.files[0].path, "db");
    assert_eq!(response.files[0].mode, 0o600);
    assert_eq!(response.files[0].contents.expose(), b"s3cr3t");
    assert_eq!(response.versions, vec![ObjectVersion { id: "db".into(), version: "2".into() }]);
    assert!(!response.written_by_provider);

    let sent = fake.requests();
    assert_eq!(sent.len(), 1);
    let attributes: BTreeMap<String, String> = serde_json::from_str(&sent[0].attributes).unwrap();
    assert_eq!(attributes["objects"], "- name: db\n");
    assert_eq!(attributes["csi.storage.k8s.io/pod.name"], "web-0");
    assert_eq!(
        attributes["csi.storage.k8s.io/serviceAccount.tokens"],
        r#"{"akeyless":{"token":"tok-9","expirationTimestamp":"2030-01-01T00:00:00Z"}}"#
    );
    assert_eq!(sent[0].secrets, r#"{"client-secret":"cs-1"}"#);
    assert_eq!(sent[0].permission, "420");
    assert_eq!(sent[0].target_path, dir.path().join("target").display().to_string());
    assert_eq!(sent[0].current_object_version[0].version, "1");
    // The same client serves the next class naming the provider.
    assert!(Arc::ptr_eq(&provider, &sockets.find("akeyless").unwrap()));
}

#[tokio::test]
async fn provider_errors_keep_their_code_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let fake =
        FakeProvider::start(&dir.path().join("etc"), "conjur", Answer::Code("BadAuth".into()));
    let sockets = ExternalSockets::new(options(dir.path()), &BackendStats::default());
    let provider = sockets.find("conjur").unwrap();
    let err = provider.mount(&request(dir.path().into())).await.unwrap_err();
    assert_eq!(err.reason(), "BadAuth", "the provider's code is the reason, as upstream");
    assert!(
        err.to_string().contains("mount request failed with provider error code BadAuth"),
        "{err}"
    );
    assert!(err.to_string().contains("conjur.sock"), "{err}");

    fake.answer(Answer::Status(tonic::Code::PermissionDenied, "role app may not read db".into()));
    let err = provider.mount(&request(dir.path().into())).await.unwrap_err();
    assert_eq!((err.code(), err.reason()), (ErrorCode::PermissionDenied, "GRPCProviderError"));
    assert!(err.to_string().contains("role app may not read db"), "{err}");

    fake.answer(Answer::Files(files(&[("a", 0o644, "x")]), vec![]));
    let err = provider.mount(&request(dir.path().into())).await.unwrap_err();
    assert_eq!(err.reason(), "GRPCProviderError");
    assert!(err.to_string().ends_with("missing object versions"), "{err}");

    // Nothing secret in any of it.
    for e in [err.to_string(), format!("{err:?}")] {
        assert!(!e.contains("tok-9") && !e.contains("cs-1"), "{e}");
    }
}

#[tokio::test]
async fn a_slow_provider_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProvider::start(&dir.path().join("var"), "slow", Answer::Hang);
    let sockets = ExternalSockets::new(options(dir.path()), &BackendStats::default());
    let err = sockets.find("slow").unwrap().mount(&request(dir.path().into())).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::DeadlineExceeded, "{err}");
    assert!(err.to_string().contains("slow.sock"), "{err}");
    assert_eq!(fake.requests().len(), 1, "a slow answer is not retried");
}

#[tokio::test]
async fn a_provider_that_is_not_running_is_named_by_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    // A socket file left by a provider that exited: nobody listens.
    let socket = dir.path().join("var/gone.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let stats = BackendStats::default();
    let sockets = ExternalSockets::new(options(dir.path()), &stats);
    let err = sockets.find("gone").unwrap().mount(&request(dir.path().into())).await.unwrap_err();
    assert_eq!((err.code(), err.reason()), (ErrorCode::Unavailable, "GRPCProviderError"));
    let text = err.to_string();
    assert!(text.contains(&socket.display().to_string()), "{text}");
    assert!(text.contains("is the provider running?"), "{text}");
    assert_eq!(stats.provider("gone").retries_count(), 2, "three attempts, as upstream");

    // No socket at all: the lookup says where it looked.
    let missing = sockets.find("infisical").unwrap_err();
    assert!(missing.contains("no infisical.sock in"), "{missing}");
    assert!(missing.contains(&dir.path().join("etc").display().to_string()), "{missing}");
}

#[tokio::test]
async fn an_answer_over_the_size_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let big = "x".repeat(100 * 1024);
    let _fake = FakeProvider::start(
        &dir.path().join("var"),
        "huge",
        Answer::Files(files(&[("big", 0o644, &big)]), v("big", "1")),
    );
    let sockets = ExternalSockets::new(options(dir.path()), &BackendStats::default());
    let err = sockets.find("huge").unwrap().mount(&request(dir.path().into())).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ResourceExhausted, "{err}");
    assert!(err.to_string().contains("--max-call-recv-msg-size"), "{err}");
}

#[tokio::test]
async fn health_checks_ask_for_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProvider::start(&dir.path().join("var"), "akeyless", Answer::Hang);
    let sockets = ExternalSockets::new(options(dir.path()), &BackendStats::default());
    assert!(sockets.check_health().await.is_empty(), "nothing dialled yet");
    sockets.find("akeyless").unwrap();
    assert_eq!(sockets.check_health().await, vec![("akeyless".to_owned(), true)]);
    assert_eq!(fake.versions_asked(), vec!["v1alpha1"]);
    // A socket nobody listens on any more.
    let socket = dir.path().join("var/gone.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    sockets.find("gone").unwrap();
    assert_eq!(
        sockets.check_health().await,
        vec![("akeyless".to_owned(), true), ("gone".to_owned(), false)]
    );
    let mut registry = prometheus_client::registry::Registry::default();
    sockets.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains(r#"sscsi_external_provider_up{provider="gone"} 0"#), "{text}");
    assert!(text.contains(r#"sscsi_external_provider_up{provider="akeyless"} 1"#), "{text}");
}
