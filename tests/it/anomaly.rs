//! Detokenize anomaly scoring (issue 17): a replay of normal traffic is not stepped up, an
//! exfiltration from one of the same services is, and nothing is revealed after it; a
//! held reveal answers `approval_required` over HTTPS and reveals nothing; the masked
//! answer needs only `read:`; baselines and suspensions survive a restart.

use serde_json::json;
use tokenvault::error::Error;
use tokenvault::guard::{ClientPolicy, Grant};
use tokenvault::tokenize::{RawValue, TokenizeInput};
use tokenvault::vault::{Services, Vault, now_ms};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

fn client(perms: &[&str], anomaly: Option<serde_json::Value>) -> ClientPolicy {
    ClientPolicy {
        permissions: perms.iter().map(|p| Grant::parse(p).unwrap()).collect(),
        anomaly,
        ..ClientPolicy::default()
    }
}

fn card(value: String) -> TokenizeInput {
    TokenizeInput {
        token_type: "card".into(),
        value: RawValue(zeroize::Zeroizing::new(value)),
        format: None,
        metadata: None,
        ttl_seconds: None,
        given_token: None,
    }
}

/// xorshift64*: a reproducible replay without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

async fn open(
    tag: &str,
    clients: &[(&str, ClientPolicy)],
) -> (std::path::PathBuf, Vault, Services) {
    let dir = crate::helpers::test_dir(tag);
    let mut settings = crate::helpers::api_settings(&dir, tag);
    for (id, c) in clients {
        settings.clients.insert((*id).into(), c.clone());
    }
    let vault = Vault::open(settings).await.unwrap();
    vault.keys.init("test", now_ms()).await.unwrap();
    let services = vault.services();
    (dir, vault, services)
}

/// Tokenizes `n` cards, one millisecond apart from `at`, in creation order.
async fn stored_cards(services: &Services, n: usize, at: i64) -> Vec<String> {
    let app = services.guard.principal("app", "127.0.0.1");
    let mut tokens = Vec::with_capacity(n);
    for i in 0..n {
        let t = services
            .tokens
            .tokenize(&app, card(crate::helpers::random_pan()), at + i as i64)
            .await
            .unwrap();
        tokens.push(t.token);
    }
    tokens
}

async fn count_events(vault: &Vault, action: &str, outcome: &str) -> i64 {
    crate::helpers::count_events(&vault.settings, action, outcome).await
}

/// One request of the replay.
enum Ask {
    One(String),
    Batch(Vec<String>),
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_week_is_not_stepped_up_and_an_exfiltration_is_within_its_first_reveals() {
    let reveal = &["detokenize:card"];
    let (_dir, vault, services) = open(
        "anomaly-replay",
        &[
            ("refunds", client(reveal, None)),
            ("settlement", client(reveal, None)),
            ("support", client(reveal, None)),
        ],
    )
    .await;
    // Eight days ago at midnight: a week to learn, then the day of the attack.
    let base = (now_ms() / DAY - 9) * DAY;
    let tokens = stored_cards(&services, 1200, base - DAY).await;
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let (mut requests, mut step_ups, mut cursor) = (0u64, 0u64, 0usize);
    for day in 0..8 {
        let d = base + day * DAY;
        let mut plan: Vec<(i64, &str, &str, Ask)> = Vec::new();
        // The nightly settlement at 02:00: three batches of 100, in creation order.
        for b in 0..3 {
            let batch = (0..100)
                .map(|i| tokens[(cursor + b * 100 + i) % tokens.len()].clone())
                .collect();
            plan.push((
                d + 2 * HOUR + b as i64 * 10_000,
                "settlement",
                "10.0.2.7",
                Ask::Batch(batch),
            ));
        }
        cursor += 300;
        // Refunds, 08:00 to 20:00, about one every four minutes, any stored card.
        let mut t = d + 8 * HOUR;
        while t < d + 20 * HOUR - 5 * MINUTE {
            let token = tokens[rng.below(tokens.len() as u64) as usize].clone();
            plan.push((t, "refunds", "10.0.1.5", Ask::One(token)));
            t += 2 * MINUTE + rng.below(4 * MINUTE as u64) as i64;
        }
        // The support tool, office hours: the same few customers again and again, and a
        // mistyped token now and then.
        for _ in 0..40 {
            let at = d + 9 * HOUR + rng.below(8 * HOUR as u64) as i64;
            let token = match rng.below(20) {
                0 => format!("tok_mistyped{:012x}", rng.below(1 << 40)),
                1..=8 => tokens[rng.below(25) as usize].clone(),
                _ => tokens[rng.below(tokens.len() as u64) as usize].clone(),
            };
            plan.push((at, "support", "10.0.3.9", Ask::One(token)));
        }
        plan.sort_by_key(|(at, ..)| *at);
        for (at, who, origin, ask) in plan {
            let p = services.guard.principal(who, origin);
            requests += 1;
            let outcome = match ask {
                Ask::One(t) => services.tokens.detokenize(&p, &t, None, at).await.map(drop),
                Ask::Batch(ts) => services
                    .tokens
                    .detokenize_batch(&p, &ts, None, at)
                    .await
                    .map(drop),
            };
            match outcome {
                Ok(()) | Err(Error::NotFound) => {}
                Err(Error::ApprovalRequired { reasons, .. }) => {
                    step_ups += 1;
                    eprintln!("false positive: {who} on day {day}: {reasons:?}");
                }
                Err(e) => panic!("{who} on day {day}: {e:?}"),
            }
        }
    }
    let alerts = count_events(&vault, "detokenize.anomaly", "success").await;
    eprintln!("replay: {requests} requests, {step_ups} step-ups, {alerts} alerts");
    assert_eq!(step_ups, 0, "normal traffic is never held");

    // Day eight, 03:00: the refunds certificate, from an address it never used, walks the
    // stored cards in creation order, two a second.
    let thief = services.guard.principal("refunds", "203.0.113.9");
    let attack = base + 8 * DAY + 3 * HOUR;
    let (mut revealed, mut held_at) = (0usize, None);
    for (i, t) in tokens.iter().enumerate().take(120) {
        match services
            .tokens
            .detokenize(&thief, t, None, attack + i as i64 * 500)
            .await
        {
            Ok(_) => {
                assert!(held_at.is_none(), "a value revealed after the step-up");
                revealed += 1;
            }
            Err(Error::ApprovalRequired {
                request_id,
                reasons,
            }) => {
                assert!(request_id.starts_with("su_"), "{request_id}");
                assert!(reasons.contains(&"sequential_scan"), "{reasons:?}");
                held_at.get_or_insert(i);
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    let n = held_at.expect("the exfiltration is stepped up");
    eprintln!("exfiltration stepped up after {revealed} reveals");
    assert_eq!(n, revealed);
    assert!(n <= 30, "stepped up only after {n} reveals");
    assert!(
        count_events(&vault, "detokenize.anomaly", "denied").await >= 120 - n as i64,
        "every held attempt is audited"
    );
    let alerted = count_events(&vault, "detokenize.anomaly", "success").await - alerts;
    assert_eq!(alerted, n as i64, "the reveals before the step-up alerted");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_reveal_answers_approval_required_and_the_masked_answer_needs_only_read() {
    let app = crate::helpers::spawn_with("anomaly-held", |s, _| {
        s.clients.get_mut("app").unwrap().anomaly = Some(json!({"cold_start": "step_up"}));
        s.clients.insert(
            "tokenizer".into(),
            client(&["tokenize:*", "read:card"], None),
        );
    })
    .await;
    let pan = crate::helpers::random_pan();
    let token = app.tokenize("card", &pan).await;

    let (status, body) = app
        .post("app", "/v1/detokenize", json!({"token": token}))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "approval_required");
    assert_eq!(body["error"]["reasons"], json!(["cold_start"]));
    let id = body["error"]["request_id"].as_str().unwrap().to_owned();
    assert!(!body.to_string().contains(&pan), "nothing revealed");
    let (status, body) = app
        .post("app", "/v1/detokenize/batch", json!({"tokens": [token]}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("approval_required"))
    );

    let mut db = app.db().await;
    let (identity, held, state): (String, String, String) =
        sqlx::query_as("SELECT identity, tokens, state FROM step_ups WHERE id = $1")
            .bind(&id)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!((identity.as_str(), state.as_str()), ("app", "pending"));
    assert_eq!(held, json!([token]).to_string());
    let audited: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_events WHERE action = 'detokenize.anomaly' \
         AND outcome = 'denied' AND resource = $1 AND reason LIKE 'step_up score=50 %'",
    )
    .bind(&id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(audited, 1);
    let revealed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_events WHERE action = 'detokenize' AND outcome = 'success'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(revealed, 0);

    // Masked: no value, no score, no budget; `read:card` is enough.
    let last4 = &pan[pan.len() - 4..];
    for who in ["app", "tokenizer"] {
        let (status, body) = app
            .post(
                who,
                "/v1/detokenize",
                json!({"token": token, "masked": true}),
            )
            .await;
        assert_eq!(status, 200, "{who}: {body}");
        assert!(body.get("value").is_none(), "{body}");
        assert!(body["masked"].as_str().unwrap().ends_with(last4), "{body}");
        let (status, body) = app
            .post(
                who,
                "/v1/detokenize/batch",
                json!({"tokens": [token, "tok_unknown0000000000"], "masked": true}),
            )
            .await;
        assert_eq!(status, 200, "{who}: {body}");
        assert!(
            body["items"][0]["masked"]
                .as_str()
                .unwrap()
                .ends_with(last4)
        );
        assert_eq!(body["items"][1]["error"]["code"], "not_found");
        assert!(!body.to_string().contains(&pan));
    }
    let (status, _) = app
        .post("tokenizer", "/v1/detokenize", json!({"token": token}))
        .await;
    assert_eq!(status, 404, "a full reveal still needs detokenize:");
}

#[tokio::test(flavor = "multi_thread")]
async fn baselines_and_suspensions_survive_a_restart_and_are_shared_by_nodes() {
    let reveal = &["detokenize:card", "tokenize:card"];
    let strict = json!({"cold_start": "step_up", "step_up_at": 40, "block_at": 50});
    let (_dir, vault, services) = open(
        "anomaly-restart",
        &[
            ("refunds", client(reveal, None)),
            ("mallory", client(reveal, Some(strict))),
        ],
    )
    .await;
    // A second node over the same database, which has read the baseline before the
    // first one learned anything.
    let peer = Vault::open((*vault.settings).clone())
        .await
        .unwrap()
        .services();
    let cold = peer.guard.anomaly().baseline("refunds").await.unwrap();
    assert_eq!(cold.learned, 0);
    let tokens = stored_cards(&services, 5, now_ms()).await;
    let refunds = services.guard.principal("refunds", "10.0.1.5");
    for t in &tokens {
        services
            .tokens
            .detokenize(&refunds, t, None, now_ms())
            .await
            .unwrap();
    }
    let mallory = services.guard.principal("mallory", "10.0.9.9");
    let blocked = services
        .tokens
        .detokenize(&mallory, &tokens[0], None, now_ms())
        .await;
    assert!(matches!(blocked, Err(Error::Suspended)), "{blocked:?}");
    let after = services
        .tokens
        .tokenize(&mallory, card(crate::helpers::random_pan()), now_ms())
        .await;
    assert!(
        matches!(after, Err(Error::Suspended)),
        "a suspension stops every action: {after:?}"
    );
    services.guard.anomaly().flush(now_ms()).await.unwrap();
    let learned = services.guard.anomaly().baseline("refunds").await.unwrap();
    assert_eq!(learned.learned, 5);
    // The peer sees it after its own flush (every `flush_secs` in a server).
    peer.guard.anomaly().flush(now_ms()).await.unwrap();
    let shared = peer.guard.anomaly().baseline("refunds").await.unwrap();
    assert_eq!(shared.learned, 5, "two nodes see the same baseline");

    // Another process over the same database (a restart, or a second node).
    let again = Vault::open((*vault.settings).clone())
        .await
        .unwrap()
        .services();
    let kept = again.guard.anomaly().baseline("refunds").await.unwrap();
    assert_eq!(kept.learned, 5);
    assert_eq!(
        serde_json::to_string(&kept).unwrap(),
        serde_json::to_string(&learned).unwrap()
    );
    let mallory = again.guard.principal("mallory", "10.0.9.9");
    let still = again
        .tokens
        .detokenize(&mallory, &tokens[0], None, now_ms())
        .await;
    assert!(matches!(still, Err(Error::Suspended)), "{still:?}");
    assert_eq!(count_events(&vault, "identity.suspend", "success").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clean_stop_writes_what_the_baselines_learned() {
    let app = crate::helpers::spawn_with("anomaly-stop", |s, _| {
        s.anomaly.flush_secs = 3_600;
    })
    .await;
    for _ in 0..3 {
        let token = app.tokenize("card", &crate::helpers::random_pan()).await;
        let (status, body) = app
            .post("app", "/v1/detokenize", json!({"token": token}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let settings = app.settings.clone();
    drop(app);
    let vault = Vault::open(settings).await.unwrap();
    let mut learned = None;
    for _ in 0..50 {
        if let Some(state) = vault.store.baseline("app").await.unwrap() {
            let state: serde_json::Value = serde_json::from_str(&state).unwrap();
            learned = state["learned"].as_u64();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        learned,
        Some(3),
        "written at the stop, not at the next flush"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_requests_that_score_nothing_teach_the_baseline() {
    let (_dir, _vault, services) = open(
        "anomaly-learning",
        &[("refunds", client(&["detokenize:card"], None))],
    )
    .await;
    let base = (now_ms() / DAY - 3) * DAY;
    let tokens = stored_cards(&services, 240, base - DAY).await;
    let usual = services.guard.principal("refunds", "10.0.1.5");
    // Two days of reveals from the usual address, office hours: warm.
    for (i, t) in tokens.iter().enumerate() {
        let at = base + (i as i64 % 2) * DAY + 9 * HOUR + (i as i64 / 2) * 3 * MINUTE;
        services
            .tokens
            .detokenize(&usual, t, None, at)
            .await
            .unwrap();
    }
    let profile = || async {
        services
            .guard
            .anomaly()
            .baseline("refunds")
            .await
            .unwrap()
            .profile()
    };
    assert_eq!(profile().await.origins, 1);
    // Day three, 10:00, from a new address: an empty batch, then a reveal that scores
    // only new_origin (15, below the alert threshold): allowed, but neither teaches the
    // baseline that address.
    let stranger = services.guard.principal("refunds", "10.9.9.9");
    let at = base + 2 * DAY + 10 * HOUR;
    let none = services
        .tokens
        .detokenize_batch(&stranger, &[], None, at)
        .await
        .unwrap();
    assert!(none.is_empty());
    services
        .tokens
        .detokenize(&stranger, &tokens[0], None, at + MINUTE)
        .await
        .unwrap();
    assert_eq!(
        profile().await.origins,
        1,
        "the new address was not learned"
    );
}
