//! Azure clouds: where AAD and Key Vault are. The named clouds are
//! go-autorest's (names matched case-insensitively); `AzureStackCloud` and
//! `cloudEnvFileName` read a go-autorest environment JSON file, per mount,
//! never through a process-wide environment variable as upstream does.

use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cloud {
    /// The AAD authority host, e.g. `https://login.microsoftonline.com/`.
    pub authority_host: String,
    /// Key Vault's DNS suffix: a vault's URL is `https://<name>.<suffix>/`.
    pub key_vault_dns_suffix: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudError {
    #[error(
        "cloudName {0} is not valid, error: autorest/azure: There is no cloud environment matching the name {0:?}"
    )]
    Unknown(String),
    #[error("cloudName AzureStackCloud needs cloudEnvFileName: the environment's endpoints")]
    NoFile,
    #[error("cloudName {name} is not valid, error: reading {path}: {message}")]
    File { name: String, path: String, message: String },
}

#[derive(Debug, Deserialize)]
struct EnvironmentFile {
    #[serde(rename = "activeDirectoryEndpoint")]
    active_directory_endpoint: String,
    #[serde(rename = "keyVaultDNSSuffix")]
    key_vault_dns_suffix: String,
}

fn named(authority: &str, suffix: &str) -> Cloud {
    Cloud { authority_host: authority.to_owned(), key_vault_dns_suffix: suffix.to_owned() }
}

/// The cloud a class names (`cloudName`, else the driver's default), with a
/// custom environment file when `cloudEnvFileName` is set.
pub fn resolve(
    name: Option<&str>,
    env_file: Option<&str>,
    default: &str,
) -> Result<Cloud, CloudError> {
    let name = name.unwrap_or(default);
    let upper = name.to_ascii_uppercase();
    // A class's environment file describes its cloud, whatever the name.
    if let Some(path) = env_file {
        return from_file(name, Path::new(path));
    }
    Ok(match upper.as_str() {
        "" | "AZUREPUBLICCLOUD" => named("https://login.microsoftonline.com/", "vault.azure.net"),
        "AZUREUSGOVERNMENTCLOUD" => {
            named("https://login.microsoftonline.us/", "vault.usgovcloudapi.net")
        }
        "AZURECHINACLOUD" => named("https://login.chinacloudapi.cn/", "vault.azure.cn"),
        "AZUREGERMANCLOUD" => named("https://login.microsoftonline.de/", "vault.microsoftazure.de"),
        "AZURESTACKCLOUD" => return Err(CloudError::NoFile),
        _ => return Err(CloudError::Unknown(name.to_owned())),
    })
}

fn from_file(name: &str, path: &Path) -> Result<Cloud, CloudError> {
    let failed = |message: String| CloudError::File {
        name: name.to_owned(),
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    let env: EnvironmentFile = serde_json::from_str(&text).map_err(|e| failed(e.to_string()))?;
    Ok(named(&env.active_directory_endpoint, env.key_vault_dns_suffix.trim_start_matches('.')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_clouds_and_files() {
        let public = resolve(None, None, "AzurePublicCloud").unwrap();
        assert_eq!(public.key_vault_dns_suffix, "vault.azure.net");
        let china = resolve(Some("azurechinacloud"), None, "AzurePublicCloud").unwrap();
        assert_eq!(china.authority_host, "https://login.chinacloudapi.cn/");
        let err = resolve(Some("Mars"), None, "AzurePublicCloud").unwrap_err();
        assert!(
            err.to_string().contains("There is no cloud environment matching the name \"Mars\"")
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("env.json");
        std::fs::write(
            &file,
            r#"{"name":"AzureStackCloud","activeDirectoryEndpoint":"https://login.stack/","keyVaultDNSSuffix":"vault.stack"}"#,
        )
        .unwrap();
        let stack = resolve(Some("AzureStackCloud"), file.to_str(), "AzurePublicCloud").unwrap();
        assert_eq!(stack, named("https://login.stack/", "vault.stack"));
        let err = resolve(Some("AzureStackCloud"), Some("/nonexistent"), "x").unwrap_err();
        assert!(err.to_string().contains("reading /nonexistent"), "{err}");
    }
}
