//! Transit `sign` and `verify` (of a signature) with tokenvault signing keys: key pairs
//! generated in the HSM (`ecdsa-p256`, `ed25519`), one per version, through the one
//! service (`CryptoService::sign`, `verify_signature`: `sign:<key>` / `verify:<key>`,
//! audited). Signatures are `vault:v<N>:<base64>`: DER for ECDSA (`marshaling_algorithm`
//! `asn1`, the default), r ‖ s in unpadded base64url with `jws`; 64 bytes for Ed25519.
//! Also the key description Transit's `keys/:name` gives for a signing key.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::batch::{self, answer, outcome};
use super::keys::keyring;
use super::{AppState, VaultCaller, VaultError, VaultJson, bad_request, no_content, weak};
use crate::error::Error;
use crate::hsm::SignAlgorithm;
use crate::keys::{Inventory, KeyVersion, KeyringName};
use crate::tokenize::{Marshaling, SignOptions, Signature};
use crate::vault::now_ms;

pub fn router(mount: &str) -> Router<AppState> {
    let m = |tail: &str| format!("/v1/{mount}/{tail}");
    Router::new()
        .route(&m("sign/{name}"), post(sign).put(sign))
        .route(&m("sign/{name}/{hash}"), post(sign_with).put(sign_with))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Item {
    #[serde(deserialize_with = "weak::opt_string")]
    input: Option<String>,
    #[serde(deserialize_with = "weak::opt_string")]
    signature: Option<String>,
    #[serde(deserialize_with = "weak::opt_string")]
    context: Option<String>,
    reference: Option<Value>,
}

/// The fields of a sign or signature-verify request that are not per item.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Request {
    #[serde(deserialize_with = "weak::opt_string")]
    input: Option<String>,
    #[serde(deserialize_with = "weak::opt_string")]
    signature: Option<String>,
    #[serde(deserialize_with = "weak::opt_string")]
    context: Option<String>,
    reference: Option<Value>,
    #[serde(deserialize_with = "weak::opt_i64")]
    key_version: Option<i64>,
    #[serde(deserialize_with = "weak::opt_string")]
    hash_algorithm: Option<String>,
    /// Vault's older name for `hash_algorithm`.
    #[serde(deserialize_with = "weak::opt_string")]
    algorithm: Option<String>,
    #[serde(deserialize_with = "weak::opt_bool")]
    prehashed: Option<bool>,
    #[serde(deserialize_with = "weak::opt_string")]
    marshaling_algorithm: Option<String>,
    #[serde(deserialize_with = "weak::opt_string")]
    signature_algorithm: Option<String>,
    batch_input: Option<Vec<Item>>,
}

impl Request {
    fn split(self, max_batch: usize) -> Result<(SignOptions, Vec<Item>, bool), VaultError> {
        let marshaling = match self.marshaling_algorithm.as_deref().unwrap_or("asn1") {
            "asn1" | "" => Marshaling::Asn1,
            "jws" => Marshaling::Jws,
            _ => return Err(bad_request("marshaling_algorithm: asn1 or jws")),
        };
        let hash = self.hash_algorithm.or(self.algorithm);
        check_hash(hash.as_deref())?;
        if self
            .signature_algorithm
            .as_deref()
            .is_some_and(|s| !s.is_empty())
        {
            return Err(bad_request(
                "signature_algorithm applies to RSA keys; tokenvault signs with ecdsa-p256 \
                 and ed25519",
            ));
        }
        let options = SignOptions {
            prehashed: self.prehashed.unwrap_or(false),
            marshaling,
        };
        let single = || Item {
            input: self.input,
            signature: self.signature,
            context: self.context,
            reference: self.reference,
        };
        let (items, is_batch) = batch::items(self.batch_input, single, max_batch)?;
        Ok((options, items, is_batch))
    }
}

/// ECDSA hashes with SHA-2-256 (Ed25519 ignores the hash, as in Vault).
fn check_hash(hash: Option<&str>) -> Result<(), VaultError> {
    match hash.unwrap_or("sha2-256") {
        "sha2-256" | "" => Ok(()),
        _ => Err(bad_request(
            "hash_algorithm: tokenvault's ECDSA keys hash with sha2-256",
        )),
    }
}

fn input(item: &Item) -> Result<Vec<u8>, Error> {
    if item.context.as_deref().is_some_and(|c| !c.is_empty()) {
        return Err(Error::InvalidRequest(
            "context: tokenvault's signing keys are not derived".into(),
        ));
    }
    let s = item
        .input
        .as_deref()
        .ok_or_else(|| Error::InvalidRequest("missing input".into()))?;
    STANDARD
        .decode(s.trim())
        .map_err(|_| Error::InvalidRequest("`input` is not valid base64".into()))
}

/// Standard base64, but base64url without padding for an ECDSA signature under `jws`
/// (Vault's marshaling applies to ECDSA only).
fn encode(signed: &Signature, marshaling: Marshaling) -> String {
    if signed.algorithm == SignAlgorithm::EcdsaP256 && marshaling == Marshaling::Jws {
        URL_SAFE_NO_PAD.encode(&signed.bytes)
    } else {
        STANDARD.encode(&signed.bytes)
    }
}

/// `vault:v<N>:<base64>` → (N, signature), base64url without padding under `jws`.
fn parse_signature(s: &str, marshaling: Marshaling) -> Result<(KeyVersion, Vec<u8>), Error> {
    if marshaling == Marshaling::Asn1 {
        return super::vault_versioned(s, "signature");
    }
    let malformed =
        || Error::InvalidRequest("malformed signature: expected vault:v<N>:<base64url>".into());
    let rest = s.trim().strip_prefix("vault:v").ok_or_else(malformed)?;
    let (version, body) = rest.split_once(':').ok_or_else(malformed)?;
    let version: KeyVersion = version.parse().map_err(|_| malformed())?;
    // An Ed25519 signature stays standard base64 under `jws`.
    let bytes = URL_SAFE_NO_PAD
        .decode(body)
        .or_else(|_| STANDARD.decode(body))
        .map_err(|_| malformed())?;
    Ok((version, bytes))
}

#[derive(Serialize)]
struct Signed {
    signature: String,
    key_version: u32,
}

#[derive(Serialize)]
struct Verdict {
    valid: bool,
}

async fn sign_with(
    state: State<AppState>,
    Path((name, hash)): Path<(String, String)>,
    caller: VaultCaller,
    req: VaultJson<Request>,
) -> Result<Response, VaultError> {
    check_hash(Some(&hash))?;
    sign(state, Path(name), caller, req).await
}

async fn sign(
    State(state): State<AppState>,
    Path(name): Path<String>,
    caller: VaultCaller,
    VaultJson(req): VaultJson<Request>,
) -> Result<Response, VaultError> {
    let name: KeyringName = keyring(&name)?;
    let version = match req.key_version.filter(|v| *v > 0) {
        None => None,
        Some(v) => {
            Some(u32::try_from(v).map_err(|_| bad_request("key_version is not a key version"))?)
        }
    };
    let (options, items, is_batch) = req.split(state.vault.settings.limits.max_batch)?;
    let crypto = &state.services.crypto;
    let mut outcomes = Vec::with_capacity(items.len());
    for item in items {
        let result = async {
            let data = input(&item)?;
            let signed = crypto
                .sign(&caller.who, &name, version, &data, options, now_ms())
                .await?;
            let v = signed.version;
            Ok::<_, Error>(Signed {
                signature: format!("vault:v{v}:{}", encode(&signed, options.marshaling)),
                key_version: v.get(),
            })
        }
        .await;
        outcomes.push(outcome(result, item.reference)?);
    }
    // Vault answers a sign batch 200 whatever its items did.
    answer(outcomes, is_batch, None, true)
}

/// `transit/verify/:name` with `signature` (the route is shared with HMAC verification,
/// which `hmac.rs` answers when the request carries no signature).
pub(super) async fn verify(
    state: &AppState,
    name: &KeyringName,
    hash: Option<&str>,
    caller: &VaultCaller,
    req: Request,
) -> Result<Response, VaultError> {
    check_hash(hash)?;
    let (options, items, is_batch) = req.split(state.vault.settings.limits.max_batch)?;
    let crypto = &state.services.crypto;
    let mut outcomes = Vec::with_capacity(items.len());
    for item in items {
        let result = async {
            let data = input(&item)?;
            let (version, signature) = parse_signature(
                item.signature
                    .as_deref()
                    .ok_or_else(|| Error::InvalidRequest("missing signature to verify".into()))?,
                options.marshaling,
            )?;
            let valid = crypto
                .verify_signature(
                    &caller.who,
                    name,
                    version,
                    &data,
                    &signature,
                    options,
                    now_ms(),
                )
                .await?;
            Ok::<_, Error>(Verdict { valid })
        }
        .await;
        outcomes.push(outcome(result, item.reference)?);
    }
    answer(outcomes, is_batch, None, true)
}

impl Request {
    /// Whether the request (or any batch item) carries a signature rather than an HMAC.
    pub(super) fn has_signature(&self) -> bool {
        let set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
        set(&self.signature)
            || self
                .batch_input
                .as_ref()
                .is_some_and(|b| b.iter().any(|i| set(&i.signature)))
    }
}

/// Vault's description of the signing key `name`, if it is one (from the inventory the
/// caller was allowed to read).
pub(super) fn describe(name: &KeyringName, inventory: &Inventory) -> Option<Value> {
    let versions: Vec<_> = inventory
        .signing_keys
        .iter()
        .filter(|k| k.name == name.as_str())
        .collect();
    let first = versions.first()?;
    let keys: serde_json::Map<String, Value> = versions
        .iter()
        .map(|k| {
            (
                k.version.to_string(),
                json!({
                    "name": k.algorithm,
                    "public_key": k.public_key,
                    "creation_time": super::rfc3339(k.created_ms),
                }),
            )
        })
        .collect();
    let latest = versions.iter().map(|k| k.version).max().unwrap_or(0);
    Some(json!({
        "name": name.as_str(),
        "type": first.algorithm,
        "derived": false,
        "convergent_encryption": false,
        "deletion_allowed": false,
        "exportable": false,
        "allow_plaintext_backup": false,
        "imported_key": false,
        "auto_rotate_period": 0,
        "keys": keys,
        "latest_version": latest,
        "min_available_version": 0,
        "min_decryption_version": 1,
        "min_encryption_version": 0,
        "supports_encryption": false,
        "supports_decryption": false,
        "supports_derivation": false,
        "supports_signing": true,
    }))
}

/// `POST transit/keys/:name` naming a configured signing key: 204 when the requested
/// type (if any) is its algorithm. Needs `sign:<name>`, so the answer tells nothing to a
/// caller that may not use it. Signing keys, like keyrings, are made in the vault's
/// configuration and `tokenvault init`.
pub(super) async fn create_existing(
    state: &AppState,
    caller: &VaultCaller,
    name: &KeyringName,
    algorithm: SignAlgorithm,
    kind: Option<String>,
) -> Result<Response, VaultError> {
    state
        .services
        .guard
        .check(
            &caller.who,
            crate::audit::Action::Sign,
            name.as_str(),
            Some(name.as_str()),
            now_ms(),
        )
        .await?;
    if kind.as_deref().is_some_and(|k| k != algorithm.as_str()) {
        return Err(bad_request(
            "the key exists with another type (signing keys are made in the vault's \
             configuration, `signing_keys`)",
        ));
    }
    Ok(no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_parse_in_both_marshalings() {
        let (v, sig) = parse_signature("vault:v3:AAEC", Marshaling::Asn1).unwrap();
        assert_eq!((v.get(), sig), (3, vec![0, 1, 2]));
        let (v, sig) = parse_signature("vault:v1:-_8", Marshaling::Jws).unwrap();
        assert_eq!((v.get(), sig), (1, vec![0xfb, 0xff]));
        for bad in ["vault:v0:AAEC", "v2:AAEC", "vault:v2:!!", "vault:v2"] {
            assert!(parse_signature(bad, Marshaling::Asn1).is_err(), "{bad}");
            assert!(parse_signature(bad, Marshaling::Jws).is_err(), "{bad}");
        }
        assert!(check_hash(None).is_ok());
        assert!(check_hash(Some("sha2-512")).is_err());
    }
}
