//! Service-account tokens by TokenRequest: for providers that log in with
//! one when kubelet passed none for their audience (Vault, GCP), and for
//! the SecretSync controller, which has no kubelet to ask.

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;

use sscsi_core::{PodInfo, SecretBytes, ServiceAccountToken};

/// A token of `pod`'s service account for `audiences` (none: the API
/// server's default), valid `seconds` and bound to the pod, so it dies with
/// it. A pod without a uid (the controller's identity of a SecretSync) gets
/// a token bound to nothing.
pub async fn request_pod_token(
    kube: &kube::Client,
    pod: &PodInfo,
    audiences: Vec<String>,
    seconds: i64,
) -> Result<SecretBytes, kube::Error> {
    let bound = (!pod.uid.is_empty()).then_some(pod);
    let token =
        request_token(kube, &pod.namespace, &pod.service_account, audiences, seconds, bound)
            .await?;
    Ok(token.token)
}

/// A token of `namespace/service_account`, with its expiry as kubelet
/// passes it (RFC 3339), bound to `pod` when one is given.
pub async fn request_token(
    kube: &kube::Client,
    namespace: &str,
    service_account: &str,
    audiences: Vec<String>,
    seconds: i64,
    pod: Option<&PodInfo>,
) -> Result<ServiceAccountToken, kube::Error> {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences,
            expiration_seconds: Some(seconds),
            bound_object_ref: pod.map(|pod| BoundObjectReference {
                kind: Some("Pod".into()),
                api_version: Some("v1".into()),
                name: Some(pod.name.clone()),
                uid: Some(pod.uid.clone()),
            }),
        },
        ..Default::default()
    };
    let api: kube::Api<ServiceAccount> = kube::Api::namespaced(kube.clone(), namespace);
    let issued = api.create_token_request(service_account, &Default::default(), &request).await?;
    Ok(match issued.status {
        Some(status) => ServiceAccountToken {
            token: SecretBytes::from(status.token),
            expiration_timestamp: status.expiration_timestamp.0.to_string(),
        },
        None => ServiceAccountToken {
            token: SecretBytes::from(String::new()),
            expiration_timestamp: String::new(),
        },
    })
}
