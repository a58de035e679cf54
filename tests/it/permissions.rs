//! Issue 3: every development client × every route, compared with the table below.
//! A route the API has (helpers::ROUTES, checked against /openapi.json elsewhere) but the
//! table lacks fails the test.

use crate::helpers::{ROUTES, TestApp, spawn_app};
use serde_json::{Value, json};

const CLIENTS: [&str; 4] = ["app", "tokenizer", "auditor", "stranger"];

/// Expected outcome per client, in CLIENTS order: a status, or `status:item-code` for
/// batch routes, whose items carry their own result.
const TABLE: &[(&str, [&str; 4])] = &[
    ("POST /v1/tokenize", ["200", "200", "403", "403"]),
    (
        "POST /v1/tokenize/batch",
        ["200:ok", "200:ok", "200:forbidden", "200:forbidden"],
    ),
    ("POST /v1/detokenize", ["200", "404", "404", "404"]),
    (
        "POST /v1/detokenize/batch",
        ["200:ok", "200:not_found", "200:not_found", "200:not_found"],
    ),
    ("GET /v1/tokens/{token}", ["200", "404", "404", "404"]),
    ("DELETE /v1/tokens/{token}", ["204", "404", "404", "404"]),
    ("POST /v1/encrypt", ["200", "403", "403", "403"]),
    ("POST /v1/decrypt", ["200", "403", "403", "403"]),
    ("POST /v1/rewrap", ["200", "403", "403", "403"]),
    ("GET /v1/keys", ["403", "403", "200", "403"]),
    ("GET /healthz", ["200", "200", "200", "200"]),
    ("GET /readyz", ["200", "200", "200", "200"]),
    ("GET /metrics", ["200", "200", "200", "200"]),
    ("GET /openapi.json", ["200", "200", "200", "200"]),
];

async fn call(app: &TestApp, who: &str, route: &str, token: &str, ciphertext: &str) -> String {
    let (method, path) = route.split_once(' ').unwrap();
    let path = path.replace("{token}", token);
    let body = match path.as_str() {
        "/v1/tokenize" => json!({"type": "card", "value": "4111111111111111"}),
        "/v1/tokenize/batch" => json!({"items": [{"type": "card", "value": "4111111111111111"}]}),
        "/v1/detokenize" => json!({"token": token}),
        "/v1/detokenize/batch" => json!({"tokens": [token]}),
        "/v1/encrypt" => json!({"keyring": "pii", "plaintext": "aGVsbG8="}),
        "/v1/decrypt" | "/v1/rewrap" => json!({"ciphertext": ciphertext}),
        _ => Value::Null,
    };
    let (status, resp) = match method {
        "GET" => app.get(who, &path).await,
        "DELETE" => app.delete(who, &path).await,
        "POST" => app.post(who, &path, body).await,
        other => panic!("unexpected method {other}"),
    };
    if path.ends_with("/batch") {
        let item = &resp["items"][0];
        let code = item["error"]["code"].as_str().unwrap_or("ok");
        format!("{status}:{code}")
    } else {
        status.to_string()
    }
}

#[tokio::test]
async fn every_client_on_every_route_gets_what_the_table_says() {
    let app = spawn_app("matrix").await;
    let (_, e) = app
        .post(
            "app",
            "/v1/encrypt",
            json!({"keyring": "pii", "plaintext": "aGVsbG8="}),
        )
        .await;
    let ciphertext = e["ciphertext"].as_str().unwrap().to_owned();
    let mut mismatches = Vec::new();
    for (method, path) in ROUTES {
        let route = format!("{method} {path}");
        let expected = TABLE
            .iter()
            .find(|(r, _)| *r == route)
            .unwrap_or_else(|| panic!("route {route} is missing from the permission table"))
            .1;
        for (who, want) in CLIENTS.iter().zip(expected) {
            // A fresh token per call, so a delete by one client cannot change another's answer.
            let token = app.tokenize("card", "4111111111111111").await;
            let got = call(&app, who, &route, &token, &ciphertext).await;
            if got != want {
                mismatches.push(format!("{who} {route}: expected {want}, got {got}"));
            }
        }
    }
    assert_eq!(
        TABLE.len(),
        ROUTES.len(),
        "the table lists a route the API does not have"
    );
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
