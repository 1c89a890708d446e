//! Writes to the API server that a publish reports but need not wait for:
//! SecretProviderClassPodStatus objects and Events. A publish hands them over
//! and returns; one task writes them in order and retries a failed write
//! with backoff until it lands, so none is lost to a slow or briefly failing
//! API server, and none holds up a pod's start.
//!
//! - Statuses are latest-wins per object: a newer status for the same pod and
//!   class replaces one not yet written (the older one would only be
//!   overwritten).
//! - Events keep their order, at most [`MAX_EVENTS`] waiting; past that the
//!   oldest is dropped with a warning rather than memory growing without end
//!   while the API server is down.
//! - A write the API server refuses for good (400, 404, 422: a namespace
//!   gone, an invalid object) is dropped with a warning; anything else
//!   (5xx, 429, 403 until RBAC is fixed, a transport error) is retried.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, Recorder};
use sscsi_api::SecretProviderClassPodStatus;
use sscsi_node::Backoff;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// Events waiting while the API server does not answer.
pub const MAX_EVENTS: usize = 1024;

/// A status to write: `first` when the volume was just mounted (no object is
/// expected yet, so the write starts with a create).
#[derive(Debug, Clone)]
struct Status {
    desired: SecretProviderClassPodStatus,
    first: bool,
    attempts: u32,
    not_before: Instant,
}

/// kube's `Event` has no Debug; none of this is printed whole.
struct PendingEvent {
    event: Event,
    reference: ObjectReference,
    attempts: u32,
    not_before: Instant,
}

#[derive(Default)]
struct Queue {
    /// By (namespace, name).
    statuses: BTreeMap<(String, String), Status>,
    events: VecDeque<PendingEvent>,
    /// A write taken off the queue and not yet done.
    busy: bool,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.statuses.is_empty() && self.events.is_empty() && !self.busy
    }
}

enum Work {
    Status((String, String), Status),
    Event(PendingEvent),
}

#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    recorder: Recorder,
    backoff: Backoff,
    queue: Mutex<Queue>,
    wake: Notify,
    /// True while nothing waits and nothing is being written.
    settled: watch::Sender<bool>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queue = self.inner.queue.lock().expect("outbox");
        f.debug_struct("Outbox")
            .field("statuses", &queue.statuses.len())
            .field("events", &queue.events.len())
            .finish()
    }
}

impl Outbox {
    /// Starts the writer task on the current runtime; it runs as long as the
    /// runtime does.
    pub fn start(client: Client, recorder: Recorder, backoff: Backoff) -> Self {
        let inner = Arc::new(Inner {
            client,
            recorder,
            backoff,
            queue: Mutex::default(),
            wake: Notify::new(),
            settled: watch::Sender::new(true),
        });
        tokio::spawn(run(inner.clone()));
        Self { inner }
    }

    pub fn status(&self, desired: SecretProviderClassPodStatus, first: bool) {
        let key = (
            desired.metadata.namespace.clone().unwrap_or_default(),
            desired.metadata.name.clone().unwrap_or_default(),
        );
        self.push(|queue| {
            // A newer status replaces an unwritten one; it keeps `first` only
            // if the older one had not created the object either.
            let first = first && queue.statuses.get(&key).is_none_or(|s| s.first);
            let status = Status { desired, first, attempts: 0, not_before: Instant::now() };
            queue.statuses.insert(key, status);
        });
    }

    pub fn event(&self, event: Event, reference: ObjectReference) {
        self.push(|queue| {
            if queue.events.len() >= MAX_EVENTS
                && let Some(dropped) = queue.events.pop_front()
            {
                tracing::warn!(
                    reason = dropped.event.reason,
                    "event queue full; dropped the oldest"
                );
            }
            let not_before = Instant::now();
            queue.events.push_back(PendingEvent { event, reference, attempts: 0, not_before });
        });
    }

    fn push(&self, add: impl FnOnce(&mut Queue)) {
        add(&mut self.inner.queue.lock().expect("outbox"));
        self.inner.settled.send_replace(false);
        self.inner.wake.notify_one();
    }

    /// Resolves once everything handed over so far is written (or dropped
    /// for good): for tests, and for shutdown to wait on within its grace.
    pub async fn settled(&self) {
        let mut settled = self.inner.settled.subscribe();
        let _ = settled.wait_for(|s| *s).await;
    }
}

async fn run(this: Arc<Inner>) {
    loop {
        let next = {
            let mut queue = this.queue.lock().expect("outbox");
            take_ready(&mut queue)
        };
        match next {
            Ok(work) => {
                let retry = this.write(work).await;
                let mut queue = this.queue.lock().expect("outbox");
                queue.busy = false;
                if let Some(retry) = retry {
                    match retry {
                        // A newer status queued meanwhile wins over the retry.
                        Work::Status(key, status) => {
                            queue.statuses.entry(key).or_insert(status);
                        }
                        Work::Event(event) => queue.events.push_front(event),
                    }
                }
                if queue.is_empty() {
                    this.settled.send_replace(true);
                }
            }
            Err(wait_until) => {
                let wake = this.wake.notified();
                match wait_until {
                    Some(at) => {
                        tokio::select! {
                            () = wake => {}
                            () = tokio::time::sleep_until(at) => {}
                        }
                    }
                    None => wake.await,
                }
            }
        }
    }
}

/// The first write whose time has come (statuses first: a pod's status is
/// what other components read), or when the next one is due.
fn take_ready(queue: &mut Queue) -> Result<Work, Option<Instant>> {
    let now = Instant::now();
    let ready_status =
        queue.statuses.iter().find(|(_, s)| s.not_before <= now).map(|(k, _)| k.clone());
    if let Some(key) = ready_status {
        let status = queue.statuses.remove(&key).expect("present");
        queue.busy = true;
        return Ok(Work::Status(key, status));
    }
    if queue.events.front().is_some_and(|e| e.not_before <= now) {
        queue.busy = true;
        return Ok(Work::Event(queue.events.pop_front().expect("present")));
    }
    let next_status = queue.statuses.values().map(|s| s.not_before).min();
    let next_event = queue.events.front().map(|e| e.not_before);
    Err(next_status.into_iter().chain(next_event).min())
}

impl Inner {
    /// Writes `work`; gives it back, scheduled, when it should be retried.
    async fn write(&self, work: Work) -> Option<Work> {
        match work {
            Work::Status(key, mut status) => match self.write_status(&status).await {
                Ok(()) => None,
                Err(e) if permanent(&e) => {
                    tracing::warn!(namespace = key.0, name = key.1, error = %e, "SecretProviderClassPodStatus refused; not retried");
                    None
                }
                Err(e) => {
                    status.attempts += 1;
                    let delay = self.backoff.delay(status.attempts);
                    tracing::warn!(namespace = key.0, name = key.1, error = %e, attempt = status.attempts, retry_in = ?delay, "could not write SecretProviderClassPodStatus; will retry");
                    status.not_before = Instant::now() + delay;
                    Some(Work::Status(key, status))
                }
            },
            Work::Event(mut pending) => {
                match self.recorder.publish(&pending.event, &pending.reference).await {
                    Ok(()) => None,
                    Err(e) if permanent(&e) => {
                        tracing::warn!(reason = pending.event.reason, error = %e, "event refused; not retried");
                        None
                    }
                    Err(e) => {
                        pending.attempts += 1;
                        let delay = self.backoff.delay(pending.attempts);
                        tracing::warn!(reason = pending.event.reason, error = %e, attempt = pending.attempts, retry_in = ?delay, "could not record an event; will retry");
                        pending.not_before = Instant::now() + delay;
                        Some(Work::Event(pending))
                    }
                }
            }
        }
    }

    /// Creates the object, or brings an existing one up to date; writes
    /// nothing when it already says what is mounted. A first mount starts
    /// with the create (one round trip when, as usual, there is none yet).
    async fn write_status(&self, status: &Status) -> Result<(), kube::Error> {
        let desired = &status.desired;
        let namespace = desired.metadata.namespace.as_deref().unwrap_or_default();
        let name = desired.metadata.name.as_deref().unwrap_or_default();
        let api: Api<SecretProviderClassPodStatus> =
            Api::namespaced(self.client.clone(), namespace);
        let mut try_create = status.first;
        // One retry covers a create racing another, or a stale update.
        for _ in 0..3 {
            let result = if try_create {
                api.create(&PostParams::default(), desired).await.map(drop)
            } else {
                match api.get_opt(name).await? {
                    None => api.create(&PostParams::default(), desired).await.map(drop),
                    Some(current) if super::observer::same(&current, desired) => return Ok(()),
                    Some(current) => {
                        let mut next = desired.clone();
                        next.metadata.resource_version = current.metadata.resource_version;
                        api.replace(name, &PostParams::default(), &next).await.map(drop)
                    }
                }
            };
            match result {
                Err(kube::Error::Api(e)) if e.code == 409 => try_create = false,
                other => return other,
            }
        }
        Ok(())
    }
}

/// Whether the API server will refuse this write however often it is sent.
fn permanent(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(e) if matches!(e.code, 400 | 404 | 405 | 410 | 413 | 415 | 422))
}
