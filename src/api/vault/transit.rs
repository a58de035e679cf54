//! The Transit engine over tokenvault keyrings: `encrypt`, `decrypt`, `rewrap`,
//! `datakey`, single and `batch_input` (the key routes are in `keys.rs`).
//!
//! Translation only: every operation goes through the one encrypt path
//! (`CryptoService`: permission, reveal budget, audit).
//!
//! - Ciphertexts are `vault:v<N>:<standard base64 of nonce ‖ ciphertext ‖ tag>`: the
//!   same sealed bytes as the native `tv1:<keyring>:<N>:…`, under the keyring the path
//!   names, so either form opens the other's data.
//! - `associated_data` is the AAD, as the native `context` is. A Vault `context` (key
//!   derivation) is bound too, length-prefixed in front of it, so a ciphertext opens
//!   only with the same context — what a derived key gives a Vault client.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

use super::batch::{self, answer, outcome};
use super::keys::keyring;
use super::{AppState, VaultCaller, VaultError, VaultJson, bad_request, data, weak};
use crate::api::json::{Revealed, SecretField};
use crate::crypto::Ciphertext;
use crate::error::Error;
use crate::keys::KeyringName;
use crate::vault::now_ms;

pub fn router(mount: &str) -> Router<AppState> {
    let m = |tail: &str| format!("/v1/{mount}/{tail}");
    Router::new()
        .route(&m("encrypt/{name}"), post(encrypt).put(encrypt))
        .route(&m("decrypt/{name}"), post(decrypt).put(decrypt))
        .route(&m("rewrap/{name}"), post(rewrap).put(rewrap))
        .route(&m("datakey/{kind}/{name}"), post(datakey).put(datakey))
}

/// One item of a request, or the request itself when it has no `batch_input`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Item {
    plaintext: Option<SecretField>,
    #[serde(deserialize_with = "weak::opt_string")]
    ciphertext: Option<String>,
    #[serde(deserialize_with = "weak::opt_string")]
    context: Option<String>,
    #[serde(deserialize_with = "weak::opt_string")]
    associated_data: Option<String>,
    #[serde(deserialize_with = "weak::opt_i64")]
    key_version: Option<i64>,
    /// Echoed in the item's result, whatever it holds.
    reference: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Request {
    plaintext: Option<SecretField>,
    #[serde(deserialize_with = "weak::opt_string")]
    ciphertext: Option<String>,
    #[serde(deserialize_with = "weak::opt_string")]
    context: Option<String>,
    #[serde(deserialize_with = "weak::opt_string")]
    associated_data: Option<String>,
    #[serde(deserialize_with = "weak::opt_i64")]
    key_version: Option<i64>,
    reference: Option<Value>,
    batch_input: Option<Vec<Item>>,
    #[serde(deserialize_with = "weak::opt_i64")]
    partial_failure_response_code: Option<i64>,
}

impl Request {
    /// The items, and whether they came as a batch.
    fn items(self, max_batch: usize) -> Result<(Vec<Item>, bool), VaultError> {
        let single = || Item {
            plaintext: self.plaintext,
            ciphertext: self.ciphertext,
            context: self.context,
            associated_data: self.associated_data,
            key_version: self.key_version,
            reference: self.reference,
        };
        let (batch, is_batch) = batch::items(self.batch_input, single, max_batch)?;
        if !is_batch {
            return Ok((batch, false));
        }
        let with_context = batch
            .iter()
            .filter(|i| i.context.as_deref().is_some_and(|c| !c.is_empty()))
            .count();
        if with_context != 0 && with_context != batch.len() {
            return Err(bad_request("context must be set in all items or none"));
        }
        Ok((batch, true))
    }
}

fn b64(field: &str, s: Option<&str>) -> Result<Vec<u8>, Error> {
    s.map_or(Ok(Vec::new()), |s| {
        STANDARD
            .decode(s.trim())
            .map_err(|_| Error::InvalidRequest(format!("`{field}` is not valid base64")))
    })
}

/// What a context's AAD starts with (and plain associated data never does).
const CONTEXT_FRAME: &[u8] = b"vault-context\0";

/// The AAD of an item: `associated_data`, with a derivation `context` bound in front of
/// it by length, so no two (context, data) pairs give the same bytes.
fn aad(item: &Item) -> Result<Vec<u8>, Error> {
    let ad = b64("associated_data", item.associated_data.as_deref())?;
    let Some(context) = item.context.as_deref().filter(|c| !c.is_empty()) else {
        if ad.starts_with(CONTEXT_FRAME) {
            return Err(Error::InvalidRequest(
                "associated_data may not begin with the bytes that frame a context".into(),
            ));
        }
        return Ok(ad);
    };
    let ctx = b64("context", Some(context))?;
    let len = u32::try_from(ctx.len())
        .map_err(|_| Error::InvalidRequest("`context` is too long".into()))?;
    let mut out = Vec::with_capacity(18 + ctx.len() + ad.len());
    out.extend_from_slice(CONTEXT_FRAME);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&ctx);
    out.extend_from_slice(&ad);
    Ok(out)
}

/// [`aad`] for the keyring the path names: a derived keyring's items each name a
/// `context` (associated data alone is not one), as Vault's derived keys demand.
fn derived_aad(state: &AppState, keyring: &KeyringName, item: &Item) -> Result<Vec<u8>, Error> {
    // Decided on the decoded bytes: a context of whitespace decodes to none.
    let has_context = !b64("context", item.context.as_deref())?.is_empty();
    if !has_context && state.vault.keys.is_derived(keyring.as_str()) {
        return Err(Error::InvalidRequest(
            "missing 'context' for key derivation: this key is derived, so every operation \
             names a context"
                .into(),
        ));
    }
    aad(item)
}

/// `vault:v<N>:<base64>`.
fn to_vault(ct: &Ciphertext) -> String {
    format!("vault:v{}:{}", ct.version, STANDARD.encode(&ct.sealed))
}

/// A Vault ciphertext of the keyring the path names.
fn from_vault(keyring: &KeyringName, s: &str) -> Result<Ciphertext, Error> {
    let (version, sealed) = super::vault_versioned(s, "ciphertext")?;
    Ciphertext::new(keyring.clone(), version, sealed).map_err(|_| {
        Error::InvalidRequest("malformed ciphertext: expected vault:v<N>:<base64>".into())
    })
}

#[derive(Serialize)]
struct Sealed {
    ciphertext: String,
    key_version: u32,
}

#[derive(Serialize)]
struct Opened {
    plaintext: Revealed,
}

async fn encrypt(
    State(state): State<AppState>,
    Path(name): Path<String>,
    caller: VaultCaller,
    VaultJson(req): VaultJson<Request>,
) -> Result<Response, VaultError> {
    let name = keyring(&name)?;
    let partial = req.partial_failure_response_code;
    let (items, batch) = req.items(state.vault.settings.limits.max_batch)?;
    let crypto = &state.services.crypto;
    let mut outcomes = Vec::with_capacity(items.len());
    for item in items {
        let result = async {
            let plaintext = item
                .plaintext
                .as_ref()
                .ok_or_else(|| Error::InvalidRequest("missing plaintext to encrypt".into()))?;
            let plaintext = Zeroizing::new(b64("plaintext", Some(plaintext.0.as_str()))?);
            let aad = derived_aad(&state, &name, &item)?;
            let version = match item.key_version.filter(|v| *v > 0) {
                None => None,
                Some(v) => Some(u32::try_from(v).map_err(|_| {
                    Error::InvalidRequest("key_version is not a key version".into())
                })?),
            };
            let ct = crypto
                .seal_version(
                    &caller.who,
                    name.as_str(),
                    version,
                    &plaintext,
                    &aad,
                    now_ms(),
                )
                .await?;
            Ok::<_, Error>(Sealed {
                ciphertext: to_vault(&ct),
                key_version: ct.version.get(),
            })
        }
        .await;
        outcomes.push(outcome(result, item.reference)?);
    }
    answer(outcomes, batch, partial, false)
}

async fn decrypt(
    State(state): State<AppState>,
    Path(name): Path<String>,
    caller: VaultCaller,
    VaultJson(req): VaultJson<Request>,
) -> Result<Response, VaultError> {
    let name = keyring(&name)?;
    let partial = req.partial_failure_response_code;
    let (items, batch) = req.items(state.vault.settings.limits.max_batch)?;
    // Each item read first; the ones that parse are opened together (one permission
    // check, the reveal budget charged for all of them, their events in one commit).
    let parsed: Vec<Result<(Ciphertext, Vec<u8>), Error>> = items
        .iter()
        .map(|item| {
            let ct = item
                .ciphertext
                .as_deref()
                .ok_or_else(|| Error::InvalidRequest("missing ciphertext to decrypt".into()))?;
            Ok((from_vault(&name, ct)?, derived_aad(&state, &name, item)?))
        })
        .collect();
    let to_open: Vec<(&Ciphertext, &[u8])> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok())
        .map(|(ct, aad)| (ct, aad.as_slice()))
        .collect();
    let mut opened = if to_open.is_empty() {
        Vec::new()
    } else {
        state
            .services
            .crypto
            .open_batch(&caller.who, &name, &to_open, now_ms())
            .await?
    }
    .into_iter();
    let mut outcomes = Vec::with_capacity(items.len());
    for (item, parsed) in items.into_iter().zip(parsed) {
        let result = match parsed {
            Err(e) => Err(e),
            Ok(_) => opened
                .next()
                .unwrap_or_else(|| Err(Error::Internal("a decrypt gave no outcome".into())))
                .map(|plain| Opened {
                    plaintext: Revealed::from(STANDARD.encode(&plain[..])),
                }),
        };
        outcomes.push(outcome(result, item.reference)?);
    }
    answer(outcomes, batch, partial, false)
}

async fn rewrap(
    State(state): State<AppState>,
    Path(name): Path<String>,
    caller: VaultCaller,
    VaultJson(req): VaultJson<Request>,
) -> Result<Response, VaultError> {
    let name = keyring(&name)?;
    let (items, batch) = req.items(state.vault.settings.limits.max_batch)?;
    let crypto = &state.services.crypto;
    let mut outcomes = Vec::with_capacity(items.len());
    for item in items {
        let result = async {
            let ct = item
                .ciphertext
                .as_deref()
                .ok_or_else(|| Error::InvalidRequest("missing ciphertext to rewrap".into()))?;
            let ct = from_vault(&name, ct)?;
            let new = crypto
                .reseal(
                    &caller.who,
                    ct,
                    &derived_aad(&state, &name, &item)?,
                    now_ms(),
                )
                .await?;
            Ok::<_, Error>(Sealed {
                ciphertext: to_vault(&new),
                key_version: new.version.get(),
            })
        }
        .await;
        outcomes.push(outcome(result, item.reference)?);
    }
    // Vault answers a rewrap batch 200 whatever its items did.
    answer(outcomes, batch, None, true)
}

/// `datakey/plaintext|wrapped/:name`: a fresh random key sealed under the keyring (an
/// encryption like any other: permission `encrypt:<keyring>`, audited), with its
/// plaintext only on the `plaintext` path.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DataKeyRequest {
    #[serde(deserialize_with = "weak::opt_string")]
    context: Option<String>,
    #[serde(deserialize_with = "weak::opt_i64")]
    bits: Option<i64>,
    #[serde(deserialize_with = "weak::opt_string")]
    nonce: Option<String>,
}

#[derive(Serialize)]
struct DataKey {
    ciphertext: String,
    key_version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<Revealed>,
}

async fn datakey(
    State(state): State<AppState>,
    Path((kind, name)): Path<(String, String)>,
    caller: VaultCaller,
    VaultJson(req): VaultJson<DataKeyRequest>,
) -> Result<Response, VaultError> {
    let with_plaintext = match kind.as_str() {
        "plaintext" => true,
        "wrapped" => false,
        _ => return Err(bad_request("a data key is `plaintext` or `wrapped`")),
    };
    let name = keyring(&name)?;
    if req.nonce.as_deref().is_some_and(|n| !n.is_empty()) {
        return Err(bad_request("nonce: tokenvault draws every nonce itself"));
    }
    let bytes = match req.bits.unwrap_or(256) {
        128 => 16,
        256 => 32,
        512 => 64,
        _ => return Err(bad_request("bits must be 128, 256 or 512")),
    };
    let mut key = Zeroizing::new(vec![0u8; bytes]);
    crate::crypto::random_bytes(&mut key);
    let item = Item {
        context: req.context,
        ..Item::default()
    };
    let ct = state
        .services
        .crypto
        .seal(
            &caller.who,
            name.as_str(),
            &key,
            &derived_aad(&state, &name, &item)?,
            now_ms(),
        )
        .await?;
    Ok(data(DataKey {
        ciphertext: to_vault(&ct),
        key_version: ct.version.get(),
        plaintext: with_plaintext.then(|| Revealed::from(STANDARD.encode(&key[..]))),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyVersion;

    fn item(context: Option<&str>, ad: Option<&str>) -> Item {
        Item {
            context: context.map(str::to_owned),
            associated_data: ad.map(str::to_owned),
            ..Item::default()
        }
    }

    #[test]
    fn vault_ciphertexts_carry_the_sealed_bytes_of_the_native_ones() {
        let keyring = KeyringName::parse("pii").unwrap();
        let ct =
            Ciphertext::new(keyring.clone(), KeyVersion::new(3).unwrap(), vec![7; 40]).unwrap();
        let v = to_vault(&ct);
        assert!(v.starts_with("vault:v3:"), "{v}");
        assert_eq!(from_vault(&keyring, &v).unwrap(), ct);
        for bad in [
            "vault:v0:AAAA",
            "vault:3:AAAA",
            "tv1:pii:3:AAAA",
            "vault:v3:!!",
            "vault:v3:AAAA",
        ] {
            assert!(from_vault(&keyring, bad).is_err(), "{bad}");
        }
    }

    /// Review of issue 16 (finding 3): associated data that spells the framing of a
    /// context would give the same AAD as that context; it is refused.
    #[test]
    fn associated_data_cannot_pose_as_a_framed_context() {
        let framed = aad(&item(Some("YQ=="), None)).unwrap();
        let posing = STANDARD.encode(&framed);
        assert!(aad(&item(None, Some(&posing))).is_err());
    }

    /// An empty context counts as none, in the batch rule as in the AAD.
    #[test]
    fn an_empty_context_is_no_context() {
        let batch = Request {
            batch_input: Some(vec![item(Some(""), None), item(None, None)]),
            ..Request::default()
        };
        assert!(batch.items(10).is_ok());
        assert_eq!(
            aad(&item(Some(""), None)).unwrap(),
            aad(&item(None, None)).unwrap()
        );
    }

    #[test]
    fn a_context_is_bound_apart_from_the_associated_data() {
        // "ab" as data alone, and "a" as context with "b" as data, must differ.
        let plain = aad(&item(None, Some("YWI="))).unwrap();
        assert_eq!(plain, b"ab");
        let split = aad(&item(Some("YQ=="), Some("Yg=="))).unwrap();
        let joined = aad(&item(Some("YWI="), None)).unwrap();
        assert_ne!(split, plain);
        assert_ne!(split, joined);
        assert!(aad(&item(Some("%%"), None)).is_err());
    }
}
