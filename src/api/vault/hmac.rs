//! Transit `hmac` and `verify` (of an HMAC) over tokenvault keyrings: HMAC-SHA-256 under
//! each key version's HMAC subkey (`DataKey::mac`), through the one encrypt path
//! (`CryptoService::hmac`, `hmac_verify`: `hmac:<keyring>`, audited). Digests are
//! `vault:v<N>:<base64>`. A `verify` that carries a `signature` is a signature check,
//! answered by `sign.rs`.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::batch::{self, answer, outcome};
use super::keys::keyring;
use super::{AppState, VaultCaller, VaultError, VaultJson, weak};
use crate::error::Error;
use crate::keys::{KeyVersion, KeyringName};
use crate::vault::now_ms;

pub fn router(mount: &str) -> Router<AppState> {
    let m = |tail: &str| format!("/v1/{mount}/{tail}");
    Router::new()
        .route(&m("hmac/{name}"), post(hmac).put(hmac))
        .route(
            &m("hmac/{name}/{algorithm}"),
            post(hmac_with).put(hmac_with),
        )
        .route(&m("verify/{name}"), post(verify).put(verify))
        .route(
            &m("verify/{name}/{algorithm}"),
            post(verify_with).put(verify_with),
        )
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Item {
    #[serde(deserialize_with = "weak::opt_string")]
    input: Option<String>,
    #[serde(deserialize_with = "weak::opt_string")]
    hmac: Option<String>,
    reference: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Request {
    #[serde(deserialize_with = "weak::opt_string")]
    input: Option<String>,
    #[serde(deserialize_with = "weak::opt_string")]
    hmac: Option<String>,
    reference: Option<Value>,
    #[serde(deserialize_with = "weak::opt_i64")]
    key_version: Option<i64>,
    #[serde(deserialize_with = "weak::opt_string")]
    algorithm: Option<String>,
    batch_input: Option<Vec<Item>>,
}

/// Only SHA-2-256, Vault's default.
fn check_algorithm(path: Option<&str>, body: Option<&str>) -> Result<(), VaultError> {
    match path.or(body).unwrap_or("sha2-256") {
        "sha2-256" => Ok(()),
        _ => Err(super::bad_request(
            "algorithm: tokenvault's HMAC is sha2-256",
        )),
    }
}

fn input(item: &Item) -> Result<Vec<u8>, Error> {
    let s = item
        .input
        .as_deref()
        .ok_or_else(|| Error::InvalidRequest("missing input".into()))?;
    STANDARD
        .decode(s.trim())
        .map_err(|_| Error::InvalidRequest("`input` is not valid base64".into()))
}

/// `vault:v<N>:<base64>` → (N, digest).
fn parse_mac(s: &str) -> Result<(KeyVersion, Vec<u8>), Error> {
    super::vault_versioned(s, "hmac")
}

impl Request {
    fn items(self, max_batch: usize) -> Result<(Vec<Item>, bool), VaultError> {
        let single = || Item {
            input: self.input,
            hmac: self.hmac,
            reference: self.reference,
        };
        batch::items(self.batch_input, single, max_batch)
    }
}

#[derive(Serialize)]
struct Digest {
    hmac: String,
}

#[derive(Serialize)]
struct Verdict {
    valid: bool,
}

async fn hmac_with(
    state: State<AppState>,
    Path((name, algorithm)): Path<(String, String)>,
    caller: VaultCaller,
    req: VaultJson<Request>,
) -> Result<Response, VaultError> {
    digest(state, name, Some(algorithm), caller, req).await
}

async fn hmac(
    state: State<AppState>,
    Path(name): Path<String>,
    caller: VaultCaller,
    req: VaultJson<Request>,
) -> Result<Response, VaultError> {
    digest(state, name, None, caller, req).await
}

async fn digest(
    State(state): State<AppState>,
    name: String,
    algorithm: Option<String>,
    caller: VaultCaller,
    VaultJson(req): VaultJson<Request>,
) -> Result<Response, VaultError> {
    let name: KeyringName = keyring(&name)?;
    check_algorithm(algorithm.as_deref(), req.algorithm.as_deref())?;
    let version = match req.key_version.filter(|v| *v > 0) {
        None => None,
        Some(v) => Some(
            u32::try_from(v).map_err(|_| super::bad_request("key_version is not a key version"))?,
        ),
    };
    let (items, is_batch) = req.items(state.vault.settings.limits.max_batch)?;
    let crypto = &state.services.crypto;
    let mut outcomes = Vec::with_capacity(items.len());
    for item in items {
        let result = async {
            let data = input(&item)?;
            let (v, mac) = crypto
                .hmac(&caller.who, &name, version, &data, now_ms())
                .await?;
            Ok::<_, Error>(Digest {
                hmac: format!("vault:v{v}:{}", STANDARD.encode(mac)),
            })
        }
        .await;
        outcomes.push(outcome(result, item.reference)?);
    }
    // Vault answers an hmac batch 200 whatever its items did.
    answer(outcomes, is_batch, None, true)
}

async fn verify_with(
    state: State<AppState>,
    Path((name, algorithm)): Path<(String, String)>,
    caller: VaultCaller,
    req: VaultJson<Value>,
) -> Result<Response, VaultError> {
    check(state, name, Some(algorithm), caller, req).await
}

async fn verify(
    state: State<AppState>,
    Path(name): Path<String>,
    caller: VaultCaller,
    req: VaultJson<Value>,
) -> Result<Response, VaultError> {
    check(state, name, None, caller, req).await
}

fn request<T: serde::de::DeserializeOwned>(body: Value) -> Result<T, VaultError> {
    serde_json::from_value(body).map_err(|_| {
        super::bad_request("the request body does not have the fields of a verify request")
    })
}

async fn check(
    State(state): State<AppState>,
    name: String,
    algorithm: Option<String>,
    caller: VaultCaller,
    VaultJson(body): VaultJson<Value>,
) -> Result<Response, VaultError> {
    let name: KeyringName = keyring(&name)?;
    let signed: super::sign::Request = request(body.clone())?;
    if signed.has_signature() {
        return super::sign::verify(&state, &name, algorithm.as_deref(), &caller, signed).await;
    }
    let req: Request = request(body)?;
    check_algorithm(algorithm.as_deref(), req.algorithm.as_deref())?;
    let (items, is_batch) = req.items(state.vault.settings.limits.max_batch)?;
    let crypto = &state.services.crypto;
    let mut outcomes = Vec::with_capacity(items.len());
    for item in items {
        let result = async {
            let data = input(&item)?;
            let (version, mac) = parse_mac(
                item.hmac
                    .as_deref()
                    .ok_or_else(|| Error::InvalidRequest("missing hmac to verify".into()))?,
            )?;
            let valid = crypto
                .hmac_verify(&caller.who, &name, version, &data, &mac, now_ms())
                .await?;
            Ok(Verdict { valid })
        }
        .await;
        outcomes.push(outcome(result, item.reference)?);
    }
    answer(outcomes, is_batch, None, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_as_vault_writes_them() {
        let (v, mac) = parse_mac("vault:v2:AAEC").unwrap();
        assert_eq!((v.get(), mac), (2, vec![0, 1, 2]));
        for bad in ["vault:v0:AAEC", "v2:AAEC", "vault:v2:!!", "vault:v2"] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
        assert!(check_algorithm(None, None).is_ok());
        assert!(check_algorithm(Some("sha2-512"), None).is_err());
        assert!(check_algorithm(None, Some("sha2-256")).is_ok());
    }
}
