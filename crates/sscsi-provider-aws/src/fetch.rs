//! Reading the objects from Secrets Manager and SSM Parameter Store, region
//! by region, as ASCP does.
//!
//! - Secrets Manager: one `GetSecretValue` per secret, all secrets at once;
//!   `SecretString` as UTF-8, else the raw `SecretBinary`. Version: `VersionId`.
//! - SSM: `GetParameters` in batches of 10, decrypted, `name:version` or
//!   `name:label` when pinned. Version: the parameter's version number.
//! - Regions: every object is asked of every region; the primary's value
//!   wins. A client error (4xx) in any region fails the mount at once;
//!   throttling and other errors are retried with backoff (the SDKs'
//!   standard policy, each counted) and only fail it when no region answered.
//! - `jmesPath`: each string the expression selects from the JSON value is
//!   its own file, carrying the parent's version.

use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::try_join_all;
use sscsi_core::gojson::{GoJson, go_json};
use sscsi_core::{ErrorCode, ObjectVersion, ProviderFailure, SecretBytes, SecretFile};
use sscsi_provider_kit::coalesce::Coalescer;
use sscsi_provider_kit::{Calls, Classified, Failure};

use crate::descriptor::{Descriptor, SecretType};

/// SSM accepts at most 10 names per `GetParameters`.
const SSM_BATCH: usize = 10;

/// The clients of one region.
#[derive(Debug, Clone)]
pub struct RegionClients {
    pub region: String,
    /// True for the failover region: objects use their `failoverObject`.
    pub failover: bool,
    pub secrets_manager: aws_sdk_secretsmanager::Client,
    pub ssm: aws_sdk_ssm::Client,
    /// Identical reads by the same identity share one call, when set.
    pub shared: Option<SharedReads>,
    /// How every call of the region is retried and counted.
    pub calls: Calls,
}

impl RegionClients {
    /// The budget's key of a service in this region (`secretsmanager.us-east-1`):
    /// AWS throttles per account, service and region.
    pub fn endpoint(&self, service: &str) -> String {
        format!("{service}.{}", self.region)
    }
}

pub type SecretRead = Result<(SecretBytes, String), FetchError>;
/// The version id holding a label, from `DescribeSecret`.
pub type Described = Result<Option<String>, FetchError>;

/// Identical reads by one identity share one call (see
/// [`sscsi_provider_kit::coalesce`]): `GetSecretValue` in a burst of pods, and
/// `DescribeSecret` in a rotation pass over many volumes. The key always
/// holds the identity, so no pod reads another identity's answer.
#[derive(Debug, Clone)]
pub struct SharedReads {
    /// Who reads: the role (or pod identity), namespace and service account.
    pub identity: String,
    /// How old a shared answer this mount takes ([`sscsi_core::MountRequest::reuse`]).
    pub reuse: Duration,
    pub values: Arc<Coalescer<SecretRead>>,
    pub describes: Arc<Coalescer<Described>>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("{region}: Failed fetching secret {name}: {message}")]
    Secret { region: String, name: String, message: String, failure: Failure },
    #[error("{region}: Failed fetching parameters: {message}")]
    Parameters { region: String, message: String, failure: Failure },
    #[error("{region}: Failed to describe secret {name}: {message}")]
    Describe { region: String, name: String, message: String, failure: Failure },
    #[error("{region}: invalid parameters: {names}")]
    InvalidParameters { region: String, names: String },
    #[error(
        "Failed to fetch secret from all regions. Verify secret exists and required permissions are granted for: {0}"
    )]
    SecretAllRegions(String, Option<Failure>),
    #[error("Failed to fetch parameters from all regions.")]
    ParametersAllRegions,
    #[error("{0}")]
    Jmes(String),
}

impl FetchError {
    /// ASCP fails the whole mount on a 4xx from any region; throttling
    /// (retried first) lets the other regions answer.
    fn is_fatal(&self) -> bool {
        match self {
            Self::Secret { failure, .. }
            | Self::Describe { failure, .. }
            | Self::Parameters { failure, .. } => !failure.is_transient(),
            Self::InvalidParameters { .. } | Self::Jmes(_) => true,
            Self::SecretAllRegions(..) | Self::ParametersAllRegions => false,
        }
    }
}

impl Classified for FetchError {
    fn failure(&self) -> Failure {
        match self {
            Self::Secret { failure, .. }
            | Self::Describe { failure, .. }
            | Self::Parameters { failure, .. } => *failure,
            _ => Failure::Rejected,
        }
    }
}

impl ProviderFailure for FetchError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Secret { failure, .. }
            | Self::Describe { failure, .. }
            | Self::Parameters { failure, .. } => match failure {
                // A missing secret or a bad name is a 400 with a code, as ASCP reports it.
                Failure::Rejected | Failure::Invalid | Failure::NotFound => {
                    ErrorCode::FailedPrecondition
                }
                other => other.code(),
            },
            // Still throttled, or down, after every retry in every region: say so.
            Self::SecretAllRegions(_, Some(Failure::Throttled)) => ErrorCode::ResourceExhausted,
            Self::SecretAllRegions(_, Some(Failure::Unavailable)) => ErrorCode::Unavailable,
            Self::InvalidParameters { .. } | Self::SecretAllRegions(..) => ErrorCode::NotFound,
            Self::Jmes(_) => ErrorCode::InvalidArgument,
            Self::ParametersAllRegions => ErrorCode::Unavailable,
        }
    }
}

/// What the volume holds now (on a refresh): versions by file, and bytes.
#[derive(Debug, Default)]
pub struct Current<'a> {
    versions: HashMap<&'a str, &'a str>,
    files: Option<&'a BTreeMap<String, SecretBytes>>,
}

impl<'a> Current<'a> {
    pub fn new(versions: &'a [ObjectVersion], files: &'a BTreeMap<String, SecretBytes>) -> Self {
        let versions = versions.iter().map(|v| (v.id.as_str(), v.version.as_str())).collect();
        Self { versions, files: Some(files) }
    }

    /// The mounted version and bytes of a file, when both are known.
    fn get(&self, file: &str) -> Option<(&'a str, &'a SecretBytes)> {
        Some((*self.versions.get(file)?, self.files?.get(file)?))
    }
}

/// A fetched object: the parent's file, then one per jmesPath entry.
struct Fetched {
    files: Vec<SecretFile>,
    versions: Vec<ObjectVersion>,
}

/// Fetches every object; fails when any object cannot be had.
pub async fn fetch_all(
    regions: &[RegionClients],
    descriptors: &[Descriptor],
    default_mode: u32,
    current: &Current<'_>,
) -> Result<(Vec<SecretFile>, Vec<ObjectVersion>), FetchError> {
    let (secrets, parameters): (Vec<&Descriptor>, Vec<&Descriptor>) =
        descriptors.iter().partition(|d| d.secret_type() == SecretType::SecretsManager);
    let secrets =
        try_join_all(secrets.into_iter().map(|d| fetch_secret(regions, d, default_mode, current)));
    let parameters = async {
        let batches = parameters
            .chunks(SSM_BATCH)
            .map(|batch| fetch_parameters(regions, batch, default_mode));
        try_join_all(batches).await
    };
    let (secrets, batches) = futures::try_join!(secrets, parameters)?;
    let mut files = Vec::new();
    let mut versions = Vec::new();
    for fetched in secrets.into_iter().chain(batches.into_iter().flatten()) {
        files.extend(fetched.files);
        versions.extend(fetched.versions);
    }
    Ok((files, versions))
}

async fn fetch_secret(
    regions: &[RegionClients],
    d: &Descriptor,
    default_mode: u32,
    current: &Current<'_>,
) -> Result<Fetched, FetchError> {
    let (mut found, mut last) = (None, None);
    for region in regions {
        let read = match still_current(region, d, current).await {
            Ok(Check::Unchanged(unchanged)) => Ok(unchanged),
            Ok(Check::Read { expect }) => get_secret_value(region, d, expect).await,
            Err(e) => Err(e),
        };
        match read {
            Ok((value, version)) if found.is_none() => {
                found = Some(output(d, value, version, default_mode)?)
            }
            Ok(_) => {}
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "fetch from one region failed");
                last = Some(e.failure());
            }
        }
    }
    found.ok_or_else(|| FetchError::SecretAllRegions(d.object_name.clone(), last))
}

/// On a refresh: the mounted bytes when the object has not changed, decided
/// as ASCP does: a pinned `objectVersion` against the mounted version, else
/// `DescribeSecret` for the version holding the label (`AWSCURRENT` by
/// default).
async fn still_current(
    region: &RegionClients,
    d: &Descriptor,
    current: &Current<'_>,
) -> Result<Check, FetchError> {
    let Some((version, bytes)) = current.get(&d.file_name()) else {
        return Ok(Check::Read { expect: None });
    };
    let unchanged = || Check::Unchanged((bytes.clone(), version.to_owned()));
    let pinned = d.version_in(region.failover);
    if !pinned.is_empty() {
        return Ok(if pinned == version { unchanged() } else { Check::Read { expect: None } });
    }
    let label = match d.version_label_in(region.failover) {
        "" => "AWSCURRENT",
        label => label,
    };
    let holder = match &region.shared {
        None => describe(region.clone(), d.clone(), label.to_owned()).await,
        Some(shared) => {
            let key = format!(
                "{}\n{}\n{}\n{label}",
                shared.identity,
                region.region,
                d.name_in(region.failover)
            );
            let (region, d, label) = (region.clone(), d.clone(), label.to_owned());
            shared.describes.read(key, shared.reuse, move || describe(region, d, label)).await.0
        }
    }?;
    Ok(match holder {
        Some(holder) if holder == version => unchanged(),
        expect => Check::Read { expect },
    })
}

/// The version id that holds `label`, per `DescribeSecret`.
async fn describe(region: RegionClients, d: Descriptor, label: String) -> Described {
    let described = region
        .calls
        .run(&region.endpoint("secretsmanager"), "DescribeSecret", || async {
            region
                .secrets_manager
                .describe_secret()
                .secret_id(d.name_in(region.failover))
                .send()
                .await
                .map_err(|e| FetchError::Describe {
                    region: region.region.clone(),
                    name: d.object_name.clone(),
                    failure: failure(&e),
                    message: sdk_message(&e),
                })
        })
        .await?;
    Ok(described
        .version_ids_to_stages
        .unwrap_or_default()
        .into_iter()
        .find(|(_, stages)| stages.contains(&label))
        .map(|(id, _)| id))
}

/// What a refresh does with one secret.
enum Check {
    /// The mounted bytes and version stand.
    Unchanged((SecretBytes, String)),
    /// Read the value; `expect` is the version `DescribeSecret` just named.
    Read { expect: Option<String> },
}

/// One read, shared with identical reads when the region says so. A shared
/// answer older than the version `expect`ed is not used: the read is made
/// again, so a refresh never writes back what it just learnt is stale.
async fn get_secret_value(
    region: &RegionClients,
    d: &Descriptor,
    expect: Option<String>,
) -> SecretRead {
    let Some(shared) = &region.shared else {
        return read_secret_value(region.clone(), d.clone()).await;
    };
    let key = format!(
        "{}\n{}\n{}\n{}\n{}",
        shared.identity,
        region.region,
        d.name_in(region.failover),
        d.version_in(region.failover),
        d.version_label_in(region.failover)
    );
    let (owned_region, owned_d) = (region.clone(), d.clone());
    let (answer, started) = shared
        .values
        .read(key, shared.reuse, move || read_secret_value(owned_region, owned_d))
        .await;
    match answer {
        Ok((_, version)) if !started && expect.is_some_and(|e| e != version) => {
            read_secret_value(region.clone(), d.clone()).await
        }
        answer => answer,
    }
}

async fn read_secret_value(region: RegionClients, d: Descriptor) -> SecretRead {
    let (region, d) = (&region, &d);
    let name = d.name_in(region.failover);
    let version = Some(d.version_in(region.failover)).filter(|v| !v.is_empty());
    let label = Some(d.version_label_in(region.failover)).filter(|v| !v.is_empty());
    let response = region
        .calls
        .run(&region.endpoint("secretsmanager"), "GetSecretValue", || async {
            region
                .secrets_manager
                .get_secret_value()
                .secret_id(name)
                .set_version_id(version.map(str::to_owned))
                .set_version_stage(label.map(str::to_owned))
                .send()
                .await
                .map_err(|e| FetchError::Secret {
                    region: region.region.clone(),
                    name: d.object_name.clone(),
                    failure: failure(&e),
                    message: sdk_message(&e),
                })
        })
        .await?;
    let value = match (response.secret_string, response.secret_binary) {
        (Some(s), _) => SecretBytes::from(s),
        (None, Some(blob)) => SecretBytes::new(blob.into_inner()),
        (None, None) => SecretBytes::default(),
    };
    Ok((value, response.version_id.unwrap_or_default()))
}

async fn fetch_parameters(
    regions: &[RegionClients],
    batch: &[&Descriptor],
    default_mode: u32,
) -> Result<Vec<Fetched>, FetchError> {
    let mut found = None;
    for region in regions {
        match get_parameters(region, batch, default_mode).await {
            Ok(values) if found.is_none() && !values.is_empty() => found = Some(values),
            Ok(_) => {}
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => tracing::warn!(error = %e, "fetch from one region failed"),
        }
    }
    found.ok_or(FetchError::ParametersAllRegions)
}

async fn get_parameters(
    region: &RegionClients,
    batch: &[&Descriptor],
    default_mode: u32,
) -> Result<Vec<Fetched>, FetchError> {
    let names: Vec<String> = batch
        .iter()
        .map(|d| {
            let name = d.name_in(region.failover);
            match (d.version_in(region.failover), d.version_label_in(region.failover)) {
                (v, _) if !v.is_empty() => format!("{name}:{v}"),
                (_, l) if !l.is_empty() => format!("{name}:{l}"),
                _ => name.to_owned(),
            }
        })
        .collect();
    let response = region
        .calls
        .run(&region.endpoint("ssm"), "GetParameters", || async {
            region
                .ssm
                .get_parameters()
                .set_names(Some(names.clone()))
                .with_decryption(true)
                .send()
                .await
                .map_err(|e| FetchError::Parameters {
                    region: region.region.clone(),
                    failure: failure(&e),
                    message: sdk_message(&e),
                })
        })
        .await?;
    let invalid = response.invalid_parameters.unwrap_or_default();
    if !invalid.is_empty() {
        let mut unique: Vec<String> = Vec::new();
        for name in invalid {
            if !unique.contains(&name) {
                unique.push(name);
            }
        }
        return Err(FetchError::InvalidParameters {
            region: region.region.clone(),
            names: unique.join(", "),
        });
    }
    let mut parameters = response.parameters.unwrap_or_default();
    let mut fetched = Vec::new();
    // In the order the objects are listed, whatever order the answer has.
    for d in batch {
        // The answer names the parameter by name or by ARN, as it was asked,
        // and (real SSM; not moto) says which `:version`/`:label` it answers.
        let name = d.name_in(region.failover);
        let selector = match (d.version_in(region.failover), d.version_label_in(region.failover)) {
            ("", "") => None,
            ("", label) => Some(format!(":{label}")),
            (version, _) => Some(format!(":{version}")),
        };
        let named = |p: &aws_sdk_ssm::types::Parameter| {
            p.name.as_deref() == Some(name) || p.arn.as_deref() == Some(name)
        };
        let found = parameters
            .iter()
            .position(|p| named(p) && p.selector.is_some() && p.selector == selector)
            .or_else(|| parameters.iter().position(named));
        let Some(parameter) = found.map(|i| parameters.swap_remove(i)) else { continue };
        let value = SecretBytes::from(parameter.value.unwrap_or_default());
        fetched.push(output(d, value, parameter.version.to_string(), default_mode)?);
    }
    Ok(fetched)
}

/// The files and versions one object yields.
fn output(
    d: &Descriptor,
    value: SecretBytes,
    version: String,
    default_mode: u32,
) -> Result<Fetched, FetchError> {
    let mut files = Vec::new();
    let mut versions = Vec::new();
    if !d.jmes_path.is_empty() {
        let json: serde_json::Value = serde_json::from_slice(value.expose()).map_err(|_| {
            FetchError::Jmes(format!(
                "Invalid JSON used with jmesPath in secret: {}.",
                d.object_name
            ))
        })?;
        let data = jmespath::Variable::from_json(&json.to_string()).map_err(|_| {
            FetchError::Jmes(format!(
                "Invalid JSON used with jmesPath in secret: {}.",
                d.object_name
            ))
        })?;
        for entry in &d.jmes_path {
            let expression = JMESPATH
                .compile(&entry.path)
                .map_err(|_| FetchError::Jmes(format!("Invalid JMES Path: {}.", entry.path)))?;
            let result = expression
                .search(data.clone())
                .map_err(|_| FetchError::Jmes(format!("Invalid JMES Path: {}.", entry.path)))?;
            if result.is_null() {
                return Err(FetchError::Jmes(format!(
                    "JMES Path - {} for object alias - {} does not point to a valid object.",
                    entry.path, entry.object_alias
                )));
            }
            let Some(text) = result.as_string() else {
                return Err(FetchError::Jmes(format!(
                    "Invalid JMES search result type for path:{}. Only string is allowed.",
                    entry.path
                )));
            };
            let jmes = d.jmes_descriptor(entry);
            files.push(SecretFile {
                path: jmes.file_name(),
                mode: jmes.file_mode(default_mode),
                contents: SecretBytes::from(text.as_str()),
            });
            versions.push(ObjectVersion { id: jmes.file_name(), version: version.clone() });
        }
    }
    files.insert(
        0,
        SecretFile { path: d.file_name(), mode: d.file_mode(default_mode), contents: value },
    );
    versions.insert(0, ObjectVersion { id: d.file_name(), version });
    Ok(Fetched { files, versions })
}

/// An SDK error in a line: the service's code and message when it
/// answered, else the transport failure.
pub(crate) fn sdk_message<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug,
{
    match e.as_service_error() {
        Some(service) => format!(
            "{}: {}",
            service.code().unwrap_or("UnknownError"),
            service.message().unwrap_or("no message")
        ),
        None => DisplayErrorContext(e).to_string(),
    }
}

/// What a failed call means, from the HTTP status and the service's error
/// code (Secrets Manager answers both throttling and a denial with a 400).
pub(crate) fn failure<E, R>(e: &SdkError<E, R>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: HasStatus + fmt::Debug,
{
    let status = e.raw_response().map(HasStatus::status_code);
    Failure::classify(status, e.as_service_error().and_then(ProvideErrorMetadata::code))
}

pub(crate) trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_sdk_secretsmanager::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// JMESPath with go-jmespath's `to_string`, which ASCP uses: a non-string is
/// written with Go's `json.Marshal` of what `encoding/json` decoded (numbers
/// are float64, so `1.0` is `1`; `<>&` escaped; keys sorted).
static JMESPATH: std::sync::LazyLock<jmespath::Runtime> = std::sync::LazyLock::new(|| {
    use jmespath::functions::{ArgumentType, CustomFunction, Signature};
    use jmespath::{Rcvar, Variable};
    let mut runtime = jmespath::Runtime::new();
    runtime.register_builtin_functions();
    let to_string = CustomFunction::new(
        Signature::new(vec![ArgumentType::Any], None),
        Box::new(|args: &[Rcvar], _: &mut jmespath::Context<'_>| {
            if let Variable::String(_) = *args[0] {
                return Ok(args[0].clone());
            }
            let value = serde_json::to_value(&*args[0]).unwrap_or_default();
            let mut out = Vec::new();
            go_json(&GoJson::from_decoded(&value), &mut out);
            Ok(Rcvar::new(Variable::String(String::from_utf8(out).unwrap_or_default())))
        }),
    );
    runtime.register_function("to_string", Box::new(to_string));
    runtime
});

#[cfg(test)]
mod tests {
    use super::JMESPATH;

    fn search(document: &str, expression: &str) -> jmespath::Rcvar {
        let data = jmespath::Variable::from_json(document).unwrap();
        JMESPATH.compile(expression).unwrap().search(data).unwrap()
    }

    /// go-jmespath's `to_string` is `json.Marshal` of what `encoding/json`
    /// decoded (aws/secrets-store-csi-driver-provider-aws `provider/secret_value.go`
    /// searches a `json.Unmarshal` into `interface{}`).
    #[test]
    fn to_string_writes_what_go_writes() {
        let doc = r#"{"f": 1.0, "e": 1e3, "i": 5432, "s": "<x>", "o": {"b": "<&>", "a": 1.50}, "t": true, "n": null}"#;
        for (expression, want) in [
            ("to_string(f)", "1"),
            ("to_string(e)", "1000"),
            ("to_string(i)", "5432"),
            ("to_string(s)", "<x>"),
            ("to_string(o)", r#"{"a":1.5,"b":"\u003c\u0026\u003e"}"#),
            ("to_string(t)", "true"),
            ("to_string(n)", "null"),
        ] {
            assert_eq!(
                search(doc, expression).as_string().map(String::as_str),
                Some(want),
                "{expression}"
            );
        }
        // The other builtins are still there.
        assert_eq!(search(doc, "length(o)").as_number(), Some(2.0));
    }
}
