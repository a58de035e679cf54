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
    responses((status = 200, body = Inventory), (status = 403, body = ErrorBody)))]
async fn list(State(state): State<AppState>, Caller(who): Caller) -> Result<Response, Error> {
    let inventory = state.services.key_inventory(&who, now_ms()).await?;
    Ok(ok(inventory))
}
