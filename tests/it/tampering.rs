//! Whoever can write the database cannot change what a stored record is: its type, expiry
//! and metadata are bound to its ciphertext (AAD), and a deterministic lookup is confirmed
//! by opening the record it found before its token is handed out.

use serde_json::json;

use crate::helpers::{TestApp, spawn_app};

async fn exec(app: &TestApp, sql: &str, token: &str) {
    let mut db = app.db().await;
    sqlx::query(sql).bind(token).execute(&mut db).await.unwrap();
}

async fn detokenize(app: &TestApp, token: &str) -> (u16, serde_json::Value) {
    app.post("app", "/v1/detokenize", json!({"token": token}))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn row_fields_that_gate_access_cannot_be_changed_in_the_database() {
    let app = spawn_app("row-fields").await;

    // The type decides who may read a record: relabelling a PAN as free text fails.
    let pan = app.tokenize("pan", "4111111111111111").await;
    exec(
        &app,
        "UPDATE tokens SET token_type = 'text' WHERE token = $1",
        &pan,
    )
    .await;
    let (status, body) = detokenize(&app, &pan).await;
    assert_eq!(status, 500, "a relabelled PAN opened as text: {body}");
    assert_eq!(body["error"]["code"], "integrity_error");
    assert!(body.get("value").is_none());
    exec(
        &app,
        "UPDATE tokens SET token_type = 'pan' WHERE token = $1",
        &pan,
    )
    .await;
    assert_eq!(detokenize(&app, &pan).await.0, 200);

    // The expiry cannot be extended.
    let (status, t) = app
        .post(
            "app",
            "/v1/tokenize",
            json!({"type": "card", "value": "5555555555554444", "ttl_seconds": 3600}),
        )
        .await;
    assert_eq!(status, 200);
    let short = t["token"].as_str().unwrap().to_owned();
    exec(
        &app,
        "UPDATE tokens SET expires_at = expires_at + 315360000000 WHERE token = $1",
        &short,
    )
    .await;
    assert_eq!(
        detokenize(&app, &short).await.0,
        500,
        "an extended expiry went unnoticed"
    );

    // Metadata cannot be swapped.
    let (status, t) = app
        .post(
            "app",
            "/v1/tokenize",
            json!({"type": "card", "value": "378282246310005", "metadata": {"order": 1}}),
        )
        .await;
    assert_eq!(status, 200);
    let with_meta = t["token"].as_str().unwrap().to_owned();
    exec(
        &app,
        "UPDATE tokens SET metadata = '{\"order\":2}' WHERE token = $1",
        &with_meta,
    )
    .await;
    assert_eq!(
        detokenize(&app, &with_meta).await.0,
        500,
        "swapped metadata went unnoticed"
    );

    // A fingerprint moved onto another card's row never hands out that card's token.
    let a = app.tokenize("pan", "6011000990139424").await;
    let b = app.tokenize("pan", "4000056655665556").await;
    let mut db = app.db().await;
    let fp: Vec<u8> = sqlx::query_scalar("SELECT fingerprint FROM tokens WHERE token = $1")
        .bind(&a)
        .fetch_one(&mut db)
        .await
        .unwrap();
    exec(
        &app,
        "UPDATE tokens SET fingerprint = NULL WHERE token = $1",
        &a,
    )
    .await;
    sqlx::query("UPDATE tokens SET fingerprint = $1 WHERE token = $2")
        .bind(fp)
        .bind(&b)
        .execute(&mut db)
        .await
        .unwrap();
    let (status, body) = app
        .post(
            "app",
            "/v1/tokenize",
            json!({"type": "pan", "value": "6011000990139424"}),
        )
        .await;
    assert_ne!(body["token"], b.as_str(), "another card's token came back");
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "integrity_error");
}

#[tokio::test(flavor = "multi_thread")]
async fn records_sealed_before_the_binding_still_open_and_rewrap_upgrades_them() {
    use tokenvault::audit::writer::{TokenInsert, Write};
    use tokenvault::audit::{Action, AuditEvent, Outcome};
    use tokenvault::crypto::Aad;
    use tokenvault::tokenize::RewrapOptions;
    use tokenvault::vault::{Vault, now_ms};

    let app = spawn_app("aad-upgrade").await;
    let vault = Vault::open(app.settings.clone()).await.unwrap();
    let services = vault.services();
    let now = now_ms();
    // A record as the vault sealed it before AAD version 2: bound to token, keyring and
    // key version only.
    let (version, key) = vault.keys.seal_key("pan", 1, now).await.unwrap();
    let token = "tok_legacy-record-0001".to_owned();
    let row = TokenInsert {
        token: token.clone(),
        token_type: "card".into(),
        keyring: "pan".into(),
        key_version: i64::from(version.get()),
        ciphertext: key.seal(
            &Aad::token("pan", version.get(), &token),
            b"5555555555554444",
        ),
        fingerprint: None,
        fingerprint_version: None,
        masked: "************4444".into(),
        metadata: None,
        created_at: now,
        expires_at: None,
        aad_version: 1,
        fingerprint_namespace: None,
    };
    let event = AuditEvent::new("test", Action::Tokenize, Outcome::Success);
    services
        .writer
        .submit(Write::InsertToken {
            row: Box::new(row),
            event,
        })
        .await
        .unwrap();
    let (status, body) = detokenize(&app, &token).await;
    assert_eq!(status, 200, "{body}");

    let report = services
        .tokens
        .rewrap(
            "pan",
            RewrapOptions {
                batch: 10,
                rate: None,
            },
            "test",
            now_ms,
            |_, _| {},
        )
        .await
        .unwrap();
    assert!(report.done >= 1 && report.failed == 0, "{report:?}");
    let mut db = app.db().await;
    let aad: i64 = sqlx::query_scalar("SELECT aad_version FROM tokens WHERE token = $1")
        .bind(&token)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(aad, 2, "the sweep upgraded the record");
    assert_eq!(detokenize(&app, &token).await.0, 200);
    exec(
        &app,
        "UPDATE tokens SET token_type = 'text' WHERE token = $1",
        &token,
    )
    .await;
    assert_eq!(
        detokenize(&app, &token).await.0,
        500,
        "the type is bound now"
    );
}
