//! Object versions: base64url(HMAC-SHA256(key, object configuration ‖
//! content)), as upstream computes them. The version changes exactly when the
//! file would, and says nothing about the content to whoever reads the
//! SecretProviderClassPodStatus. The key is read (or created) once per process,
//! not on every mount as upstream does.

use aws_lc_rs::hmac;
use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use tokio::sync::OnceCell;

/// Where the HMAC key lives.
#[derive(Clone)]
pub enum KeySource {
    /// An immutable Kubernetes Secret (data key `key`, 32 random bytes),
    /// created by the first driver that needs it.
    Secret { client: kube::Client, namespace: String, name: String },
    /// A key for this process only (no cluster): versions are stable while it runs.
    Process,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Secret { namespace, name, .. } => write!(f, "Secret({namespace}/{name})"),
            Self::Process => f.write_str("Process"),
        }
    }
}

pub struct VersionKey {
    source: KeySource,
    key: OnceCell<hmac::Key>,
}

impl std::fmt::Debug for VersionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionKey").field("source", &self.source).finish_non_exhaustive()
    }
}

impl VersionKey {
    pub fn new(source: KeySource) -> Self {
        Self { source, key: OnceCell::new() }
    }

    /// The key; `None` (versions left empty, as upstream) while it cannot be
    /// read, retried on the next mount.
    pub async fn get(&self) -> Option<&hmac::Key> {
        let result = self
            .key
            .get_or_try_init(|| async {
                let bytes = match &self.source {
                    KeySource::Process => random_key(),
                    KeySource::Secret { client, namespace, name } => {
                        secret_key(client, namespace, name).await?
                    }
                };
                Ok::<_, String>(hmac::Key::new(hmac::HMAC_SHA256, &bytes))
            })
            .await;
        match result {
            Ok(key) => Some(key),
            Err(message) => {
                tracing::warn!(%message, "no HMAC key for vault object versions; versions are left empty");
                None
            }
        }
    }
}

pub fn version(key: Option<&hmac::Key>, config_json: &str, content: &[u8]) -> String {
    let Some(key) = key else { return String::new() };
    let mut context = hmac::Context::with_key(key);
    context.update(config_json.as_bytes());
    context.update(content);
    base64::engine::general_purpose::URL_SAFE.encode(context.sign().as_ref())
}

fn random_key() -> zeroize::Zeroizing<Vec<u8>> {
    let mut bytes = zeroize::Zeroizing::new(vec![0u8; 32]);
    aws_lc_rs::rand::fill(&mut bytes).expect("the system's random source");
    bytes
}

async fn secret_key(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let read = |secret: Secret| {
        secret
            .data
            .and_then(|mut d| d.remove("key"))
            .map(|ByteString(bytes)| zeroize::Zeroizing::new(bytes))
            .filter(|k| !k.is_empty())
            .ok_or_else(|| format!("Secret {namespace}/{name} has no data key \"key\""))
    };
    let failed = |e: kube::Error| format!("Secret {namespace}/{name}: {e}");
    match api.get_opt(name).await.map_err(failed)? {
        Some(secret) => read(secret),
        None => {
            let key = random_key();
            let secret = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.to_owned()),
                    namespace: Some(namespace.to_owned()),
                    ..Default::default()
                },
                immutable: Some(true),
                data: Some([("key".to_owned(), ByteString(key.to_vec()))].into()),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &secret).await {
                Ok(_) => Ok(key),
                // Another node created it first: use theirs.
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    read(api.get(name).await.map_err(failed)?)
                }
                Err(e) => Err(failed(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_version_changes_with_content_and_configuration_only() {
        let key = VersionKey::new(KeySource::Process);
        let key = key.get().await;
        let a = version(key, "{\"ObjectName\":\"a\"}", b"one");
        assert_eq!(a, version(key, "{\"ObjectName\":\"a\"}", b"one"));
        assert_ne!(a, version(key, "{\"ObjectName\":\"a\"}", b"two"));
        assert_ne!(a, version(key, "{\"ObjectName\":\"b\"}", b"one"));
        assert_eq!(a.len(), 44, "base64url of 32 bytes, padded as Go's URLEncoding");
        assert_eq!(version(None, "{}", b"one"), "");
    }

    #[test]
    fn the_digest_is_upstreams_hmac() {
        // HMAC-SHA256 with key "key" over "The quick brown fox jumps over the lazy dog".
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"key");
        assert_eq!(
            version(Some(&key), "The quick brown fox ", b"jumps over the lazy dog"),
            "97yD9DBThCSxMpjmqm-xQ-9NWaFJRhdZl0edvC0aPNg="
        );
    }
}
