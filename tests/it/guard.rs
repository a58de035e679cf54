//! The guard sits in front of the services, not in the HTTP layer: a caller that reaches
//! the services another way (here in process, as a future surface would) meets the same
//! permissions, the same reveal budget and the same audit events.

use tokenvault::audit::Action;
use tokenvault::error::Error;
use tokenvault::tokenize::{RawValue, TokenizeInput};
use tokenvault::vault::{Vault, now_ms};

fn card(value: &str) -> TokenizeInput {
    TokenizeInput {
        token_type: "card".into(),
        value: RawValue(zeroize::Zeroizing::new(value.into())),
        format: None,
        metadata: None,
        ttl_seconds: None,
        given_token: None,
    }
}

async fn count(vault: &Vault, action: Action, outcome: &str, reason: &str) -> i64 {
    let mut db = crate::helpers::connect(&vault.settings).await;
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_events WHERE action = $1 AND outcome = $2 AND reason = $3",
    )
    .bind(action.as_str())
    .bind(outcome)
    .bind(reason)
    .fetch_one(&mut db)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reveal_budget_and_permissions_bind_every_caller_of_the_services() {
    let dir = crate::helpers::test_dir("guard");
    let mut settings = crate::helpers::api_settings(&dir, "guard");
    settings.clients.get_mut("app").unwrap().detokenize_per_hour = Some(2);
    let vault = Vault::open(settings).await.unwrap();
    vault.keys.init("test", now_ms()).await.unwrap();
    let services = vault.services();
    let (guard, tokens) = (&services.guard, &services.tokens);
    let app = guard.principal("app", "127.0.0.1");
    let now = now_ms();

    let t = tokens
        .tokenize(&app, card("4111111111111111"), now)
        .await
        .unwrap();
    for _ in 0..2 {
        let d = tokens.detokenize(&app, &t.token, None, now).await.unwrap();
        assert_eq!(d.value.as_str(), "4111111111111111");
    }
    let spent = tokens.detokenize(&app, &t.token, None, now).await;
    assert!(matches!(spent, Err(Error::RateLimited { .. })), "{spent:?}");
    let batch = tokens
        .detokenize_batch(&app, std::slice::from_ref(&t.token), None, now)
        .await;
    assert!(
        matches!(batch, Err(Error::RateLimited { .. })),
        "batches draw on the same budget"
    );
    assert_eq!(
        count(
            &vault,
            Action::Detokenize,
            "denied",
            "detokenize_budget_exhausted"
        )
        .await,
        2
    );

    // A client without the permission, and an identity the config does not know.
    let tokenizer = guard.principal("tokenizer", "127.0.0.1");
    let hidden = tokens.detokenize(&tokenizer, &t.token, None, now).await;
    assert!(matches!(hidden, Err(Error::NotFound)), "{hidden:?}");
    let nobody = guard.principal("nobody", "127.0.0.1");
    let refused = tokens
        .tokenize(&nobody, card("5555555555554444"), now)
        .await;
    assert!(matches!(refused, Err(Error::Forbidden(_))), "{refused:?}");
    let refused = services
        .crypto
        .encrypt(&tokenizer, "pii", b"x", b"", now)
        .await;
    assert!(matches!(refused, Err(Error::Forbidden(_))), "{refused:?}");
    // Each refusal is audited exactly once.
    assert_eq!(
        count(&vault, Action::Detokenize, "denied", "forbidden").await,
        1
    );
    assert_eq!(
        count(&vault, Action::Tokenize, "denied", "forbidden").await,
        1
    );
    assert_eq!(
        count(&vault, Action::Encrypt, "denied", "forbidden").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_action_that_reveals_cleartext_has_a_budget() {
    let dir = crate::helpers::test_dir("decrypt-budget");
    let mut settings = crate::helpers::api_settings(&dir, "decrypt-budget");
    settings.clients.get_mut("app").unwrap().decrypt_per_hour = Some(2);
    let vault = Vault::open(settings).await.unwrap();
    vault.keys.init("test", now_ms()).await.unwrap();
    let services = vault.services();
    let app = services.guard.principal("app", "127.0.0.1");
    let now = now_ms();
    let ct = services
        .crypto
        .encrypt(&app, "pii", b"secret", b"", now)
        .await
        .unwrap();
    for _ in 0..2 {
        services.crypto.decrypt(&app, &ct, b"", now).await.unwrap();
    }
    let spent = services.crypto.decrypt(&app, &ct, b"", now).await;
    assert!(matches!(spent, Err(Error::RateLimited { .. })), "{spent:?}");
    assert_eq!(
        count(
            &vault,
            Action::Decrypt,
            "denied",
            "decrypt_budget_exhausted"
        )
        .await,
        1
    );
    // Every revealing action has its arm in `Guard::charge`: a new one fails here until
    // it gets a budget too.
    assert!(Action::revealing().all(|a| matches!(a, Action::Detokenize | Action::Decrypt)));
}
