//! `status.syncHash`, computed as the upstream sync controller computes it,
//! so a SecretSync it synced is not written again after the switch:
//! `v1:` and the hex of PBKDF2-HMAC-SHA512 (100 000 rounds, 32 bytes, the
//! SecretSync's UID as salt) over the length-prefixed JSON of the data and
//! `spcUID|spcGeneration|ssUID|ssGeneration|forceSynchronization`. The key
//! derivation keeps a low-entropy secret from being guessed from the hash.
//!
//! The derivation costs tens of milliseconds, so [`SyncHasher`] remembers
//! the last input of each SecretSync by a SHA-256 digest held in memory
//! only: an unchanged rotation pass derives nothing.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use aws_lc_rs::{digest, pbkdf2};
use base64::Engine as _;

const ROUNDS: NonZeroU32 = NonZeroU32::new(100_000).expect("non-zero");

/// What the hash covers.
#[derive(Debug, Clone, Copy)]
pub struct HashInput<'a> {
    pub data: &'a BTreeMap<String, Vec<u8>>,
    pub spc_uid: &'a str,
    pub spc_generation: i64,
    pub ss_uid: &'a str,
    pub ss_generation: i64,
    pub force: &'a str,
}

impl HashInput<'_> {
    /// The derivation's password (secret bytes: never logged, zeroized by the caller).
    fn password(&self) -> zeroize::Zeroizing<Vec<u8>> {
        // Go's json.Marshal of map[string][]byte: sorted keys, padded base64.
        let mut json = String::from("{");
        for (i, (key, value)) in self.data.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push_str(&serde_json::to_string(key).expect("a string serializes"));
            json.push_str(":\"");
            json.push_str(&base64::engine::general_purpose::STANDARD.encode(value));
            json.push('"');
        }
        json.push('}');
        let json = zeroize::Zeroizing::new(json);
        let tail = [
            self.spc_uid.to_owned(),
            self.spc_generation.to_string(),
            self.ss_uid.to_owned(),
            self.ss_generation.to_string(),
            self.force.to_owned(),
        ]
        .join("|");
        let mut password = zeroize::Zeroizing::new(Vec::with_capacity(json.len() + tail.len() + 8));
        password.extend_from_slice(json.len().to_string().as_bytes());
        password.push(b':');
        password.extend_from_slice(json.as_bytes());
        password.extend_from_slice(tail.as_bytes());
        password
    }
}

/// The upstream hash of `input`.
pub fn sync_hash(input: &HashInput<'_>) -> String {
    derive(&input.password(), input.ss_uid)
}

fn derive(password: &[u8], salt: &str) -> String {
    let mut out = [0u8; 32];
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA512, ROUNDS, salt.as_bytes(), password, &mut out);
    format!("v1:{}", hex::encode(out))
}

/// The last derivation, by a digest of its input.
#[derive(Debug, Clone, Default)]
pub struct Memo {
    digest: Option<[u8; 32]>,
    hash: String,
}

impl Memo {
    /// The hash of `input`, derived again only when the input changed.
    pub fn hash(&mut self, input: &HashInput<'_>) -> String {
        let password = input.password();
        let mut context = digest::Context::new(&digest::SHA256);
        context.update(input.ss_uid.as_bytes());
        context.update(&[0]);
        context.update(&password);
        let mut key = [0u8; 32];
        key.copy_from_slice(context.finish().as_ref());
        if self.digest != Some(key) {
            self.hash = derive(&password, input.ss_uid);
            self.digest = Some(key);
        }
        self.hash.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> BTreeMap<String, Vec<u8>> {
        [("user".to_owned(), b"admin".to_vec()), ("password".to_owned(), b"hunter2".to_vec())]
            .into_iter()
            .collect()
    }

    /// The value Python's hashlib.pbkdf2_hmac gives for the input upstream
    /// builds from these fields (an independent implementation).
    #[test]
    fn matches_the_upstream_derivation() {
        let data = data();
        let input = HashInput {
            data: &data,
            spc_uid: "spc-uid",
            spc_generation: 3,
            ss_uid: "ss-uid",
            ss_generation: 2,
            force: "force-1",
        };
        assert_eq!(
            sync_hash(&input),
            "v1:478e1728e2d1ad4704553b612ba397e494088e456e8a0d743e4fc6efdb54b911"
        );
    }

    #[test]
    fn memo_derives_again_only_on_change() {
        let data = data();
        let mut input = HashInput {
            data: &data,
            spc_uid: "a",
            spc_generation: 1,
            ss_uid: "b",
            ss_generation: 1,
            force: "",
        };
        let mut memo = Memo::default();
        let first = memo.hash(&input);
        assert_eq!(first, sync_hash(&input));
        assert_eq!(memo.hash(&input), first);
        input.force = "now";
        let forced = memo.hash(&input);
        assert_ne!(forced, first);
        assert_eq!(forced, sync_hash(&input));
    }
}
