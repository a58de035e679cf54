//! The Transform engine's tokenization over tokenvault's token types: `encode`,
//! `decode`, `validate` and `metadata` through a role, single and `batch_input`, and the
//! roles and transformations in force, readable and listable for provisioning scripts.
//!
//! Translation only: encode is the one tokenize path (`TokenService::tokenize_many`:
//! validation, formats, namespaces, budgets, audit), decode the one reveal path
//! (`detokenize_batch_of`, the batch charged whole to the reveal budget), validate and
//! metadata the one read path (`info_of`). A role narrows a request to its
//! transformation's type; a token of another type is not found through it. Roles and
//! transformations come from the config (`[vault_api.transform]`), never from the API.
//! `tweak` (FPE) is refused: tokenvault's format-preserving tokens are random, not FF3.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::Response;
use axum::routing::{any, get, post};
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::batch::{self, answer, outcome};
use super::{AppState, VaultCaller, VaultError, VaultJson, bad_request, data, is_list, weak};
use crate::api::json::{Revealed, SecretField};
use crate::audit::Action;
use crate::error::Error;
use crate::tokenize::roles::Transforms;
use crate::tokenize::{RawValue, TokenizeInput};
use crate::vault::now_ms;

pub fn router(mount: &str, transforms: Transforms) -> Router<AppState> {
    let m = |tail: &str| format!("/v1/{mount}/{tail}");
    Router::new()
        .route(&m("encode/{role}"), post(encode).put(encode))
        .route(&m("decode/{role}"), post(decode).put(decode))
        .route(
            &m("decode/{role}/{format}"),
            post(decode_format).put(decode_format),
        )
        .route(&m("validate/{role}"), post(validate).put(validate))
        .route(&m("metadata/{role}"), post(metadata).put(metadata))
        .route(&m("tokenized/{role}"), post(tokenized).put(tokenized))
        .route(&m("role"), any(list_roles))
        .route(
            &m("role/{name}"),
            get(read_role)
                .post(refused_change)
                .put(refused_change)
                .delete(refused_change),
        )
        .route(&m("transformation"), any(list_transformations))
        .route(
            &m("transformation/{name}"),
            get(read_transformation)
                .post(refused_change)
                .put(refused_change)
                .delete(refused_change),
        )
        .route(
            &m("transformations/tokenization/{name}"),
            get(read_transformation)
                .post(refused_change)
                .put(refused_change),
        )
        .layer(Extension(Arc::new(transforms)))
}

async fn refused_change(_caller: VaultCaller) -> VaultError {
    bad_request(
        "roles and transformations are tokenvault token types and the [vault_api.transform] \
         configuration; they are not changed over this API",
    )
}

/// One item of a request, or the request itself without `batch_input`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Item {
    value: Option<SecretField>,
    #[serde(deserialize_with = "weak::opt_string")]
    transformation: Option<String>,
    #[serde(deserialize_with = "weak::opt_seconds")]
    ttl: Option<i64>,
    /// `"k1=v1,k2=v2"`, or a JSON object of strings.
    metadata: Option<Value>,
    #[serde(deserialize_with = "weak::opt_string")]
    tweak: Option<String>,
    reference: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Request {
    value: Option<SecretField>,
    #[serde(deserialize_with = "weak::opt_string")]
    transformation: Option<String>,
    #[serde(deserialize_with = "weak::opt_seconds")]
    ttl: Option<i64>,
    metadata: Option<Value>,
    #[serde(deserialize_with = "weak::opt_string")]
    tweak: Option<String>,
    reference: Option<Value>,
    batch_input: Option<Vec<Item>>,
}

impl Request {
    fn items(self, max_batch: usize) -> Result<(Vec<Item>, bool), VaultError> {
        let single = || Item {
            value: self.value,
            transformation: self.transformation,
            ttl: self.ttl,
            metadata: self.metadata,
            tweak: self.tweak,
            reference: self.reference,
        };
        batch::items(self.batch_input, single, max_batch)
    }
}

/// Vault's `"k1=v1,k2=v2"` (or an object of strings) as a JSON object.
fn metadata_of(m: Option<&Value>) -> Result<Option<Value>, Error> {
    let bad =
        || Error::InvalidRequest("metadata is \"key=value,…\" or an object of strings".into());
    match m {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => {
            let mut out = Map::new();
            for pair in s.split(',') {
                let (k, v) = pair.split_once('=').ok_or_else(bad)?;
                out.insert(k.trim().to_owned(), Value::String(v.trim().to_owned()));
            }
            Ok(Some(Value::Object(out)))
        }
        Some(Value::Object(o)) if o.values().all(Value::is_string) => {
            Ok(Some(Value::Object(o.clone())))
        }
        Some(_) => Err(bad()),
    }
}

fn no_tweak(item: &Item) -> Result<(), Error> {
    if item.tweak.as_deref().is_some_and(|t| !t.is_empty()) {
        return Err(Error::InvalidRequest(
            "tweak: tokenvault's tokens are random, not format-preserving encryption".into(),
        ));
    }
    Ok(())
}

/// The token type an item works on through `role`.
fn type_of<'t>(t: &'t Transforms, role: &str, item: &Item) -> Result<&'t str, Error> {
    no_tweak(item)?;
    t.resolve(role, item.transformation.as_deref())
}

/// A tokenize request for one item (its refusal, if any, is audited by the tokenize path).
fn encode_input(t: &Transforms, role: &str, item: Item) -> Result<TokenizeInput, Error> {
    let token_type = type_of(t, role, &item)?;
    let ttl_seconds = match item.ttl {
        None | Some(0) => None,
        Some(t) => Some(
            u64::try_from(t)
                .map_err(|_| Error::InvalidRequest("ttl must not be negative".into()))?,
        ),
    };
    let metadata = metadata_of(item.metadata.as_ref())?;
    let value = item
        .value
        .ok_or_else(|| Error::InvalidRequest("missing value to encode".into()))?;
    Ok(TokenizeInput {
        token_type: token_type.to_owned(),
        value: RawValue(value.0),
        format: None,
        metadata,
        ttl_seconds,
        given_token: None,
    })
}

#[derive(Serialize)]
struct Encoded {
    encoded_value: String,
}

async fn encode(
    State(state): State<AppState>,
    Extension(transforms): Extension<Arc<Transforms>>,
    Path(role): Path<String>,
    caller: VaultCaller,
    VaultJson(req): VaultJson<Request>,
) -> Result<Response, VaultError> {
    let (items, batch) = req.items(state.vault.settings.limits.max_batch)?;
    let mut references = Vec::with_capacity(items.len());
    let mut inputs = Vec::with_capacity(items.len());
    for mut item in items {
        references.push(item.reference.take());
        inputs.push(encode_input(&transforms, &role, item));
    }
    // A refused type ends the whole request (403), so it is asked before anything is
    // stored, not after the other items were tokenized.
    let mut types: Vec<&str> = inputs
        .iter()
        .flatten()
        .map(|i| i.token_type.as_str())
        .collect();
    types.sort_unstable();
    types.dedup();
    let now = now_ms();
    for token_type in types {
        state
            .services
            .guard
            .check(&caller.who, Action::Tokenize, token_type, None, now)
            .await?;
    }
    let results = state
        .services
        .tokens
        .tokenize_many(&caller.who, inputs, now, None)
        .await?;
    let mut outcomes = Vec::with_capacity(results.len());
    for (result, reference) in results.into_iter().zip(references) {
        let result = result.map(|t| Encoded {
            encoded_value: t.token,
        });
        outcomes.push(outcome(result, reference)?);
    }
    answer(outcomes, batch, None, false)
}

#[derive(Serialize)]
struct Lookup {
    tokenized: bool,
}

/// `tokenized/:role`: whether a value already has a token, through the one tokenize
/// path's lookup (`TokenService::lookup_many`: `tokenize:<type>`, deterministic types
/// only, a miss charged to the new-value budget, audited). Answers 200 with per-item
/// errors in a batch.
async fn tokenized(
    State(state): State<AppState>,
    Extension(transforms): Extension<Arc<Transforms>>,
    Path(role): Path<String>,
    caller: VaultCaller,
    VaultJson(req): VaultJson<Request>,
) -> Result<Response, VaultError> {
    let (items, batch) = req.items(state.vault.settings.limits.max_batch)?;
    let mut references = Vec::with_capacity(items.len());
    let mut inputs = Vec::with_capacity(items.len());
    for mut item in items {
        references.push(item.reference.take());
        let input = type_of(&transforms, &role, &item).and_then(|token_type| {
            let value = item
                .value
                .take()
                .ok_or_else(|| Error::InvalidRequest("missing value to look up".into()))?;
            Ok(TokenizeInput {
                token_type: token_type.to_owned(),
                value: RawValue(value.0),
                format: None,
                metadata: None,
                ttl_seconds: None,
                given_token: None,
            })
        });
        inputs.push(input);
    }
    let results = state
        .services
        .tokens
        .lookup_many(&caller.who, inputs, now_ms())
        .await?;
    let mut outcomes = Vec::with_capacity(results.len());
    for (result, reference) in results.into_iter().zip(references) {
        outcomes.push(outcome(
            result.map(|tokenized| Lookup { tokenized }),
            reference,
        )?);
    }
    answer(outcomes, batch, None, true)
}

#[derive(Serialize)]
struct Decoded {
    decoded_value: Revealed,
    /// A non-production vault's synthetic answer for a token it has no record of.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    synthetic: bool,
}

async fn decode_format(
    state: State<AppState>,
    transforms: Extension<Arc<Transforms>>,
    Path((role, _format)): Path<(String, String)>,
    caller: VaultCaller,
    req: VaultJson<Request>,
) -> Result<Response, VaultError> {
    // Decode formats belong to FPE transformations; a token decodes to its value.
    decode(state, transforms, Path(role), caller, req).await
}

async fn decode(
    State(state): State<AppState>,
    Extension(transforms): Extension<Arc<Transforms>>,
    Path(role): Path<String>,
    caller: VaultCaller,
    VaultJson(req): VaultJson<Request>,
) -> Result<Response, VaultError> {
    let (items, batch) = req.items(state.vault.settings.limits.max_batch)?;
    // Each item's type and token.
    let typed: Vec<Result<(&str, String), Error>> = items
        .iter()
        .map(|item| {
            let token_type = type_of(&transforms, &role, item)?;
            let token = item
                .value
                .as_ref()
                .map(|v| v.0.as_str().trim().to_owned())
                .ok_or_else(|| Error::InvalidRequest("missing value to decode".into()))?;
            Ok((token_type, token))
        })
        .collect();
    // Items the role refused are audited as refused reveals, as encode's are.
    let mut typed = typed;
    for t in &mut typed {
        if let Err(e) = t {
            let e = std::mem::replace(e, Error::NotFound);
            *t = Err(state
                .services
                .tokens
                .refused(&caller.who, Action::Detokenize, e, now_ms())
                .await);
        }
    }
    // All of them revealed in one call: the batch is charged whole to the reveal budget.
    let to_reveal: Vec<(&str, Option<&str>)> = typed
        .iter()
        .flatten()
        .map(|(t, token)| (token.as_str(), Some(*t)))
        .collect();
    let mut revealed = if to_reveal.is_empty() {
        Vec::new()
    } else {
        state
            .services
            .tokens
            .detokenize_batch_of(&caller.who, &to_reveal, None, now_ms())
            .await?
    }
    .into_iter();
    let results: Vec<Option<Result<Decoded, Error>>> = typed
        .iter()
        .map(|t| {
            t.is_ok().then(|| {
                revealed
                    .next()
                    .unwrap_or_else(|| Err(Error::Internal("a decode gave no outcome".into())))
                    .map(|d| Decoded {
                        decoded_value: Revealed::from(d.value.as_str()),
                        synthetic: d.synthetic,
                    })
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(items.len());
    for ((item, typed), result) in items.into_iter().zip(typed).zip(results) {
        let result = match (typed, result) {
            (Err(e), _) => Err(e),
            (Ok(_), Some(r)) => r,
            (Ok(_), None) => Err(Error::Internal("a decode gave no outcome".into())),
        };
        outcomes.push(outcome(result, item.reference)?);
    }
    // A decode batch answers 200 with per-item errors (unlike Transit decrypt, which keeps
    // Vault's 400): an error answer is what clients and proxies log, and it must not
    // carry the values revealed for the other items.
    answer(outcomes, batch, None, true)
}

/// What `validate` and `metadata` answer about one token.
#[derive(Clone, Copy)]
enum Read {
    Validate,
    Metadata,
}

/// `validate`: whether the token exists, is unexpired and is of the role's type.
async fn validate(
    state: State<AppState>,
    transforms: Extension<Arc<Transforms>>,
    role: Path<String>,
    caller: VaultCaller,
    req: VaultJson<Request>,
) -> Result<Response, VaultError> {
    read(state, transforms, role, caller, req, Read::Validate).await
}

/// `metadata`: the token's metadata and expiry, never its value.
async fn metadata(
    state: State<AppState>,
    transforms: Extension<Arc<Transforms>>,
    role: Path<String>,
    caller: VaultCaller,
    req: VaultJson<Request>,
) -> Result<Response, VaultError> {
    read(state, transforms, role, caller, req, Read::Metadata).await
}

/// Both through the one read path (`read:<type>`, audited as a read).
async fn read(
    State(state): State<AppState>,
    Extension(transforms): Extension<Arc<Transforms>>,
    Path(role): Path<String>,
    caller: VaultCaller,
    VaultJson(req): VaultJson<Request>,
    what: Read,
) -> Result<Response, VaultError> {
    let (items, batch) = req.items(state.vault.settings.limits.max_batch)?;
    let mut outcomes = Vec::with_capacity(items.len());
    for item in items {
        let result = async {
            let target = type_of(&transforms, &role, &item).and_then(|t| {
                let token = item
                    .value
                    .as_ref()
                    .ok_or_else(|| Error::InvalidRequest("missing value".into()))?;
                Ok((t, token))
            });
            let (token_type, token) = match target {
                Ok(target) => target,
                // Refused by the role: audited as a refused read, as encode's are.
                Err(e) => {
                    let tokens = &state.services.tokens;
                    return Err(tokens.refused(&caller.who, Action::Read, e, now_ms()).await);
                }
            };
            let info = state
                .services
                .tokens
                .info_of(&caller.who, token.0.trim(), Some(token_type), now_ms())
                .await;
            match (what, info) {
                (Read::Validate, Ok(_)) => Ok(json!({ "valid": true })),
                (Read::Validate, Err(Error::NotFound)) => Ok(json!({ "valid": false })),
                (Read::Validate, Err(e)) => Err(e),
                (Read::Metadata, info) => {
                    let info = info?;
                    let expiration = info.expires_at.and_then(super::rfc3339);
                    Ok(json!({
                        "metadata": info.metadata.unwrap_or(Value::Object(Map::new())),
                        "expiration_time": expiration,
                    }))
                }
            }
        }
        .await;
        outcomes.push(outcome(result, item.reference)?);
    }
    answer(outcomes, batch, None, false)
}

async fn list_roles(
    Extension(transforms): Extension<Arc<Transforms>>,
    method: Method,
    uri: axum::http::Uri,
    _caller: VaultCaller,
) -> Result<Response, VaultError> {
    list(transforms.roles.keys(), &method, uri.query())
}

async fn list_transformations(
    Extension(transforms): Extension<Arc<Transforms>>,
    method: Method,
    uri: axum::http::Uri,
    _caller: VaultCaller,
) -> Result<Response, VaultError> {
    list(transforms.transformations.keys(), &method, uri.query())
}

fn list<'a>(
    names: impl Iterator<Item = &'a String>,
    method: &Method,
    query: Option<&str>,
) -> Result<Response, VaultError> {
    if !(method == Method::GET || method.as_str() == "LIST") || !is_list(method, query) {
        return Err(VaultError(Error::MethodNotAllowed));
    }
    let keys: Vec<&String> = names.collect();
    if keys.is_empty() {
        return Err(VaultError(Error::NotFound));
    }
    Ok(data(json!({ "keys": keys })))
}

async fn read_role(
    Extension(transforms): Extension<Arc<Transforms>>,
    Path(name): Path<String>,
    _caller: VaultCaller,
) -> Result<Response, VaultError> {
    let role = transforms
        .roles
        .get(&name)
        .ok_or(VaultError(Error::NotFound))?;
    Ok(data(json!({ "transformations": role.transformations })))
}

async fn read_transformation(
    Extension(transforms): Extension<Arc<Transforms>>,
    Path(name): Path<String>,
    _caller: VaultCaller,
) -> Result<Response, VaultError> {
    let t = transforms
        .transformations
        .get(&name)
        .ok_or(VaultError(Error::NotFound))?;
    Ok(data(json!({
        "type": "tokenization",
        "allowed_roles": t.allowed_roles,
        "token_type": t.token_type,
        "mapping_mode": "default",
        "convergent": false,
        "stores": ["builtin/internal"],
        "max_ttl": 0,
        "templates": null,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_reads_vaults_pairs_or_an_object_of_strings() {
        let pairs = metadata_of(Some(&json!("a=1, b = two"))).unwrap().unwrap();
        assert_eq!(pairs, json!({"a": "1", "b": "two"}));
        assert_eq!(
            metadata_of(Some(&json!({"k": "v"}))).unwrap().unwrap(),
            json!({"k": "v"})
        );
        assert_eq!(metadata_of(Some(&json!(""))).unwrap(), None);
        assert!(metadata_of(Some(&json!("novalue"))).is_err());
        assert!(metadata_of(Some(&json!({"k": 1}))).is_err());
    }
}
