use std::collections::BTreeMap;

use sscsi_core::{ErrorCode, ProviderError, ProviderFailure};

use super::*;

#[derive(Debug, thiserror::Error)]
#[error("objects: {0}")]
struct Refused(String);

impl ProviderFailure for Refused {
    fn code(&self) -> ErrorCode {
        ErrorCode::InvalidArgument
    }
}

/// A provider whose only rule: `objects` must be set, and it never sees
/// sscsi's own parameters.
fn strict(parameters: &BTreeMap<String, String>) -> Result<(), ProviderError> {
    if parameters.keys().any(|k| k.starts_with("sscsi.io/")) {
        return Err(Refused("saw sscsi.io/ parameters".into()).into());
    }
    match parameters.get("objects") {
        Some(_) => Ok(()),
        None => Err(Refused("is required".into()).into()),
    }
}

fn checks() -> Checks {
    Checks::new().provider("strict", Some(strict)).provider("local", None)
}

fn report(text: &str) -> Report {
    let mut report = Report::default();
    report.add("in.yaml", text, &checks());
    report
}

fn lines(report: &Report) -> Vec<String> {
    report.problems.iter().map(ToString::to_string).collect()
}

const CLASS: &str = "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata: {name: app, namespace: shop}\nspec:\n";

#[test]
fn a_good_class_has_no_problem_and_other_kinds_are_skipped() {
    let text = format!(
        "{CLASS}  provider: strict\n  parameters:\n    objects: x\n    sscsi.io/refresh: 5m\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\n---\n"
    );
    let r = report(&text);
    assert_eq!((r.checked, r.skipped, lines(&r)), (1, 1, Vec::<String>::new()));
}

#[test]
fn every_problem_names_the_document_object_and_field() {
    let text = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\n---\n{CLASS}  provider: strict\n  parameters:\n    sscsi.io/refresh: often\n    sscsi.io/files: 'nope'\n  secretObjects:\n    - secretName: s\n      data: [{{objectName: a, key: k}}]\n"
    );
    let mut found = lines(&report(&text));
    let files = found.remove(0);
    let want = r#"in.yaml[1]: SecretProviderClass shop/app: spec.parameters["sscsi.io/files"]: parameter "sscsi.io/files": invalid YAML"#;
    assert!(files.starts_with(want), "{files}");
    assert_eq!(
        found,
        [
            r#"in.yaml[1]: SecretProviderClass shop/app: spec.parameters["sscsi.io/refresh"]: parameter "sscsi.io/refresh": "often" is not "default", "once" or an interval like 30s, 5m, 1h"#,
            r#"in.yaml[1]: SecretProviderClass shop/app: spec.parameters: provider "strict": objects: is required"#,
            r#"in.yaml[1]: SecretProviderClass shop/app: spec.secretObjects[0].type: is required"#,
        ]
    );
}

#[test]
fn what_upstream_refuses_before_any_provider() {
    let r = report(&format!("{CLASS}  provider: ''\n"));
    assert_eq!(
        lines(&r),
        [
            "in.yaml[0]: SecretProviderClass shop/app: spec.provider: is not set",
            "in.yaml[0]: SecretProviderClass shop/app: spec.parameters: is not set",
        ]
    );
    // Any valid name may be an external provider's socket: not checked.
    assert!(
        lines(&report(&format!("{CLASS}  provider: akeyless\n  parameters: {{a: b}}\n")))
            .is_empty()
    );
    let bad = report(&format!("{CLASS}  provider: ../etc\n  parameters: {{a: b}}\n"));
    assert_eq!(
        lines(&bad),
        [
            r#"in.yaml[0]: SecretProviderClass shop/app: spec.provider: "../etc" is neither a provider of this sscsi (local, strict) nor a valid external provider name (letters, digits, '_' and '-', at most 30)"#
        ]
    );
    let old = report(
        "apiVersion: secrets-store.csi.x-k8s.io/v9\nkind: SecretProviderClass\nmetadata: {name: x}\nspec: {provider: strict}\n",
    );
    assert_eq!(
        lines(&old),
        [
            r#"in.yaml[0]: SecretProviderClass default/x: apiVersion: "secrets-store.csi.x-k8s.io/v9" is not served (secrets-store.csi.x-k8s.io/v1 or v1alpha1)"#
        ]
    );
}

#[test]
fn lists_and_broken_documents() {
    let list = "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: secrets-store.csi.x-k8s.io/v1\n    kind: SecretProviderClass\n    metadata: {name: a}\n    spec: {provider: local, parameters: {x: v}}\n  - apiVersion: secrets-store.csi.x-k8s.io/v1\n    kind: SecretProviderClass\n    metadata: {namespace: b}\n    spec: {provider: strict, parameters: {objects: o}}\n";
    let r = report(list);
    assert_eq!(r.checked, 2);
    assert_eq!(lines(&r), ["in.yaml[0]: SecretProviderClass b/: metadata.name: is required"]);
    // YAML 1.1's `y` is true, as kubectl reads it: not a string.
    let r = report(&format!("{CLASS}  provider: strict\n  parameters: {{objects: y}}\n"));
    assert_eq!(r.problems.len(), 1);
    assert!(r.problems[0].message.starts_with("not a SecretProviderClass: "), "{r:?}");
    let r = report("key: [unclosed");
    assert!(r.problems[0].message.starts_with("not YAML: "), "{r:?}");
}

#[test]
fn secret_syncs_are_checked_as_the_controller_reads_them() {
    let sync = "apiVersion: secret-sync.x-k8s.io/v1alpha1\nkind: SecretSync\nmetadata: {name: db, namespace: shop}\nspec:\n  secretProviderClassName: App\n  serviceAccountName: ''\n  secretObject:\n    type: Opaque\n    labels: {secrets-store.sync.x-k8s.io/x: v}\n    data:\n      - {sourcePath: password, targetKey: ''}\n";
    assert_eq!(
        lines(&report(sync)),
        [
            r#"in.yaml[0]: SecretSync shop/db: spec.secretProviderClassName: "App" is not a DNS subdomain name"#,
            "in.yaml[0]: SecretSync shop/db: spec.serviceAccountName: is required",
            "in.yaml[0]: SecretSync shop/db: spec.secretObject.data[0].targetKey: is required",
            "in.yaml[0]: SecretSync shop/db: spec.secretObject.labels: secrets-store.sync.x-k8s.io/x is reserved for use by the controller",
        ]
    );
    let good = sync
        .replace("App", "app")
        .replace("serviceAccountName: ''", "serviceAccountName: web")
        .replace("targetKey: ''", "targetKey: pw")
        .replace("labels: {secrets-store.sync.x-k8s.io/x: v}", "labels: {team: shop}");
    assert!(lines(&report(&good)).is_empty(), "{:?}", lines(&report(&good)));
}

#[test]
fn markdown_yaml_blocks_are_checked_where_they_stand() {
    let text = format!(
        "# A page\n\n```yaml\n{CLASS}  provider: strict\n  parameters: {{objects: o}}\n```\n\n```sh\nkubectl apply\n```\n\n```yaml\n{CLASS}  provider: strict\n  parameters: {{other: o}}\n```\n```yaml\nvolumes: []\n```\n"
    );
    let mut r = Report::default();
    r.add_markdown("page.md", &text, &checks());
    assert_eq!((r.checked, r.skipped), (2, 1));
    assert_eq!(
        lines(&r),
        [
            r#"page.md:17[0]: SecretProviderClass shop/app: spec.parameters: provider "strict": objects: is required"#
        ]
    );
}
