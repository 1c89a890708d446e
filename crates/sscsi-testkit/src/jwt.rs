//! Service-account tokens as Kubernetes issues them: ES256 JWTs with the
//! `kubernetes.io` claims, signed by a key made for the test, whose public
//! half a Vault jwt auth method can be configured with.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

/// The issuer in every token.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

#[derive(Debug)]
pub struct JwtSigner {
    key: EcdsaKeyPair,
}

/// Who a token is for.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub namespace: &'a str,
    pub service_account: &'a str,
    pub pod: Option<(&'a str, &'a str)>,
    pub audiences: &'a [&'a str],
    pub lifetime_seconds: i64,
}

impl Default for JwtSigner {
    fn default() -> Self {
        Self::new()
    }
}

impl JwtSigner {
    pub fn new() -> Self {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .expect("a P-256 key");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .expect("the key just made");
        Self { key }
    }

    /// The public key as a PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
    pub fn public_key_pem(&self) -> String {
        let der = self.key.public_key().as_der().expect("SPKI DER");
        let b64 = STANDARD.encode(der.as_ref());
        let lines: Vec<&str> =
            b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("base64")).collect();
        format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"))
    }

    pub fn sign(&self, subject: &Subject<'_>) -> String {
        let now = jiff::Timestamp::now().as_second();
        let mut k8s = json!({
            "namespace": subject.namespace,
            "serviceaccount": {"name": subject.service_account, "uid": format!("uid-{}", subject.service_account)},
        });
        if let Some((name, uid)) = subject.pod {
            k8s["pod"] = json!({"name": name, "uid": uid});
        }
        let claims = json!({
            "iss": ISSUER,
            "sub": format!("system:serviceaccount:{}:{}", subject.namespace, subject.service_account),
            "aud": subject.audiences,
            "iat": now,
            "nbf": now,
            "exp": now + subject.lifetime_seconds,
            "kubernetes.io": k8s,
        });
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{header}.{payload}");
        let signature =
            self.key.sign(&SystemRandom::new(), input.as_bytes()).expect("signing with P-256");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    /// The claims of a token this signer issued and that has not expired.
    pub fn verify(&self, token: &str) -> Option<Value> {
        self.verifier().verify(token)
    }

    /// What another test server needs to check this signer's tokens.
    pub fn verifier(&self) -> JwtVerifier {
        JwtVerifier { public_key: self.key.public_key().as_ref().to_vec() }
    }
}

/// Checks tokens of one [`JwtSigner`].
#[derive(Debug, Clone)]
pub struct JwtVerifier {
    public_key: Vec<u8>,
}

impl JwtVerifier {
    /// The claims of a token the signer issued and that has not expired.
    pub fn verify(&self, token: &str) -> Option<Value> {
        let (input, signature) = token.rsplit_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.public_key)
            .verify(input.as_bytes(), &signature)
            .ok()?;
        let payload = URL_SAFE_NO_PAD.decode(input.split_once('.')?.1).ok()?;
        let claims: Value = serde_json::from_slice(&payload).ok()?;
        (claims["exp"].as_i64()? > jiff::Timestamp::now().as_second()).then_some(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies() {
        let signer = JwtSigner::new();
        let subject = Subject {
            namespace: "shop",
            service_account: "app",
            pod: Some(("web-0", "u1")),
            audiences: &["vault"],
            lifetime_seconds: 600,
        };
        let token = signer.sign(&subject);
        let claims = signer.verify(&token).unwrap();
        assert_eq!(claims["sub"], "system:serviceaccount:shop:app");
        assert_eq!(claims["kubernetes.io"]["pod"]["name"], "web-0");
        assert!(JwtSigner::new().verify(&token).is_none(), "another key's signature");
        let expired = signer.sign(&Subject { lifetime_seconds: -1, ..subject });
        assert!(signer.verify(&expired).is_none());
        assert!(signer.public_key_pem().starts_with("-----BEGIN PUBLIC KEY-----\n"));
    }
}
