//! Step-up approvals (issue 17): officers approve a held reveal with their registered
//! keys (two distinct officers), the client retries with `Tokenvault-Approval` and gets
//! exactly the approved scope, once, within the window; denials and reinstatements; what
//! officers may not do (sign twice, sign with an unregistered key, sign after expiry,
//! reuse an executed request).

use serde_json::json;
use tokenvault::anomaly::approvals::RevealScope;
use tokenvault::audit::report;
use tokenvault::guard::Grant;
use tokenvault::officers::{self, OfficerError, Operation};
use tokenvault::vault::{Vault, now_ms};

use crate::helpers::{TestApp, load_officer, sign_request};

const APPROVAL: &str = "Tokenvault-Approval";

/// Holds a reveal of `tokens` by `who`; the held request id.
async fn held(app: &TestApp, who: &str, tokens: &[&str]) -> String {
    let (status, body) = app
        .post(who, "/v1/detokenize/batch", json!({ "tokens": tokens }))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "approval_required", "{body}");
    body["error"]["request_id"].as_str().unwrap().to_owned()
}

async fn retry(app: &TestApp, who: &str, id: &str, tokens: &[&str]) -> (u16, serde_json::Value) {
    app.post_with(
        who,
        "/v1/detokenize/batch",
        &[(APPROVAL, id)],
        json!({ "tokens": tokens }),
    )
    .await
}

fn approve(id: &str, scope: RevealScope, secs: u32) -> Operation {
    Operation::ApproveReveal {
        held: id.into(),
        identity: "app".into(),
        scope,
        valid_for_secs: secs,
    }
}

/// Signs `op` by `signers` and carries it out; the line it printed.
async fn decide(vault: &Vault, op: Operation, signers: &[&str]) -> String {
    let (doc, actor) = sign_request(&vault.store, op, signers)
        .await
        .expect("enough officers signed");
    match officers::execute(&vault.store, &vault.keys, &doc, &actor, now_ms())
        .await
        .unwrap()
    {
        officers::Executed::Done(line) => line,
        other => panic!("{other:?}"),
    }
}

async fn count(app: &TestApp, action: &str, outcome: &str) -> i64 {
    crate::helpers::count_events(&app.settings, action, outcome).await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approved_reveal_gives_exactly_its_scope_once_within_its_window() {
    let app = crate::helpers::spawn_with("approvals", |s, _| {
        // Every reveal of app is held while its baseline is cold; tokenizer may reveal
        // cards too, but not under app's approval.
        s.clients.get_mut("app").unwrap().anomaly = Some(json!({"cold_start": "step_up"}));
        let tokenizer = s.clients.get_mut("tokenizer").unwrap();
        tokenizer
            .permissions
            .push(Grant::parse("detokenize:card").unwrap());
    })
    .await;
    let pans: Vec<String> = (0..3).map(|_| crate::helpers::random_pan()).collect();
    let mut t = Vec::new();
    for p in &pans {
        t.push(app.tokenize("card", p).await);
    }
    let t: Vec<&str> = t.iter().map(String::as_str).collect();
    let id = held(&app, "app", &[t[0], t[1]]).await;

    // Before any decision, and with a malformed header: refused, nothing revealed.
    let (status, body) = retry(&app, "app", &id, &[t[0], t[1]]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("approval_invalid"))
    );
    let (status, body) = retry(&app, "app", "su_4111111111111111", &[t[0]]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    assert!(!body.to_string().contains("4111111111111111"), "{body}");

    let vault = Vault::open(app.settings.clone()).await.unwrap();
    let op = approve(
        &id,
        RevealScope::Tokens(vec![t[0].into(), t[1].into()]),
        300,
    );
    let doc = officers::create(
        &vault.store,
        op.clone(),
        Some("refund run SEC-7"),
        3_600_000,
        now_ms(),
    )
    .await
    .unwrap();
    let sign = |who: &str| {
        let sig = load_officer(who).sign(&doc);
        let store = vault.store.clone();
        async move { officers::add_signature(&store, &sig, now_ms()).await }
    };
    assert!(matches!(
        sign("alice").await,
        Ok(officers::Progress::Waiting { .. })
    ));
    // The officer who proposed it cannot be the second signer, and a key that is not a
    // registered officer's does not count.
    assert!(matches!(
        sign("alice").await,
        Err(OfficerError::AlreadySigned(..))
    ));
    assert!(matches!(
        sign("mallory").await,
        Err(OfficerError::NotAnOfficer)
    ));
    let (doc, actor) = match sign("bob").await.unwrap() {
        officers::Progress::Ready { doc, actor } => (doc, actor),
        other => panic!("{other:?}"),
    };
    assert_eq!(actor, "officer:alice+officer:bob");
    officers::execute(&vault.store, &vault.keys, &doc, &actor, now_ms())
        .await
        .unwrap();
    officers::finish(&vault.store, &doc.id, true, now_ms())
        .await
        .unwrap();
    // A signature on a request already carried out is refused: it cannot grant again.
    assert!(matches!(
        sign("carol").await,
        Err(OfficerError::NotPending(..))
    ));

    // Another client cannot use it; a retry wider than the scope is refused and leaves
    // the approval as it was.
    let (status, _) = retry(&app, "tokenizer", &id, &[t[0]]).await;
    assert_eq!(status, 403);
    for wider in [vec![t[0], t[2]], vec![t[0], t[1], t[2]], vec![t[0], t[0]]] {
        let (status, body) = retry(&app, "app", &id, &wider).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("approval_invalid")),
            "{body}"
        );
        assert!(!body.to_string().contains(&pans[0]));
    }
    let (status, body) = retry(&app, "app", &id, &[t[0], t[1]]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"][0]["value"], pans[0].as_str());
    assert_eq!(body["items"][1]["value"], pans[1].as_str());
    // Once.
    let (status, body) = retry(&app, "app", &id, &[t[0]]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("approval_invalid"))
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already used")
    );

    // A window that ran out.
    let late = held(&app, "app", &[t[2]]).await;
    decide(
        &vault,
        approve(&late, RevealScope::Count(1), 1),
        &["bob", "carol"],
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let (status, body) = retry(&app, "app", &late, &[t[2]]).await;
    assert_eq!(status, 403);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );

    // A denial: one officer; the retry is refused.
    let denied = held(&app, "app", &[t[2]]).await;
    let line = decide(
        &vault,
        Operation::DenyReveal {
            held: denied.clone(),
            identity: "app".into(),
        },
        &["carol"],
    )
    .await;
    assert!(line.contains("denied"), "{line}");
    let (status, body) = retry(&app, "app", &denied, &[t[2]]).await;
    assert_eq!(status, 403);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("denied")
    );
    // A decided request cannot be decided again.
    let again = sign_request(
        &vault.store,
        approve(&denied, RevealScope::Count(1), 60),
        &["alice", "bob"],
    )
    .await
    .unwrap();
    let twice = officers::execute(&vault.store, &vault.keys, &again.0, &again.1, now_ms()).await;
    assert!(twice.is_err(), "{twice:?}");

    // An officer request past its expiry cannot be signed.
    let pending = held(&app, "app", &[t[2]]).await;
    let stale = officers::create(
        &vault.store,
        approve(&pending, RevealScope::Count(1), 60),
        None,
        1_000,
        now_ms() - 10_000,
    )
    .await
    .unwrap();
    let expired =
        officers::add_signature(&vault.store, &load_officer("alice").sign(&stale), now_ms()).await;
    assert!(
        matches!(expired, Err(OfficerError::Expired(_))),
        "{expired:?}"
    );

    // Evidence: who approved what, each use and each refusal.
    let mut db = app.db().await;
    let (actor, reason): (String, String) = sqlx::query_as(
        "SELECT actor, reason FROM audit_events WHERE action = 'approval.grant' AND resource = $1",
    )
    .bind(&id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(actor, "officer:alice+officer:bob");
    assert!(
        reason.contains("2 named tokens of the held request") && reason.contains("SEC-7"),
        "{reason}"
    );
    assert_eq!(count(&app, "approval.redeem", "success").await, 1);
    assert!(count(&app, "approval.redeem", "denied").await >= 7);
    assert_eq!(count(&app, "approval.deny", "success").await, 1);
    let revealed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_events WHERE action = 'detokenize' AND outcome = 'success'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(revealed, 2, "exactly the approved scope was revealed");

    // The report says who approved what, per client and per held request.
    let report = report::collect(&vault, 0, now_ms() + 1).await.unwrap();
    let a = &report.anomalies;
    let row = a.clients.iter().find(|c| c.client == "app").unwrap();
    assert_eq!(
        (row.step_ups, row.approved, row.used, row.denied),
        (4, 2, 1, 1),
        "{row:?}"
    );
    let first = a.held.iter().find(|h| h.id == id).unwrap();
    assert_eq!(first.decided_by, "officer:alice+officer:bob");
    assert_eq!(first.state, "used");
    assert!(first.reason.contains("SEC-7") && !first.used_at.is_empty());
    assert!(
        first.scope.starts_with("2 named tokens until"),
        "{}",
        first.scope
    );
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.title.contains("1 reveal requests held"))
    );
    let html = report::render(&report, report::Format::Html).unwrap();
    assert!(html.contains("Held reveal requests") && html.contains(&id));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_suspended_client_is_reinstated_by_two_officers() {
    let app = crate::helpers::spawn_with("approvals-reinstate", |s, _| {
        s.anomaly.flush_secs = 1;
        s.clients.get_mut("app").unwrap().anomaly =
            Some(json!({"cold_start": "step_up", "step_up_at": 40, "block_at": 50}));
    })
    .await;
    let token = app.tokenize("card", &crate::helpers::random_pan()).await;
    let (status, body) = app
        .post("app", "/v1/detokenize", json!({"token": token}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("identity_suspended"))
    );
    let (status, _) = app
        .post(
            "app",
            "/v1/tokenize",
            json!({"type": "card", "value": crate::helpers::random_pan()}),
        )
        .await;
    assert_eq!(status, 403, "a suspended client does nothing");

    let vault = Vault::open(app.settings.clone()).await.unwrap();
    let since =
        |store: tokenvault::store::Store| async move { store.suspensions().await.unwrap()[0].1 };
    let first = since(vault.store.clone()).await;
    let lift = Operation::Reinstate {
        identity: "app".into(),
        since: first,
    };
    // Proposed by alice, left waiting for a second officer.
    let stale = officers::create(&vault.store, lift.clone(), None, 3_600_000, now_ms())
        .await
        .unwrap();
    let sign = |who: &str| {
        let sig = load_officer(who).sign(&stale);
        let store = vault.store.clone();
        async move { officers::add_signature(&store, &sig, now_ms()).await }
    };
    assert!(
        matches!(sign("alice").await, Ok(officers::Progress::Waiting { .. })),
        "one is not enough"
    );
    let line = decide(&vault, lift.clone(), &["alice", "carol"]).await;
    assert!(line.contains("reinstated"), "{line}");
    assert_eq!(count(&app, "identity.reinstate", "success").await, 1);
    // The server re-reads suspensions at its flush.
    let mut status = 0;
    for _ in 0..30 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        status = app
            .post(
                "app",
                "/v1/tokenize",
                json!({"type": "card", "value": crate::helpers::random_pan()}),
            )
            .await
            .0;
        if status == 200 {
            break;
        }
    }
    assert_eq!(status, 200, "reinstated within the flush interval");
    let twice = sign_request(&vault.store, lift, &["alice", "bob"])
        .await
        .unwrap();
    let again = officers::execute(&vault.store, &vault.keys, &twice.0, &twice.1, now_ms()).await;
    assert!(again.is_err(), "not suspended any more: {again:?}");

    // Blocked again later: the reinstatement proposed for the first suspension cannot
    // lift this one.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (status, _) = app
        .post("app", "/v1/detokenize", json!({"token": token}))
        .await;
    assert_eq!(status, 403);
    let second = since(vault.store.clone()).await;
    assert_ne!(first, second);
    let (doc, actor) = match sign("bob").await.unwrap() {
        officers::Progress::Ready { doc, actor } => (doc, actor),
        other => panic!("{other:?}"),
    };
    let stale_lift = officers::execute(&vault.store, &vault.keys, &doc, &actor, now_ms()).await;
    assert!(stale_lift.is_err(), "{stale_lift:?}");
    assert_eq!(since(vault.store.clone()).await, second, "still suspended");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_header_that_reads_as_a_card_number_is_refused_unrecorded() {
    let app = crate::helpers::spawn_app("approvals-pan-header").await;
    let token = app.tokenize("card", &crate::helpers::random_pan()).await;
    let (status, body) = retry(
        &app,
        "app",
        "su_4111111111111111abcdefabcdefabcd",
        &[&token],
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("approval_invalid")),
        "shaped like an id, and no held request has it"
    );
    let mut db = app.db().await;
    let resources: Vec<Option<String>> = sqlx::query_scalar("SELECT resource FROM audit_events")
        .fetch_all(&mut db)
        .await
        .unwrap();
    for r in resources.into_iter().flatten() {
        assert!(!tokenvault::cardscan::contains_pan(&r), "{r}");
    }
}
