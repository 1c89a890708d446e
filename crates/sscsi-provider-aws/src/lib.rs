//! The `aws` provider: AWS Secrets Manager and SSM Parameter Store, accepting
//! exactly the SecretProviderClasses the official provider (ASCP 3.x)
//! accepts.
//!
//! This crate is being built in steps; so far it has the `objects`
//! parameter: parsing, validation and file naming ([`descriptor`]). The
//! backend clients, authentication and the `Provider` implementation follow.

pub mod descriptor;
