//! Issue 18: a non-production vault answers a token it has no record of (a production
//! token copied into staging) with a synthetic value derived from the token, when the
//! type is configured for it: the same token answers the same value, format-valid and
//! never real, marked `synthetic`, audited as `detokenize.synthetic`.

use serde_json::{Value, json};
use tokenvault::nonprod::{Environment, Kind};

use crate::helpers::{self, TestApp};

async fn staging(tag: &str) -> TestApp {
    helpers::spawn_with(tag, |s, _| {
        s.environment = Environment::Nonproduction;
        for (ty, kind) in [
            ("pan", Kind::Pan),
            ("ssn", Kind::Ssn),
            ("email", Kind::Email),
        ] {
            s.types.get_mut(ty).unwrap().synthetic = Some(kind);
        }
        // `tokenizer` may reveal one synthetic type only: its opaque tokens are SSNs.
        s.clients.get_mut("tokenizer").unwrap().permissions = ["tokenize:*", "detokenize:ssn"]
            .iter()
            .map(|p| tokenvault::guard::Grant::parse(p).unwrap())
            .collect();
    })
    .await
}

/// A token as a production vault's `last4` format issues one: 16 digits, failing Luhn.
fn production_digit_token(last4: &str) -> String {
    loop {
        let mut t = helpers::random_pan()[..12].to_owned();
        t.push_str(last4);
        if !tokenvault::tokenize::format::luhn_valid(t.as_bytes()) {
            return t;
        }
    }
}

fn opaque_token() -> String {
    let mut b = [0u8; 18];
    tokenvault::crypto::random_bytes(&mut b);
    format!("tok_{}", hex::encode(b))
}

async fn reveal(app: &TestApp, who: &str, token: &str) -> (u16, Value) {
    app.post(who, "/v1/detokenize", json!({ "token": token }))
        .await
}

fn test_card(v: &str) -> bool {
    tokenvault::nonprod::TestData::default()
        .validate_value(tokenvault::tokenize::Validator::Pan, v, 64)
        .is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_tokens_answer_deterministic_synthetic_values_that_are_never_real() {
    let app = staging("synthetic").await;

    // A production `pan` token: a Luhn-valid test card of its length and last four.
    let t1 = production_digit_token("4242");
    let (status, body) = reveal(&app, "app", &t1).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["synthetic"], true);
    assert_eq!(body["type"], "pan");
    let v1 = body["value"].as_str().unwrap().to_owned();
    assert_eq!(v1.len(), 16);
    assert!(v1.ends_with("4242"), "{v1}");
    assert!(test_card(&v1), "not a Luhn-valid test card: {v1}");
    assert_ne!(v1, t1);
    // Deterministic: the same token again, and through a batch.
    assert_eq!(reveal(&app, "app", &t1).await.1["value"], v1.as_str());
    let t2 = production_digit_token("4242");
    let (status, batch) = app
        .post(
            "app",
            "/v1/detokenize/batch",
            json!({ "tokens": [t1.clone(), t2.clone()] }),
        )
        .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["items"][0]["value"], v1.as_str());
    let v2 = batch["items"][1]["value"].as_str().unwrap();
    assert_ne!(v2, v1, "two tokens, one synthetic value");
    assert!(test_card(v2));

    // An opaque token: `tokenizer` may reveal only `ssn`, so it is an SSN, never issued.
    let opaque = opaque_token();
    let (status, body) = reveal(&app, "tokenizer", &opaque).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["type"].as_str(), body["synthetic"].as_bool()),
        (Some("ssn"), Some(true))
    );
    let ssn = body["value"].as_str().unwrap();
    assert!(
        tokenvault::nonprod::TestData::default()
            .validate_value(tokenvault::tokenize::Validator::Ssn, ssn, 64)
            .is_ok(),
        "an SSN that could be issued: {ssn}"
    );
    // `app` may reveal three synthetic types: an opaque token's type cannot be decided.
    let (status, body) = reveal(&app, "app", &opaque).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    // Through a Transform role the type is the role's.
    let mut c = helpers::VaultClient::of("app");
    c.login(&app).await;
    let (status, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transform/decode/email",
            Some(json!({ "value": opaque })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["synthetic"], true, "{body}");
    let email = body["data"]["decoded_value"].as_str().unwrap();
    assert!(
        tokenvault::nonprod::TestData::default()
            .validate_value(tokenvault::tokenize::Validator::Email, email, 256)
            .is_ok(),
        "{email}"
    );

    // A token the vault holds answers its own value, not a synthetic one.
    let (_, made) = app
        .post(
            "app",
            "/v1/tokenize",
            json!({"type": "pan", "value": "5555555555554444"}),
        )
        .await;
    let (status, body) = reveal(&app, "app", made["token"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(body["value"], "5555555555554444");
    assert!(body.get("synthetic").is_none(), "{body}");

    // A card number where a token belongs is never answered, and nor is a caller with no
    // detokenize permission.
    let (status, _) = reveal(&app, "app", "4000056655665556").await;
    assert_eq!(status, 404);
    let (status, body) = reveal(&app, "auditor", &t1).await;
    assert!(status >= 400 && body.get("value").is_none(), "{body}");

    // Audited as synthetic answers, never as reveals of stored values.
    let synthetic = helpers::count_events(&app.settings, "detokenize.synthetic", "success").await;
    assert_eq!(synthetic, 6, "t1 twice, t1 and t2, the SSN, the e-mail");
    assert_eq!(
        helpers::count_events(&app.settings, "detokenize", "success").await,
        1
    );
}

/// From the review of the synthetic answers: a token the vault holds but the caller may
/// not reveal (another type's) answers exactly as an unknown token does, synthetically,
/// so the answer does not tell whether the vault holds it.
#[tokio::test(flavor = "multi_thread")]
async fn a_held_token_the_caller_may_not_reveal_answers_like_an_unknown_one() {
    let app = staging("synthetic-oracle").await;
    let real_looking = "jane.roe@example.com";
    let (status, made) = app
        .post(
            "tokenizer",
            "/v1/tokenize",
            json!({"type": "email", "value": real_looking}),
        )
        .await;
    assert_eq!(status, 200, "{made}");
    let held = made["token"].as_str().unwrap().to_owned();
    let (held_status, held_body) = reveal(&app, "tokenizer", &held).await;
    let (unknown_status, unknown_body) = reveal(&app, "tokenizer", &opaque_token()).await;
    let shape = |b: &Value| {
        (
            b["type"].clone(),
            b["synthetic"].clone(),
            b["error"].clone(),
        )
    };
    assert_eq!(
        (held_status, shape(&held_body)),
        (unknown_status, shape(&unknown_body)),
        "held: {held_body}; unknown: {unknown_body}"
    );
    assert_eq!(held_status, 200);
    assert!(!held_body.to_string().contains(real_looking), "{held_body}");
    // Its holder's reveal is unchanged: the value, not a synthetic one.
    let (status, body) = reveal(&app, "app", &held).await;
    assert_eq!((status, body["value"].as_str()), (200, Some(real_looking)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_production_vault_never_answers_synthetic_values() {
    let app = helpers::spawn_app("synthetic-production").await;
    let (status, body) = reveal(&app, "app", &production_digit_token("1111")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let config = |env: &str, validator: &str| {
        format!(
            "environment = \"{env}\"\n[types.pan]\nvalidator = \"{validator}\"\nkeyring = \"pan\"\n\
             synthetic = \"pan\"\n"
        )
    };
    let err = tokenvault::config::Settings::from_toml(&config("production", "pan"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("non-production vaults only"), "{err}");
    let err = tokenvault::config::Settings::from_toml(&config("nonproduction", "none"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not fit its validator"), "{err}");
    assert!(tokenvault::config::Settings::from_toml(&config("nonproduction", "pan")).is_ok());
}
