//! Where SecretProviderClasses come from. The directory source serves
//! development and `sscsi demo`; the Kubernetes API source is the production one.

use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use sscsi_api::SecretProviderClass;

#[derive(Debug, thiserror::Error)]
pub enum SpcError {
    #[error("failed to get SecretProviderClass {namespace}/{name}: not found in {source_name}")]
    NotFound { namespace: String, name: String, source_name: String },
    #[error("spec.provider is not set in SecretProviderClass {namespace}/{name}")]
    NoProvider { namespace: String, name: String },
    #[error("spec.parameters is not set in SecretProviderClass {namespace}/{name}")]
    NoParameters { namespace: String, name: String },
    #[error("failed to get SecretProviderClass {namespace}/{name}: {message}")]
    Source { namespace: String, name: String, message: String },
}

/// Looks up a SecretProviderClass by namespace and name.
#[async_trait]
pub trait SpcSource: Send + Sync + fmt::Debug {
    async fn get(&self, namespace: &str, name: &str) -> Result<SecretProviderClass, SpcError>;
}

/// Checks what upstream requires of a SecretProviderClass before use: a
/// provider and at least one parameter.
pub fn validate(spc: &SecretProviderClass) -> Result<(), SpcError> {
    let (namespace, name) = (spc.namespace_or_default(), spc.name_str().to_owned());
    if spc.spec.provider.is_empty() {
        return Err(SpcError::NoProvider { namespace, name });
    }
    if spc.parameters().is_empty() {
        return Err(SpcError::NoParameters { namespace, name });
    }
    Ok(())
}

/// SecretProviderClasses from the `*.yaml`/`*.yml` files of a directory
/// (multi-document files allowed, other kinds ignored), read on every lookup
/// so edits apply to the next publish.
#[derive(Debug, Clone)]
pub struct DirSpcSource {
    dir: PathBuf,
}

impl DirSpcSource {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn find(&self, namespace: &str, name: &str) -> Result<SecretProviderClass, SpcError> {
        let source_err = |message: String| SpcError::Source {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            message,
        };
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| source_err(format!("read {}: {e}", self.dir.display())))?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        paths.sort();
        for path in paths {
            for spc in read_spcs(&path) {
                if spc.name_str() == name && spc.namespace_or_default() == namespace {
                    return Ok(spc);
                }
            }
        }
        Err(SpcError::NotFound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source_name: format!("directory {}", self.dir.display()),
        })
    }
}

/// The SecretProviderClasses in one file. A file or document that does not
/// parse is skipped with a warning, so one bad file does not break every volume.
fn read_spcs(path: &Path) -> Vec<SecretProviderClass> {
    let docs = std::fs::read_to_string(path).map_err(|e| e.to_string()).and_then(|text| {
        serde_saphyr::from_multiple::<serde_json::Value>(&text).map_err(|e| e.to_string())
    });
    let docs = match docs {
        Ok(docs) => docs,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "skipping unreadable YAML file");
            return Vec::new();
        }
    };
    docs.into_iter()
        .filter(|doc| {
            let field = |f: &str| doc.get(f).and_then(|v| v.as_str()).unwrap_or_default();
            SecretProviderClass::is_served(field("apiVersion"), field("kind"))
        })
        .filter_map(|doc| match serde_json::from_value(doc) {
            Ok(spc) => Some(spc),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "skipping invalid SecretProviderClass");
                None
            }
        })
        .collect()
}

#[async_trait]
impl SpcSource for DirSpcSource {
    async fn get(&self, namespace: &str, name: &str) -> Result<SecretProviderClass, SpcError> {
        let this = self.clone();
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        tokio::task::spawn_blocking(move || this.find(&namespace, &name)).await.map_err(|e| {
            SpcError::Source {
                namespace: String::new(),
                name: String::new(),
                message: e.to_string(),
            }
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finds_classes_by_namespace_and_name_across_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n\
             apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n\
             metadata: {name: app, namespace: shop}\nspec:\n  provider: local\n  parameters:\n    objects: |\n      - objectName: a\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b.yml"),
            "apiVersion: secrets-store.csi.x-k8s.io/v1alpha1\nkind: SecretProviderClass\nmetadata: {name: app}\nspec: {provider: vault}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("broken.yaml"), "key: [unclosed").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let source = DirSpcSource::new(dir.path());

        let spc = source.get("shop", "app").await.unwrap();
        assert_eq!(spc.spec.provider, "local");
        assert_eq!(spc.parameters()["objects"], "- objectName: a\n");
        validate(&spc).unwrap();

        let default_ns = source.get("default", "app").await.unwrap();
        assert_eq!(default_ns.spec.provider, "vault");
        let err = validate(&default_ns).unwrap_err().to_string();
        assert_eq!(err, "spec.parameters is not set in SecretProviderClass default/app");

        let err = source.get("shop", "missing").await.unwrap_err();
        assert!(matches!(err, SpcError::NotFound { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("failed to get SecretProviderClass shop/missing: not found"),
            "{err}"
        );
    }
}
