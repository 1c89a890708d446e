//! AKS identity binding (`useAzureTokenProxy`): the workload-identity
//! exchange, with the pod's `api://AKSIdentityBinding` token, sent to the
//! cluster's token proxy (by default the API server's service address) over
//! TLS whose server name is derived from the cluster's id, trusting the
//! cluster CA, as upstream's azidentity proxy transport does.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use azure_core::http::{AsyncRawResponse, HttpClient, Request, Url};
use sha2::{Digest, Sha256};

pub const IDENTITY_BINDING_AUDIENCE: &str = "api://AKSIdentityBinding";
pub const DEFAULT_TOKEN_PROXY_URL: &str = "https://kubernetes.default.svc.cluster.local";
pub const DEFAULT_CA_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// The TLS server name of the token proxy for a cluster id:
/// `a` + base32hex(sha256("identity-binding" + id)), lower case, + `.ests.aks`.
pub fn sni_name(cluster_id: &str) -> String {
    let digest = Sha256::digest(format!("identity-binding{cluster_id}").as_bytes());
    format!("a{}.ests.aks", data_encoding::BASE32HEX_NOPAD.encode(&digest).to_ascii_lowercase())
}

/// The cluster id in the API server certificate's
/// `hcp-kubernetes.<id>.svc.cluster.local` name.
pub async fn cluster_id(
    url: &Url,
    ca: &Path,
    resolve: &[(String, SocketAddr)],
) -> Result<String, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let host = url.host_str().ok_or("the token proxy URL has no host")?.to_owned();
    let port =
        std::env::var("KUBERNETES_SERVICE_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(443);
    let addr = match resolve.iter().find(|(h, _)| *h == host) {
        Some((_, addr)) => *addr,
        None => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("resolve {host}: no address"))?,
    };
    let roots = roots(ca)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {host}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS to {host}: {e} (set --azure-sni-name to skip detection)"))?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("the API server sent no certificate")?;
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| e.to_string())?;
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|ext| ext.value.general_names.clone())
        .unwrap_or_default();
    names
        .iter()
        .find_map(|n| match n {
            GeneralName::DNSName(dns) => dns
                .strip_prefix("hcp-kubernetes.")
                .and_then(|rest| rest.strip_suffix(".svc.cluster.local"))
                .filter(|id| !id.is_empty())
                .map(str::to_owned),
            _ => None,
        })
        .ok_or_else(|| {
            "no hcp-kubernetes.<id>.svc.cluster.local name in the API server certificate".to_owned()
        })
}

fn roots(ca: &Path) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut store = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        store
            .add(cert.map_err(|e| format!("{}: {e}", ca.display()))?)
            .map_err(|e| e.to_string())?;
    }
    Ok(store)
}

/// Sends requests for the token proxy's URL to the proxy, with TLS server
/// name `sni` and the URL's own host in the `Host` header.
#[derive(Debug)]
pub struct ProxyClient {
    inner: reqwest::Client,
    sni: String,
}

impl ProxyClient {
    pub async fn new(
        url: &Url,
        sni: String,
        ca: &Path,
        resolve: &[(String, SocketAddr)],
    ) -> Result<Self, String> {
        let host = url.host_str().ok_or("the token proxy URL has no host")?;
        let port = url.port_or_known_default().unwrap_or(443);
        let addr = match resolve.iter().find(|(h, _)| h == host) {
            Some((_, addr)) => *addr,
            None => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| format!("resolve {host}: {e}"))?
                .next()
                .ok_or_else(|| format!("resolve {host}: no address"))?,
        };
        let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
        let inner = reqwest::Client::builder()
            .tls_certs_only(certs)
            .resolve(&sni, addr)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { inner, sni })
    }
}

#[async_trait::async_trait]
impl HttpClient for ProxyClient {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let original = request.url().clone();
        let mut url = original.clone();
        url.set_host(Some(&self.sni)).map_err(|e| {
            azure_core::Error::with_message(azure_core::error::ErrorKind::Other, e.to_string())
        })?;
        let mut proxied = Request::new(url, request.method());
        for (name, value) in request.headers().iter() {
            proxied.insert_header(name.clone(), value.clone());
        }
        let host = match original.port() {
            Some(port) => format!("{}:{port}", original.host_str().unwrap_or_default()),
            None => original.host_str().unwrap_or_default().to_owned(),
        };
        proxied.insert_header("host", host);
        proxied.set_body(request.body().clone());
        self.inner.execute_request(&proxied).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_as_upstream_derives_them() {
        assert_eq!(
            sni_name("abc"),
            "ar47lgcnhtn52tohpbtporqbc5cjfjah6gmfdpri09hpae1b0v370.ests.aks"
        );
        assert_eq!(
            sni_name("0123456789abcdef0123456789abcdef"),
            "af17kjq0adhpn7fa35gd5hqll5ij3jgramt04f1nbln2vg8nlff5g.ests.aks"
        );
    }
}
