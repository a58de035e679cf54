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
    pub keyring: String,
    /// Base64 (standard alphabet).
    #[schema(value_type = String)]
    pub plaintext: SecretField,
    /// Base64; bound as additional authenticated data, needed again to decrypt.
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
    pub ciphertext: String,
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
    responses((status = 200, body = CiphertextResponse), (status = 403, body = ErrorBody)))]
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
    responses((status = 200, body = DecryptResponse), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
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
    responses((status = 200, body = CiphertextResponse), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
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
