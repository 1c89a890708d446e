//! `sscsi render`: what a pod would see of a SecretProviderClass, fetched
//! with the caller's own credentials through the same engine a mount uses,
//! and written with the same atomic writer (layout, modes, built files;
//! nothing outside the directory).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sscsi_api::SecretProviderClass;
use sscsi_core::{PodInfo, SecretBytes, ServiceAccountToken};
use sscsi_engine::{Engine, Fetch, Identity, Purpose};

use crate::cli::RenderArgs;
use crate::providers::{Caller, attach_external, build};

pub async fn run(args: RenderArgs) -> anyhow::Result<()> {
    let class = read_class(&args.class, args.name.as_deref())?;
    let namespace = args.pod_namespace.clone().unwrap_or_else(|| class.namespace_or_default());
    let tokens = pairs("--token-file", &args.token_files)?
        .into_iter()
        .map(|(audience, path)| {
            let token = read_secret(&path)?;
            Ok((audience, ServiceAccountToken { token, expiration_timestamp: String::new() }))
        })
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    let secrets = pairs("--secret-file", &args.secret_files)?
        .into_iter()
        .map(|(key, path)| Ok((key, read_secret(&path)?)))
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    let attributes: BTreeMap<String, String> = pairs("--attribute", &args.attributes)?
        .into_iter()
        .map(|(k, v)| (k, v.display().to_string()))
        .collect();
    // A pod's token for a provider's audience means: act as that pod.
    // Without one, the caller's own credentials.
    #[cfg(any(feature = "aws", feature = "vault"))]
    let has = |audience: &str| tokens.contains_key(audience);
    let caller = Caller {
        #[cfg(feature = "aws")]
        aws_role_arn: args.aws_role_arn.clone(),
        #[cfg(feature = "aws")]
        aws_default_chain: !has("sts.amazonaws.com") && !has("pods.eks.amazonaws.com"),
        #[cfg(feature = "vault")]
        vault_token: match (&args.vault_token_file, std::env::var("VAULT_TOKEN")) {
            (Some(path), _) => Some(read_secret(path)?),
            (None, Ok(token)) if !token.is_empty() && !has("vault") => {
                Some(SecretBytes::from(token))
            }
            _ => None,
        },
    };
    let client = match &args.kubeconfig {
        Some(path) => Some(sscsi_kube::client(Some(path)).await.context("--kubeconfig")?),
        None => None,
    };
    let stats = crate::providers::backend_stats(&args.provider)?;
    let mut registry = prometheus_client::registry::Registry::default();
    let mut providers = build(args.provider, client.as_ref(), None, &stats, caller).await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    attach_external(&mut providers, args.external, &stats, &mut registry, &shutdown);

    let pod = PodInfo {
        name: args.pod_name.clone(),
        namespace,
        uid: "sscsi-render".to_owned(),
        service_account: args.service_account.clone(),
    };
    let engine = Engine::new(providers, std::time::Duration::ZERO);
    let fetch = Fetch {
        class: &class,
        attributes: &attributes,
        identity: Identity { pod: &pod, tokens: &tokens, secrets: &secrets },
        held: &[],
        mounted: None,
        purpose: Purpose::Forced,
        target_path: None,
    };
    let (fetched, _) = engine.fetch(fetch).await;
    let fetched =
        fetched.with_context(|| format!("SecretProviderClass {}", class.qualified_name()))?;
    if fetched.written_by_provider {
        bail!("provider {:?} writes volumes itself: nothing to render", class.spec.provider);
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}", args.out.display()))?;
    sscsi_mount::AtomicWriter::new(&args.out)
        .write(&fetched.files)
        .with_context(|| format!("writing {}", args.out.display()))?;
    for file in &fetched.files {
        tracing::info!(path = %file.path, mode = format!("{:o}", file.mode), "written");
    }
    Ok(())
}

/// The first SecretProviderClass of `path`, or the one named `name`.
fn read_class(path: &Path, name: Option<&str>) -> anyhow::Result<SecretProviderClass> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let documents = serde_saphyr::from_multiple::<serde_json::Value>(&text)
        .with_context(|| format!("{}: not YAML", path.display()))?;
    for document in documents {
        let field = |f: &str| document.get(f).and_then(|v| v.as_str()).unwrap_or_default();
        if !SecretProviderClass::is_served(field("apiVersion"), field("kind")) {
            continue;
        }
        let class: SecretProviderClass = serde_json::from_value(document)
            .with_context(|| format!("{}: not a SecretProviderClass", path.display()))?;
        if name.is_none_or(|n| n == class.name_str()) {
            return Ok(class);
        }
    }
    match name {
        Some(name) => bail!("{}: no SecretProviderClass named {name:?}", path.display()),
        None => bail!("{}: no SecretProviderClass", path.display()),
    }
}

/// `KEY=VALUE` pairs of a repeated flag.
fn pairs(flag: &str, values: &[String]) -> anyhow::Result<Vec<(String, PathBuf)>> {
    values
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), PathBuf::from(value))),
            _ => bail!("{flag}: {pair:?} is not KEY=VALUE"),
        })
        .collect()
}

/// A file that holds a credential, trailing newline dropped.
fn read_secret(path: &Path) -> anyhow::Result<SecretBytes> {
    let mut bytes = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    Ok(SecretBytes::new(bytes))
}
