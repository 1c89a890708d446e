//! What the driver knows about the volumes it mounted: the source of truth
//! for "already published" and "due for a re-fetch", instead of upstream's
//! directory mtime (which can report a fresh mount with nothing mounted).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sscsi_core::ObjectVersion;

#[derive(Debug, Clone)]
pub(crate) struct VolumeState {
    pub provider: String,
    pub versions: Vec<ObjectVersion>,
    pub last_fetch: Instant,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct VolumeTable {
    volumes: Arc<Mutex<HashMap<String, VolumeState>>>,
}

impl VolumeTable {
    pub fn get(&self, volume_id: &str) -> Option<VolumeState> {
        self.volumes
            .lock()
            .expect("volume table lock poisoned")
            .get(volume_id)
            .cloned()
    }

    pub fn insert(&self, volume_id: &str, state: VolumeState) {
        self.volumes
            .lock()
            .expect("volume table lock poisoned")
            .insert(volume_id.to_owned(), state);
    }

    pub fn remove(&self, volume_id: &str) {
        self.volumes
            .lock()
            .expect("volume table lock poisoned")
            .remove(volume_id);
    }
}
