//! The `gcp` provider, in progress: the SecretProviderClass parameters as the
//! official provider reads them ([`params`]), its resource names
//! ([`resource`]) and key extraction ([`extract`]). Identity and the Secret
//! Manager and Parameter Manager reads come next; the provider is not yet
//! registered by the binary.

pub mod extract;
pub mod params;
pub mod resource;
