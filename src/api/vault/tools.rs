//! Transit's keyless helpers: `random` (bytes from the operating system's CSPRNG) and
//! `hash` (SHA-2). They touch no key and no stored data, so they are not audited; a
//! session is still needed, as in Vault.

use axum::Router;
use axum::extract::Path;
use axum::response::Response;
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::json;
use sha2::Digest;

use super::{AppState, VaultCaller, VaultError, VaultJson, bad_request, data, weak};

/// Most random bytes one request may ask for.
const MAX_RANDOM_BYTES: i64 = 64 * 1024;

pub fn router(mount: &str) -> Router<AppState> {
    let m = |tail: &str| format!("/v1/{mount}/{tail}");
    Router::new()
        .route(&m("random"), post(random_body).put(random_body))
        .route(&m("random/{arg}"), post(random_path).put(random_path))
        .route(
            &m("random/{source}/{bytes}"),
            post(random_source).put(random_source),
        )
        .route(&m("hash"), post(hash_body).put(hash_body))
        .route(&m("hash/{algorithm}"), post(hash_path).put(hash_path))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RandomRequest {
    #[serde(deserialize_with = "weak::opt_i64")]
    bytes: Option<i64>,
    #[serde(deserialize_with = "weak::opt_string")]
    format: Option<String>,
    #[serde(deserialize_with = "weak::opt_string")]
    source: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct HashRequest {
    #[serde(deserialize_with = "weak::opt_string")]
    input: Option<String>,
    #[serde(deserialize_with = "weak::opt_string")]
    algorithm: Option<String>,
    #[serde(deserialize_with = "weak::opt_string")]
    format: Option<String>,
}

/// `hex` or `base64` (the default given).
fn encode(bytes: &[u8], format: Option<&str>, default: &str) -> Result<String, VaultError> {
    match format.unwrap_or(default) {
        "hex" => Ok(hex::encode(bytes)),
        "base64" => Ok(STANDARD.encode(bytes)),
        _ => Err(bad_request("format must be hex or base64")),
    }
}

fn random(
    req: RandomRequest,
    bytes: Option<&str>,
    source: Option<&str>,
) -> Result<Response, VaultError> {
    let n = match bytes {
        Some(b) => b
            .parse::<i64>()
            .map_err(|_| bad_request("bytes must be a whole number"))?,
        None => req.bytes.unwrap_or(32),
    };
    if !(1..=MAX_RANDOM_BYTES).contains(&n) {
        return Err(bad_request(format!(
            "bytes must be 1 to {MAX_RANDOM_BYTES}"
        )));
    }
    // Vault's sources (`platform`, `seal`, `all`) all mean the best generator the vault
    // has; here that is the operating system's.
    match source.or(req.source.as_deref()).unwrap_or("platform") {
        "platform" | "seal" | "all" => {}
        _ => return Err(bad_request("source must be platform, seal or all")),
    }
    let mut buf = vec![0u8; usize::try_from(n).unwrap_or(32)];
    crate::crypto::random_bytes(&mut buf);
    Ok(data(
        json!({ "random_bytes": encode(&buf, req.format.as_deref(), "base64")? }),
    ))
}

async fn random_body(
    _c: VaultCaller,
    VaultJson(req): VaultJson<RandomRequest>,
) -> Result<Response, VaultError> {
    random(req, None, None)
}

/// `random/:bytes` or `random/:source`.
async fn random_path(
    _c: VaultCaller,
    Path(arg): Path<String>,
    VaultJson(req): VaultJson<RandomRequest>,
) -> Result<Response, VaultError> {
    if arg.bytes().all(|b| b.is_ascii_digit()) {
        random(req, Some(&arg), None)
    } else {
        random(req, None, Some(&arg))
    }
}

async fn random_source(
    _c: VaultCaller,
    Path((source, bytes)): Path<(String, String)>,
    VaultJson(req): VaultJson<RandomRequest>,
) -> Result<Response, VaultError> {
    random(req, Some(&bytes), Some(&source))
}

fn hash(req: HashRequest, algorithm: Option<&str>) -> Result<Response, VaultError> {
    Ok(data(json!({ "sum": sum(&req, algorithm)? })))
}

/// The digest of the request's input, encoded as it asks (hex by default).
fn sum(req: &HashRequest, algorithm: Option<&str>) -> Result<String, VaultError> {
    let input = STANDARD
        .decode(req.input.as_deref().unwrap_or("").trim())
        .map_err(|_| bad_request("`input` is not valid base64"))?;
    let sum = match algorithm.or(req.algorithm.as_deref()).unwrap_or("sha2-256") {
        "sha2-224" => sha2::Sha224::digest(&input).to_vec(),
        "sha2-256" => sha2::Sha256::digest(&input).to_vec(),
        "sha2-384" => sha2::Sha384::digest(&input).to_vec(),
        "sha2-512" => sha2::Sha512::digest(&input).to_vec(),
        _ => {
            return Err(bad_request(
                "algorithm must be sha2-224, sha2-256, sha2-384 or sha2-512",
            ));
        }
    };
    encode(&sum, req.format.as_deref(), "hex")
}

async fn hash_body(
    _c: VaultCaller,
    VaultJson(req): VaultJson<HashRequest>,
) -> Result<Response, VaultError> {
    hash(req, None)
}

async fn hash_path(
    _c: VaultCaller,
    Path(algorithm): Path<String>,
    VaultJson(req): VaultJson<HashRequest>,
) -> Result<Response, VaultError> {
    hash(req, Some(&algorithm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_known_answers() {
        let req = |alg: &str| HashRequest {
            input: Some(STANDARD.encode("abc")),
            algorithm: Some(alg.into()),
            format: None,
        };
        // FIPS 180-2 test vectors for "abc".
        assert_eq!(
            sum(&req("sha2-256"), None).ok().unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sum(&req("sha2-256"), Some("sha2-224")).ok().unwrap(),
            "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7"
        );
        let mut b64 = req("sha2-256");
        b64.format = Some("base64".into());
        assert_eq!(
            sum(&b64, None).ok().unwrap(),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
        assert!(sum(&req("md5"), None).is_err());
    }

    #[test]
    fn random_sizes_and_formats_are_checked() {
        let req = |bytes, format: &str| RandomRequest {
            bytes: Some(bytes),
            format: Some(format.into()),
            source: None,
        };
        assert!(random(req(32, "hex"), None, None).is_ok());
        assert!(random(req(0, "hex"), None, None).is_err());
        assert!(random(req(MAX_RANDOM_BYTES + 1, "hex"), None, None).is_err());
        assert!(random(req(16, "octal"), None, None).is_err());
        assert!(random(req(16, "base64"), None, Some("nowhere")).is_err());
        assert!(random(req(16, "base64"), Some("x"), None).is_err());
    }
}
