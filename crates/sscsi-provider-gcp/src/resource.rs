//! Resource names, classified as upstream does: its patterns are anchored at
//! the end only, so a prefix before `projects/` is accepted, as upstream
//! accepts it.

/// Upstream's limit on a location's length.
const LOCATION_LIMIT: usize = 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// A Secret Manager secret version; `location` is `None` for the global service.
    Secret { location: Option<String> },
    /// A Parameter Manager parameter version; `location` is `None` for `global`.
    Parameter { location: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("Invalid location: {0}, location length exceeds limit")]
    SecretLocation(String),
    #[error("Invalid location: {0}")]
    ParameterLocation(String),
    #[error("unknown resource type")]
    Unknown,
}

/// The segments after the last `projects/` that match `shape`, where `*` is
/// any non-empty segment without `/`; `None` when the name does not end so.
fn match_tail<'a>(name: &'a str, shape: &[&str]) -> Option<Vec<&'a str>> {
    let segments: Vec<&str> = name.split('/').collect();
    let tail = segments.get(segments.len().checked_sub(shape.len())?..)?;
    let matched = tail.iter().zip(shape).all(|(seg, want)| match *want {
        "*" => !seg.is_empty(),
        literal => *seg == literal,
    });
    matched.then(|| tail.to_vec())
}

pub fn classify(name: &str) -> Result<Resource, ResourceError> {
    // Parameter Manager first: its names also have a `locations/` part.
    if match_tail(
        name,
        &["projects", "*", "locations", "global", "parameters", "*", "versions", "*"],
    )
    .is_some()
    {
        return Ok(Resource::Parameter { location: None });
    }
    if let Some(m) =
        match_tail(name, &["projects", "*", "locations", "*", "parameters", "*", "versions", "*"])
    {
        if m[3].len() > LOCATION_LIMIT {
            return Err(ResourceError::ParameterLocation(m[3].to_owned()));
        }
        return Ok(Resource::Parameter { location: Some(m[3].to_owned()) });
    }
    if match_tail(name, &["projects", "*", "secrets", "*", "versions", "*"]).is_some() {
        return Ok(Resource::Secret { location: None });
    }
    if let Some(m) =
        match_tail(name, &["projects", "*", "locations", "*", "secrets", "*", "versions", "*"])
    {
        if m[3].len() > LOCATION_LIMIT {
            return Err(ResourceError::SecretLocation(m[3].to_owned()));
        }
        return Ok(Resource::Secret { location: Some(m[3].to_owned()) });
    }
    Err(ResourceError::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_upstream_classifies_them() {
        let secret =
            |location: Option<&str>| Resource::Secret { location: location.map(str::to_owned) };
        let parameter =
            |location: Option<&str>| Resource::Parameter { location: location.map(str::to_owned) };
        assert_eq!(classify("projects/p/secrets/s/versions/latest"), Ok(secret(None)));
        assert_eq!(
            classify("projects/p/locations/us-east1/secrets/s/versions/3"),
            Ok(secret(Some("us-east1")))
        );
        assert_eq!(
            classify("projects/p/locations/global/parameters/x/versions/v1"),
            Ok(parameter(None))
        );
        assert_eq!(
            classify("projects/p/locations/europe-west4/parameters/x/versions/v1"),
            Ok(parameter(Some("europe-west4")))
        );
        // Anchored at the end only, as upstream's patterns are.
        assert_eq!(
            classify("//secretmanager.googleapis.com/projects/p/secrets/s/versions/1"),
            Ok(secret(None))
        );
        assert_eq!(classify("projects/p/secrets/s"), Err(ResourceError::Unknown));
        assert_eq!(classify("projects/p/secrets/s/versions/"), Err(ResourceError::Unknown));
        let long = "x".repeat(31);
        assert_eq!(
            classify(&format!("projects/p/locations/{long}/secrets/s/versions/1")),
            Err(ResourceError::SecretLocation(long.clone()))
        );
        assert_eq!(
            classify(&format!("projects/p/locations/{long}/parameters/x/versions/1"))
                .unwrap_err()
                .to_string(),
            format!("Invalid location: {long}")
        );
    }
}
