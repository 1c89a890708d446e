//! Vault's JSON: [`GoJson`] as vault/api decodes a response (`UseNumber`),
//! held so that it is wiped when dropped.

pub use sscsi_core::gojson::{GoJson, go_json};
use zeroize::Zeroize;

/// A response or request body of Vault's: secret material, wiped when dropped.
pub struct VaultResponse(pub GoJson);

impl std::fmt::Debug for VaultResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VaultResponse(<redacted>)")
    }
}

impl Drop for VaultResponse {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = VaultResponse(GoJson::parse(br#"{"password": "hunter2"}"#).unwrap());
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
