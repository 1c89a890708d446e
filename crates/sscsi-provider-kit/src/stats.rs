//! What every provider counts of its backend, exported by the node's,
//! the controller's and the provider server's `/metrics`: each call by
//! operation and outcome with its latency, throttled answers and retries,
//! credential exchanges against reuses, and reads answered by another
//! caller's call (coalesced). Counted in one place each: [`crate::Calls`]
//! for calls, [`crate::IdentityCache`] for credentials,
//! [`crate::Coalescer`] for shared reads.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::time::Instant;

use crate::budget::Budget;
use crate::retry::Classified;
use crate::status::Failure;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: String,
}

/// How a backend call ended, as an operator tells outcomes apart.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    NotFound,
    Denied,
    Throttled,
    Error,
}

impl Outcome {
    pub fn of<T, E: Classified>(result: &Result<T, E>) -> Self {
        match result {
            Ok(_) => Self::Ok,
            Err(e) => Self::failed(e.failure()),
        }
    }

    pub fn failed(failure: Failure) -> Self {
        match failure {
            Failure::NotFound => Self::NotFound,
            Failure::Denied | Failure::Unauthenticated => Self::Denied,
            Failure::Throttled => Self::Throttled,
            Failure::Rejected | Failure::Invalid | Failure::Unavailable => Self::Error,
        }
    }

    /// The `outcome` label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::NotFound => "not_found",
            Self::Denied => "denied",
            Self::Throttled => "throttled",
            Self::Error => "error",
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.as_str().encode(encoder)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    provider: String,
    operation: &'static str,
    outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    provider: String,
    operation: &'static str,
}

type Latency = Family<OperationLabels, Histogram, fn() -> Histogram>;

fn latency_buckets() -> Histogram {
    // 1 ms to ~33 s: a cached answer, a cloud call, a throttled retry.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The families, shared by every provider of a process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BackendStats {
    calls: Family<CallLabels, Counter>,
    latency: Latency,
    throttled: Family<ProviderLabel, Counter>,
    retries: Family<ProviderLabel, Counter>,
    exchanges: Family<ProviderLabel, Counter>,
    reused: Family<ProviderLabel, Counter>,
    coalesced: Family<ProviderLabel, Counter>,
    queued: Family<ProviderLabel, Counter>,
    /// The node-wide budget per endpoint, when one is set.
    budget: Option<Arc<Budget>>,
}

impl Default for BackendStats {
    fn default() -> Self {
        Self {
            calls: Family::default(),
            latency: Family::new_with_constructor(latency_buckets),
            throttled: Family::default(),
            retries: Family::default(),
            exchanges: Family::default(),
            reused: Family::default(),
            coalesced: Family::default(),
            queued: Family::default(),
            budget: None,
        }
    }
}

/// Every family this module exports, by its name on `/metrics` (counters
/// with `_total` added), for docs and the chart's checks.
pub const METRICS: &[&str] = &[
    "sscsi_backend_calls_total",
    "sscsi_backend_call_duration_seconds",
    "sscsi_backend_throttled_total",
    "sscsi_backend_retries_total",
    "sscsi_credential_exchanges_total",
    "sscsi_credential_reuses_total",
    "sscsi_coalesced_reads_total",
    "sscsi_backend_queued_total",
];

impl BackendStats {
    /// Every provider's calls wait their turn in `budget`.
    pub fn with_budget(mut self, budget: Budget) -> Self {
        self.budget = Some(Arc::new(budget));
        self
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sscsi_backend_calls",
            "Backend calls (each attempt), by provider, operation and outcome",
            self.calls.clone(),
        );
        registry.register(
            "sscsi_backend_call_duration_seconds",
            "Duration of backend calls (each attempt), by provider and operation",
            self.latency.clone(),
        );
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
        registry.register(
            "sscsi_credential_exchanges",
            "Credentials obtained from the backend (STS, a Vault login, a token exchange)",
            self.exchanges.clone(),
        );
        registry.register(
            "sscsi_credential_reuses",
            "Fetches that reused a held credential instead of exchanging one",
            self.reused.clone(),
        );
        registry.register(
            "sscsi_backend_queued",
            "Backend calls that waited for the node-wide budget of their endpoint (--backend-calls-per-second)",
            self.queued.clone(),
        );
        registry.register(
            "sscsi_coalesced_reads",
            "Reads answered by an identical read of the same identity (in flight or just answered)",
            self.coalesced.clone(),
        );
    }

    /// One provider's counters.
    pub fn provider(&self, name: &str) -> CallStats {
        let label = ProviderLabel { provider: name.to_owned() };
        CallStats {
            provider: name.to_owned(),
            calls: self.calls.clone(),
            latency: self.latency.clone(),
            throttled: self.throttled.get_or_create(&label).clone(),
            retries: self.retries.get_or_create(&label).clone(),
            exchanges: self.exchanges.get_or_create(&label).clone(),
            reused: self.reused.get_or_create(&label).clone(),
            coalesced: self.coalesced.get_or_create(&label).clone(),
            queued: self.queued.get_or_create(&label).clone(),
            budget: self.budget.clone(),
        }
    }
}

/// One provider's counters. The default counts into families no registry
/// exports (a provider built without [`BackendStats`]).
#[derive(Debug, Clone)]
pub struct CallStats {
    provider: String,
    calls: Family<CallLabels, Counter>,
    latency: Latency,
    throttled: Counter,
    retries: Counter,
    exchanges: Counter,
    reused: Counter,
    coalesced: Counter,
    queued: Counter,
    budget: Option<Arc<Budget>>,
}

impl Default for CallStats {
    fn default() -> Self {
        BackendStats::default().provider("")
    }
}

impl CallStats {
    /// One backend call that ended as `outcome` after `elapsed`.
    pub fn call(&self, operation: &'static str, outcome: Outcome, elapsed: Duration) {
        let provider = self.provider.clone();
        if outcome == Outcome::Throttled {
            self.throttled.inc();
        }
        self.latency
            .get_or_create(&OperationLabels { provider: provider.clone(), operation })
            .observe(elapsed.as_secs_f64());
        self.calls.get_or_create(&CallLabels { provider, operation, outcome }).inc();
    }

    /// Waits for the turn of a call to `endpoint` in the node-wide budget
    /// (counted when it had to), then runs the call and counts it.
    pub async fn timed<T, E: Classified>(
        &self,
        endpoint: &str,
        operation: &'static str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        self.admit(endpoint).await;
        let started = Instant::now();
        let result = call.await;
        self.call(operation, Outcome::of(&result), started.elapsed());
        result
    }

    /// Waits for the turn of a call to `endpoint` (no wait without a budget).
    pub async fn admit(&self, endpoint: &str) {
        if let Some(budget) = &self.budget
            && budget.acquire(endpoint).await
        {
            self.queued.inc();
        }
    }

    /// The backend asked to wait `after` before the next call to `endpoint`.
    pub fn pause(&self, endpoint: &str, after: Duration) {
        if let Some(budget) = &self.budget {
            budget.pause(endpoint, after);
        }
    }

    pub fn queued_count(&self) -> u64 {
        self.queued.get()
    }

    pub fn retried(&self) {
        self.retries.inc();
    }

    /// A credential exchanged (`true`) or a held one reused.
    pub fn credential(&self, exchanged: bool) {
        if exchanged { &self.exchanges } else { &self.reused }.inc();
    }

    /// A read answered by another caller's call.
    pub fn coalesced(&self) {
        self.coalesced.inc();
    }

    pub fn throttled_count(&self) -> u64 {
        self.throttled.get()
    }

    pub fn retries_count(&self) -> u64 {
        self.retries.get()
    }

    pub fn coalesced_count(&self) -> u64 {
        self.coalesced.get()
    }

    /// (exchanged, reused).
    pub fn credential_counts(&self) -> (u64, u64) {
        (self.exchanges.get(), self.reused.get())
    }

    /// Calls of `operation` that ended as `outcome`.
    pub fn calls_count(&self, operation: &'static str, outcome: Outcome) -> u64 {
        let labels = CallLabels { provider: self.provider.clone(), operation, outcome };
        self.calls.get_or_create(&labels).get()
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[derive(Debug)]
    struct Denied;

    impl Classified for Denied {
        fn failure(&self) -> Failure {
            Failure::Denied
        }
    }

    #[tokio::test]
    async fn every_family_is_exported_under_its_documented_name() {
        let stats = BackendStats::default();
        let mut registry = Registry::default();
        stats.register(&mut registry);
        let aws = stats.provider("aws");
        let ok: Result<(), Denied> = aws.timed("e", "GetSecretValue", async { Ok(()) }).await;
        assert!(ok.is_ok());
        let denied: Result<(), Denied> =
            aws.timed("e", "GetSecretValue", async { Err(Denied) }).await;
        assert!(denied.is_err());
        aws.call("DescribeSecret", Outcome::Throttled, Duration::from_millis(3));
        aws.retried();
        aws.credential(true);
        aws.credential(false);
        aws.coalesced();
        assert_eq!(aws.calls_count("GetSecretValue", Outcome::Denied), 1);
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        for line in [
            r#"sscsi_backend_calls_total{provider="aws",operation="GetSecretValue",outcome="ok"} 1"#,
            r#"sscsi_backend_calls_total{provider="aws",operation="GetSecretValue",outcome="denied"} 1"#,
            r#"sscsi_backend_calls_total{provider="aws",operation="DescribeSecret",outcome="throttled"} 1"#,
            r#"sscsi_backend_call_duration_seconds_count{provider="aws",operation="GetSecretValue"} 2"#,
            r#"sscsi_backend_throttled_total{provider="aws"} 1"#,
            r#"sscsi_backend_retries_total{provider="aws"} 1"#,
            r#"sscsi_credential_exchanges_total{provider="aws"} 1"#,
            r#"sscsi_credential_reuses_total{provider="aws"} 1"#,
            r#"sscsi_coalesced_reads_total{provider="aws"} 1"#,
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line} in\n{out}");
        }
        for name in METRICS {
            let family = name.trim_end_matches("_total");
            assert!(out.contains(&format!("# TYPE {family} ")), "{name} not exported:\n{out}");
        }
    }
}
