//! Templates, rendered by minijinja in a sandbox: no loader (no `include`,
//! `import` or `extends` of anything but the template itself), no file,
//! network or environment access (minijinja has none to offer), undefined
//! values are errors, nothing is escaped. The only data is the mount's
//! objects: `objects` (path → text) and `object("path")`, which names a
//! missing object in its error; `fromjson` parses an object's JSON.
//!
//! Bounds: [`MAX_SOURCE`] bytes of template, [`FUEL`] instructions (a loop
//! that never ends runs out), nesting depth, and [`MAX_OUTPUT`] bytes
//! written. `namespace()` is left out, so no value can grow from one loop
//! iteration to the next, and so are the filters that take a width
//! (`indent`, `format`). Not bounded: the memory of one operation inside
//! minijinja (a string repeated up to its own 100 MB cap, `replace` of a
//! large string); that needs a separate process, which is not done yet.

use std::collections::BTreeMap;
use std::io;

use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};
use sscsi_core::SecretBytes;

use crate::Objects;

/// Instructions one render may run: far more than any config file needs,
/// a few milliseconds of CPU.
pub const FUEL: u64 = 200_000;
/// The largest file a template may write.
pub const MAX_OUTPUT: usize = 1 << 20;
const RECURSION_LIMIT: usize = 32;
/// The largest template taken.
pub const MAX_SOURCE: usize = 64 << 10;

fn environment<'a>() -> Environment<'a> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_keep_trailing_newline(true);
    for global in ["namespace", "debug"] {
        env.remove_global(global);
    }
    for filter in ["indent", "format"] {
        env.remove_filter(filter);
    }
    env.add_filter("fromjson", |text: &str| {
        serde_json::from_str::<serde_json::Value>(text)
            .map(|v| Value::from_serialize(&v))
            .map_err(|_| Error::new(ErrorKind::InvalidOperation, "fromjson: not JSON"))
    });
    env
}

/// Parses `text`: a syntax error is found when the class is read, not at
/// the first mount. The message names the line.
pub(crate) fn check(name: &str, text: &str) -> Result<(), String> {
    if text.len() > MAX_SOURCE {
        return Err(format!("the template is longer than {MAX_SOURCE} bytes"));
    }
    let mut env = environment();
    env.add_template_owned(name.to_owned(), text.to_owned()).map_err(|e| describe(&e))?;
    Ok(())
}

/// Renders `text` with the mount's `objects`.
pub(crate) fn render(name: &str, text: &str, objects: &Objects<'_>) -> Result<SecretBytes, String> {
    let mut env = environment();
    // Text objects only; a binary one is there to name, not to print.
    let texts: BTreeMap<String, Value> = objects
        .iter()
        .filter_map(|(path, bytes)| {
            std::str::from_utf8(bytes.expose()).ok().map(|t| ((*path).to_owned(), Value::from(t)))
        })
        .collect();
    let lookup = texts.clone();
    let names: Vec<String> = objects.keys().map(|k| (*k).to_owned()).collect();
    env.add_function("object", move |path: &str| {
        lookup.get(path).cloned().ok_or_else(|| {
            let detail = if names.iter().any(|n| n == path) {
                format!("object {path:?} is not UTF-8 text")
            } else {
                format!("object {path:?} is not mounted by this class (it mounts {names:?})")
            };
            Error::new(ErrorKind::InvalidOperation, detail)
        })
    });
    env.add_template_owned(name.to_owned(), text.to_owned()).map_err(|e| describe(&e))?;
    let template = env.get_template(name).map_err(|e| describe(&e))?;
    let mut out = Bounded { bytes: Vec::new(), over: false };
    let context = minijinja::context! { objects => Value::from(texts) };
    match template.render_captured_to(context, &mut out) {
        Ok(_) => Ok(SecretBytes::new(out.bytes)),
        Err(_) if out.over => {
            drop(SecretBytes::new(out.bytes));
            Err(format!("the template writes more than {MAX_OUTPUT} bytes"))
        }
        Err(e) => {
            drop(SecretBytes::new(out.bytes));
            Err(redact(describe(&e), objects))
        }
    }
}

/// A render error's message with every mounted value taken out: a few of
/// minijinja's messages print the operands (`unable to calculate 9999 *
/// ...`), and a template can make them secrets. Values of an object that is
/// JSON count one by one; values under 4 characters would only blur the
/// message.
fn redact(mut message: String, objects: &Objects<'_>) -> String {
    fn leaves(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Number(n) => out.push(n.to_string()),
            serde_json::Value::Array(items) => items.iter().for_each(|v| leaves(v, out)),
            serde_json::Value::Object(map) => map.values().for_each(|v| leaves(v, out)),
            _ => {}
        }
    }
    let mut values = Vec::new();
    for bytes in objects.values() {
        let Ok(text) = std::str::from_utf8(bytes.expose()) else { continue };
        values.push(text.to_owned());
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
            leaves(&json, &mut values);
        }
    }
    // Longest first, so a value inside another is not left half shown.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for value in values.iter_mut() {
        if value.len() >= 4 && message.contains(value.as_str()) {
            message = message.replace(value.as_str(), "<redacted>");
        }
        zeroize::Zeroize::zeroize(value);
    }
    message
}

/// The error's kind, detail and line; never the values it was rendering
/// (minijinja's `debug` feature, which would show them, is off).
fn describe(e: &Error) -> String {
    let what = match e.kind() {
        ErrorKind::OutOfFuel => {
            format!("stopped after {FUEL} instructions (a loop that never ends?)")
        }
        kind => match e.detail() {
            Some(detail) => format!("{kind}: {detail}"),
            None => kind.to_string(),
        },
    };
    match e.line() {
        Some(line) => format!("template line {line}: {what}"),
        None => format!("template: {what}"),
    }
}

/// A writer that refuses past [`MAX_OUTPUT`] bytes.
struct Bounded {
    bytes: Vec<u8>,
    over: bool,
}

impl io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_OUTPUT {
            self.over = true;
            return Err(io::Error::other("output limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
