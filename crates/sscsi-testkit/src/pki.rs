//! Certificates made for a test: a CA and server certificates for TLS test
//! servers, and three-level chains (root → intermediate → leaf) packed as
//! PKCS#12 the way Key Vault stores a certificate.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A certificate authority that signs server certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A certificate with its key, as DER.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_der: Vec<u8>,
    /// PKCS#8.
    pub key_der: Vec<u8>,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("a CA key");
        Self {
            issuer: CertifiedIssuer::self_signed(ca_params(name), key).expect("a CA certificate"),
        }
    }

    /// A CA this one signs.
    pub fn intermediate(&self, name: &str) -> Self {
        let key = KeyPair::generate().expect("a CA key");
        Self {
            issuer: CertifiedIssuer::signed_by(ca_params(name), key, &self.issuer)
                .expect("an intermediate certificate"),
        }
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn cert_der(&self) -> Vec<u8> {
        self.issuer.der().to_vec()
    }

    /// A leaf certificate for `names` (DNS names), signed by this CA.
    pub fn issue(&self, common_name: &str, names: &[&str]) -> Issued {
        let key = KeyPair::generate().expect("a leaf key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("leaf parameters");
        params.distinguished_name.push(DnType::CommonName, common_name);
        let cert = params.signed_by(&key, &self.issuer).expect("a leaf certificate");
        Issued { cert_der: cert.der().to_vec(), key_der: key.serialize_der() }
    }
}

/// A PKCS#12 archive with an empty password holding `key` and `certs` in
/// the given order, as Key Vault keeps a certificate's secret.
pub fn pkcs12(key_der: &[u8], certs: &[Vec<u8>]) -> Vec<u8> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
    let key = PrivateKey::from_der(key_der).expect("a PKCS#8 key");
    let certs = certs.iter().map(|c| Certificate::from_der(c).expect("a certificate"));
    let chain = PrivateKeyChain::new("test", key, certs);
    let mut store = KeyStore::new();
    store.add_entry("cert", KeyStoreEntry::PrivateKeyChain(chain));
    store.writer("").write().expect("a PKCS#12 archive")
}
