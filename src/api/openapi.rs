//! `GET /openapi.json`: the OpenAPI 3 document, generated from the handlers' annotations
//! and completed from the configuration. What a schema can say about a field depends on
//! the config (its token types, their validators and formats, its keyrings, its limits),
//! so [`document`] writes those constraints in: a request this document calls valid is
//! never refused with 400, and one it calls invalid never succeeds. What no schema can
//! state (a Luhn check, whether a ciphertext opens) answers 422 `invalid_value`.
//! `scripts/contract` holds the server to this document with Schemathesis.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use utoipa::OpenApi;

use super::AppState;
use crate::config::Settings;
use crate::tokenize::format::{MAX_TOKEN_LEN, fits};
use crate::tokenize::{MAX_REASON_LEN, MAX_TTL_SECONDS, TokenFormat, TypeSettings, Validator};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tokenvault",
        description = "HSM-backed tokenization and encryption vault. \
        Every call needs a client certificate from the configured CA (mutual TLS 1.3). \
        Errors are `{\"error\":{\"code\",\"message\"}}`; 400 means the request does not \
        match this document, 422 that a value failed a check no schema can state."
    ),
    paths(
        super::tokens::tokenize,
        super::tokens::tokenize_batch,
        super::tokens::detokenize,
        super::tokens::detokenize_batch,
        super::tokens::token_info,
        super::tokens::delete_token,
        super::crypto::encrypt,
        super::crypto::decrypt,
        super::crypto::rewrap,
        super::keys::list,
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
        openapi_json,
    ),
    components(schemas(super::error::ErrorBody, super::error::ErrorDetail))
)]
pub struct ApiDoc;

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This OpenAPI 3 document")))]
async fn openapi_json(State(state): State<AppState>) -> Json<Value> {
    Json(document(&state.vault.settings))
}

/// Every format, in the order of the `TokenFormat` schema.
const FORMATS: [TokenFormat; 3] = [
    TokenFormat::Opaque,
    TokenFormat::Last4,
    TokenFormat::First6Last4,
];

/// Canonical unpadded base64url (what `URL_SAFE_NO_PAD` decodes) of at least 28 bytes:
/// the AES-GCM nonce and tag of a sealed value.
const SEALED_B64URL: &str = "(?:(?:[A-Za-z0-9_-]{4}){9}(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])\
     |(?:[A-Za-z0-9_-]{4}){10,}(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?)";

/// A `reason`: no control character (`char::is_control`), and no run of 12 digits
/// as `cardscan::has_digit_run` counts them — a single space or dash joins two groups of
/// at least three digits (the look-behind and look-ahead check both groups).
const REASON_PATTERN: &str =
    r"^(?![\s\S]*(?:[0-9](?:(?<=[0-9]{3})[ -](?=[0-9]{3}))?){12})[^\u0000-\u001f\u007f-\u009f]*$";

/// The document for a vault running with `settings`.
pub fn document(settings: &Settings) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    let schemas = &mut doc["components"]["schemas"];
    let limits = &settings.limits;

    // Tokenize: one variant per configured type, with its value rules and formats.
    let base = schemas["TokenizeRequest"].clone();
    let variants: Vec<Value> = settings
        .types
        .iter()
        .map(|(name, ty)| tokenize_variant(&base, name, ty, limits.max_value_bytes))
        .collect();
    schemas["TokenizeRequest"] = json!({
        "description": format!(
            "A value to tokenize: one variant per configured type. `metadata`, as JSON, is at \
             most {} bytes and holds no card number (400 otherwise).",
            limits.max_metadata_bytes
        ),
        "oneOf": variants,
    });
    set(
        schemas,
        "/TokenizeBatchRequest/properties/items/maxItems",
        json!(limits.max_batch),
    );
    // Each item is parsed on its own: one that is not a `TokenizeRequest` gets an error in
    // its place and the batch still answers 200, so any JSON value is a valid item.
    set(
        schemas,
        "/TokenizeBatchRequest/properties/items/items",
        json!({ "anyOf": [
            { "$ref": "#/components/schemas/TokenizeRequest" },
            { "description": "Anything else: its result is an `{\"error\": …}` item" },
        ]}),
    );
    set(
        schemas,
        "/DetokenizeBatchRequest/properties/tokens/maxItems",
        json!(limits.max_batch),
    );
    // Longer strings are no token: 404, as for an unknown one.
    set(
        schemas,
        "/DetokenizeRequest/properties/token/maxLength",
        json!(MAX_TOKEN_LEN),
    );
    for request in ["DetokenizeRequest", "DetokenizeBatchRequest"] {
        set(
            schemas,
            &format!("/{request}/properties/reason/maxLength"),
            json!(MAX_REASON_LEN),
        );
        set(
            schemas,
            &format!("/{request}/properties/reason/pattern"),
            json!(REASON_PATTERN),
        );
    }

    // Keyrings: the configured ones, in requests and inside ciphertexts.
    let keyrings: Vec<&String> = settings.keyrings.keys().collect();
    set(
        schemas,
        "/EncryptRequest/properties/keyring/enum",
        json!(keyrings),
    );
    let names = keyrings
        .iter()
        .map(|k| regex_escape(k))
        .collect::<Vec<_>>()
        .join("|");
    set(
        schemas,
        "/DecryptRequest/properties/ciphertext/pattern",
        json!(format!(
            "^tv1:(?:{names}):[1-9][0-9]{{0,8}}:{SEALED_B64URL}$"
        )),
    );
    links(&mut doc);
    // The approval header is optional, never null (a header cannot carry a JSON null);
    // empty means none.
    for path in ["/v1/detokenize", "/v1/detokenize/batch"] {
        if let Some(params) = doc["paths"][path]["post"]["parameters"].as_array_mut() {
            for p in params.iter_mut().filter(|p| p["in"] == "header") {
                p["schema"] = json!({"type": "string", "pattern": "^(?:su_[0-9a-f]{32})?$"});
            }
        }
    }
    doc
}

/// The tokenize request for one configured type: its name, its validator's value rules
/// and the formats a client may ask for.
fn tokenize_variant(base: &Value, name: &str, ty: &TypeSettings, max_bytes: usize) -> Value {
    let mut v = base.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("description");
    }
    v["title"] = json!(format!("TokenizeRequest ({name})"));
    v["properties"]["type"] = json!({ "type": "string", "enum": [name] });
    v["properties"]["ttl_seconds"]["maximum"] = json!(MAX_TTL_SECONDS);
    let value = &mut v["properties"]["value"];
    value["maxLength"] = json!(max_bytes);
    // Digits with optional spaces and dashes between them; the digit count is exact.
    let digits = |n: &str| format!("^[ -]*(?:[0-9][ -]*){{{n}}}$");
    let (rule, lengths) = match ty.validator {
        Validator::Pan => {
            value["pattern"] = json!(digits("12,19"));
            (
                "12 to 19 digits (spaces and dashes allowed), Luhn-valid",
                12..=19,
            )
        }
        Validator::Ssn => {
            value["pattern"] = json!(digits("9"));
            (
                "9 digits (spaces and dashes allowed); area not 000, 666 or 9xx, group not 00, serial not 0000",
                9..=9,
            )
        }
        Validator::Email => {
            value["pattern"] = json!(r"^[^\s@]{1,64}@[^\s@]+\.[^\s@]+$");
            value["maxLength"] = json!(max_bytes.min(254));
            (
                "an e-mail address: local part of 1 to 64 characters, domain labels of letters, digits and dashes",
                1..=1,
            )
        }
        Validator::None => ("any non-empty text", 1..=1),
    };
    value["description"] = json!(format!(
        "The value: {rule}; at most {max_bytes} bytes. What the pattern cannot say answers 422."
    ));
    let digits_only = matches!(ty.validator, Validator::Pan | Validator::Ssn);
    let formats: Vec<Value> = FORMATS
        .into_iter()
        .filter(|&f| ty.allows(f) && (!ty.deterministic || f == ty.format))
        // A format must fit every valid value of the type (digits: 12–19 for a card
        // number, 9 for an SSN; the format-preserving formats need digits).
        .filter(|&f| lengths.clone().all(|n| fits(f, digits_only, n)))
        .map(|f| json!(f))
        .chain(std::iter::once(Value::Null))
        .collect();
    v["properties"]["format"] = json!({
        "enum": formats,
        "description": format!(
            "Token format (default {}){}.",
            json!(ty.format),
            if ty.deterministic { "; this type is deterministic and always uses it" } else { "" }
        ),
    });
    v
}

/// Sets `doc[pointer]`, creating objects on the way.
fn set(doc: &mut Value, pointer: &str, value: Value) {
    let mut at = doc;
    for key in pointer.trim_start_matches('/').split('/') {
        if !at.is_object() {
            *at = json!({});
        }
        at = &mut at[key.replace("~1", "/").replace("~0", "~")];
    }
    *at = value;
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = !c.is_ascii_alphanumeric() && c != '_';
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

/// OpenAPI links: the token from tokenize to detokenize, read and delete; the ciphertext
/// from encrypt to decrypt and rewrap (Schemathesis follows them in its stateful phase).
fn links(doc: &mut Value) {
    let token = "$response.body#/token";
    let ciphertext = "$response.body#/ciphertext";
    let link = |op: &str, body: Option<Value>, param: Option<&str>| {
        let mut l = json!({ "operationId": op });
        if let Some(b) = body {
            l["requestBody"] = b;
        }
        if let Some(p) = param {
            l["parameters"] = json!({ "token": p });
        }
        l
    };
    let paths = &mut doc["paths"];
    set(
        paths,
        "/~1v1~1tokenize/post/responses/200/links",
        json!({
            "Detokenize": link("detokenize", Some(json!({ "token": token })), None),
            "ReadToken": link("token_info", None, Some(token)),
            "DeleteToken": link("delete_token", None, Some(token)),
        }),
    );
    set(
        paths,
        "/~1v1~1encrypt/post/responses/200/links",
        json!({
            "Decrypt": link("decrypt", Some(json!({ "ciphertext": ciphertext })), None),
            "Rewrap": link("rewrap", Some(json!({ "ciphertext": ciphertext })), None),
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings of an empty config file: the development defaults.
    fn defaults() -> Settings {
        Settings::from_toml("").unwrap()
    }

    fn doc() -> Value {
        document(&defaults())
    }

    #[test]
    fn tokenize_has_one_variant_per_configured_type_with_its_formats() {
        let doc = doc();
        let variants = doc["components"]["schemas"]["TokenizeRequest"]["oneOf"]
            .as_array()
            .unwrap()
            .clone();
        let by_type = |t: &str| {
            variants
                .iter()
                .find(|v| v["properties"]["type"]["enum"] == json!([t]))
                .unwrap_or_else(|| panic!("no variant for {t}"))
                .clone()
        };
        assert_eq!(variants.len(), defaults().types.len());
        // Deterministic `pan` always uses last4; an SSN is too short for first6_last4.
        let pan = by_type("pan");
        assert_eq!(pan["properties"]["format"]["enum"], json!(["last4", null]));
        assert_eq!(pan["required"], json!(["type", "value"]));
        assert_eq!(pan["additionalProperties"], json!(false));
        let ssn = by_type("ssn");
        assert_eq!(
            ssn["properties"]["format"]["enum"],
            json!(["opaque", "last4", null])
        );
        let text = by_type("text");
        assert_eq!(
            text["properties"]["format"]["enum"],
            json!(["opaque", null])
        );
        assert_eq!(text["properties"]["value"]["minLength"], json!(1));
        assert_eq!(text["properties"]["ttl_seconds"]["minimum"], json!(1));
        assert_eq!(
            text["properties"]["ttl_seconds"]["maximum"],
            json!(MAX_TTL_SECONDS)
        );
    }

    #[test]
    fn keyrings_limits_and_ciphertexts_are_stated() {
        let doc = doc();
        let s = &doc["components"]["schemas"];
        assert_eq!(
            s["EncryptRequest"]["properties"]["keyring"]["enum"],
            json!(["pan", "pii"])
        );
        let ct = s["DecryptRequest"]["properties"]["ciphertext"]["pattern"]
            .as_str()
            .unwrap();
        assert!(ct.starts_with("^tv1:(?:pan|pii):"), "{ct}");
        assert_eq!(
            s["DetokenizeBatchRequest"]["properties"]["tokens"]["maxItems"],
            json!(defaults().limits.max_batch)
        );
        assert_eq!(
            s["DetokenizeRequest"]["properties"]["reason"]["maxLength"],
            json!(MAX_REASON_LEN)
        );
    }

    #[test]
    fn every_route_documents_the_statuses_it_can_answer() {
        let doc = doc();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            if !path.starts_with("/v1/") {
                continue;
            }
            for (method, op) in ops.as_object().unwrap() {
                let codes = op["responses"].as_object().unwrap();
                let mut need = vec!["401", "429", "500", "503"];
                if method == "post" {
                    need.extend(["400", "413"]);
                }
                for code in need {
                    assert!(codes.contains_key(code), "{method} {path} lacks {code}");
                }
            }
        }
    }

    #[test]
    fn links_lead_from_tokenize_and_encrypt_to_operations_that_exist() {
        let doc = doc();
        let ids: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|ops| ops.as_object().unwrap().values())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        for (path, n) in [("/v1/tokenize", 3), ("/v1/encrypt", 2)] {
            let links = doc["paths"][path]["post"]["responses"]["200"]["links"]
                .as_object()
                .unwrap();
            assert_eq!(links.len(), n, "{path}");
            for l in links.values() {
                assert!(ids.contains(&l["operationId"].as_str().unwrap()), "{l}");
            }
        }
    }
}
