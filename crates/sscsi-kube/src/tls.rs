//! `kubernetes.io/tls` Secrets: `tls.crt` and `tls.key` cut out of a PEM
//! bundle or a PFX archive with an empty password, as upstream does. `tls.crt` is every CERTIFICATE block;
//! `tls.key` is the private key, re-encoded from PKCS#8 as PKCS#1
//! (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`), the forms Go's crypto
//! libraries (and so upstream) write. Other key types are refused, as upstream
//! refuses ed25519.

use pem::{EncodeConfig, LineEnding, Pem};
use pkcs8::der::Decode;
use pkcs8::der::asn1::ObjectIdentifier;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("the file is neither PEM nor a PFX (PKCS#12) archive with an empty password")]
    NotPemOrPfx,
    #[error("the PFX archive holds no private key with its certificates")]
    PfxWithoutKey,
    #[error("key {0:?} is not valid in a kubernetes.io/tls Secret (only tls.crt and tls.key)")]
    UnsupportedKey(String),
    #[error("no CERTIFICATE block in the file")]
    NoCertificate,
    #[error("no private key block in the file")]
    NoPrivateKey,
    #[error("the private key is not valid {0}")]
    InvalidKey(&'static str),
    #[error("private keys of algorithm {0} are not supported (only RSA and EC)")]
    UnsupportedAlgorithm(String),
}

/// The value of data key `key` of a TLS Secret, from a mounted file.
pub fn tls_part(key: &str, content: &[u8]) -> Result<Vec<u8>, TlsError> {
    if key != "tls.crt" && key != "tls.key" {
        return Err(TlsError::UnsupportedKey(key.to_owned()));
    }
    let blocks = match pem::parse_many(content) {
        Ok(blocks) if !blocks.is_empty() => blocks,
        _ => from_pfx(content)?,
    };
    let config = EncodeConfig::new().set_line_ending(LineEnding::LF);
    if key == "tls.crt" {
        let certs: Vec<Pem> = blocks.into_iter().filter(|b| b.tag() == "CERTIFICATE").collect();
        if certs.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        // One block after the other, as Go's pem.Encode writes them.
        return Ok(certs
            .iter()
            .map(|c| pem::encode_config(c, config))
            .collect::<String>()
            .into_bytes());
    }
    let block = blocks
        .iter()
        .find(|b| matches!(b.tag(), "RSA PRIVATE KEY" | "EC PRIVATE KEY" | "PRIVATE KEY"))
        .ok_or(TlsError::NoPrivateKey)?;
    let key = match block.tag() {
        "PRIVATE KEY" => from_pkcs8(block.contents())?,
        _ => block.clone(),
    };
    Ok(pem::encode_config(&key, config).into_bytes())
}

/// A PFX archive with an empty password (what upstream accepts), raw or
/// base64 (as Key Vault stores it), as PEM blocks: the key, then the leaf
/// certificate and the rest of the chain.
fn from_pfx(content: &[u8]) -> Result<Vec<Pem>, TlsError> {
    use base64::Engine;
    use p12_keystore::{KeyStore, Pkcs12ImportPolicy};

    let open = |der: &[u8]| KeyStore::from_pkcs12(der, "", Pkcs12ImportPolicy::Relaxed).ok();
    let text: Vec<u8> = content.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    let store = open(content)
        .or_else(|| {
            base64::engine::general_purpose::STANDARD.decode(&text).ok().and_then(|der| open(&der))
        })
        .ok_or(TlsError::NotPemOrPfx)?;
    let (_, chain) = store.private_key_chain().ok_or(TlsError::PfxWithoutKey)?;
    let mut blocks = vec![Pem::new("PRIVATE KEY", chain.key().as_der().to_vec())];
    blocks.extend(chain.certs().iter().map(|c| Pem::new("CERTIFICATE", c.as_der().to_vec())));
    Ok(blocks)
}

fn from_pkcs8(der: &[u8]) -> Result<Pem, TlsError> {
    let info =
        pkcs8::PrivateKeyInfoRef::from_der(der).map_err(|_| TlsError::InvalidKey("PKCS#8"))?;
    let oid = info.algorithm.oid;
    let inner = info.private_key.as_bytes();
    if oid == RSA_ENCRYPTION {
        // A PKCS#8 RSA key wraps the PKCS#1 structure unchanged.
        return Ok(Pem::new("RSA PRIVATE KEY", inner.to_vec()));
    }
    if oid == EC_PUBLIC_KEY {
        let mut key = <sec1::EcPrivateKey as sec1::der::Decode>::from_der(inner)
            .map_err(|_| TlsError::InvalidKey("SEC1"))?;
        // PKCS#8 keeps the curve in the algorithm; SEC1 names it in the key.
        if key.parameters.is_none() {
            let curve = info
                .algorithm
                .parameters
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
                .ok_or(TlsError::InvalidKey("EC key: no named curve"))?;
            key.parameters = Some(sec1::EcParameters::NamedCurve(curve));
        }
        let der = sec1::der::Encode::to_der(&key).map_err(|_| TlsError::InvalidKey("SEC1"))?;
        return Ok(Pem::new("EC PRIVATE KEY", der));
    }
    Err(TlsError::UnsupportedAlgorithm(oid.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
    }

    fn text(part: Result<Vec<u8>, TlsError>) -> String {
        String::from_utf8(part.unwrap()).unwrap()
    }

    fn fixture_text(name: &str) -> String {
        String::from_utf8(fixture(name)).unwrap()
    }

    #[test]
    fn keys_come_out_as_openssl_converts_them() {
        for (kind, pkcs8_key, expected) in
            [("rsa", "rsa-pkcs8.key", "rsa-pkcs1.key"), ("ec", "ec-pkcs8.key", "ec-sec1.key")]
        {
            let mut bundle = fixture(pkcs8_key);
            bundle.extend(fixture(&format!("{kind}.crt")));
            assert_eq!(text(tls_part("tls.key", &bundle)), fixture_text(expected), "{kind}");
            assert_eq!(
                text(tls_part("tls.crt", &bundle)),
                fixture_text(&format!("{kind}.crt")),
                "{kind}"
            );
            // Keys already in PKCS#1/SEC1 pass through.
            assert_eq!(
                text(tls_part("tls.key", &fixture(expected))),
                fixture_text(expected),
                "{kind}"
            );
        }
    }

    #[test]
    fn certificate_chains_keep_every_block_in_order() {
        let mut chain = fixture("rsa.crt");
        chain.extend(fixture("ec.crt"));
        let mut bundle = fixture("rsa-pkcs8.key");
        bundle.extend(&chain);
        assert_eq!(text(tls_part("tls.crt", &bundle)), String::from_utf8(chain).unwrap());
    }

    #[test]
    fn pfx_archives_raw_or_base64_give_the_same_parts() {
        for (pfx, kind, expected_key) in [
            ("rsa.pfx", "rsa", "rsa-pkcs1.key"),
            ("rsa.pfx.b64", "rsa", "rsa-pkcs1.key"),
            ("ec-3des.pfx", "ec", "ec-sec1.key"),
        ] {
            let content = fixture(pfx);
            assert_eq!(text(tls_part("tls.key", &content)), fixture_text(expected_key), "{pfx}");
            assert_eq!(
                text(tls_part("tls.crt", &content)),
                fixture_text(&format!("{kind}.crt")),
                "{pfx}"
            );
        }
    }

    #[test]
    fn refusals_name_the_problem() {
        assert_eq!(
            tls_part("tls.key", &fixture("ed25519.key")),
            Err(TlsError::UnsupportedAlgorithm("1.3.101.112".into()))
        );
        assert_eq!(tls_part("tls.key", b"\x00\x01 not a pfx"), Err(TlsError::NotPemOrPfx));
        assert_eq!(tls_part("tls.key", &fixture("rsa.crt")), Err(TlsError::NoPrivateKey));
        assert_eq!(tls_part("tls.crt", &fixture("rsa-pkcs8.key")), Err(TlsError::NoCertificate));
        assert_eq!(
            tls_part("ca.crt", &fixture("rsa.crt")),
            Err(TlsError::UnsupportedKey("ca.crt".into()))
        );
    }
}
