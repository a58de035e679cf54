//! Issue 5: the audit trail is complete, tamper-evident and verifiable without the HSM;
//! the PCI report matches the HSM and the database and carries a verifiable signature.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::helpers::{self, TestApp, cli, spawn_app};
use serde_json::{Value, json};
use tokenvault::audit::{Action, AuditEvent, AuditLog, Outcome};
use tokenvault::vault::{Vault, now_ms};

/// (actor, action, outcome) of an audit event.
type Ev = (String, String, String);
/// (actor, action, resource, origin, reason).
type EvFields = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

pub(crate) fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn events(app: &TestApp) -> Vec<Ev> {
    let mut db = app.db().await;
    sqlx::query_as("SELECT actor, action, outcome FROM audit_events ORDER BY seq")
        .fetch_all(&mut db)
        .await
        .unwrap()
}

/// The events a call adds: everything after the events seen before it.
async fn added(app: &TestApp, before: usize) -> Vec<Ev> {
    events(app).await.split_off(before)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_and_outcome_writes_exactly_the_expected_event() {
    let app = spawn_app("events").await;
    let token = app.tokenize("card", "4111111111111111").await;
    let (_, e) = app
        .post(
            "app",
            "/v1/encrypt",
            json!({"keyring": "pii", "plaintext": "aGk=", "context": "Yw=="}),
        )
        .await;
    let ct = e["ciphertext"].as_str().unwrap().to_owned();
    let doomed = app.tokenize("card", "5555555555554444").await;
    type Call<'a> = (&'a str, &'a str, &'a str, Value);
    let e3 = |who: &str, action: &str, outcome: &str| {
        (who.to_owned(), action.to_owned(), outcome.to_owned())
    };
    let cases: Vec<(Call, Vec<Ev>)> = vec![
        (
            (
                "app",
                "POST",
                "/v1/tokenize",
                json!({"type": "card", "value": "378282246310005"}),
            ),
            vec![e3("app", "tokenize", "success")],
        ),
        (
            (
                "auditor",
                "POST",
                "/v1/tokenize",
                json!({"type": "card", "value": "378282246310005"}),
            ),
            vec![e3("auditor", "tokenize", "denied")],
        ),
        (
            (
                "app",
                "POST",
                "/v1/tokenize",
                json!({"type": "card", "value": "4111111111111112"}),
            ),
            vec![e3("app", "tokenize", "failure")],
        ),
        (
            (
                "app",
                "POST",
                "/v1/tokenize/batch",
                json!({"items": [{"type": "card", "value": "6011000990139424"}, {"type": "card", "value": "1"}]}),
            ),
            vec![
                e3("app", "tokenize", "success"),
                e3("app", "tokenize", "failure"),
            ],
        ),
        (
            ("app", "POST", "/v1/detokenize", json!({"token": token})),
            vec![e3("app", "detokenize", "success")],
        ),
        (
            (
                "tokenizer",
                "POST",
                "/v1/detokenize",
                json!({"token": token}),
            ),
            vec![e3("tokenizer", "detokenize", "denied")],
        ),
        (
            (
                "app",
                "POST",
                "/v1/detokenize",
                json!({"token": "tok_unknown"}),
            ),
            vec![e3("app", "detokenize", "failure")],
        ),
        (
            (
                "app",
                "POST",
                "/v1/detokenize/batch",
                json!({"tokens": [token, "tok_x"]}),
            ),
            vec![
                e3("app", "detokenize", "success"),
                e3("app", "detokenize", "failure"),
            ],
        ),
        (
            ("app", "GET", "/v1/tokens/{token}", Value::Null),
            vec![e3("app", "read", "success")],
        ),
        (
            ("auditor", "GET", "/v1/tokens/{token}", Value::Null),
            vec![e3("auditor", "read", "denied")],
        ),
        (
            ("app", "DELETE", "/v1/tokens/{doomed}", Value::Null),
            vec![e3("app", "delete", "success")],
        ),
        (
            ("tokenizer", "DELETE", "/v1/tokens/{token}", Value::Null),
            vec![e3("tokenizer", "delete", "denied")],
        ),
        (
            (
                "app",
                "POST",
                "/v1/encrypt",
                json!({"keyring": "pii", "plaintext": "aGk="}),
            ),
            vec![e3("app", "encrypt", "success")],
        ),
        (
            (
                "tokenizer",
                "POST",
                "/v1/encrypt",
                json!({"keyring": "pii", "plaintext": "aGk="}),
            ),
            vec![e3("tokenizer", "encrypt", "denied")],
        ),
        (
            (
                "app",
                "POST",
                "/v1/decrypt",
                json!({"ciphertext": ct, "context": "Yw=="}),
            ),
            vec![e3("app", "decrypt", "success")],
        ),
        (
            (
                "app",
                "POST",
                "/v1/decrypt",
                json!({"ciphertext": ct, "context": "eA=="}),
            ),
            vec![e3("app", "decrypt", "failure")],
        ),
        (
            ("auditor", "POST", "/v1/decrypt", json!({"ciphertext": ct})),
            vec![e3("auditor", "decrypt", "denied")],
        ),
        (
            (
                "app",
                "POST",
                "/v1/rewrap",
                json!({"ciphertext": ct, "context": "Yw=="}),
            ),
            vec![e3("app", "rewrap", "success")],
        ),
        (
            ("tokenizer", "POST", "/v1/rewrap", json!({"ciphertext": ct})),
            vec![e3("tokenizer", "rewrap", "denied")],
        ),
        (
            ("auditor", "GET", "/v1/keys", Value::Null),
            vec![e3("auditor", "keys.list", "success")],
        ),
        (
            ("app", "GET", "/v1/keys", Value::Null),
            vec![e3("app", "keys.list", "denied")],
        ),
        (("app", "GET", "/healthz", Value::Null), vec![]),
        (("app", "GET", "/readyz", Value::Null), vec![]),
        (("app", "GET", "/metrics", Value::Null), vec![]),
        (("app", "GET", "/openapi.json", Value::Null), vec![]),
    ];
    for ((who, method, path, body), mut expected) in cases {
        let path = path.replace("{token}", &token).replace("{doomed}", &doomed);
        let before = events(&app).await.len();
        match method {
            "GET" => app.get(who, &path).await,
            "DELETE" => app.delete(who, &path).await,
            _ => app.post(who, &path, body).await,
        };
        // Items of a batch run concurrently: compare each call's events as a multiset.
        let mut got = added(&app, before).await;
        got.sort();
        expected.sort();
        assert_eq!(got, expected, "{who} {method} {path}");
    }
    let mut db = app.db().await;
    let all: Vec<EvFields> =
        sqlx::query_as("SELECT actor, action, resource, origin, reason FROM audit_events")
            .fetch_all(&mut db)
            .await
            .unwrap();
    helpers::assert_no_canary(&format!("{all:?}"), "the audit table");
    assert!(
        all.iter().all(|e| e.3.is_some()),
        "every event names its origin"
    );
}

/// A copy of the test database (consistent, WAL included) for one mutation.
pub(crate) async fn copy_db(app: &TestApp, name: &str) -> PathBuf {
    let dest = app.dir.join(format!("{name}.db"));
    let _ = std::fs::remove_file(&dest);
    let mut db = app.db().await;
    sqlx::query(&format!("VACUUM INTO '{}'", dest.display()))
        .execute(&mut db)
        .await
        .unwrap();
    dest
}

pub(crate) async fn on(path: &Path, sql: &[&str]) {
    let mut db = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}",
        path.display()
    ))
    .await
    .unwrap();
    for s in sql {
        sqlx::query(s).execute(&mut db).await.unwrap();
    }
}

fn verify(app: &TestApp, db: &Path, extra: &[&str]) -> Output {
    let pem = app.dir.join("audit-public.pem");
    cli(&app.settings)
        .env(
            "TOKENVAULT_DATABASE__URL",
            format!("sqlite://{}", db.display()),
        )
        .args(["audit", "verify", "--public-key", pem.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_tampering_is_detected_at_the_right_sequence() {
    if helpers::postgres().is_some() {
        // The verifier reads the same rows on both backends; the mutations here work on
        // copies of a SQLite file, so this runs in the SQLite pass.
        eprintln!("skipped on PostgreSQL: tamper copies are SQLite files");
        return;
    }
    let app = spawn_app("tamper").await;
    let vault = Vault::open(app.settings.clone()).await.unwrap();
    let log = AuditLog::new(vault.store.clone());
    let mut atx = log.begin().await.unwrap();
    for i in 0..3000 {
        let e = AuditEvent::new(
            format!("client-{}", i % 7),
            Action::Detokenize,
            Outcome::Success,
        )
        .resource(format!("tok_{i}"))
        .origin("127.0.0.1");
        atx.append(&e, now_ms()).await.unwrap();
    }
    atx.commit().await.unwrap();
    let o = cli(&app.settings)
        .args([
            "audit",
            "export-key",
            "--out",
            app.dir.join("audit-public.pem").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let exported = app.dir.join("checkpoint.json");
    let o = cli(&app.settings)
        .args([
            "audit",
            "export-checkpoint",
            "--out",
            exported.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let total: i64 = {
        let mut db = app.db().await;
        sqlx::query_scalar("SELECT MAX(seq) FROM audit_events")
            .fetch_one(&mut db)
            .await
            .unwrap()
    };
    assert!(total > 3000);

    let clean = copy_db(&app, "clean").await;
    let o = verify(&app, &clean, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("events/s"),
        "the speed is stated: {}",
        text(&o)
    );

    let expect_break = |o: &Output, seq: i64| {
        assert_eq!(o.status.code(), Some(1), "{}", text(o));
        assert!(
            text(o).contains(&format!("broken at sequence {seq}:")),
            "expected {seq}: {}",
            text(o)
        );
    };

    let db = copy_db(&app, "edit").await;
    on(
        &db,
        &["UPDATE audit_events SET actor = 'mallory' WHERE seq = 1234"],
    )
    .await;
    expect_break(&verify(&app, &db, &[]), 1234);

    let db = copy_db(&app, "delete").await;
    on(&db, &["DELETE FROM audit_events WHERE seq = 777"]).await;
    expect_break(&verify(&app, &db, &[]), 777);

    // A forged event inserted at 500, correctly chained to 499; later events renumbered.
    let db = copy_db(&app, "insert").await;
    on(
        &db,
        &[
            "UPDATE audit_events SET seq = -seq WHERE seq >= 500",
            "UPDATE audit_events SET seq = 1 - seq WHERE seq < 0",
        ],
    )
    .await;
    let prev: Vec<u8> = {
        let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
            "sqlite://{}",
            db.display()
        ))
        .await
        .unwrap();
        sqlx::query_scalar("SELECT hash FROM audit_events WHERE seq = 499")
            .fetch_one(&mut c)
            .await
            .unwrap()
    };
    let mut forged = tokenvault::store::AuditRow {
        seq: 500,
        at: now_ms(),
        actor: "app".into(),
        action: "detokenize".into(),
        outcome: "success".into(),
        resource: Some("tok_forged".into()),
        origin: Some("127.0.0.1".into()),
        reason: None,
        prev_hash: prev,
        hash: vec![],
    };
    forged.hash = tokenvault::audit::chain_hash(500, forged.at, &forged).to_vec();
    {
        let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
            "sqlite://{}",
            db.display()
        ))
        .await
        .unwrap();
        sqlx::query("INSERT INTO audit_events (seq, at, actor, action, outcome, resource, origin, reason, prev_hash, hash) VALUES (500, $1, 'app', 'detokenize', 'success', 'tok_forged', '127.0.0.1', NULL, $2, $3)")
            .bind(forged.at).bind(&forged.prev_hash).bind(&forged.hash).execute(&mut c).await.unwrap();
    }
    expect_break(&verify(&app, &db, &[]), 500);

    let db = copy_db(&app, "swap").await;
    on(&db, &[
        "CREATE TEMP TABLE t AS SELECT * FROM audit_events WHERE seq IN (1000, 1001)",
        "UPDATE audit_events SET actor = (SELECT actor FROM t WHERE seq = 1001), action = (SELECT action FROM t WHERE seq = 1001), resource = (SELECT resource FROM t WHERE seq = 1001), prev_hash = (SELECT prev_hash FROM t WHERE seq = 1001), hash = (SELECT hash FROM t WHERE seq = 1001), at = (SELECT at FROM t WHERE seq = 1001) WHERE seq = 1000",
        "UPDATE audit_events SET actor = (SELECT actor FROM t WHERE seq = 1000), action = (SELECT action FROM t WHERE seq = 1000), resource = (SELECT resource FROM t WHERE seq = 1000), prev_hash = (SELECT prev_hash FROM t WHERE seq = 1000), hash = (SELECT hash FROM t WHERE seq = 1000), at = (SELECT at FROM t WHERE seq = 1000) WHERE seq = 1001",
    ]).await;
    expect_break(&verify(&app, &db, &[]), 1000);

    // Truncation: caught by the signed checkpoint in the database…
    let db = copy_db(&app, "truncate").await;
    on(&db, &["DELETE FROM audit_events WHERE seq > 2500"]).await;
    expect_break(&verify(&app, &db, &[]), 2501);
    // …and, when the checkpoints and the head were cut back too, by the exported one.
    let db = copy_db(&app, "truncate-all").await;
    on(&db, &[
        "DELETE FROM audit_events WHERE seq > 2500",
        "DELETE FROM audit_checkpoints",
        "UPDATE audit_head SET seq = 2500, hash = (SELECT hash FROM audit_events WHERE seq = 2500)",
    ]).await;
    assert!(
        verify(&app, &db, &[]).status.success(),
        "without outside evidence the cut is invisible"
    );
    expect_break(
        &verify(&app, &db, &["--checkpoint", exported.to_str().unwrap()]),
        2501,
    );

    // A checkpoint signed by another key is refused.
    let db = copy_db(&app, "badsig").await;
    on(
        &db,
        &["UPDATE audit_checkpoints SET signature = X'00' || substr(signature, 2)"],
    )
    .await;
    assert_eq!(verify(&app, &db, &[]).status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_report_matches_the_hsm_and_the_database_and_its_signature_verifies() {
    let app = helpers::spawn_with("report", |_, _| {}).await;
    let mut t = String::new();
    for _ in 0..5 {
        t = app.tokenize("card", &helpers::random_pan()).await;
        app.post(
            "app",
            "/v1/detokenize",
            json!({"token": t, "reason": "chargeback"}),
        )
        .await;
    }
    app.post("tokenizer", "/v1/detokenize", json!({"token": t}))
        .await;
    let o = cli(&app.settings)
        .args(["keys", "rotate", "pan", "--reason", "annual", "--key"])
        .arg(helpers::officer_key("alice"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));

    let json_path = app.dir.join("report.json");
    let o = cli(&app.settings)
        .args([
            "audit",
            "report",
            "--format",
            "json",
            "--out",
            json_path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();

    // Field by field against the database…
    let vault = Vault::open(app.settings.clone()).await.unwrap();
    let inv = vault.keys.inventory(now_ms()).await.unwrap();
    let keys = report["keys"].as_array().unwrap();
    assert_eq!(keys.len(), inv.keys.len());
    for (r, k) in keys.iter().zip(&inv.keys) {
        assert_eq!(r["id"], format!("{}/v{}", k.keyring, k.version));
        assert_eq!(r["kcv"], k.kcv.as_str());
        assert_eq!(r["state"], k.state.as_str());
        assert_eq!(r["records"], k.records);
        assert_eq!(r["usage_count"], k.usage_count);
        assert_eq!(r["strength_bits"], 256);
        assert!(r["location"].as_str().unwrap().contains(&k.kek_label));
    }
    assert_eq!(
        report["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["id"] == "pan/v2")
            .count(),
        1
    );
    // …and against SoftHSM, read independently.
    let (p, session) = helpers::raw_session();
    let slot = session.get_session_info().unwrap().slot_id();
    let info = p.get_token_info(slot).unwrap();
    assert_eq!(
        report["hsm"]["token"]["serial"],
        info.serial_number().trim_end()
    );
    assert_eq!(report["hsm"]["token"]["model"], info.model().trim_end());
    let kek = &report["keks"][0];
    assert_eq!(kek["label"], vault.keys.labels().kek(1));
    assert_eq!(kek["in_hsm"], true);
    let h = session
        .find_objects(&[cryptoki::object::Attribute::Label(
            vault.keys.labels().kek(1).into_bytes(),
        )])
        .unwrap()[0];
    let attrs = session
        .get_attributes(
            h,
            &[
                cryptoki::object::AttributeType::Sensitive,
                cryptoki::object::AttributeType::Extractable,
                cryptoki::object::AttributeType::NeverExtractable,
                cryptoki::object::AttributeType::Local,
            ],
        )
        .unwrap();
    use cryptoki::object::Attribute as A;
    for a in attrs {
        match a {
            A::Sensitive(v) => assert_eq!(kek["evidence"]["sensitive"], v),
            A::Extractable(v) => assert_eq!(kek["evidence"]["extractable"], v),
            A::NeverExtractable(v) => assert_eq!(kek["evidence"]["never_extractable"], v),
            A::Local(v) => assert_eq!(kek["evidence"]["local"], v),
            _ => {}
        }
    }
    assert_eq!(report["reconciliation"]["missing_in_hsm"], json!([]));
    assert_eq!(report["reconciliation"]["orphans_in_hsm"], json!([]));
    assert_eq!(report["chain"]["intact"], true);
    let access = report["access"].as_array().unwrap();
    let app_row = access.iter().find(|a| a["client"] == "app").unwrap();
    assert_eq!(app_row["detokenize"], 5);
    assert_eq!(
        access.iter().find(|a| a["client"] == "tokenizer").unwrap()["denied"],
        1
    );
    assert!(
        report["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["action"] == "key.create" && h["reason"] == "annual")
    );
    assert!(report["pci_mapping"].as_array().unwrap().len() >= 8);
    helpers::assert_no_canary(&report.to_string(), "the report");

    // HTML and Markdown render; the detached signature verifies with openssl and the
    // exported key, and fails after a one-byte change.
    let pem = app.dir.join("audit-public.pem");
    let o = cli(&app.settings)
        .args(["audit", "export-key", "--out", pem.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    for (format, name) in [("html", "report.html"), ("md", "report.md")] {
        let out = app.dir.join(name);
        let o = cli(&app.settings)
            .args([
                "audit",
                "report",
                "--format",
                format,
                "--out",
                out.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let sig = app.dir.join(format!("{name}.sig"));
        let ok = std::process::Command::new("openssl")
            .args([
                "dgst",
                "-sha256",
                "-verify",
                pem.to_str().unwrap(),
                "-signature",
                sig.to_str().unwrap(),
                out.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(ok.status.success(), "openssl: {}", text(&ok));
        let mut bytes = std::fs::read(&out).unwrap();
        let i = bytes.len() / 2;
        bytes[i] ^= 0x01;
        let tampered = app.dir.join(format!("tampered-{name}"));
        std::fs::write(&tampered, &bytes).unwrap();
        let bad = std::process::Command::new("openssl")
            .args([
                "dgst",
                "-sha256",
                "-verify",
                pem.to_str().unwrap(),
                "-signature",
                sig.to_str().unwrap(),
                tampered.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(!bad.status.success(), "a changed report still verified");
        let o = cli(&app.settings)
            .args([
                "audit",
                "verify-report",
                tampered.to_str().unwrap(),
                "--signature",
                sig.to_str().unwrap(),
                "--public-key",
                pem.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
    }
    let html = std::fs::read_to_string(app.dir.join("report.html")).unwrap();
    for needle in [
        "<svg",
        "Key inventory",
        "Reconciliation",
        "cryptoperiod",
        "PCI DSS",
        "pan/v2",
    ] {
        assert!(html.contains(needle), "{needle}");
    }
    helpers::assert_no_canary(&html, "the HTML report");
    render_in_chromium(&app.dir.join("report.html"));
}

/// Renders the HTML report to PDF and PNG with headless Chromium (Debian's package,
/// installed by scripts/test) and checks it produced pages.
fn render_in_chromium(html: &Path) {
    let chromium = ["chromium", "chromium-browser"].into_iter().find(|c| {
        std::process::Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let chromium = chromium.expect("headless Chromium is needed to render the report (scripts/test installs Debian's chromium)");
    let dir = html.parent().unwrap();
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", html.canonicalize().unwrap().display());
    for (flag, out) in [
        ("--print-to-pdf", dir.join("report.pdf")),
        ("--screenshot", dir.join("report.png")),
    ] {
        let o = std::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,2400",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("{flag}={}", out.display()))
            .arg(&url)
            .output()
            .unwrap();
        assert!(o.status.success(), "chromium: {}", text(&o));
        let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{} is {size} bytes", out.display());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn when_the_audit_trail_cannot_be_written_requests_fail_closed() {
    let app = spawn_app("failclosed").await;
    let token = app.tokenize("card", "4111111111111111").await;
    let mut db = app.db().await;
    // Make every audit append fail, as a lost table or a revoked grant would.
    sqlx::query("ALTER TABLE audit_events RENAME TO audit_events_away")
        .execute(&mut db)
        .await
        .unwrap();
    let before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
        .fetch_one(&mut db)
        .await
        .unwrap();
    let (status, body) = app
        .post(
            "app",
            "/v1/tokenize",
            json!({"type": "card", "value": "5555555555554444"}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    let after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(before, after, "no token without its audit event");
    let r = helpers::client("app")
        .post(app.url("/v1/detokenize"))
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert!(
        body.get("value").is_none(),
        "no value served without an audit record"
    );
    let metrics = helpers::metrics_text(&app.url("/metrics")).await;
    assert!(
        metrics.contains("tokenvault_audit_failures_total"),
        "the failure is counted"
    );
    sqlx::query("ALTER TABLE audit_events_away RENAME TO audit_events")
        .execute(&mut db)
        .await
        .unwrap();
    assert_eq!(
        app.post("app", "/v1/detokenize", json!({"token": token}))
            .await
            .0,
        200,
        "recovers by itself"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_report_renders_for_an_empty_vault_an_empty_period_and_a_broken_chain() {
    let dir = helpers::test_dir("report-empty");
    let mut s = helpers::settings(&dir, "repempty");
    helpers::tls_files(&dir, &mut s);
    // No init: no keys at all.
    let out = dir.join("empty.json");
    let o = cli(&s)
        .args([
            "audit",
            "report",
            "--format",
            "json",
            "--out",
            out.to_str().unwrap(),
            "--days",
            "1",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(r["keys"], json!([]));
    assert!(
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["title"].as_str().unwrap().contains("no keys yet"))
    );

    // A chain with a break: the report still renders and says so; verify exits non-zero.
    let app = spawn_app("report-broken").await;
    app.tokenize("card", "4111111111111111").await;
    let mut db = app.db().await;
    sqlx::query("UPDATE audit_events SET actor = 'mallory' WHERE seq = 2")
        .execute(&mut db)
        .await
        .unwrap();
    let html = app.dir.join("broken.html");
    let o = cli(&app.settings)
        .args([
            "audit",
            "report",
            "--format",
            "html",
            "--out",
            html.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("BROKEN at sequence 2"),
        "the report says where the chain broke"
    );
    let o = cli(&app.settings)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("broken at sequence 2"), "{}", text(&o));
}
