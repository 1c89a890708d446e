//! How often a class's content is refreshed, as the class asks
//! (`sscsi.io/refresh`): the operator's interval, another one (never below
//! the operator's floor), or never after the mount.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::params::{ParamError, parse_duration};

/// Parameters under this prefix are sscsi's own: no provider sees them.
pub const RESERVED_PREFIX: &str = "sscsi.io/";
pub const REFRESH_PARAMETER: &str = "sscsi.io/refresh";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Refresh {
    /// `--rotation-poll-interval`.
    #[default]
    Default,
    /// This class's own interval.
    Every(Duration),
    /// Fetched at mount, never again for the life of the volume.
    Once,
}

impl Refresh {
    /// `default` (or absent), `once`, or a duration such as `30s` or `1h`.
    pub fn from_parameters(parameters: &BTreeMap<String, String>) -> Result<Self, ParamError> {
        let Some(value) = parameters.get(REFRESH_PARAMETER) else {
            return Ok(Self::Default);
        };
        match value.trim() {
            "" | "default" => Ok(Self::Default),
            "once" => Ok(Self::Once),
            other => match parse_duration(other) {
                Ok(interval) if !interval.is_zero() => Ok(Self::Every(interval)),
                _ => Err(ParamError::new(
                    REFRESH_PARAMETER,
                    format!(
                        "{value:?} is not \"default\", \"once\" or an interval like 30s, 5m, 1h"
                    ),
                )),
            },
        }
    }

    /// The interval in force, with the operator's `global` one and `floor`;
    /// `None`: never refreshed.
    pub fn interval(self, global: Duration, floor: Duration) -> Option<Duration> {
        match self {
            Self::Default => Some(global),
            Self::Every(interval) => Some(interval.max(floor)),
            Self::Once => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(value: &str) -> Result<Refresh, ParamError> {
        Refresh::from_parameters(&BTreeMap::from([(REFRESH_PARAMETER.into(), value.into())]))
    }

    #[test]
    fn parsed_and_bounded_by_the_floor() {
        assert_eq!(Refresh::from_parameters(&BTreeMap::new()), Ok(Refresh::Default));
        assert_eq!(of("default"), Ok(Refresh::Default));
        assert_eq!(of("once"), Ok(Refresh::Once));
        assert_eq!(of("90s"), Ok(Refresh::Every(Duration::from_secs(90))));
        for bad in ["0s", "never", "-5m", "5"] {
            let err = of(bad).unwrap_err().to_string();
            assert!(err.starts_with("parameter \"sscsi.io/refresh\""), "{err}");
        }
        let (global, floor) = (Duration::from_secs(120), Duration::from_secs(10));
        assert_eq!(Refresh::Default.interval(global, floor), Some(global));
        assert_eq!(Refresh::Every(Duration::from_secs(1)).interval(global, floor), Some(floor));
        assert_eq!(
            Refresh::Every(Duration::from_secs(600)).interval(global, floor),
            Some(Duration::from_secs(600))
        );
        assert_eq!(Refresh::Once.interval(global, floor), None);
    }
}
