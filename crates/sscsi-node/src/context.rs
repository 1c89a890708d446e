//! Typed parsing of what kubelet sends in NodePublishVolume.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::value::{Error as ValueError, MapDeserializer};
use sscsi_core::tokens::parse_tokens;
use sscsi_core::{PodInfo, SecretBytes, ServiceAccountToken};
use sscsi_proto::TOKENS_KEY;
use sscsi_proto::csi::v1::NodePublishVolumeRequest;
use zeroize::Zeroize;

use crate::error::PublishError;

/// The volume attributes sscsi reads itself. Every attribute, these included,
/// is also passed to the provider as a parameter.
#[derive(Debug, Deserialize)]
struct VolumeContext {
    /// Name of the SecretProviderClass, in the pod's namespace.
    #[serde(rename = "secretProviderClass", default)]
    secret_provider_class: String,
    #[serde(rename = "csi.storage.k8s.io/pod.name", default)]
    pod_name: String,
    #[serde(rename = "csi.storage.k8s.io/pod.namespace", default)]
    pod_namespace: String,
    #[serde(rename = "csi.storage.k8s.io/pod.uid", default)]
    pod_uid: String,
    #[serde(rename = "csi.storage.k8s.io/serviceAccount.name", default)]
    service_account: String,
}

/// A NodePublishVolume request that passed validation. The last one of
/// each volume is kept, so an on-demand refresh can repeat it.
#[derive(Debug, Clone)]
pub(crate) struct PublishRequest {
    pub volume_id: String,
    pub target_path: PathBuf,
    pub spc_name: String,
    pub pod: PodInfo,
    /// All volume attributes except the tokens key.
    pub attributes: BTreeMap<String, String>,
    pub tokens: BTreeMap<String, ServiceAccountToken>,
    /// nodePublishSecretRef data, without the tokens key.
    pub secrets: BTreeMap<String, SecretBytes>,
    /// The pod's fsGroup (`volume_mount_group`, sent by kubelet because the
    /// node has VOLUME_MOUNT_GROUP): the group of every file and directory.
    pub group: Option<u32>,
}

impl PublishRequest {
    /// Validates in upstream's order, with upstream's messages.
    pub fn parse(req: NodePublishVolumeRequest) -> Result<Self, PublishError> {
        if req.volume_capability.is_none() {
            return Err(PublishError::MissingCapability);
        }
        if req.volume_id.is_empty() {
            return Err(PublishError::MissingVolumeId);
        }
        if req.target_path.is_empty() {
            return Err(PublishError::MissingTargetPath);
        }
        if req.volume_context.is_empty() {
            return Err(PublishError::MissingVolumeContext);
        }
        let group = mount_group(&req)?;
        let NodePublishVolumeRequest {
            volume_id,
            target_path,
            readonly,
            mut secrets,
            mut volume_context,
            ..
        } = req;
        let context = VolumeContext::deserialize(MapDeserializer::<_, ValueError>::new(
            volume_context.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ))
        .map_err(|e| PublishError::BadAttribute {
            key: "volume_context".into(),
            message: e.to_string(),
        })?;
        if context.secret_provider_class.is_empty() {
            return Err(PublishError::MissingSecretProviderClass);
        }
        if !readonly {
            return Err(PublishError::NotReadOnly);
        }
        if context.pod_namespace.is_empty() {
            return Err(PublishError::BadAttribute {
                key: "csi.storage.k8s.io/pod.namespace".into(),
                message: "is not set (the CSIDriver object needs podInfoOnMount: true)".into(),
            });
        }
        // KEP-5538: kubelet may pass tokens in `secrets`; that copy wins.
        let tokens_json = secrets.remove(TOKENS_KEY).or(volume_context.remove(TOKENS_KEY));
        volume_context.remove(TOKENS_KEY);
        let tokens = match tokens_json {
            Some(mut json) => {
                let parsed = parse_tokens(&json);
                json.zeroize();
                parsed.map_err(|e| PublishError::BadAttribute {
                    key: TOKENS_KEY.into(),
                    message: e.to_string(),
                })?
            }
            None => BTreeMap::new(),
        };
        Ok(Self {
            volume_id,
            target_path: PathBuf::from(target_path),
            spc_name: context.secret_provider_class,
            pod: PodInfo {
                name: context.pod_name,
                namespace: context.pod_namespace,
                uid: context.pod_uid,
                service_account: context.service_account,
            },
            attributes: volume_context.into_iter().collect(),
            tokens,
            secrets: secrets_map(secrets),
            group,
        })
    }
}

/// `volume_mount_group` of a mount capability: kubelet's decimal fsGroup,
/// empty for none (csi-sanity sends an empty `MountVolume`).
fn mount_group(req: &NodePublishVolumeRequest) -> Result<Option<u32>, PublishError> {
    use sscsi_proto::csi::v1::volume_capability::AccessType;
    let group = match req.volume_capability.as_ref().and_then(|c| c.access_type.as_ref()) {
        Some(AccessType::Mount(mount)) => mount.volume_mount_group.as_str(),
        _ => "",
    };
    if group.is_empty() {
        return Ok(None);
    }
    // Digits only: `u32::from_str` would also take a leading `+`.
    match group.bytes().all(|b| b.is_ascii_digit()).then(|| group.parse::<u32>()) {
        Some(Ok(gid)) => Ok(Some(gid)),
        _ => Err(PublishError::BadMountGroup(group.to_owned())),
    }
}

fn secrets_map(secrets: HashMap<String, String>) -> BTreeMap<String, SecretBytes> {
    secrets.into_iter().map(|(k, v)| (k, SecretBytes::from(v))).collect()
}

#[cfg(test)]
mod tests {
    use sscsi_proto::csi::v1::VolumeCapability;

    use super::*;

    fn valid() -> NodePublishVolumeRequest {
        NodePublishVolumeRequest {
            volume_id: "csi-123".into(),
            target_path: "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/v/mount".into(),
            volume_capability: Some(VolumeCapability::default()),
            readonly: true,
            volume_context: HashMap::from([
                ("secretProviderClass".into(), "spc".into()),
                ("csi.storage.k8s.io/pod.name".into(), "web-0".into()),
                ("csi.storage.k8s.io/pod.namespace".into(), "shop".into()),
                ("csi.storage.k8s.io/pod.uid".into(), "uid-1".into()),
                ("csi.storage.k8s.io/serviceAccount.name".into(), "web".into()),
                ("objects".into(), "override".into()),
            ]),
            ..Default::default()
        }
    }

    #[test]
    fn parses_pod_info_attributes_and_tokens() {
        let mut req = valid();
        req.volume_context.insert(
            TOKENS_KEY.into(),
            r#"{"vault":{"token":"from-context","expirationTimestamp":"2026-11-22T12:00:00Z"}}"#
                .into(),
        );
        req.secrets
            .insert(TOKENS_KEY.into(), r#"{"sts.amazonaws.com":{"token":"from-secrets"}}"#.into());
        req.secrets.insert("password".into(), "p".into());
        let p = PublishRequest::parse(req).unwrap();
        assert_eq!(p.spc_name, "spc");
        assert_eq!(
            p.pod,
            PodInfo {
                name: "web-0".into(),
                namespace: "shop".into(),
                uid: "uid-1".into(),
                service_account: "web".into()
            }
        );
        assert_eq!(p.attributes.get("objects").map(String::as_str), Some("override"));
        assert!(!p.attributes.contains_key(TOKENS_KEY));
        assert_eq!(
            p.tokens.keys().collect::<Vec<_>>(),
            vec!["sts.amazonaws.com"],
            "the secrets copy wins"
        );
        assert_eq!(p.tokens["sts.amazonaws.com"].token.expose(), b"from-secrets");
        assert_eq!(p.secrets.keys().collect::<Vec<_>>(), vec!["password"]);
    }

    #[test]
    fn validation_order_and_messages_match_upstream() {
        type Edit = fn(&mut NodePublishVolumeRequest);
        let cases: &[(Edit, &str)] = &[
            (|r| r.volume_capability = None, "Volume capability missing in request"),
            (|r| r.volume_id.clear(), "Volume ID missing in request"),
            (|r| r.target_path.clear(), "Target path missing in request"),
            (|r| r.volume_context.clear(), "Volume attributes missing in request"),
            (
                |r| drop(r.volume_context.remove("secretProviderClass")),
                "secretProviderClass is not set",
            ),
            (|r| r.readonly = false, "Readonly is not true in request"),
            (
                |r| drop(r.volume_context.remove("csi.storage.k8s.io/pod.namespace")),
                "volume attribute csi.storage.k8s.io/pod.namespace is not set",
            ),
        ];
        for (edit, want) in cases {
            let mut req = valid();
            edit(&mut req);
            let err = PublishRequest::parse(req).unwrap_err().to_string();
            assert!(err.starts_with(want), "want {want:?}, got {err:?}");
        }
        // With everything missing, the capability is reported first, as upstream.
        let err = PublishRequest::parse(NodePublishVolumeRequest::default()).unwrap_err();
        assert_eq!(err.to_string(), "Volume capability missing in request");
    }

    #[test]
    fn bad_tokens_json_is_reported_without_its_content() {
        let mut req = valid();
        req.volume_context.insert(TOKENS_KEY.into(), r#"{"aud":"eyJ-secret-token"}"#.into());
        let err = PublishRequest::parse(req).unwrap_err().to_string();
        assert!(err.contains(TOKENS_KEY), "{err}");
        assert!(!err.contains("eyJ-secret-token"), "{err}");
    }
}
