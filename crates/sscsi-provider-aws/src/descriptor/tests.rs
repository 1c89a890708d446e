use super::*;

fn regions(r: &[&str]) -> Vec<String> {
    r.iter().map(|s| (*s).to_owned()).collect()
}

fn parse(objects: &str) -> Result<Vec<Descriptor>, DescriptorError> {
    parse_objects(objects, Some('_'), &regions(&["us-west-2"]))
}

fn error(objects: &str) -> String {
    parse(objects).unwrap_err().0
}

#[test]
fn reads_names_arns_and_types() {
    let objects = r#"
- objectName: "MySecret"
  objectType: "secretsmanager"
- objectName: "arn:aws:secretsmanager:us-west-2:111122223333:secret:db/pass-AbCdEf"
  objectAlias: dbpass
- objectName: /app/param
  objectType: ssmparameter
  objectVersion: 3
- objectName: "arn:aws:ssm:us-west-2:111122223333:parameter/app/other"
"#;
    let d = parse(objects).unwrap();
    let types: Vec<SecretType> = d.iter().map(Descriptor::secret_type).collect();
    use SecretType::*;
    assert_eq!(types, vec![SecretsManager, SecretsManager, SsmParameter, SsmParameter]);
    assert_eq!(d[1].file_name(), "dbpass");
    assert_eq!(d[2].file_name(), "_app_param", "slashes become the translation character");
    assert_eq!(d[2].object_version, "3", "a bare number is the string as written");
}

#[test]
fn field_names_match_case_insensitively_and_unknown_fields_are_ignored() {
    let d = parse(
        "- OBJECTNAME: s\n  ObjectType: secretsmanager\n  objectalias: a\n  somethingElse: x\n",
    )
    .unwrap();
    assert_eq!((d[0].object_name.as_str(), d[0].object_alias.as_str()), ("s", "a"));
    // As encoding/json fills the struct from json.Marshal's sorted keys: of two
    // spellings the one that sorts last wins (`objectName` after `ObjectName`),
    // wherever it stands; of one spelling repeated, the last value.
    let d =
        parse("- objectName: first\n  ObjectName: second\n  objectType: secretsmanager\n").unwrap();
    assert_eq!(d[0].object_name, "first");
    let d =
        parse("- objectName: first\n  objectName: second\n  objectType: secretsmanager\n").unwrap();
    assert_eq!(d[0].object_name, "second");
}

#[test]
fn path_translation_values() {
    assert_eq!(path_translation(None), Ok(Some('_')));
    assert_eq!(path_translation(Some("")), Ok(Some('_')));
    assert_eq!(path_translation(Some("-")), Ok(Some('-')));
    assert_eq!(path_translation(Some("FALSE")), Ok(None));
    assert_eq!(path_translation(Some("false")), Ok(None));
    for bad in ["--", "é", "no"] {
        assert_eq!(
            path_translation(Some(bad)).unwrap_err().0,
            "pathTranslation must be either 'False' or a single character string",
            "{bad}"
        );
    }
    let untranslated = parse_objects(
        "- objectName: /a/b/c\n  objectType: ssmparameter\n",
        None,
        &regions(&["us-west-2"]),
    )
    .unwrap();
    assert_eq!(untranslated[0].file_name(), "a/b/c", "leading slash stripped, others kept");
    let dash = parse_objects(
        "- objectName: a/b\n  objectType: ssmparameter\n",
        Some('-'),
        &regions(&["r"]),
    )
    .unwrap();
    assert_eq!(dash[0].file_name(), "a-b");
}

#[test]
fn file_permissions() {
    let d = parse(
        "- objectName: a\n  objectType: secretsmanager\n  filePermission: \"0600\"\n\
         - objectName: b\n  objectType: secretsmanager\n  filePermission: '0640'\n\
         - objectName: c\n  objectType: secretsmanager\n",
    )
    .unwrap();
    assert_eq!(d.iter().map(|d| d.file_mode(0o644)).collect::<Vec<_>>(), vec![0o600, 0o640, 0o644]);
    // Unquoted, YAML 1.1 reads 0640 as the number 416, which ASCP then refuses.
    let msg = error("- objectName: b\n  objectType: secretsmanager\n  filePermission: 0640\n");
    assert!(msg.starts_with("Invalid File Permission: 416"), "{msg}");
    for bad in ["\"600\"", "\"0800\"", "\"rw\"", "\"06000\""] {
        let msg = error(&format!(
            "- objectName: a\n  objectType: secretsmanager\n  filePermission: {bad}\n"
        ));
        assert!(msg.starts_with("Invalid File Permission: "), "{bad}: {msg}");
    }
}

#[test]
fn jmes_path_entries() {
    let d = parse(
        "- objectName: db\n  objectType: secretsmanager\n  filePermission: \"0600\"\n  jmesPath:\n\
         \x20   - path: username\n      objectAlias: user\n\
         \x20   - path: password\n      objectAlias: pass\n      filePermission: \"0400\"\n",
    )
    .unwrap();
    let user = d[0].jmes_descriptor(&d[0].jmes_path[0]);
    let pass = d[0].jmes_descriptor(&d[0].jmes_path[1]);
    assert_eq!(
        (user.file_name(), user.file_mode(0o644)),
        ("user".to_owned(), 0o600),
        "inherits the parent's mode"
    );
    assert_eq!((pass.file_name(), pass.file_mode(0o644)), ("pass".to_owned(), 0o400));
    assert_eq!(pass.secret_type(), SecretType::SecretsManager);

    let base = "- objectName: db\n  objectType: secretsmanager\n  jmesPath:\n";
    assert_eq!(
        error(&format!("{base}    - objectAlias: a\n")),
        "Path must be specified for JMES object"
    );
    assert_eq!(
        error(&format!("{base}    - path: a\n")),
        "Object alias must be specified for JMES object"
    );
    assert_eq!(
        error(&format!(
            "{base}    - path: a\n      objectAlias: x\n      filePermission: \"777\"\n"
        )),
        "Invalid File Permission: 777"
    );
}

#[test]
fn object_name_rules() {
    let cases = [
        ("- objectType: secretsmanager\n", "Object name must be specified"),
        ("- objectName: plain\n", "Must use objectType when a full ARN is not specified: plain"),
        (
            "- objectName: arn:aws:secretsmanager\n",
            "Invalid ARN format in object name: arn:aws:secretsmanager",
        ),
        (
            "- objectName: arn:aws:secretsmanager:eu-west-1:1:secret:x\n",
            "ARN region must match region us-west-2: arn:aws:secretsmanager:eu-west-1:1:secret:x",
        ),
        ("- objectName: arn:aws:s3:us-west-2:1:bucket\n", "Invalid service in ARN: s3"),
        ("- objectName: x\n  objectType: ssm\n", "Invalid objectType: ssm"),
        ("- objectName: x\n  objectType: kms\n", "Invalid objectType: kms"),
        (
            "- objectName: arn:aws:ssm:us-west-2:1:parameter/x\n  objectType: secretsmanager\n",
            "objectType does not match ARN: arn:aws:ssm:us-west-2:1:parameter/x",
        ),
        (
            "- objectName: p\n  objectType: ssmparameter\n  objectVersion: \"1\"\n  objectVersionLabel: l\n",
            "ssm parameters can not specify both objectVersion and objectVersionLabel: p",
        ),
        ("- null\n- ~\n", "Empty descriptor entry in SecretProviderClass"),
    ];
    for (objects, want) in cases {
        let got = parse(objects).map(|_| ()).unwrap_err().0;
        assert_eq!(got, want, "{objects}");
    }
    assert_eq!(error("-\n"), "Empty descriptor entry in SecretProviderClass");
    assert!(error("- objectName: [unclosed").starts_with("Failed to load SecretProviderClass: "));
}

#[test]
fn parent_segments_are_refused_when_translation_is_off() {
    let off = |name: &str| {
        parse_objects(
            &format!("- objectName: {name}\n  objectType: ssmparameter\n"),
            None,
            &regions(&["r"]),
        )
    };
    for bad in ["../x", "a/../b", "a/.."] {
        assert_eq!(off(bad).unwrap_err().0, format!("path can not contain ../: {bad}"));
    }
    // With translation on, the slashes are gone and the name is harmless.
    assert_eq!(
        parse("- objectName: ../x\n  objectType: ssmparameter\n").unwrap()[0].file_name(),
        ".._x"
    );
}

#[test]
fn failover_rules() {
    let two = regions(&["us-west-2", "us-east-1"]);
    let ok = "- objectName: arn:aws:secretsmanager:us-west-2:1:secret:a\n  objectAlias: a\n  failoverObject:\n\
              \x20   objectName: arn:aws:secretsmanager:us-east-1:1:secret:a\n";
    let d = parse_objects(ok, Some('_'), &two).unwrap();
    assert_eq!(d[0].name_in(true), "arn:aws:secretsmanager:us-east-1:1:secret:a");
    assert_eq!(d[0].name_in(false), "arn:aws:secretsmanager:us-west-2:1:secret:a");

    let one = regions(&["us-west-2"]);
    let no_alias = "- objectName: arn:aws:secretsmanager:us-west-2:1:secret:a\n  failoverObject:\n    objectName: b\n";
    assert_eq!(
        parse_objects(no_alias, Some('_'), &two).unwrap_err().0,
        "object alias must be specified for objects with failover entries: arn:aws:secretsmanager:us-west-2:1:secret:a"
    );
    assert_eq!(
        parse_objects(ok, Some('_'), &one).unwrap_err().0,
        "failover object allowed only when failover region is defined: arn:aws:secretsmanager:us-west-2:1:secret:a"
    );
    let wrong_region = ok.replace("us-east-1", "eu-west-1");
    assert_eq!(
        parse_objects(&wrong_region, Some('_'), &two).unwrap_err().0,
        "ARN region must match region us-east-1: arn:aws:secretsmanager:eu-west-1:1:secret:a"
    );
    let versions = format!("{ok}    objectVersion: v2\n");
    assert_eq!(
        parse_objects(&versions, Some('_'), &two).unwrap_err().0,
        "object versions must match between primary and failover regions: arn:aws:secretsmanager:us-west-2:1:secret:a"
    );
}

#[test]
fn duplicate_rules() {
    let sm = |extra: &str| format!("- objectName: s\n  objectType: secretsmanager\n{extra}");
    let two = |a: &str, b: &str| error(&format!("{}{}", sm(a), sm(b)));
    assert_eq!(
        two("", ""),
        "found descriptor with duplicate object name s, no object alias, and no version label"
    );
    assert_eq!(
        two("  objectAlias: x\n", "  objectAlias: x\n"),
        "found descriptor with duplicate object name s, duplicate object alias x, and no version label"
    );
    assert_eq!(
        two("  objectVersionLabel: L\n", "  objectVersionLabel: L\n"),
        "found descriptor with duplicate object name s, no object alias, and duplicate version label L"
    );
    assert_eq!(
        two(
            "  objectAlias: x\n  objectVersionLabel: L\n",
            "  objectAlias: x\n  objectVersionLabel: L\n"
        ),
        "found descriptor with duplicate object name s, duplicate object alias x, and duplicate version label L"
    );
    // Told apart by label: allowed.
    parse(&format!(
        "{}{}",
        sm("  objectAlias: cur\n  objectVersionLabel: AWSCURRENT\n"),
        sm("  objectAlias: prev\n  objectVersionLabel: AWSPREVIOUS\n")
    ))
    .unwrap();
    parse(&format!(
        "{}{}",
        sm("  objectVersionLabel: AWSCURRENT\n"),
        sm("  objectVersionLabel: AWSPREVIOUS\n")
    ))
    .unwrap();
    // Aliases are unique across objects and jmesPath entries.
    let alias_twice = "- objectName: a\n  objectType: secretsmanager\n  objectAlias: x\n\
                       - objectName: b\n  objectType: secretsmanager\n  objectAlias: x\n";
    assert_eq!(error(alias_twice), "found duplicate object alias x");
    let jmes_twice = "- objectName: a\n  objectType: secretsmanager\n  objectAlias: x\n\
                      - objectName: b\n  objectType: secretsmanager\n  jmesPath:\n    - path: p\n      objectAlias: x\n";
    assert_eq!(
        error(jmes_twice),
        "Name already in use for objectAlias: found duplicate object alias x in JMES path entry p"
    );
}

/// `objects` as sigs.k8s.io/yaml decodes it into ASCP's `SecretDescriptor`
/// (aws/secrets-store-csi-driver-provider-aws `provider/secret_descriptor.go`,
/// every field a Go `string`): go-yaml v2 types the scalar by YAML 1.1, and a
/// number or bool aimed at a string field becomes its Go text.
#[test]
fn scalars_typed_as_sigs_yaml_types_them() {
    let field = |yaml: &str| {
        parse(&format!("- objectName: s\n  objectType: secretsmanager\n  {yaml}\n"))
            .map(|mut d| d.remove(0))
    };
    for (yaml, want) in [
        ("objectVersion: 1", "1"),
        ("objectVersion: 010", "8"),
        ("objectVersion: 0x1F", "31"),
        ("objectVersion: 1_000", "1000"),
        ("objectVersion: 1e3", "1000"),
        ("objectVersion: 1.50", "1.5"),
        ("objectVersion: 123456789.5", "1.2345679e+08"),
        ("objectVersion: yes", "true"),
        ("objectVersion: off", "false"),
        ("objectVersion: \"010\"", "010"),
        ("objectVersion: 1:30", "1:30"),
        ("objectVersion: ~", ""),
        ("objectVersion:", ""),
    ] {
        assert_eq!(field(yaml).unwrap().object_version, want, "{yaml}");
    }
    assert_eq!(field("objectAlias: yes").unwrap().file_name(), "true");
    assert_eq!(field("objectVersionLabel: null").unwrap().object_version_label, "");
    // A blank name is ASCP's own refusal, not a load error.
    assert_eq!(
        error("- objectName: ~\n  objectType: secretsmanager\n"),
        "Object name must be specified"
    );
    assert_eq!(error("- objectName:\n"), "Object name must be specified");
    // Converted values then meet ASCP's checks: two aliases that are both "true".
    let msg = error(
        "- objectName: a\n  objectType: secretsmanager\n  objectAlias: yes\n\
         - objectName: b\n  objectType: secretsmanager\n  objectAlias: \"true\"\n",
    );
    assert_eq!(msg, "found duplicate object alias true");
    // `010` and `8` are one name.
    let msg = error(
        "- objectName: 010\n  objectType: ssmparameter\n- objectName: 8\n  objectType: ssmparameter\n",
    );
    assert_eq!(
        msg,
        "found descriptor with duplicate object name 8, no object alias, and no version label"
    );
    // A null jmesPath entry is an entry with no path.
    let msg = error("- objectName: a\n  objectType: secretsmanager\n  jmesPath: [~]\n");
    assert_eq!(msg, "Path must be specified for JMES object");
    // Only the first YAML document; empty objects are no objects.
    assert_eq!(
        parse("- objectName: a\n  objectType: ssmparameter\n---\n- x: 1\n").unwrap().len(),
        1
    );
    assert!(parse("").unwrap().is_empty());
    assert!(parse("# nothing\n").unwrap().is_empty());
    assert!(parse("[]").unwrap().is_empty());
}
