//! `sscsi check`, run as a user runs it: a corpus of classes every provider
//! accepts and refuses (with the official providers' own messages), JSON
//! for CI, standard input, and every class in docs/.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_sscsi");

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check").join(name)
}

fn check(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .arg("check")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn what_every_provider_accepts_passes() {
    let out = check(&[corpus("good.yaml").to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(text(&out.stderr), "checked 5 objects (1 other documents skipped): 0 problems\n");
}

#[test]
fn what_a_mount_refuses_is_refused_with_the_providers_words() {
    let path = corpus("bad.yaml");
    let out = check(&[path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let at = |n: usize| format!("{}[{n}]: SecretProviderClass shop/", path.display());
    let want = [
        format!(
            "{}aws-no-type: spec.parameters: provider \"aws\": Must use objectType when a full ARN is not specified: db-password",
            at(0)
        ),
        format!(
            "{}aws-failover: spec.parameters: provider \"aws\": us-east-1: failover region cannot be the same as the primary region",
            at(1)
        ),
        format!(
            "{}azure-name: spec.parameters: provider \"azure\": failed to get vault: Invalid vault name: \"kv_with_underscores\", must match [-a-zA-Z0-9]{{3,24}}",
            at(2)
        ),
        format!(
            "{}azure-type: spec.parameters: provider \"azure\": failed to get objectType:blob, objectName:s, objectVersion:: Invalid vaultObjectTypes. Should be secret, key, or cert",
            at(3)
        ),
        format!(
            "{}gcp-both: spec.parameters: provider \"gcp\": projects/p/secrets/s/versions/latest: both extractJSONKey and extractYAMLKey can't be simultaneously non empty strings",
            at(4)
        ),
        format!(
            "{}gcp-resource: spec.parameters: provider \"gcp\": secrets/s: unknown resource type",
            at(5)
        ),
        format!(
            "{}vault-no-role: spec.parameters: provider \"vault\": missing 'roleName' in SecretProviderClass definition",
            at(6)
        ),
        format!(
            "{}vault-mounts: spec.parameters: provider \"vault\": cannot set both vaultKubernetesMountPath and vaultAuthMountPath",
            at(7)
        ),
        format!(
            "{}built: spec.parameters[\"sscsi.io/files\"]: parameter \"sscsi.io/files\": files[0] (\"app.env\"): format \"env\" needs \"entries\"",
            at(8)
        ),
        format!(
            "{}built: spec.parameters[\"sscsi.io/refresh\"]: parameter \"sscsi.io/refresh\": \"sometimes\" is not \"default\", \"once\" or an interval like 30s, 5m, 1h",
            at(8)
        ),
    ];
    assert_eq!(text(&out.stdout).lines().collect::<Vec<_>>(), want);
    assert_eq!(text(&out.stderr), "checked 9 objects (0 other documents skipped): 10 problems\n");
}

#[test]
fn json_for_ci_from_standard_input() {
    let bad = std::fs::read_to_string(corpus("bad.yaml")).unwrap();
    let out = check(&["--output", "json", "-"], Some(&bad));
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["checked"].as_u64(), report["skipped"].as_u64()), (Some(9), Some(0)));
    assert_eq!(report["problems"].as_array().unwrap().len(), 10);
    assert_eq!(
        report["problems"][6],
        serde_json::json!({
            "source": "-", "document": 6, "kind": "SecretProviderClass", "namespace": "shop",
            "name": "vault-no-role", "field": "spec.parameters",
            "message": "provider \"vault\": missing 'roleName' in SecretProviderClass definition"
        })
    );
}

#[test]
fn an_unreadable_file_is_an_error_naming_it() {
    let out = check(&["/nonexistent/classes.yaml"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/classes.yaml"), "{}", text(&out.stderr));
}

/// Every SecretProviderClass and SecretSync in the documentation passes.
#[test]
fn every_class_in_the_docs_passes() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let mut pages = Vec::new();
    let mut dirs = vec![docs];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                pages.push(path.display().to_string());
            }
        }
    }
    let args: Vec<&str> = pages.iter().map(String::as_str).collect();
    let out = check(&args, None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let summary = text(&out.stderr);
    let checked: usize = summary.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(checked >= 10, "every provider page has classes: {summary}");
}
