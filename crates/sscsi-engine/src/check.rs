//! `sscsi check`: SecretProviderClasses and SecretSyncs read offline with
//! the rules a mount and the controller apply to them, so a class that
//! would be refused on a node is refused here, with the same words. What
//! needs the cluster, the node or the backend (a region from the node's
//! label, a file on the node, whether a secret exists) is not checked.
//!
//! Every problem names the document, the object and the field.

use std::collections::BTreeMap;

use serde::Serialize;
use sscsi_api::{SecretProviderClass, SecretSync};
use sscsi_core::{ProviderError, Refresh, valid_external_name};

/// A provider's parameter rules, as its mount reads them (each provider
/// crate's `check`).
pub type ParameterCheck = fn(&BTreeMap<String, String>) -> Result<(), ProviderError>;

/// The providers this binary serves, with their offline rules (`None`:
/// served, but nothing to check without the node, as `local`).
#[derive(Debug, Default, Clone)]
pub struct Checks {
    providers: BTreeMap<&'static str, Option<ParameterCheck>>,
}

impl Checks {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn provider(mut self, name: &'static str, check: Option<ParameterCheck>) -> Self {
        self.providers.insert(name, check);
        self
    }
}

/// One problem with one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Where the text came from (a file name, `-` for standard input).
    pub source: String,
    /// The YAML document's index in it, from 0.
    pub document: usize,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The field at fault, as a path (`spec.parameters["sscsi.io/files"]`).
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { source, document, kind, namespace, name, field, message } = self;
        write!(f, "{source}[{document}]: {kind} {namespace}/{name}: ")?;
        if !field.is_empty() {
            write!(f, "{field}: ")?;
        }
        write!(f, "{message}")
    }
}

/// What a check of some texts found.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// SecretProviderClasses and SecretSyncs checked.
    pub checked: usize,
    /// Documents of other kinds, left alone.
    pub skipped: usize,
    pub problems: Vec<Problem>,
}

impl Report {
    /// Checks every document of `text` (YAML, several documents as kubectl
    /// writes them, or JSON), reporting under `source`.
    pub fn add(&mut self, source: &str, text: &str, checks: &Checks) {
        let problem =
            |document, kind: &str, namespace: &str, name: &str, field: &str, message| Problem {
                source: source.to_owned(),
                document,
                kind: kind.to_owned(),
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                field: field.to_owned(),
                message,
            };
        let documents = match serde_saphyr::from_multiple::<serde_json::Value>(text) {
            Ok(documents) => documents,
            Err(e) => {
                let message = format!("not YAML: {e}");
                self.problems.push(problem(0, "", "", "", "", message));
                return;
            }
        };
        for (document, value) in documents.into_iter().enumerate() {
            // kubectl's `List` (`kubectl get -o yaml`) holds the objects in `items`.
            let items = match value.get("kind").and_then(|k| k.as_str()) {
                Some("List") => value.get("items").and_then(|i| i.as_array()).cloned(),
                _ => None,
            };
            for value in items.unwrap_or_else(|| vec![value]) {
                let field = |f: &str| value.get(f).and_then(|v| v.as_str()).unwrap_or_default();
                let (kind, api_version) = (field("kind").to_owned(), field("apiVersion"));
                let metadata =
                    |f: &str| value.get("metadata").and_then(|m| m.get(f)).and_then(|v| v.as_str());
                let namespace = metadata("namespace").unwrap_or("default").to_owned();
                let name = metadata("name").unwrap_or_default().to_owned();
                let found: Vec<(String, String)> = match kind.as_str() {
                    "SecretProviderClass" if SecretProviderClass::is_served(api_version, &kind) => {
                        match serde_json::from_value::<SecretProviderClass>(value.clone()) {
                            Ok(class) => class_problems(&class, checks),
                            Err(e) => {
                                vec![(String::new(), format!("not a SecretProviderClass: {e}"))]
                            }
                        }
                    }
                    "SecretProviderClass" => vec![(
                        "apiVersion".to_owned(),
                        format!(
                            "{api_version:?} is not served (secrets-store.csi.x-k8s.io/v1 or v1alpha1)"
                        ),
                    )],
                    "SecretSync" if api_version == SECRET_SYNC_API_VERSION => {
                        match serde_json::from_value::<SecretSync>(value.clone()) {
                            Ok(sync) => secret_sync_problems(&sync),
                            Err(e) => vec![(String::new(), format!("not a SecretSync: {e}"))],
                        }
                    }
                    "SecretSync" => vec![(
                        "apiVersion".to_owned(),
                        format!("{api_version:?} is not served ({SECRET_SYNC_API_VERSION})"),
                    )],
                    _ => {
                        self.skipped += 1;
                        continue;
                    }
                };
                self.checked += 1;
                if name.is_empty() {
                    let message = "is required".to_owned();
                    self.problems.push(problem(
                        document,
                        &kind,
                        &namespace,
                        "",
                        "metadata.name",
                        message,
                    ));
                }
                for (field, message) in found {
                    self.problems
                        .push(problem(document, &kind, &namespace, &name, &field, message));
                }
            }
        }
    }
}

impl Report {
    /// Checks the ```` ```yaml ```` blocks of a Markdown text (documentation),
    /// each reported as `source:line`, the line its block starts on.
    pub fn add_markdown(&mut self, source: &str, text: &str, checks: &Checks) {
        let mut block: Option<(usize, String)> = None;
        for (number, line) in text.lines().enumerate() {
            match &mut block {
                None if line.trim_start() == "```yaml" => block = Some((number + 2, String::new())),
                None => {}
                Some((start, yaml)) if line.trim_start() == "```" => {
                    self.add(&format!("{source}:{start}"), yaml, checks);
                    block = None;
                }
                Some((_, yaml)) => {
                    yaml.push_str(line);
                    yaml.push('\n');
                }
            }
        }
    }
}

const SECRET_SYNC_API_VERSION: &str = "secret-sync.x-k8s.io/v1alpha1";

fn parameter(key: &str) -> String {
    format!("spec.parameters[{key:?}]")
}

/// What a node would refuse of `class`, as (field, message), in the order
/// a mount meets them.
pub fn class_problems(class: &SecretProviderClass, checks: &Checks) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let provider = class.spec.provider.as_str();
    let parameters = class.parameters();
    if provider.is_empty() {
        problems.push(("spec.provider".to_owned(), "is not set".to_owned()));
    } else if !checks.providers.contains_key(provider) && !valid_external_name(provider) {
        let message = format!(
            "{provider:?} is neither a provider of this sscsi ({}) nor a valid external provider name (letters, digits, '_' and '-', at most 30)",
            checks.providers.keys().copied().collect::<Vec<_>>().join(", ")
        );
        problems.push(("spec.provider".to_owned(), message));
    }
    if parameters.is_empty() {
        problems.push(("spec.parameters".to_owned(), "is not set".to_owned()));
        return problems;
    }
    if let Err(e) = sscsi_files::parse(parameters, sscsi_core::DEFAULT_FILE_MODE) {
        problems.push((parameter(sscsi_files::FILES_PARAMETER), e.to_string()));
    }
    if let Err(e) = Refresh::from_parameters(parameters) {
        problems.push((parameter(sscsi_core::refresh::REFRESH_PARAMETER), e.to_string()));
    }
    // The provider sees no `sscsi.io/` parameter, as on a mount.
    let theirs: BTreeMap<String, String> = parameters
        .iter()
        .filter(|(k, _)| !k.starts_with(sscsi_files::RESERVED_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(Some(check)) = checks.providers.get(provider)
        && let Err(e) = check(&theirs)
    {
        problems.push(("spec.parameters".to_owned(), format!("provider {provider:?}: {e}")));
    }
    for (index, object) in class.spec.secret_objects.iter().flatten().enumerate() {
        if let Some(field) = object.missing_field() {
            problems
                .push((format!("spec.secretObjects[{index}].{field}"), "is required".to_owned()));
        }
    }
    problems
}

/// What the SecretSync controller would refuse of `sync` before fetching.
pub fn secret_sync_problems(sync: &SecretSync) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let spec = &sync.spec;
    for (field, value) in [
        ("spec.secretProviderClassName", &spec.secret_provider_class_name),
        ("spec.serviceAccountName", &spec.service_account_name),
    ] {
        if value.is_empty() {
            problems.push((field.to_owned(), "is required".to_owned()));
        } else if !dns_subdomain(value) {
            problems.push((field.to_owned(), format!("{value:?} is not a DNS subdomain name")));
        }
    }
    let object = &spec.secret_object;
    if object.data.is_empty() {
        problems.push(("spec.secretObject.data".to_owned(), "is empty".to_owned()));
    }
    for (index, data) in object.data.iter().enumerate() {
        for (field, value) in [("sourcePath", &data.source_path), ("targetKey", &data.target_key)] {
            if value.is_empty() {
                let field = format!("spec.secretObject.data[{index}].{field}");
                problems.push((field, "is required".to_owned()));
            }
        }
    }
    if let Some((field, key)) = object.reserved_key() {
        let message = format!("{key} is reserved for use by the controller");
        problems.push((format!("spec.secretObject.{field}"), message));
    }
    problems
}

/// RFC 1123 subdomain, as the CRD's pattern says.
fn dns_subdomain(value: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    value.len() <= 253 && value.split('.').all(label)
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
