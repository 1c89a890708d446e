use super::*;

/// A SecretProviderClass as upstream's docs write one.
const UPSTREAM_SPC: &str = r#"{
  "apiVersion": "secrets-store.csi.x-k8s.io/v1",
  "kind": "SecretProviderClass",
  "metadata": {"name": "azure-sync", "namespace": "default"},
  "spec": {
    "provider": "azure",
    "secretObjects": [{
      "secretName": "foosecret",
      "type": "Opaque",
      "labels": {"environment": "test"},
      "data": [{"objectName": "secretalias", "key": "username"}]
    }],
    "parameters": {"usePodIdentity": "false", "keyvaultName": "kv", "objects": "array:\n  - |\n    objectName: secret1\n"}
  }
}"#;

#[test]
fn parses_upstream_objects() {
    let spc: SecretProviderClass = serde_json::from_str(UPSTREAM_SPC).unwrap();
    assert_eq!(spc.spec.provider, "azure");
    assert_eq!(spc.parameters()["keyvaultName"], "kv");
    let objects = spc.spec.secret_objects.as_ref().unwrap();
    assert_eq!(objects[0].type_, "Opaque");
    assert_eq!(objects[0].data.as_ref().unwrap()[0].key, "username");
    // Round trip keeps upstream's field names.
    let back = serde_json::to_value(&spc).unwrap();
    assert_eq!(back["apiVersion"], "secrets-store.csi.x-k8s.io/v1");
    assert_eq!(back["spec"]["secretObjects"][0]["secretName"], "foosecret");

    let spcps: SecretProviderClassPodStatus = serde_json::from_value(serde_json::json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClassPodStatus",
        "metadata": {"name": "web-0-default-azure-sync", "namespace": "default",
                     "labels": {NODE_NAME_LABEL: "node-1"}},
        "status": {"podName": "web-0", "secretProviderClassName": "azure-sync", "mounted": true,
                   "targetPath": "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/v/mount",
                   "objects": [{"id": "secret/secret1", "version": "abc"}]}
    }))
    .unwrap();
    let status = spcps.status.unwrap();
    assert!(status.mounted);
    assert_eq!(status.objects.unwrap()[0].id, "secret/secret1");
}

#[test]
fn crds_serve_v1_and_deprecated_v1alpha1_with_printer_columns() {
    let mut crds = crds();
    let names: Vec<_> = crds.iter().map(|c| c.metadata.name.clone().unwrap()).collect();
    assert_eq!(
        names,
        vec![
            "secretproviderclasses.secrets-store.csi.x-k8s.io",
            "secretproviderclasspodstatuses.secrets-store.csi.x-k8s.io",
            "secretsyncs.secret-sync.x-k8s.io",
        ]
    );
    crds.truncate(2);
    for crd in &crds {
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.scope, "Namespaced");
        let versions: Vec<_> = crd
            .spec
            .versions
            .iter()
            .map(|v| (v.name.as_str(), v.served, v.storage, v.deprecated.unwrap_or(false)))
            .collect();
        assert_eq!(versions, vec![("v1", true, true, false), ("v1alpha1", true, false, true)]);
        for v in &crd.spec.versions {
            assert!(v.subresources.is_none(), "no status subresource, as upstream");
            assert!(!v.additional_printer_columns.as_ref().unwrap().is_empty());
        }
    }
    let spc_v1 = &crds[0].spec.versions[0];
    let schema = serde_json::to_value(spc_v1.schema.as_ref().unwrap()).unwrap();
    let spec = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(spec["parameters"]["additionalProperties"]["type"], "string");
    assert_eq!(spec["secretObjects"]["items"]["properties"]["type"]["type"], "string");
    let columns: Vec<_> = spc_v1
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, vec!["Provider", "Age"]);
}

#[test]
fn status_name_and_served_versions() {
    assert_eq!(pod_status_name("web-0", "shop", "db"), "web-0-shop-db");
    assert!(SecretProviderClass::is_served("secrets-store.csi.x-k8s.io/v1", "SecretProviderClass"));
    assert!(SecretProviderClass::is_served(
        "secrets-store.csi.x-k8s.io/v1alpha1",
        "SecretProviderClass"
    ));
    assert!(!SecretProviderClass::is_served(
        "secrets-store.csi.x-k8s.io/v2",
        "SecretProviderClass"
    ));
    assert!(!SecretProviderClass::is_served("v1", "Secret"));
}

/// A SecretSync as the sync controller's README writes one.
#[test]
fn secretsync_parses_upstream_objects_and_defaults_the_type() {
    let sync: SecretSync = serde_json::from_value(serde_json::json!({
        "apiVersion": "secret-sync.x-k8s.io/v1alpha1",
        "kind": "SecretSync",
        "metadata": {"name": "sse2esecret", "namespace": "default"},
        "spec": {
            "serviceAccountName": "default",
            "secretProviderClassName": "e2e-providerspc",
            "secretObject": {"data": [{"sourcePath": "foo", "targetKey": "bar"}]}
        }
    }))
    .unwrap();
    assert_eq!(sync.spec.secret_object.type_, "Opaque");
    assert_eq!(sync.spec.secret_object.data[0].target_key, "bar");
    assert_eq!(sync.spec.force_synchronization, None);
    assert_eq!(sync.qualified_name(), "default/sse2esecret");
    let back = serde_json::to_value(&sync).unwrap();
    assert_eq!(back["spec"]["secretObject"]["data"][0]["sourcePath"], "foo");
    assert_eq!(back["spec"]["secretObject"]["type"], "Opaque");
}

/// The schema of secretsync_types.go: patterns, lengths, defaults, CEL rules, list types.
#[test]
fn secretsync_crd_has_the_upstream_validation() {
    let crd = crds().pop().unwrap();
    assert_eq!(crd.spec.group, SYNC_GROUP);
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.plural, "secretsyncs");
    let version = &crd.spec.versions[0];
    assert_eq!((version.name.as_str(), version.served, version.storage), ("v1alpha1", true, true));
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let schema = serde_json::to_value(version.schema.as_ref().unwrap()).unwrap();
    let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
    let required: Vec<&str> =
        spec["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(required, ["secretObject", "secretProviderClassName", "serviceAccountName"]);
    let fields = &spec["properties"];
    for name in ["secretProviderClassName", "serviceAccountName"] {
        assert_eq!(fields[name]["pattern"], DNS_SUBDOMAIN_PATTERN);
        assert_eq!(
            (fields[name]["minLength"].as_u64(), fields[name]["maxLength"].as_u64()),
            (Some(1), Some(253))
        );
    }
    assert_eq!(fields["secretSyncControllerName"]["default"], "");
    assert_eq!(fields["forceSynchronization"]["pattern"], FORCE_SYNC_PATTERN);
    let object = &fields["secretObject"];
    assert_eq!(object["required"], serde_json::json!(["data"]));
    assert_eq!(object["properties"]["type"]["default"], "Opaque");
    let data = &object["properties"]["data"];
    assert_eq!(data["minItems"], 1);
    assert_eq!(data["x-kubernetes-list-type"], "map");
    assert_eq!(data["x-kubernetes-list-map-keys"], serde_json::json!(["targetKey"]));
    for key in ["sourcePath", "targetKey"] {
        assert_eq!(data["items"]["properties"][key]["pattern"], DATA_KEY_PATTERN);
    }
    for map in ["labels", "annotations"] {
        let rules = object["properties"][map]["x-kubernetes-validations"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[1]["rule"],
            "(self.all(x, x.startsWith('secrets-store.sync.x-k8s.io') == false))"
        );
        assert!(object["properties"][map].get("nullable").is_none());
    }
    let conditions = &schema["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["maxItems"], 16);
    assert_eq!(conditions["x-kubernetes-list-map-keys"], serde_json::json!(["type"]));
}
