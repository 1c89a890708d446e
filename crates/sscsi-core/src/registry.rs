use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::Provider;

/// The providers this process serves, by `spec.provider` name: those
/// compiled in and enabled first, then, for any other name, the external
/// ones (upstream's provider sockets).
#[derive(Debug, Default, Clone)]
pub struct ProviderRegistry {
    providers: BTreeMap<String, Arc<dyn Provider>>,
    external: Option<Arc<dyn ExternalProviders>>,
}

/// The longest name of an external provider.
pub const MAX_EXTERNAL_NAME_LEN: usize = 30;

/// Whether `name` may name an external provider: upstream's rule
/// (`^[a-zA-Z0-9_-]{0,30}$`), since the name becomes a socket's file name and
/// nothing in it may leave the directory.
pub fn valid_external_name(name: &str) -> bool {
    name.len() <= MAX_EXTERNAL_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Providers outside this process, found by name.
pub trait ExternalProviders: Send + Sync + fmt::Debug {
    /// The provider `name`, or why there is none (where it was looked for).
    fn find(&self, name: &str) -> Result<Arc<dyn Provider>, String>;
}

/// A SecretProviderClass names a provider this binary does not have (not
/// compiled in, or not enabled by the operator) and no external one answers to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "provider {name:?} is not available in this sscsi; available: {}{}",
    list(.available),
    external.as_deref().map(|e| format!("; {e}")).unwrap_or_default()
)]
pub struct UnknownProvider {
    pub name: String,
    pub available: Vec<String>,
    /// Why no external provider answers to the name, when they are looked for.
    pub external: Option<String>,
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

    /// Looks up every name not registered here among `external`.
    pub fn set_external(&mut self, external: Arc<dyn ExternalProviders>) {
        self.external = Some(external);
    }

    pub fn get(&self, name: &str) -> Result<Arc<dyn Provider>, UnknownProvider> {
        if let Some(provider) = self.providers.get(name) {
            return Ok(provider.clone());
        }
        let external = match &self.external {
            Some(external) => match external.find(name) {
                Ok(provider) => return Ok(provider),
                Err(why) => Some(why),
            },
            None => None,
        };
        Err(UnknownProvider { name: name.to_owned(), available: self.names(), external })
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

    #[derive(Debug)]
    struct Sockets;

    impl ExternalProviders for Sockets {
        fn find(&self, name: &str) -> Result<Arc<dyn Provider>, String> {
            match name {
                "akeyless" | "vault" => Ok(Arc::new(Named("akeyless"))),
                _ => Err(format!("no socket {name}.sock in /providers")),
            }
        }
    }

    #[test]
    fn other_names_go_to_the_external_providers_and_compiled_ones_win() {
        let mut registry = ProviderRegistry::new();
        registry.register(Arc::new(Named("vault")));
        registry.set_external(Arc::new(Sockets));
        assert_eq!(registry.get("vault").unwrap().name(), "vault", "compiled in wins");
        assert_eq!(registry.get("akeyless").unwrap().name(), "akeyless");
        assert_eq!(
            registry.get("conjur").unwrap_err().to_string(),
            r#"provider "conjur" is not available in this sscsi; available: vault; no socket conjur.sock in /providers"#
        );
    }
}
