//! Whether the process is ready: every required condition must hold.
//! The CSI Probe reports `Serving`; `/readyz` reports them all.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Condition {
    /// The CSI socket accepts calls.
    Serving,
    /// Kubelet reported a successful plugin registration.
    Registered,
    /// The SecretProviderClass cache has listed every class once.
    CachesSynced,
}

impl Condition {
    pub fn name(self) -> &'static str {
        match self {
            Self::Serving => "csi-serving",
            Self::Registered => "kubelet-registration",
            Self::CachesSynced => "cache-sync",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Readiness {
    conditions: Arc<Mutex<BTreeMap<Condition, bool>>>,
}

impl Default for Readiness {
    /// Requires only [`Condition::Serving`].
    fn default() -> Self {
        Self::new(&[Condition::Serving])
    }
}

impl Readiness {
    pub fn new(required: &[Condition]) -> Self {
        let conditions = required.iter().map(|c| (*c, false)).collect();
        Self { conditions: Arc::new(Mutex::new(conditions)) }
    }

    /// Records a condition's state; one that was not required becomes required.
    pub fn mark(&self, condition: Condition, met: bool) {
        self.lock().insert(condition, met);
    }

    pub fn is_met(&self, condition: Condition) -> bool {
        self.lock().get(&condition).copied().unwrap_or(false)
    }

    pub fn is_ready(&self) -> bool {
        self.lock().values().all(|met| *met)
    }

    /// The required conditions not met yet, by name.
    pub fn pending(&self) -> Vec<&'static str> {
        self.lock().iter().filter(|(_, met)| !**met).map(|(c, _)| c.name()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Condition, bool>> {
        self.conditions.lock().expect("readiness lock poisoned")
    }
}

/// `sscsi_ready{condition}`: 1 for each required condition met, 0 for one
/// pending, so an alert sees what `/readyz` says.
impl prometheus_client::collector::Collector for Readiness {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::gauge::ConstGauge;
        let conditions: Vec<(Condition, bool)> =
            self.lock().iter().map(|(c, met)| (*c, *met)).collect();
        let mut family = encoder.encode_descriptor(
            "sscsi_ready",
            "1 when the readiness condition holds, 0 while it is pending (what /readyz reports)",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for (condition, met) in conditions {
            let labels = [("condition", condition.name())];
            ConstGauge::new(i64::from(met)).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_required_condition_holds() {
        let r = Readiness::new(&[Condition::Serving, Condition::Registered]);
        assert!(!r.is_ready());
        assert_eq!(r.pending(), vec!["csi-serving", "kubelet-registration"]);
        r.mark(Condition::Serving, true);
        assert!(r.is_met(Condition::Serving) && !r.is_ready());
        r.mark(Condition::Registered, true);
        assert!(r.is_ready());
        r.mark(Condition::Registered, false);
        assert_eq!(r.pending(), vec!["kubelet-registration"]);
    }
}
