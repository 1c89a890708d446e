//! Counters every provider keeps of its backend calls, exported by the
//! node's `/metrics` (`sscsi_backend_throttled_total`,
//! `sscsi_backend_retries_total`, by provider).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: String,
}

/// The families, shared by every provider of a process. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct BackendStats {
    throttled: Family<ProviderLabel, Counter>,
    retries: Family<ProviderLabel, Counter>,
}

impl BackendStats {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sscsi_backend_throttled",
            "Backend answers that asked to slow down (HTTP 429 or a throttling error code)",
            self.throttled.clone(),
        );
        registry.register(
            "sscsi_backend_retries",
            "Backend calls tried again after a transient failure",
            self.retries.clone(),
        );
    }

    /// One provider's counters.
    pub fn provider(&self, name: &str) -> CallStats {
        let label = ProviderLabel { provider: name.to_owned() };
        CallStats {
            throttled: self.throttled.get_or_create(&label).clone(),
            retries: self.retries.get_or_create(&label).clone(),
        }
    }
}

/// One provider's counters.
#[derive(Debug, Clone, Default)]
pub struct CallStats {
    throttled: Counter,
    retries: Counter,
}

impl CallStats {
    pub fn throttled(&self) {
        self.throttled.inc();
    }

    pub fn retried(&self) {
        self.retries.inc();
    }

    pub fn throttled_count(&self) -> u64 {
        self.throttled.get()
    }

    pub fn retries_count(&self) -> u64 {
        self.retries.get()
    }
}
