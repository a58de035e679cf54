//! Issue 3: the HTTPS API end to end — real server on a random port, real TLS with
//! client certificates, real SoftHSM2, a SQLite file per test.

use std::collections::BTreeSet;

use crate::helpers::{self, TestApp, assert_no_canary, spawn_app};
use serde_json::{Value, json};
use tokenvault::tokenize::format::luhn_valid;

const VISA: &str = "4111111111111111";
const MC: &str = "5555555555554444";
const AMEX: &str = "378282246310005";

async fn detokenize(app: &TestApp, who: &str, token: &str) -> (u16, Value) {
    app.post(
        who,
        "/v1/detokenize",
        json!({"token": token, "reason": "test"}),
    )
    .await
}

#[tokio::test]
async fn every_type_and_format_round_trips() {
    let app = spawn_app("roundtrip").await;
    let cases = [
        ("pan", VISA, None, VISA),
        ("pan", "4111 1111-1111 1111", None, VISA),
        ("card", AMEX, Some("opaque"), AMEX),
        ("card", MC, Some("last4"), MC),
        (
            "card",
            "6011000990139424",
            Some("first6_last4"),
            "6011000990139424",
        ),
        ("ssn", "123-45-6789", None, "123456789"),
        ("ssn", "123-45-6789", Some("last4"), "123456789"),
        (
            "email",
            "canary.jane@example.com",
            None,
            "canary.jane@example.com",
        ),
        (
            "text",
            "canary-free-text-7f3a",
            None,
            "canary-free-text-7f3a",
        ),
    ];
    for (ty, value, format, normalized) in cases {
        let mut req = json!({"type": ty, "value": value, "metadata": {"order": 42}});
        if let Some(f) = format {
            req["format"] = json!(f);
        }
        let (status, t) = app.post("app", "/v1/tokenize", req).await;
        assert_eq!(status, 200, "{ty} {format:?}: {t}");
        let token = t["token"].as_str().unwrap();
        assert_eq!(t["type"], ty);
        assert!(!t["fingerprint"].as_str().unwrap().is_empty());
        assert_no_canary(&t.to_string(), "a tokenize response");
        match format.unwrap_or(if ty == "pan" { "last4" } else { "opaque" }) {
            "opaque" => assert!(
                token.starts_with("tok_") && token.len() >= 4 + 22,
                "{token}"
            ),
            "last4" => {
                assert_eq!(token.len(), normalized.len());
                assert_eq!(
                    &token[token.len() - 4..],
                    &normalized[normalized.len() - 4..]
                );
                assert!(!luhn_valid(token.as_bytes()), "{token} passes Luhn");
            }
            "first6_last4" => {
                assert_eq!(token.len(), normalized.len());
                assert_eq!(&token[..6], &normalized[..6]);
                assert_eq!(
                    &token[token.len() - 4..],
                    &normalized[normalized.len() - 4..]
                );
                assert!(!luhn_valid(token.as_bytes()));
            }
            other => unreachable!("{other}"),
        }
        let (status, d) = detokenize(&app, "app", token).await;
        assert_eq!(status, 200, "{d}");
        assert_eq!(d["value"], normalized);
        assert_eq!(d["type"], ty);
        assert_eq!(d["metadata"], json!({"order": 42}));
    }
    let masked = app
        .post("app", "/v1/tokenize", json!({"type": "pan", "value": VISA}))
        .await
        .1["masked"]
        .clone();
    assert_eq!(masked, "************1111");
}

#[tokio::test]
async fn deterministic_types_give_one_token_per_value_even_under_concurrency() {
    let app = std::sync::Arc::new(spawn_app("determ").await);
    let a = app.tokenize("pan", VISA).await;
    assert_eq!(
        app.tokenize("pan", "4111-1111-1111-1111").await,
        a,
        "normalized values share a token"
    );
    assert_ne!(app.tokenize("pan", MC).await, a);
    // Random types give a fresh token each time.
    assert_ne!(
        app.tokenize("card", VISA).await,
        app.tokenize("card", VISA).await
    );

    let mut tasks = Vec::new();
    for i in 0..24 {
        let app = app.clone();
        let value = if i % 2 == 0 {
            "canary.jane@example.com"
        } else {
            "CANARY.jane@EXAMPLE.com"
        };
        let value = if i % 3 == 0 {
            "canary.jane@example.com"
        } else {
            value
        };
        tasks.push(tokio::spawn(async move {
            app.tokenize("email_det", value).await
        }));
    }
    let mut tokens = BTreeSet::new();
    for t in tasks {
        tokens.insert(t.await.unwrap());
    }
    // Two distinct local parts (case differs), one domain: exactly two tokens.
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    let mut db = app.db().await;
    let rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM tokens WHERE token_type = 'email_det'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(rows, 2);
}

#[tokio::test]
async fn invalid_values_get_422_or_413_and_are_never_echoed_or_logged() {
    let app = spawn_app("invalid").await;
    let bad = [
        ("4111111111111112", 422),     // Luhn fails
        ("41111111111", 422),          // too short
        ("41111111111111111111", 422), // too long
        ("٤١١١١١١١١١١١١١١١", 422),     // non-ASCII digits
        ("4111abcd11111111", 422),     // letters
    ];
    for (value, expected) in bad {
        let (status, body) = app
            .post(
                "app",
                "/v1/tokenize",
                json!({"type": "pan", "value": value}),
            )
            .await;
        assert_eq!(status, expected, "{body}");
        assert_eq!(body["error"]["code"], "invalid_value");
        assert!(
            !body.to_string().contains(value),
            "the value was echoed: {body}"
        );
    }
    let huge = "4".repeat(1 << 20);
    let (status, body) = app
        .post("app", "/v1/tokenize", json!({"type": "pan", "value": huge}))
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
    // A value just under the body limit but over the value limit: 422, not echoed.
    let long = "4".repeat(8000);
    let (status, body) = app
        .post("app", "/v1/tokenize", json!({"type": "pan", "value": long}))
        .await;
    assert_eq!(status, 422);
    assert!(!body.to_string().contains(&long[..100]));
    // Wrong JSON types do not echo either (serde would quote the value).
    let (status, body) = app
        .post(
            "app",
            "/v1/tokenize",
            json!({"type": "pan", "value": 4111111111111112u64}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(!body.to_string().contains("4111111111111112"), "{body}");
    let logs = helpers::read_logs();
    for (value, _) in bad {
        assert!(!logs.contains(value), "a log line holds a submitted value");
    }
    assert!(!logs.contains(&"4".repeat(64)));
}

#[tokio::test]
async fn a_ciphertext_moved_to_another_row_fails_with_an_integrity_error() {
    let app = spawn_app("moved").await;
    let visa = app.tokenize("card", VISA).await;
    let mc = app.tokenize("card", MC).await;
    let mut db = app.db().await;
    sqlx::query("UPDATE tokens SET ciphertext = (SELECT ciphertext FROM tokens WHERE token = $1) WHERE token = $2")
        .bind(&visa)
        .bind(&mc)
        .execute(&mut db)
        .await
        .unwrap();
    let (status, body) = detokenize(&app, "app", &mc).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "integrity_error");
    assert!(!body.to_string().contains(VISA) && !body.to_string().contains(MC));
    // The untouched row still answers.
    assert_eq!(detokenize(&app, "app", &visa).await.1["value"], VISA);
    // A renamed token no longer matches the AAD its value was sealed with.
    sqlx::query("UPDATE tokens SET token = 'tok_edited' WHERE token = $1")
        .bind(&visa)
        .execute(&mut db)
        .await
        .unwrap();
    let (status, _) = detokenize(&app, "app", "tok_edited").await;
    assert_eq!(status, 500);
}

/// The ciphertext with one base64 character in the body changed.
fn flip_middle(ct: &str) -> String {
    let mut chars: Vec<char> = ct.chars().collect();
    let i = ct.len() - 10;
    chars[i] = if chars[i] == 'B' { 'C' } else { 'B' };
    chars.into_iter().collect()
}

#[tokio::test]
async fn encrypt_decrypt_and_rewrap_bind_the_context() {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let app = spawn_app("encrypt").await;
    let plain = b64(b"canary-plaintext-91bd");
    let ctx = b64(b"customer:17");
    let (status, e) = app
        .post(
            "app",
            "/v1/encrypt",
            json!({"keyring": "pii", "plaintext": plain, "context": ctx}),
        )
        .await;
    assert_eq!(status, 200, "{e}");
    let ct = e["ciphertext"].as_str().unwrap().to_owned();
    assert!(ct.starts_with("tv1:pii:1:"), "{ct}");
    let (status, d) = app
        .post(
            "app",
            "/v1/decrypt",
            json!({"ciphertext": ct, "context": ctx}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(d["plaintext"], plain);
    // Another context, no context, or a flipped character: 422 and nothing revealed.
    for body in [
        json!({"ciphertext": ct, "context": b64(b"customer:18")}),
        json!({"ciphertext": ct}),
        json!({"ciphertext": flip_middle(&ct), "context": ctx}),
    ] {
        let (status, resp) = app.post("app", "/v1/decrypt", body).await;
        assert!(status == 422 || status == 400, "{status} {resp}");
        assert!(resp.get("plaintext").is_none());
    }
    let (status, _) = app
        .post("app", "/v1/decrypt", json!({"ciphertext": "tv1:pan:1:xyz"}))
        .await;
    assert_eq!(status, 400);

    // Rotate pii, then rewrap: same plaintext, new version, old one still decrypts.
    let vault = tokenvault::vault::Vault::open(app.settings.clone())
        .await
        .unwrap();
    vault
        .keys
        .rotate("pii", "test", None, tokenvault::vault::now_ms())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await; // the server refreshes every 2 s
    let (status, r) = app
        .post(
            "app",
            "/v1/rewrap",
            json!({"ciphertext": ct, "context": ctx}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let rewrapped = r["ciphertext"].as_str().unwrap();
    assert!(rewrapped.starts_with("tv1:pii:2:"), "{rewrapped}");
    assert!(r.get("plaintext").is_none());
    assert_eq!(
        app.post(
            "app",
            "/v1/decrypt",
            json!({"ciphertext": rewrapped, "context": ctx})
        )
        .await
        .1["plaintext"],
        plain
    );
    assert_eq!(
        app.post(
            "app",
            "/v1/decrypt",
            json!({"ciphertext": ct, "context": ctx})
        )
        .await
        .1["plaintext"],
        plain
    );
    let (_, e2) = app
        .post(
            "app",
            "/v1/encrypt",
            json!({"keyring": "pii", "plaintext": plain}),
        )
        .await;
    assert!(
        e2["ciphertext"].as_str().unwrap().starts_with("tv1:pii:2:"),
        "new writes use the new version"
    );
}

#[tokio::test]
async fn batches_keep_order_report_errors_per_item_and_respect_the_cap() {
    let app = spawn_app("batch").await;
    let (status, b) = app
        .post(
            "app",
            "/v1/tokenize/batch",
            json!({"items": [
                {"type": "card", "value": VISA},
                {"type": "pan", "value": "4111111111111112"},
                {"type": "nope", "value": "x"},
                {"type": "card"},
                {"type": "card", "value": MC},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{b}");
    let items = b["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert!(items[0]["token"].is_string());
    assert_eq!(items[1]["error"]["code"], "invalid_value");
    assert_eq!(items[2]["error"]["code"], "invalid_request");
    assert_eq!(items[3]["error"]["code"], "invalid_request");
    assert!(items[4]["token"].is_string());
    let tokens = [
        items[0]["token"].clone(),
        json!("tok_doesnotexist"),
        items[4]["token"].clone(),
    ];
    let (status, d) = app
        .post("app", "/v1/detokenize/batch", json!({"tokens": tokens}))
        .await;
    assert_eq!(status, 200);
    let d = d["items"].as_array().unwrap();
    assert_eq!(d[0]["value"], VISA);
    assert_eq!(d[1]["error"]["code"], "not_found");
    assert_eq!(d[2]["value"], MC);
    // The same token several times in one batch: its lookups are read together, and each
    // gets the row.
    let same = vec![items[0]["token"].clone(); 5];
    let (status, d) = app
        .post("app", "/v1/detokenize/batch", json!({"tokens": same}))
        .await;
    assert_eq!(status, 200, "{d}");
    for item in d["items"].as_array().unwrap() {
        assert_eq!(item["value"], VISA, "{d}");
    }

    let too_many: Vec<Value> = (0..51)
        .map(|_| json!({"type": "card", "value": VISA}))
        .collect();
    let (status, body) = app
        .post("app", "/v1/tokenize/batch", json!({"items": too_many}))
        .await;
    assert_eq!(status, 413, "{body}");
}

#[tokio::test]
async fn token_metadata_delete_ttl_and_no_store() {
    let app = spawn_app("meta").await;
    let token = app.tokenize("card", VISA).await;
    let (status, info) = app.get("app", &format!("/v1/tokens/{token}")).await;
    assert_eq!(status, 200);
    assert_eq!(info["masked"], "************1111");
    assert!(info.get("value").is_none());
    assert_no_canary(&info.to_string(), "token metadata");

    let r = helpers::client("app")
        .post(app.url("/v1/detokenize"))
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");

    let (status, _) = app.delete("app", &format!("/v1/tokens/{token}")).await;
    assert_eq!(status, 204);
    assert_eq!(detokenize(&app, "app", &token).await.0, 404);
    let mut db = app.db().await;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens WHERE token = $1")
        .bind(&token)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(n, 0, "the ciphertext is gone");

    let (status, t) = app
        .post(
            "app",
            "/v1/tokenize",
            json!({"type": "card", "value": MC, "ttl_seconds": 1}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(t["expires_at"].is_string());
    let token = t["token"].as_str().unwrap();
    assert_eq!(detokenize(&app, "app", token).await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        detokenize(&app, "app", token).await.0,
        404,
        "expired tokens are gone"
    );
}

#[tokio::test]
async fn unknown_and_forbidden_tokens_answer_alike_and_are_audited() {
    let app = spawn_app("alike").await;
    let token = app.tokenize("card", VISA).await;
    let (s1, b1) = detokenize(&app, "tokenizer", &token).await;
    let (s2, b2) = detokenize(&app, "tokenizer", "tok_AAAAAAAAAAAAAAAAAAAAAAAA").await;
    assert_eq!((s1, &b1), (s2, &b2));
    assert_eq!(s1, 404);
    let mut db = app.db().await;
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT actor, action, outcome FROM audit_events WHERE action = 'detokenize' ORDER BY seq",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("tokenizer".into(), "detokenize".into(), "denied".into()),
            ("tokenizer".into(), "detokenize".into(), "failure".into())
        ]
    );
    let audit: Vec<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT resource, reason FROM audit_events")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_no_canary(&format!("{audit:?}"), "the audit table");
}

#[tokio::test]
async fn the_openapi_document_is_openapi_3_and_lists_every_route() {
    let app = spawn_app("openapi").await;
    let (status, doc) = app.get("auditor", "/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let listed: BTreeSet<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| format!("{} {path}", m.to_uppercase()))
        })
        .collect();
    let expected: BTreeSet<String> = helpers::ROUTES
        .iter()
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert_eq!(listed, expected);
    // Every schema reference resolves.
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &r[..r.find('"').unwrap()];
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "dangling $ref {name}"
        );
    }
}

#[tokio::test]
async fn deep_json_is_refused_and_metrics_count_requests_without_values() {
    let app = spawn_app("limits").await;
    let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
    let r = helpers::client("app")
        .post(app.url("/v1/tokenize"))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"type":"pan","value":"4111111111111111","metadata":{{"x":{deep}}}}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deeper")
    );
    assert!(!body.to_string().contains("4111111111111111"));

    app.tokenize("card", VISA).await;
    let text = helpers::metrics_text(&app.url("/metrics")).await;
    assert!(text.contains("tokenvault_requests_total"), "{text}");
    assert!(text.contains(r#"route="/v1/tokenize""#));
    assert_no_canary(&text, "the metrics");
    let (status, ready) = app.get("auditor", "/readyz").await;
    assert_eq!(
        (status, ready["hsm"].as_str(), ready["database"].as_str()),
        (200, Some("ok"), Some("ok"))
    );
}

/// Issue 14, item 8: what Schemathesis (scripts/contract) found where the server and its
/// document disagreed. Each answer is what the document says; all are checked at once.
#[tokio::test]
async fn the_server_answers_what_its_document_says_about_reason_and_ttl() {
    let app = spawn_app("contract").await;
    let token = app.tokenize("text", "contract canary value").await;
    let mut answers = Vec::new();
    // A reason the document refuses is refused by a batch as by a single detokenize,
    // even with no token to reveal (it answered 200 with per-item errors, or none).
    for tokens in [json!([]), json!([token])] {
        let (status, _) = app
            .post(
                "app",
                "/v1/detokenize/batch",
                json!({"tokens": tokens, "reason": "\u{84}"}),
            )
            .await;
        answers.push(("batch with a control character in reason", status));
    }
    // "At most 200 printable characters": characters, not bytes.
    let (status, _) = detokenize_with(&app, &token, &"é".repeat(150)).await;
    answers.push(("reason of 150 two-byte characters", status));
    let (status, _) = detokenize_with(&app, &token, &"é".repeat(201)).await;
    answers.push(("reason of 201 characters", status));
    // JSON Schema's integer includes 314.0; so does ttl_seconds.
    let (status, body) = app
        .post(
            "app",
            "/v1/tokenize",
            json!({"type": "text", "value": "contract ttl", "ttl_seconds": 314.0}),
        )
        .await;
    answers.push(("ttl_seconds 314.0", status));
    let (status, _) = app
        .post(
            "app",
            "/v1/tokenize",
            json!({"type": "text", "value": "contract ttl", "ttl_seconds": 314.5}),
        )
        .await;
    answers.push(("ttl_seconds 314.5", status));
    assert_eq!(
        answers,
        vec![
            ("batch with a control character in reason", 400),
            ("batch with a control character in reason", 400),
            ("reason of 150 two-byte characters", 200),
            ("reason of 201 characters", 400),
            ("ttl_seconds 314.0", 200),
            ("ttl_seconds 314.5", 400),
        ],
        "{body}"
    );
}

async fn detokenize_with(app: &TestApp, token: &str, reason: &str) -> (u16, Value) {
    app.post(
        "app",
        "/v1/detokenize",
        json!({"token": token, "reason": reason}),
    )
    .await
}
