//! The HTTP rendering of [`Error`]: the one table from stable code to status, and the
//! JSON body. Internal detail is logged here; clients get a message that never echoes
//! what they sent. A second surface (the Vault-compatible layer) adds a renderer of its
//! own over the same `status` table, never a second mapping.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::{Code, Error};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `invalid_request`, `unauthenticated`, `forbidden`,
    /// `not_found`, `method_not_allowed`, `key_destroyed`, `payload_too_large`,
    /// `invalid_value`, `real_value_refused`, `rate_limited`, `approval_required`, `approval_invalid`,
    /// `identity_suspended`,
    /// `integrity_error`, `unavailable`, `internal`.
    pub code: &'static str,
    pub message: String,
    /// With `approval_required`: the held request an officer approves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// With `approval_required`: the anomaly rules that fired (`new_origin`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasons: Option<Vec<&'static str>>,
}

/// The only place that decides an HTTP status.
pub(crate) fn status(code: Code) -> StatusCode {
    match code {
        Code::InvalidRequest => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Forbidden => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        Code::KeyDestroyed => StatusCode::GONE,
        Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Code::InvalidValue | Code::RealValueRefused => StatusCode::UNPROCESSABLE_ENTITY,
        Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Code::ApprovalRequired | Code::ApprovalInvalid | Code::IdentitySuspended => {
            StatusCode::FORBIDDEN
        }
        Code::IntegrityError | Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Logs what the client will not see.
fn log(e: &Error) {
    match e {
        Error::Unavailable(detail) => tracing::warn!(detail, "request failed closed"),
        Error::Internal(detail) => tracing::error!(detail, "internal error"),
        Error::Integrity => tracing::error!("a stored record failed its integrity check"),
        _ => {}
    }
}

impl Error {
    /// The JSON body of this error, also used for one failed item of a batch. Logs
    /// what the client will not see.
    pub fn body(&self) -> ErrorBody {
        log(self);
        let (request_id, reasons) = match self {
            Error::ApprovalRequired {
                request_id,
                reasons,
            } => (Some(request_id.clone()), Some(reasons.clone())),
            _ => (None, None),
        };
        ErrorBody {
            error: ErrorDetail {
                code: self.code().as_str(),
                message: self.public_message().into_owned(),
                request_id,
                reasons,
            },
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut resp = (status(self.code()), Json(self.body())).into_response();
        if let Some(wait) = self.retry_after()
            && let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_documented_status() {
        let expected = [
            ("invalid_request", 400),
            ("unauthenticated", 401),
            ("forbidden", 403),
            ("not_found", 404),
            ("method_not_allowed", 405),
            ("key_destroyed", 410),
            ("payload_too_large", 413),
            ("invalid_value", 422),
            ("real_value_refused", 422),
            ("rate_limited", 429),
            ("approval_required", 403),
            ("approval_invalid", 403),
            ("identity_suspended", 403),
            ("integrity_error", 500),
            ("unavailable", 503),
            ("internal", 500),
        ];
        assert_eq!(expected.len(), Code::ALL.len());
        for c in Code::ALL {
            let want = expected.iter().find(|(s, _)| *s == c.as_str());
            assert_eq!(
                want.map(|w| w.1),
                Some(status(c).as_u16()),
                "{}",
                c.as_str()
            );
        }
    }

    #[test]
    fn retryable_answers_carry_retry_after() {
        let resp = Error::RateLimited {
            message: "slow down".into(),
            retry_after: std::time::Duration::from_secs(42),
        }
        .into_response();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "42");
        let resp = Error::Unavailable("hsm gone".into()).into_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        assert!(
            Error::NotFound
                .into_response()
                .headers()
                .get(header::RETRY_AFTER)
                .is_none()
        );
    }
}
