//! `--serve-last-known-good=<ttl>`: the last files each identity fetched
//! for each class, kept in memory, so a new pod whose backend is down or
//! throttling at mount time still starts (upstream #298, the 5-hour outage
//! of upstream #1483). Served only to the same identity: the same class at
//! the same generation, the same namespace and service account, the same
//! volume attributes (every auth parameter); never to a volume with a
//! nodePublishSecretRef (its credentials are the identity). Never written
//! to disk; a copy older than the TTL is dropped, and its bytes with it
//! (`SecretBytes` wipes itself).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sscsi_api::SecretProviderClass;
use sscsi_core::{ErrorCode, ObjectVersion, SecretFile};
use sscsi_engine::Fetched;

use crate::context::PublishRequest;

/// The pod's own attributes, which do not make an identity.
const POD_ATTRIBUTES: &str = "csi.storage.k8s.io/";

#[derive(Debug)]
pub(crate) struct LastKnownGood {
    ttl: Duration,
    copies: Mutex<HashMap<String, Copy>>,
}

#[derive(Debug)]
struct Copy {
    files: Vec<SecretFile>,
    versions: Vec<ObjectVersion>,
    at: Instant,
}

impl LastKnownGood {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, copies: Mutex::default() }
    }

    /// Who asks for what, or `None` when no copy may serve the volume.
    pub fn key(spc: &SecretProviderClass, req: &PublishRequest) -> Option<String> {
        if !req.secrets.is_empty() {
            return None;
        }
        let attributes: BTreeMap<&String, &String> =
            req.attributes.iter().filter(|(k, _)| !k.starts_with(POD_ATTRIBUTES)).collect();
        let key = serde_json::json!([
            spc.qualified_name(),
            spc.metadata.uid,
            spc.metadata.generation,
            req.pod.namespace,
            req.pod.service_account,
            attributes,
        ]);
        Some(key.to_string())
    }

    /// Keeps what a fetch for `key` brought. An unchanged answer (every
    /// refresh that finds nothing new) only renews the held copy's age, so
    /// rotation passes copy no bytes.
    pub fn keep(&self, key: String, fetched: &Fetched) {
        if fetched.written_by_provider {
            return;
        }
        let mut copies = self.copies.lock().expect("last-known-good lock");
        copies.retain(|_, c| c.at.elapsed() <= self.ttl);
        match copies.get_mut(&key) {
            Some(held) if held.versions == fetched.versions => held.at = Instant::now(),
            _ => {
                let copy = Copy {
                    files: fetched.files.clone(),
                    versions: fetched.versions.clone(),
                    at: Instant::now(),
                };
                copies.insert(key, copy);
            }
        }
    }

    /// The copy for `key` and its age, while younger than the TTL.
    pub fn serve(&self, key: &str) -> Option<(Fetched, Duration)> {
        let mut copies = self.copies.lock().expect("last-known-good lock");
        copies.retain(|_, c| c.at.elapsed() <= self.ttl);
        let copy = copies.get(key)?;
        let fetched = Fetched {
            files: copy.files.clone(),
            versions: copy.versions.clone(),
            written_by_provider: false,
        };
        Some((fetched, copy.at.elapsed()))
    }
}

/// Failures that say the backend is down or throttling, not that the
/// request is wrong or refused: only these are answered with a copy.
pub(crate) fn is_outage(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Unavailable | ErrorCode::ResourceExhausted | ErrorCode::DeadlineExceeded
    )
}
