//! The `aws` provider: AWS Secrets Manager and SSM Parameter Store, accepting
//! exactly the SecretProviderClasses the official provider (ASCP 3.x)
//! accepts.
//!
//! This crate is being built in steps. So far it reads the `objects` and
//! top-level parameters with ASCP's validation rules, messages and file
//! naming ([`descriptor`], [`params`]). The backend clients, authentication
//! and the `Provider` implementation follow; until then `spec.provider: aws`
//! is answered with the list of providers this binary has.

pub mod descriptor;
pub mod params;
