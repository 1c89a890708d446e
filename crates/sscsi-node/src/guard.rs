//! One CSI operation per volume at a time.
//!
//! The CSI spec lets a plugin answer ABORTED when an operation on the same
//! volume is still in flight; kubelet then retries. This keeps a publish
//! from racing an unpublish (or a second publish) of the same target.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an operation on volume {0} is already in progress")]
pub struct Busy(pub String);

#[derive(Debug, Default, Clone)]
pub(crate) struct VolumeGuards {
    in_flight: Arc<Mutex<HashSet<String>>>,
}

/// Held while an operation runs; frees the volume when dropped.
#[derive(Debug)]
pub(crate) struct VolumeGuard {
    in_flight: Arc<Mutex<HashSet<String>>>,
    volume_id: String,
}

impl VolumeGuards {
    pub fn try_lock(&self, volume_id: &str) -> Result<VolumeGuard, Busy> {
        let mut set = self.in_flight.lock().expect("volume guard lock poisoned");
        if !set.insert(volume_id.to_owned()) {
            return Err(Busy(volume_id.to_owned()));
        }
        Ok(VolumeGuard { in_flight: self.in_flight.clone(), volume_id: volume_id.to_owned() })
    }
}

impl Drop for VolumeGuard {
    fn drop(&mut self) {
        self.in_flight.lock().expect("volume guard lock poisoned").remove(&self.volume_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let guards = VolumeGuards::default();
        let g = guards.try_lock("v1").unwrap();
        assert_eq!(guards.try_lock("v1").unwrap_err(), Busy("v1".into()));
        let _other = guards.try_lock("v2").unwrap();
        drop(g);
        guards.try_lock("v1").unwrap();
    }
}
