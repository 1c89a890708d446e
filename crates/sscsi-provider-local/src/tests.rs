use std::collections::BTreeMap;
use std::os::unix::fs::symlink;

use super::*;

fn request(objects: &str) -> MountRequest {
    MountRequest {
        parameters: BTreeMap::from([("objects".to_owned(), objects.to_owned())]),
        default_file_mode: 0o644,
        ..Default::default()
    }
}

fn store() -> (tempfile::TempDir, LocalProvider) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("db")).unwrap();
    std::fs::write(root.join("db/password"), "s3cret").unwrap();
    std::fs::write(root.join("api-key"), [0u8, 159, 146, 150]).unwrap();
    std::fs::write(dir.path().join("outside"), "not yours").unwrap();
    let provider = LocalProvider::new(&root).unwrap();
    (dir, provider)
}

#[tokio::test]
async fn serves_files_with_aliases_modes_and_digest_versions() {
    let (_dir, provider) = store();
    let objects = "
- objectName: db/password
  objectAlias: password
  filePermission: \"0600\"
- objectName: api-key
  filePermission: 0640
- objectName: db/password
";
    let response = provider.mount(&request(objects)).await.unwrap();
    let files: Vec<(&str, u32, &[u8])> =
        response.files.iter().map(|f| (f.path.as_str(), f.mode, f.contents.expose())).collect();
    assert_eq!(
        files,
        vec![
            ("password", 0o600, &b"s3cret"[..]),
            ("api-key", 0o640, &[0u8, 159, 146, 150][..]),
            ("db/password", 0o644, &b"s3cret"[..]),
        ]
    );
    assert_eq!(response.versions[0].id, "db/password");
    assert_eq!(response.versions[0].version, content_digest(b"s3cret"));
    assert_eq!(response.versions[1].id, "api-key");
}

#[tokio::test]
async fn version_changes_exactly_when_content_does() {
    let (dir, provider) = store();
    let objects = "- objectName: api-key\n";
    let v1 = provider.mount(&request(objects)).await.unwrap().versions;
    assert_eq!(provider.mount(&request(objects)).await.unwrap().versions, v1);
    std::fs::write(dir.path().join("root/api-key"), "rotated").unwrap();
    assert_ne!(provider.mount(&request(objects)).await.unwrap().versions, v1);
}

async fn error_of(provider: &LocalProvider, req: MountRequest) -> (ErrorCode, String) {
    let err = provider.mount(&req).await.unwrap_err();
    (err.code(), err.to_string())
}

#[tokio::test]
async fn refuses_escapes_through_dots_absolute_paths_and_symlinks() {
    let (dir, provider) = store();
    symlink(dir.path().join("outside"), dir.path().join("root/link-out")).unwrap();
    symlink("db", dir.path().join("root/link-in")).unwrap();
    for (objects, want) in [
        (
            "- objectName: ../outside",
            "objects[0].objectName: invalid path \"../outside\": must not contain '..'",
        ),
        (
            "- objectName: /etc/passwd",
            "objects[0].objectName: invalid path \"/etc/passwd\": must be a relative path",
        ),
        ("- objectName: db/../../outside", "must not contain '..'"),
        (
            "- objectName: link-out",
            "objects[0].objectName \"link-out\" resolves outside the local provider root",
        ),
        (
            "- objectName: api-key\n  objectAlias: ../../x",
            "objects[0].objectAlias: invalid path \"../../x\"",
        ),
    ] {
        let (code, msg) = error_of(&provider, request(objects)).await;
        assert_eq!(code, ErrorCode::InvalidArgument, "{objects}");
        assert!(msg.contains(want), "{objects}: {msg}");
    }
    // A symlink that stays inside the root is fine.
    let ok = provider.mount(&request("- objectName: link-in/password")).await.unwrap();
    assert_eq!(ok.files[0].contents.expose(), b"s3cret");
}

#[tokio::test]
async fn bad_parameters_name_the_field() {
    let (_dir, provider) = store();
    let cases = [
        (MountRequest::default(), ErrorCode::InvalidArgument, "parameter \"objects\" is required"),
        (request("[]"), ErrorCode::InvalidArgument, "parameter \"objects\" lists no object"),
        (
            request("- objectName: [x"),
            ErrorCode::InvalidArgument,
            "parameter \"objects\": invalid YAML",
        ),
        (
            request("- objectNam: x"),
            ErrorCode::InvalidArgument,
            "parameter \"objects\": invalid YAML",
        ),
        (
            request("- objectName: nope"),
            ErrorCode::NotFound,
            "objects[0].objectName \"nope\" not found",
        ),
        (
            request("- objectName: api-key\n  filePermission: \"0900\""),
            ErrorCode::InvalidArgument,
            "objects[0].filePermission: parameter \"filePermission\": \"0900\" is not an octal file mode",
        ),
        (
            request("- objectName: api-key\n- objectName: db/password\n  objectAlias: api-key"),
            ErrorCode::InvalidArgument,
            "objects[1]: file \"api-key\" is already produced by another object",
        ),
    ];
    for (req, code, want) in cases {
        let (got_code, msg) = error_of(&provider, req).await;
        assert_eq!(got_code, code, "{msg}");
        assert!(msg.contains(want), "want {want:?} in {msg:?}");
    }
}

#[tokio::test]
async fn errors_never_carry_secret_bytes() {
    let (_dir, provider) = store();
    let (_, msg) =
        error_of(&provider, request("- objectName: db/password\n- objectName: db/password")).await;
    assert!(!msg.contains("s3cret"), "{msg}");
}
