//! The top-level parameters of an `aws` SecretProviderClass (SPC parameters
//! merged with the volume attributes), read with ASCP's rules.

use std::collections::BTreeMap;

use sscsi_core::params::parse_go_bool;

use crate::descriptor::{DescriptorError, path_translation};

/// Which Pod Identity agent endpoint to use (`preferredAddressType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressType {
    /// IPv4, then IPv6.
    #[default]
    Auto,
    Ipv4,
    Ipv6,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsParams {
    /// The `objects` YAML, parsed later with [`crate::descriptor::parse_objects`].
    pub objects: String,
    /// `region`; when absent, `AWS_REGION`, then the node's
    /// `topology.kubernetes.io/region` label.
    pub region: Option<String>,
    pub failover_region: Option<String>,
    /// `pathTranslation`: `None` when off.
    pub translate: Option<char>,
    /// `usePodIdentity`: EKS Pod Identity instead of IRSA.
    pub use_pod_identity: bool,
    pub preferred_address_type: AddressType,
}

impl AwsParams {
    pub fn parse(parameters: &BTreeMap<String, String>) -> Result<Self, DescriptorError> {
        let get = |key: &str| parameters.get(key).map(String::as_str).filter(|v| !v.is_empty());
        let use_pod_identity = match get("usePodIdentity") {
            None => false,
            Some(v) => parse_go_bool(v).ok_or_else(|| {
                DescriptorError(format!(
                    "failed to parse usePodIdentity value, error: strconv.ParseBool: parsing {v:?}: invalid syntax"
                ))
            })?,
        };
        // Anything but ipv4/ipv6 (any case) means auto, as ASCP reads it.
        let preferred_address_type =
            match get("preferredAddressType").map(str::to_ascii_lowercase).as_deref() {
                Some("ipv4") => AddressType::Ipv4,
                Some("ipv6") => AddressType::Ipv6,
                _ => AddressType::Auto,
            };
        Ok(Self {
            objects: get("objects").unwrap_or_default().to_owned(),
            region: get("region").map(str::to_owned),
            failover_region: get("failoverRegion").map(str::to_owned),
            translate: path_translation(get("pathTranslation"))?,
            use_pod_identity,
            preferred_address_type,
        })
    }

    /// The regions to read from, primary first, once the primary is known.
    pub fn regions(&self, primary: String) -> Result<Vec<String>, DescriptorError> {
        match self.failover_region.as_deref() {
            None => Ok(vec![primary]),
            Some(failover) if failover == primary => Err(DescriptorError(format!(
                "{primary}: failover region cannot be the same as the primary region"
            ))),
            Some(failover) => Ok(vec![primary, failover.to_owned()]),
        }
    }
}

/// Go's `strconv.ParseBool`.
#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Result<AwsParams, DescriptorError> {
        AwsParams::parse(&pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    #[test]
    fn defaults() {
        let p = params(&[("objects", "- objectName: a")]).unwrap();
        assert_eq!(p.region, None);
        assert_eq!(p.translate, Some('_'));
        assert!(!p.use_pod_identity);
        assert_eq!(p.preferred_address_type, AddressType::Auto);
        assert_eq!(p.regions("us-west-2".into()).unwrap(), vec!["us-west-2"]);
    }

    #[test]
    fn pod_identity_takes_go_booleans() {
        for (v, want) in [("true", true), ("T", true), ("1", true), ("False", false), ("0", false)]
        {
            assert_eq!(params(&[("usePodIdentity", v)]).unwrap().use_pod_identity, want, "{v}");
        }
        assert_eq!(
            params(&[("usePodIdentity", "yes")]).unwrap_err().0,
            r#"failed to parse usePodIdentity value, error: strconv.ParseBool: parsing "yes": invalid syntax"#
        );
    }

    #[test]
    fn address_types_and_regions() {
        assert_eq!(
            params(&[("preferredAddressType", "IPv6")]).unwrap().preferred_address_type,
            AddressType::Ipv6
        );
        assert_eq!(
            params(&[("preferredAddressType", "ipv4")]).unwrap().preferred_address_type,
            AddressType::Ipv4
        );
        assert_eq!(
            params(&[("preferredAddressType", "bogus")]).unwrap().preferred_address_type,
            AddressType::Auto
        );
        let p = params(&[("region", "us-west-2"), ("failoverRegion", "us-east-1")]).unwrap();
        assert_eq!(p.regions("us-west-2".into()).unwrap(), vec!["us-west-2", "us-east-1"]);
        let same = params(&[("failoverRegion", "us-west-2")]).unwrap();
        assert_eq!(
            same.regions("us-west-2".into()).unwrap_err().0,
            "us-west-2: failover region cannot be the same as the primary region"
        );
        assert!(params(&[("pathTranslation", "ab")]).is_err());
    }
}
