//! A node-wide budget of calls per backend endpoint: a token bucket per
//! endpoint (so many calls a second, so many at once), shared by every
//! volume, refresh and SecretSync of the process, so a burst of pods or a
//! rotation pass can never hammer a backend; and when the backend says how
//! long to wait (`Retry-After`), nobody calls that endpoint before then.
//! A call over the budget waits its turn (a reservation: the bucket may go
//! negative, and each waiter sleeps until its own token is due).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The slowest budget: below it a queue of waiters would wait for years.
pub const MIN_CALLS_PER_SECOND: f64 = 0.01;

/// The longest a backend's `Retry-After` holds callers: a misbehaving or
/// hostile server cannot freeze every mount of the node for longer (an
/// answer of `u64::MAX` seconds would otherwise overflow the clock).
pub const MAX_PAUSE: Duration = Duration::from_secs(60);

/// Calls a second and burst per endpoint.
#[derive(Debug)]
pub struct Budget {
    per_second: f64,
    burst: f64,
    endpoints: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    /// Tokens at `at`; negative: calls already waiting for theirs.
    tokens: f64,
    at: Instant,
    /// The backend asked for no call before this.
    paused_until: Option<Instant>,
}

impl Budget {
    /// `per_second` calls a second to each endpoint (at least
    /// [`MIN_CALLS_PER_SECOND`]), `burst` at once (at least 1).
    pub fn new(per_second: f64, burst: u32) -> Self {
        assert!(per_second >= MIN_CALLS_PER_SECOND, "a budget needs a rate");
        Self { per_second, burst: f64::from(burst.max(1)), endpoints: Mutex::default() }
    }

    /// Waits until a call to `endpoint` is within the budget; whether it had
    /// to wait (the call was queued).
    pub async fn acquire(&self, endpoint: &str) -> bool {
        let wait = {
            let mut endpoints = self.endpoints.lock().expect("budget lock");
            let now = Instant::now();
            let bucket = endpoints.entry(endpoint.to_owned()).or_insert(Bucket {
                tokens: self.burst,
                at: now,
                paused_until: None,
            });
            let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * self.per_second;
            bucket.tokens = (bucket.tokens + refill).min(self.burst) - 1.0;
            bucket.at = now;
            let deficit = if bucket.tokens < 0.0 {
                Duration::from_secs_f64(-bucket.tokens / self.per_second)
            } else {
                Duration::ZERO
            };
            let paused = bucket.paused_until.map(|until| until.saturating_duration_since(now));
            deficit + paused.unwrap_or_default()
        };
        if wait.is_zero() {
            return false;
        }
        tokio::time::sleep(wait).await;
        true
    }

    /// The backend said to wait `after` (`Retry-After`, at most
    /// [`MAX_PAUSE`]): no call to `endpoint` starts before then, whoever
    /// makes it.
    pub fn pause(&self, endpoint: &str, after: Duration) {
        let mut endpoints = self.endpoints.lock().expect("budget lock");
        let now = Instant::now();
        let until = now + after.min(MAX_PAUSE);
        let bucket = endpoints.entry(endpoint.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
            paused_until: None,
        });
        bucket.paused_until = Some(bucket.paused_until.map_or(until, |u| u.max(until)));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_waits_its_turn_per_endpoint() {
        let budget = Arc::new(Budget::new(10.0, 5));
        let started = Instant::now();
        let calls = (0..25).map(|_| {
            let budget = budget.clone();
            async move { (budget.acquire("vault:8200").await, started.elapsed()) }
        });
        let answers = futures::future::join_all(calls).await;
        let queued = answers.iter().filter(|(queued, _)| *queued).count();
        assert_eq!(queued, 20, "the burst goes at once, the rest waits");
        let last = answers.iter().map(|(_, at)| *at).max().unwrap();
        assert_eq!(last, Duration::from_secs(2), "20 more at 10 a second");
        // In any second, no more than the burst and the rate.
        for window in 0..2 {
            let from = Duration::from_secs(window);
            let within =
                answers.iter().filter(|(_, at)| *at >= from && *at < from + Duration::from_secs(1));
            assert!(within.count() <= 15, "window {window}");
        }
        // Another endpoint has its own bucket.
        let other = Instant::now();
        assert!(!budget.acquire("other:8200").await);
        assert_eq!(other.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_holds_every_caller_of_the_endpoint() {
        let budget = Budget::new(100.0, 10);
        budget.pause("kv", Duration::from_secs(3));
        let started = Instant::now();
        assert!(budget.acquire("kv").await);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert!(!budget.acquire("kv").await, "the pause is over");
        assert!(!budget.acquire("elsewhere").await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_holds_for_a_minute_at_most() {
        let budget = Budget::new(100.0, 10);
        budget.pause("kv", Duration::MAX);
        let started = Instant::now();
        assert!(budget.acquire("kv").await);
        assert_eq!(started.elapsed(), MAX_PAUSE);
    }
}
