//! Parsing helpers for SecretProviderClass parameters, which are all strings,
//! some of them holding YAML documents.

use std::time::Duration;

use serde::de::DeserializeOwned;

/// A parameter that could not be parsed; names the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter {field:?}: {message}")]
pub struct ParamError {
    pub field: String,
    pub message: String,
}

impl ParamError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// Parses a parameter holding YAML (e.g. `objects`) into `T`.
pub fn parse_yaml<T: DeserializeOwned>(field: &str, text: &str) -> Result<T, ParamError> {
    serde_saphyr::from_str(text).map_err(|e| ParamError::new(field, format!("invalid YAML: {e}")))
}

/// Parses a parameter holding YAML the way Go's `gopkg.in/yaml.v3` decodes
/// it into typed fields, as the Azure, GCP and Vault providers do
/// ([`crate::goyaml`]): `filePermission: 0600` is octal, a quoted number is
/// refused by a numeric field, null leaves the zero value.
pub fn parse_yaml_v3<T: DeserializeOwned>(field: &str, text: &str) -> Result<T, ParamError> {
    crate::goyaml::from_str(crate::goyaml::Dialect::YamlV3, field, text)
}

/// Go's `strconv.ParseBool`, which the upstream providers use for their
/// boolean parameters: `1 t T TRUE true True` and `0 f F FALSE false False`.
pub fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Parses an octal permission string such as `"0600"` or `"644"` into mode
/// bits, refusing anything beyond 0o777 (no setuid, setgid or sticky bits in
/// a secret volume).
pub fn parse_octal_mode(field: &str, value: &str) -> Result<u32, ParamError> {
    let digits = value.trim();
    let invalid =
        || ParamError::new(field, format!("{value:?} is not an octal file mode like \"0644\""));
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return Err(invalid());
    }
    let mode = u32::from_str_radix(digits, 8).map_err(|_| invalid())?;
    if mode > 0o777 {
        return Err(ParamError::new(field, format!("{value:?} sets bits beyond 0777")));
    }
    Ok(mode)
}

/// Parses a Go-style duration: a sequence of `<number><unit>` with units
/// h, m, s, ms (e.g. `2m`, `1h30m`, `500ms`, `0s`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = || format!("{s:?} is not a duration like 2m, 30s or 1h30m");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
        let n: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let (unit, len) = ["ms", "h", "m", "s"]
            .iter()
            .find(|u| rest.starts_with(**u))
            .map(|u| (*u, u.len()))
            .ok_or_else(invalid)?;
        rest = &rest[len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(invalid)?),
            _ => Duration::from_secs(n.checked_mul(3600).ok_or_else(invalid)?),
        };
        total = total.checked_add(part).ok_or_else(invalid)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_modes() {
        assert_eq!(parse_octal_mode("m", "0600"), Ok(0o600));
        assert_eq!(parse_octal_mode("m", "644"), Ok(0o644));
        assert_eq!(parse_octal_mode("m", "0"), Ok(0));
        assert_eq!(parse_octal_mode("m", "0777"), Ok(0o777));
        for bad in ["", "0800", "rw", "4755", "06000", "-1", "0x1"] {
            let err = parse_octal_mode("filePermission", bad).unwrap_err();
            assert_eq!(err.field, "filePermission", "{bad}");
        }
    }

    #[test]
    fn yaml_v3_reads_a_leading_zero_as_octal() {
        #[derive(serde::Deserialize, Debug)]
        struct O {
            mode: u32,
        }
        let v: Vec<O> =
            parse_yaml_v3("objects", "- mode: 0600\n- mode: 420\n- mode: 0o640\n").unwrap();
        assert_eq!(v.iter().map(|o| o.mode).collect::<Vec<_>>(), [0o600, 420, 0o640]);
        // The YAML 1.2 reading, for contrast, takes no leading zero at all.
        assert!(parse_yaml::<Vec<O>>("objects", "- mode: 0600\n").is_err());
    }

    #[test]
    fn go_bools() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(t), Some(true), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(f), Some(false), "{f}");
        }
        for bad in ["", "yes", "tRUE", " true"] {
            assert_eq!(parse_go_bool(bad), None, "{bad}");
        }
    }

    #[test]
    fn yaml_errors_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct O {
            name: String,
        }
        let v: Vec<O> = parse_yaml("objects", "- name: a\n- name: b\n").unwrap();
        assert_eq!(v.len(), 2);
        let err = parse_yaml::<Vec<O>>("objects", "- name: [unclosed").unwrap_err();
        assert_eq!(err.field, "objects");
        assert!(err.to_string().starts_with("parameter \"objects\": invalid YAML"), "{err}");
    }
}
