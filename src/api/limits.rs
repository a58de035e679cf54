//! The request-rate check at the edge: `/v1` requests of a known identity take one
//! token from its bucket before the body is read. The rule and its audit event live in
//! the guard; this only puts it in front of the routes.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use super::auth::ConnInfo;
use crate::vault::now_ms;

/// Middleware for `/v1`: the request rate of the calling identity.
pub async fn rate_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/v1/")
        && let Some(info) = req.extensions().get::<ConnInfo>()
        && let Some(identity) = info.identity.as_deref()
    {
        let guard = &state.services.guard;
        let who = guard.principal(identity, &info.peer.ip().to_string());
        if let Err(e) = guard.admit(&who, now_ms()).await {
            return super::vault::error_for(&state.vault.settings, req.uri().path(), e);
        }
    }
    next.run(req).await
}
