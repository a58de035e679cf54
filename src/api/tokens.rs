//! `/v1/tokenize`, `/v1/detokenize` (single and batch) and `/v1/tokens/{token}`.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::ErrorBody;
use super::json::{ApiJson, Revealed, SecretField};
use super::{AppState, ok};
use crate::error::Error;
use crate::keys::rfc3339;
use crate::tokenize::{Detokenized, RawValue, TokenFormat, TokenizeInput, Tokenized};
use crate::vault::now_ms;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tokenize", post(tokenize))
        .route("/v1/tokenize/batch", post(tokenize_batch))
        .route("/v1/detokenize", post(detokenize))
        .route("/v1/detokenize/batch", post(detokenize_batch))
        .route("/v1/tokens/{token}", get(token_info).delete(delete_token))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    /// Token type: `pan` or a type declared in the config.
    #[serde(rename = "type")]
    pub token_type: String,
    /// The value to protect. Never echoed in any response or error.
    #[schema(value_type = String)]
    pub value: SecretField,
    /// Token format; deterministic types always use their configured one.
    pub format: Option<TokenFormat>,
    /// Non-sensitive JSON object stored with the token.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// The token expires after this many seconds.
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenizeResponse {
    pub token: String,
    #[serde(rename = "type")]
    pub token_type: String,
    pub masked: String,
    /// Keyed fingerprint of the value (HMAC-SHA-256, base64url): equal values, equal
    /// fingerprints within the caller's namespace. Only with `fingerprint:<type>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl From<Tokenized> for TokenizeResponse {
    fn from(t: Tokenized) -> Self {
        Self {
            token: t.token,
            token_type: t.token_type,
            masked: t.masked,
            fingerprint: t.fingerprint,
            expires_at: t.expires_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenizeBatchRequest {
    #[schema(value_type = Vec<TokenizeRequest>)]
    pub items: Vec<serde_json::Value>,
}

/// One result of a batch: the result, or `{"error": …}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum BatchItem<T> {
    Ok(T),
    Err(ErrorBody),
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenizeBatchResponse {
    pub items: Vec<BatchItem<TokenizeResponse>>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DetokenizeRequest {
    pub token: String,
    /// Why the value is needed; recorded in the audit trail.
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DetokenizeResponse {
    pub token: String,
    #[serde(rename = "type")]
    pub token_type: String,
    #[schema(value_type = String)]
    pub value: Revealed,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DetokenizeBatchRequest {
    pub tokens: Vec<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DetokenizeBatchResponse {
    pub items: Vec<BatchItem<DetokenizeResponse>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenInfoResponse {
    pub token: String,
    #[serde(rename = "type")]
    pub token_type: String,
    pub masked: String,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    pub keyring: String,
    pub key_version: i64,
    pub created_at: String,
    pub expires_at: Option<String>,
}

fn check_batch(state: &AppState, n: usize) -> Result<(), Error> {
    let max = state.vault.settings.limits.max_batch;
    if n > max {
        return Err(Error::PayloadTooLarge(format!(
            "a batch holds at most {max} items; this one has {n}"
        )));
    }
    Ok(())
}

fn input(r: TokenizeRequest) -> TokenizeInput {
    TokenizeInput {
        token_type: r.token_type,
        value: RawValue(r.value.0),
        format: r.format,
        metadata: r.metadata,
        ttl_seconds: r.ttl_seconds,
    }
}

#[utoipa::path(post, path = "/v1/tokenize", tag = "tokens", request_body = TokenizeRequest,
    responses((status = 200, body = TokenizeResponse), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn tokenize(
    State(state): State<AppState>,
    Caller(who): Caller,
    ApiJson(req): ApiJson<TokenizeRequest>,
) -> Result<Response, Error> {
    let t = state
        .services
        .tokens
        .tokenize(&who, input(req), now_ms())
        .await?;
    Ok(ok(TokenizeResponse::from(t)))
}

#[utoipa::path(post, path = "/v1/tokenize/batch", tag = "tokens", request_body = TokenizeBatchRequest,
    responses((status = 200, body = TokenizeBatchResponse), (status = 413, body = ErrorBody)))]
async fn tokenize_batch(
    State(state): State<AppState>,
    Caller(who): Caller,
    ApiJson(req): ApiJson<TokenizeBatchRequest>,
) -> Result<Response, Error> {
    check_batch(&state, req.items.len())?;
    let now = now_ms();
    // All items at once: their writes land in the same group commit. Order is kept.
    let results = futures_util::future::join_all(req.items.into_iter().map(|raw| {
        let (state, who) = (&state, &who);
        async move {
            match serde_json::from_value::<TokenizeRequest>(raw) {
                Ok(r) => state.services.tokens.tokenize(who, input(r), now).await,
                Err(_) => Err(Error::InvalidRequest(
                    "item does not match the tokenize request shape".into(),
                )),
            }
        }
    }))
    .await;
    let mut items = Vec::with_capacity(results.len());
    for one in results {
        match one {
            Ok(t) => items.push(BatchItem::Ok(TokenizeResponse::from(t))),
            // A failing HSM or audit trail fails the whole batch closed.
            Err(e) if e.is_unavailable() => return Err(e),
            Err(e) => items.push(BatchItem::Err(e.body())),
        }
    }
    Ok(ok(TokenizeBatchResponse { items }))
}

impl From<Detokenized> for DetokenizeResponse {
    fn from(d: Detokenized) -> Self {
        Self {
            token: d.token,
            token_type: d.token_type,
            value: Revealed::from(d.value.as_str()),
            metadata: d.metadata,
        }
    }
}

#[utoipa::path(post, path = "/v1/detokenize", tag = "tokens", request_body = DetokenizeRequest,
    responses((status = 200, body = DetokenizeResponse), (status = 404, body = ErrorBody),
        (status = 410, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn detokenize(
    State(state): State<AppState>,
    Caller(who): Caller,
    ApiJson(req): ApiJson<DetokenizeRequest>,
) -> Result<Response, Error> {
    let d = state
        .services
        .tokens
        .detokenize(&who, &req.token, req.reason.as_deref(), now_ms())
        .await?;
    Ok(ok(DetokenizeResponse::from(d)))
}

#[utoipa::path(post, path = "/v1/detokenize/batch", tag = "tokens", request_body = DetokenizeBatchRequest,
    responses((status = 200, body = DetokenizeBatchResponse), (status = 413, body = ErrorBody)))]
async fn detokenize_batch(
    State(state): State<AppState>,
    Caller(who): Caller,
    ApiJson(req): ApiJson<DetokenizeBatchRequest>,
) -> Result<Response, Error> {
    check_batch(&state, req.tokens.len())?;
    let results = state
        .services
        .tokens
        .detokenize_batch(&who, &req.tokens, req.reason.as_deref(), now_ms())
        .await?;
    let items = results
        .into_iter()
        .map(|one| match one {
            Ok(d) => BatchItem::Ok(DetokenizeResponse::from(d)),
            Err(e) => BatchItem::Err(e.body()),
        })
        .collect();
    Ok(ok(DetokenizeBatchResponse { items }))
}

#[utoipa::path(get, path = "/v1/tokens/{token}", tag = "tokens",
    params(("token" = String, Path, description = "A token")),
    responses((status = 200, body = TokenInfoResponse), (status = 404, body = ErrorBody)))]
async fn token_info(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(token): Path<String>,
) -> Result<Response, Error> {
    let i = state.services.tokens.info(&who, &token, now_ms()).await?;
    Ok(ok(TokenInfoResponse {
        token: i.token,
        token_type: i.token_type,
        masked: i.masked,
        metadata: i.metadata,
        keyring: i.keyring,
        key_version: i.key_version,
        created_at: rfc3339(i.created_at),
        expires_at: i.expires_at.map(rfc3339),
    }))
}

#[utoipa::path(delete, path = "/v1/tokens/{token}", tag = "tokens",
    params(("token" = String, Path, description = "A token")),
    responses((status = 204, description = "Deleted: the ciphertext is gone"), (status = 404, body = ErrorBody)))]
async fn delete_token(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(token): Path<String>,
) -> Result<Response, Error> {
    state.services.tokens.delete(&who, &token, now_ms()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
