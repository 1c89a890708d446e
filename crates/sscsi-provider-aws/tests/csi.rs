//! SecretProviderClasses for `aws` mounted through the real CSI server on a
//! unix socket, as kubelet mounts them: the files that appear, and the
//! message and code of every kind of refusal.

use std::sync::Arc;

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use kube::api::{Api, PostParams};
use sscsi_core::ProviderRegistry;
use sscsi_provider_aws::auth::KubeRoles;
use sscsi_provider_aws::{AwsEndpoints, AwsProvider};
use sscsi_testkit::csi::{Class, Publish, TestNode};
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

    let parameters: Vec<(&str, String)> = CLASSES
        .iter()
        .map(|(name, objects)| {
            let objects: String = objects.lines().map(|l| format!("  {l}\n")).collect();
            (*name, format!("region: us-west-2\nobjects: |\n{objects}"))
        })
        .collect();
    let classes: Vec<Class> = parameters
        .iter()
        .map(|(name, parameters)| Class { name, provider: "aws", parameters })
        .collect();
    let mut providers = ProviderRegistry::new();
    let endpoints =
        AwsEndpoints { aws: Some(moto.url()), pod_identity_agent: None, ..Default::default() };
    providers.register(Arc::new(AwsProvider::new(Arc::new(KubeRoles::new(kube)), endpoints, None)));
    let node = TestNode::start(providers, &classes, None).await;

    let pod = TestNode::pod("web-0");
    let publish = |class: &'static str, with_token: bool| {
        let tokens: &'static [(&str, &str)] =
            if with_token { &[("sts.amazonaws.com", "t")] } else { &[] };
        let (node, pod) = (&node, &pod);
        async move { node.publish(class, pod, &Publish { tokens, secrets: &[] }).await }
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
