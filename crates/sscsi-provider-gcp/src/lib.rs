//! The `gcp` provider: Google Secret Manager (global and regional) and
//! Parameter Manager, accepting the SecretProviderClasses the official GCP
//! provider accepts and writing the same files.
//!
//! The parts:
//! - [`params`], [`resource`]: `secrets` and `auth` with upstream's rules and
//!   messages, resource names classified as upstream does;
//! - [`auth`]: workload identity (identity binding token, IAM
//!   `generateAccessToken`), the node's identity when allowed, tokens cached
//!   per identity;
//! - [`extract`]: `extractJSONKey` and `extractYAMLKey`;
//! - [`GcpProvider`]: Secret Manager through the official SDK client,
//!   Parameter Manager's render over REST, every resource read concurrently.

pub mod auth;
pub mod extract;
pub mod params;
mod provider;
pub mod resource;

pub use provider::{GcpEndpoints, GcpError, GcpOptions, GcpProvider, NAME, check};
