//! JSON written the way Go's `encoding/json` writes it, because upstream
//! writes whole Vault responses and non-string values with `json.Marshal`:
//! compact, map keys sorted, and `<`, `>`, `&`, U+2028 and U+2029 escaped.

use serde_json::Value;
use zeroize::Zeroize;

pub fn go_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => match n.as_f64().filter(|_| n.is_f64()) {
            Some(f) => out.extend_from_slice(go_float(f).as_bytes()),
            None => out.extend_from_slice(n.to_string().as_bytes()),
        },
        Value::String(s) => go_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                go_json(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                go_string(key, out);
                out.push(b':');
                go_json(item, out);
            }
            out.push(b'}');
        }
    }
}

/// A float64 as `encoding/json` writes it: the shortest digits, without an
/// exponent for 1e-6 <= |f| < 1e21 (`1e3` is `1000`), else `1e-7`, `1e+21`.
fn go_float(f: f64) -> String {
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

fn go_string(s: &str, out: &mut Vec<u8>) {
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

/// A parsed Vault response. Its strings are secret material: they are
/// overwritten when it is dropped, and `Debug` shows none of them.
pub struct SecretJson(pub Value);

impl std::fmt::Debug for SecretJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretJson(<redacted>)")
    }
}

impl Drop for SecretJson {
    fn drop(&mut self) {
        fn wipe(value: &mut Value) {
            match value {
                Value::String(s) => s.zeroize(),
                Value::Array(items) => items.iter_mut().for_each(wipe),
                Value::Object(map) => map.values_mut().for_each(wipe),
                _ => {}
            }
        }
        wipe(&mut self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(v: Value) -> String {
        let mut out = Vec::new();
        go_json(&v, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn as_go_marshals() {
        let v = serde_json::json!({
            "z": 1, "a": [true, null, 1.5], "html": "<a href=\"x\">&</a>",
            "ctl": "\u{1}\u{8}\u{c}\n\t\r\u{2028}é", "m": {"b": 2, "a": -3}
        });
        assert_eq!(
            render(v),
            r#"{"a":[true,null,1.5],"ctl":"\u0001\b\f\n\t\r\u2028é","html":"\u003ca href=\"x\"\u003e\u0026\u003c/a\u003e","m":{"a":-3,"b":2},"z":1}"#
        );
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
    }

    #[test]
    fn debug_is_redacted() {
        let s = SecretJson(serde_json::json!({"password": "hunter2"}));
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
