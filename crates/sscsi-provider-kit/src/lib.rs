//! Helpers every provider that talks to the Kubernetes API needs, written
//! once: service-account annotations read at most once a minute per account
//! (AWS's role ARN, Azure's client id, GCP's service account and delegates),
//! and a TokenRequest for a pod. sscsi-core stays free of Kubernetes.

pub mod annotations;
pub mod token_request;

pub use annotations::ServiceAccountAnnotations;
pub use token_request::request_pod_token;
