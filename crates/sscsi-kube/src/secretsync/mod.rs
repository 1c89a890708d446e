//! The SecretSync controller (`sscsi controller`): a Kubernetes Secret per
//! SecretSync, fetched through the engine with the identity of the
//! SecretSync's service account, with no pod involved. Upstream's
//! kubernetes-sigs/secrets-store-sync-controller API and behaviour, plus
//! rotation:
//!
//! - the Secret has the SecretSync's name and namespace, its labels and
//!   annotations plus the label `secrets-store.sync.x-k8s.io: ""`, and the
//!   SecretSync as its one owner (deleted with it by the garbage collector);
//! - it is written by server-side apply under [`FIELD_MANAGER`], forcing
//!   ownership (what the API docs ask of a controller for the objects it
//!   owns; it also takes over Secrets the upstream controller wrote);
//! - `status.syncHash` is upstream's hash; a sync whose hash equals the
//!   recorded one, with no failed condition, writes nothing; a Secret whose
//!   content did not change is not applied again even when the hash did;
//! - every `rotation_poll_interval` each SecretSync is fetched again,
//!   version-aware through the engine (`Purpose::Rotation`): providers check
//!   unchanged objects cheaply, and SecretSyncs of one identity share reads
//!   and credentials; a `forceSynchronization` change fetches at once
//!   (`Purpose::Forced`);
//! - a failure sets a False condition with the reason upstream documents and
//!   the error's text, sends a Warning event, backs off per SecretSync, and
//!   leaves the last good Secret in place.

mod hash;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, stream};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use sscsi_api::{Condition, SYNC_RESERVED_KEY, SecretProviderClass, SecretSync, SecretSyncStatus};
use sscsi_core::{ObjectVersion, PodInfo, SecretBytes, ServiceAccountToken};
use sscsi_engine::{Engine, Fetch, FetchError, Identity, MountedFiles, Purpose};
use sscsi_node::Backoff;
use sscsi_provider_kit::{IdentityCache, RefreshRule, request_token};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

pub use hash::{HashInput, sync_hash};

use crate::outbox::Outbox;
use crate::tls::tls_part;

/// The field manager of every Secret this controller applies.
pub const FIELD_MANAGER: &str = "sscsi-secretsync";
/// The reporting controller of its events.
const REPORTER: &str = "sscsi-secretsync";
/// Token lifetime, as upstream asks (its admission policy allows only this).
pub const TOKEN_SECONDS: i64 = 600;
const TLS_TYPE: &str = "kubernetes.io/tls";

pub const CONDITION_CREATE: &str = "Create";
pub const CONDITION_UPDATE: &str = "Update";

/// Why a sync failed, as the condition's reason (upstream's documented
/// reasons, plus the namespace policy the node also applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    ProviderError,
    InvalidClusterSecretLabelError,
    InvalidClusterSecretAnnotationError,
    UserInputValidationFailed,
    ControllerSpcError,
    ControllerInternalError,
    ValidatingAdmissionPolicyCheckFailed,
    UnknownError,
    SecretSyncNotAllowed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProviderError => "ProviderError",
            Self::InvalidClusterSecretLabelError => "InvalidClusterSecretLabelError",
            Self::InvalidClusterSecretAnnotationError => "InvalidClusterSecretAnnotationError",
            Self::UserInputValidationFailed => "UserInputValidationFailed",
            Self::ControllerSpcError => "ControllerSPCError",
            Self::ControllerInternalError => "ControllerInternalError",
            Self::ValidatingAdmissionPolicyCheckFailed => "ValidatingAdmissionPolicyCheckFailed",
            Self::UnknownError => "UnknownError",
            Self::SecretSyncNotAllowed => "SecretSyncNotAllowed",
        }
    }

    /// Upstream's sentence for this reason; the error's text follows it.
    fn sentence(self, create: bool) -> &'static str {
        match (self, create) {
            (Self::ProviderError, true) => "The secret create failed due to a provider error",
            (Self::ProviderError, false) => "The secret update failed due to a provider error",
            (Self::InvalidClusterSecretLabelError, true) => {
                "The secret create failed because a label reserved for the controller is applied on the secret"
            }
            (Self::InvalidClusterSecretLabelError, false) => {
                "The secret update failed because a label reserved for the controller is applied on the secret"
            }
            (Self::InvalidClusterSecretAnnotationError, true) => {
                "The secret create failed because an annotation reserved for the controller is applied on the secret"
            }
            (Self::InvalidClusterSecretAnnotationError, false) => {
                "The secret update failed because an annotation reserved for the controller is applied on the secret"
            }
            (Self::UserInputValidationFailed, _) => {
                "The secret update failed because the user input validation failed"
            }
            (Self::ControllerSpcError, _) => {
                "The secret update failed because the controller failed to get the secret provider class, or the SPC is misconfigured"
            }
            (Self::ControllerInternalError, _) => {
                "The secret update failed due to an internal error"
            }
            (Self::ValidatingAdmissionPolicyCheckFailed, _) => {
                "The secret update failed because the validating admission policy check failed"
            }
            (Self::UnknownError, _) => "Secret patch failed due to unknown error",
            (Self::SecretSyncNotAllowed, _) => {
                "The secret sync is not allowed in this namespace by the controller (--sync-allowed-namespaces)"
            }
        }
    }

    /// An API error that an admission policy denied, else `otherwise`.
    fn of_api_error(error: &kube::Error, otherwise: Self) -> Self {
        if error.to_string().to_ascii_lowercase().contains("validatingadmissionpolicy") {
            Self::ValidatingAdmissionPolicyCheckFailed
        } else {
            otherwise
        }
    }
}

/// One failed sync: the reason and what went wrong (no secret bytes, no token).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {detail}", reason.as_str())]
pub struct SyncFailure {
    pub reason: Reason,
    pub detail: String,
}

impl SyncFailure {
    fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }
}

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// How often every SecretSync is fetched again; zero turns rotation off.
    pub rotation_poll_interval: Duration,
    /// The audiences a token is requested for, one TokenRequest each (as
    /// kubelet does for the CSIDriver's `tokenRequests`).
    pub audiences: Vec<String>,
    /// Namespaces SecretSyncs are served in; all when `None`.
    pub allowed_namespaces: Option<BTreeSet<String>>,
    /// This controller's pod, passed to providers as upstream does.
    pub pod_name: String,
    pub pod_uid: String,
    /// Retries of a failed SecretSync.
    pub backoff: Backoff,
    /// SecretSyncs synced at once.
    pub concurrency: u16,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            rotation_poll_interval: Duration::from_secs(120),
            audiences: Vec::new(),
            allowed_namespaces: None,
            pod_name: String::new(),
            pod_uid: String::new(),
            backoff: Backoff { base: Duration::from_secs(5), cap: Duration::from_secs(300) },
            concurrency: 16,
        }
    }
}

/// What the controller has done, for tests, the bench and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Reconciles finished (success or failure).
    pub reconciles: u64,
    /// Reconciles that failed.
    pub failures: u64,
    /// Secrets applied.
    pub secret_writes: u64,
    /// SecretSync status writes.
    pub status_writes: u64,
    /// TokenRequests made.
    pub token_requests: u64,
    /// Provider calls made.
    pub fetches: u64,
}

/// The counters behind [`SyncStats`], exported as Prometheus counters too.
#[derive(Debug, Default)]
struct Counters {
    reconciles: Counter,
    failures: Counter,
    secret_writes: Counter,
    status_writes: Counter,
    token_requests: Counter,
    fetches: Counter,
}

impl Counters {
    fn register(&self, registry: &mut Registry) {
        let all = [
            (
                "sscsi_secretsync_syncs",
                "SecretSync syncs finished, failed or not",
                &self.reconciles,
            ),
            ("sscsi_secretsync_sync_failures", "SecretSync syncs that failed", &self.failures),
            (
                "sscsi_secretsync_secret_writes",
                "Secrets applied by the controller",
                &self.secret_writes,
            ),
            ("sscsi_secretsync_status_writes", "SecretSync status writes", &self.status_writes),
            (
                "sscsi_secretsync_token_requests",
                "TokenRequests made for SecretSyncs",
                &self.token_requests,
            ),
            ("sscsi_secretsync_fetches", "Provider fetches for SecretSyncs", &self.fetches),
        ];
        for (name, help, counter) in all {
            registry.register(name, help, counter.clone());
        }
    }
}

/// What is held of one SecretSync between syncs (memory only).
#[derive(Default)]
struct Held {
    uid: String,
    generation: i64,
    spc: (String, i64),
    force: String,
    versions: Vec<ObjectVersion>,
    files: BTreeMap<String, SecretBytes>,
    memo: hash::Memo,
    failures: u32,
}

struct Inner {
    client: Client,
    engine: Engine,
    config: ControllerConfig,
    spcs: Store<SecretProviderClass>,
    tokens: IdentityCache<ServiceAccountToken>,
    held: Mutex<HashMap<ObjectRef<SecretSync>, Held>>,
    outbox: Outbox,
    counters: Counters,
    stats: watch::Sender<SyncStats>,
}

/// The controller; cheap to clone.
#[derive(Clone)]
pub struct SecretSyncController {
    inner: Arc<Inner>,
    spc_writer: Arc<Mutex<Option<reflector::store::Writer<SecretProviderClass>>>>,
    rotate: Arc<Notify>,
}

impl std::fmt::Debug for SecretSyncController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSyncController").field("stats", &self.stats()).finish()
    }
}

impl SecretSyncController {
    pub fn new(client: Client, engine: Engine, config: ControllerConfig) -> Self {
        let (spcs, writer) = reflector::store();
        let reporter =
            Reporter { controller: REPORTER.to_owned(), instance: Some(config.pod_name.clone()) };
        let recorder = Recorder::new(client.clone(), reporter);
        let outbox = Outbox::start(
            client.clone(),
            recorder,
            Backoff { base: Duration::from_millis(500), cap: Duration::from_secs(30) },
        );
        let inner = Inner {
            client,
            engine,
            config,
            spcs,
            // Refreshed once four fifths of its life are over, as kubelet does.
            tokens: IdentityCache::new(RefreshRule::AfterShare(0.8)),
            held: Mutex::default(),
            outbox,
            counters: Counters::default(),
            stats: watch::Sender::new(SyncStats::default()),
        };
        Self {
            inner: Arc::new(inner),
            spc_writer: Arc::new(Mutex::new(Some(writer))),
            rotate: Arc::new(Notify::new()),
        }
    }

    /// Adds the controller's counters (`sscsi_secretsync_*`) to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        self.inner.counters.register(registry);
    }

    pub fn stats(&self) -> SyncStats {
        *self.inner.stats.borrow()
    }

    /// Waits until the stats satisfy `until`.
    pub async fn wait_for(&self, until: impl Fn(&SyncStats) -> bool) -> SyncStats {
        let mut rx = self.inner.stats.subscribe();
        *rx.wait_for(|s| until(s)).await.expect("the sender lives in self")
    }

    /// Starts a rotation pass now (what the poll interval does).
    pub fn rotate_now(&self) {
        self.rotate.notify_one();
    }

    /// Resolves once every event sent so far is written.
    pub async fn settled(&self) {
        self.inner.outbox.settled().await;
    }

    /// Watches SecretSyncs and SecretProviderClasses and syncs until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let writer = self.spc_writer.lock().expect("lock").take().expect("run once");
        let client = self.inner.client.clone();
        let spc_stream =
            watcher(Api::<SecretProviderClass>::all(client.clone()), Default::default())
                .default_backoff()
                .reflect(writer)
                .touched_objects();
        let (syncs, sync_writer) = reflector::store();
        let sync_stream = watcher(Api::<SecretSync>::all(client), Default::default())
            .default_backoff()
            .reflect(sync_writer)
            .applied_objects()
            // Our own status writes change no generation: no reconcile for them.
            .predicate_filter(predicates::generation, Default::default());
        let by_class = syncs.clone();
        let interval = self.inner.config.rotation_poll_interval;
        let rotate = self.rotate.clone();
        let manual = stream::unfold(rotate, |n| async move {
            n.notified().await;
            Some(((), n))
        });
        let ticks = match interval.is_zero() {
            true => stream::pending().boxed(),
            false => stream::unfold(
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval),
                |mut t| async move {
                    t.tick().await;
                    Some(((), t))
                },
            )
            .boxed(),
        };
        let inner = self.inner.clone();
        let pruner = syncs.clone();
        let passes = stream::select(ticks, manual).map(move |()| {
            // SecretSyncs deleted since the last pass: forget what was held.
            let live: std::collections::HashSet<ObjectRef<SecretSync>> =
                pruner.state().iter().map(|s| ObjectRef::from_obj(s.as_ref())).collect();
            inner.held.lock().expect("lock").retain(|key, _| live.contains(key));
        });
        let config = controller::Config::default().concurrency(self.inner.config.concurrency);
        Controller::for_stream(sync_stream, syncs)
            .with_config(config)
            .watches_stream(spc_stream, move |spc: SecretProviderClass| {
                let namespace = spc.namespace();
                let name = spc.name_any();
                by_class
                    .state()
                    .iter()
                    .filter(|s| {
                        s.namespace() == namespace && s.spec.secret_provider_class_name == name
                    })
                    .map(|s| ObjectRef::from_obj(s.as_ref()))
                    .collect::<Vec<_>>()
            })
            .reconcile_all_on(passes)
            .graceful_shutdown_on(stop.cancelled_owned())
            .run(reconcile, error_policy, self.inner.clone())
            .for_each(|_| futures::future::ready(()))
            .await;
    }
}

/// Runs `controller` only while `elector` holds its Lease: waits for it,
/// syncs, and stops syncing when it is lost (an error: the pod should
/// restart as a standby, as client-go's leaders do) or at `stop` (the Lease
/// is released then, for a standby to take over at once).
pub async fn run_elected(
    controller: SecretSyncController,
    mut elector: crate::Elector,
    stop: CancellationToken,
) -> Result<(), crate::LeaseError> {
    if !elector.acquire(&stop).await {
        return Ok(());
    }
    let running = stop.child_token();
    let work = tokio::spawn(controller.run(running.clone()));
    let held = elector.hold(&stop).await;
    running.cancel();
    let _ = work.await;
    held
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failed(SyncFailure);

async fn reconcile(ss: Arc<SecretSync>, inner: Arc<Inner>) -> Result<Action, Failed> {
    let result = inner.sync(&ss).await;
    let counters = &inner.counters;
    counters.reconciles.inc();
    let action = match &result {
        Ok(_) => Ok(Action::await_change()),
        Err(failure) => {
            counters.failures.inc();
            // The retry waits longer after each failure in a row; a success resets it.
            let key = ObjectRef::from_obj(ss.as_ref());
            inner.held.lock().expect("lock").entry(key).or_default().failures += 1;
            Err(Failed(failure.clone()))
        }
    };
    inner.report(&ss, result).await;
    inner.publish_stats();
    action
}

fn error_policy(ss: Arc<SecretSync>, _: &Failed, inner: Arc<Inner>) -> Action {
    let key = ObjectRef::from_obj(ss.as_ref());
    let failures = inner.held.lock().expect("lock").get(&key).map_or(1, |h| h.failures.max(1));
    Action::requeue(inner.config.backoff.delay(failures))
}

/// What a successful sync did.
#[derive(Debug)]
struct Synced {
    sync_hash: String,
    /// The hash differs from the recorded one.
    changed: bool,
    /// The Secret was applied.
    wrote: bool,
}

/// The held files, for providers that answer an unchanged object with them.
struct HeldFiles(BTreeMap<String, SecretBytes>);

#[async_trait]
impl MountedFiles for HeldFiles {
    async fn read(&self) -> BTreeMap<String, SecretBytes> {
        self.0.clone()
    }
}

impl Inner {
    async fn sync(&self, ss: &SecretSync) -> Result<Synced, SyncFailure> {
        let namespace = ss.namespace_str().to_owned();
        let name = ss.name_str().to_owned();
        let key = ObjectRef::from_obj(ss);
        if self.config.allowed_namespaces.as_ref().is_some_and(|a| !a.contains(&namespace)) {
            return Err(SyncFailure::new(
                Reason::SecretSyncNotAllowed,
                format!("SecretSync {namespace}/{name}: namespace {namespace} is not allowed"),
            ));
        }
        reserved_keys(ss)?;
        let class_name = ss.spec.secret_provider_class_name.trim();
        // The class watch runs beside the SecretSync watch: its first list first.
        let _ = self.spcs.wait_until_ready().await;
        let class = self
            .spcs
            .get(&ObjectRef::new(class_name).within(&namespace))
            .ok_or_else(|| {
                SyncFailure::new(
                    Reason::ControllerSpcError,
                    format!(
                        "SecretSync {namespace}/{name}: SecretProviderClass {namespace}/{class_name} not found"
                    ),
                )
            })?;
        let service_account = ss.spec.service_account_name.trim().to_owned();
        let tokens = self.tokens(&namespace, &service_account).await?;

        let spc_key = (class.uid().unwrap_or_default(), class.metadata.generation.unwrap_or(0));
        let generation = ss.metadata.generation.unwrap_or(0);
        let force = ss.spec.force_synchronization.clone().unwrap_or_default();
        let uid = ss.uid().unwrap_or_default();
        let (purpose, held_versions, held_files) = {
            let held = self.held.lock().expect("lock");
            match held.get(&key).filter(|h| h.uid == uid && !h.versions.is_empty()) {
                Some(h) if h.force != force => (Purpose::Forced, Vec::new(), BTreeMap::new()),
                Some(h) if h.generation == generation && h.spc == spc_key => {
                    (Purpose::Rotation, h.versions.clone(), h.files.clone())
                }
                _ => (Purpose::FirstMount, Vec::new(), BTreeMap::new()),
            }
        };

        let pod = PodInfo {
            name: self.config.pod_name.clone(),
            namespace: namespace.clone(),
            // No pod: provider-made tokens are bound to nothing.
            uid: String::new(),
            service_account: service_account.clone(),
        };
        // What upstream passes providers as the volume attributes.
        let attributes: BTreeMap<String, String> = [
            ("csi.storage.k8s.io/pod.name", self.config.pod_name.clone()),
            ("csi.storage.k8s.io/pod.uid", self.config.pod_uid.clone()),
            ("csi.storage.k8s.io/pod.namespace", namespace.clone()),
            ("csi.storage.k8s.io/serviceAccount.name", service_account.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let no_secrets = BTreeMap::new();
        let mounted = HeldFiles(held_files);
        let fetch = Fetch {
            class: &class,
            attributes: &attributes,
            identity: Identity { pod: &pod, tokens: &tokens, secrets: &no_secrets },
            held: &held_versions,
            mounted: Some(&mounted),
            purpose,
            // No volume: an external provider gets upstream's placeholder.
            target_path: None,
        };
        self.counters.fetches.inc();
        let (fetched, _) = self.engine.fetch(fetch).await;
        let fetched = fetched.map_err(|e| match e {
            FetchError::UnknownProvider { .. } => {
                SyncFailure::new(Reason::ControllerSpcError, format!("SecretSync {namespace}/{name}: {e}"))
            }
            FetchError::Provider { .. } => SyncFailure::new(
                Reason::ProviderError,
                format!("SecretSync {namespace}/{name}: SecretProviderClass {namespace}/{class_name}: {e}"),
            ),
            FetchError::Files { .. } | FetchError::Parameter { .. } => {
                SyncFailure::new(Reason::ControllerSpcError, format!("SecretSync {namespace}/{name}: {e}"))
            }
        })?;

        let data = secret_data(ss, &fetched.files)?;
        let secret = desired_secret(ss, data);
        let recorded = ss.status.as_ref().and_then(|s| s.sync_hash.clone()).unwrap_or_default();
        let failed =
            ss.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.status == "False"));
        let mut held = {
            let mut all = self.held.lock().expect("lock");
            let h = all.entry(key.clone()).or_default();
            std::mem::take(h)
        };
        // The key derivation is tens of milliseconds of CPU: off the runtime's workers.
        let (memo, sync_hash) = {
            let mut memo = std::mem::take(&mut held.memo);
            let (spc_key, uid, force) = (spc_key.clone(), uid.clone(), force.clone());
            let data = secret.data.clone().unwrap_or_default();
            tokio::task::spawn_blocking(move || {
                let data: BTreeMap<String, Vec<u8>> =
                    data.into_iter().map(|(k, v)| (k, v.0)).collect();
                let hash = memo.hash(&HashInput {
                    data: &data,
                    spc_uid: &spc_key.0,
                    spc_generation: spc_key.1,
                    ss_uid: &uid,
                    ss_generation: generation,
                    force: &force,
                });
                (memo, hash)
            })
            .await
            .expect("hashing does not panic")
        };
        held.memo = memo;
        let changed = sync_hash != recorded;
        let wrote = if !changed && !failed {
            false
        } else {
            let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let result = secrets.patch(&name, &params, &Patch::Apply(&secret)).await;
            if let Err(e) = result {
                self.restore(key, held);
                let reason = Reason::of_api_error(&e, Reason::UnknownError);
                return Err(SyncFailure::new(
                    reason,
                    format!("failed to patch secret {namespace}/{name}: {e}"),
                ));
            }
            self.counters.secret_writes.inc();
            true
        };
        held.uid = uid;
        held.generation = generation;
        held.spc = spc_key;
        held.force = force;
        held.versions = fetched.versions;
        held.files = fetched.files.into_iter().map(|f| (f.path, f.contents)).collect();
        held.failures = 0;
        self.held.lock().expect("lock").insert(key, held);
        Ok(Synced { sync_hash, changed, wrote })
    }

    /// Puts back what a failed sync took out.
    fn restore(&self, key: ObjectRef<SecretSync>, held: Held) {
        self.held.lock().expect("lock").insert(key, held);
    }

    /// One token per audience for `namespace/service_account`, reused
    /// across SecretSyncs of that identity until four fifths of its life.
    async fn tokens(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> Result<BTreeMap<String, ServiceAccountToken>, SyncFailure> {
        let mut tokens = BTreeMap::new();
        for audience in &self.config.audiences {
            let key = format!("{namespace}/{service_account}/{audience}");
            let exchange = || async {
                self.counters.token_requests.inc();
                let token = request_token(
                    &self.client,
                    namespace,
                    service_account,
                    vec![audience.clone()],
                    TOKEN_SECONDS,
                    None,
                )
                .await?;
                Ok::<_, kube::Error>((token, Some(Duration::from_secs(TOKEN_SECONDS as u64))))
            };
            let (token, _) = self.tokens.get(&key, |_| false, exchange).await.map_err(|e| {
                SyncFailure::new(
                    Reason::of_api_error(&e, Reason::UnknownError),
                    format!(
                        "request a token for service account {namespace}/{service_account} (audience {audience:?}): {e}"
                    ),
                )
            })?;
            tokens.insert(audience.clone(), token);
        }
        Ok(tokens)
    }

    /// Conditions, status and events for one sync's outcome.
    async fn report(&self, ss: &SecretSync, result: Result<Synced, SyncFailure>) {
        let status = ss.status.clone().unwrap_or_default();
        let created = status.sync_hash.as_deref().is_some_and(|h| !h.is_empty());
        let mut next = status.clone();
        let (event_type, event_reason, note) = match &result {
            Ok(synced) => {
                if synced.changed {
                    next.sync_hash = Some(synced.sync_hash.clone());
                    next.last_successful_sync_time = Some(now());
                }
                let (kind, reason, message) = if !created {
                    (CONDITION_CREATE, "CreateSucceeded", "The secret was created successfully.")
                } else if synced.changed {
                    (
                        CONDITION_UPDATE,
                        "ValueChangeOrForceUpdateDetected",
                        "The secret was updated successfully: a value change or a force update was detected.",
                    )
                } else {
                    (
                        CONDITION_UPDATE,
                        "NoValueChange",
                        "The secret was updated successfully at the end of the poll interval and no value change was detected.",
                    )
                };
                // A success clears the failure of the other condition too.
                next.conditions.retain(|c| c.status != "False" || c.type_ == kind);
                set_condition(&mut next, kind, "True", reason, message, ss);
                (EventType::Normal, reason, message.to_owned())
            }
            Err(failure) => {
                let kind = if created { CONDITION_UPDATE } else { CONDITION_CREATE };
                let message = format!("{}: {}", failure.reason.sentence(!created), failure.detail);
                set_condition(&mut next, kind, "False", failure.reason.as_str(), &message, ss);
                tracing::warn!(secretsync = %ss.qualified_name(), reason = failure.reason.as_str(), error = %failure.detail, "sync failed");
                (EventType::Warning, failure.reason.as_str(), message)
            }
        };
        let wrote = matches!(&result, Ok(s) if s.wrote);
        if next != status {
            self.write_status(ss, next).await;
        }
        if wrote || event_type == EventType::Warning {
            let reference = ss.object_ref(&());
            let event = Event {
                type_: event_type,
                reason: event_reason.to_owned(),
                note: Some(truncate(note)),
                action: "Sync".to_owned(),
                secondary: None,
            };
            self.outbox.event(event, reference);
        }
    }

    async fn write_status(&self, ss: &SecretSync, status: SecretSyncStatus) {
        let api: Api<SecretSync> = Api::namespaced(self.client.clone(), ss.namespace_str());
        let patch = serde_json::json!({ "status": status });
        match api.patch_status(ss.name_str(), &PatchParams::default(), &Patch::Merge(&patch)).await
        {
            Ok(_) => {
                self.counters.status_writes.inc();
            }
            Err(e) => {
                tracing::warn!(secretsync = %ss.qualified_name(), error = %e, "status write failed")
            }
        }
    }

    fn publish_stats(&self) {
        let c = &self.counters;
        let load = |a: &Counter| a.get();
        self.stats.send_replace(SyncStats {
            reconciles: load(&c.reconciles),
            failures: load(&c.failures),
            secret_writes: load(&c.secret_writes),
            status_writes: load(&c.status_writes),
            token_requests: load(&c.token_requests),
            fetches: load(&c.fetches),
        });
    }
}

/// Labels and annotations under the controller's reserved key (the CRD
/// refuses them too; this covers objects written before it did).
fn reserved_keys(ss: &SecretSync) -> Result<(), SyncFailure> {
    let Some((field, key)) = ss.spec.secret_object.reserved_key() else { return Ok(()) };
    let (reason, what) = match field {
        "labels" => (Reason::InvalidClusterSecretLabelError, "label"),
        _ => (Reason::InvalidClusterSecretAnnotationError, "annotation"),
    };
    Err(SyncFailure::new(
        reason,
        format!(
            "SecretSync {}: spec.secretObject.{field}: {what} {key} is reserved for use by the controller",
            ss.qualified_name()
        ),
    ))
}

/// The Secret's data from the provider's files, as upstream's
/// `BuildKubeSecretData` (`kubernetes.io/tls` keys cut out of a PEM bundle).
fn secret_data(
    ss: &SecretSync,
    files: &[sscsi_core::SecretFile],
) -> Result<BTreeMap<String, Vec<u8>>, SyncFailure> {
    let object = &ss.spec.secret_object;
    let invalid = |detail: String| {
        SyncFailure::new(
            Reason::UserInputValidationFailed,
            format!("SecretSync {}: {detail}", ss.qualified_name()),
        )
    };
    if object.data.is_empty() {
        return Err(invalid("spec.secretObject.data is empty".to_owned()));
    }
    let tls = object.type_.trim() == TLS_TYPE;
    let mut data = BTreeMap::new();
    for (index, entry) in object.data.iter().enumerate() {
        let source = entry.source_path.trim();
        let target = entry.target_key.trim();
        if source.is_empty() {
            return Err(invalid(format!("spec.secretObject.data[{index}].sourcePath is empty")));
        }
        if target.is_empty() {
            return Err(invalid(format!("spec.secretObject.data[{index}].targetKey is empty")));
        }
        let file = files.iter().find(|f| f.path == source).ok_or_else(|| {
            invalid(format!(
                "spec.secretObject.data[{index}].sourcePath: no file {source:?} among the provider's files"
            ))
        })?;
        let value = if tls {
            tls_part(target, file.contents.expose()).map_err(|e| {
                invalid(format!("spec.secretObject.data[{index}] (targetKey {target}): {e}"))
            })?
        } else {
            file.contents.expose().to_vec()
        };
        data.insert(target.to_owned(), value);
    }
    Ok(data)
}

/// The Secret a SecretSync asks for: its name and namespace, its labels
/// plus the reserved one, its annotations, the SecretSync as sole owner
/// (no `controller` flag, as upstream), and `data`.
fn desired_secret(ss: &SecretSync, data: BTreeMap<String, Vec<u8>>) -> Secret {
    let object = &ss.spec.secret_object;
    let owner = OwnerReference {
        api_version: SecretSync::api_version(&()).into_owned(),
        kind: SecretSync::kind(&()).into_owned(),
        name: ss.name_str().to_owned(),
        uid: ss.uid().unwrap_or_default(),
        ..Default::default()
    };
    let mut labels = object.labels.clone().unwrap_or_default();
    labels.insert(SYNC_RESERVED_KEY.to_owned(), String::new());
    let mut secret = Secret {
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        type_: Some(object.type_.trim().to_owned()).filter(|t| !t.is_empty()),
        ..Default::default()
    };
    secret.metadata.name = Some(ss.name_str().to_owned());
    secret.metadata.namespace = Some(ss.namespace_str().to_owned());
    secret.metadata.labels = Some(labels);
    secret.metadata.annotations = object.annotations.clone().filter(|a| !a.is_empty());
    secret.metadata.owner_references = Some(vec![owner]);
    secret
}

/// `meta.SetStatusCondition`: the transition time moves only when the
/// status does.
fn set_condition(
    status: &mut SecretSyncStatus,
    kind: &str,
    value: &str,
    reason: &str,
    message: &str,
    ss: &SecretSync,
) {
    let generation = ss.metadata.generation;
    match status.conditions.iter_mut().find(|c| c.type_ == kind) {
        Some(c) => {
            if c.status != value {
                c.status = value.to_owned();
                c.last_transition_time = now();
            }
            c.reason = reason.to_owned();
            c.message = message.to_owned();
            c.observed_generation = generation;
        }
        None => status.conditions.push(Condition {
            type_: kind.to_owned(),
            status: value.to_owned(),
            observed_generation: generation,
            last_transition_time: now(),
            reason: reason.to_owned(),
            message: message.to_owned(),
        }),
    }
}

fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Event notes are limited to 1 KiB by the API server.
fn truncate(mut note: String) -> String {
    if note.len() > 1024 {
        let mut end = 1021;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str("...");
    }
    note
}
