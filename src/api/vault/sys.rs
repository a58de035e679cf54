//! `sys/health`, `sys/seal-status`, `sys/init` and a read-only `sys/mounts`.
//!
//! "Sealed" is how Vault says it cannot serve keys: here, the HSM or the database does not
//! answer (what `/readyz` reports, from the same checks and with no HSM call of its own).
//! There is no unseal: the HSM holds the keys, and the vault serves again when it answers.

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::{AppState, VaultCaller, VaultError, data, json_response};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sys/health", get(health))
        .route("/v1/sys/seal-status", get(seal_status))
        .route("/v1/sys/init", get(init_status))
        .route("/v1/sys/mounts", get(mounts))
}

/// Whether the vault can serve keys now (the HSM watch's last answer and a database ping).
async fn serving(state: &AppState) -> bool {
    state.vault.keys.hsm_available() && state.vault.store.ping().await.is_ok()
}

fn now_rfc3339() -> Value {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .map_or(Value::Null, Value::String)
}

/// 200 when serving; 503 ("sealed") when the HSM or database does not answer. HEAD (which
/// axum routes to GET handlers) gets the status alone.
async fn health(State(state): State<AppState>, method: Method) -> Response {
    let up = serving(&state).await;
    let status = if up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if method == Method::HEAD {
        return status.into_response();
    }
    let body = json!({
        "initialized": true,
        "sealed": !up,
        "standby": false,
        "performance_standby": false,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": time::OffsetDateTime::now_utc().unix_timestamp(),
        "version": concat!("tokenvault-", env!("CARGO_PKG_VERSION")),
        "cluster_name": "tokenvault",
        "cluster_id": "",
    });
    json_response(status, &body)
}

/// A vault serves only after `tokenvault init`.
async fn init_status() -> Response {
    json_response(StatusCode::OK, &json!({ "initialized": true }))
}

async fn seal_status(State(state): State<AppState>) -> Response {
    let up = serving(&state).await;
    json_response(
        StatusCode::OK,
        &json!({
            "type": "hsm",
            "initialized": true,
            "sealed": !up,
            "t": 0,
            "n": 0,
            "progress": 0,
            "nonce": "",
            "version": concat!("tokenvault-", env!("CARGO_PKG_VERSION")),
            "build_date": "",
            "migration": false,
            "recovery_seal": false,
            "storage_type": match state.vault.store.backend() {
                crate::store::Backend::Sqlite => "sqlite",
                crate::store::Backend::Postgres => "postgresql",
            },
            "server_time_utc": now_rfc3339(),
        }),
    )
}

/// The mounts, as Vault describes secrets engines (a session is needed, as in Vault).
async fn mounts(
    State(state): State<AppState>,
    _caller: VaultCaller,
) -> Result<Response, VaultError> {
    let s = state.services.sessions.settings();
    let mount = |kind: &str, description: &str| {
        json!({
            "type": kind,
            "description": description,
            "accessor": format!("{kind}_tokenvault"),
            "config": {"default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": false},
            "options": null,
            "local": false,
            "seal_wrap": false,
            "external_entropy_access": false,
        })
    };
    let mut all = serde_json::Map::new();
    all.insert(
        format!("{}/", s.transit_mount),
        mount(
            "transit",
            "tokenvault keyrings (keys in the HSM key hierarchy)",
        ),
    );
    all.insert(
        format!("{}/", s.transform_mount),
        mount("transform", "tokenvault token types (tokenization)"),
    );
    Ok(data(Value::Object(all)))
}
