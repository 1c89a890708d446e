//! Plain HTTP to Vault over hyper and rustls: vaultrs cannot send an arbitrary
//! verb with a body to an arbitrary path and hand back the raw response, nor
//! override the TLS server name, and its client holds the token in a plain
//! `String`. Clients are built once per (address, TLS settings) and reused, so
//! connections are kept alive across mounts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sscsi_core::SecretBytes;
use sscsi_provider_kit::{Calls, Classified, Failure, RetryPolicy};

use crate::params::TlsSettings;

/// Vault's own client gives up on a request after 60 s.
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("vaultAddress {0:?} is not an http:// or https:// URL")]
    Address(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{method} {path}: {message}")]
    Transport { method: String, path: String, message: String },
    #[error("{method} {path}: {status}{}", errors_suffix(.errors))]
    Status {
        method: String,
        path: String,
        status: StatusCode,
        errors: Vec<String>,
        /// Vault's `Retry-After` (a 429 from a rate-limit quota), when sent.
        retry_after: Option<std::time::Duration>,
    },
    #[error("{method} {path}: the response is not JSON")]
    NotJson { method: String, path: String },
}

fn errors_suffix(errors: &[String]) -> String {
    if errors.is_empty() { String::new() } else { format!(": {}", errors.join("; ")) }
}

impl Classified for ClientError {
    fn failure(&self) -> Failure {
        match self {
            Self::Transport { .. } => Failure::Unavailable,
            Self::Status { status, .. } => Failure::classify(Some(status.as_u16()), None),
            Self::Address(_) | Self::Tls(_) | Self::NotJson { .. } => Failure::Rejected,
        }
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One request to Vault.
#[derive(Debug)]
pub struct Call<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub body: Option<SecretBytes>,
    pub token: Option<&'a SecretBytes>,
    pub namespace: Option<&'a str>,
}

impl Call<'_> {
    /// The call's name in the metrics: a login, a KV v2 metadata read, or
    /// any other read or write.
    pub fn operation(&self) -> &'static str {
        let path = self.path.trim_start_matches('/');
        match self.method {
            _ if path.starts_with("v1/auth/") && path.ends_with("/login") => "login",
            "GET" if path.contains("/metadata/") => "metadata",
            "GET" | "LIST" => "read",
            _ => "write",
        }
    }
}

type Https = Client<HttpsConnector<HttpConnector>, Full<SecretBuf>>;

/// A request body that may hold secret material (a login JWT, `secretArgs`):
/// zeroized when hyper drops it.
#[derive(Debug)]
pub struct SecretBuf(SecretBytes, usize);

impl bytes::Buf for SecretBuf {
    fn remaining(&self) -> usize {
        self.0.len() - self.1
    }

    fn chunk(&self) -> &[u8] {
        &self.0.expose()[self.1..]
    }

    fn advance(&mut self, count: usize) {
        self.1 = (self.1 + count).min(self.0.len());
    }
}

/// An HTTP client for one Vault address and TLS configuration.
#[derive(Clone)]
pub struct VaultHttp {
    base: Uri,
    client: Https,
    calls: Calls,
}

impl std::fmt::Debug for VaultHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultHttp").field("base", &self.base).finish_non_exhaustive()
    }
}

impl VaultHttp {
    pub fn new(address: &str, tls: &TlsSettings, calls: Calls) -> Result<Self, ClientError> {
        let base: Uri = address.parse().map_err(|_| ClientError::Address(address.to_owned()))?;
        if !matches!(base.scheme_str(), Some("http" | "https")) || base.host().is_none() {
            return Err(ClientError::Address(address.to_owned()));
        }
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(tls)?)
            .https_or_http();
        let connector = match &tls.server_name {
            Some(name) => {
                let name = ServerName::try_from(name.clone())
                    .map_err(|_| ClientError::Tls(format!("invalid server name {name:?}")))?;
                builder.with_server_name_resolver(FixedServerNameResolver::new(name))
            }
            None => builder,
        }
        .enable_http1()
        .build();
        Ok(Self { base, client: Client::builder(TokioExecutor::new()).build(connector), calls })
    }

    /// Sends `call` and returns the response body of a 2xx; any other status
    /// is an error carrying Vault's `errors`. Transient failures are tried
    /// again.
    pub async fn send(&self, call: &Call<'_>) -> Result<Bytes, ClientError> {
        let endpoint = self.base.to_string();
        self.calls.run(&endpoint, call.operation(), || self.send_once(call)).await
    }

    async fn send_once(&self, call: &Call<'_>) -> Result<Bytes, ClientError> {
        let prefix = self.base.path().trim_end_matches('/');
        let query = if call.query.is_empty() { String::new() } else { format!("?{}", call.query) };
        let uri = format!(
            "{}://{}{prefix}{}{query}",
            self.base.scheme_str().unwrap_or("https"),
            self.base.authority().map(|a| a.as_str()).unwrap_or_default(),
            call.path
        );
        let transport = |message: String| ClientError::Transport {
            method: call.method.to_owned(),
            path: call.path.to_owned(),
            message,
        };
        let method = Method::from_bytes(call.method.as_bytes())
            .map_err(|_| transport("invalid method".to_owned()))?;
        let mut request = Request::builder().method(method).uri(&uri);
        if let Some(token) = call.token {
            let mut value = HeaderValue::from_bytes(token.expose())
                .map_err(|_| transport("the Vault token is not a valid header".to_owned()))?;
            value.set_sensitive(true);
            request = request.header("X-Vault-Token", value);
        }
        if let Some(namespace) = call.namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        if call.body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(SecretBuf(call.body.clone().unwrap_or_default(), 0)))
            .map_err(|e| transport(e.to_string()))?;
        let (status, retry_after, body) = tokio::time::timeout(TIMEOUT, async {
            let response = self.client.request(request).await.map_err(|e| {
                // The source names the cause (refused, TLS, ...); the outer text does not.
                let cause = std::error::Error::source(&e).map(ToString::to_string);
                transport(cause.unwrap_or_else(|| e.to_string()))
            })?;
            let status = response.status();
            // Seconds, as Vault's rate-limit quotas send it.
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(std::time::Duration::from_secs);
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| transport(e.to_string()))?
                .to_bytes();
            Ok::<_, ClientError>((status, retry_after, body))
        })
        .await
        .unwrap_or_else(|_| Err(transport(format!("no answer within {TIMEOUT:?}"))))?;
        if status.is_success() {
            return Ok(body);
        }
        let errors = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("errors").cloned())
            .and_then(|e| serde_json::from_value::<Vec<String>>(e).ok())
            .unwrap_or_default()
            .iter()
            .flat_map(|e| flatten_multierror(e))
            .collect();
        Err(ClientError::Status {
            method: call.method.to_owned(),
            path: call.path.to_owned(),
            status,
            errors,
            retry_after,
        })
    }
}

/// Vault wraps some errors in go-multierror's text ("1 error occurred:\n\t*
/// permission denied\n\n"); the items are what say something.
fn flatten_multierror(error: &str) -> Vec<String> {
    let items: Vec<String> = error
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("* "))
        .map(|l| l.trim().to_owned())
        .collect();
    if items.is_empty() { vec![error.trim().to_owned()] } else { items }
}

/// Clients by (address, TLS settings), each calling as `calls` says: a
/// connection error, a 5xx or a 429 is retried as Vault's Go client does.
#[derive(Debug)]
pub struct Clients {
    clients: Mutex<HashMap<(String, TlsSettings), VaultHttp>>,
    pub calls: Calls,
}

impl Default for Clients {
    fn default() -> Self {
        Self { clients: Mutex::default(), calls: Calls::new(RetryPolicy::VAULT) }
    }
}

impl Clients {
    pub fn get(&self, address: &str, tls: &TlsSettings) -> Result<VaultHttp, ClientError> {
        let key = (address.to_owned(), tls.clone());
        if let Some(client) = self.clients.lock().expect("clients lock").get(&key) {
            return Ok(client.clone());
        }
        let client = VaultHttp::new(address, tls, self.calls.clone())?;
        self.clients.lock().expect("clients lock").insert(key, client.clone());
        Ok(client)
    }
}

fn tls_config(tls: &TlsSettings) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let builder = if tls.skip_verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        builder.with_root_certificates(roots(tls)?)
    };
    match (&tls.client_cert, &tls.client_key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|e| {
                    ClientError::Tls(format!("client certificate {}: {e}", cert.display()))
                })?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| ClientError::Tls(format!("client key {}: {e}", key.display())))?;
            builder.with_client_auth_cert(certs, key).map_err(|e| ClientError::Tls(e.to_string()))
        }
        _ => Err(ClientError::Tls(
            "vaultTLSClientCertPath and vaultTLSClientKeyPath must be set together".to_owned(),
        )),
    }
}

/// The configured CA file and directory when either is set (they replace the
/// system's roots, as in Vault's client), else the system's roots.
fn roots(tls: &TlsSettings) -> Result<rustls::RootCertStore, ClientError> {
    let mut store = rustls::RootCertStore::empty();
    let mut files = Vec::new();
    if let Some(file) = &tls.ca_cert {
        files.push(file.clone());
    }
    if let Some(dir) = &tls.ca_directory {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| ClientError::Tls(format!("CA directory {}: {e}", dir.display())))?;
        let mut paths: Vec<_> =
            entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect();
        paths.sort();
        files.extend(paths);
    }
    if files.is_empty() {
        let native = rustls_native_certs::load_native_certs();
        store.add_parsable_certificates(native.certs);
        return Ok(store);
    }
    for file in files {
        let certs = CertificateDer::pem_file_iter(&file)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| ClientError::Tls(format!("CA certificate {}: {e}", file.display())))?;
        if certs.is_empty() {
            return Err(ClientError::Tls(format!(
                "CA certificate {}: no certificate in it",
                file.display()
            )));
        }
        for cert in certs {
            store
                .add(cert)
                .map_err(|e| ClientError::Tls(format!("CA certificate {}: {e}", file.display())))?;
        }
    }
    Ok(store)
}

/// `vaultSkipTLSVerify`: any certificate is accepted; the handshake's
/// signatures are still checked.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multierror_text_is_flattened() {
        assert_eq!(
            flatten_multierror("1 error occurred:\n\t* permission denied\n\n"),
            ["permission denied"]
        );
        assert_eq!(flatten_multierror("2 errors occurred:\n\t* a\n\t* b\n\n"), ["a", "b"]);
        assert_eq!(
            flatten_multierror("role \"x\" could not be found"),
            ["role \"x\" could not be found"]
        );
    }
}
