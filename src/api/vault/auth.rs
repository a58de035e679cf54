//! `auth/cert/login` and the `auth/token/*-self` routes over the session service.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    AppState, CertCaller, VaultCaller, VaultError, VaultJson, data, envelope_of, no_content, weak,
};
use crate::session::Issued;
use crate::store::SessionRow;
use crate::vault::now_ms;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/cert/login", post(login).put(login))
        .route(
            "/v1/auth/token/lookup-self",
            get(lookup_self).post(lookup_self),
        )
        .route(
            "/v1/auth/token/renew-self",
            post(renew_self).put(renew_self),
        )
        .route(
            "/v1/auth/token/revoke-self",
            post(revoke_self).put(revoke_self),
        )
}

/// The login body: Vault's `name` (a cert role) is accepted and ignored — the identity
/// comes from the certificate alone.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LoginRequest {
    #[serde(deserialize_with = "weak::opt_string")]
    #[allow(dead_code)]
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RenewRequest {
    /// Requested extension (seconds or a duration); at most the session's TTL.
    #[serde(deserialize_with = "weak::opt_seconds")]
    increment: Option<i64>,
}

fn secs(ms: i64) -> i64 {
    ms.max(0) / 1000
}

/// The identity's permissions, in the `policies` of Vault's answers (informational).
fn policies(who: &crate::guard::Principal) -> Vec<String> {
    who.grants().iter().map(ToString::to_string).collect()
}

/// Vault's `auth` block for a session; the token itself only at login.
fn auth_block(
    session: &SessionRow,
    token: Option<&str>,
    who: &crate::guard::Principal,
    now: i64,
) -> Value {
    let policies = policies(who);
    json!({
        "client_token": token.unwrap_or(""),
        "accessor": session.accessor,
        "policies": policies,
        "token_policies": policies,
        "identity_policies": null,
        "metadata": {
            "cert_name": session.identity,
            "common_name": session.identity,
            "x5t#S256": URL_SAFE_NO_PAD.encode(&session.thumbprint),
        },
        "lease_duration": secs(session.expires_at - now),
        "renewable": session.expires_at < session.max_expires_at,
        "entity_id": "",
        "token_type": "service",
        "orphan": true,
        "mfa_requirement": null,
        "num_uses": 0,
    })
}

async fn login(
    State(state): State<AppState>,
    CertCaller { who, thumbprint }: CertCaller,
    VaultJson(_req): VaultJson<LoginRequest>,
) -> Result<Response, VaultError> {
    let now = now_ms();
    let Issued { token, session } = state
        .services
        .sessions
        .login(&who, &thumbprint, now)
        .await?;
    let auth = auth_block(&session, Some(token.expose_secret()), &who, now);
    Ok(envelope_of(axum::http::StatusCode::OK, &auth, &Value::Null))
}

async fn lookup_self(caller: VaultCaller) -> Result<Response, VaultError> {
    let VaultCaller { who, session } = caller;
    let now = now_ms();
    let policies = policies(&who);
    Ok(data(json!({
        "accessor": session.accessor,
        "creation_time": secs(session.issued_at),
        "creation_ttl": secs(session.ttl_ms),
        "display_name": format!("cert-{}", session.identity),
        "entity_id": "",
        "expire_time": super::rfc3339(session.expires_at),
        "explicit_max_ttl": secs(session.max_expires_at - session.issued_at),
        // Never the token: a lookup answers about it, it does not hand it out again.
        "id": "",
        "issue_time": super::rfc3339(session.issued_at),
        "meta": {
            "cert_name": session.identity,
            "x5t#S256": URL_SAFE_NO_PAD.encode(&session.thumbprint),
        },
        "num_uses": 0,
        "orphan": true,
        "path": "auth/cert/login",
        "policies": policies,
        "renewable": session.expires_at < session.max_expires_at,
        "ttl": secs(session.expires_at - now),
        "type": "service",
    })))
}

async fn renew_self(
    State(state): State<AppState>,
    caller: VaultCaller,
    VaultJson(req): VaultJson<RenewRequest>,
) -> Result<Response, VaultError> {
    let VaultCaller { who, session } = caller;
    let now = now_ms();
    let increment = req.increment.map(|s| s.saturating_mul(1000));
    let renewed = state
        .services
        .sessions
        .renew(&who, &session, increment, now)
        .await?;
    let auth = auth_block(&renewed, None, &who, now);
    Ok(envelope_of(axum::http::StatusCode::OK, &auth, &Value::Null))
}

async fn revoke_self(
    State(state): State<AppState>,
    caller: VaultCaller,
) -> Result<Response, VaultError> {
    let VaultCaller { who, session } = caller;
    state
        .services
        .sessions
        .revoke(&who, &session, now_ms())
        .await?;
    Ok(no_content())
}
