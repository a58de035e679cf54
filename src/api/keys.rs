//! `GET /v1/keys`: the key inventory (never key material).

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;

use super::auth::Caller;
use super::error::ErrorBody;
use super::{AppState, ok};
use crate::error::Error;
use crate::keys::Inventory;
use crate::vault::now_ms;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/keys", get(list))
}

#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, body = Inventory, description = "The key inventory"),
        (status = 401, body = ErrorBody, description = "`unauthenticated`"),
        (status = 403, body = ErrorBody, description = "`forbidden`: no `keys:read` permission"),
        (status = 429, body = ErrorBody, description = "`rate_limited`"),
        (status = 500, body = ErrorBody, description = "`internal` or `integrity_error`"),
        (status = 503, body = ErrorBody, description = "`unavailable`")))]
async fn list(State(state): State<AppState>, Caller(who): Caller) -> Result<Response, Error> {
    let inventory = state.services.key_inventory(&who, now_ms()).await?;
    Ok(ok(inventory))
}
