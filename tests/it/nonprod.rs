//! Non-production vaults (issue 18, first part): the environment is recorded and a
//! database of the other environment is refused; tokenize accepts only test data where
//! it can be decided; production and staging trust different client CAs; the report
//! says which environment it describes.

use serde_json::json;
use tokenvault::devpki::DevCa;
use tokenvault::nonprod::Environment;
use tokenvault::vault::{OpenError, Vault, now_ms};

use crate::helpers::{self, TestApp};

async fn nonprod_app(tag: &str) -> TestApp {
    helpers::spawn_with(tag, |s, _| s.environment = Environment::Nonproduction).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nonproduction_vault_accepts_only_test_data_and_says_so_in_its_report() {
    let app = nonprod_app("nonprod-values").await;
    for (ty, value) in [
        ("card", "4111111111111111"),
        ("card", "4242 4242 4242 4242"),
        ("ssn", "987-45-4320"),
        ("ssn", "666-01-2345"),
        ("email", "jane@example.com"),
        ("email", "qa@shop.test"),
    ] {
        let (status, body) = app
            .post("app", "/v1/tokenize", json!({"type": ty, "value": value}))
            .await;
        assert_eq!(status, 200, "{ty} {value}: {body}");
    }
    let real_pan = helpers::random_pan();
    for (ty, value) in [
        ("card", real_pan.as_str()),
        ("card", "5454545454545454"),
        ("ssn", "234-56-7891"),
        ("ssn", "912-70-1234"),
        ("text", "refund for 4000 1234 1234 1234"),
        ("email", "jane.doe@gmail.com"),
        ("email", "x@example.com.attacker.io"),
    ] {
        let (status, body) = app
            .post("app", "/v1/tokenize", json!({"type": ty, "value": value}))
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some("real_value_refused")),
            "{ty}: {body}"
        );
        assert!(!body.to_string().contains(value), "echoed: {body}");
    }
    // Not a valid value at all is still `invalid_value`.
    let (status, body) = app
        .post(
            "app",
            "/v1/tokenize",
            json!({"type": "card", "value": "4111111111111112"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_value"))
    );

    let vault = Vault::open(app.settings.clone()).await.unwrap();
    // Every checkpoint signs the environment.
    let signed = vault
        .checkpointer()
        .checkpoint(now_ms())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(signed.environment.as_deref(), Some("nonproduction"));
    let message = tokenvault::audit::checkpoint::message(&signed);
    assert!(
        String::from_utf8(message)
            .unwrap()
            .contains("\nenv=nonproduction\n")
    );
    let report = tokenvault::audit::report::collect(&vault, 0, now_ms() + 1)
        .await
        .unwrap();
    assert_eq!(report.environment, "nonproduction");
    let md =
        tokenvault::audit::report::render(&report, tokenvault::audit::report::Format::Md).unwrap();
    assert!(
        md.contains("NON-PRODUCTION vault: it holds no real data"),
        "{md}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vault_refuses_a_database_of_the_other_environment() {
    let dir = helpers::test_dir("nonprod-mismatch");
    let mut s = helpers::settings(&dir, "nonprod-mismatch");
    Vault::open(s.clone()).await.unwrap().store.close().await;
    s.environment = Environment::Nonproduction;
    let refused = Vault::open(s.clone()).await;
    match refused {
        Err(e @ OpenError::Environment { .. }) => {
            assert!(
                e.to_string().contains("belongs to a production vault"),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }
    // And the reverse: a staging database under a production config.
    let dir = helpers::test_dir("nonprod-mismatch-2");
    let mut s = helpers::settings(&dir, "nonprod-mismatch-2");
    s.environment = Environment::Nonproduction;
    Vault::open(s.clone()).await.unwrap().store.close().await;
    s.environment = Environment::Production;
    assert!(matches!(
        Vault::open(s).await,
        Err(OpenError::Environment { .. })
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn production_and_nonproduction_trust_different_client_cas() {
    let staging_ca = DevCa::new("tokenvault staging CA").unwrap();
    let staging_app = staging_ca.client("app").unwrap();
    let production = helpers::spawn_app("ca-production").await;
    let ca_pem = staging_ca.cert_pem.clone();
    let staging = helpers::spawn_with("ca-staging", move |s, dir| {
        s.environment = Environment::Nonproduction;
        std::fs::write(dir.join("staging-ca.pem"), &ca_pem).unwrap();
        s.server.client_ca = dir.join("staging-ca.pem");
    })
    .await;
    let tokenize = |app: &TestApp, cert: &tokenvault::devpki::Issued| {
        let req = helpers::http_client(Some(cert))
            .post(app.url("/v1/tokenize"))
            .json(&json!({"type": "card", "value": "4111111111111111"}));
        async move { req.send().await.map(|r| r.status().as_u16()) }
    };
    let production_app = &helpers::pki().clients["app"];
    assert_eq!(tokenize(&staging, &staging_app).await.ok(), Some(200));
    assert_eq!(tokenize(&production, production_app).await.ok(), Some(200));
    assert!(
        tokenize(&production, &staging_app).await.is_err(),
        "a staging certificate reached production"
    );
    assert!(
        tokenize(&staging, production_app).await.is_err(),
        "a production certificate reached staging"
    );
}

/// Review of the first part: a database made before environments were recorded (it has
/// an audit trail but no environment) is a production vault's, whichever config opens
/// it first.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_from_before_environments_is_production() {
    let dir = helpers::test_dir("nonprod-upgrade");
    let mut s = helpers::settings(&dir, "nonprod-upgrade");
    let vault = Vault::open(s.clone()).await.unwrap();
    vault.keys.init("test", now_ms()).await.unwrap();
    vault.store.close().await;
    let mut db = helpers::connect(&s).await;
    sqlx::query("DELETE FROM vault_meta")
        .execute(&mut db)
        .await
        .unwrap();
    s.environment = Environment::Nonproduction;
    assert!(matches!(
        Vault::open(s).await,
        Err(OpenError::Environment { .. })
    ));
}

/// Review of the first part: a Transform encode batch answers a refused item in its
/// place, with the other items' tokens, like any other refused value.
#[tokio::test(flavor = "multi_thread")]
async fn a_transform_batch_answers_a_refused_item_in_its_place() {
    let app = helpers::spawn_with("nonprod-transform", |s, _| {
        s.environment = Environment::Nonproduction;
    })
    .await;
    let mut c = helpers::VaultClient::of("app");
    c.login(&app).await;
    let real = helpers::random_pan();
    let batch = json!({"batch_input": [{"value": "4111111111111111"}, {"value": real}]});
    let (status, body, _) = c
        .call(&app, "POST", "/v1/transform/encode/pan", Some(batch))
        .await;
    assert_eq!(status, 400, "{body}");
    let results = &body["data"]["batch_results"];
    assert!(results[0]["encoded_value"].is_string(), "{body}");
    assert!(results[1]["error"].is_string(), "{body}");
    assert!(!body.to_string().contains(&real));
}

/// Review of the first part: the recorded environment is an unsigned row, so a database
/// writer could flip it and open a production database as staging. The HSM holds the
/// environment too (a data object the database cannot touch), and the checkpoints sign
/// it: whatever a database writer does to the row and the checkpoints (flip the row;
/// also clear the newest checkpoint's environment, which the first fix trusted; also
/// delete every checkpoint), a staging config does not open the production vault.
#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_environment_row_is_caught_by_the_signed_checkpoints() {
    let dir = helpers::test_dir("nonprod-flip");
    let mut s = helpers::settings(&dir, "nonprod-flip");
    let vault = Vault::open(s.clone()).await.unwrap();
    vault.keys.init("test", now_ms()).await.unwrap();
    vault.checkpointer().checkpoint(now_ms()).await.unwrap();
    vault.store.close().await;
    let mut db = helpers::connect(&s).await;
    s.environment = Environment::Nonproduction;
    for (what, sql) in [
        (
            "the row flipped",
            "UPDATE vault_meta SET value = 'nonproduction' WHERE key = 'environment'",
        ),
        (
            "the newest checkpoint's environment cleared",
            "UPDATE audit_checkpoints SET environment = NULL",
        ),
        (
            "the checkpoints rewritten",
            "UPDATE audit_checkpoints SET environment = 'nonproduction'",
        ),
        ("the checkpoints deleted", "DELETE FROM audit_checkpoints"),
    ] {
        sqlx::query(sql).execute(&mut db).await.unwrap();
        match Vault::open(s.clone()).await {
            Err(e @ OpenError::Environment { .. }) => {
                assert!(e.to_string().contains("production"), "{what}: {e}")
            }
            Err(e) => panic!("{what}: {e}"),
            Ok(_) => panic!("{what}: a production vault opened as staging"),
        }
    }
    // The production config still opens it.
    s.environment = Environment::Production;
    sqlx::query("UPDATE vault_meta SET value = 'production' WHERE key = 'environment'")
        .execute(&mut db)
        .await
        .unwrap();
    Vault::open(s).await.unwrap().store.close().await;
}

/// The encrypt path (native and Transit) takes bytes whose type it cannot know, but a card
/// number in them can be found: a non-production vault refuses plaintext that holds a
/// card number outside the test prefixes, and encrypts test cards and other text.
#[tokio::test(flavor = "multi_thread")]
async fn a_nonproduction_vault_refuses_to_encrypt_a_real_card_number() {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let app = nonprod_app("nonprod-encrypt").await;
    let real = helpers::random_pan();
    let spaced = format!(
        "{} {} {} {}",
        &real[..4],
        &real[4..8],
        &real[8..12],
        &real[12..]
    );
    for plain in [
        format!("{{\"card\":\"{real}\"}}"),
        format!("paid with {spaced} on Monday"),
    ] {
        let (status, body) = app
            .post(
                "app",
                "/v1/encrypt",
                json!({"keyring": "pii", "plaintext": b64(plain.as_bytes())}),
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some("real_value_refused")),
            "{body}"
        );
        assert!(!body.to_string().contains(&real[4..12]), "{body}");
    }
    // The second review: a number no card begins like (a millisecond timestamp) is not
    // a card number, Luhn or not.
    let stamp = (1_764_955_200_000u64..)
        .map(|n| n.to_string())
        .find(|n| tokenvault::tokenize::format::luhn_valid(n.as_bytes()))
        .unwrap();
    let stamped = format!("{{\"at\":{stamp}}}");
    for plain in [
        "{\"card\":\"4111 1111 1111 1111\"}",
        "order 77 shipped",
        stamped.as_str(),
    ] {
        let (status, body) = app
            .post(
                "app",
                "/v1/encrypt",
                json!({"keyring": "pii", "plaintext": b64(plain.as_bytes())}),
            )
            .await;
        assert_eq!(status, 200, "{plain}: {body}");
    }
    // Transit takes the same path.
    let mut c = helpers::VaultClient::of("app");
    c.login(&app).await;
    let (status, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transit/encrypt/pii",
            Some(json!({ "plaintext": b64(real.as_bytes()) })),
        )
        .await;
    assert!((400..500).contains(&status), "{status} {body}");
    assert!(!body.to_string().contains(&real[4..12]), "{body}");
}

/// The second review: a vault from before the HSM kept the environment, whose row a
/// database writer flipped before its first upgraded open, is anchored by what its
/// newest checkpoint signs, not by the flipped row; deleting the checkpoints afterwards
/// does not open it as staging either.
#[tokio::test(flavor = "multi_thread")]
async fn a_vault_from_before_the_hsm_anchor_is_anchored_by_its_signed_checkpoint() {
    let dir = helpers::test_dir("nonprod-legacy");
    let mut s = helpers::settings(&dir, "nonprod-legacy");
    let vault = Vault::open(s.clone()).await.unwrap();
    vault.keys.init("test", now_ms()).await.unwrap();
    vault.checkpointer().checkpoint(now_ms()).await.unwrap();
    // As made before the anchor existed.
    let anchor = format!("{}.environment", s.hsm.label_prefix);
    assert_eq!(vault.keys.hsm().destroy_objects(&anchor).unwrap(), 1);
    vault.store.close().await;
    let mut db = helpers::connect(&s).await;
    sqlx::query("UPDATE vault_meta SET value = 'nonproduction' WHERE key = 'environment'")
        .execute(&mut db)
        .await
        .unwrap();
    s.environment = Environment::Nonproduction;
    assert!(matches!(
        Vault::open(s.clone()).await,
        Err(OpenError::Environment { .. })
    ));
    sqlx::query("DELETE FROM audit_checkpoints")
        .execute(&mut db)
        .await
        .unwrap();
    assert!(
        matches!(
            Vault::open(s.clone()).await,
            Err(OpenError::Environment { .. })
        ),
        "the flipped row was anchored in the HSM"
    );
    sqlx::query("UPDATE vault_meta SET value = 'production' WHERE key = 'environment'")
        .execute(&mut db)
        .await
        .unwrap();
    s.environment = Environment::Production;
    Vault::open(s).await.unwrap().store.close().await;
}
