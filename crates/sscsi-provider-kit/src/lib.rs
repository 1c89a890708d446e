//! What every provider needs, written once: identity-scoped coalescing of
//! reads (AWS and Vault so far), service-account annotations read at
//! most once a minute per account (AWS's role ARN, Azure's client id, GCP's
//! service account and delegates), and a TokenRequest for a pod.
//! sscsi-core stays free of Kubernetes.

pub mod annotations;
pub mod coalesce;
pub mod token_request;

pub use annotations::ServiceAccountAnnotations;
pub use coalesce::Coalescer;
pub use token_request::request_pod_token;
