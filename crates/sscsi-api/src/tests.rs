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
    let crds = crds();
    let names: Vec<_> = crds.iter().map(|c| c.metadata.name.clone().unwrap()).collect();
    assert_eq!(
        names,
        vec![
            "secretproviderclasses.secrets-store.csi.x-k8s.io",
            "secretproviderclasspodstatuses.secrets-store.csi.x-k8s.io"
        ]
    );
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
