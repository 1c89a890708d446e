//! Outcomes as the Go decoders give them: yaml.v3 v3.0.1 (`resolve.go`
//! `resolve`, `decode.go` `scalar`/`mapping`/`sequence`) and
//! sigs.k8s.io/yaml v1.6 over go-yaml v2.4 (`resolve.go`, `yaml.go`
//! `convertToJSONableObject`) with `encoding/json`.

use serde::Deserialize;

use super::*;

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
struct V3 {
    name: String,
    mode: Option<i32>,
    perm: u32,
    flag: bool,
}

fn v3(text: &str) -> Result<V3, String> {
    from_str::<V3>(Dialect::YamlV3, "objects", text).map_err(|e| e.message)
}

#[test]
fn yaml_v3_string_fields_take_any_scalar_as_written_and_null_as_empty() {
    for (text, want) in [
        ("name: 123", "123"),
        ("name: 0600", "0600"),
        ("name: 1e3", "1e3"),
        ("name: true", "true"),
        ("name: yes", "yes"),
        ("name: 0x1F", "0x1F"),
        ("name: 2001-12-14", "2001-12-14"),
        ("name: !!binary aGVsbG8=", "hello"),
        ("name: \"q\"", "q"),
        ("name: ~", ""),
        ("name: null", ""),
        ("name:", ""),
    ] {
        assert_eq!(v3(text).unwrap().name, want, "{text}");
    }
    assert_eq!(v3("name: [a]").unwrap_err(), "line 1: cannot unmarshal !!seq into string (.name)");
}

#[test]
fn yaml_v3_integers_are_typed_plain_scalars_and_refuse_quoted_ones() {
    for (text, want) in [
        ("mode: 0600", 0o600),
        ("mode: 00600", 0o600),
        ("mode: +0600", 0o600),
        ("mode: 0o600", 0o600),
        ("mode: 0x1a4", 420),
        ("mode: 0b101", 5),
        ("mode: 1_0", 10),
        ("mode: 600", 600),
        ("mode: -1", -1),
        // Not an octal integer, so a float, truncated.
        ("mode: 0800", 800),
        ("mode: 1.0", 1),
        ("mode: 6e2", 600),
        ("mode: !!int 0600", 0o600),
    ] {
        assert_eq!(v3(text).unwrap().mode, Some(want), "{text}");
    }
    for text in ["mode: ~", "mode:", "mode: null"] {
        assert_eq!(v3(text).unwrap().mode, None, "{text}");
    }
    assert_eq!(v3("perm: ~").unwrap().perm, 0);
    for (text, err) in [
        ("mode: \"0600\"", "line 1: cannot unmarshal !!str `0600` into int32 (.mode)"),
        ("mode: '420'", "line 1: cannot unmarshal !!str `420` into int32 (.mode)"),
        ("mode: true", "line 1: cannot unmarshal !!bool `true` into int32 (.mode)"),
        ("mode: 2147483648", "line 1: cannot unmarshal !!int `2147483648` into int32 (.mode)"),
        ("mode: .inf", "line 1: cannot unmarshal !!float `.inf` into int32 (.mode)"),
        ("perm: -1", "line 1: cannot unmarshal !!int `-1` into uint32 (.perm)"),
        ("perm: 4294967296", "line 1: cannot unmarshal !!int `4294967296` into uint32 (.perm)"),
        (
            "perm: 2001-12-14",
            "line 1: cannot unmarshal !!timestamp `2001-12-14` into uint32 (.perm)",
        ),
    ] {
        assert_eq!(v3(text).unwrap_err(), err, "{text}");
    }
}

#[test]
fn yaml_v3_bools_take_yaml_1_1_words_only_into_a_typed_bool() {
    for (text, want) in
        [("flag: true", true), ("flag: yes", true), ("flag: Off", false), ("flag: \"on\"", true)]
    {
        assert_eq!(v3(text).unwrap().flag, want, "{text}");
    }
    assert!(v3("flag: 1").is_err());
    // Untyped, only YAML 1.2's words are bools.
    let value =
        interface("p", "a: yes\nb: true\nc: on\nd: 0600\ne: 1e3\nf: 2001-12-14\ng: ~\n").unwrap();
    assert_eq!(
        value,
        GoValue::Map(vec![
            ("a".into(), GoValue::String("yes".into())),
            ("b".into(), GoValue::Bool(true)),
            ("c".into(), GoValue::String("on".into())),
            ("d".into(), GoValue::Int(0o600)),
            ("e".into(), GoValue::Float(1000.0)),
            ("f".into(), GoValue::Timestamp("2001-12-14".into())),
            ("g".into(), GoValue::Null),
        ])
    );
}

#[test]
fn yaml_v3_refuses_a_repeated_key_ignores_unknown_ones_and_reads_one_document() {
    assert_eq!(
        v3("name: a\nname: b\n").unwrap_err(),
        "line 2: mapping key \"name\" already defined at line 1"
    );
    assert_eq!(v3("Name: a\nother: 1\nname: b\n").unwrap().name, "b");
    assert_eq!(v3("name: first\n---\nname: second\n").unwrap().name, "first");
    // A null item of a list is dropped.
    let list: Vec<V3> =
        from_str(Dialect::YamlV3, "objects", "- name: a\n- ~\n- name: b\n").unwrap();
    assert_eq!(list.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    let none: Vec<V3> = from_str(Dialect::YamlV3, "objects", "").unwrap();
    assert!(none.is_empty());
    assert!(from_str::<Vec<V3>>(Dialect::YamlV3, "objects", "name: a").is_err());
}

#[test]
fn anchors_aliases_and_merges() {
    let list: Vec<V3> = from_str(
        Dialect::YamlV3,
        "objects",
        "- &base {name: a, perm: 420}\n- <<: *base\n  name: b\n- *base\n",
    )
    .unwrap();
    let got: Vec<_> = list.iter().map(|v| (v.name.as_str(), v.perm)).collect();
    assert_eq!(got, [("a", 420), ("b", 420), ("a", 420)]);
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
struct Ascp {
    object_name: String,
    object_alias: String,
}

fn sigs(text: &str) -> Ascp {
    from_str(Dialect::SigsYaml, "objects", text).unwrap()
}

#[test]
fn sigs_yaml_turns_yaml_1_1_values_into_go_text_for_string_fields() {
    for (value, want) in [
        ("12345", "12345"),
        ("0600", "384"),
        ("010", "8"),
        ("0o17", "15"),
        ("0x1F", "31"),
        ("-0x1F", "-31"),
        ("0b101", "5"),
        ("09", "9"),
        ("+12", "12"),
        ("-0", "0"),
        ("1_000", "1000"),
        ("1e3", "1000"),
        ("1.0", "1"),
        (".5", "0.5"),
        ("1.50", "1.5"),
        ("3.14159265358979", "3.1415927"),
        ("123456789.5", "1.2345679e+08"),
        ("1e20", "1e+20"),
        ("0.00001", "1e-05"),
        ("123456789012345678901234567890", "1.2345679e+29"),
        ("12345678901234567890", "12345678901234567890"),
        (".inf", "+Inf"),
        (".nan", "NaN"),
        ("yes", "true"),
        ("ON", "true"),
        ("y", "true"),
        ("No", "false"),
        ("off", "false"),
        ("yEs", "yEs"),
        ("1:30", "1:30"),
        ("2024-01-02", "2024-01-02"),
        ("!!str 0600", "0600"),
        ("!!binary aGVsbG8=", "hello"),
        ("\"0600\"", "0600"),
        ("~", ""),
        ("", ""),
    ] {
        assert_eq!(sigs(&format!("objectName: {value}")).object_name, want, "{value}");
    }
}

#[test]
fn sigs_yaml_matches_field_names_as_encoding_json_does() {
    assert_eq!(sigs("ObjectName: a").object_name, "a");
    assert_eq!(sigs("OBJECTNAME: a").object_name, "a");
    assert_eq!(sigs("objectAliaſ: a").object_alias, "a");
    // An exact repeat: the last value. Different spellings: the one that sorts last.
    assert_eq!(sigs("objectName: a\nobjectName: b\n").object_name, "b");
    assert_eq!(sigs("objectName: first\nObjectName: second\n").object_name, "first");
    assert_eq!(sigs("objectname: first\nobjectName: second\n").object_name, "first");
    assert_eq!(sigs("unknown: 1\nyes: x\n"), Ascp::default());
    // Only the first document.
    assert_eq!(sigs("objectName: a\n---\nobjectName: b\n").object_name, "a");
    // A null list item stays (a nil pointer ASCP reports itself).
    let list: Vec<Option<Ascp>> =
        from_str(Dialect::SigsYaml, "objects", "- objectName: a\n- ~\n").unwrap();
    assert_eq!(list.len(), 2);
    assert!(list[1].is_none());
}

#[test]
fn errors_name_the_parameter_and_the_place() {
    let err = from_str::<Vec<V3>>(Dialect::YamlV3, "objects", "- name: [unclosed").unwrap_err();
    assert_eq!(err.field, "objects");
    assert!(err.message.starts_with("invalid YAML"), "{}", err.message);
    let err = from_str::<Vec<V3>>(Dialect::YamlV3, "objects", "- perm: \"0600\"").unwrap_err();
    assert_eq!(err.message, "line 1: cannot unmarshal !!str `0600` into uint32 ([0].perm)");
}

#[test]
fn go_float_text() {
    for (f, want) in [
        (1000.0, "1000"),
        (100000.0, "100000"),
        (1e6, "1e+06"),
        (0.0001, "0.0001"),
        (-2.5, "-2.5"),
        (0.0, "0"),
    ] {
        assert_eq!(format_g32(f), want, "{f}");
    }
}
