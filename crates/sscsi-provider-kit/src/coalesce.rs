//! Identity-scoped request coalescing: identical reads share one backend
//! call while it is in flight, and its answer serves identical reads that
//! start afterwards for as long as each reader accepts (its `fresh`
//! argument, [`sscsi_core::MountRequest::reuse`]): a second on a first
//! mount, so a burst of pods is one call per object; the rotation interval
//! on a refresh, so a rotation pass over many volumes checks each object
//! once per interval; nothing on a forced refresh.
//!
//! The key is the caller's: it must hold the identity the read is made
//! with (and every parameter of the read), never only the object, so that
//! no pod is answered with what another identity read.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::time::Instant;

use crate::stats::CallStats;

/// How long a finished read answers identical first mounts.
pub const WINDOW: Duration = sscsi_core::BURST_WINDOW;

type SharedRead<T> = Shared<BoxFuture<'static, T>>;

struct Entry<T> {
    generation: u64,
    call: SharedRead<T>,
    /// When the call finished; `None` while it is in flight.
    done: Option<Instant>,
}

pub struct Coalescer<T> {
    calls: Mutex<HashMap<String, Entry<T>>>,
    next: AtomicU64,
    /// The longest `fresh` asked for so far, in ms: answers older than that
    /// serve nobody and are dropped.
    retain_ms: AtomicU64,
    /// Sweep once the map holds this many keys (then twice what is left),
    /// so a pass over many keys does not scan the map for every new one.
    sweep_at: AtomicUsize,
    /// Where reads answered by another caller's call are counted.
    stats: CallStats,
}

/// The fewest keys worth a sweep.
const SWEEP_MIN: usize = 64;

impl<T> std::fmt::Debug for Coalescer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("retain_ms", &self.retain_ms.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<T: Clone + Send + Sync + 'static> Default for Coalescer<T> {
    fn default() -> Self {
        Self {
            calls: Mutex::default(),
            next: AtomicU64::new(0),
            retain_ms: AtomicU64::new(0),
            sweep_at: AtomicUsize::new(SWEEP_MIN),
            stats: CallStats::default(),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Coalescer<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts in `stats` each read that another caller's call answered.
    pub fn counted_in(mut self, stats: CallStats) -> Self {
        self.stats = stats;
        self
    }

    /// The answer of the read `key`: `read()` runs unless an identical read
    /// is in flight or finished less than `fresh` ago. The flag says whether
    /// this call ran it. Runs on a tokio runtime (its clock).
    pub async fn read<F, Fut>(self: &Arc<Self>, key: String, fresh: Duration, read: F) -> (T, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        self.retain_ms.fetch_max(millis(fresh), Ordering::Relaxed);
        let (call, started) = {
            let mut calls = self.calls.lock().expect("coalescer lock");
            let reusable = calls.get(&key).filter(|e| e.done.is_none_or(|at| at.elapsed() < fresh));
            match reusable {
                Some(entry) => (entry.call.clone(), false),
                None => {
                    if calls.len() >= self.sweep_at.load(Ordering::Relaxed) {
                        self.sweep(&mut calls);
                        self.sweep_at.store((2 * calls.len()).max(SWEEP_MIN), Ordering::Relaxed);
                    }
                    let generation = self.next.fetch_add(1, Ordering::Relaxed);
                    // The read marks its own end, so an answer ages even when
                    // the caller that started it gave up (a cancelled RPC)
                    // and another reader polled it to the end.
                    let (this, finished) = (Arc::downgrade(self), key.clone());
                    let read = read();
                    let call = async move {
                        let answer = read.await;
                        finish(&this, &finished, generation);
                        answer
                    }
                    .boxed()
                    .shared();
                    calls.insert(key, Entry { generation, call: call.clone(), done: None });
                    (call, true)
                }
            }
        };
        if !started {
            self.stats.coalesced();
        }
        (call.await, started)
    }

    /// Drops the answers no reader would take any more.
    fn sweep(&self, calls: &mut HashMap<String, Entry<T>>) {
        let retain = Duration::from_millis(self.retain_ms.load(Ordering::Relaxed));
        calls.retain(|_, e| e.done.is_none_or(|at| at.elapsed() < retain));
    }

    /// Keys remembered now (in flight, or answered within the longest
    /// freshness asked for).
    pub fn len(&self) -> usize {
        let mut calls = self.calls.lock().expect("coalescer lock");
        self.sweep(&mut calls);
        calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Marks read `generation` of `key` answered now, unless a newer read
/// replaced it.
fn finish<T>(coalescer: &Weak<Coalescer<T>>, key: &str, generation: u64) {
    let Some(coalescer) = coalescer.upgrade() else { return };
    let mut calls = coalescer.calls.lock().expect("coalescer lock");
    if let Some(entry) = calls.get_mut(key).filter(|e| e.generation == generation) {
        entry.done = Some(Instant::now());
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
        let coalescer = Arc::new(Coalescer::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let reads = (0..10).map(|i| {
            let (coalescer, calls) = (coalescer.clone(), calls.clone());
            async move { coalescer.read("id\nobj".into(), WINDOW, || counted(&calls, i)).await }
        });
        let answers = futures::future::join_all(reads).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(answers.iter().all(|(a, _)| *a == 0), "every reader gets the first answer");
        assert_eq!(answers.iter().filter(|(_, started)| *started).count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_serves_the_window_then_is_forgotten() {
        let coalescer = Arc::new(Coalescer::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let second = Duration::from_secs(1);
        assert_eq!(coalescer.read("k".into(), second, || counted(&calls, 1)).await, (1, true));
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(coalescer.read("k".into(), second, || counted(&calls, 2)).await, (1, false));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(coalescer.is_empty());
        assert_eq!(coalescer.read("k".into(), second, || counted(&calls, 3)).await, (3, true));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// A rotation check accepts an answer as old as the interval; a first
    /// mount only a second's; a forced refresh none, but it still joins a
    /// read in flight.
    #[tokio::test(start_paused = true)]
    async fn each_reader_says_how_old_an_answer_it_takes() {
        let coalescer = Arc::new(Coalescer::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let interval = Duration::from_secs(120);
        assert_eq!(coalescer.read("k".into(), interval, || counted(&calls, 1)).await, (1, true));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(coalescer.read("k".into(), interval, || counted(&calls, 2)).await, (1, false));
        assert_eq!(coalescer.read("k".into(), WINDOW, || counted(&calls, 3)).await, (3, true));
        // The first mount's answer replaced the entry; a rotation check takes it.
        assert_eq!(coalescer.read("k".into(), interval, || counted(&calls, 4)).await, (3, false));
        let (forced, in_flight) = futures::join!(
            coalescer.read("k".into(), Duration::ZERO, || counted(&calls, 5)),
            coalescer.read("k".into(), Duration::ZERO, || counted(&calls, 6)),
        );
        assert_eq!((forced, in_flight), ((5, true), (5, false)));
        tokio::time::sleep(interval).await;
        assert!(coalescer.is_empty(), "nothing outlives the longest freshness asked for");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    /// kubelet cancels a publish at its deadline: the read it started runs
    /// on for whoever joins it, and its answer ages as any other.
    #[tokio::test(start_paused = true)]
    async fn a_read_whose_starter_gave_up_still_ages() {
        let coalescer = Arc::new(Coalescer::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let started = coalescer.read("k".into(), WINDOW, || counted(&calls, 1));
        let gave_up = tokio::time::timeout(Duration::from_millis(10), started).await;
        assert!(gave_up.is_err(), "the starter was cancelled mid-read");
        assert_eq!(coalescer.read("k".into(), WINDOW, || counted(&calls, 2)).await, (1, false));
        tokio::time::sleep(WINDOW).await;
        assert_eq!(coalescer.read("k".into(), WINDOW, || counted(&calls, 3)).await, (3, true));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// Many keys: old answers are swept as new keys come, not kept forever.
    #[tokio::test(start_paused = true)]
    async fn old_answers_are_swept_as_keys_come() {
        let coalescer = Arc::new(Coalescer::new());
        let calls = Arc::new(AtomicUsize::new(0));
        for i in 0..1000 {
            coalescer.read(format!("k{i}"), WINDOW, || counted(&calls, i)).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A key every 150 ms, each answer good for a second: of 1,000 keys
        // the last 6 are live, and far fewer than 1,000 are held.
        let held = coalescer.calls.lock().unwrap().len();
        assert!(held <= 2 * SWEEP_MIN, "{held} keys held");
        assert_eq!(coalescer.len(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn different_keys_never_share() {
        let coalescer = Arc::new(Coalescer::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let (a, b) = futures::join!(
            coalescer.read("identity-a\nobj".into(), WINDOW, || counted(&calls, 1)),
            coalescer.read("identity-b\nobj".into(), WINDOW, || counted(&calls, 2)),
        );
        assert_eq!((a, b), ((1, true), (2, true)));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
