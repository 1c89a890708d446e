//! JSON as Go code reads and writes it, for providers whose official
//! counterpart writes values with `encoding/json`: a number decoded with
//! `UseNumber` (vault/api does) is kept as the literal text it came as and
//! written back unchanged; `json.Marshal` writes compact JSON, map keys
//! sorted, and `<`, `>`, `&`, U+2028 and U+2029 escaped; a float64 with the
//! shortest digits (`1e3` is `1000`).

use serde_json::Value;
use serde_json::value::RawValue;
use zeroize::Zeroize;

/// A JSON value as Go holds it in `interface{}` after a `UseNumber` decode.
#[derive(Clone, PartialEq)]
pub enum GoJson {
    Null,
    Bool(bool),
    /// The literal, as it came.
    Number(String),
    String(String),
    Array(Vec<GoJson>),
    /// A Go map: keys sorted, a repeated key's last value.
    Object(std::collections::BTreeMap<String, GoJson>),
}

static NULL: GoJson = GoJson::Null;

impl GoJson {
    /// Decodes a JSON document; `None` when it is not one.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let raw: &RawValue = serde_json::from_slice(bytes).ok()?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: &RawValue) -> Option<Self> {
        let text = raw.get();
        Some(match text.as_bytes().first()? {
            b'{' => {
                let map: std::collections::BTreeMap<String, &RawValue> =
                    serde_json::from_str(text).ok()?;
                let mut out = std::collections::BTreeMap::new();
                for (k, v) in map {
                    out.insert(k, Self::from_raw(v)?);
                }
                GoJson::Object(out)
            }
            b'[' => {
                let items: Vec<&RawValue> = serde_json::from_str(text).ok()?;
                GoJson::Array(items.into_iter().map(Self::from_raw).collect::<Option<_>>()?)
            }
            b'"' => GoJson::String(serde_json::from_str(text).ok()?),
            b't' => GoJson::Bool(true),
            b'f' => GoJson::Bool(false),
            b'n' => GoJson::Null,
            _ => GoJson::Number(text.to_owned()),
        })
    }

    /// A value sscsi made (parameters, configuration): a float is a Go
    /// float64 there, written as `json.Marshal` writes one.
    pub fn from_value(value: &Value) -> Self {
        match value {
            Value::Null => GoJson::Null,
            Value::Bool(b) => GoJson::Bool(*b),
            Value::Number(n) => GoJson::Number(match n.as_f64().filter(|_| n.is_f64()) {
                Some(f) => go_float(f),
                None => n.to_string(),
            }),
            Value::String(s) => GoJson::String(s.clone()),
            Value::Array(items) => GoJson::Array(items.iter().map(Self::from_value).collect()),
            Value::Object(map) => {
                GoJson::Object(map.iter().map(|(k, v)| (k.clone(), Self::from_value(v))).collect())
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&GoJson> {
        match self {
            GoJson::Object(map) => map.get(key),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, GoJson::Null)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GoJson::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GoJson]> {
        match self {
            GoJson::Array(items) => Some(items),
            _ => None,
        }
    }

    /// What `encoding/json` decodes into `interface{}` without `UseNumber`:
    /// every number a float64 (ASCP's JMESPath input), written as Go writes one.
    pub fn from_decoded(value: &Value) -> Self {
        match value {
            Value::Number(n) => GoJson::Number(n.as_f64().map_or_else(|| n.to_string(), go_float)),
            Value::Array(items) => GoJson::Array(items.iter().map(Self::from_decoded).collect()),
            Value::Object(map) => GoJson::Object(
                map.iter().map(|(k, v)| (k.clone(), Self::from_decoded(v))).collect(),
            ),
            other => Self::from_value(other),
        }
    }
}

/// Secret material is wiped: every string and number literal.
impl Zeroize for GoJson {
    fn zeroize(&mut self) {
        match self {
            GoJson::String(s) | GoJson::Number(s) => s.zeroize(),
            GoJson::Array(items) => items.iter_mut().for_each(Zeroize::zeroize),
            GoJson::Object(map) => map.values_mut().for_each(Zeroize::zeroize),
            GoJson::Null | GoJson::Bool(_) => {}
        }
    }
}

/// `value["key"]`: null when absent, as in Go's map lookups.
impl std::ops::Index<&str> for GoJson {
    type Output = GoJson;

    fn index(&self, key: &str) -> &GoJson {
        self.get(key).unwrap_or(&NULL)
    }
}

impl std::fmt::Debug for GoJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GoJson(<redacted>)")
    }
}

pub fn go_json(value: &GoJson, out: &mut Vec<u8>) {
    match value {
        GoJson::Null => out.extend_from_slice(b"null"),
        GoJson::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        GoJson::Number(n) => out.extend_from_slice(n.as_bytes()),
        GoJson::String(s) => go_string(s, out),
        GoJson::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                go_json(item, out);
            }
            out.push(b']');
        }
        GoJson::Object(map) => {
            go_object(map.iter().map(|(k, v)| (k.as_str(), v)), out, go_json);
        }
    }
}

/// A non-nil `map[string]string` as `json.Marshal` writes it: keys sorted.
pub fn go_string_map<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>, out: &mut Vec<u8>) {
    let sorted: std::collections::BTreeMap<&str, &str> = entries.into_iter().collect();
    go_object(sorted.into_iter(), out, go_string);
}

/// `{"key":value,...}` of entries already in key order.
fn go_object<'a, V>(
    entries: impl Iterator<Item = (&'a str, V)>,
    out: &mut Vec<u8>,
    value: impl Fn(V, &mut Vec<u8>),
) {
    out.push(b'{');
    for (i, (key, item)) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        go_string(key, out);
        out.push(b':');
        value(item, out);
    }
    out.push(b'}');
}

/// A float64 as `encoding/json` writes it: the shortest digits, without an
/// exponent for 1e-6 <= |f| < 1e21 (`1e3` is `1000`), else `1e-7`, `1e+21`.
pub fn go_float(f: f64) -> String {
    let abs = f.abs();
    if abs == 0.0 || (1e-6..1e21).contains(&abs) {
        return format!("{f}");
    }
    let sci = format!("{f:e}");
    match sci.split_once('e') {
        Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e:0>2}"),
        _ => sci,
    }
}

/// A string as `json.Marshal` writes it.
pub fn go_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' | '\u{0}'..='\u{1f}' => {
                let code = c as u32;
                out.extend_from_slice(b"\\u");
                for shift in [12, 8, 4, 0] {
                    out.push(HEX[((code >> shift) & 0xf) as usize]);
                }
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(v: &GoJson) -> String {
        let mut out = Vec::new();
        go_json(v, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn as_go_marshals() {
        let v = serde_json::json!({
            "z": 1, "a": [true, null, 1.5], "html": "<a href=\"x\">&</a>",
            "ctl": "\u{1}\u{8}\u{c}\n\t\r\u{2028}é", "m": {"b": 2, "a": -3}
        });
        assert_eq!(
            render(&GoJson::from_value(&v)),
            r#"{"a":[true,null,1.5],"ctl":"\u0001\b\f\n\t\r\u2028é","html":"\u003ca href=\"x\"\u003e\u0026\u003c/a\u003e","m":{"a":-3,"b":2},"z":1}"#
        );
    }

    /// Numbers as they came (`UseNumber`), whatever their size; a repeated key's last value.
    #[test]
    fn numbers_keep_their_literal_text() {
        let body = br#"{"b": 1.50, "a": [1e3], "s": "x", "a": [0.10]}"#;
        assert_eq!(render(&GoJson::parse(body).unwrap()), r#"{"a":[0.10],"b":1.50,"s":"x"}"#);
        let v = GoJson::parse(br#"[1e3, -0, 123456789012345678901234567890, 1E400]"#).unwrap();
        assert_eq!(render(&v), "[1e3,-0,123456789012345678901234567890,1E400]");
        assert!(GoJson::parse(b"not json").is_none());
    }

    #[test]
    fn floats_as_go_writes_float64() {
        for (f, want) in [
            (1000.0, "1000"),
            (0.000001, "0.000001"),
            (1e-7, "1e-7"),
            (1e21, "1e+21"),
            (1.5, "1.5"),
            (-0.0, "-0"),
            (1e300, "1e+300"),
        ] {
            assert_eq!(go_float(f), want, "{f}");
        }
        // Decoded without UseNumber, every number is a float64.
        let v = serde_json::json!({"i": 5432, "f": 1.0, "big": 12345678901234567890u64});
        assert_eq!(
            render(&GoJson::from_decoded(&v)),
            r#"{"big":12345678901234567000,"f":1,"i":5432}"#
        );
    }

    #[test]
    fn debug_is_redacted() {
        let v = GoJson::parse(br#"{"password": "hunter2"}"#).unwrap();
        assert!(!format!("{v:?}").contains("hunter2"));
        let mut v = v;
        v.zeroize();
        assert_eq!(v["password"], GoJson::String(String::new()));
    }
}
