//! The batch forms of Vault's routes (`batch_input`): one outcome per item, the item's
//! `reference` echoed, and Vault's status rules for the whole answer.

use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;

use super::{VaultError, bad_request, data, envelope_of};
use crate::error::{Code, Error};

/// The items of a request: its `batch_input` (not empty, at most `max_batch` items), or
/// the request itself as its one item; and whether it came as a batch.
pub fn items<I>(
    batch_input: Option<Vec<I>>,
    single: impl FnOnce() -> I,
    max_batch: usize,
) -> Result<(Vec<I>, bool), VaultError> {
    let Some(batch) = batch_input else {
        return Ok((vec![single()], false));
    };
    if batch.is_empty() {
        return Err(bad_request("missing batch input to process"));
    }
    if batch.len() > max_batch {
        return Err(bad_request(format!(
            "batch_input holds more than {max_batch} items (limits.max_batch)"
        )));
    }
    Ok((batch, true))
}

/// Errors that belong to one item of a batch; any other (forbidden, unavailable,
/// internal, rate limited) ends the whole request, failing closed.
fn item_error(e: &Error) -> bool {
    matches!(
        e.code(),
        Code::InvalidRequest
            | Code::InvalidValue
            | Code::RealValueRefused
            | Code::KeyDestroyed
            | Code::NotFound
    )
}

#[derive(Serialize)]
pub struct Outcome<T> {
    #[serde(flatten)]
    ok: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    reference: Value,
}

/// How the items of a request fared, rendered as Vault renders them.
pub fn answer<T: Serialize>(
    outcomes: Vec<Outcome<T>>,
    batch: bool,
    partial_failure_code: Option<i64>,
    always_ok: bool,
) -> Result<Response, VaultError> {
    if !batch {
        let one = outcomes.into_iter().next();
        return match one {
            Some(Outcome { ok: Some(ok), .. }) => Ok(data(ok)),
            Some(Outcome { error: Some(e), .. }) => Err(bad_request(e)),
            _ => Err(VaultError(Error::Internal(
                "an item gave no outcome".into(),
            ))),
        };
    }
    let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
    let status = if failed == 0 || always_ok {
        StatusCode::OK
    } else if failed < outcomes.len()
        && let Some(code) = partial_failure_code
    {
        u16::try_from(code)
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .filter(|s| s.is_success() || s.is_client_error() || s.is_server_error())
            .ok_or_else(|| bad_request("partial_failure_response_code is not an HTTP status"))?
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok(envelope_of(
        status,
        &Value::Null,
        &BatchData {
            batch_results: outcomes,
        },
    ))
}

#[derive(Serialize)]
struct BatchData<T> {
    batch_results: Vec<Outcome<T>>,
}

/// One item's outcome: its error if the error is the item's own, else the request's.
pub fn outcome<T>(
    result: Result<T, Error>,
    reference: Option<Value>,
) -> Result<Outcome<T>, VaultError> {
    let reference = reference.unwrap_or_else(|| Value::String(String::new()));
    match result {
        Ok(ok) => Ok(Outcome {
            ok: Some(ok),
            error: None,
            reference,
        }),
        Err(e) if item_error(&e) => Ok(Outcome {
            ok: None,
            error: Some(e.body().error.message),
            reference,
        }),
        Err(e) => Err(VaultError(e)),
    }
}
