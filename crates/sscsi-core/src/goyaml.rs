//! YAML read the way the official providers' Go decoders read it, because
//! their typing rules decide whether a class mounts and what bytes are
//! written.
//!
//! - [`Dialect::YamlV3`]: `gopkg.in/yaml.v3` decoding into typed Go fields
//!   (vault-csi-provider, the GCP and Azure providers). A plain scalar is
//!   typed by YAML 1.2 core rules plus yaml.v3's extras (`0600` octal, `_`
//!   ignored in numbers); a string field takes any scalar's text as written;
//!   a numeric field refuses a quoted value and truncates a float; null leaves
//!   the Go zero value; a repeated key is refused.
//! - [`Dialect::SigsYaml`]: `sigs.k8s.io/yaml` (ASCP): go-yaml v2 types the
//!   scalar by YAML 1.1 rules (`yes` is true, `0600` is 384), the value
//!   becomes JSON (a number or bool aimed at a string field becomes its Go
//!   text: `384`, `true`, float32 `%g`), and `encoding/json` fills the
//!   struct: field names match case-insensitively, a later key wins.
//!
//! Both read only the first document of a stream. The tree is built from
//! granit-parser's events (the parser under serde-saphyr), which keep each
//! scalar's style and tag; [`from_str`] then drives serde over it with the
//! dialect's rules, so providers keep plain `#[derive(Deserialize)]` structs
//! whose Rust types are the Go field types.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use granit_parser::{Event, Parser, ScalarStyle, Tag};
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};

use crate::params::ParamError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    YamlV3,
    SigsYaml,
}

/// Parses `text` (the value of parameter `field`) into `T` by `dialect`'s rules.
pub fn from_str<T: DeserializeOwned>(
    dialect: Dialect,
    field: &str,
    text: &str,
) -> Result<T, ParamError> {
    let node = parse(text).map_err(|e| ParamError::new(field, format!("invalid YAML: {e}")))?;
    T::deserialize(De { node: &node, dialect, path: String::new() })
        .map_err(|e| ParamError::new(field, e.0))
}

/// What yaml.v3 gives for `interface{}`: the typed value of every node.
#[derive(Debug, Clone, PartialEq)]
pub enum GoValue {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    String(String),
    /// A plain scalar yaml.v3 reads as `time.Time`; the text as written.
    Timestamp(String),
    Seq(Vec<GoValue>),
    /// Keys as their text; yaml.v3's later duplicates are refused.
    Map(Vec<(String, GoValue)>),
}

/// Wipes every string, as for a secret payload.
impl zeroize::Zeroize for GoValue {
    fn zeroize(&mut self) {
        match self {
            GoValue::String(s) | GoValue::Timestamp(s) => s.zeroize(),
            GoValue::Seq(items) => items.iter_mut().for_each(zeroize::Zeroize::zeroize),
            GoValue::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
                k.zeroize();
                v.zeroize();
            }),
            GoValue::Null
            | GoValue::Bool(_)
            | GoValue::Int(_)
            | GoValue::Uint(_)
            | GoValue::Float(_) => {}
        }
    }
}

/// Parses `text` into yaml.v3's untyped reading (`map[string]interface{}` and friends).
pub fn interface(field: &str, text: &str) -> Result<GoValue, ParamError> {
    let node = parse(text).map_err(|e| ParamError::new(field, format!("invalid YAML: {e}")))?;
    to_value(&node).map_err(|e| ParamError::new(field, e.0))
}

fn to_value(node: &Node) -> Result<GoValue, Error> {
    Ok(match node {
        Node::Scalar(s) => match s.resolve(Dialect::YamlV3) {
            Resolved::Null => GoValue::Null,
            Resolved::Bool(b) => GoValue::Bool(b),
            Resolved::Int(i) => GoValue::Int(i),
            Resolved::Uint(u) => GoValue::Uint(u),
            Resolved::Float(f) => GoValue::Float(f),
            Resolved::Timestamp => GoValue::Timestamp(s.value.clone()),
            Resolved::Str => GoValue::String(s.text()?),
        },
        Node::Seq(items, _) => GoValue::Seq(items.iter().map(to_value).collect::<Result<_, _>>()?),
        Node::Map(entries, _) => {
            check_duplicates(entries)?;
            let mut out = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                let Node::Scalar(key) = k else {
                    return Err(Error(format!(
                        "line {}: a mapping key that is not a scalar",
                        k.line()
                    )));
                };
                out.push((key.text()?, to_value(v)?));
            }
            GoValue::Map(out)
        }
    })
}

// ---- The tree ----

#[derive(Debug, Clone)]
struct Scalar {
    value: String,
    /// Quoted or block: never typed, always a string.
    quoted: bool,
    /// `!!str`, `!!int`, `!!binary`, ... or a local tag `!foo`.
    tag: Option<String>,
    line: usize,
}

/// A parsed document may be a secret payload (GCP's `extractYAMLKey`): its
/// text is wiped with the tree.
impl Drop for Scalar {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.value);
    }
}

#[derive(Debug, Clone)]
enum Node {
    Scalar(Scalar),
    Seq(Vec<Node>, usize),
    Map(Vec<(Node, Node)>, usize),
}

impl Node {
    fn line(&self) -> usize {
        match self {
            Node::Scalar(s) => s.line,
            Node::Seq(_, l) | Node::Map(_, l) => *l,
        }
    }

    fn null(line: usize) -> Self {
        Node::Scalar(Scalar { value: String::new(), quoted: false, tag: None, line })
    }

    fn is_null(&self, dialect: Dialect) -> bool {
        matches!(self, Node::Scalar(s) if s.resolve(dialect) == Resolved::Null)
    }

    /// Go's name for the node's kind, in "cannot unmarshal !!seq into ...".
    fn kind_tag(&self, dialect: Dialect) -> String {
        match self {
            Node::Scalar(s) => s.short_tag(dialect).to_owned(),
            Node::Seq(..) => "!!seq".into(),
            Node::Map(..) => "!!map".into(),
        }
    }
}

fn tag_name(tag: &Tag) -> String {
    if tag.handle() == "tag:yaml.org,2002:" {
        format!("!!{}", tag.suffix())
    } else {
        format!("{}{}", tag.handle(), tag.suffix())
    }
}

/// Builds the tree of the first document, resolving anchors, aliases and `<<` merges.
fn parse(text: &str) -> Result<Node, String> {
    enum Frame {
        Seq(Vec<Node>, usize, usize),
        Map(Vec<(Node, Node)>, Option<Node>, usize, usize),
    }
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut parser = Parser::new_from_str(text);
    let mut started = false;
    while let Some(event) = parser.next_event() {
        let (event, span) = event.map_err(|e| e.to_string())?;
        let line = span.start.line();
        let done = match event {
            Event::DocumentStart(..) => {
                started = true;
                None
            }
            Event::DocumentEnd | Event::StreamEnd if started && stack.is_empty() => break,
            Event::Scalar(value, style, anchor, tag) => {
                let node = Node::Scalar(Scalar {
                    value: value.into_owned(),
                    quoted: !matches!(style, ScalarStyle::Plain),
                    tag: tag.map(|t| tag_name(&t)),
                    line,
                });
                if anchor > 0 {
                    anchors.insert(anchor, node.clone());
                }
                Some(node)
            }
            Event::Alias(id) => Some(
                anchors.get(&id).cloned().ok_or_else(|| format!("line {line}: unknown anchor"))?,
            ),
            Event::SequenceStart(_, anchor, _) => {
                stack.push(Frame::Seq(Vec::new(), anchor, line));
                None
            }
            Event::MappingStart(_, anchor, _) => {
                stack.push(Frame::Map(Vec::new(), None, anchor, line));
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(items, anchor, line)) => {
                    let node = Node::Seq(items, line);
                    if anchor > 0 {
                        anchors.insert(anchor, node.clone());
                    }
                    Some(node)
                }
                _ => return Err("unbalanced sequence".into()),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(entries, _, anchor, line)) => {
                    let node = Node::Map(merge(entries), line);
                    if anchor > 0 {
                        anchors.insert(anchor, node.clone());
                    }
                    Some(node)
                }
                _ => return Err("unbalanced mapping".into()),
            },
            _ => None,
        };
        let Some(node) = done else { continue };
        match stack.last_mut() {
            Some(Frame::Seq(items, ..)) => items.push(node),
            Some(Frame::Map(entries, key, ..)) => match key.take() {
                Some(k) => entries.push((k, node)),
                None => *key = Some(node),
            },
            None => root = Some(node),
        }
    }
    Ok(root.unwrap_or_else(|| Node::null(1)))
}

/// `<<: *base` (or a list of them): the merged maps' keys, unless the mapping
/// sets them itself; earlier maps of a list win over later ones.
fn merge(entries: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
    let is_merge =
        |k: &Node| matches!(k, Node::Scalar(s) if !s.quoted && s.tag.is_none() && s.value == "<<");
    if !entries.iter().any(|(k, _)| is_merge(k)) {
        return entries;
    }
    let (merges, mut own): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(k, _)| is_merge(k));
    let key_text = |k: &Node| match k {
        Node::Scalar(s) => Some(s.value.clone()),
        _ => None,
    };
    for (_, value) in merges {
        let maps = match value {
            Node::Map(m, _) => vec![m],
            Node::Seq(items, _) => items
                .into_iter()
                .filter_map(|i| match i {
                    Node::Map(m, _) => Some(m),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        for map in maps {
            for (k, v) in map {
                let text = key_text(&k);
                if !own.iter().any(|(o, _)| key_text(o) == text) {
                    own.push((k, v));
                }
            }
        }
    }
    own
}

// ---- Scalar resolution ----

#[derive(Debug, Clone, Copy, PartialEq)]
enum Resolved {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Timestamp,
    Str,
}

impl Scalar {
    /// What the decoder's resolver makes of the scalar (`resolve.go` of
    /// yaml.v3 or go-yaml v2).
    fn resolve(&self, dialect: Dialect) -> Resolved {
        match self.tag.as_deref() {
            Some("!!str" | "!!binary") => return Resolved::Str,
            Some("!!null") => return Resolved::Null,
            Some(t) if t.starts_with("!!") => {}
            Some(_) => return Resolved::Str,
            None if self.quoted => return Resolved::Str,
            None => {}
        }
        let s = self.value.as_str();
        match s {
            "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
            "true" | "True" | "TRUE" => return Resolved::Bool(true),
            "false" | "False" | "FALSE" => return Resolved::Bool(false),
            ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
                return Resolved::Float(f64::INFINITY);
            }
            "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
            ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
            _ => {}
        }
        if dialect == Dialect::SigsYaml {
            match s {
                "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => {
                    return Resolved::Bool(true);
                }
                "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
                    return Resolved::Bool(false);
                }
                _ => {}
            }
        }
        let first = s.as_bytes()[0];
        if first == b'.' {
            return s.parse::<f64>().map_or(Resolved::Str, Resolved::Float);
        }
        if !(first.is_ascii_digit() || first == b'+' || first == b'-') {
            return Resolved::Str;
        }
        if is_timestamp(s) {
            return Resolved::Timestamp;
        }
        let plain = s.replace('_', "");
        if let Some(i) = go_parse_int(&plain) {
            return i;
        }
        if is_yaml_float(&plain)
            && let Ok(f) = plain.parse::<f64>()
        {
            return Resolved::Float(f);
        }
        Resolved::Str
    }

    /// The scalar's string value: its text, or `!!binary`'s decoded bytes.
    fn text(&self) -> Result<String, Error> {
        if self.tag.as_deref() == Some("!!binary") {
            let compact: String = self.value.split_whitespace().collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|_| Error(format!("line {}: !!binary value is not base64", self.line)))?;
            return String::from_utf8(bytes)
                .map_err(|_| Error(format!("line {}: !!binary value is not text", self.line)));
        }
        Ok(self.value.clone())
    }

    fn short_tag(&self, dialect: Dialect) -> &'static str {
        match self.resolve(dialect) {
            Resolved::Null => "!!null",
            Resolved::Bool(_) => "!!bool",
            Resolved::Int(_) | Resolved::Uint(_) => "!!int",
            Resolved::Float(_) => "!!float",
            Resolved::Timestamp => "!!timestamp",
            Resolved::Str => "!!str",
        }
    }

    fn cannot(&self, dialect: Dialect, into: &str) -> Error {
        Error(format!(
            "line {}: cannot unmarshal {} `{}` into {into}",
            self.line,
            self.short_tag(dialect),
            self.value
        ))
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)`, then `ParseUint`: an optional sign, then
/// `0x`, `0o`, `0b` or a leading `0` (octal), else decimal.
fn go_parse_int(s: &str) -> Option<Resolved> {
    let (negative, body) = match s.as_bytes().first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = match body.get(..2) {
        Some("0x" | "0X") => (16, &body[2..]),
        Some("0o" | "0O") => (8, &body[2..]),
        Some("0b" | "0B") => (2, &body[2..]),
        _ if body.len() > 1 && body.starts_with('0') => (8, &body[1..]),
        _ => (10, body),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u128::from_str_radix(digits, radix).ok()?;
    if negative {
        let v = i128::try_from(magnitude).ok().map(|m| -m)?;
        i64::try_from(v).ok().map(Resolved::Int)
    } else if let Ok(v) = i64::try_from(magnitude) {
        Some(Resolved::Int(v))
    } else {
        // ParseUint takes no sign.
        (!s.starts_with('+')).then_some(())?;
        u64::try_from(magnitude).ok().map(Resolved::Uint)
    }
}

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`, the resolvers' float pattern.
fn is_yaml_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// The timestamp forms the resolvers try first: `YYYY-M-D`, optionally
/// followed by a time (`T`, `t` or spaces).
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let run = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    if b.len() < 8 || run(0) != 4 || b[4] != b'-' {
        return false;
    }
    let month = run(5);
    if !(1..=2).contains(&month) || b.get(5 + month) != Some(&b'-') {
        return false;
    }
    let day_at = 6 + month;
    let day = run(day_at);
    if !(1..=2).contains(&day) {
        return false;
    }
    match b.get(day_at + day) {
        None => true,
        Some(b'T' | b't' | b' ' | b'\t') => true,
        Some(_) => false,
    }
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 32)`, what sigs.k8s.io/yaml writes
/// for a float aimed at a string field.
fn format_g32(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    #[allow(clippy::cast_possible_truncation)]
    let x = f as f32;
    // Rust's `{:e}` gives the shortest digits that read back as this f32.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("a number");
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if x.is_sign_negative() && x != 0.0 { "-" } else { "" };
    if x == 0.0 {
        return format!("{sign}0");
    }
    if !(-4..6).contains(&exp) {
        let (head, tail) = digits.split_at(1);
        let frac = if tail.is_empty() { String::new() } else { format!(".{tail}") };
        let e_sign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{head}{frac}e{e_sign}{:02}", exp.abs());
    }
    let point = exp + 1;
    let text = if point <= 0 {
        format!("0.{}{digits}", "0".repeat(usize::try_from(-point).expect("small")))
    } else {
        let point = usize::try_from(point).expect("small");
        if digits.len() <= point {
            format!("{digits}{}", "0".repeat(point - digits.len()))
        } else {
            format!("{}.{}", &digits[..point], &digits[point..])
        }
    };
    format!("{sign}{text}")
}

// ---- serde over the tree ----

#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

struct De<'a> {
    node: &'a Node,
    dialect: Dialect,
    /// Where in the document, for messages: `[0].filePermission`.
    path: String,
}

impl<'a> De<'a> {
    fn child(&self, node: &'a Node, step: String) -> Self {
        De { node, dialect: self.dialect, path: format!("{}{step}", self.path) }
    }

    fn at(&self, e: Error) -> Error {
        if self.path.is_empty() { e } else { Error(format!("{} ({})", e.0, self.path)) }
    }

    fn scalar(&self) -> Option<&'a Scalar> {
        match self.node {
            Node::Scalar(s) => Some(s),
            _ => None,
        }
    }

    fn cannot(&self, into: &str) -> Error {
        let e = match self.node {
            Node::Scalar(s) => s.cannot(self.dialect, into),
            other => Error(format!(
                "line {}: cannot unmarshal {} into {into}",
                other.line(),
                other.kind_tag(self.dialect)
            )),
        };
        self.at(e)
    }

    /// The string a Go `string` field receives.
    fn string(&self) -> Result<String, Error> {
        let Some(s) = self.scalar() else { return Err(self.cannot("string")) };
        if self.dialect == Dialect::YamlV3 {
            return match s.resolve(self.dialect) {
                Resolved::Null => Ok(String::new()),
                _ => s.text().map_err(|e| self.at(e)),
            };
        }
        Ok(match s.resolve(self.dialect) {
            Resolved::Null => String::new(),
            Resolved::Bool(b) => b.to_string(),
            Resolved::Int(i) => i.to_string(),
            Resolved::Uint(u) => u.to_string(),
            Resolved::Float(f) => format_g32(f),
            Resolved::Timestamp | Resolved::Str => s.text().map_err(|e| self.at(e))?,
        })
    }

    /// The integer a Go integer field of type `into` receives (range `min..=max`).
    fn integer(&self, into: &str, min: i128, max: i128) -> Result<i128, Error> {
        let Some(s) = self.scalar() else { return Err(self.cannot(into)) };
        let value = match s.resolve(self.dialect) {
            Resolved::Null => return Ok(0),
            Resolved::Int(i) => Some(i128::from(i)),
            Resolved::Uint(u) => Some(i128::from(u)),
            // yaml.v3 converts a float that fits, truncating; encoding/json
            // takes only a whole number.
            #[allow(clippy::cast_possible_truncation)]
            Resolved::Float(f) if f.is_finite() => match self.dialect {
                Dialect::YamlV3 => Some(f.trunc() as i128),
                Dialect::SigsYaml => (f.fract() == 0.0).then_some(f as i128),
            },
            _ => None,
        };
        value.filter(|v| (min..=max).contains(v)).ok_or_else(|| self.cannot(into))
    }
}

macro_rules! integer {
    ($($method:ident $visit:ident $ty:ty, $go:literal;)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            let v = self.integer($go, i128::from(<$ty>::MIN), i128::from(<$ty>::MAX))?;
            visitor.$visit(<$ty>::try_from(v).expect("checked range"))
        }
    )*};
}

impl<'de> de::Deserializer<'de> for De<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.node {
            Node::Seq(..) => self.deserialize_seq(visitor),
            Node::Map(..) => self.deserialize_map(visitor),
            Node::Scalar(s) => match s.resolve(self.dialect) {
                Resolved::Null => visitor.visit_unit(),
                Resolved::Bool(b) => visitor.visit_bool(b),
                Resolved::Int(i) => visitor.visit_i64(i),
                Resolved::Uint(u) => visitor.visit_u64(u),
                Resolved::Float(f) => visitor.visit_f64(f),
                Resolved::Timestamp | Resolved::Str => {
                    visitor.visit_string(s.text().map_err(|e| self.at(e))?)
                }
            },
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let Some(s) = self.scalar() else { return Err(self.cannot("bool")) };
        match s.resolve(self.dialect) {
            Resolved::Null => visitor.visit_bool(false),
            Resolved::Bool(b) => visitor.visit_bool(b),
            // yaml.v3 still takes YAML 1.1's words into a typed bool.
            Resolved::Str if self.dialect == Dialect::YamlV3 => match s.value.as_str() {
                "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => visitor.visit_bool(true),
                "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => visitor.visit_bool(false),
                _ => Err(self.cannot("bool")),
            },
            _ => Err(self.cannot("bool")),
        }
    }

    integer! {
        deserialize_i8 visit_i8 i8, "int8";
        deserialize_i16 visit_i16 i16, "int16";
        deserialize_i32 visit_i32 i32, "int32";
        deserialize_i64 visit_i64 i64, "int64";
        deserialize_u8 visit_u8 u8, "uint8";
        deserialize_u16 visit_u16 u16, "uint16";
        deserialize_u32 visit_u32 u32, "uint32";
        deserialize_u64 visit_u64 u64, "uint64";
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let Some(s) = self.scalar() else { return Err(self.cannot("float64")) };
        #[allow(clippy::cast_precision_loss)]
        match s.resolve(self.dialect) {
            Resolved::Null => visitor.visit_f64(0.0),
            Resolved::Int(i) => visitor.visit_f64(i as f64),
            Resolved::Uint(u) => visitor.visit_f64(u as f64),
            Resolved::Float(f) => visitor.visit_f64(f),
            _ => Err(self.cannot("float64")),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_string(self.string()?)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_byte_buf(self.string()?.into_bytes())
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.node.is_null(self.dialect) {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.node {
            Node::Seq(items, _) => {
                let items: Vec<De<'_>> = items
                    .iter()
                    .enumerate()
                    // yaml.v3 drops a null item of a list of structs or
                    // strings; sigs.k8s.io/yaml keeps it (a nil pointer).
                    .filter(|(_, n)| self.dialect == Dialect::SigsYaml || !n.is_null(self.dialect))
                    .map(|(i, n)| self.child(n, format!("[{i}]")))
                    .collect();
                visitor.visit_seq(de::value::SeqDeserializer::new(items.into_iter()))
            }
            n if n.is_null(self.dialect) => {
                visitor.visit_seq(de::value::SeqDeserializer::new(std::iter::empty::<De<'_>>()))
            }
            _ => Err(self.cannot("a list")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let entries = match self.node {
            Node::Map(entries, _) => entries,
            n if n.is_null(self.dialect) => {
                return visitor.visit_map(de::value::MapDeserializer::new(std::iter::empty::<(
                    De<'_>,
                    De<'_>,
                )>()));
            }
            _ => return Err(self.cannot("a map")),
        };
        let entries: Vec<(De<'_>, De<'_>)> = match self.dialect {
            Dialect::YamlV3 => {
                check_duplicates(entries).map_err(|e| self.at(e))?;
                entries
                    .iter()
                    .map(|(k, v)| {
                        let step = key_step(k);
                        (self.child(k, String::new()), self.child(v, step))
                    })
                    .collect()
            }
            // A Go map from JSON: a later key replaces an earlier one.
            Dialect::SigsYaml => last_values(entries)
                .into_iter()
                .map(|(k, v)| (self.child(k, String::new()), self.child(v, key_step(k))))
                .collect(),
        };
        visitor.visit_map(de::value::MapDeserializer::new(entries.into_iter()))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        if self.dialect == Dialect::YamlV3 {
            return match self.node {
                Node::Scalar(s) if !self.node.is_null(self.dialect) => {
                    Err(self.at(s.cannot(self.dialect, name)))
                }
                Node::Seq(..) => Err(self.cannot(name)),
                _ => self.deserialize_map(visitor),
            };
        }
        let entries = match self.node {
            Node::Map(entries, _) => entries,
            n if n.is_null(self.dialect) => &Vec::new(),
            _ => return Err(self.cannot(name)),
        };
        // encoding/json over the object json.Marshal made of the map: keys in
        // sorted order (a repeated key kept once, its last value), each set
        // on the field it names exactly or else case-insensitively, so the
        // spelling that sorts last wins.
        let mut unique: Vec<(String, &Node)> = last_values(entries)
            .into_iter()
            .map(|(k, v)| (key_text(k).unwrap_or_default(), v))
            .collect();
        unique.sort_by(|a, b| a.0.cmp(&b.0));
        let mut chosen: Vec<(&'static str, &Node)> = Vec::new();
        for (key, value) in &unique {
            let field = fields
                .iter()
                .find(|f| **f == key.as_str())
                .or_else(|| fields.iter().find(|f| fold_eq(f, key)));
            if let Some(field) = field {
                chosen.retain(|(f, _)| f != field);
                chosen.push((field, value));
            }
        }
        let entries: Vec<(de::value::StrDeserializer<'static, Error>, De<'_>)> = chosen
            .into_iter()
            .map(|(f, v)| (f.into_deserializer(), self.child(v, format!(".{f}"))))
            .collect();
        visitor.visit_map(de::value::MapDeserializer::new(entries.into_iter()))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let text = self.string().map_err(|_| self.cannot(name))?;
        visitor.visit_enum(text.into_deserializer())
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

impl<'de, 'a> IntoDeserializer<'de, Error> for De<'a> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

fn key_text(k: &Node) -> Option<String> {
    match k {
        Node::Scalar(s) => Some(s.value.clone()),
        _ => None,
    }
}

/// A Go map's entries: a repeated key once, with its last value.
fn last_values(entries: &[(Node, Node)]) -> Vec<(&Node, &Node)> {
    let mut last: Vec<(&Node, &Node)> = Vec::new();
    for (k, v) in entries {
        let text = key_text(k);
        last.retain(|(o, _)| key_text(o) != text);
        last.push((k, v));
    }
    last
}

fn key_step(k: &Node) -> String {
    key_text(k).map_or_else(String::new, |t| format!(".{t}"))
}

/// yaml.v3 refuses a key that appears twice in one mapping.
fn check_duplicates(entries: &[(Node, Node)]) -> Result<(), Error> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (k, _) in entries {
        let Some(text) = key_text(k) else { continue };
        if let Some(first) = seen.insert(text.clone(), k.line()) {
            return Err(Error(format!(
                "line {}: mapping key {text:?} already defined at line {first}",
                k.line()
            )));
        }
    }
    Ok(())
}

/// `encoding/json`'s case-insensitive field match (Unicode simple folding:
/// ASCII, plus `ſ` for s and the Kelvin sign for k).
fn fold_eq(field: &str, key: &str) -> bool {
    let fold = |c: char| match c {
        'ſ' => 's',
        '\u{212a}' => 'k',
        c => c.to_lowercase().next().unwrap_or(c),
    };
    field.chars().map(fold).eq(key.chars().map(fold))
}

#[cfg(test)]
mod tests;
