//! What a Vault client gets from the routes around Transit and Transform: unknown paths,
//! wrong methods and the request-rate refusal answer in Vault's error shape under the
//! Vault mounts (so hvac raises InvalidPath, RateLimitExceeded…), and in the native shape
//! everywhere else.

use serde_json::{Value, json};

use crate::helpers::{TestApp, VaultClient, b64, spawn_with};

fn vault_shaped(body: &Value, content_type: &str) -> bool {
    content_type == "application/json"
        && body["errors"].as_array().is_some_and(|e| !e.is_empty())
        && body.get("error").is_none()
}

async fn call(c: &VaultClient, app: &TestApp, method: &str, path: &str) -> (u16, Value, String) {
    let body = (method != "GET" && method != "DELETE").then(|| json!({"plaintext": b64("x")}));
    c.call(app, method, path, body).await
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_in_the_shape_of_their_api() {
    let app = spawn_with("vault-routes", |_, _| {}).await;
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    for (method, path, status) in [
        ("GET", "/v1/transit/nothing-here", 404),
        ("POST", "/v1/transit/encrypt/pii/extra/segments", 404),
        ("GET", "/v1/transform/no/such/route", 404),
        ("GET", "/v1/sys/nothing", 404),
        ("GET", "/v1/auth/nothing", 404),
        ("DELETE", "/v1/transit/encrypt/pii", 405),
        ("GET", "/v1/transit/encrypt/pii", 405),
    ] {
        let (got, body, ct) = call(&c, &app, method, path).await;
        assert_eq!(got, status, "{method} {path}: {body}");
        assert!(vault_shaped(&body, &ct), "{method} {path}: {ct} {body}");
    }
    // Native paths keep the native shape.
    for (method, path, status) in [("GET", "/v1/nothing", 404), ("GET", "/v1/encrypt", 405)] {
        let (got, body, _) = call(&c, &app, method, path).await;
        assert_eq!(got, status, "{method} {path}: {body}");
        assert!(body["error"]["code"].is_string(), "{method} {path}: {body}");
    }
}

#[tokio::test]
async fn the_request_rate_refusal_is_vault_shaped_on_vault_routes() {
    let app = spawn_with("vault-routes-rate", |s, _| {
        let t = s.clients.get_mut("app").unwrap();
        t.rate_per_second = Some(0.5);
        t.burst = Some(2.0);
    })
    .await;
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    let mut refused = None;
    for _ in 0..6 {
        let (status, body, ct) = call(&c, &app, "POST", "/v1/transit/encrypt/pii").await;
        if status == 429 {
            refused = Some((body, ct));
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    let (body, ct) = refused.expect("the rate limit applies to Transit");
    assert!(vault_shaped(&body, &ct), "{ct} {body}");
}
