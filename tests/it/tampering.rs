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
        .submit(Write::InsertTokens {
            rows: vec![(row, event)],
            events: Vec::new(),
            journal: None,
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

// The audit trail against a database writer (review M2, L6). The writer's tools: edit or
// rewrite events and recompute every hash and the head, delete checkpoint rows, replace
// the stored public key and re-sign every checkpoint with their own key.

mod audit_trail {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::process::Output;
    use std::time::Duration;

    use serde_json::Value;
    use tokenvault::audit::{Action, AuditEvent, AuditLog, Outcome};
    use tokenvault::store::Store;
    use tokenvault::vault::{Vault, now_ms};

    use crate::audit::{copy_db, on, text};
    use crate::helpers::{self, TestApp, cli, connect, spawn_app};

    fn event(i: usize) -> AuditEvent {
        AuditEvent::new(
            format!("client-{}", i % 3),
            Action::Detokenize,
            Outcome::Success,
        )
        .resource(format!("tok_{i}"))
    }

    async fn record(log: &AuditLog, n: usize) {
        for i in 0..n {
            log.record(&event(i), now_ms()).await.unwrap();
        }
    }

    /// Rewrites events `from..` the way a database writer can: `actor` of event `from`
    /// changed, every later hash and the head recomputed, so the chain links cleanly.
    async fn rewrite_consistently(store: &Store, s: &tokenvault::config::Settings, from: i64) {
        let rows = store.audit_events(from - 1, 10_000).await.unwrap();
        let mut prev = store.audit_events(from - 2, 1).await.unwrap()[0]
            .hash
            .clone();
        let mut db = connect(s).await;
        let mut last = (0, Vec::new());
        for mut row in rows {
            if row.seq == from {
                row.actor = "mallory".into();
            }
            row.prev_hash = prev;
            row.hash = tokenvault::audit::chain_hash(row.seq, row.at, &row).to_vec();
            sqlx::query(
                "UPDATE audit_events SET actor = $1, prev_hash = $2, hash = $3 WHERE seq = $4",
            )
            .bind(&row.actor)
            .bind(&row.prev_hash)
            .bind(&row.hash)
            .bind(row.seq)
            .execute(&mut db)
            .await
            .unwrap();
            prev = row.hash.clone();
            last = (row.seq, row.hash);
        }
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(last.0)
            .bind(&last.1)
            .execute(&mut db)
            .await
            .unwrap();
    }

    async fn newest_checkpoint(s: &tokenvault::config::Settings) -> i64 {
        let mut db = connect(s).await;
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints")
            .fetch_one(&mut db)
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_signer_refuses_a_tail_altered_rewritten_or_cut_after_the_last_checkpoint() {
        let dir = helpers::test_dir("tail-rewrite");
        let s = helpers::settings(&dir, "tailrw");
        helpers::init_vault(&s).await;
        let vault = Vault::open(s.clone()).await.unwrap();
        let log = AuditLog::new(vault.store.clone());
        let signer = vault.checkpointer();
        record(&log, 20).await;
        let first = signer
            .checkpoint(now_ms())
            .await
            .unwrap()
            .expect("a checkpoint");
        record(&log, 10).await;
        let (tip, _) = vault.store.audit_tip().await.unwrap();
        assert_eq!(tip, first.seq + 10);
        let victim = tip - 3;
        let mut db = connect(&s).await;

        // An edit that leaves the hashes alone: the walk from the last checkpoint finds it.
        sqlx::query("UPDATE audit_events SET reason = 'forged' WHERE seq = $1")
            .bind(victim)
            .execute(&mut db)
            .await
            .unwrap();
        let refused = signer.checkpoint(now_ms()).await;
        let why = format!("{refused:?}");
        assert!(
            refused.is_err(),
            "signed a head over an altered event: {why}"
        );
        assert!(
            why.contains(&format!("event {victim} was altered")),
            "{why}"
        );
        sqlx::query("UPDATE audit_events SET reason = NULL WHERE seq = $1")
            .bind(victim)
            .execute(&mut db)
            .await
            .unwrap();

        // A consistent rewrite (hashes and head recomputed): the chain links, but this
        // vault remembers the hash of the last event it wrote.
        rewrite_consistently(&vault.store, &s, victim).await;
        let refused = signer.checkpoint(now_ms()).await;
        let why = format!("{refused:?}");
        assert!(refused.is_err(), "signed a rewritten tail: {why}");
        assert!(
            why.contains(&format!("event {tip} is not the one this vault wrote")),
            "{why}"
        );

        // The tail cut back, head and all.
        sqlx::query("DELETE FROM audit_events WHERE seq > $1")
            .bind(victim)
            .execute(&mut db)
            .await
            .unwrap();
        sqlx::query("UPDATE audit_head SET seq = $1, hash = (SELECT hash FROM audit_events WHERE seq = $1) WHERE id = 1")
            .bind(victim)
            .execute(&mut db)
            .await
            .unwrap();
        let refused = signer.checkpoint(now_ms()).await;
        let why = format!("{refused:?}");
        assert!(refused.is_err(), "signed a truncated tail: {why}");
        assert!(
            why.contains(&format!(
                "the chain ends at {victim} but this vault wrote up to {tip}"
            )),
            "{why}"
        );
        assert_eq!(newest_checkpoint(&s).await, first.seq, "nothing was signed");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn checkpoint_housekeeping_reads_only_the_newest_checkpoint() {
        if helpers::postgres().is_some() {
            eprintln!("skipped on PostgreSQL: the unreadable rows need SQLite's dynamic types");
            return;
        }
        let dir = helpers::test_dir("ckpt-newest");
        let s = helpers::settings(&dir, "ckptnew");
        helpers::init_vault(&s).await;
        let vault = Vault::open(s.clone()).await.unwrap();
        let log = AuditLog::new(vault.store.clone());
        let signer = vault.checkpointer();
        record(&log, 30).await;
        let first = signer
            .checkpoint(now_ms())
            .await
            .unwrap()
            .expect("a checkpoint");
        // 20,000 older checkpoint rows that cannot be read as checkpoints (a number where
        // the hash belongs, bytes where the label belongs): housekeeping that loads every
        // checkpoint fails on them; housekeeping that reads the newest one never sees them.
        let mut db = connect(&s).await;
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) \
             INSERT INTO audit_checkpoints (seq, head_hash, at, key_label, signature) \
             SELECT i - 20001, 42, 0, X'FF', X'00' FROM n",
        )
        .execute(&mut db)
        .await
        .unwrap();
        record(&log, 10).await;
        let due = signer.checkpoint_if_due(5, 3_600_000, now_ms()).await;
        let (tip, _) = vault.store.audit_tip().await.unwrap();
        match &due {
            Ok(Some(c)) => assert_eq!(c.seq, tip),
            other => panic!("housekeeping read more than the newest checkpoint: {other:?}"),
        }
        assert!(tip > first.seq);
        record(&log, 1).await;
        let now = signer.checkpoint(now_ms()).await;
        assert!(matches!(now, Ok(Some(_))), "{now:?}");
    }

    fn verify_without_key(app: &TestApp, db: &Path, extra: &[&str]) -> Output {
        cli(&app.settings)
            .env(
                "TOKENVAULT_DATABASE__URL",
                format!("sqlite://{}", db.display()),
            )
            .args(["audit", "verify"])
            .args(extra)
            .output()
            .unwrap()
    }

    fn expect_caught(o: &Output, how: &str) {
        assert_eq!(o.status.code(), Some(1), "{}", text(o));
        assert!(text(o).contains(how), "expected «{how}»: {}", text(o));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn deleted_checkpoints_and_a_replaced_key_are_named_by_the_exported_series() {
        if helpers::postgres().is_some() {
            eprintln!("skipped on PostgreSQL: tamper copies are SQLite files");
            return;
        }
        let app = spawn_app("ckpt-series").await;
        let series = app.dir.join("checkpoints.jsonl");
        let socket = app.dir.join("syslog.sock");
        let syslog = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
        syslog
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        for _ in 0..4 {
            for _ in 0..3 {
                app.tokenize("card", &helpers::random_pan()).await;
            }
            let o = cli(&app.settings)
                .env("TOKENVAULT_AUDIT__CHECKPOINT_FILE", &series)
                .env("TOKENVAULT_AUDIT__SYSLOG", &socket)
                .args(["audit", "checkpoint"])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", text(&o));
        }
        let exported = std::fs::read_to_string(&series).unwrap_or_default();
        let lines: Vec<Value> = exported
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines.len(),
            4,
            "every checkpoint went to the outside file: {exported}"
        );
        let mode = std::fs::metadata(&series).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let seqs: Vec<i64> = lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
        let mut buf = [0u8; 8192];
        let n = syslog.recv(&mut buf).expect("a syslog datagram");
        let datagram = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(
            datagram.contains("tokenvault") && datagram.contains(&format!("\"seq\":{}", seqs[0])),
            "{datagram}"
        );
        let pem = app.dir.join("audit-public.pem");
        let o = cli(&app.settings)
            .args(["audit", "export-key", "--out", pem.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let series_arg = series.to_str().unwrap();

        let clean = copy_db(&app, "series-clean").await;
        let o = verify_without_key(&app, &clean, &["--checkpoints", series_arg]);
        assert!(o.status.success(), "{}", text(&o));

        // The newest checkpoint rows deleted: the database alone cannot tell (its tail is
        // merely unsigned), the exported series can.
        let db = copy_db(&app, "series-cut").await;
        on(
            &db,
            &[&format!(
                "DELETE FROM audit_checkpoints WHERE seq > {}",
                seqs[1]
            )],
        )
        .await;
        expect_caught(
            &verify_without_key(&app, &db, &["--checkpoints", series_arg]),
            &format!(
                "the exported checkpoint at {} is missing from the database",
                seqs[2]
            ),
        );

        // A checkpoint row in the middle deleted: the next checkpoint's link names the gap.
        let next: i64 = {
            let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
                "sqlite://{}",
                clean.display()
            ))
            .await
            .unwrap();
            sqlx::query_scalar("SELECT MIN(seq) FROM audit_checkpoints WHERE seq > $1")
                .bind(seqs[1])
                .fetch_one(&mut c)
                .await
                .unwrap()
        };
        let db = copy_db(&app, "series-gap").await;
        on(
            &db,
            &[&format!(
                "DELETE FROM audit_checkpoints WHERE seq = {}",
                seqs[1]
            )],
        )
        .await;
        expect_caught(
            &verify_without_key(&app, &db, &["--public-key", pem.to_str().unwrap()]),
            &format!("the checkpoint at {next} does not follow the one before it"),
        );

        // The stored public key replaced and every checkpoint re-signed with it.
        let db = copy_db(&app, "series-key").await;
        resign_with_another_key(&db).await;
        let o = verify_without_key(&app, &db, &["--json"]);
        assert!(o.status.success(), "{}", text(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["key_source"], "database", "{v}");
        assert_eq!(v["proves_nothing_against_a_database_writer"], true, "{v}");
        let o = verify_without_key(&app, &db, &[]);
        assert!(
            text(&o).contains("proves nothing against a database writer"),
            "{}",
            text(&o)
        );
        expect_caught(
            &verify_without_key(&app, &db, &["--public-key", pem.to_str().unwrap()]),
            "has an invalid signature",
        );
        expect_caught(
            &verify_without_key(&app, &db, &["--checkpoints", series_arg]),
            "public key stored in the database is not the key that signed the exported checkpoints",
        );
        // The HSM-signed report checks with the key read from the HSM.
        let out = app.dir.join("replaced-key.json");
        let o = cli(&app.settings)
            .env(
                "TOKENVAULT_DATABASE__URL",
                format!("sqlite://{}", db.display()),
            )
            .args([
                "audit",
                "report",
                "--format",
                "json",
                "--out",
                out.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let r: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(r["chain"]["intact"], false, "{}", r["chain"]);
        let findings = r["findings"].to_string();
        assert!(
            findings.contains("the audit public key stored in the database is not the HSM's key"),
            "{findings}"
        );
    }

    /// What a database writer with their own key does: replace the stored public key and
    /// re-sign every checkpoint row.
    async fn resign_with_another_key(db: &Path) {
        use p256::ecdsa::{Signature, SigningKey, signature::Signer};
        let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
            "sqlite://{}",
            db.display()
        ))
        .await
        .unwrap();
        use tokenvault::audit::checkpoint::{NO_PREVIOUS, digest, message};
        type Row = (i64, Vec<u8>, i64, String, Option<Vec<u8>>, Option<String>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT seq, head_hash, at, key_label, prev_digest, environment FROM audit_checkpoints \
             ORDER BY seq",
        )
        .fetch_all(&mut c)
        .await
        .unwrap();
        // Each re-signed checkpoint is linked to the re-signed one before it, as a careful
        // forger would do: the chain of checkpoints is consistent again.
        let mut before: Option<tokenvault::store::CheckpointRow> = None;
        for (seq, head_hash, at, key_label, prev_digest, environment) in rows {
            let mut row = tokenvault::store::CheckpointRow {
                seq,
                head_hash,
                at,
                key_label,
                signature: Vec::new(),
                prev_digest: prev_digest
                    .map(|_| before.as_ref().map_or(NO_PREVIOUS.to_vec(), digest)),
                environment,
            };
            let sig: Signature = key.sign(&message(&row));
            row.signature = sig.to_bytes().to_vec();
            sqlx::query(
                "UPDATE audit_checkpoints SET signature = $1, prev_digest = $2 WHERE seq = $3",
            )
            .bind(&row.signature)
            .bind(&row.prev_digest)
            .bind(seq)
            .execute(&mut c)
            .await
            .unwrap();
            before = Some(row);
        }
        let point = key.verifying_key().to_encoded_point(false);
        sqlx::query("UPDATE audit_keys SET public_key = $1")
            .bind(point.as_bytes().to_vec())
            .execute(&mut c)
            .await
            .unwrap();
    }
}

mod serving_node {
    use std::time::{Duration, Instant};

    use crate::audit::text;
    use crate::helpers::{self, cli, connect};

    fn exported_seqs(path: &std::path::Path) -> Vec<i64> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                    .as_i64()
                    .unwrap()
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_serving_node_exports_every_checkpoint_and_will_not_launder_a_rewritten_chain() {
        let series_name = "serve-checkpoints.jsonl";
        let app = helpers::spawn_with("serve-launder", |s, dir| {
            s.audit.checkpoint_file = Some(dir.join(series_name));
            s.audit.checkpoint_interval_secs = 1;
        })
        .await;
        let series = app.dir.join(series_name);
        for _ in 0..3 {
            app.tokenize("card", &helpers::random_pan()).await;
        }
        let vault = tokenvault::vault::Vault::open(app.settings.clone())
            .await
            .unwrap();
        let (tip, _) = vault.store.audit_tip().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !exported_seqs(&series).contains(&tip) {
            assert!(
                Instant::now() < deadline,
                "serve exported no checkpoint of {tip}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // The launder: checkpoints from event 2 on deleted, events from 2 rewritten with
        // every hash and the head recomputed, in one transaction.
        let rows = vault.store.audit_events(0, 10_000).await.unwrap();
        let mut db = connect(&app.settings).await;
        let mut tx = sqlx::Connection::begin(&mut db).await.unwrap();
        sqlx::query("DELETE FROM audit_checkpoints WHERE seq >= 2")
            .execute(&mut *tx)
            .await
            .unwrap();
        let mut prev = rows[0].hash.clone();
        let mut last = (0, Vec::new());
        for mut row in rows.into_iter().skip(1) {
            if row.seq == 2 {
                row.actor = "mallory".into();
            }
            row.prev_hash = prev;
            row.hash = tokenvault::audit::chain_hash(row.seq, row.at, &row).to_vec();
            sqlx::query(
                "UPDATE audit_events SET actor = $1, prev_hash = $2, hash = $3 WHERE seq = $4",
            )
            .bind(&row.actor)
            .bind(&row.prev_hash)
            .bind(&row.hash)
            .bind(row.seq)
            .execute(&mut *tx)
            .await
            .unwrap();
            prev = row.hash.clone();
            last = (row.seq, row.hash);
        }
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(last.0)
            .bind(&last.1)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let exported_before = exported_seqs(&series);

        // Several checkpoint rounds later the node has signed nothing over the rewrite: it
        // remembers the checkpoint it signed (now deleted) and the event it wrote (now
        // rewritten); with both checks disabled it signs the laundered head.
        tokio::time::sleep(Duration::from_secs(7)).await;
        let resigned: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM audit_checkpoints WHERE seq >= 2")
                .fetch_one(&mut db)
                .await
                .unwrap();
        assert_eq!(resigned, 0, "the node signed the laundered chain");
        assert_eq!(exported_seqs(&series), exported_before);
        // The chain itself verifies (it was rewritten consistently); the exported series
        // names what was deleted.
        let o = cli(&app.settings)
            .args(["audit", "verify", "--checkpoints", series.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(
            text(&o).contains(&format!(
                "the exported checkpoint at {tip} is missing from the database"
            )),
            "{}",
            text(&o)
        );
    }
}
