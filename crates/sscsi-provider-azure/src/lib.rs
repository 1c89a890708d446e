//! The `azure` provider: Azure Key Vault secrets, keys and certificates,
//! accepting the SecretProviderClasses the official provider (1.8) accepts and
//! writing the same files.

pub mod auth;
pub mod binding;
pub mod cloud;
pub mod content;
pub mod keyvault;
pub mod params;
mod provider;

pub use provider::{AzureError, AzureOptions, AzureProvider, NAME, check};
