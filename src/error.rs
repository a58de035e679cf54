//! The one error type of the services, and the one list of stable error codes.
//!
//! Every surface (the native API, the CLI, later the Vault-compatible layer) answers with
//! an [`Error`]; each surface only renders it. The HTTP status of each [`Code`] is decided
//! in one private table in `api::error`, so a new code is one line here and one there.
//! No variant carries a submitted value: messages name fields and limits, never contents.

use std::borrow::Cow;
use std::time::Duration;

use crate::hsm::HsmError;
use crate::keys::KeyError;
use crate::store::StoreError;

/// A stable, machine-readable error code. Clients and tests rely on these strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    InvalidRequest,
    Unauthenticated,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    KeyDestroyed,
    PayloadTooLarge,
    InvalidValue,
    RealValueRefused,
    RateLimited,
    ApprovalRequired,
    ApprovalInvalid,
    IdentitySuspended,
    IntegrityError,
    Unavailable,
    Internal,
}

impl Code {
    /// Every code, for the documentation and the tests that pin the status table.
    pub const ALL: [Code; 16] = [
        Code::InvalidRequest,
        Code::Unauthenticated,
        Code::Forbidden,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::KeyDestroyed,
        Code::PayloadTooLarge,
        Code::InvalidValue,
        Code::RealValueRefused,
        Code::RateLimited,
        Code::ApprovalRequired,
        Code::ApprovalInvalid,
        Code::IdentitySuspended,
        Code::IntegrityError,
        Code::Unavailable,
        Code::Internal,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Code::InvalidRequest => "invalid_request",
            Code::Unauthenticated => "unauthenticated",
            Code::Forbidden => "forbidden",
            Code::NotFound => "not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::KeyDestroyed => "key_destroyed",
            Code::PayloadTooLarge => "payload_too_large",
            Code::InvalidValue => "invalid_value",
            Code::RealValueRefused => "real_value_refused",
            Code::RateLimited => "rate_limited",
            Code::ApprovalRequired => "approval_required",
            Code::ApprovalInvalid => "approval_invalid",
            Code::IdentitySuspended => "identity_suspended",
            Code::IntegrityError => "integrity_error",
            Code::Unavailable => "unavailable",
            Code::Internal => "internal",
        }
    }
}

/// Everything an operation can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or names something that does not exist.
    #[error("{0}")]
    InvalidRequest(String),
    /// The client certificate names no identity.
    #[error("the client certificate names no identity (no SAN URI and no CN)")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    /// An unknown token, or one the caller may not use: the two answer alike.
    #[error("no such token")]
    NotFound,
    /// No route answers this path.
    #[error("no such resource")]
    NoRoute,
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The key that protects the record was destroyed or retired.
    #[error("{0}")]
    KeyDestroyed(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The value itself is unacceptable (validation, or a ciphertext that does not open).
    #[error("{0}")]
    InvalidValue(String),
    /// A non-production vault refused a value that could be real (`crate::nonprod`);
    /// the text says which test values it accepts, never the value.
    #[error("{0}")]
    RealValue(&'static str),
    /// A rate limit or budget is spent; retry after the given time.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Duration,
    },
    /// The reveal scored as unusual for the caller: held until an officer approves it
    /// (`request_id` names the held request; `reasons` are the anomaly rules that fired).
    /// Nothing was revealed.
    #[error("this reveal needs an officer's approval; quote the request id to your security team")]
    ApprovalRequired {
        request_id: String,
        reasons: Vec<&'static str>,
    },
    /// The `Tokenvault-Approval` presented does not hold for this request: unknown, not
    /// the caller's, not approved, already used, expired, or narrower than what is
    /// asked. The text says which; nothing was revealed and the approval is kept.
    #[error("{0}")]
    ApprovalInvalid(&'static str),
    /// The identity is suspended (a block verdict of anomaly scoring) until an officer
    /// lifts the suspension.
    #[error("this identity is suspended; ask your security team")]
    Suspended,
    /// A stored record failed its integrity check; its value is never returned.
    #[error("the stored record failed its integrity check")]
    Integrity,
    /// The HSM, the database or the audit trail cannot serve now. The detail is for the
    /// log only: clients get a fixed text.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected state. The detail is for the log only.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidRequest(_) => Code::InvalidRequest,
            Error::Unauthenticated => Code::Unauthenticated,
            Error::Forbidden(_) => Code::Forbidden,
            Error::NotFound | Error::NoRoute => Code::NotFound,
            Error::MethodNotAllowed => Code::MethodNotAllowed,
            Error::KeyDestroyed(_) => Code::KeyDestroyed,
            Error::PayloadTooLarge(_) => Code::PayloadTooLarge,
            Error::InvalidValue(_) => Code::InvalidValue,
            Error::RealValue(_) => Code::RealValueRefused,
            Error::RateLimited { .. } => Code::RateLimited,
            Error::ApprovalRequired { .. } => Code::ApprovalRequired,
            Error::ApprovalInvalid(_) => Code::ApprovalInvalid,
            Error::Suspended => Code::IdentitySuspended,
            Error::Integrity => Code::IntegrityError,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Internal(_) => Code::Internal,
        }
    }

    /// What a client may read. Infrastructure detail stays in the log.
    pub fn public_message(&self) -> Cow<'_, str> {
        match self {
            Error::Integrity => {
                "the stored record failed its integrity check and was not returned".into()
            }
            Error::Unavailable(_) => "the vault cannot serve this request now (HSM, database or \
                 audit trail unavailable); retry later"
                .into(),
            Error::Internal(_) => "internal error".into(),
            other => other.to_string().into(),
        }
    }

    /// How long the client should wait before retrying, for the codes that invite it.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } => Some(*retry_after),
            Error::Unavailable(_) => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// Fail-closed errors stop a whole batch instead of failing one item.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Unavailable(e.to_string())
    }
}

impl From<KeyError> for Error {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Destroyed(..) | KeyError::Retired(..) => Error::KeyDestroyed(e.to_string()),
            KeyError::Hsm(HsmError::UnwrapFailed) | KeyError::KcvMismatch(..) => Error::Integrity,
            KeyError::Hsm(ref h) if h.is_unavailable() => Error::Unavailable(e.to_string()),
            KeyError::Store(_) | KeyError::NotInitialized(_) | KeyError::KekMissing(_) => {
                Error::Unavailable(e.to_string())
            }
            other => Error::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()), "{} twice", c.as_str());
            assert!(
                c.as_str()
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch == '_')
            );
        }
    }

    #[test]
    fn infrastructure_detail_never_reaches_the_client() {
        for e in [
            Error::Unavailable("database at 10.0.0.7 refused".into()),
            Error::Internal("row 7 of tokens".into()),
        ] {
            let public = e.public_message();
            assert!(!public.contains("10.0.0.7") && !public.contains("row 7"));
        }
        assert_eq!(
            Error::Unavailable(String::new()).retry_after(),
            Some(Duration::from_secs(1))
        );
        assert_eq!(Error::NotFound.retry_after(), None);
    }
}
