//! The `vault` provider: HashiCorp Vault (and OpenBao), accepting exactly the
//! SecretProviderClasses hashicorp/vault-csi-provider 1.7 accepts and writing
//! the same files.
//!
//! The parts:
//! - [`params`]: the top-level parameters and `objects`, with upstream's
//!   validation rules and messages;
//! - [`client`]: HTTP to Vault (TLS, mTLS, namespaces), clients reused per
//!   address and TLS settings;
//! - [`auth`]: the kubernetes/jwt login, one Vault token per identity while it
//!   is valid, re-login once on a 403;
//! - [`render`], [`json`]: file contents as upstream writes them (a key, or
//!   the whole response as Go's `json.Marshal` writes it);
//! - [`version`]: object versions as an HMAC, the key read once per process;
//! - [`VaultProvider`]: the `Provider` the binary registers as `vault`.

pub mod auth;
pub mod client;
pub mod json;
pub mod params;
mod provider;
pub mod render;
pub mod version;

pub use provider::{NAME, VaultError, VaultProvider, check};
