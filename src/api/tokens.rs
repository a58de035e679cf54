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
use crate::tokenize::{Detokenized, RawValue, TokenFormat, TokenInfo, TokenizeInput, Tokenized};
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
    /// Token type: one of the types in the vault's config (this document lists them).
    #[serde(rename = "type")]
    #[schema(pattern = r"^[a-z][a-z0-9_-]{0,31}$")]
    pub token_type: String,
    /// The value to protect, checked by its type's validator (422 when it fails). Never
    /// echoed in any response or error.
    #[schema(value_type = String, min_length = 1)]
    pub value: SecretField,
    /// Token format; deterministic types always use their configured one.
    pub format: Option<TokenFormat>,
    /// Non-sensitive JSON object stored with the token.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// The token expires after this many seconds (at most ten years). A whole number,
    /// which JSON may also write as `314.0`.
    #[serde(default, deserialize_with = "whole_seconds")]
    #[schema(minimum = 1, maximum = 316_224_000)]
    pub ttl_seconds: Option<u64>,
}

/// An optional whole number of seconds: JSON Schema's `integer` (and the document's)
/// counts `314.0` as 314, so the server does too; `314.5` and negatives are refused.
fn whole_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error as _;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(u) = n.as_u64() {
        return Ok(Some(u));
    }
    match n.as_f64() {
        // Below 2^53 every whole f64 is exact; ten years of seconds is far below.
        Some(f) if f.fract() == 0.0 && (0.0..9_007_199_254_740_992.0).contains(&f) => {
            Ok(Some(f as u64))
        }
        _ => Err(D::Error::custom(
            "ttl_seconds is not a whole number of seconds",
        )),
    }
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
    /// At most `limits.max_batch` items (413 beyond); an item that does not match
    /// `TokenizeRequest` gets an error in its place, the others go on.
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
    /// A token; anything that is not one answers 404 like an unknown token.
    #[schema(max_length = 128)]
    pub token: String,
    /// Why the value is needed; recorded in the audit trail. At most 200 characters, no
    /// control characters, no run of 12 or more digits (a single space or dash between
    /// groups of three or more digits joins them into one run).
    #[schema(max_length = 200)]
    pub reason: Option<String>,
    /// `true`: answer the masked value (e.g. `************1111`) instead of the value. It
    /// needs only `read:<type>`, is not charged to the reveal budget and is not scored
    /// for anomalies: the safe default for services that only display a card.
    #[serde(default)]
    pub masked: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DetokenizeResponse {
    pub token: String,
    #[serde(rename = "type")]
    pub token_type: String,
    /// The value (absent in a masked answer).
    #[schema(value_type = Option<String>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Revealed>,
    /// The masked value (only in a masked answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masked: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// `true`: a non-production vault had no record of the token and answered a synthetic
    /// value derived from it (never real); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synthetic: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DetokenizeBatchRequest {
    /// At most `limits.max_batch` tokens (413 beyond).
    pub tokens: Vec<String>,
    /// As for `/v1/detokenize`; one reason for the whole batch.
    #[schema(max_length = 200)]
    pub reason: Option<String>,
    /// As for `/v1/detokenize`: masked values for the whole batch.
    #[serde(default)]
    pub masked: bool,
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
        given_token: None,
    }
}

#[utoipa::path(post, path = "/v1/tokenize", tag = "tokens", request_body = TokenizeRequest,
    responses((status = 200, body = TokenizeResponse, description = "The token"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the body does not match this document"),
        (status = 401, body = ErrorBody, description = "`unauthenticated`: the client certificate names no identity"),
        (status = 403, body = ErrorBody, description = "`forbidden`: no `tokenize:<type>` permission"),
        (status = 413, body = ErrorBody, description = "`payload_too_large`: the body exceeds `limits.max_body_bytes`"),
        (status = 422, body = ErrorBody, description = "`invalid_value`: the value fails its type's validator \
            (Luhn, SSN rules, address rules, `limits.max_value_bytes`), or the metadata is larger than \
            `limits.max_metadata_bytes` or holds a card number; `real_value_refused`: a non-production vault \
            accepts only test data (test card prefixes, never-issued SSNs, reserved e-mail domains)"),
        (status = 429, body = ErrorBody, description = "`rate_limited`: request rate or new-value budget spent"),
        (status = 500, body = ErrorBody, description = "`internal` or `integrity_error`"),
        (status = 503, body = ErrorBody, description = "`unavailable`: the HSM, database or audit trail failed; nothing was done")))]
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
    responses((status = 200, body = TokenizeBatchResponse,
            description = "One result or `{\"error\": …}` per item, in order"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the body does not match this document"),
        (status = 401, body = ErrorBody, description = "`unauthenticated`"),
        (status = 413, body = ErrorBody, description = "`payload_too_large`: too many items or too large a body"),
        (status = 429, body = ErrorBody, description = "`rate_limited`"),
        (status = 500, body = ErrorBody, description = "`internal` or `integrity_error`"),
        (status = 503, body = ErrorBody, description = "`unavailable`: the whole batch failed closed")))]
async fn tokenize_batch(
    State(state): State<AppState>,
    Caller(who): Caller,
    ApiJson(req): ApiJson<TokenizeBatchRequest>,
) -> Result<Response, Error> {
    check_batch(&state, req.items.len())?;
    let now = now_ms();
    // All items through the one tokenize path at once: one lookup per type, one insert
    // and one commit for the batch. Order is kept.
    let items = req
        .items
        .into_iter()
        .map(|raw| {
            serde_json::from_value::<TokenizeRequest>(raw)
                .map(input)
                .map_err(|_| {
                    Error::InvalidRequest("item does not match the tokenize request shape".into())
                })
        })
        .collect();
    let results = state
        .services
        .tokens
        .tokenize_many(&who, items, now, None)
        .await?;
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
            value: Some(Revealed::from(d.value.as_str())),
            masked: None,
            metadata: d.metadata,
            synthetic: d.synthetic.then_some(true),
        }
    }
}

impl From<TokenInfo> for DetokenizeResponse {
    fn from(i: TokenInfo) -> Self {
        Self {
            token: i.token,
            token_type: i.token_type,
            value: None,
            masked: Some(i.masked),
            metadata: i.metadata,
            synthetic: None,
        }
    }
}

#[utoipa::path(post, path = "/v1/detokenize", tag = "tokens", request_body = DetokenizeRequest,
    params(("Tokenvault-Approval" = Option<String>, Header, pattern = "^su_[0-9a-f]{32}$",
        description = "Retry of a reveal held by anomaly scoring: the `request_id` of its `approval_required` answer, once officers approved it")),
    responses((status = 200, body = DetokenizeResponse, description = "The value"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the body does not match this document"),
        (status = 401, body = ErrorBody, description = "`unauthenticated`"),
        (status = 403, body = ErrorBody, description = "`approval_required` (held by anomaly scoring; `request_id` and `reasons` in the body), `approval_invalid` (the approval does not cover this retry) or `identity_suspended`"),
        (status = 404, body = ErrorBody, description = "`not_found`: unknown, expired, or not the caller's to reveal (alike)"),
        (status = 410, body = ErrorBody, description = "`key_destroyed`: the token's key version was destroyed"),
        (status = 413, body = ErrorBody, description = "`payload_too_large`"),
        (status = 429, body = ErrorBody, description = "`rate_limited`: request rate or reveal budget spent"),
        (status = 500, body = ErrorBody, description = "`internal` or `integrity_error`"),
        (status = 503, body = ErrorBody, description = "`unavailable`")))]
async fn detokenize(
    State(state): State<AppState>,
    Caller(who): Caller,
    ApiJson(req): ApiJson<DetokenizeRequest>,
) -> Result<Response, Error> {
    let tokens = &state.services.tokens;
    if req.masked {
        let i = tokens.info(&who, &req.token, now_ms()).await?;
        return Ok(ok(DetokenizeResponse::from(i)));
    }
    let d = tokens
        .detokenize(&who, &req.token, req.reason.as_deref(), now_ms())
        .await?;
    Ok(ok(DetokenizeResponse::from(d)))
}

#[utoipa::path(post, path = "/v1/detokenize/batch", tag = "tokens", request_body = DetokenizeBatchRequest,
    params(("Tokenvault-Approval" = Option<String>, Header, pattern = "^su_[0-9a-f]{32}$",
        description = "Retry of a batch held by anomaly scoring: the `request_id` of its `approval_required` answer, once officers approved it")),
    responses((status = 200, body = DetokenizeBatchResponse,
            description = "One result or `{\"error\": …}` per token, in order"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the body does not match this document"),
        (status = 401, body = ErrorBody, description = "`unauthenticated`"),
        (status = 403, body = ErrorBody, description = "`approval_required` (held by anomaly scoring; `request_id` and `reasons` in the body), `approval_invalid` (the approval does not cover this retry) or `identity_suspended`"),
        (status = 413, body = ErrorBody, description = "`payload_too_large`: too many tokens or too large a body"),
        (status = 429, body = ErrorBody, description = "`rate_limited`: request rate or reveal budget spent"),
        (status = 500, body = ErrorBody, description = "`internal` or `integrity_error`"),
        (status = 503, body = ErrorBody, description = "`unavailable`")))]
async fn detokenize_batch(
    State(state): State<AppState>,
    Caller(who): Caller,
    ApiJson(req): ApiJson<DetokenizeBatchRequest>,
) -> Result<Response, Error> {
    check_batch(&state, req.tokens.len())?;
    let tokens = &state.services.tokens;
    if req.masked {
        let items = tokens
            .info_many(&who, &req.tokens, now_ms())
            .await?
            .into_iter()
            .map(|one| match one {
                Ok(i) => BatchItem::Ok(DetokenizeResponse::from(i)),
                Err(e) => BatchItem::Err(e.body()),
            })
            .collect();
        return Ok(ok(DetokenizeBatchResponse { items }));
    }
    let results = tokens
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
    params(("token" = String, Path, description = "A token", max_length = 128)),
    responses((status = 200, body = TokenInfoResponse, description = "Metadata and masked value, never the value"),
        (status = 401, body = ErrorBody, description = "`unauthenticated`"),
        (status = 404, body = ErrorBody, description = "`not_found`: unknown, expired, or not the caller's to read (alike)"),
        (status = 429, body = ErrorBody, description = "`rate_limited`"),
        (status = 500, body = ErrorBody, description = "`internal` or `integrity_error`"),
        (status = 503, body = ErrorBody, description = "`unavailable`")))]
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
    params(("token" = String, Path, description = "A token", max_length = 128)),
    responses((status = 204, description = "Deleted: the ciphertext is gone"),
        (status = 401, body = ErrorBody, description = "`unauthenticated`"),
        (status = 404, body = ErrorBody, description = "`not_found`: unknown, expired, or not the caller's to delete (alike)"),
        (status = 429, body = ErrorBody, description = "`rate_limited`"),
        (status = 500, body = ErrorBody, description = "`internal` or `integrity_error`"),
        (status = 503, body = ErrorBody, description = "`unavailable`")))]
async fn delete_token(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(token): Path<String>,
) -> Result<Response, Error> {
    state.services.tokens.delete(&who, &token, now_ms()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
