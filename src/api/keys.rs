//! `GET /v1/keys`: the key inventory (never key material).

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::{AppState, ok};
use crate::keys::Inventory;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/keys", get(list))
}

#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, body = Inventory), (status = 403, body = ErrorBody)))]
async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(&state, "keys:read", "keys.list").await?;
    let event = crate::audit::AuditEvent::new(
        &caller.0.identity,
        "keys.list",
        crate::audit::Outcome::Success,
    )
    .origin(&caller.0.origin);
    state.record(event).await?;
    let inventory = state
        .vault
        .keys
        .inventory(crate::vault::now_ms())
        .await
        .map_err(crate::tokenize::ServiceError::from)?;
    Ok(ok(inventory))
}
