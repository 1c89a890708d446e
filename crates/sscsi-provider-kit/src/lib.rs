//! What every provider needs, written once: identity-scoped coalescing of
//! reads, credentials per identity (one exchange at a time, the refresh rule
//! a parameter), one reading of a backend's HTTP failures (which gRPC code, retry
//! or not), retries with backoff that count throttling, service-account
//! annotations read at most once a minute per account (AWS's role ARN,
//! Azure's client id, GCP's service account and delegates), and a
//! TokenRequest for a pod. sscsi-core stays free of Kubernetes.

pub mod annotations;
pub mod budget;
pub mod coalesce;
pub mod identity;
pub mod retry;
pub mod stats;
pub mod status;
pub mod token_request;

pub use annotations::ServiceAccountAnnotations;
pub use budget::Budget;
pub use coalesce::Coalescer;
pub use identity::{IdentityCache, RefreshRule};
pub use retry::{Calls, Classified, RetryPolicy, retry};
pub use stats::{BackendStats, CallStats};
pub use status::Failure;
pub use token_request::{request_pod_token, request_token};
