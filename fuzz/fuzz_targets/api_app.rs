//! The whole HTTP API in process: the real router (`api::app`) over a real vault (the
//! SoftHSM2 token that `scripts/fuzz` makes, a fresh SQLite file), with the identity the
//! TLS layer would have verified. An input is a route byte, a caller byte, then the body
//! (or, for `/v1/tokens/{token}`, the token). Whatever arrives: no panic, no 500, every
//! error is JSON with a stable code, and no error quotes a value that was sent.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use tokenvault::api::auth::ConnInfo;
use tokenvault::api::{AppState, app};
use tokenvault::config::Settings;
use tokenvault::vault::{Vault, now_ms};
use tower::ServiceExt;

const ROUTES: [(&str, &str); 14] = [
    ("POST", "/v1/tokenize"),
    ("POST", "/v1/tokenize/batch"),
    ("POST", "/v1/detokenize"),
    ("POST", "/v1/detokenize/batch"),
    ("GET", "/v1/tokens/"),
    ("DELETE", "/v1/tokens/"),
    ("POST", "/v1/encrypt"),
    ("POST", "/v1/decrypt"),
    ("POST", "/v1/rewrap"),
    ("GET", "/v1/keys"),
    ("GET", "/readyz"),
    ("GET", "/healthz"),
    ("PUT", "/v1/tokenize"),
    ("POST", "/v1/nowhere"),
];

/// The development identities, one the policy does not know, and no certificate name.
const CALLERS: [Option<&str>; 5] = [
    Some("app"),
    Some("tokenizer"),
    Some("auditor"),
    Some("stranger"),
    None,
];

/// Every code `api::error` may answer with.
const CODES: [&str; 12] = [
    "invalid_request",
    "unauthenticated",
    "forbidden",
    "not_found",
    "payload_too_large",
    "invalid_value",
    "rate_limited",
    "unavailable",
    "key_destroyed",
    "integrity_error",
    "method_not_allowed",
    "internal",
];

struct Harness {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let app = rt.block_on(async {
            let dir = std::env::temp_dir().join(format!("tokenvault-fuzz-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("a scratch directory");
            let mut s = Settings::load(None)
                .expect("settings: scripts/fuzz sets TOKENVAULT_HSM__TOKEN_LABEL and TOKENVAULT_HSM__PIN_FILE");
            s.database.url = SecretString::from(format!("sqlite://{}", dir.join("vault.db").display()));
            s.hsm.label_prefix = format!("fuzz-{}", std::process::id());
            let vault = Vault::open(s).await.expect("the vault opens (run through scripts/fuzz)");
            vault.keys.init("fuzz", now_ms()).await.expect("init");
            vault.keys.warm().await.expect("keys load");
            app(AppState::new(vault))
        });
        Harness { rt, app }
    })
}

/// Strings sent in the body (any depth), which no error may quote — names of types,
/// keyrings and formats included. Short strings are left out, as they can occur in a
/// fixed message by chance.
fn sent_values(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) if s.len() >= 12 => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| sent_values(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| sent_values(x, out)),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let [route, caller, rest @ ..] = data else { return };
    let (method, path) = ROUTES[usize::from(*route) % ROUTES.len()];
    let who = CALLERS[usize::from(*caller) % CALLERS.len()];
    let (uri, body) = if path.ends_with('/') {
        // A token in the path: keep to characters a URI may carry unescaped.
        let token: String = rest
            .iter()
            .map(|&b| b as char)
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '~' | ':'))
            .collect();
        (format!("{path}{token}"), Vec::new())
    } else {
        (path.to_owned(), rest.to_vec())
    };
    let sent: Vec<String> = serde_json::from_slice::<serde_json::Value>(&body)
        .map(|v| {
            let mut out = Vec::new();
            sent_values(&v, &mut out);
            out
        })
        .unwrap_or_default();
    let mut req = Request::builder()
        .method(method)
        .uri(&uri)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("a well-formed request");
    req.extensions_mut().insert(ConnInfo {
        identity: who.map(str::to_owned),
        peer: "127.0.0.1:9".parse().expect("an address"),
        // A certificate thumbprint, so the Vault-compatible routes are reachable too.
        thumbprint: who.map(|_| [7u8; 32]),
    });

    let h = harness();
    let (status, bytes) = h.rt.block_on(async {
        let resp = h.app.clone().oneshot(req).await.expect("the router is infallible");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20).await.expect("a body");
        (status, bytes)
    });
    assert_ne!(status.as_u16(), 500, "{method} {uri} answered 500: {}", String::from_utf8_lossy(&bytes));
    if status.is_client_error() || status.is_server_error() {
        let err: serde_json::Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{method} {uri} answered {status} without a JSON body"));
        let code = err["error"]["code"].as_str().unwrap_or_default();
        assert!(CODES.contains(&code), "{method} {uri}: unknown error code `{code}`");
        let message = err["error"]["message"].as_str().unwrap_or_default();
        for v in &sent {
            assert!(!message.contains(v.as_str()), "{method} {uri}: the error quotes a sent value");
        }
    }
});
