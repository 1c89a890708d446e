//! The upstream provider API (v1alpha1, a unix socket per provider), both
//! ways:
//! - [`ExternalSockets`]: any provider not compiled in (Akeyless, Conjur,
//!   Infisical, …) found at `<dir>/<name>.sock` and called as the upstream
//!   driver calls it, behind the same [`sscsi_core::Provider`] trait;
//! - [`ProviderService`]: a compiled-in provider served on a socket, so the
//!   upstream driver can use it in place of an official provider DaemonSet.
//!
//! [`wire`] holds the one translation both use.

mod client;
mod server;
pub mod wire;

pub use client::{
    DEFAULT_ADDITIONAL_DIR, DEFAULT_MAX_RECV_MSG_SIZE, DEFAULT_PROVIDER_DIR, ExternalError,
    ExternalSockets, GrpcProvider, HEALTH_CHECK_TIMEOUT, SocketOptions,
};
pub use server::{ProviderService, Runtime};
