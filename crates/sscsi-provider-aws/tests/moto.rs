//! The fetch layer with the official AWS SDK clients against moto's AWS API
//! emulator.

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use aws_sdk_secretsmanager::primitives::Blob;
use aws_sdk_ssm::types::ParameterType;
use sscsi_core::{ErrorCode, ProviderFailure};
use sscsi_provider_aws::descriptor::parse_objects;
use sscsi_provider_aws::fetch::{Current, FetchError, RegionClients, fetch_all};
use sscsi_provider_kit::Failure;
use sscsi_testkit::moto::MotoServer;

async fn clients(moto: &MotoServer, region: &str) -> RegionClients {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(moto.url())
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .load()
        .await;
    RegionClients {
        region: region.to_owned(),
        failover: false,
        secrets_manager: aws_sdk_secretsmanager::Client::new(&config),
        ssm: aws_sdk_ssm::Client::new(&config),
        shared: None,
        calls: sscsi_provider_kit::Calls::new(sscsi_provider_kit::RetryPolicy::AWS_STANDARD),
    }
}

fn regions(r: &[&str]) -> Vec<String> {
    r.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn fetches_secrets_and_parameters_as_ascp_writes_them() {
    let moto = MotoServer::start();
    let region = clients(&moto, "us-west-2").await;
    let sm = &region.secrets_manager;
    let created = sm
        .create_secret()
        .name("db-creds")
        .secret_string(r#"{"username":"admin","password":"pw","port":5432}"#)
        .send()
        .await
        .unwrap();
    sm.create_secret()
        .name("bin")
        .secret_binary(Blob::new(vec![0u8, 159, 146, 150]))
        .send()
        .await
        .unwrap();
    let ssm = &region.ssm;
    ssm.put_parameter()
        .name("/app/key")
        .value("k1")
        .r#type(ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    ssm.put_parameter()
        .name("/app/plain")
        .value("p1")
        .r#type(ParameterType::String)
        .send()
        .await
        .unwrap();
    ssm.put_parameter()
        .name("/app/plain")
        .value("p2")
        .r#type(ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .unwrap();

    let objects = r#"
- objectName: db-creds
  objectType: secretsmanager
  objectAlias: creds
  jmesPath:
    - path: username
      objectAlias: user
    - path: password
      objectAlias: pass
      filePermission: "0400"
- objectName: bin
  objectType: secretsmanager
  filePermission: "0600"
- objectName: /app/key
  objectType: ssmparameter
- objectName: /app/plain
  objectType: ssmparameter
  objectVersion: "1"
"#;
    let descriptors = parse_objects(objects, Some('_'), &regions(&["us-west-2"])).unwrap();
    let (files, versions) =
        fetch_all(std::slice::from_ref(&region), &descriptors, 0o644, &Current::default())
            .await
            .unwrap();
    let got: Vec<(&str, u32, &[u8])> =
        files.iter().map(|f| (f.path.as_str(), f.mode, f.contents.expose())).collect();
    assert_eq!(
        got,
        vec![
            ("creds", 0o644, &br#"{"username":"admin","password":"pw","port":5432}"#[..]),
            ("user", 0o644, &b"admin"[..]),
            ("pass", 0o400, &b"pw"[..]),
            ("bin", 0o600, &[0u8, 159, 146, 150][..]),
            ("_app_key", 0o644, &b"k1"[..]),
            ("_app_plain", 0o644, &b"p1"[..]),
        ]
    );
    let version_of =
        |id: &str| versions.iter().find(|v| v.id == id).map(|v| v.version.clone()).unwrap();
    assert_eq!(version_of("creds"), created.version_id.unwrap());
    assert_eq!(
        version_of("user"),
        version_of("creds"),
        "jmesPath files carry the parent's version"
    );
    assert_eq!(version_of("_app_key"), "1");
    assert_eq!(version_of("_app_plain"), "1", "the pinned version");
}

#[tokio::test]
async fn batches_of_more_than_ten_parameters() {
    let moto = MotoServer::start();
    let region = clients(&moto, "us-west-2").await;
    let mut objects = String::new();
    for i in 0..23 {
        let name = format!("p{i}");
        region
            .ssm
            .put_parameter()
            .name(&name)
            .value(format!("v{i}"))
            .r#type(ParameterType::String)
            .send()
            .await
            .unwrap();
        objects += &format!("- objectName: {name}\n  objectType: ssmparameter\n");
    }
    let descriptors = parse_objects(&objects, Some('_'), &regions(&["us-west-2"])).unwrap();
    let (files, _) =
        fetch_all(std::slice::from_ref(&region), &descriptors, 0o644, &Current::default())
            .await
            .unwrap();
    assert_eq!(files.len(), 23);
    assert!(files.iter().any(|f| f.path == "p22" && f.contents.expose() == b"v22"));
}

#[tokio::test]
async fn missing_objects_and_bad_jmes_paths_fail_the_mount() {
    let moto = MotoServer::start();
    let region = clients(&moto, "us-west-2").await;
    region
        .secrets_manager
        .create_secret()
        .name("json")
        .secret_string(r#"{"n":1}"#)
        .send()
        .await
        .unwrap();
    let fetch = |objects: &'static str| {
        let region = region.clone();
        async move {
            let descriptors = parse_objects(objects, Some('_'), &regions(&["us-west-2"])).unwrap();
            fetch_all(&[region], &descriptors, 0o644, &Current::default()).await.unwrap_err()
        }
    };

    let err = fetch("- objectName: nope\n  objectType: secretsmanager\n").await;
    // AWS answers a missing secret with a 400 and its code, moto with a 404.
    let missing = |f| matches!(f, Failure::Rejected | Failure::NotFound);
    assert!(matches!(&err, FetchError::Secret { failure, .. } if missing(*failure)), "{err:?}");
    assert!(err.to_string().starts_with("us-west-2: Failed fetching secret nope: "), "{err}");
    assert_eq!(err.code(), ErrorCode::FailedPrecondition);

    let err = fetch("- objectName: /nope\n  objectType: ssmparameter\n- objectName: /nope2\n  objectType: ssmparameter\n").await;
    assert_eq!(err.to_string(), "us-west-2: invalid parameters: /nope, /nope2");

    // Quoted: a bare `n` is YAML 1.1's false, so ASCP would look up "false".
    let err = fetch("- objectName: json\n  objectType: secretsmanager\n  jmesPath:\n    - path: \"n\"\n      objectAlias: \"n\"\n").await;
    assert_eq!(
        err.to_string(),
        "Invalid JMES search result type for path:n. Only string is allowed."
    );
    let err = fetch("- objectName: json\n  objectType: secretsmanager\n  jmesPath:\n    - path: missing\n      objectAlias: m\n").await;
    assert_eq!(
        err.to_string(),
        "JMES Path - missing for object alias - m does not point to a valid object."
    );
    let err = fetch("- objectName: json\n  objectType: secretsmanager\n  jmesPath:\n    - path: '[['\n      objectAlias: m\n").await;
    assert_eq!(err.to_string(), "Invalid JMES Path: [[.");
}

#[tokio::test]
async fn the_primary_region_wins_and_a_failover_region_fills_in() {
    let moto = MotoServer::start();
    let west = clients(&moto, "us-west-2").await;
    let mut east = clients(&moto, "us-east-1").await;
    east.failover = true;
    west.secrets_manager.create_secret().name("s").secret_string("west").send().await.unwrap();
    east.secrets_manager.create_secret().name("s").secret_string("east").send().await.unwrap();
    east.secrets_manager
        .create_secret()
        .name("s-east")
        .secret_string("only-east")
        .send()
        .await
        .unwrap();
    let two = regions(&["us-west-2", "us-east-1"]);
    let objects = "- objectName: s\n  objectType: secretsmanager\n";
    let descriptors = parse_objects(objects, Some('_'), &two).unwrap();
    let (files, _) =
        fetch_all(&[west.clone(), east.clone()], &descriptors, 0o644, &Current::default())
            .await
            .unwrap();
    assert_eq!(files[0].contents.expose(), b"west");

    // The primary region lacks the failover object's name: a 4xx there is fatal, as ASCP.
    let objects = "- objectName: s-west-only\n  objectType: secretsmanager\n  objectAlias: a\n  failoverObject:\n    objectName: s-east\n";
    let descriptors = parse_objects(objects, Some('_'), &two).unwrap();
    let err = fetch_all(&[west, east], &descriptors, 0o644, &Current::default()).await.unwrap_err();
    assert!(err.to_string().starts_with("us-west-2: Failed fetching secret s-west-only"), "{err}");
}

#[tokio::test]
async fn version_ids_and_labels() {
    let moto = MotoServer::start();
    let region = clients(&moto, "us-west-2").await;
    let sm = &region.secrets_manager;
    let v1 =
        sm.create_secret().name("s").secret_string("one").send().await.unwrap().version_id.unwrap();
    let v2 = sm
        .put_secret_value()
        .secret_id("s")
        .secret_string("two")
        .send()
        .await
        .unwrap()
        .version_id
        .unwrap();
    let ssm = &region.ssm;
    for value in ["p-one", "p-two"] {
        ssm.put_parameter()
            .name("p")
            .value(value)
            .r#type(ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .unwrap();
    }
    ssm.label_parameter_version()
        .name("p")
        .parameter_version(1)
        .labels("stable")
        .send()
        .await
        .unwrap();

    let fetch = |objects: String| {
        let region = region.clone();
        async move {
            let descriptors = parse_objects(&objects, Some('_'), &regions(&["us-west-2"])).unwrap();
            fetch_all(&[region], &descriptors, 0o644, &Current::default()).await.unwrap()
        }
    };
    let (files, versions) = fetch(format!(
        "- {{objectName: s, objectType: secretsmanager, objectAlias: cur}}\n\
         - {{objectName: s, objectType: secretsmanager, objectAlias: prev, objectVersionLabel: AWSPREVIOUS}}\n\
         - {{objectName: s, objectType: secretsmanager, objectAlias: pinned, objectVersion: {v1}}}\n"
    ))
    .await;
    let content =
        |path: &str| files.iter().find(|f| f.path == path).map(|f| f.contents.expose().to_vec());
    let version = |id: &str| versions.iter().find(|v| v.id == id).map(|v| v.version.clone());
    assert_eq!(content("cur").as_deref(), Some(&b"two"[..]));
    assert_eq!(content("prev").as_deref(), Some(&b"one"[..]));
    assert_eq!(content("pinned").as_deref(), Some(&b"one"[..]));
    assert_eq!((version("cur"), version("prev")), (Some(v2), Some(v1)));

    // One SSM name per mount: moto's answers carry no Selector to tell
    // `p:stable` from `p` apart in one batch (real SSM's do).
    for (objects, want, want_version) in [
        (
            "- {objectName: p, objectType: ssmparameter, objectVersionLabel: stable}\n",
            &b"p-one"[..],
            "1",
        ),
        ("- {objectName: p, objectType: ssmparameter, objectVersion: '1'}\n", &b"p-one"[..], "1"),
        ("- {objectName: p, objectType: ssmparameter}\n", &b"p-two"[..], "2"),
    ] {
        let (files, versions) = fetch(objects.to_owned()).await;
        assert_eq!(files[0].contents.expose(), want, "{objects}");
        assert_eq!(versions[0].version, want_version, "{objects}");
    }
}
