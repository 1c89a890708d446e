//! Domain types shared by every part of sscsi, with no Kubernetes or gRPC
//! dependency: the [`Provider`] trait and what flows through it, the
//! [`SecretBytes`] type that holds secret material, parameter parsing helpers
//! and the path rules every file written into a volume must obey.

pub mod gojson;
pub mod goyaml;
pub mod params;
pub mod path;
mod provider;
pub mod refresh;
mod registry;
mod secret;
pub mod tokens;

pub use provider::{
    BURST_WINDOW, ErrorCode, MountRequest, MountResponse, ObjectVersion, PodInfo, Provider,
    ProviderError, ProviderFailure, SecretFile, ServiceAccountToken,
};
pub use refresh::{RESERVED_PREFIX, Refresh};
pub use registry::{
    ExternalProviders, MAX_EXTERNAL_NAME_LEN, ProviderRegistry, UnknownProvider,
    valid_external_name,
};
pub use secret::SecretBytes;

/// The file mode upstream sends to every provider as its default: 0644.
pub const DEFAULT_FILE_MODE: u32 = 0o644;

/// A short, stable digest of content, for providers whose backend has no
/// version of its own: the first 16 bytes of SHA-256, hex. It changes exactly
/// when the bytes do and says nothing useful about them.
pub fn content_digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)[..16].iter().map(|b| format!("{b:02x}")).collect()
}
