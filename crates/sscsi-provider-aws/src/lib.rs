//! The `aws` provider: AWS Secrets Manager and SSM Parameter Store, accepting
//! exactly the SecretProviderClasses the official provider (ASCP 3.x)
//! accepts.
//!
//! The parts:
//! - [`descriptor`], [`params`]: the `objects` and top-level parameters, read
//!   with ASCP's validation rules, messages and file naming;
//! - [`fetch`]: reading the objects with the official SDK clients (Secrets
//!   Manager, SSM in batches of 10, failover regions, jmesPath), tested
//!   against moto;
//! - [`auth`]: IRSA and EKS Pod Identity, credentials cached per identity;
//! - [`AwsProvider`]: the `Provider` the binary registers as `aws`.
//!
//! Still to come: reusing SDK clients across mounts.

pub mod auth;
pub mod descriptor;
pub mod fetch;
pub mod params;
mod provider;

pub use provider::{AwsEndpoints, AwsError, AwsProvider, NAME, check};
