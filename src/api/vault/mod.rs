//! The Vault-compatible API: HashiCorp Vault / OpenBao clients (hvac, vaultrs, the Vault
//! CLI) work against tokenvault by changing their address, CA and client certificate.
//!
//! This module only translates: Vault's paths, envelopes, weakly typed fields and
//! `{"errors":[…]}` bodies on one side; the services every surface uses (the one encrypt
//! path, the one guard, the one audit trail, the session service) on the other. No
//! operation is implemented here a second time. Status codes come from the one table in
//! `api::error`; only the body is Vault's.
//!
//! Every route but `sys/health`, `sys/seal-status` and `auth/cert/login` needs a session
//! token (`X-Vault-Token` or `Authorization: Bearer`) issued to the certificate of the
//! connection (see `crate::session`).

mod auth;
mod batch;
mod hmac;
mod keys;
mod sign;
mod sys;
mod tools;
mod transform;
mod transit;
mod weak;

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::AppState;
use super::auth::ConnInfo;
use crate::config::Settings;
use crate::error::Error;
use crate::guard::Principal;
use crate::keys::KeyVersion;
use crate::session::{PERMISSION_DENIED, REASON_MISSING};
use crate::store::SessionRow;
use crate::vault::now_ms;

/// The Vault-compatible routes (none when `vault_api.enabled` is false).
pub fn router(settings: &Settings) -> Router<AppState> {
    let api = &settings.vault_api;
    if !api.enabled {
        return Router::new();
    }
    Router::new()
        .merge(auth::router())
        .merge(sys::router())
        .merge(transit::router(&api.transit_mount))
        .merge(keys::router(&api.transit_mount))
        .merge(tools::router(&api.transit_mount))
        .merge(hmac::router(&api.transit_mount))
        .merge(sign::router(&api.transit_mount))
        .merge(transform::router(
            &api.transform_mount,
            api.transform.effective(&settings.types),
        ))
}

/// Whether `path` lies under a Vault route (`auth`, `sys`, the Transit or Transform
/// mount): errors there (no route, wrong method, the request rate) take Vault's shape, so
/// a Vault client raises the exception it would raise against Vault.
pub fn owns(settings: &Settings, path: &str) -> bool {
    let api = &settings.vault_api;
    let Some(rest) = path.strip_prefix("/v1/") else {
        return false;
    };
    let first = rest.split('/').next().unwrap_or_default();
    api.enabled
        && [
            "auth",
            "sys",
            api.transit_mount.as_str(),
            api.transform_mount.as_str(),
        ]
        .contains(&first)
}

/// The error `e` in the shape of the API `path` belongs to.
pub fn error_for(settings: &Settings, path: &str, e: Error) -> Response {
    if owns(settings, path) {
        VaultError(e).into_response()
    } else {
        e.into_response()
    }
}

/// An error in Vault's shape: the status from the one table, `{"errors":[message]}`, and
/// `Content-Type: application/json` exactly (hvac compares the whole string).
pub struct VaultError(pub Error);

impl From<Error> for VaultError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl IntoResponse for VaultError {
    fn into_response(self) -> Response {
        // The native body logs what the client will not see; its message is the one
        // that is safe to show.
        let message = self.0.body().error.message;
        let status = super::error::status(self.0.code());
        let mut resp = json_response(status, &json!({ "errors": [message] }));
        if let Some(wait) = self.0.retry_after()
            && let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// A JSON response with `Content-Type: application/json` and nothing appended.
fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = (status, bytes).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `vault:v<N>:<standard base64>` (Vault's ciphertexts and digests) → (N, bytes); `what`
/// names the kind in the error, which never quotes the input.
fn vault_versioned(s: &str, what: &str) -> Result<(KeyVersion, Vec<u8>), Error> {
    let malformed =
        || Error::InvalidRequest(format!("malformed {what}: expected vault:v<N>:<base64>"));
    let rest = s.trim().strip_prefix("vault:v").ok_or_else(malformed)?;
    let (version, body) = rest.split_once(':').ok_or_else(malformed)?;
    let version: KeyVersion = version.parse().map_err(|_| malformed())?;
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, body)
        .map_err(|_| malformed())?;
    Ok((version, bytes))
}

/// Unix milliseconds as RFC 3339 text (Vault's times), `None` out of range.
fn rfc3339(ms: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
}

/// A random id in the UUID text form Vault uses for `request_id`.
fn request_id() -> String {
    let mut b = [0u8; 16];
    crate::crypto::random_bytes(&mut b);
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Vault's response envelope.
#[derive(Serialize)]
struct Envelope<'a, T> {
    request_id: String,
    lease_id: &'static str,
    renewable: bool,
    lease_duration: i64,
    data: &'a T,
    wrap_info: (),
    warnings: (),
    auth: &'a Value,
}

/// Vault's success envelope around `data` (200).
fn data<T: Serialize>(data: T) -> Response {
    envelope_of(StatusCode::OK, &Value::Null, &data)
}

/// The envelope with `auth` (login, renewal) or `data`, at `status`.
fn envelope_of<T: Serialize>(status: StatusCode, auth: &Value, data: &T) -> Response {
    json_response(
        status,
        &Envelope {
            request_id: request_id(),
            lease_id: "",
            renewable: false,
            lease_duration: 0,
            data,
            wrap_info: (),
            warnings: (),
            auth,
        },
    )
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn bad_request(message: impl Into<String>) -> VaultError {
    VaultError(Error::InvalidRequest(message.into()))
}

/// A JSON body read with the native limits (size, depth) and parsed into a lenient
/// request type; an empty body is `{}`. Errors never quote the input.
pub struct VaultJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for VaultJson<T> {
    type Rejection = VaultError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, VaultError> {
        let limits = &state.vault.settings.limits;
        let bytes = super::json::read_body(req.into_body(), limits.max_body_bytes).await?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        Ok(VaultJson(super::json::parse(bytes, limits.max_json_depth)?))
    }
}

/// The caller as the connection shows it: the certificate's identity and thumbprint
/// (the login route, and the first half of [`VaultCaller`]).
pub struct CertCaller {
    pub who: Principal,
    pub thumbprint: [u8; 32],
}

impl FromRequestParts<AppState> for CertCaller {
    type Rejection = VaultError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, VaultError> {
        let (who, thumbprint) = connection(parts, state)?;
        Ok(Self { who, thumbprint })
    }
}

/// The connection's verified identity and certificate thumbprint.
fn connection(parts: &Parts, state: &AppState) -> Result<(Principal, [u8; 32]), VaultError> {
    let denied = || VaultError(Error::Forbidden(PERMISSION_DENIED.into()));
    let info = parts.extensions.get::<ConnInfo>().ok_or_else(denied)?;
    let identity = info.identity.as_deref().ok_or_else(denied)?;
    let thumbprint = info.thumbprint.ok_or_else(denied)?;
    let who = state
        .services
        .guard
        .principal(identity, &info.peer.ip().to_string());
    Ok((who, thumbprint))
}

/// The caller of a route that needs a session: the certificate's identity, proven again
/// by a live token issued to this very certificate.
pub struct VaultCaller {
    pub who: Principal,
    pub session: SessionRow,
}

/// The token of a request: `X-Vault-Token`, else `Authorization: Bearer`.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(t) = headers.get("x-vault-token").and_then(|v| v.to_str().ok()) {
        return Some(t.trim());
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

impl FromRequestParts<AppState> for VaultCaller {
    type Rejection = VaultError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, VaultError> {
        let (who, thumbprint) = connection(parts, state)?;
        let Some(token) = presented_token(&parts.headers).filter(|t| !t.is_empty()) else {
            let sessions = &state.services.sessions;
            return Err(VaultError(
                sessions.refuse(&who, REASON_MISSING, None, now_ms()).await,
            ));
        };
        let session = state
            .services
            .sessions
            .authenticate(&who, token, &thumbprint, now_ms())
            .await?;
        Ok(Self { who, session })
    }
}

/// Whether a request asks for a listing: the `LIST` method, or `GET …?list=true`.
fn is_list(method: &axum::http::Method, query: Option<&str>) -> bool {
    method.as_str() == "LIST"
        || query.is_some_and(|q| {
            q.split('&')
                .any(|kv| matches!(kv, "list=true" | "list=1" | "list=TRUE" | "list=True"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_the_vault_header_or_a_bearer_authorization() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_token(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer hvs.b"),
        );
        assert_eq!(presented_token(&h), Some("hvs.b"));
        h.insert("x-vault-token", HeaderValue::from_static("hvs.a"));
        assert_eq!(presented_token(&h), Some("hvs.a"));
        let mut basic = HeaderMap::new();
        basic.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(presented_token(&basic), None);
    }

    #[test]
    fn listing_is_the_list_method_or_list_true() {
        let list = axum::http::Method::from_bytes(b"LIST").unwrap();
        assert!(is_list(&list, None));
        assert!(is_list(&axum::http::Method::GET, Some("list=true")));
        assert!(is_list(&axum::http::Method::GET, Some("a=b&list=true")));
        assert!(!is_list(&axum::http::Method::GET, Some("list=false")));
        assert!(!is_list(&axum::http::Method::GET, None));
    }

    #[test]
    fn errors_are_vault_shaped_with_the_exact_content_type() {
        let resp = VaultError(Error::Forbidden(PERMISSION_DENIED.into())).into_response();
        assert_eq!(resp.status(), 403);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
    }
}
