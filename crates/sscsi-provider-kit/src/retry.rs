//! Trying a backend call again after a transient failure (throttling, a 5xx,
//! no answer), with capped exponential backoff and jitter; never after a
//! final one (denied, not found, a bad request). Each attempt is counted
//! with its operation, outcome and latency, and so is each retry.

use std::future::Future;
use std::time::Duration;

use crate::stats::CallStats;
use crate::status::Failure;

/// A failure that says what it is.
pub trait Classified {
    fn failure(&self) -> Failure;

    /// How long the backend asked to wait before the next call
    /// (`Retry-After`), when it said.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// How often and how patiently to try again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1: no retry.
    pub attempts: u32,
    /// The pause before the first retry, doubled for each next one...
    pub base: Duration,
    /// ...up to this.
    pub cap: Duration,
    /// The pause is scaled by a random factor in this range.
    pub jitter: (f64, f64),
}

impl RetryPolicy {
    /// The AWS SDKs' standard mode: 3 attempts, full jitter over
    /// `min(1 s · 2ⁿ, 20 s)`.
    pub const AWS_STANDARD: Self = Self {
        attempts: 3,
        base: Duration::from_secs(1),
        cap: Duration::from_secs(20),
        jitter: (0.0, 1.0),
    };

    /// Vault's Go client (go-retryablehttp as `vault/api` sets it): 2 retries,
    /// 1 to 1.5 s apart.
    pub const VAULT: Self = Self {
        attempts: 3,
        base: Duration::from_secs(1),
        cap: Duration::from_secs(1),
        jitter: (1.0, 1.5),
    };

    /// One attempt only.
    pub const NONE: Self =
        Self { attempts: 1, base: Duration::ZERO, cap: Duration::ZERO, jitter: (1.0, 1.0) };

    /// The pause before retry `n` (1 for the first).
    pub fn delay(&self, n: u32) -> Duration {
        let nominal = self.base.saturating_mul(1 << n.saturating_sub(1).min(30)).min(self.cap);
        let (low, high) = self.jitter;
        let factor = if high > low { rand::random_range(low..high) } else { low };
        nominal.mul_f64(factor)
    }
}

/// A provider's calls: how they are retried and where they are counted.
#[derive(Debug, Clone)]
pub struct Calls {
    pub retry: RetryPolicy,
    pub stats: CallStats,
}

impl Calls {
    /// Calls retried as `retry` says, counted nowhere until
    /// [`Calls::counted_in`].
    pub fn new(retry: RetryPolicy) -> Self {
        Self { retry, stats: CallStats::default() }
    }

    pub fn counted_in(mut self, stats: CallStats) -> Self {
        self.stats = stats;
        self
    }

    /// [`retry`] with this policy and these counters; `endpoint` is the
    /// backend the node-wide budget counts the call against, `operation`
    /// names it in the metrics (`GetSecretValue`, `login`).
    pub async fn run<T, E, F, Fut>(
        &self,
        endpoint: &str,
        operation: &'static str,
        call: F,
    ) -> Result<T, E>
    where
        E: Classified,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        retry(&self.retry, &self.stats, endpoint, operation, call).await
    }
}

/// Runs `call` until it succeeds, fails for good, or `policy.attempts` are
/// spent; the last answer is returned as it came. Each attempt waits its
/// turn in the budget of `endpoint`; a `Retry-After` holds every caller of
/// the endpoint, and this one waits at least that long before its retry.
pub async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    stats: &CallStats,
    endpoint: &str,
    operation: &'static str,
    mut call: F,
) -> Result<T, E>
where
    E: Classified,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        let result = stats.timed(endpoint, operation, call()).await;
        let Err(e) = &result else { return result };
        let asked = e.retry_after().map(|after| after.min(crate::budget::MAX_PAUSE));
        if let Some(after) = asked {
            stats.pause(endpoint, after);
        }
        if !e.failure().is_transient() || attempt >= policy.attempts {
            return result;
        }
        stats.retried();
        tokio::time::sleep(policy.delay(attempt).max(asked.unwrap_or_default())).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::stats::{BackendStats, Outcome};

    #[derive(Debug, PartialEq)]
    struct Answer(Failure);

    impl Classified for Answer {
        fn failure(&self) -> Failure {
            self.0
        }
    }

    /// A call that fails with `failures` in turn, then succeeds.
    fn scripted(
        failures: Vec<Failure>,
    ) -> (impl FnMut() -> std::future::Ready<Result<u32, Answer>>, std::sync::Arc<AtomicU32>) {
        let calls = std::sync::Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let call = move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) as usize;
            std::future::ready(match failures.get(n) {
                Some(f) => Err(Answer(*f)),
                None => Ok(n as u32),
            })
        };
        (call, calls)
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_is_retried_and_counted() {
        let stats = BackendStats::default().provider("aws");
        let (call, calls) = scripted(vec![Failure::Throttled, Failure::Unavailable]);
        let started = tokio::time::Instant::now();
        assert_eq!(retry(&RetryPolicy::AWS_STANDARD, &stats, "e", "op", call).await, Ok(2));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!((stats.throttled_count(), stats.retries_count()), (1, 2));
        let counted = |outcome| stats.calls_count("op", outcome);
        assert_eq!([Outcome::Throttled, Outcome::Error, Outcome::Ok].map(counted), [1, 1, 1]);
        assert!(started.elapsed() <= Duration::from_secs(3), "full jitter under 1 s + 2 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_final_failure_is_not_retried() {
        let stats = BackendStats::default().provider("aws");
        for failure in [Failure::Denied, Failure::NotFound, Failure::Rejected, Failure::Invalid] {
            let (call, calls) = scripted(vec![failure]);
            assert_eq!(
                retry(&RetryPolicy::AWS_STANDARD, &stats, "e", "op", call).await,
                Err(Answer(failure))
            );
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{failure:?}");
        }
        assert_eq!(stats.retries_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_attempt_answers_as_it_came() {
        let stats = BackendStats::default().provider("vault");
        let (call, calls) = scripted(vec![Failure::Throttled; 5]);
        let started = tokio::time::Instant::now();
        let result = retry(&RetryPolicy::VAULT, &stats, "e", "op", call).await;
        assert_eq!(result, Err(Answer(Failure::Throttled)));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!((stats.throttled_count(), stats.retries_count()), (3, 2));
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(3), "{waited:?}");
        let (call, calls) = scripted(vec![Failure::Unavailable]);
        assert_eq!(
            retry(&RetryPolicy::NONE, &stats, "e", "op", call).await,
            Err(Answer(Failure::Unavailable))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// Throttled, with the backend's `Retry-After`.
    #[derive(Debug, PartialEq)]
    struct SlowDown(Duration);

    impl Classified for SlowDown {
        fn failure(&self) -> Failure {
            Failure::Throttled
        }

        fn retry_after(&self) -> Option<Duration> {
            Some(self.0)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_waited_out_by_every_caller_of_the_endpoint() {
        let stats =
            BackendStats::default().with_budget(crate::Budget::new(100.0, 10)).provider("vault");
        let calls = std::sync::Arc::new(AtomicU32::new(0));
        let counted = calls.clone();
        let call = move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            std::future::ready(if n == 0 { Err(SlowDown(Duration::from_secs(5))) } else { Ok(n) })
        };
        let started = tokio::time::Instant::now();
        let policy = RetryPolicy { jitter: (1.0, 1.0), ..RetryPolicy::VAULT };
        let first = retry(&policy, &stats, "vault:8200", "read", call);
        // Another volume's call to the same endpoint, once the answer is in.
        let other = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            stats.admit("vault:8200").await;
            started.elapsed()
        };
        let (result, other_at) = futures::future::join(first, other).await;
        assert_eq!(result, Ok(1));
        assert_eq!(started.elapsed(), Duration::from_secs(5), "the retry waited out Retry-After");
        assert_eq!(other_at, Duration::from_secs(5), "and so did everyone else");
        assert_eq!(stats.queued_count(), 1, "the other call waited (the retry slept it out)");
        stats.admit("elsewhere:8200").await;
        assert_eq!(stats.queued_count(), 1, "another endpoint is not held");
    }

    /// An absurd `Retry-After` (here `u64::MAX` seconds) holds the retry
    /// for [`crate::budget::MAX_PAUSE`], no longer, and overflows nothing.
    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_up_to_a_minute() {
        let stats =
            BackendStats::default().with_budget(crate::Budget::new(100.0, 10)).provider("vault");
        let calls = std::sync::Arc::new(AtomicU32::new(0));
        let counted = calls.clone();
        let call = move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            std::future::ready(if n == 0 { Err(SlowDown(Duration::MAX)) } else { Ok(n) })
        };
        let started = tokio::time::Instant::now();
        let policy = RetryPolicy { jitter: (1.0, 1.0), ..RetryPolicy::VAULT };
        assert_eq!(retry(&policy, &stats, "vault:8200", "read", call).await, Ok(1));
        assert_eq!(started.elapsed(), crate::budget::MAX_PAUSE);
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let policy = RetryPolicy { jitter: (1.0, 1.0), ..RetryPolicy::AWS_STANDARD };
        let delays: Vec<u64> = (1..=7).map(|n| policy.delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 20, 20]);
    }
}
