//! A service-account token for a pod by TokenRequest, for providers that log
//! in with one when kubelet passed none for their audience (Vault, GCP).

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;

use sscsi_core::{PodInfo, SecretBytes};

/// A token of `pod`'s service account for `audiences` (none: the API
/// server's default), valid `seconds` and bound to the pod, so it dies with it.
pub async fn request_pod_token(
    kube: &kube::Client,
    pod: &PodInfo,
    audiences: Vec<String>,
    seconds: i64,
) -> Result<SecretBytes, kube::Error> {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences,
            expiration_seconds: Some(seconds),
            bound_object_ref: Some(BoundObjectReference {
                kind: Some("Pod".into()),
                api_version: Some("v1".into()),
                name: Some(pod.name.clone()),
                uid: Some(pod.uid.clone()),
            }),
        },
        ..Default::default()
    };
    let api: kube::Api<ServiceAccount> = kube::Api::namespaced(kube.clone(), &pod.namespace);
    let issued =
        api.create_token_request(&pod.service_account, &Default::default(), &request).await?;
    Ok(SecretBytes::from(issued.status.map(|s| s.token).unwrap_or_default()))
}
