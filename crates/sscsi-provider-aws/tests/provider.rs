//! The whole `aws` provider: IRSA through the Kubernetes API double and
//! moto's STS, then Secrets Manager and SSM on moto.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use kube::api::{Api, PostParams};
use sscsi_core::{ErrorCode, MountRequest, PodInfo, Provider, SecretBytes, ServiceAccountToken};
use sscsi_provider_aws::auth::KubeRoles;
use sscsi_provider_aws::{AwsEndpoints, AwsProvider};
use sscsi_testkit::kube_api::ApiServer;
use sscsi_testkit::moto::MotoServer;

/// A Secrets Manager client of moto's, for setting secrets up.
async fn secrets_manager(moto: &MotoServer) -> aws_sdk_secretsmanager::Client {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-west-2"))
        .endpoint_url(moto.url())
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .load()
        .await;
    aws_sdk_secretsmanager::Client::new(&config)
}

async fn seed(moto: &MotoServer) {
    let sm = secrets_manager(moto).await;
    sm.create_secret().name("app/db").secret_string("s3cret").send().await.unwrap();
}

async fn service_account(api: &ApiServer, name: &str, role: Option<&str>) {
    let client = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    let annotations = role
        .map_or(serde_json::json!({}), |r| serde_json::json!({"eks.amazonaws.com/role-arn": r}));
    let sa: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": "shop", "annotations": annotations}
        }))
        .unwrap();
    Api::namespaced(client, "shop").create(&PostParams::default(), &sa).await.unwrap();
}

fn request(service_account: &str, with_token: bool) -> MountRequest {
    let mut tokens = BTreeMap::new();
    if with_token {
        tokens.insert(
            "sts.amazonaws.com".to_owned(),
            ServiceAccountToken {
                token: SecretBytes::from("eyJhbGciOiJSUzI1NiJ9.e30.sig"),
                expiration_timestamp: "2030-01-01T00:00:00Z".into(),
            },
        );
    }
    MountRequest {
        parameters: BTreeMap::from([
            ("region".to_owned(), "us-west-2".to_owned()),
            (
                "objects".to_owned(),
                "- objectName: app/db\n  objectType: secretsmanager\n".to_owned(),
            ),
        ]),
        tokens,
        pod: PodInfo {
            name: "web-0".into(),
            namespace: "shop".into(),
            uid: "u".into(),
            service_account: service_account.into(),
        },
        default_file_mode: 0o644,
        ..Default::default()
    }
}

async fn provider(api: &ApiServer, moto: &MotoServer) -> AwsProvider {
    let client = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    AwsProvider::new(
        Arc::new(KubeRoles::new(client)),
        AwsEndpoints { aws: Some(moto.url()), pod_identity_agent: None, ..Default::default() },
        None,
    )
}

#[tokio::test]
async fn irsa_mount_reads_the_secret_with_the_service_accounts_role() {
    let (api, moto) = (ApiServer::start().await, MotoServer::start());
    seed(&moto).await;
    service_account(&api, "app", Some("arn:aws:iam::123456789012:role/app")).await;
    let aws = provider(&api, &moto).await;
    let response = aws.mount(&request("app", true)).await.unwrap();
    assert_eq!(response.files.len(), 1);
    assert_eq!(response.files[0].path, "app_db");
    assert_eq!(response.files[0].contents.expose(), b"s3cret");
    assert_eq!(response.versions[0].id, "app_db");
    // A second mount of the same identity reuses the exchanged credentials.
    aws.mount(&request("app", true)).await.unwrap();
}

/// The SDK's standard per-service settings: Secrets Manager and STS at moto,
/// SSM at an address nothing answers (so a fallback to it would fail), read
/// from the environment as the binary reads it.
#[tokio::test]
async fn per_service_endpoint_settings_are_honoured() {
    let (api, moto) = (ApiServer::start().await, MotoServer::start());
    seed(&moto).await;
    service_account(&api, "app", Some("arn:aws:iam::123456789012:role/app")).await;
    let url = moto.url();
    let env = |name: &str| match name {
        "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:9".to_owned()),
        "AWS_ENDPOINT_URL_SECRETS_MANAGER" | "AWS_ENDPOINT_URL_STS" => Some(url.clone()),
        _ => None,
    };
    let endpoints = AwsEndpoints::from_env(env);
    assert_eq!(endpoints.secrets_manager.as_deref(), Some(url.as_str()));
    let client = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    let aws = AwsProvider::new(Arc::new(KubeRoles::new(client)), endpoints, None);
    let response = aws.mount(&request("app", true)).await.unwrap();
    assert_eq!(response.files[0].contents.expose(), b"s3cret");
}

#[tokio::test]
async fn irsa_errors_name_what_is_missing() {
    let (api, moto) = (ApiServer::start().await, MotoServer::start());
    seed(&moto).await;
    service_account(&api, "norole", None).await;
    let aws = provider(&api, &moto).await;

    let err = aws.mount(&request("norole", false)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "CSI token error: serviceAccount.tokens not provided - ensure tokenRequests is configured in CSIDriver spec"
    );
    let err = aws.mount(&request("norole", true)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "An IAM role must be associated with service account norole (namespace: shop)"
    );
    assert_eq!(err.code(), ErrorCode::FailedPrecondition);
    let err = aws.mount(&request("ghost", true)).await.unwrap_err();
    assert!(err.to_string().starts_with("failed to get service account shop/ghost"), "{err}");

    let mut no_region = request("norole", true);
    no_region.parameters.remove("region");
    let err = aws.mount(&no_region).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert!(err.to_string().starts_with("Region not found"), "{err}");
}

/// A stand-in for the node's EKS Pod Identity agent: answers
/// `GET /v1/credentials` for one token, as the agent's API does.
async fn pod_identity_agent(expected_token: &'static str) -> String {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/v1/credentials",
        axum::routing::get(move |headers: HeaderMap| async move {
            let token = headers.get("authorization").and_then(|v| v.to_str().ok());
            if token != Some(expected_token) {
                return StatusCode::UNAUTHORIZED.into_response();
            }
            let body = serde_json::json!({
                "AccessKeyId": "ASIAPODIDENTITY", "SecretAccessKey": "sk", "Token": "session",
                "AccountId": "123456789012", "Expiration": "2030-01-01T00:00:00Z"
            });
            ([("content-type", "application/json")], body.to_string()).into_response()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/credentials", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn pod_identity_gets_credentials_from_the_agent() {
    let (api, moto) = (ApiServer::start().await, MotoServer::start());
    seed(&moto).await;
    let agent = pod_identity_agent("pod-identity-token").await;
    let client = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    let endpoints = AwsEndpoints {
        aws: Some(moto.url()),
        pod_identity_agent: Some(agent),
        ..Default::default()
    };
    let aws =
        AwsProvider::new(Arc::new(KubeRoles::new(client)), endpoints, Some("us-west-2".into()));

    let with_token = |token: &str| {
        let mut req = request("app", false);
        req.parameters.remove("region");
        req.parameters.insert("usePodIdentity".into(), "true".into());
        req.tokens.insert(
            "pods.eks.amazonaws.com".into(),
            ServiceAccountToken {
                token: SecretBytes::from(token),
                expiration_timestamp: String::new(),
            },
        );
        req
    };
    // No service account read, no STS: the agent's credentials, in the driver's AWS_REGION.
    let response = aws.mount(&with_token("pod-identity-token")).await.unwrap();
    assert_eq!(response.files[0].contents.expose(), b"s3cret");

    let other = AwsProvider::new(
        Arc::new(KubeRoles::new(
            kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap(),
        )),
        AwsEndpoints {
            aws: Some(moto.url()),
            pod_identity_agent: Some(pod_identity_agent("x").await),
            ..Default::default()
        },
        Some("us-west-2".into()),
    );
    let err = other.mount(&with_token("wrong")).await.unwrap_err();
    assert!(
        err.to_string().starts_with("failed to get AWS config from pod identity agent: "),
        "{err}"
    );
    assert!(err.to_string().contains("HTTP 401"), "{err}");
    assert!(!err.to_string().contains("wrong"), "the token is not in the error: {err}");

    let mut no_audience = with_token("t");
    no_audience.tokens.remove("pods.eks.amazonaws.com");
    no_audience.tokens.insert(
        "other".into(),
        ServiceAccountToken { token: SecretBytes::from("t"), expiration_timestamp: String::new() },
    );
    let err = aws.mount(&no_audience).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Pod Identity token extraction failed: token for audience \"pods.eks.amazonaws.com\" not found - ensure tokenRequests includes this audience in CSIDriver"
    );
}

/// Concurrent mounts of the same object by the same service account make one
/// AssumeRoleWithWebIdentity and one GetSecretValue (ASCP: one of each per
/// mount). Another service account gets its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_mounts_share_credentials_and_reads_per_identity() {
    let (api, moto) = (ApiServer::start().await, MotoServer::start());
    seed(&moto).await;
    service_account(&api, "app", Some("arn:aws:iam::123456789012:role/app")).await;
    service_account(&api, "other", Some("arn:aws:iam::123456789012:role/other")).await;
    let proxy = sscsi_testkit::moto::CountingProxy::start(moto.url()).await;
    let client = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    let endpoints =
        AwsEndpoints { aws: Some(proxy.url()), pod_identity_agent: None, ..Default::default() };
    let stats = sscsi_provider_kit::BackendStats::default();
    let aws = AwsProvider::new(Arc::new(KubeRoles::new(client)), endpoints, None);
    let aws = Arc::new(aws.with_stats(&stats));
    let counted = stats.provider("aws");

    let mounts = (0..10).map(|_| {
        let aws = aws.clone();
        tokio::spawn(async move { aws.mount(&request("app", true)).await.map(|r| r.files.len()) })
    });
    for mount in futures::future::join_all(mounts).await {
        assert_eq!(mount.unwrap().unwrap(), 1);
    }
    assert_eq!(proxy.count("AssumeRoleWithWebIdentity"), 1);
    assert_eq!(proxy.count("secretsmanager.GetSecretValue"), 1);
    // What /metrics shows of it: one exchange, nine reuses, nine shared reads.
    use sscsi_provider_kit::stats::Outcome;
    assert_eq!(counted.credential_counts(), (1, 9));
    assert_eq!(counted.coalesced_count(), 9);
    assert_eq!(counted.calls_count("AssumeRoleWithWebIdentity", Outcome::Ok), 1);
    assert_eq!(counted.calls_count("GetSecretValue", Outcome::Ok), 1);

    aws.mount(&request("other", true)).await.unwrap();
    assert_eq!(
        proxy.count("AssumeRoleWithWebIdentity"),
        2,
        "another identity, its own credentials"
    );
}

/// A provider whose AWS calls pass a counting proxy in front of moto, with
/// `app/db` seeded and service account `app` given a role.
async fn counted_provider() -> (AwsProvider, sscsi_testkit::moto::CountingProxy, MotoServer) {
    let (api, moto) = (ApiServer::start().await, MotoServer::start());
    seed(&moto).await;
    service_account(&api, "app", Some("arn:aws:iam::123456789012:role/app")).await;
    let proxy = sscsi_testkit::moto::CountingProxy::start(moto.url()).await;
    let client = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    let endpoints =
        AwsEndpoints { aws: Some(proxy.url()), pod_identity_agent: None, ..Default::default() };
    (AwsProvider::new(Arc::new(KubeRoles::new(client)), endpoints, None), proxy, moto)
}

/// A refresh of what `previous` mounted: its versions and bytes.
fn refresh(previous: &sscsi_core::MountResponse) -> MountRequest {
    let mut request = request("app", true);
    request.current_versions = previous.versions.clone();
    request.current_files =
        previous.files.iter().map(|f| (f.path.clone(), f.contents.clone())).collect();
    request
}

/// A new version of `app/db` becomes `AWSCURRENT`.
async fn rotate(moto: &MotoServer, value: &str) {
    secrets_manager(moto)
        .await
        .put_secret_value()
        .secret_id("app/db")
        .secret_string(value)
        .send()
        .await
        .unwrap();
}

/// On a refresh with the mounted versions and bytes, an unchanged secret
/// costs one DescribeSecret (shared by the identity's refreshes within the
/// coalescing window) and no GetSecretValue; a rotated one is read.
#[tokio::test]
async fn a_refresh_reads_only_secrets_that_changed() {
    let (aws, proxy, moto) = counted_provider().await;
    let first = aws.mount(&request("app", true)).await.unwrap();
    // Past the read-coalescing window, so only the version check decides.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let again = aws.mount(&refresh(&first)).await.unwrap();
    assert_eq!(again.files, first.files);
    assert_eq!(again.versions, first.versions);
    assert_eq!(proxy.count("secretsmanager.DescribeSecret"), 1);
    assert_eq!(proxy.count("secretsmanager.GetSecretValue"), 1, "no read for an unchanged secret");
    // Another volume of the same identity refreshed within the window: the
    // answer is shared (a rotation pass over many pods asks once).
    aws.mount(&refresh(&first)).await.unwrap();
    assert_eq!(proxy.count("secretsmanager.DescribeSecret"), 1);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    rotate(&moto, "rotated").await;
    let rotated = aws.mount(&refresh(&again)).await.unwrap();
    assert_eq!(rotated.files[0].contents.expose(), b"rotated");
    assert_ne!(rotated.versions, first.versions);
    assert_eq!(proxy.count("secretsmanager.GetSecretValue"), 2);
}

/// A refresh right after a change, while an older read of the secret still
/// answers identical reads: DescribeSecret names the new version, so the
/// older answer is not written back; the value is read again.
#[tokio::test]
async fn a_refresh_never_writes_back_an_answer_older_than_described() {
    let (aws, proxy, moto) = counted_provider().await;
    let first = aws.mount(&request("app", true)).await.unwrap();
    rotate(&moto, "rotated").await;
    let rotated = aws.mount(&refresh(&first)).await.unwrap();
    assert_eq!(rotated.files[0].contents.expose(), b"rotated");
    assert_ne!(rotated.versions, first.versions);
    assert_eq!(proxy.count("secretsmanager.GetSecretValue"), 2);
}

/// A throttled answer (a 400 `ThrottlingException`, a 429) is tried again
/// with backoff and counted; a denied one fails at once, as
/// PermissionDenied, with AWS's own words; throttling that does not stop
/// fails as ResourceExhausted once the attempts are spent.
#[tokio::test]
async fn throttling_is_retried_and_counted_and_a_denial_is_final() {
    use sscsi_provider_kit::{BackendStats, RetryPolicy};
    let (aws, proxy, _moto) = counted_provider().await;
    let stats = BackendStats::default();
    let quick = RetryPolicy {
        base: std::time::Duration::from_millis(1),
        cap: std::time::Duration::from_millis(5),
        ..RetryPolicy::AWS_STANDARD
    };
    let aws = aws.with_stats(&stats).with_retry(quick);
    let counted = stats.provider("aws");
    const READ: &str = "secretsmanager.GetSecretValue";
    // Each mount asks the backend now, not a shared answer.
    let now = || MountRequest { reuse: std::time::Duration::ZERO, ..request("app", true) };

    proxy.fail_next(READ, 400, "ThrottlingException");
    proxy.fail_next(READ, 429, "TooManyRequestsException");
    let mounted = aws.mount(&now()).await.unwrap();
    assert_eq!(mounted.files[0].contents.expose(), b"s3cret");
    assert_eq!(proxy.count(READ), 3, "two throttled answers, then the read");
    assert_eq!((counted.throttled_count(), counted.retries_count()), (2, 2));

    proxy.fail_next(READ, 400, "AccessDeniedException");
    let err = aws.mount(&now()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::PermissionDenied, "{err}");
    assert!(
        err.to_string().contains("AccessDeniedException: injected AccessDeniedException"),
        "{err}"
    );
    assert_eq!(proxy.count(READ), 4, "a denial is not tried again");
    assert_eq!(counted.retries_count(), 2);
    use sscsi_provider_kit::stats::Outcome;
    let calls = |outcome| counted.calls_count("GetSecretValue", outcome);
    assert_eq!([Outcome::Throttled, Outcome::Denied, Outcome::Ok].map(calls), [2, 1, 1]);

    for _ in 0..3 {
        proxy.fail_next(READ, 400, "ThrottlingException");
    }
    let err = aws.mount(&now()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ResourceExhausted, "{err}");
    assert!(err.to_string().starts_with("Failed to fetch secret from all regions"), "{err}");
    assert_eq!(proxy.count(READ), 7, "three attempts");
    assert_eq!((counted.throttled_count(), counted.retries_count()), (5, 4));
}
