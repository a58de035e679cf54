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

/// A key's administrator (`rotate:<key>`) rotates it over the API; nothing is destroyed
/// over the API, and configuration changes that would retire, destroy or export are
/// refused with the reason.
#[tokio::test]
async fn a_key_is_rotated_with_its_own_grant_and_never_destroyed_over_the_api() {
    let app = spawn_with("vault-routes-rotate", |s, _| {
        s.vault_api.min_rotation_interval_secs = 0;
        s.clients.get_mut("tokenizer").unwrap().permissions = ["encrypt:pii", "rotate:pii"]
            .iter()
            .map(|g| tokenvault::guard::Grant::parse(g).unwrap())
            .collect();
        s.clients
            .get_mut("app")
            .unwrap()
            .permissions
            .retain(|g| !g.to_string().starts_with("rotate"));
    })
    .await;
    let mut admin = VaultClient::of("tokenizer");
    admin.login(&app).await;
    let mut app_client = VaultClient::of("app");
    app_client.login(&app).await;
    let (_, body, _) = admin
        .call(
            &app,
            "POST",
            "/v1/transit/encrypt/pii",
            Some(json!({"plaintext": b64("old")})),
        )
        .await;
    let old = body["data"]["ciphertext"].as_str().unwrap().to_owned();

    // Without the grant: refused and audited, even for a client that may do all else.
    let (status, body, _) = app_client
        .call(&app, "POST", "/v1/transit/keys/pii/rotate", Some(json!({})))
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, _, _) = admin
        .call(&app, "POST", "/v1/transit/keys/pan/rotate", Some(json!({})))
        .await;
    assert_eq!(status, 403);
    let (status, body, _) = admin
        .call(&app, "POST", "/v1/transit/keys/pii/rotate", Some(json!({})))
        .await;
    assert_eq!(status, 204, "{body}");
    let (_, body, _) = admin
        .call(
            &app,
            "POST",
            "/v1/transit/encrypt/pii",
            Some(json!({"plaintext": b64("new")})),
        )
        .await;
    assert!(
        body["data"]["ciphertext"]
            .as_str()
            .unwrap()
            .starts_with("vault:v2:"),
        "{body}"
    );
    assert_eq!(body["data"]["key_version"], 2);
    let (status, body, _) = app_client
        .call(
            &app,
            "POST",
            "/v1/transit/decrypt/pii",
            Some(json!({"ciphertext": old})),
        )
        .await;
    assert_eq!(status, 200, "the old version still decrypts: {body}");

    let mut db = app.db().await;
    let rows: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT action, outcome, actor, resource FROM audit_events \
         WHERE action IN ('key.rotate', 'key.create') ORDER BY seq",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    let by_api: Vec<_> = rows
        .iter()
        .filter(|r| r.2 != "system" && !r.2.starts_with("officer"))
        .collect();
    assert!(
        by_api
            .iter()
            .any(|r| r.0 == "key.rotate" && r.1 == "denied" && r.2 == "app"),
        "{rows:?}"
    );
    assert!(
        by_api.iter().any(|r| r.0 == "key.create"
            && r.1 == "success"
            && r.2 == "tokenizer"
            && r.3.as_deref() == Some("pii/2")),
        "{rows:?}"
    );

    // Stating what the key is: fine. Changing it: refused, with the reason.
    let (status, body, _) = admin
        .call(
            &app,
            "POST",
            "/v1/transit/keys/pii/config",
            Some(json!({"deletion_allowed": false, "exportable": "false"})),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    for change in [
        json!({"deletion_allowed": true}),
        json!({"min_decryption_version": 2}),
        json!({"exportable": true}),
        json!({"auto_rotate_period": "24h"}),
    ] {
        let (status, body, _) = admin
            .call(
                &app,
                "POST",
                "/v1/transit/keys/pii/config",
                Some(change.clone()),
            )
            .await;
        assert_eq!(status, 400, "{change}: {body}");
    }
    for (method, path) in [
        ("DELETE", "/v1/transit/keys/pii"),
        ("POST", "/v1/transit/keys/pii/trim"),
    ] {
        let (status, body, _) = admin
            .call(
                &app,
                method,
                path,
                Some(json!({"min_available_version": 2})),
            )
            .await;
        assert_eq!(status, 400, "{method} {path}: {body}");
        assert!(
            body["errors"][0]
                .as_str()
                .unwrap()
                .contains("two security officers"),
            "{body}"
        );
    }
}

/// A `derived` keyring: every operation names a context, on Transit and the native API
/// alike (the one encrypt path), and only the same context opens; convergent encryption
/// is refused with its reason.
#[tokio::test]
async fn a_derived_keyring_needs_a_context_everywhere() {
    let app = spawn_with("vault-routes-derived", |s, _| {
        s.keyrings.get_mut("pii").unwrap().derived = true;
    })
    .await;
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    let post = |path: &'static str, body: Value| {
        let c = &c;
        let app = &app;
        async move {
            let (status, body, _) = c.call(app, "POST", path, Some(body)).await;
            (status, body)
        }
    };
    let (status, body) = post("/v1/transit/encrypt/pii", json!({"plaintext": b64("x")})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(
        "/v1/transit/encrypt/pii",
        json!({"plaintext": b64("x"), "associated_data": b64("ad")}),
    )
    .await;
    assert_eq!(status, 400, "associated data is no context: {body}");
    let (status, body) = post(
        "/v1/transit/encrypt/pii",
        json!({"plaintext": b64("x"), "context": b64("tenant-1")}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let ct = body["data"]["ciphertext"].as_str().unwrap().to_owned();
    for (context, want) in [
        (None, 400),
        (Some("tenant-2"), 400),
        (Some("tenant-1"), 200),
    ] {
        let mut req = json!({"ciphertext": ct});
        if let Some(c) = context {
            req["context"] = json!(b64(c));
        }
        let (status, body) = post("/v1/transit/decrypt/pii", req).await;
        assert_eq!(status, want, "{context:?}: {body}");
    }
    // The native API takes the same path.
    let (status, body) = app
        .post(
            "app",
            "/v1/encrypt",
            json!({"keyring": "pii", "plaintext": b64("x")}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = app
        .post(
            "app",
            "/v1/encrypt",
            json!({"keyring": "pii", "plaintext": b64("x"), "context": b64("c")}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // `pan` is not derived: no context needed there.
    let (status, _) = post("/v1/transit/encrypt/pan", json!({"plaintext": b64("x")})).await;
    assert_eq!(status, 200);

    let mut auditor = VaultClient::of("auditor");
    auditor.login(&app).await;
    let (_, key, _) = auditor
        .call(&app, "GET", "/v1/transit/keys/pii", None)
        .await;
    assert_eq!(key["data"]["derived"], true, "{key}");
    for (body, want) in [
        (json!({"derived": true}), 204),
        (json!({"derived": false}), 400),
        (json!({"derived": true, "convergent_encryption": true}), 400),
    ] {
        let (status, answer) = post("/v1/transit/keys/pii", body.clone()).await;
        assert_eq!(status, want, "{body}: {answer}");
    }
}

/// Review of import (finding 3): a string that holds a card number is never a token, so
/// a detokenize or read of one is refused before anything records it.
#[tokio::test]
async fn a_token_holding_a_card_number_never_reaches_the_audit_trail() {
    let app = spawn_with("vault-routes-pan-token", |_, _| {}).await;
    for token in ["4111111111111111exp0526", "card-4111-1111-1111-1111"] {
        let (status, body) = app
            .post("app", "/v1/detokenize", json!({"token": token}))
            .await;
        assert_eq!(status, 404, "{body}");
        let (status, _) = app.get("app", &format!("/v1/tokens/{token}")).await;
        assert_eq!(status, 404);
    }
    let mut db = app.db().await;
    let rows: Vec<Option<String>> = sqlx::query_scalar("SELECT resource FROM audit_events")
        .fetch_all(&mut db)
        .await
        .unwrap();
    for r in rows.into_iter().flatten() {
        assert!(!r.contains("4111"), "a card number in the trail: {r}");
    }
}

/// Review of rotate (finding 6): a client's rotations are spaced
/// (`vault_api.min_rotation_interval_secs`), so a loop cannot pile up versions or fill
/// the HSM with key pairs.
#[tokio::test]
async fn rotations_over_the_api_are_spaced() {
    let app = spawn_with("vault-routes-rotate-often", |s, _| {
        s.vault_api.min_rotation_interval_secs = 2;
    })
    .await;
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    // The interval runs from the newest version, made by init a moment ago.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (first, _, _) = c
        .call(&app, "POST", "/v1/transit/keys/pii/rotate", Some(json!({})))
        .await;
    let (second, body, _) = c
        .call(&app, "POST", "/v1/transit/keys/pii/rotate", Some(json!({})))
        .await;
    assert_eq!((first, second), (204, 429), "{body}");
}

/// A convergent keyring (Vault's convergent encryption, on a derived key): the same
/// plaintext under the same context gives the same ciphertext, and nothing else matches.
#[tokio::test]
async fn a_convergent_keyring_encrypts_equal_values_equally_per_context() {
    let app = spawn_with("vault-routes-convergent", |s, _| {
        let pii = s.keyrings.get_mut("pii").unwrap();
        pii.derived = true;
        pii.convergent = true;
    })
    .await;
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    let encrypt = |plain: &'static str, context: &'static str| {
        let c = &c;
        let app = &app;
        async move {
            let (status, body, _) = c
                .call(
                    app,
                    "POST",
                    "/v1/transit/encrypt/pii",
                    Some(json!({"plaintext": b64(plain), "context": b64(context)})),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body["data"]["ciphertext"].as_str().unwrap().to_owned()
        }
    };
    let a = encrypt("4111 1111", "tenant-a").await;
    assert_eq!(a, encrypt("4111 1111", "tenant-a").await);
    assert_ne!(a, encrypt("4111 1112", "tenant-a").await);
    assert_ne!(a, encrypt("4111 1111", "tenant-b").await);
    let (status, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transit/decrypt/pii",
            Some(json!({"ciphertext": a, "context": b64("tenant-a")})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["plaintext"], json!(b64("4111 1111")));
    // The native API takes the same path; a keyring that is not convergent stays random.
    let native = |keyring: &'static str| {
        let app = &app;
        async move {
            let (_, body) = app
                .post(
                    "app",
                    "/v1/encrypt",
                    json!({"keyring": keyring, "plaintext": b64("x"), "context": b64("c")}),
                )
                .await;
            body["ciphertext"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(native("pii").await, native("pii").await);
    assert_ne!(native("pan").await, native("pan").await);
    let mut auditor = VaultClient::of("auditor");
    auditor.login(&app).await;
    let (_, key, _) = auditor
        .call(&app, "GET", "/v1/transit/keys/pii", None)
        .await;
    assert_eq!(key["data"]["convergent_encryption"], true, "{key}");
}

/// Review of convergent (finding 1): a convergent ciphertext is a keyed deterministic
/// function of its plaintext, like an HMAC digest, so whoever may make one can test
/// guesses against stored ones: encrypting or rewrapping with a convergent keyring needs
/// `hmac:<keyring>` as well as `encrypt:`.
#[tokio::test]
async fn convergent_encryption_needs_the_grant_of_deterministic_outputs() {
    let app = spawn_with("vault-routes-convergent-grant", |s, _| {
        let pii = s.keyrings.get_mut("pii").unwrap();
        pii.derived = true;
        pii.convergent = true;
        s.clients.get_mut("tokenizer").unwrap().permissions = ["encrypt:pii", "encrypt:pan"]
            .iter()
            .map(|g| tokenvault::guard::Grant::parse(g).unwrap())
            .collect();
    })
    .await;
    let mut t = VaultClient::of("tokenizer");
    t.login(&app).await;
    let body = json!({"plaintext": b64("123-45-6789"), "context": b64("c")});
    let (status, answer, _) = t
        .call(&app, "POST", "/v1/transit/encrypt/pii", Some(body.clone()))
        .await;
    assert_eq!(status, 403, "{answer}");
    let (status, answer, _) = t
        .call(&app, "POST", "/v1/transit/encrypt/pan", Some(body))
        .await;
    assert_eq!(
        status, 200,
        "a randomized keyring needs only encrypt: {answer}"
    );
}

/// Review of convergent (finding 2): a context that decodes to nothing (whitespace) is no
/// context for a derived keyring.
#[tokio::test]
async fn a_blank_context_is_no_context() {
    let app = spawn_with("vault-routes-blank-context", |s, _| {
        s.keyrings.get_mut("pii").unwrap().derived = true;
    })
    .await;
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    for context in [" ", "\n", "  \t "] {
        let (status, body, _) = c
            .call(
                &app,
                "POST",
                "/v1/transit/encrypt/pii",
                Some(json!({"plaintext": b64("x"), "context": context})),
            )
            .await;
        assert_eq!(status, 400, "{context:?}: {body}");
    }
}
