//! The one place that decides HTTP status and stable error code. Internal detail is
//! logged; clients get a message that never echoes what they sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::tokenize::ServiceError;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `invalid_request`, `unauthenticated`, `forbidden`,
    /// `not_found`, `payload_too_large`, `invalid_value`, `rate_limited`, `unavailable`,
    /// `key_destroyed`, `integrity_error`, `method_not_allowed`, `internal`.
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: ErrorDetail,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            detail: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "the client certificate names no identity (no SAN URI and no CN)",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    pub fn unavailable(detail: &str) -> Self {
        tracing::warn!(detail, "request failed closed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the vault cannot serve this request now (HSM, database or audit trail unavailable); retry later",
        )
    }

    pub fn detail(&self) -> &ErrorDetail {
        &self.detail
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let code = e.code();
        match e {
            ServiceError::InvalidRequest(m) => Self::new(StatusCode::BAD_REQUEST, code, m),
            ServiceError::InvalidValue(m) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, m),
            ServiceError::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, code, m),
            ServiceError::NotFound => Self::new(StatusCode::NOT_FOUND, code, "no such token"),
            ServiceError::KeyDestroyed(m) => Self::new(StatusCode::GONE, code, m),
            ServiceError::Integrity => {
                tracing::error!("a stored record failed its integrity check");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    code,
                    "the stored record failed its integrity check and was not returned",
                )
            }
            ServiceError::Unavailable(detail) => Self::unavailable(&detail),
            ServiceError::Internal(detail) => {
                tracing::error!(detail, "internal error");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, code, "internal error")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = self.status == StatusCode::SERVICE_UNAVAILABLE
            || self.status == StatusCode::TOO_MANY_REQUESTS;
        let mut resp = (self.status, Json(ErrorBody { error: self.detail })).into_response();
        if retry {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
