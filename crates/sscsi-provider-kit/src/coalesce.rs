//! Identity-scoped request coalescing: identical reads share one backend
//! call while it is in flight, and its answer serves identical reads that
//! start within a short window after it, so a burst of pods (or a rotation
//! pass over many volumes) is one call per object however the starts spread.
//!
//! The key is the caller's: it must hold the identity the read is made
//! with (and every parameter of the read), never only the object, so that
//! no pod is answered with what another identity read.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

/// How long a finished read keeps answering identical reads: short enough
/// that a change is seen by the next rotation, long enough to span a burst.
pub const WINDOW: Duration = Duration::from_secs(1);

type SharedRead<T> = Shared<BoxFuture<'static, T>>;

pub struct Coalescer<T> {
    /// Key → (generation, the shared read).
    calls: Mutex<HashMap<String, (u64, SharedRead<T>)>>,
    next: AtomicU64,
    window: Duration,
}

impl<T> std::fmt::Debug for Coalescer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer").field("window", &self.window).finish_non_exhaustive()
    }
}

impl<T: Clone + Send + Sync + 'static> Default for Coalescer<T> {
    fn default() -> Self {
        Self::new(WINDOW)
    }
}

impl<T: Clone + Send + Sync + 'static> Coalescer<T> {
    pub fn new(window: Duration) -> Self {
        Self { calls: Mutex::default(), next: AtomicU64::new(0), window }
    }

    /// The answer of the read `key`: `read()` runs unless an identical read
    /// is in flight or answered within the window. The flag says whether
    /// this call ran it. Runs on a tokio runtime (the window is a timer).
    pub async fn read<F, Fut>(self: &Arc<Self>, key: String, read: F) -> (T, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (generation, call, started) = {
            let mut calls = self.calls.lock().expect("coalescer lock");
            match calls.get(&key) {
                Some((generation, call)) => (*generation, call.clone(), false),
                None => {
                    let generation = self.next.fetch_add(1, Ordering::Relaxed);
                    let call = read().boxed().shared();
                    calls.insert(key.clone(), (generation, call.clone()));
                    (generation, call, true)
                }
            }
        };
        let answer = call.await;
        if started {
            // Keep the answer for the window, then forget it (unless replaced).
            let this = Arc::clone(self);
            tokio::spawn(async move {
                tokio::time::sleep(this.window).await;
                let mut calls = this.calls.lock().expect("coalescer lock");
                if calls.get(&key).is_some_and(|(g, _)| *g == generation) {
                    calls.remove(&key);
                }
            });
        }
        (answer, started)
    }

    /// Keys remembered now (in flight or within their window).
    pub fn len(&self) -> usize {
        self.calls.lock().expect("coalescer lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn counted(calls: &Arc<AtomicUsize>, answer: u32) -> impl Future<Output = u32> + use<> {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            answer
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_identical_reads_share_one_call() {
        let coalescer = Arc::new(Coalescer::new(WINDOW));
        let calls = Arc::new(AtomicUsize::new(0));
        let reads = (0..10).map(|i| {
            let (coalescer, calls) = (coalescer.clone(), calls.clone());
            async move { coalescer.read("id\nobj".into(), || counted(&calls, i)).await }
        });
        let answers = futures::future::join_all(reads).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(answers.iter().all(|(a, _)| *a == 0), "every reader gets the first answer");
        assert_eq!(answers.iter().filter(|(_, started)| *started).count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_serves_the_window_then_is_forgotten() {
        let coalescer = Arc::new(Coalescer::new(Duration::from_secs(1)));
        let calls = Arc::new(AtomicUsize::new(0));
        assert_eq!(coalescer.read("k".into(), || counted(&calls, 1)).await, (1, true));
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(coalescer.read("k".into(), || counted(&calls, 2)).await, (1, false));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(coalescer.is_empty());
        assert_eq!(coalescer.read("k".into(), || counted(&calls, 3)).await, (3, true));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn different_keys_never_share() {
        let coalescer = Arc::new(Coalescer::new(WINDOW));
        let calls = Arc::new(AtomicUsize::new(0));
        let (a, b) = futures::join!(
            coalescer.read("identity-a\nobj".into(), || counted(&calls, 1)),
            coalescer.read("identity-b\nobj".into(), || counted(&calls, 2)),
        );
        assert_eq!((a, b), ((1, true), (2, true)));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
