//! Credentials per identity (AWS's STS credentials, Vault tokens, Google
//! access tokens): one exchange at a time per identity, so concurrent
//! mounts wait for it instead of making their own; the answer reused until
//! the provider's refresh rule says it is due, or the backend refused it.
//! A failed exchange is not remembered.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::stats::CallStats;

/// When a credential with a known lifetime is exchanged again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RefreshRule {
    /// This long before it expires (AWS: 5 minutes, Google: 5 minutes).
    BeforeExpiry(Duration),
    /// Once this share of its life is over (Vault: two thirds).
    AfterShare(f64),
}

impl RefreshRule {
    fn due(self, lifetime: Duration) -> Duration {
        match self {
            Self::BeforeExpiry(margin) => lifetime.saturating_sub(margin),
            Self::AfterShare(share) => lifetime.mul_f64(share.clamp(0.0, 1.0)),
        }
    }
}

struct Held<V> {
    value: V,
    /// `None`: the credential does not expire.
    due: Option<Instant>,
}

type Slot<V> = Arc<tokio::sync::Mutex<Option<Held<V>>>>;

pub struct IdentityCache<V> {
    rule: RefreshRule,
    slots: Mutex<HashMap<String, Slot<V>>>,
    /// Where exchanges and reuses are counted (for `/metrics` once
    /// [`IdentityCache::counted_in`] a provider's stats).
    stats: CallStats,
}

impl<V> std::fmt::Debug for IdentityCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityCache")
            .field("rule", &self.rule)
            .field("exchanges", &self.stats.credential_counts().0)
            .finish_non_exhaustive()
    }
}

impl<V: Clone> IdentityCache<V> {
    pub fn new(rule: RefreshRule) -> Self {
        Self { rule, slots: Mutex::default(), stats: CallStats::default() }
    }

    /// Counts each exchange and each reuse in `stats`.
    pub fn counted_in(mut self, stats: CallStats) -> Self {
        self.stats = stats;
        self
    }

    /// Where this cache counts: a provider times its exchange calls there too.
    pub fn stats(&self) -> &CallStats {
        &self.stats
    }

    /// Exchanges made so far.
    pub fn exchanges(&self) -> u64 {
        self.stats.credential_counts().0
    }

    /// The credential of identity `key`: the held one unless it is due or
    /// `refused` says the backend turned it down, else what `exchange`
    /// returns with its lifetime (`None`: it does not expire). The flag
    /// says whether this call exchanged.
    pub async fn get<E, F, Fut>(
        &self,
        key: &str,
        refused: impl Fn(&V) -> bool,
        exchange: F,
    ) -> Result<(V, bool), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(V, Option<Duration>), E>>,
    {
        let slot = self
            .slots
            .lock()
            .expect("identity cache lock")
            .entry(key.to_owned())
            .or_default()
            .clone();
        let mut held = slot.lock().await;
        if let Some(h) = held.as_ref() {
            let fresh = h.due.is_none_or(|at| Instant::now() < at);
            if fresh && !refused(&h.value) {
                self.stats.credential(false);
                return Ok((h.value.clone(), false));
            }
        }
        *held = None;
        let (value, lifetime) = exchange().await?;
        self.stats.credential(true);
        let due = lifetime.map(|l| Instant::now() + self.rule.due(l));
        *held = Some(Held { value: value.clone(), due });
        Ok((value, true))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    type Exchange =
        std::pin::Pin<Box<dyn Future<Output = Result<(u32, Option<Duration>), String>> + Send>>;

    /// An exchange that counts itself, takes 50 ms and lives `lifetime`.
    fn exchange(calls: &Arc<AtomicU32>, lifetime: Option<Duration>) -> impl FnOnce() -> Exchange {
        let calls = calls.clone();
        move || {
            Box::pin(async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok((n, lifetime))
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_of_one_identity_wait_for_one_exchange() {
        let cache =
            Arc::new(IdentityCache::new(RefreshRule::BeforeExpiry(Duration::from_secs(300))));
        let calls = Arc::new(AtomicU32::new(0));
        let gets = (0..10).map(|_| {
            let (cache, calls) = (cache.clone(), calls.clone());
            async move {
                cache.get("a", |_| false, exchange(&calls, Some(Duration::from_secs(3600)))).await
            }
        });
        let answers = futures::future::join_all(gets).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(answers.iter().all(|a| a.as_ref().unwrap().0 == 1));
        assert_eq!(answers.iter().filter(|a| a.as_ref().unwrap().1).count(), 1);
        let other = cache.get("b", |_| false, exchange(&calls, None)).await.unwrap();
        assert_eq!(other, (2, true), "another identity, its own exchange");
        assert_eq!(cache.exchanges(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_refresh_rule_decides_when_to_exchange_again() {
        let calls = Arc::new(AtomicU32::new(0));
        let hour = Some(Duration::from_secs(3600));
        let aws = IdentityCache::new(RefreshRule::BeforeExpiry(Duration::from_secs(300)));
        assert_eq!(aws.get("k", |_| false, exchange(&calls, hour)).await, Ok((1, true)));
        tokio::time::sleep(Duration::from_secs(3290)).await;
        assert_eq!(aws.get("k", |_| false, exchange(&calls, hour)).await, Ok((1, false)));
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(
            aws.get("k", |_| false, exchange(&calls, hour)).await,
            Ok((2, true)),
            "5 min before expiry"
        );

        let vault = IdentityCache::new(RefreshRule::AfterShare(2.0 / 3.0));
        assert_eq!(vault.get("k", |_| false, exchange(&calls, hour)).await, Ok((3, true)));
        tokio::time::sleep(Duration::from_secs(2390)).await;
        assert_eq!(vault.get("k", |_| false, exchange(&calls, hour)).await, Ok((3, false)));
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(
            vault.get("k", |_| false, exchange(&calls, hour)).await,
            Ok((4, true)),
            "two thirds of an hour"
        );
        // No lifetime: held until refused.
        assert_eq!(vault.get("n", |_| false, exchange(&calls, None)).await, Ok((5, true)));
        tokio::time::sleep(Duration::from_secs(86_400)).await;
        assert_eq!(vault.get("n", |_| false, exchange(&calls, None)).await, Ok((5, false)));
        assert_eq!(
            vault.get("n", |v| *v == 5, exchange(&calls, None)).await,
            Ok((6, true)),
            "refused"
        );
        assert_eq!(vault.get("n", |v| *v == 5, exchange(&calls, None)).await, Ok((6, false)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_exchange_is_not_remembered() {
        let cache = IdentityCache::<u32>::new(RefreshRule::BeforeExpiry(Duration::ZERO));
        let failed = cache
            .get("k", |_| false, || async { Err::<(u32, Option<Duration>), _>("denied") })
            .await;
        assert_eq!(failed, Err("denied"));
        let calls = Arc::new(AtomicU32::new(0));
        assert_eq!(cache.get("k", |_| false, exchange(&calls, None)).await, Ok((1, true)));
        assert_eq!(cache.exchanges(), 1, "only successful exchanges count");
    }
}
