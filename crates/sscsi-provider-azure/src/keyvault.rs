//! Reading Key Vault objects with the official SDK clients, one set of
//! clients per (vault, identity) reused across mounts so the bearer token and
//! the challenge round-trip are paid once.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::ClientOptions;
use azure_security_keyvault_certificates::models::CertificateClientGetCertificateOptions;
use azure_security_keyvault_certificates::{CertificateClient, CertificateClientOptions};
use azure_security_keyvault_keys::models::KeyClientGetKeyOptions;
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use azure_security_keyvault_secrets::models::SecretClientGetSecretOptions;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use futures::TryStreamExt;
use sscsi_core::{ErrorCode, SecretBytes};

use crate::content::{self, ContentError};
use crate::params::{KeyVaultObject, OBJECT_CERT, OBJECT_KEY, OBJECT_SECRET};

#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error(
        "failed to get objectType:{object_type}, objectName:{name}, objectVersion:{version}: {message}"
    )]
    Api { object_type: String, name: String, version: String, status: Option<u16>, message: String },
    #[error(
        "failed to get objectType:{object_type}, objectName:{name}, objectVersion:{version}: {source}"
    )]
    Content { object_type: String, name: String, version: String, source: ContentError },
    #[error("{0}")]
    Client(String),
}

impl FetchError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Api { status, .. } => sscsi_provider_kit::Failure::classify(*status, None).code(),
            Self::Content { .. } => ErrorCode::FailedPrecondition,
            Self::Client(_) => ErrorCode::InvalidArgument,
        }
    }
}

/// For the metrics: a failed read's outcome by its HTTP status.
impl sscsi_provider_kit::Classified for FetchError {
    fn failure(&self) -> sscsi_provider_kit::Failure {
        match self {
            Self::Api { status, .. } => sscsi_provider_kit::Failure::classify(*status, None),
            Self::Content { .. } | Self::Client(_) => sscsi_provider_kit::Failure::Rejected,
        }
    }
}

/// One file of an object: a suffix on its name (`.crt`, `.key` or none).
#[derive(Debug, Clone)]
pub struct Part {
    pub suffix: &'static str,
    pub contents: SecretBytes,
    pub version: String,
}

/// The SDK clients for one vault and identity.
#[derive(Clone)]
pub struct Vault {
    secrets: Arc<SecretClient>,
    keys: Arc<KeyClient>,
    certificates: Arc<CertificateClient>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").finish_non_exhaustive()
    }
}

impl Vault {
    pub fn new(
        url: &str,
        credential: Arc<dyn TokenCredential>,
        options: &ClientOptions,
    ) -> Result<Self, FetchError> {
        let failed =
            |e: azure_core::Error| FetchError::Client(format!("Key Vault client for {url}: {e}"));
        let secrets = SecretClient::new(
            url,
            credential.clone(),
            Some(SecretClientOptions { client_options: options.clone(), ..Default::default() }),
        )
        .map_err(failed)?;
        let keys = KeyClient::new(
            url,
            credential.clone(),
            Some(KeyClientOptions { client_options: options.clone(), ..Default::default() }),
        )
        .map_err(failed)?;
        let certificates = CertificateClient::new(
            url,
            credential,
            Some(CertificateClientOptions {
                client_options: options.clone(),
                ..Default::default()
            }),
        )
        .map_err(failed)?;
        Ok(Self {
            secrets: Arc::new(secrets),
            keys: Arc::new(keys),
            certificates: Arc::new(certificates),
        })
    }

    /// The object's files at `version` ("" for the latest).
    pub async fn fetch(
        &self,
        object: &KeyVaultObject,
        version: &str,
        separate_cert_and_key: bool,
    ) -> Result<Vec<Part>, FetchError> {
        let api = |e: azure_core::Error| FetchError::Api {
            object_type: object.object_type.clone(),
            name: object.name.clone(),
            version: version.to_owned(),
            status: e.http_status().map(u16::from),
            message: describe(&e),
        };
        let bad = |source: ContentError| FetchError::Content {
            object_type: object.object_type.clone(),
            name: object.name.clone(),
            version: version.to_owned(),
            source,
        };
        let version_of = |id: Option<&String>| id.map(|id| last_segment(id)).unwrap_or_default();
        let wanted = Some(version.to_owned()).filter(|v| !v.is_empty());
        match object.object_type.as_str() {
            OBJECT_SECRET => {
                let options =
                    SecretClientGetSecretOptions { secret_version: wanted, ..Default::default() };
                let secret =
                    self.secrets.get_secret(&object.name, Some(options)).await.map_err(api)?;
                let secret = secret.into_model().map_err(api)?;
                let id_version = version_of(secret.id.as_ref());
                let value = SecretBytes::from(secret.value.unwrap_or_default());
                let backs_certificate = secret.kid.as_deref().is_some_and(|k| !k.is_empty());
                let contents = content::secret(
                    value.expose_str().unwrap_or_default(),
                    secret.content_type.as_deref(),
                    backs_certificate,
                    object.pfx,
                    object.encoding,
                )
                .map_err(bad)?;
                let mut parts = Vec::new();
                if backs_certificate && separate_cert_and_key {
                    let (cert, key) = content::split_cert_and_key(contents.expose());
                    parts.push(Part {
                        suffix: ".crt",
                        contents: cert,
                        version: id_version.clone(),
                    });
                    parts.push(Part { suffix: ".key", contents: key, version: id_version.clone() });
                }
                parts.push(Part { suffix: "", contents, version: id_version });
                Ok(parts)
            }
            OBJECT_KEY => {
                let options = KeyClientGetKeyOptions { key_version: wanted, ..Default::default() };
                let key = self.keys.get_key(&object.name, Some(options)).await.map_err(api)?;
                let jwk = key.into_model().map_err(api)?.key.unwrap_or_default();
                let contents = content::public_key_pem(
                    &jwk.kty.as_ref().map(ToString::to_string).unwrap_or_default(),
                    jwk.n.as_deref(),
                    jwk.e.as_deref(),
                    jwk.crv.as_ref().map(ToString::to_string).as_deref(),
                    jwk.x.as_deref(),
                    jwk.y.as_deref(),
                )
                .map_err(bad)?;
                Ok(vec![Part { suffix: "", contents, version: version_of(jwk.kid.as_ref()) }])
            }
            OBJECT_CERT => {
                let options = CertificateClientGetCertificateOptions {
                    certificate_version: wanted,
                    ..Default::default()
                };
                let cert = self
                    .certificates
                    .get_certificate(&object.name, Some(options))
                    .await
                    .map_err(api)?;
                let cert = cert.into_model().map_err(api)?;
                let contents = content::certificate_pem(&cert.cer.unwrap_or_default());
                Ok(vec![Part { suffix: "", contents, version: version_of(cert.id.as_ref()) }])
            }
            other => unreachable!("objectType {other} was validated"),
        }
    }

    /// The object's enabled versions, newest first.
    pub async fn versions(&self, object: &KeyVaultObject) -> Result<Vec<String>, FetchError> {
        let api = |e: azure_core::Error| FetchError::Api {
            object_type: object.object_type.clone(),
            name: object.name.clone(),
            version: object.version.clone(),
            status: e.http_status().map(u16::from),
            message: describe(&e),
        };
        // (created, version) of every enabled version; the three kinds page
        // alike, with models of their own.
        let mut found = Vec::new();
        macro_rules! collect {
            ($pager:expr, $id:ident) => {{
                let mut pager = $pager.map_err(api)?;
                while let Some(item) = pager.try_next().await.map_err(api)? {
                    let attributes = item.attributes.unwrap_or_default();
                    if attributes.enabled != Some(false) {
                        let id = item.$id.as_deref().unwrap_or_default();
                        found.push((attributes.created, last_segment(id)));
                    }
                }
            }};
        }
        let name = &object.name;
        match object.object_type.as_str() {
            OBJECT_SECRET => collect!(self.secrets.list_secret_properties_versions(name, None), id),
            OBJECT_KEY => collect!(self.keys.list_key_properties_versions(name, None), kid),
            _ => collect!(self.certificates.list_certificate_properties_versions(name, None), id),
        }
        found.sort_by_key(|(created, _)| std::cmp::Reverse(*created));
        Ok(found.into_iter().map(|(_, version)| version).collect())
    }
}

/// An SDK error with its causes: the outer text alone can be as bare as
/// "non-transport error occurred which will not be retried".
pub fn describe(error: &azure_core::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The version in an object id (`https://<vault>/secrets/<name>/<version>`).
fn last_segment(id: &str) -> String {
    id.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_owned()
}

/// The versions written for `objectVersionHistory` N: from `objectVersion`
/// (or the newest) on, at most N, newest first. Upstream can write N+1.
pub fn history(object: &KeyVaultObject, versions: &[String]) -> Vec<String> {
    let start = match object.version.as_str() {
        "" | "latest" => 0,
        wanted => match versions.iter().position(|v| v == wanted) {
            Some(i) => i,
            None => return Vec::new(),
        },
    };
    versions.iter().skip(start).take(object.version_history.max(0) as usize).cloned().collect()
}
