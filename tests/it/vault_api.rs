//! The Vault-compatible API (issue 16) as a Vault client sees it: certificate login,
//! tokens bound to the certificate, Transit over tokenvault keyrings, Vault's envelopes,
//! status codes and error bodies; and what the native API guarantees (permissions, the
//! audit trail) on these routes. hvac drives the same server in tests/vault/.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::helpers::*;

#[tokio::test]
async fn a_token_works_only_with_the_certificate_that_logged_in() {
    let app = spawn_vault("vault-bind").await;
    let mut app_client = VaultClient::of("app");
    let login = app_client.login(&app).await;
    let token = app_client.token.clone().unwrap();
    assert!(token.starts_with("hvs."), "{token}");
    assert_eq!(login["auth"]["metadata"]["cert_name"], "app");
    assert!(login["auth"]["lease_duration"].as_i64().unwrap() > 0);

    let (status, body, _) = app_client
        .call(&app, "GET", "/v1/auth/token/lookup-self", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["display_name"], "cert-app");
    assert_eq!(
        body["data"]["id"], "",
        "a lookup never hands the token out again"
    );

    // The same token replayed by another client, and by the same identity holding
    // another certificate (a re-issued or stolen-and-reissued one): refused as Vault does.
    let mut other = VaultClient::of("tokenizer");
    other.token = Some(token.clone());
    let mut same_name = VaultClient::new(&pki().ca.client("app").unwrap());
    same_name.token = Some(token.clone());
    for thief in [&other, &same_name] {
        let (status, body, content_type) = thief
            .call(&app, "GET", "/v1/auth/token/lookup-self", None)
            .await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body, json!({"errors": ["permission denied"]}));
        assert_eq!(content_type, "application/json");
        let (status, _, _) = thief
            .call(
                &app,
                "POST",
                "/v1/transit/encrypt/pii",
                Some(json!({"plaintext": b64("x")})),
            )
            .await;
        assert_eq!(status, 403);
    }
    // No token, a made-up one, a Bearer one.
    let mut none = VaultClient::of("app");
    let (status, _, _) = none
        .call(&app, "GET", "/v1/auth/token/lookup-self", None)
        .await;
    assert_eq!(status, 403);
    none.token = Some("hvs.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into());
    let (status, _, _) = none
        .call(&app, "GET", "/v1/auth/token/lookup-self", None)
        .await;
    assert_eq!(status, 403);
    let resp = app_client
        .http
        .get(app.url("/v1/auth/token/lookup-self"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let refused = events(&app, "auth.").await;
    let reasons: Vec<_> = refused
        .iter()
        .filter(|(a, ..)| a == "auth.refused")
        .map(|(_, o, r)| (o.as_str(), r.as_deref().unwrap_or("")))
        .collect();
    assert!(
        reasons.contains(&("denied", "certificate_mismatch")),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("denied", "token_unknown")),
        "{reasons:?}"
    );
    assert!(
        refused.contains(&("auth.login".into(), "success".into(), None)),
        "{refused:?}"
    );
    let mut db = app.db().await;
    let trail: Vec<(Option<String>,)> = sqlx::query_as("SELECT resource FROM audit_events")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert!(
        !format!("{trail:?}").contains(token.trim_start_matches("hvs.")),
        "the token reached the audit trail"
    );
}

#[tokio::test]
async fn only_configured_clients_log_in() {
    let app = spawn_vault("vault-stranger").await;
    let (status, body, _) = VaultClient::of("stranger")
        .call(&app, "POST", "/v1/auth/cert/login", None)
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        events(&app, "auth.login").await,
        [(
            String::from("auth.login"),
            String::from("denied"),
            Some(String::from("not_a_client"))
        )]
    );
}

#[tokio::test]
async fn sessions_expire_renew_within_their_maximum_and_revoke() {
    let app = spawn_vault("vault-ttl").await;
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let (status, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/auth/token/renew-self",
            Some(json!({"increment": "2s"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["auth"]["client_token"], "",
        "a renewal does not repeat the token"
    );
    // Renewed at ~1.2 s for 2 s: alive at ~2.4 s, past the login's first 2 s.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let (status, _, _) = c
        .call(&app, "GET", "/v1/auth/token/lookup-self", None)
        .await;
    assert_eq!(status, 200, "a renewed token works past its first expiry");
    // Left alone, it expires.
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let (status, _, _) = c
        .call(&app, "GET", "/v1/auth/token/lookup-self", None)
        .await;
    assert_eq!(status, 403, "an expired token is refused");
    let (status, _, _) = c
        .call(&app, "POST", "/v1/auth/token/renew-self", None)
        .await;
    assert_eq!(status, 403, "an expired token cannot be renewed");

    c.login(&app).await;
    let (status, _, _) = c
        .call(&app, "POST", "/v1/auth/token/revoke-self", None)
        .await;
    assert_eq!(status, 204);
    let (status, _, _) = c
        .call(&app, "GET", "/v1/auth/token/lookup-self", None)
        .await;
    assert_eq!(status, 403, "a revoked token is refused");
    let actions: Vec<_> = events(&app, "auth.")
        .await
        .into_iter()
        .map(|e| (e.0, e.2))
        .collect();
    assert!(
        actions.contains(&("auth.renew".into(), None)),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("auth.revoke".into(), None)),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("auth.refused".into(), Some("token_ended".into()))),
        "{actions:?}"
    );
}

#[tokio::test]
async fn transit_encrypts_decrypts_and_rewraps_through_the_one_encrypt_path() {
    let app = spawn_vault("vault-transit").await;
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    let (status, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transit/encrypt/pii",
            Some(json!({"plaintext": b64("hello"), "associated_data": b64("row-7")})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ct = body["data"]["ciphertext"].as_str().unwrap().to_owned();
    assert!(ct.starts_with("vault:v1:"), "{ct}");
    assert_eq!(body["data"]["key_version"], 1);
    assert_eq!(body["lease_id"], "");

    let (status, body, _) = c
        .call(
            &app,
            "PUT",
            "/v1/transit/decrypt/pii",
            Some(json!({"ciphertext": ct, "associated_data": b64("row-7"), "context": null})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["plaintext"], b64("hello"));
    // Bound to its place: other data, another keyring, a flipped byte.
    let (status, body, content_type) = c
        .call(
            &app,
            "POST",
            "/v1/transit/decrypt/pii",
            Some(json!({"ciphertext": ct, "associated_data": b64("row-8")})),
        )
        .await;
    assert_eq!(
        (status, content_type.as_str()),
        (400, "application/json"),
        "{body}"
    );
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("does not open"),
        "{body}"
    );
    let (status, _, _) = c
        .call(
            &app,
            "POST",
            "/v1/transit/decrypt/pan",
            Some(json!({"ciphertext": ct, "associated_data": b64("row-7")})),
        )
        .await;
    assert_eq!(status, 400);

    // Batches: references echoed; one bad item makes encrypt/decrypt answer 400 unless a
    // partial failure code is asked for; rewrap answers 200.
    let (status, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transit/encrypt/pii",
            Some(json!({
            "plaintext": null,
            "batch_input": [
                {"plaintext": b64("one"), "reference": "r1"},
                {"plaintext": b64("two"), "reference": "r2"},
            ]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let results = body["data"]["batch_results"].as_array().unwrap().clone();
    assert_eq!(results[1]["reference"], "r2");
    let good = results[0]["ciphertext"].as_str().unwrap().to_owned();
    let batch = json!({"batch_input": [
        {"ciphertext": good, "reference": "a"},
        {"ciphertext": "vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "reference": "b"},
    ]});
    let (status, body, _) = c
        .call(&app, "POST", "/v1/transit/decrypt/pii", Some(batch.clone()))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["data"]["batch_results"][0]["plaintext"], b64("one"));
    assert_eq!(body["data"]["batch_results"][1]["reference"], "b");
    assert!(
        body["data"]["batch_results"][1]["error"].is_string(),
        "{body}"
    );
    let mut partial = batch.clone();
    partial["partial_failure_response_code"] = json!("207");
    let (status, _, _) = c
        .call(&app, "POST", "/v1/transit/decrypt/pii", Some(partial))
        .await;
    assert_eq!(status, 207);
    let (status, body, _) = c
        .call(&app, "POST", "/v1/transit/rewrap/pii", Some(batch))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["data"]["batch_results"][0]["ciphertext"]
            .as_str()
            .unwrap()
            .starts_with("vault:v")
    );
    let (status, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transit/encrypt/pii",
            Some(json!({"batch_input": [
            {"plaintext": b64("a"), "context": b64("c")}, {"plaintext": b64("b")}]})),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // Permissions are the identity's: tokenizer may not encrypt.
    let mut t = VaultClient::of("tokenizer");
    t.login(&app).await;
    let (status, _, _) = t
        .call(
            &app,
            "POST",
            "/v1/transit/encrypt/pii",
            Some(json!({"plaintext": b64("x")})),
        )
        .await;
    assert_eq!(status, 403);

    // Every operation is in the trail, and the trail verifies.
    let encrypts = events(&app, "encrypt").await;
    assert_eq!(
        encrypts.iter().filter(|e| e.1 == "success").count(),
        3,
        "{encrypts:?}"
    );
    assert_eq!(
        encrypts.iter().filter(|e| e.1 == "denied").count(),
        1,
        "{encrypts:?}"
    );
    let store = tokenvault::store::Store::connect(&app.settings.database.url, 2)
        .await
        .unwrap();
    let keys = tokenvault::audit::verify::trusted_keys(&store, None)
        .await
        .unwrap();
    let v = tokenvault::audit::verify::verify(&store, &keys, &[])
        .await
        .unwrap();
    assert!(v.ok(), "{:?}", v.first_bad);
}

#[tokio::test]
async fn keys_list_both_ways_read_and_refuse_export() {
    let app = spawn_vault("vault-keys").await;
    let mut auditor = VaultClient::of("auditor");
    auditor.login(&app).await;
    for (method, path) in [
        ("LIST", "/v1/transit/keys"),
        ("GET", "/v1/transit/keys?list=true"),
    ] {
        let (status, body, _) = auditor.call(&app, method, path, None).await;
        assert_eq!(status, 200, "{method} {body}");
        let keys: Vec<&str> = body["data"]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert!(keys.contains(&"pii") && keys.contains(&"pan"), "{keys:?}");
        assert!(!keys.iter().any(|k| k.contains("fingerprint")), "{keys:?}");
    }
    let (status, body, _) = auditor
        .call(&app, "GET", "/v1/transit/keys/pii", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["type"], "aes256-gcm96");
    assert_eq!(body["data"]["latest_version"], 1);
    assert!(body["data"]["keys"]["1"].as_i64().unwrap() > 1_600_000_000);
    let (status, _, _) = auditor
        .call(&app, "GET", "/v1/transit/keys/nokey", None)
        .await;
    assert_eq!(status, 404);
    for path in [
        "/v1/transit/export/encryption-key/pii",
        "/v1/transit/backup/pii",
    ] {
        let (status, body, _) = auditor.call(&app, "GET", path, None).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["errors"][0].as_str().unwrap().contains("never leave"),
            "{body}"
        );
    }
    // The app has no keys:read.
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    let (status, _, _) = c.call(&app, "LIST", "/v1/transit/keys", None).await;
    assert_eq!(status, 403);
    let (status, _, _) = c
        .call(
            &app,
            "POST",
            "/v1/transit/keys/pii",
            Some(json!({"type": "aes256-gcm96"})),
        )
        .await;
    assert_eq!(status, 204, "creating a key that exists is a no-op");
    let (status, _, _) = c
        .call(&app, "POST", "/v1/transit/keys/pii/trim", None)
        .await;
    assert_eq!(
        status, 400,
        "officers destroy key versions under dual control"
    );

    let (status, body, content_type) = VaultClient::of("app")
        .call(&app, "GET", "/v1/sys/health", None)
        .await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    assert_eq!(
        (body["initialized"].clone(), body["sealed"].clone()),
        (json!(true), json!(false))
    );
    let (status, body, _) = VaultClient::of("app")
        .call(&app, "HEAD", "/v1/sys/health", None)
        .await;
    assert_eq!((status, body), (200, Value::Null));
    let (status, body, _) = c.call(&app, "GET", "/v1/sys/mounts", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["transit/"]["type"], "transit");
}

/// `vaultrs` (crates.io, unmodified), a client written apart from hvac: cert login, then
/// Transit encrypt, decrypt, rewrap and a data key through its own request types.
#[tokio::test]
async fn the_vaultrs_client_logs_in_and_uses_transit() {
    use vaultrs::client::{Client, VaultClient, VaultClientSettingsBuilder};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let app = spawn_vault("vault-vaultrs").await;
    let cert = &pki().clients["app"];
    let identity =
        reqwest::Identity::from_pem(format!("{}{}", cert.cert_pem, cert.key_pem).as_bytes())
            .unwrap();
    let settings = VaultClientSettingsBuilder::default()
        .address(app.url(""))
        .ca_certs(vec![app.dir.join("ca.pem").display().to_string()])
        .identity(Some(identity))
        .token("")
        .build()
        .unwrap();
    let mut client = VaultClient::new(settings).unwrap();
    let auth = vaultrs::auth::cert::login(&client, "cert", "")
        .await
        .unwrap();
    assert!(auth.client_token.starts_with("hvs."));
    client.set_token(&auth.client_token);

    let plaintext = b64("from vaultrs");
    let sealed = vaultrs::transit::data::encrypt(&client, "transit", "pii", &plaintext, None)
        .await
        .unwrap();
    assert!(
        sealed.ciphertext.starts_with("vault:v1:"),
        "{}",
        sealed.ciphertext
    );
    let opened =
        vaultrs::transit::data::decrypt(&client, "transit", "pii", &sealed.ciphertext, None)
            .await
            .unwrap();
    assert_eq!(opened.plaintext, plaintext);
    let rewrapped =
        vaultrs::transit::data::rewrap(&client, "transit", "pii", &sealed.ciphertext, None)
            .await
            .unwrap();
    let again =
        vaultrs::transit::data::decrypt(&client, "transit", "pii", &rewrapped.ciphertext, None)
            .await
            .unwrap();
    assert_eq!(again.plaintext, plaintext);
    let key = vaultrs::transit::generate::data_key(
        &client,
        "transit",
        "pii",
        vaultrs::api::transit::requests::DataKeyType::Plaintext,
        None,
    )
    .await
    .unwrap();
    let key_plain = key.plaintext.unwrap();
    assert_eq!(STANDARD.decode(&key_plain).unwrap().len(), 32);
    let opened = vaultrs::transit::data::decrypt(&client, "transit", "pii", &key.ciphertext, None)
        .await
        .unwrap();
    assert_eq!(opened.plaintext, key_plain);
    // A wrong ciphertext is an API error, as against Vault.
    let err = vaultrs::transit::data::decrypt(
        &client,
        "transit",
        "pii",
        "vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, vaultrs::error::ClientError::APIError { code: 400, .. }),
        "{err:?}"
    );
}

/// Review of issue 16 (finding 1): a `key_version` is looked at only after the permission
/// check, so a caller without the grant learns neither that the keyring exists nor its
/// version, and its refusal is audited; an unknown keyring is a 400, not a 503.
#[tokio::test]
async fn key_version_is_checked_after_the_permission() {
    let app = spawn_vault("vault-version").await;
    let mut t = VaultClient::of("tokenizer");
    t.login(&app).await;
    for v in [99, 1] {
        let body = json!({"plaintext": b64("x"), "key_version": v});
        let (status, body, _) = t
            .call(&app, "POST", "/v1/transit/encrypt/pii", Some(body))
            .await;
        assert_eq!(status, 403, "key_version {v}: {body}");
    }
    let denied = events(&app, "encrypt").await;
    assert_eq!(
        denied.iter().filter(|e| e.1 == "denied").count(),
        2,
        "{denied:?}"
    );
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    let enc = |v: i64| Some(json!({"plaintext": b64("x"), "key_version": v}));
    assert_eq!(
        c.call(&app, "POST", "/v1/transit/encrypt/pii", enc(2))
            .await
            .0,
        400
    );
    assert_eq!(
        c.call(&app, "POST", "/v1/transit/encrypt/pii", enc(1))
            .await
            .0,
        200
    );
    assert_eq!(
        c.call(&app, "POST", "/v1/transit/encrypt/nosuch", enc(1))
            .await
            .0,
        400
    );
}

/// Review of issue 16 (finding 5): live sessions per identity are capped, so a client
/// looping logins cannot grow the session table without bound.
#[tokio::test]
async fn live_sessions_per_identity_are_capped() {
    let app = spawn_with("vault-cap", |s, _| {
        s.vault_api.max_sessions_per_identity = 2
    })
    .await;
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    c.login(&app).await;
    let (status, body, _) = c.call(&app, "POST", "/v1/auth/cert/login", None).await;
    assert_eq!(status, 429, "{body}");
    let (status, _, _) = c
        .call(&app, "POST", "/v1/auth/token/revoke-self", None)
        .await;
    assert_eq!(status, 204);
    c.login(&app).await;
    let logins = events(&app, "auth.login").await;
    assert!(
        logins.contains(&(
            "auth.login".into(),
            "denied".into(),
            Some("session_limit".into())
        )),
        "{logins:?}"
    );
}

/// Review of issue 16 (finding 6): a decrypt batch is charged to the reveal budget as a
/// whole before anything opens, as a detokenize batch is: a batch past the budget reveals
/// nothing and records no reveal.
#[tokio::test]
async fn a_decrypt_batch_past_the_budget_reveals_nothing() {
    let app = spawn_with("vault-budget", |s, _| {
        s.clients.get_mut("app").unwrap().decrypt_per_hour = Some(3);
    })
    .await;
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    let items: Vec<Value> = (0..5)
        .map(|i| json!({"plaintext": b64(&format!("v{i}"))}))
        .collect();
    let (status, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transit/encrypt/pii",
            Some(json!({"batch_input": items})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let cts: Vec<Value> = body["data"]["batch_results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| json!({"ciphertext": r["ciphertext"]}))
        .collect();
    let (status, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transit/decrypt/pii",
            Some(json!({"batch_input": cts})),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    let reveals = events(&app, "decrypt").await;
    assert!(!reveals.iter().any(|e| e.1 == "success"), "{reveals:?}");
    // Within the budget, a batch opens in one go.
    let (status, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transit/decrypt/pii",
            Some(json!({"batch_input": cts[..3]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["batch_results"][2]["plaintext"], b64("v2"));
}

/// Review of issue 16 (finding 9): a request with no token at all is refused and audited
/// like one with a bad token.
#[tokio::test]
async fn a_missing_token_is_audited() {
    let app = spawn_vault("vault-missing").await;
    let (status, _, _) = VaultClient::of("app")
        .call(&app, "GET", "/v1/auth/token/lookup-self", None)
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        events(&app, "auth.refused").await,
        [(
            String::from("auth.refused"),
            String::from("denied"),
            Some(String::from("token_missing"))
        )]
    );
}

/// Sessions live in the database: a token issued by one node works on another, and a
/// revocation on one holds on the other within the cache's second.
#[tokio::test]
async fn every_node_honours_and_revokes_the_same_sessions() {
    let a = spawn_vault("vault-nodes").await;
    let b = a.another_node().await;
    let mut c = VaultClient::of("app");
    c.login(&a).await;
    let (status, body, _) = c.call(&b, "GET", "/v1/auth/token/lookup-self", None).await;
    assert_eq!(status, 200, "a token from node a on node b: {body}");
    let (status, _, _) = c.call(&a, "POST", "/v1/auth/token/revoke-self", None).await;
    assert_eq!(status, 204);
    let (status, _, _) = c.call(&a, "GET", "/v1/auth/token/lookup-self", None).await;
    assert_eq!(status, 403, "revoked on its own node at once");
    tokio::time::sleep(tokenvault::session::CACHE_FOR + std::time::Duration::from_millis(200))
        .await;
    let (status, _, _) = c.call(&b, "GET", "/v1/auth/token/lookup-self", None).await;
    assert_eq!(
        status, 403,
        "revoked on the other node within the cache's second"
    );
}
