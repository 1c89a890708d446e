use std::collections::BTreeMap;

use p12_keystore::Pkcs12ImportPolicy::Relaxed;
use sscsi_core::SecretFile;
use sscsi_testkit::pki::TestCa;

use super::*;

fn specs(yaml: &str) -> Result<Vec<FileSpec>, FilesError> {
    parse(&BTreeMap::from([(FILES_PARAMETER.to_owned(), yaml.to_owned())]), 0o644)
}

fn mounted(files: &[(&str, &[u8])]) -> Vec<SecretFile> {
    files
        .iter()
        .map(|(path, bytes)| SecretFile {
            path: (*path).into(),
            mode: 0o600,
            contents: SecretBytes::new(bytes.to_vec()),
        })
        .collect()
}

/// The one built file of `yaml` from `files`, as text.
fn one(yaml: &str, files: &[(&str, &[u8])]) -> Result<String, String> {
    let specs = specs(yaml).map_err(|e| e.to_string())?;
    let built = build(&specs, &mounted(files)).map_err(|e| e.to_string())?;
    Ok(String::from_utf8(built[0].contents.expose().to_vec()).unwrap())
}

const DB: &[u8] =
    br#"{"username": "app", "password": "p@ss w0rd", "port": 5432, "tls": true, "note": null}"#;

#[test]
fn database_credentials_json_as_an_env_file() {
    let out = one("- {path: db.env, format: env, from: db-creds}", &[("db-creds", DB)]).unwrap();
    assert_eq!(out, "note=\npassword='p@ss w0rd'\nport=5432\ntls=true\nusername=app\n");
    // A value no two .env readers quote alike is refused, never quoted.
    let quote = br#"{"password": "it's"}"#;
    let err = one("- {path: db.env, format: env, from: db-creds}", &[("db-creds", quote)]);
    let err = err.unwrap_err();
    assert!(err.contains("the value of \"password\" holds ' or \\"), "{err}");
    assert!(!err.contains("it's"), "{err}");
}

#[test]
fn named_entries_as_env_properties_json_and_yaml() {
    let files: &[(&str, &[u8])] = &[("db/user", b"app"), ("db/pass", b"a=b: #1\n\xc3\xa9")];
    let entries = "entries: {DB_USER: db/user, DB_PASS: db/pass}";
    let of =
        |format: &str| one(&format!("- {{path: f, format: {format}, {entries}}}"), files).unwrap();
    assert_eq!(of("env"), "DB_PASS='a=b: #1\né'\nDB_USER=app\n");
    assert_eq!(of("properties"), "DB_PASS=a\\=b\\: \\#1\\n\\u00E9\nDB_USER=app\n");
    assert_eq!(of("json"), "{\n  \"DB_PASS\": \"a=b: #1\\né\",\n  \"DB_USER\": \"app\"\n}\n");
    assert_eq!(of("yaml"), "\"DB_PASS\": \"a=b: #1\\né\"\n\"DB_USER\": \"app\"\n");
    // The YAML reads back as the same strings.
    let back: BTreeMap<String, String> = serde_saphyr::from_str(&of("yaml")).unwrap();
    assert_eq!(back["DB_PASS"], "a=b: #1\né");
    let breaks =
        one("- {path: y, format: yaml, entries: {K: v}}", &[("v", "a\u{2028}b".as_bytes())]);
    assert_eq!(breaks.unwrap(), "\"K\": \"a\\u2028b\"\n");
    // A properties key with spaces and a value with a leading one.
    let props =
        one("- {path: p, format: properties, entries: {'a key': v}}", &[("v", b" lead")]).unwrap();
    assert_eq!(props, "a\\ key=\\ lead\n");
}

#[test]
fn one_key_out_of_a_json_or_yaml_object() {
    let spec = "- {path: password, format: extract, object: db-creds, key: password}";
    assert_eq!(one(spec, &[("db-creds", DB)]).unwrap(), "p@ss w0rd");
    assert_eq!(one(spec, &[("db-creds", b"password: from-yaml\n")]).unwrap(), "from-yaml");
    let err = one("- {path: p, format: extract, object: db-creds, key: port}", &[("db-creds", DB)]);
    assert!(err.unwrap_err().contains("key \"port\" of object \"db-creds\" is not a string"));
    let err = one(spec, &[("db-creds", b"[\"hunter2-secret\"]")]).unwrap_err();
    assert!(err.contains("is not a JSON or YAML object"), "{err}");
    assert!(!err.contains("hunter2"), "the secret is never quoted: {err}");
}

#[test]
fn declarations_are_checked_naming_the_file() {
    let cases = [
        (
            "- {path: a, format: toml, entries: {}}",
            "files[0] (\"a\"): format \"toml\" is not one of",
        ),
        ("- {path: a, format: env, objects: [x]}", "\"objects\" does not apply to format \"env\""),
        ("- {path: a, format: json, from: x}", "\"from\" does not apply to format \"json\""),
        ("- {path: a, format: env}", "format \"env\" needs \"entries\""),
        ("- {path: a, format: env, entries: {x: a}, from: b}", "one or the other"),
        ("- {path: a, format: env, entries: {1X: a}}", "entry \"1X\" is not a variable name"),
        ("- {path: ../a, format: env, from: x}", "files[0] (\"../a\"): invalid path"),
        (
            "- {path: a, format: env, from: x}\n- {path: a, format: env, from: y}",
            "files[1] (\"a\"): files[0] has the same path",
        ),
        ("- {path: a, format: env, from: x, mode: \"0999\"}", "not an octal file mode"),
        ("- {path: a, format: env, form: x}", "invalid YAML"),
        ("- {path: a, format: pem-bundle, objects: []}", "needs \"objects\""),
        (
            "- {path: a, format: template, template: \"x\\n{{ oops(\"}",
            "files[0] (\"a\"): template line 2",
        ),
    ];
    for (yaml, want) in cases {
        let err = specs(yaml).unwrap_err().to_string();
        assert!(err.starts_with("parameter \"sscsi.io/files\": "), "{err}");
        assert!(err.contains(want), "{yaml}: want {want:?} in {err:?}");
    }
    let spec = &specs("- {path: a, format: env, from: x, mode: \"0640\"}").unwrap()[0];
    assert_eq!(spec.mode, 0o640);
    assert_eq!(specs("- {path: a, format: env, from: x}").unwrap()[0].mode, 0o644, "the default");
    assert!(parse(&BTreeMap::new(), 0o644).unwrap().is_empty());
}

#[test]
fn a_missing_or_binary_object_fails_naming_it() {
    let err = one("- {path: f, format: env, entries: {A: nope}}", &[("a", b"1")]).unwrap_err();
    assert!(
        err.contains(
            "files[0] (\"f\"): object \"nope\" is not mounted by this class (it mounts [\"a\"])"
        ),
        "{err}"
    );
    let err =
        one("- {path: f, format: env, entries: {A: bin}}", &[("bin", b"\xff\xfe")]).unwrap_err();
    assert!(err.contains("object \"bin\" is not UTF-8 text"), "{err}");
}

#[test]
fn pem_bundle_in_chain_order_whatever_the_order_given() {
    let root = TestCa::new("root");
    let mid = root.intermediate("mid");
    let leaf = mid.issue("leaf", &["app.example"]);
    let leaf_pem = pem::encode(&pem::Pem::new("CERTIFICATE", leaf.cert_der.clone()));
    // Root and intermediate in one object, root first; the leaf after.
    let cas = format!("{}{}", root.cert_pem(), mid.cert_pem());
    let files: &[(&str, &[u8])] = &[("cas.pem", cas.as_bytes()), ("leaf.pem", leaf_pem.as_bytes())];
    let out = one("- {path: chain.pem, format: pem-bundle, objects: [cas.pem, leaf.pem]}", files)
        .unwrap();
    let ders: Vec<Vec<u8>> =
        pem::parse_many(&out).unwrap().into_iter().map(pem::Pem::into_contents).collect();
    assert_eq!(ders, [leaf.cert_der.clone(), mid.cert_der(), root.cert_der()]);
    assert!(!out.contains('\r'));

    let other = TestCa::new("other");
    let two = format!("{}{}", root.cert_pem(), other.cert_pem());
    let err =
        one("- {path: c, format: pem-bundle, objects: [x]}", &[("x", two.as_bytes())]).unwrap_err();
    assert!(err.contains("not one chain"), "{err}");
    let err = one("- {path: c, format: pem-bundle, objects: [x]}", &[("x", b"plain")]).unwrap_err();
    assert!(err.contains("holds no CERTIFICATE"), "{err}");
}

#[test]
fn pkcs12_read_back_by_a_pkcs12_parser() {
    let root = TestCa::new("root");
    let leaf = root.issue("leaf", &["app.example"]);
    let key_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", leaf.key_der.clone()));
    let leaf_pem = pem::encode(&pem::Pem::new("CERTIFICATE", leaf.cert_der.clone()));
    let ca_pem = root.cert_pem();
    let files: &[(&str, &[u8])] = &[
        ("tls.key", key_pem.as_bytes()),
        ("tls.crt", leaf_pem.as_bytes()),
        ("ca.crt", ca_pem.as_bytes()),
        ("p12-password", b"changeit\n"),
    ];
    let yaml = "- {path: keystore.p12, format: pkcs12, key: tls.key, certificates: [ca.crt, tls.crt], password: p12-password}";
    let built = build(&specs(yaml).unwrap(), &mounted(files)).unwrap();
    let store =
        p12_keystore::KeyStore::from_pkcs12(built[0].contents.expose(), "changeit", Relaxed)
            .unwrap();
    let (alias, chain) = store.private_key_chain().expect("a key and its chain");
    assert_eq!(alias, "keystore.p12");
    assert_eq!(chain.key().as_der(), leaf.key_der);
    let certs: Vec<&[u8]> = chain.certs().iter().map(|c| c.as_der()).collect();
    assert_eq!(certs, [leaf.cert_der.as_slice(), root.cert_der().as_slice()]);
    assert!(
        p12_keystore::KeyStore::from_pkcs12(built[0].contents.expose(), "wrong", Relaxed).is_err()
    );
}

#[test]
fn templates_see_the_mount_and_nothing_else() {
    let files: &[(&str, &[u8])] = &[("db/user", b"app"), ("db-creds", DB)];
    let yaml = r#"- path: app.conf
  format: template
  template: |
    user={{ object("db/user") }}
    {% set c = objects["db-creds"] | fromjson %}port={{ c.port }}
    {% for k in objects | sort %}{{ k }};{% endfor %}
"#;
    assert_eq!(one(yaml, files).unwrap(), "user=app\nport=5432\ndb-creds;db/user;\n");

    let json =
        "- {path: t, format: template, template: '{{ {\"u\": object(\"db/user\")}|tojson }}'}";
    assert_eq!(one(json, files).unwrap(), r#"{"u":"app"}"#);
    let missing = "- path: t\n  format: template\n  template: \"a\\n{{ object('db/pass') }}\"\n";
    let err = one(missing, files).unwrap_err();
    assert!(err.contains("template line 2"), "{err}");
    assert!(err.contains("object \"db/pass\" is not mounted by this class"), "{err}");
    // A message that would print an operand never prints a mounted value.
    let overflow = "- {path: t, format: template, template: '{{ (object(\"pin\") | int) * 170141183460469231731687303715884105727 }}'}";
    let err = one(overflow, &[("pin", b"98765")]).unwrap_err();
    assert!(
        err.contains("template line 1: invalid operation: unable to calculate <redacted>"),
        "{err}"
    );
    assert!(!err.contains("98765"), "{err}");
    let undefined = "- {path: t, format: template, template: '{{ nothing }}'}";
    assert!(one(undefined, files).unwrap_err().contains("template line 1: undefined value"));
    // No environment, file or include: nothing to load them with.
    let include = "- {path: t, format: template, template: '{% include \"/etc/passwd\" %}'}";
    let err = one(include, files).unwrap_err();
    assert!(err.contains("template line 1: syntax error: unknown statement include"), "{err}");
}

#[test]
fn templates_that_never_end_or_write_too_much_are_stopped() {
    let forever = "- {path: t, format: template, template: '{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}'}";
    let err = one(forever, &[]).unwrap_err();
    assert!(err.contains("stopped after 200000 instructions"), "{err}");
    let big = "- {path: t, format: template, template: '{% for i in range(3000) %}{{ \"x\" * 1000 }}{% endfor %}'}";
    let err = one(big, &[]).unwrap_err();
    assert!(err.contains("writes more than 1048576 bytes"), "{err}");
    // No value grows from one iteration to the next: namespace() is gone.
    let grow = "- {path: t, format: template, template: '{% set ns = namespace(s=\"x\") %}'}";
    assert!(one(grow, &[]).unwrap_err().contains("unknown function"), "namespace is left out");
    let long = format!("- {{path: t, format: template, template: '{}'}}", "x".repeat(70_000));
    assert!(specs(&long).unwrap_err().to_string().contains("longer than 65536 bytes"));
}

#[test]
fn a_changed_secret_changes_only_the_files_built_from_it() {
    let yaml = "- {path: a.env, format: env, entries: {A: a}}\n- {path: b.env, format: env, entries: {B: b}}";
    let specs = specs(yaml).unwrap();
    let before = build(&specs, &mounted(&[("a", b"1"), ("b", b"1")])).unwrap();
    let after = build(&specs, &mounted(&[("a", b"2"), ("b", b"1")])).unwrap();
    assert_ne!(before[0].contents.expose(), after[0].contents.expose());
    assert_eq!(before[1].contents.expose(), after[1].contents.expose());
}
