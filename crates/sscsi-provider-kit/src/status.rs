//! One reading of a backend's HTTP answer for every provider: which gRPC
//! code a failure deserves, and whether it is worth trying again (here, or
//! in another region) or final.

use sscsi_core::ErrorCode;

/// What a failed backend answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A 4xx the caller must fix: a 400 that names its reason (AWS answers
    /// a missing secret so), 409, 412, ...
    Rejected,
    /// A bare 400: the request is malformed.
    Invalid,
    /// 401: no valid credentials.
    Unauthenticated,
    /// 403, or AWS's `AccessDenied*` (a 400): the identity may not read this.
    Denied,
    /// 404.
    NotFound,
    /// 429, or a service's throttling error code: slow down and try again.
    Throttled,
    /// 408, 5xx, or no answer at all: the backend or the path to it failed.
    Unavailable,
}

/// AWS error codes the SDKs' standard retry treats as throttling (they come
/// with a 400 as often as with a 429).
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

impl Failure {
    /// A failed answer by HTTP status (`None`: no answer), and the service's
    /// own error code when it sends one (AWS's JSON protocols answer most
    /// failures with a 400 and say which in the code).
    pub fn classify(status: Option<u16>, service_code: Option<&str>) -> Self {
        match service_code {
            Some(c) if THROTTLING_CODES.contains(&c) => return Self::Throttled,
            Some("AccessDeniedException" | "AccessDenied") => return Self::Denied,
            _ => {}
        }
        match status {
            None | Some(408 | 500..=599) => Self::Unavailable,
            Some(400) if service_code.is_some() => Self::Rejected,
            Some(400) => Self::Invalid,
            Some(401) => Self::Unauthenticated,
            Some(403) => Self::Denied,
            Some(404) => Self::NotFound,
            Some(429) => Self::Throttled,
            Some(_) => Self::Rejected,
        }
    }

    pub fn code(self) -> ErrorCode {
        match self {
            Self::Rejected => ErrorCode::FailedPrecondition,
            Self::Invalid => ErrorCode::InvalidArgument,
            Self::Unauthenticated => ErrorCode::Unauthenticated,
            Self::Denied => ErrorCode::PermissionDenied,
            Self::NotFound => ErrorCode::NotFound,
            Self::Throttled => ErrorCode::ResourceExhausted,
            Self::Unavailable => ErrorCode::Unavailable,
        }
    }

    /// Worth trying again after a pause: the same request may succeed.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Throttled | Self::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes() {
        for (status, code, want) in [
            (Some(400), None, Failure::Invalid),
            (Some(400), Some("ThrottlingException"), Failure::Throttled),
            (Some(400), Some("ResourceNotFoundException"), Failure::Rejected),
            (Some(400), Some("AccessDeniedException"), Failure::Denied),
            (Some(401), None, Failure::Unauthenticated),
            (Some(403), Some("AccessDeniedException"), Failure::Denied),
            (Some(404), None, Failure::NotFound),
            (Some(409), None, Failure::Rejected),
            (Some(408), None, Failure::Unavailable),
            (Some(429), None, Failure::Throttled),
            (Some(503), None, Failure::Unavailable),
            (None, None, Failure::Unavailable),
        ] {
            assert_eq!(Failure::classify(status, code), want, "{status:?} {code:?}");
        }
        assert_eq!(Failure::Throttled.code(), ErrorCode::ResourceExhausted);
        assert_eq!(Failure::Denied.code(), ErrorCode::PermissionDenied);
        assert!(Failure::Throttled.is_transient() && Failure::Unavailable.is_transient());
        assert!(!Failure::Denied.is_transient() && !Failure::NotFound.is_transient());
    }
}
