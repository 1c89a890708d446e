use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::SecretBytes;

/// A secrets backend compiled into sscsi (`spec.provider` of a
/// SecretProviderClass): fetches the objects a volume names and turns them
/// into files.
///
/// Contract: `mount` has no side effects outside the backend call; it returns
/// every file of the volume (the writer replaces the whole volume content) and
/// one [`ObjectVersion`] per object. It must not assume the returned paths are
/// trusted: the writer validates them again.
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    /// The `spec.provider` value this provider answers to.
    fn name(&self) -> &str;

    async fn mount(&self, request: &MountRequest) -> Result<MountResponse, ProviderError>;

    /// Whether this refresh should bring the mounted files
    /// ([`MountRequest::current_files`], still empty in `request`): only for
    /// a provider that returns them for objects its backend says are
    /// unchanged. Others get none, so a refresh does not read the volume
    /// into memory for nothing.
    fn reads_mounted_files(&self, request: &MountRequest) -> bool {
        let _ = request;
        false
    }

    /// Whether this provider may write files into
    /// [`MountRequest::target_path`] itself (an external provider of the
    /// legacy kind): the volume is then mounted before the call, as
    /// upstream mounts it, and its files are left as the provider wrote them
    /// when the answer carries none ([`MountResponse::written_by_provider`]).
    fn writes_target(&self) -> bool {
        false
    }
}

/// How long a finished backend read answers identical reads of a first
/// mount: long enough to span a burst of pods, short enough that a new pod
/// never starts with what was read before a change it could see.
pub const BURST_WINDOW: Duration = Duration::from_secs(1);

/// Everything a provider gets for one volume.
#[derive(Debug, Clone)]
pub struct MountRequest {
    /// SecretProviderClass `spec.parameters` merged with the volume
    /// attributes (attributes win, as upstream), without the tokens key.
    pub parameters: BTreeMap<String, String>,
    /// Service-account tokens kubelet requested for the pod, by audience.
    pub tokens: BTreeMap<String, ServiceAccountToken>,
    /// Data of the `nodePublishSecretRef` Secret, if the volume names one.
    pub secrets: BTreeMap<String, SecretBytes>,
    pub pod: PodInfo,
    /// Mode for files whose object sets none (upstream: always 0644).
    pub default_file_mode: u32,
    /// Versions of the objects currently mounted in this volume, empty on the
    /// first mount, so a provider can skip unchanged objects.
    pub current_versions: Vec<ObjectVersion>,
    /// The files mounted now, by path, on a refresh: a provider whose
    /// backend can tell cheaply that an object is unchanged returns these
    /// bytes instead of reading the object again.
    pub current_files: BTreeMap<String, SecretBytes>,
    /// How old an answer of an identical read (same identity, same object)
    /// this request takes instead of calling the backend: [`BURST_WINDOW`]
    /// on a first mount, the rotation interval on a refresh (one check per
    /// object and identity per interval, however many volumes hold it),
    /// zero on a forced refresh. A read in flight is always joined.
    pub reuse: Duration,
    /// The volume's directory, for providers that write files themselves
    /// ([`Provider::writes_target`]); `None` without a volume (a sync, a
    /// render). Compiled-in providers never read it.
    pub target_path: Option<std::path::PathBuf>,
}

impl Default for MountRequest {
    fn default() -> Self {
        Self {
            parameters: BTreeMap::new(),
            tokens: BTreeMap::new(),
            secrets: BTreeMap::new(),
            pod: PodInfo::default(),
            default_file_mode: crate::DEFAULT_FILE_MODE,
            current_versions: Vec::new(),
            current_files: BTreeMap::new(),
            reuse: BURST_WINDOW,
            target_path: None,
        }
    }
}

/// The pod a volume belongs to, from kubelet's `csi.storage.k8s.io/*` attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub service_account: String,
}

/// A service-account token kubelet issued for one audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountToken {
    pub token: SecretBytes,
    /// RFC 3339, as kubelet sends it.
    pub expiration_timestamp: String,
}

/// What a provider returns for one volume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountResponse {
    pub files: Vec<SecretFile>,
    pub versions: Vec<ObjectVersion>,
    /// The provider wrote the volume's files into the target path itself and
    /// returned none (upstream's legacy mode): nothing is to be written.
    pub written_by_provider: bool,
}

impl MountResponse {
    /// The files to write and the versions of the objects they came from.
    pub fn new(files: Vec<SecretFile>, versions: Vec<ObjectVersion>) -> Self {
        Self { files, versions, written_by_provider: false }
    }
}

/// One file to write, relative to the volume root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    pub path: String,
    /// Permission bits, 0 to 0o777, applied exactly (the umask is ignored).
    pub mode: u32,
    pub contents: SecretBytes,
}

/// The version of one backend object as the provider reports it; recorded in
/// the SecretProviderClassPodStatus and sent back on the next fetch.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectVersion {
    pub id: String,
    pub version: String,
}

/// The gRPC status a failure maps to. Kept here so providers need no tonic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    FailedPrecondition,
    ResourceExhausted,
    Unavailable,
    DeadlineExceeded,
    Internal,
}

/// A provider's own typed error: says which gRPC code it deserves and which
/// upstream reason string (the `error_type` metric label) describes it.
pub trait ProviderFailure: std::error::Error + Send + Sync + 'static {
    fn code(&self) -> ErrorCode;

    /// Upstream's reason for a failed provider call is `ProviderError`; an
    /// external provider may report its own code instead.
    fn reason(&self) -> &str {
        "ProviderError"
    }
}

/// Any provider's error, type-erased so the trait stays object safe.
pub struct ProviderError(Box<dyn ProviderFailure>);

impl ProviderError {
    pub fn code(&self) -> ErrorCode {
        self.0.code()
    }

    pub fn reason(&self) -> &str {
        self.0.reason()
    }
}

impl<E: ProviderFailure> From<E> for ProviderError {
    fn from(e: E) -> Self {
        Self(Box::new(e))
    }
}

impl fmt::Debug for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for ProviderError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}
