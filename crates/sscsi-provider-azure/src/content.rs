//! File contents from Key Vault objects, as the official provider writes
//! them: secrets as their value (decoded per `objectEncoding`), a secret that
//! backs a certificate as PEM (PKCS#12 converted: the key as PKCS#8 first,
//! then the certificates ordered leaf → intermediates → root when they form
//! one chain) or as the raw PFX; keys as their public key (`PUBLIC KEY`,
//! PKIX); certificates as the leaf `CERTIFICATE`.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use pem::{EncodeConfig, LineEnding, Pem};
use sscsi_core::SecretBytes;

use crate::params::Encoding;

pub const CONTENT_TYPE_PEM: &str = "application/x-pem-file";
pub const CONTENT_TYPE_PFX: &str = "application/x-pkcs12";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("failed to get certificate. unknown content type '{0}'")]
    ContentType(String),
    #[error("the certificate's PKCS#12 archive cannot be read with an empty password")]
    Pfx,
    /// Names the encoding, never the bytes.
    #[error("the secret value is not valid {0}")]
    Decode(&'static str),
    #[error("failed to get key. key type '{0}' currently not supported")]
    KeyType(String),
    #[error("curve {0} is not supported")]
    Curve(String),
    #[error("the key has no {0}")]
    KeyPart(&'static str),
}

fn pem_text(blocks: &[Pem]) -> String {
    let config = EncodeConfig::new().set_line_ending(LineEnding::LF);
    blocks.iter().map(|b| pem::encode_config(b, config)).collect()
}

/// A secret's value as written: decoded per `objectEncoding`, or converted
/// when it backs a certificate (`backs_certificate`: the bundle has a `kid`).
pub fn secret(
    value: &str,
    content_type: Option<&str>,
    backs_certificate: bool,
    pfx: bool,
    encoding: Encoding,
) -> Result<SecretBytes, ContentError> {
    let text = if backs_certificate {
        match content_type.unwrap_or_default() {
            CONTENT_TYPE_PEM => SecretBytes::from(value),
            CONTENT_TYPE_PFX if pfx => SecretBytes::from(value),
            CONTENT_TYPE_PFX => pfx_to_pem(value)?,
            other => return Err(ContentError::ContentType(other.to_owned())),
        }
    } else {
        SecretBytes::from(value)
    };
    match encoding {
        Encoding::Utf8 => Ok(text),
        Encoding::Base64 => {
            // Go's StdEncoding skips line breaks.
            let compact: Vec<u8> =
                text.expose().iter().copied().filter(|b| *b != b'\r' && *b != b'\n').collect();
            let compact = SecretBytes::from(compact);
            STANDARD
                .decode(compact.expose())
                .map(SecretBytes::from)
                .map_err(|_| ContentError::Decode("base64"))
        }
        Encoding::Hex => hex::decode(text.expose())
            .map(SecretBytes::from)
            .map_err(|_| ContentError::Decode("hex")),
    }
}

/// The `.crt` and `.key` halves of a PEM bundle, for
/// `--write-cert-and-key-in-separate-files`.
pub fn split_cert_and_key(bundle: &[u8]) -> (SecretBytes, SecretBytes) {
    let blocks = pem::parse_many(bundle).unwrap_or_default();
    let (certs, keys): (Vec<Pem>, Vec<Pem>) =
        blocks.into_iter().partition(|b| b.tag() == "CERTIFICATE");
    (SecretBytes::from(pem_text(&certs)), SecretBytes::from(pem_text(&keys)))
}

fn pfx_to_pem(value: &str) -> Result<SecretBytes, ContentError> {
    let der = SecretBytes::from(STANDARD.decode(value.trim()).map_err(|_| ContentError::Pfx)?);
    // The archive's bags in their order: upstream writes every key, then every
    // certificate, the latter reordered only when they form one chain.
    let archive = p12_keystore::Pkcs12Archive::from_pkcs12(der.expose(), "")
        .map_err(|_| ContentError::Pfx)?;
    let keys: Vec<Pem> =
        archive.keys.iter().map(|k| Pem::new("PRIVATE KEY", k.key.as_der().to_vec())).collect();
    let certs = archive.certs.iter().map(|c| c.cert.as_der().to_vec()).collect();
    let certs: Vec<Pem> =
        order_chain(certs).into_iter().map(|c| Pem::new("CERTIFICATE", c)).collect();
    let mut text = pem_text(&keys);
    text.push_str(&pem_text(&certs));
    Ok(SecretBytes::from(text))
}

/// Leaf → intermediates → root, following issuer to subject, when the
/// certificates form exactly one chain; otherwise their order as given.
pub fn order_chain(certs: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let names: Option<Vec<(Vec<u8>, Vec<u8>)>> = certs
        .iter()
        .map(|der| {
            X509Certificate::from_der(der)
                .ok()
                .map(|(_, c)| (c.subject().as_raw().to_vec(), c.issuer().as_raw().to_vec()))
        })
        .collect();
    let Some(names) = names else { return certs };
    // The leaf issued nothing here: no other certificate names it as issuer.
    let leaves: Vec<usize> = (0..certs.len())
        .filter(|&i| !names.iter().enumerate().any(|(j, n)| j != i && n.1 == names[i].0))
        .collect();
    let [leaf] = leaves.as_slice() else { return certs };
    let mut order = vec![*leaf];
    while order.len() < certs.len() {
        let current = &names[*order.last().expect("non-empty")];
        if current.0 == current.1 {
            break; // self-signed: the root
        }
        match (0..certs.len()).find(|j| !order.contains(j) && names[*j].0 == current.1) {
            Some(next) => order.push(next),
            None => break,
        }
    }
    if order.len() != certs.len() {
        tracing::warn!("certificate chain is incomplete; keeping the archive's order");
        return certs;
    }
    order.into_iter().map(|i| certs[i].clone()).collect()
}

/// A JSON Web Key's public half as a PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
pub fn public_key_pem(
    kty: &str,
    n: Option<&[u8]>,
    e: Option<&[u8]>,
    crv: Option<&str>,
    x: Option<&[u8]>,
    y: Option<&[u8]>,
) -> Result<SecretBytes, ContentError> {
    let spki = match kty {
        "RSA" | "RSA-HSM" => {
            let n = n.ok_or(ContentError::KeyPart("modulus"))?;
            let e = e.ok_or(ContentError::KeyPart("exponent"))?;
            let rsa_key = der::sequence(&[der::integer(n), der::integer(e)]);
            der::sequence(&[
                der::sequence(&[
                    der::oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]),
                    der::null(),
                ]),
                der::bit_string(&rsa_key),
            ])
        }
        "EC" | "EC-HSM" => {
            let curve: &[u8] = match crv.unwrap_or_default() {
                "P-256" => &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
                "P-384" => &[0x2b, 0x81, 0x04, 0x00, 0x22],
                "P-521" => &[0x2b, 0x81, 0x04, 0x00, 0x23],
                other => return Err(ContentError::Curve(other.to_owned())),
            };
            let size: usize = match crv.unwrap_or_default() {
                "P-256" => 32,
                "P-384" => 48,
                _ => 66,
            };
            let x = x.ok_or(ContentError::KeyPart("x coordinate"))?;
            let y = y.ok_or(ContentError::KeyPart("y coordinate"))?;
            let mut point = vec![0x04];
            for c in [x, y] {
                // Coordinates are fixed-size, left-padded, in the encoded point.
                point.extend(std::iter::repeat_n(0, size.saturating_sub(c.len())));
                point.extend_from_slice(c);
            }
            der::sequence(&[
                der::sequence(&[
                    der::oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
                    der::oid(curve),
                ]),
                der::bit_string(&point),
            ])
        }
        other => return Err(ContentError::KeyType(other.to_owned())),
    };
    Ok(SecretBytes::from(pem_text(&[Pem::new("PUBLIC KEY", spki)])))
}

/// A certificate's DER as a PEM `CERTIFICATE`.
pub fn certificate_pem(der: &[u8]) -> SecretBytes {
    SecretBytes::from(pem_text(&[Pem::new("CERTIFICATE", der.to_vec())]))
}

/// Base64url without padding, as JSON Web Keys carry their numbers.
pub fn b64url(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

/// Just enough DER for a SubjectPublicKeyInfo.
mod der {
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> =
                len.to_be_bytes().iter().copied().skip_while(|b| *b == 0).collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(content);
        out
    }

    pub fn sequence(items: &[Vec<u8>]) -> Vec<u8> {
        tlv(0x30, &items.concat())
    }

    /// A non-negative INTEGER from big-endian bytes.
    pub fn integer(bytes: &[u8]) -> Vec<u8> {
        let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
        let mut content = if trimmed.is_empty() { vec![0] } else { trimmed };
        if content[0] & 0x80 != 0 {
            content.insert(0, 0);
        }
        tlv(0x02, &content)
    }

    pub fn bit_string(bytes: &[u8]) -> Vec<u8> {
        let mut content = vec![0];
        content.extend_from_slice(bytes);
        tlv(0x03, &content)
    }

    pub fn oid(encoded: &[u8]) -> Vec<u8> {
        tlv(0x06, encoded)
    }

    pub fn null() -> Vec<u8> {
        vec![0x05, 0x00]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_as_written() {
        let plain = secret("p@ss", None, false, false, Encoding::Utf8).unwrap();
        assert_eq!(plain.expose(), b"p@ss");
        let pem = secret("-----BEGIN X-----", Some(CONTENT_TYPE_PEM), true, false, Encoding::Utf8);
        assert_eq!(pem.unwrap().expose(), b"-----BEGIN X-----");
        // objectFormat pfx: the archive's base64 as stored.
        let raw = secret("TUlJ", Some(CONTENT_TYPE_PFX), true, true, Encoding::Utf8).unwrap();
        assert_eq!(raw.expose(), b"TUlJ");
        let err = secret("x", Some("application/json"), true, false, Encoding::Utf8).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to get certificate. unknown content type 'application/json'"
        );
        // A value that is not a secret's certificate is never converted.
        let json = secret("{}", Some("application/json"), false, false, Encoding::Utf8).unwrap();
        assert_eq!(json.expose(), b"{}");
    }

    #[test]
    fn decoding_errors_do_not_echo_the_value() {
        for encoding in [Encoding::Base64, Encoding::Hex] {
            let err = secret("s3cr!t-value", None, false, false, encoding).unwrap_err().to_string();
            assert!(err.starts_with("the secret value is not valid"), "{err}");
            assert!(!err.contains("s3cr"), "{err}");
        }
        let err = secret("not base64!", Some(CONTENT_TYPE_PFX), true, false, Encoding::Utf8);
        assert_eq!(err.unwrap_err(), ContentError::Pfx);
    }

    #[test]
    fn an_incomplete_chain_keeps_its_order() {
        let not_certs = vec![b"a".to_vec(), b"b".to_vec()];
        assert_eq!(order_chain(not_certs.clone()), not_certs);
    }

    #[test]
    fn unsupported_keys() {
        let err = public_key_pem("oct", None, None, None, None, None).unwrap_err();
        assert_eq!(err.to_string(), "failed to get key. key type 'oct' currently not supported");
        let err = public_key_pem("EC", None, None, Some("P-192"), None, None).unwrap_err();
        assert_eq!(err.to_string(), "curve P-192 is not supported");
    }
}
