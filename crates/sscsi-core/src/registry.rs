use std::collections::BTreeMap;
use std::sync::Arc;

use crate::Provider;

/// The providers this process serves, by `spec.provider` name.
#[derive(Debug, Default, Clone)]
pub struct ProviderRegistry {
    providers: BTreeMap<String, Arc<dyn Provider>>,
}

/// A SecretProviderClass names a provider this binary does not have (not
/// compiled in, or not enabled by the operator).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("provider {name:?} is not available in this sscsi; available: {}", list(.available))]
pub struct UnknownProvider {
    pub name: String,
    pub available: Vec<String>,
}

fn list(names: &[String]) -> String {
    if names.is_empty() { "none".to_owned() } else { names.join(", ") }
}

impl ProviderRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a provider; a later one with the same name replaces the earlier.
    pub fn register(&mut self, provider: Arc<dyn Provider>) {
        self.providers.insert(provider.name().to_owned(), provider);
    }

    pub fn get(&self, name: &str) -> Result<Arc<dyn Provider>, UnknownProvider> {
        self.providers
            .get(name)
            .cloned()
            .ok_or_else(|| UnknownProvider { name: name.to_owned(), available: self.names() })
    }

    pub fn names(&self) -> Vec<String> {
        self.providers.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::{MountRequest, MountResponse, ProviderError};

    #[derive(Debug)]
    struct Named(&'static str);

    #[async_trait]
    impl Provider for Named {
        fn name(&self) -> &str {
            self.0
        }
        async fn mount(&self, _: &MountRequest) -> Result<MountResponse, ProviderError> {
            Ok(MountResponse::default())
        }
    }

    #[test]
    fn unknown_provider_lists_what_is_available() {
        let mut registry = ProviderRegistry::new();
        assert_eq!(
            registry.get("aws").unwrap_err().to_string(),
            r#"provider "aws" is not available in this sscsi; available: none"#
        );
        registry.register(Arc::new(Named("vault")));
        registry.register(Arc::new(Named("local")));
        assert_eq!(registry.get("local").unwrap().name(), "local");
        assert_eq!(
            registry.get("aws").unwrap_err().to_string(),
            r#"provider "aws" is not available in this sscsi; available: local, vault"#
        );
    }
}
