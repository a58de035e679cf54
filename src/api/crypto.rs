//! `/v1/encrypt`, `/v1/decrypt`, `/v1/rewrap`: base64 in and out, optional context as AAD.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::ErrorBody;
use super::json::{ApiJson, Revealed, SecretField};
use super::{AppState, ok};
use crate::error::Error;
use crate::vault::now_ms;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/encrypt", post(encrypt))
        .route("/v1/decrypt", post(decrypt))
        .route("/v1/rewrap", post(rewrap))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EncryptRequest {
    /// One of the keyrings in the vault's config (this document lists them).
    #[schema(pattern = r"^[a-z][a-z0-9_-]{0,31}$")]
    pub keyring: String,
    /// Base64 (standard alphabet, padded).
    #[schema(value_type = String, pattern = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$")]
    pub plaintext: SecretField,
    /// Base64 (standard alphabet, padded); bound as additional authenticated data,
    /// needed again to decrypt.
    #[schema(
        pattern = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$"
    )]
    pub context: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CiphertextResponse {
    /// `tv1:<keyring>:<version>:<base64url>`
    pub ciphertext: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecryptRequest {
    /// `tv1:<keyring>:<version>:<base64url>`, as `/v1/encrypt` returned it.
    #[schema(pattern = r"^tv1:[a-z][a-z0-9_-]{0,31}:[1-9][0-9]{0,8}:[A-Za-z0-9_-]{38,}$")]
    pub ciphertext: String,
    /// The context given to `/v1/encrypt` (base64, standard alphabet, padded).
    #[schema(
        pattern = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$"
    )]
    pub context: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DecryptResponse {
    /// Base64 (standard alphabet).
    #[schema(value_type = String)]
    pub plaintext: Revealed,
}

fn b64(field: &str, s: Option<&str>) -> Result<Vec<u8>, Error> {
    s.map_or(Ok(Vec::new()), |s| {
        STANDARD
            .decode(s)
            .map_err(|_| Error::InvalidRequest(format!("`{field}` is not valid base64")))
    })
}

#[utoipa::path(post, path = "/v1/encrypt", tag = "encryption", request_body = EncryptRequest,
    responses((status = 200, body = CiphertextResponse, description = "The ciphertext"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the body does not match this document"),
        (status = 401, body = ErrorBody, description = "`unauthenticated`"),
        (status = 403, body = ErrorBody, description = "`forbidden`: no `encrypt:<keyring>` permission"),
        (status = 413, body = ErrorBody, description = "`payload_too_large`: the body exceeds `limits.max_body_bytes`"),
        (status = 429, body = ErrorBody, description = "`rate_limited`"),
        (status = 500, body = ErrorBody, description = "`internal` or `integrity_error`"),
        (status = 503, body = ErrorBody, description = "`unavailable`: the HSM, database or audit trail failed")))]
async fn encrypt(
    State(state): State<AppState>,
    Caller(who): Caller,
    ApiJson(req): ApiJson<EncryptRequest>,
) -> Result<Response, Error> {
    let plaintext = zeroize::Zeroizing::new(b64("plaintext", Some(req.plaintext.0.as_str()))?);
    let context = b64("context", req.context.as_deref())?;
    let ciphertext = state
        .services
        .crypto
        .encrypt(&who, &req.keyring, &plaintext, &context, now_ms())
        .await?;
    Ok(ok(CiphertextResponse { ciphertext }))
}

#[utoipa::path(post, path = "/v1/decrypt", tag = "encryption", request_body = DecryptRequest,
    responses((status = 200, body = DecryptResponse, description = "The plaintext"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the body does not match this document"),
        (status = 401, body = ErrorBody, description = "`unauthenticated`"),
        (status = 403, body = ErrorBody, description = "`forbidden`: no `decrypt:<keyring>` permission"),
        (status = 413, body = ErrorBody, description = "`payload_too_large`: the body exceeds `limits.max_body_bytes`"),
        (status = 410, body = ErrorBody, description = "`key_destroyed`: the ciphertext's key version was destroyed"),
        (status = 422, body = ErrorBody, description = "`invalid_value`: the ciphertext does not open under its key version and this context"),
        (status = 429, body = ErrorBody, description = "`rate_limited`"),
        (status = 500, body = ErrorBody, description = "`internal` or `integrity_error`"),
        (status = 503, body = ErrorBody, description = "`unavailable`: the HSM, database or audit trail failed")))]
async fn decrypt(
    State(state): State<AppState>,
    Caller(who): Caller,
    ApiJson(req): ApiJson<DecryptRequest>,
) -> Result<Response, Error> {
    let context = b64("context", req.context.as_deref())?;
    let plain = state
        .services
        .crypto
        .decrypt(&who, &req.ciphertext, &context, now_ms())
        .await?;
    Ok(ok(DecryptResponse {
        plaintext: Revealed::from(STANDARD.encode(&plain)),
    }))
}

#[utoipa::path(post, path = "/v1/rewrap", tag = "encryption", request_body = DecryptRequest,
    responses((status = 200, body = CiphertextResponse, description = "The ciphertext under the active version"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the body does not match this document"),
        (status = 401, body = ErrorBody, description = "`unauthenticated`"),
        (status = 403, body = ErrorBody, description = "`forbidden`: no `encrypt:<keyring>` permission"),
        (status = 413, body = ErrorBody, description = "`payload_too_large`: the body exceeds `limits.max_body_bytes`"),
        (status = 410, body = ErrorBody, description = "`key_destroyed`: the ciphertext's key version was destroyed"),
        (status = 422, body = ErrorBody, description = "`invalid_value`: the ciphertext does not open under its key version and this context"),
        (status = 429, body = ErrorBody, description = "`rate_limited`"),
        (status = 500, body = ErrorBody, description = "`internal` or `integrity_error`"),
        (status = 503, body = ErrorBody, description = "`unavailable`: the HSM, database or audit trail failed")))]
async fn rewrap(
    State(state): State<AppState>,
    Caller(who): Caller,
    ApiJson(req): ApiJson<DecryptRequest>,
) -> Result<Response, Error> {
    let context = b64("context", req.context.as_deref())?;
    let ciphertext = state
        .services
        .crypto
        .rewrap(&who, &req.ciphertext, &context, now_ms())
        .await?;
    Ok(ok(CiphertextResponse { ciphertext }))
}
