//! Transit's key routes over tokenvault keyrings and signing keys: list and read (the one
//! inventory, `keys:read`, audited), create of a configured key (204), rotate (a client
//! with `rotate:<key>`: a new version, nothing destroyed), config (only what the key
//! already is), and the refusals: export, backup and restore (keys never leave the HSM
//! hierarchy), delete and trim (destroying versions takes two officers).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::Response;
use axum::routing::{any, get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    AppState, VaultCaller, VaultError, VaultJson, bad_request, data, is_list, no_content, weak,
};
use crate::error::Error;
use crate::keys::{FINGERPRINT_KEYRING, KeyringName};
use crate::vault::now_ms;

pub fn router(mount: &str) -> Router<AppState> {
    let m = |tail: &str| format!("/v1/{mount}/{tail}");
    Router::new()
        .route(&m("keys"), any(list_keys))
        .route(
            &m("keys/{name}"),
            get(read_key)
                .post(create_key)
                .put(create_key)
                .delete(refused_destruction),
        )
        .route(&m("keys/{name}/rotate"), post(rotate_key).put(rotate_key))
        .route(
            &m("keys/{name}/config"),
            post(configure_key).put(configure_key),
        )
        .route(
            &m("keys/{name}/trim"),
            post(refused_destruction).put(refused_destruction),
        )
        .route(&m("export/{*rest}"), get(refused_export))
        .route(&m("backup/{name}"), get(refused_export))
        .route(
            &m("restore/{*rest}"),
            post(refused_export).put(refused_export),
        )
}

async fn refused_export(_caller: VaultCaller) -> VaultError {
    bad_request(
        "keys never leave the HSM key hierarchy: export and plaintext backup are not available",
    )
}

/// `delete` and `trim` destroy key versions: in tokenvault that takes two officers.
async fn refused_destruction(_caller: VaultCaller) -> VaultError {
    bad_request(
        "destroying key versions takes two security officers (`tokenvault keys retire` and \
         `keys destroy`, dual control), never a client over this API",
    )
}

/// `transit/keys/:name/rotate`: a new version of a keyring or signing key (nothing is
/// destroyed: older versions keep decrypting or verifying). Needs `rotate:<name>`; the
/// new version is audited as `key.create` with the client as its actor.
async fn rotate_key(
    State(state): State<AppState>,
    Path(name): Path<String>,
    caller: VaultCaller,
) -> Result<Response, VaultError> {
    let name = keyring(&name)?;
    let now = now_ms();
    let key = name.as_str();
    state
        .services
        .guard
        .check(
            &caller.who,
            crate::audit::Action::KeyRotate,
            key,
            Some(key),
            now,
        )
        .await?;
    let keys = &state.vault.keys;
    if !keys.has_keyring(key) && keys.signing_algorithm(key).is_none() {
        return Err(VaultError(Error::NotFound));
    }
    let spacing = state.vault.settings.vault_api.min_rotation_interval_secs;
    let newest = keys
        .newest_version_created(key)
        .await
        .map_err(Error::from)?;
    let wait = newest
        .map(|at| at + i64::try_from(spacing.saturating_mul(1000)).unwrap_or(i64::MAX) - now)
        .filter(|w| *w > 0);
    if let Some(wait) = wait {
        return Err(VaultError(Error::RateLimited {
            message: format!(
                "this key got a new version less than {spacing} s ago \
                 (vault_api.min_rotation_interval_secs)"
            ),
            retry_after: std::time::Duration::from_millis(u64::try_from(wait).unwrap_or(0)),
        }));
    }
    keys.rotate(
        key,
        &caller.who.identity,
        Some("rotated over the Vault API"),
        now,
    )
    .await
    .map_err(Error::from)?;
    Ok(no_content())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ConfigRequest {
    #[serde(deserialize_with = "weak::opt_i64")]
    min_decryption_version: Option<i64>,
    #[serde(deserialize_with = "weak::opt_i64")]
    min_encryption_version: Option<i64>,
    #[serde(deserialize_with = "weak::opt_bool")]
    deletion_allowed: Option<bool>,
    #[serde(deserialize_with = "weak::opt_bool")]
    exportable: Option<bool>,
    #[serde(deserialize_with = "weak::opt_bool")]
    allow_plaintext_backup: Option<bool>,
    auto_rotate_period: Option<Value>,
}

/// `transit/keys/:name/config`: what the key already is may be stated again (204); each
/// change is refused with the reason, because it is an officer's decision in tokenvault
/// (retiring versions, destruction) or impossible by design (export). Needs
/// `rotate:<name>`, the grant of a client that administers the key.
async fn configure_key(
    State(state): State<AppState>,
    Path(name): Path<String>,
    caller: VaultCaller,
    VaultJson(req): VaultJson<ConfigRequest>,
) -> Result<Response, VaultError> {
    let name = keyring(&name)?;
    let key = name.as_str();
    state
        .services
        .guard
        .check(
            &caller.who,
            crate::audit::Action::KeyRotate,
            key,
            Some(key),
            now_ms(),
        )
        .await?;
    if req.exportable == Some(true) || req.allow_plaintext_backup == Some(true) {
        return Err(bad_request(
            "keys never leave the HSM key hierarchy: exportable and allow_plaintext_backup \
             cannot be set",
        ));
    }
    if req.deletion_allowed == Some(true) {
        return Err(bad_request(
            "deletion is never allowed over this API: destroying key versions takes two \
             security officers (`tokenvault keys destroy`)",
        ));
    }
    if req.min_decryption_version.is_some_and(|v| v > 1) {
        return Err(bad_request(
            if state.vault.keys.signing_algorithm(key).is_some() {
                "min_decryption_version: a signing key's older versions keep verifying (they \
                 cannot be retired yet)"
            } else {
                "min_decryption_version: older versions stop decrypting when an officer \
                 retires them (`tokenvault keys retire`, after `keys rewrap`)"
            },
        ));
    }
    if req.min_encryption_version.is_some_and(|v| v != 0) {
        return Err(bad_request(
            "min_encryption_version: only the newest version encrypts or signs",
        ));
    }
    let period = req.auto_rotate_period.as_ref().filter(|p| !p.is_null());
    if period.is_some_and(|p| *p != json!(0) && *p != json!("0") && *p != json!("0s")) {
        return Err(bad_request(
            "auto_rotate_period: keyrings rotate on their configured cryptoperiod and usage \
             limit (`keyrings.<name>`), set in the vault's configuration",
        ));
    }
    let keys = &state.vault.keys;
    if !keys.has_keyring(key) && keys.signing_algorithm(key).is_none() {
        return Err(VaultError(Error::NotFound));
    }
    Ok(no_content())
}

/// The keyring a path names, checked before it is used anywhere.
pub(super) fn keyring(name: &str) -> Result<KeyringName, VaultError> {
    KeyringName::parse(name)
        .ok()
        .filter(|k| k.as_str() != FINGERPRINT_KEYRING)
        .ok_or_else(|| bad_request("the key name is not a tokenvault keyring name"))
}

/// `LIST …/keys` or `GET …/keys?list=true`: the keyrings (needs `keys:read`); none is 404.
async fn list_keys(
    State(state): State<AppState>,
    method: Method,
    uri: axum::http::Uri,
    caller: VaultCaller,
) -> Result<Response, VaultError> {
    if !(method == Method::GET || method.as_str() == "LIST") || !is_list(&method, uri.query()) {
        return Err(VaultError(Error::MethodNotAllowed));
    }
    let inventory = state.services.key_inventory(&caller.who, now_ms()).await?;
    let mut names: Vec<&str> = inventory
        .keys
        .iter()
        .map(|k| k.keyring.as_str())
        .filter(|k| *k != FINGERPRINT_KEYRING)
        .chain(
            inventory
                .signing_keys
                .iter()
                .map(|k| k.name.as_str())
                .filter(|k| state.vault.keys.signing_algorithm(k).is_some()),
        )
        .collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        return Err(VaultError(Error::NotFound));
    }
    Ok(data(json!({ "keys": names })))
}

/// The Vault description of a keyring (needs `keys:read`).
async fn read_key(
    State(state): State<AppState>,
    Path(name): Path<String>,
    caller: VaultCaller,
) -> Result<Response, VaultError> {
    let name = keyring(&name)?;
    let inventory = state.services.key_inventory(&caller.who, now_ms()).await?;
    if state.vault.keys.signing_algorithm(name.as_str()).is_some()
        && let Some(described) = super::sign::describe(&name, &inventory)
    {
        return Ok(data(described));
    }
    let versions: Vec<_> = inventory
        .keys
        .iter()
        .filter(|k| k.keyring == name.as_str())
        .collect();
    if versions.is_empty() {
        return Err(VaultError(Error::NotFound));
    }
    let usable = |k: &&crate::keys::KeyInfo| !matches!(k.state.as_str(), "destroyed" | "pending");
    let keys: serde_json::Map<String, Value> = versions
        .iter()
        .filter(|k| usable(k))
        .map(|k| (k.version.to_string(), json!(k.created_ms / 1000)))
        .collect();
    let latest = versions.iter().map(|k| k.version).max().unwrap_or(0);
    let min_decryption = versions
        .iter()
        .filter(|k| usable(k))
        .map(|k| k.version)
        .min()
        .unwrap_or(latest);
    Ok(data(json!({
        "name": name.as_str(),
        "type": "aes256-gcm96",
        "derived": state.vault.keys.is_derived(name.as_str()),
        "convergent_encryption": state.vault.keys.is_convergent(name.as_str()),
        "deletion_allowed": false,
        "exportable": false,
        "allow_plaintext_backup": false,
        "imported_key": false,
        "auto_rotate_period": 0,
        "keys": keys,
        "latest_version": latest,
        "min_available_version": 0,
        "min_decryption_version": min_decryption,
        "min_encryption_version": 0,
        "supports_encryption": true,
        "supports_decryption": true,
        "supports_derivation": true,
        "supports_signing": false,
    })))
}

/// Creating a key that exists is a no-op (204), as in Vault; keyrings themselves are
/// made in the vault's configuration. Needs `encrypt` on the keyring, so the answer
/// tells nothing to a caller that may not use it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CreateKeyRequest {
    #[serde(rename = "type", deserialize_with = "weak::opt_string")]
    kind: Option<String>,
    #[serde(deserialize_with = "weak::opt_bool")]
    derived: Option<bool>,
    #[serde(deserialize_with = "weak::opt_bool")]
    convergent_encryption: Option<bool>,
    #[serde(deserialize_with = "weak::opt_bool")]
    exportable: Option<bool>,
    #[serde(deserialize_with = "weak::opt_bool")]
    allow_plaintext_backup: Option<bool>,
}

async fn create_key(
    State(state): State<AppState>,
    Path(name): Path<String>,
    caller: VaultCaller,
    VaultJson(req): VaultJson<CreateKeyRequest>,
) -> Result<Response, VaultError> {
    let name = keyring(&name)?;
    if req.exportable == Some(true) || req.allow_plaintext_backup == Some(true) {
        return Err(bad_request(
            "keys never leave the HSM key hierarchy: exportable and allow_plaintext_backup \
             cannot be set",
        ));
    }
    if let Some(algorithm) = state.vault.keys.signing_algorithm(name.as_str()) {
        return super::sign::create_existing(&state, &caller, &name, algorithm, req.kind).await;
    }
    if req.kind.as_deref().is_some_and(|k| k != "aes256-gcm96") {
        return Err(bad_request("tokenvault keyrings are aes256-gcm96"));
    }
    if req
        .convergent_encryption
        .is_some_and(|c| c != state.vault.keys.is_convergent(name.as_str()))
    {
        return Err(bad_request(
            "the key exists with another `convergent_encryption` setting \
             (keyrings.<name>.convergent in the vault's configuration)",
        ));
    }
    if req
        .derived
        .is_some_and(|d| d != state.vault.keys.is_derived(name.as_str()))
    {
        return Err(bad_request(
            "the key exists with another `derived` setting (keyrings.<name>.derived in the \
             vault's configuration)",
        ));
    }
    let guard = &state.services.guard;
    guard
        .check(
            &caller.who,
            crate::audit::Action::Encrypt,
            name.as_str(),
            Some(name.as_str()),
            now_ms(),
        )
        .await?;
    if !state.vault.keys.has_keyring(name.as_str()) {
        return Err(bad_request(
            "no such keyring: transit keys are tokenvault keyrings, made in the vault's \
             configuration (`keyrings`) and `tokenvault init`, not over this API",
        ));
    }
    Ok(no_content())
}
