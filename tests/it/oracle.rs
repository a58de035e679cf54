//! Tokenize must not be an oracle: a client that may only tokenize learns nothing about
//! values it did not tokenize itself, cannot test card candidates at scale, and gets no
//! fingerprint unless it was granted one.

use serde_json::json;
use tokenvault::vault::now_ms;

use crate::helpers::{spawn_app, spawn_with};

#[tokio::test(flavor = "multi_thread")]
async fn a_tokenize_only_client_learns_nothing_about_values_it_did_not_tokenize() {
    let app = spawn_app("oracle").await;
    let pan = "4111111111111111";
    // `app` tokenized this card long ago, with a long life.
    let (status, theirs) = app
        .post(
            "app",
            "/v1/tokenize",
            json!({"type": "pan", "value": pan, "ttl_seconds": 86_400}),
        )
        .await;
    assert_eq!(status, 200);
    // A tokenize-only client sends the same card, and a card nobody sent, each with a
    // short life: the two answers have the same shape.
    let mut answers = Vec::new();
    for value in [pan, "5105105105105100"] {
        let (status, mine) = app
            .post(
                "tokenizer",
                "/v1/tokenize",
                json!({"type": "pan", "value": value, "ttl_seconds": 60}),
            )
            .await;
        assert_eq!(status, 200, "{mine}");
        assert!(
            mine.get("fingerprint").is_none(),
            "no fingerprint without permission: {mine}"
        );
        let expires = mine["expires_at"].as_str().expect("the requested expiry");
        answers.push((
            mine["token"].as_str().unwrap().to_owned(),
            expires.to_owned(),
        ));
    }
    assert_ne!(
        answers[0].0,
        theirs["token"].as_str().unwrap(),
        "another client's token for the same card came back"
    );
    assert_ne!(answers[0].1, theirs["expires_at"].as_str().unwrap());
    // Its own tokens stay deterministic for itself.
    let (_, again) = app
        .post(
            "tokenizer",
            "/v1/tokenize",
            json!({"type": "pan", "value": pan}),
        )
        .await;
    assert_eq!(again["token"], answers[0].0.as_str());
    // A client granted `fingerprint:pan` gets one.
    assert!(
        theirs["fingerprint"]
            .as_str()
            .is_some_and(|f| !f.is_empty())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn guessing_card_candidates_is_refused_early_and_alerted() {
    let app = spawn_with("guessing", |s, _| {
        s.limits.new_values_per_hour = 20;
        s.clients
            .get_mut("app")
            .unwrap()
            .permissions
            .push(tokenvault::guard::Grant::parse("import:pan").unwrap());
    })
    .await;
    let known = app.tokenize("pan", "4111111111111111").await;
    let mut refused = 0;
    let started = now_ms();
    // Luhn-valid candidates sharing a BIN and last four.
    let candidates = (0..1000u64)
        .map(|i| format!("411111{:06}1111", i))
        .filter(|c| tokenvault::cardscan::luhn_valid(c.as_bytes()))
        .take(40)
        .collect::<Vec<_>>();
    assert_eq!(candidates.len(), 40);
    for c in &candidates {
        let (status, body) = app
            .post(
                "tokenizer",
                "/v1/tokenize",
                json!({"type": "pan", "value": c}),
            )
            .await;
        match status {
            200 => {}
            429 => {
                assert_eq!(body["error"]["code"], "rate_limited");
                refused += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(refused, 20, "after 20 new values every guess is refused");
    // Once spent, values it already tokenized are refused too: a 200 for a hit among 429s
    // for misses would point at the right guess.
    let (status, _) = app
        .post(
            "tokenizer",
            "/v1/tokenize",
            json!({"type": "pan", "value": candidates[0]}),
        )
        .await;
    assert_eq!(status, 429);
    // A migration with the import permission is not held back.
    for c in &candidates {
        let (status, _) = app
            .post("app", "/v1/tokenize", json!({"type": "pan", "value": c}))
            .await;
        assert_eq!(status, 200);
    }
    assert_eq!(app.tokenize("pan", "4111111111111111").await, known);
    let mut db = app.db().await;
    let alerts: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_events WHERE actor = 'tokenizer' AND action = 'tokenize' \
         AND outcome = 'denied' AND reason = 'new_value_budget_exhausted' AND at >= $1",
    )
    .bind(started)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(alerts, 21);
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_configured_into_one_namespace_share_deterministic_tokens() {
    let app = spawn_with("namespace", |s, _| {
        s.clients.get_mut("tokenizer").unwrap().namespace = Some("app".into());
    })
    .await;
    let (_, theirs) = app
        .post(
            "app",
            "/v1/tokenize",
            json!({"type": "pan", "value": "4111111111111111", "ttl_seconds": 86_400}),
        )
        .await;
    let (status, mine) = app
        .post(
            "tokenizer",
            "/v1/tokenize",
            json!({"type": "pan", "value": "4111111111111111"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(mine["token"], theirs["token"]);
    assert!(
        mine.get("expires_at").is_none(),
        "another client's expiry is never shown: {mine}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_guesses_cannot_slip_past_the_budget_to_a_free_hit() {
    let app = spawn_with("guess-race", |s, _| s.limits.new_values_per_hour = 5).await;
    let target = "4111111111111111";
    let (status, _) = app
        .post(
            "tokenizer",
            "/v1/tokenize",
            json!({"type": "pan", "value": target}),
        )
        .await;
    assert_eq!(status, 200);
    // Four units left. One batch runs its items at once: the known value among 40 fresh
    // guesses. Every item needs a unit before its lookup, so at most four answer.
    let mut items: Vec<_> = (0..2000u64)
        .map(|i| format!("400000{:06}0002", i))
        .filter(|c| tokenvault::cardscan::luhn_valid(c.as_bytes()))
        .take(40)
        .map(|c| json!({"type": "pan", "value": c}))
        .collect();
    items.insert(17, json!({"type": "pan", "value": target}));
    let (status, body) = app
        .post("tokenizer", "/v1/tokenize/batch", json!({"items": items}))
        .await;
    assert_eq!(status, 200, "{body}");
    let answered = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i.get("token").is_some())
        .count();
    assert_eq!(
        answered, 4,
        "only the units left answer, the known value included: {body}"
    );
}
