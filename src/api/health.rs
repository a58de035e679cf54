//! `/healthz` (the process answers), `/readyz` (the HSM and the database answer) and
//! `/metrics` (Prometheus text).
//!
//! `/readyz` makes no HSM call of its own (an unauthenticated route must not be a way to
//! load the HSM): it reports what the HSM watch of `keys::health` last found, which is at
//! most `hsm.health_interval_ms` old, and pings the database.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::AppState;
use super::auth::Caller;
use crate::audit::Action;
use crate::error::Error;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
    pub hsm: &'static str,
    pub database: &'static str,
}

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        hsm: "unchecked",
        database: "unchecked",
    })
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn readyz(State(state): State<AppState>) -> Response {
    let hsm_ok = state.vault.keys.hsm_available();
    let db_ok = state.vault.store.ping().await.is_ok();
    let word = |ok| if ok { "ok" } else { "unavailable" };
    let body = Health {
        status: word(hsm_ok && db_ok),
        hsm: word(hsm_ok),
        database: word(db_ok),
    };
    metrics::gauge!("tokenvault_ready").set(if hsm_ok && db_ok { 1.0 } else { 0.0 });
    let status = if hsm_ok && db_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, body = super::error::ErrorBody, description = "`unauthenticated`: the client certificate names no identity (unless `server.public_metrics`)"),
        (status = 403, body = super::error::ErrorBody, description = "`forbidden`: the caller lacks `metrics:read` (unless `server.public_metrics`)"),
        (status = 503, body = super::error::ErrorBody, description = "`unavailable`: the audit trail cannot record the refusal")))]
async fn metrics(
    State(state): State<AppState>,
    caller: Result<Caller, Error>,
) -> Result<Response, Error> {
    if !state.vault.settings.server.public_metrics {
        let Caller(who) = caller?;
        let now = crate::vault::now_ms();
        state
            .services
            .guard
            .check(&who, Action::MetricsRead, "read", None, now)
            .await?;
    }
    let text = state.metrics.render();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
