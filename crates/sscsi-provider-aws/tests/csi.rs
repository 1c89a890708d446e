//! SecretProviderClasses for `aws` mounted through the real CSI server on a
//! unix socket, as kubelet mounts them: the files that appear, and the
//! message and code of every kind of refusal.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use kube::api::{Api, PostParams};
use prometheus_client::registry::Registry;
use sscsi_core::{PodInfo, ProviderRegistry};
use sscsi_mount::FakeMounter;
use sscsi_node::metrics::NodeMetrics;
use sscsi_node::observer::NoObserver;
use sscsi_node::spc::DirSpcSource;
use sscsi_node::{Backoff, Condition, NodeConfig, NodeDeps, Readiness, client, server, services};
use sscsi_proto::TOKENS_KEY;
use sscsi_proto::csi::v1::node_client::NodeClient;
use sscsi_provider_aws::auth::KubeRoles;
use sscsi_provider_aws::{AwsEndpoints, AwsProvider};
use sscsi_testkit::kube_api::ApiServer;
use sscsi_testkit::moto::MotoServer;
use tonic::Code;

const CLASSES: &[(&str, &str)] = &[
    (
        "json",
        "- objectName: app/json\n  objectType: secretsmanager\n  jmesPath:\n    - path: user\n      objectAlias: user\n",
    ),
    ("param", "- objectName: /app/flag\n  objectType: ssmparameter\n  objectAlias: flag\n"),
    ("no-token", "- objectName: /app/flag\n  objectType: ssmparameter\n"),
    ("missing", "- objectName: app/nope\n  objectType: secretsmanager\n"),
    ("wrong-type", "- objectName: app/json\n  objectType: s3\n"),
    ("bad-arn", "- objectName: arn:aws:secretsmanager:eu-west-1:1:secret:x\n"),
    (
        "jmes-number",
        "- objectName: app/json\n  objectType: secretsmanager\n  jmesPath:\n    - path: port\n      objectAlias: port\n",
    ),
    (
        "dup-alias",
        "- objectName: app/json\n  objectType: secretsmanager\n  objectAlias: a\n- objectName: app/other\n  objectType: secretsmanager\n  objectAlias: a\n",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_classes_through_the_csi_socket() {
    let (api, moto) = (ApiServer::start().await, MotoServer::start());
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-west-2"))
        .endpoint_url(moto.url())
        .credentials_provider(Credentials::new("t", "t", None, None, "test"))
        .load()
        .await;
    aws_sdk_secretsmanager::Client::new(&config)
        .create_secret()
        .name("app/json")
        .secret_string(r#"{"user":"admin","port":5432}"#)
        .send()
        .await
        .unwrap();
    aws_sdk_ssm::Client::new(&config)
        .put_parameter()
        .name("/app/flag")
        .value("on")
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .unwrap();
    let kube = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    let sa: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "app", "namespace": "shop",
                         "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/app"}}
        }))
        .unwrap();
    Api::namespaced(kube.clone(), "shop").create(&PostParams::default(), &sa).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let spc_dir = dir.path().join("spc");
    std::fs::create_dir(&spc_dir).unwrap();
    for (name, objects) in CLASSES {
        let objects = objects.lines().map(|l| format!("      {l}\n")).collect::<String>();
        let yaml = format!(
            "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata: {{name: {name}, namespace: shop}}\n\
             spec:\n  provider: aws\n  parameters:\n    region: us-west-2\n    objects: |\n{objects}"
        );
        std::fs::write(spc_dir.join(format!("{name}.yaml")), yaml).unwrap();
    }
    let mut providers = ProviderRegistry::new();
    let endpoints = AwsEndpoints { aws: Some(moto.url()), pod_identity_agent: None };
    providers.register(Arc::new(AwsProvider::new(Arc::new(KubeRoles::new(kube)), endpoints, None)));
    let readiness = Readiness::default();
    let config = NodeConfig {
        driver_name: "secrets-store.csi.k8s.io".into(),
        vendor_version: "test".into(),
        node_id: "n".into(),
        rotation_poll_interval: None,
        refresh_backoff: Backoff::default(),
    };
    let deps = NodeDeps {
        mounter: Arc::new(FakeMounter::new()),
        spcs: Arc::new(DirSpcSource::new(&spc_dir)),
        providers,
        readiness: readiness.clone(),
        metrics: NodeMetrics::new(&mut Registry::default()),
        observer: Arc::new(NoObserver),
    };
    let (identity, node) = services(config, deps);
    let socket = dir.path().join("csi.sock");
    let listener = server::bind_private(&socket).unwrap();
    tokio::spawn(server::serve(
        listener,
        identity,
        node,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    readiness.mark(Condition::Serving, true);
    let csi = NodeClient::new(client::connect(&socket).await.unwrap());

    let pod = PodInfo {
        name: "web-0".into(),
        namespace: "shop".into(),
        uid: "u".into(),
        service_account: "app".into(),
    };
    let tokens: HashMap<String, String> = HashMap::from([(
        TOKENS_KEY.to_owned(),
        r#"{"sts.amazonaws.com":{"token":"t","expirationTimestamp":"2030-01-01T00:00:00Z"}}"#
            .to_owned(),
    )]);
    let publish = |class: &str, with_token: bool| {
        let target = dir.path().join(format!("pods/u/volumes/kubernetes.io~csi/{class}/mount"));
        let mut req =
            client::inline_volume_publish_request(&format!("csi-{class}"), &target, class, &pod);
        if with_token {
            req.volume_context.extend(tokens.clone());
        }
        let mut csi = csi.clone();
        async move { csi.node_publish_volume(req).await.map(|_| target) }
    };

    let target = publish("json", true).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(target.join("app_json")).unwrap(),
        r#"{"user":"admin","port":5432}"#
    );
    assert_eq!(std::fs::read_to_string(target.join("user")).unwrap(), "admin");
    let target = publish("param", true).await.unwrap();
    assert_eq!(std::fs::read_to_string(target.join("flag")).unwrap(), "on");

    let refused = [
        ("missing", true, Code::FailedPrecondition, "us-west-2: Failed fetching secret app/nope"),
        ("wrong-type", true, Code::InvalidArgument, "Invalid objectType: s3"),
        (
            "bad-arn",
            true,
            Code::InvalidArgument,
            "ARN region must match region us-west-2: arn:aws:secretsmanager:eu-west-1:1:secret:x",
        ),
        (
            "jmes-number",
            true,
            Code::InvalidArgument,
            "Invalid JMES search result type for path:port. Only string is allowed.",
        ),
        ("dup-alias", true, Code::InvalidArgument, "found duplicate object alias a"),
        (
            "no-token",
            false,
            Code::FailedPrecondition,
            "CSI token error: serviceAccount.tokens not provided",
        ),
    ];
    for (class, with_token, code, message) in refused {
        let status = publish(class, with_token).await.unwrap_err();
        assert_eq!(status.code(), code, "{class}: {}", status.message());
        assert!(
            status.message().contains(message),
            "{class}: want {message:?} in {:?}",
            status.message()
        );
    }
}
