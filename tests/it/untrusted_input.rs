//! What a caller sends is checked before it is used, never echoed, and never stored
//! unchecked: names are validated first, card numbers sent where they do not belong never
//! reach the audit trail, one bad request cannot fail the requests committed with it, and
//! identities the config does not know are rate limited too.

use serde_json::json;
use tokenvault::audit::writer::{TokenInsert, Write};
use tokenvault::audit::{Action, AuditEvent, Outcome};
use tokenvault::vault::{Vault, now_ms};

use crate::helpers::{self, TestApp, client, spawn_app, spawn_with};

/// Every text column of the audit trail, joined, for searching.
async fn audit_text(app: &TestApp) -> String {
    let mut db = app.db().await;
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT actor || '|' || action || '|' || COALESCE(resource, '') || '|' \
         || COALESCE(origin, '') || '|' || COALESCE(reason, '') FROM audit_events",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    rows.join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn names_are_checked_first_and_never_echoed_or_stored() {
    let app = spawn_app("names").await;
    let long = format!("k{}", "x".repeat(200_000));
    let pan_as_type = "4111111111111111";
    let cases = [
        // A client with no permission at all, a 200 kB keyring name.
        (
            "stranger",
            "/v1/encrypt",
            json!({"keyring": long, "plaintext": ""}),
        ),
        (
            "app",
            "/v1/encrypt",
            json!({"keyring": long, "plaintext": ""}),
        ),
        (
            "app",
            "/v1/encrypt",
            json!({"keyring": "pii\u{0}", "plaintext": ""}),
        ),
        (
            "app",
            "/v1/encrypt",
            json!({"keyring": "x:y\u{0}", "plaintext": ""}),
        ),
        (
            "stranger",
            "/v1/tokenize",
            json!({"type": long, "value": "x"}),
        ),
        (
            "app",
            "/v1/tokenize",
            json!({"type": pan_as_type, "value": "pan"}),
        ),
        (
            "tokenizer",
            "/v1/tokenize",
            json!({"type": "Tx\u{0}", "value": "x"}),
        ),
    ];
    for (who, path, body) in cases {
        let sent = body
            .as_object()
            .unwrap()
            .values()
            .filter_map(|v| v.as_str())
            .filter(|s| s.len() > 3)
            .map(str::to_owned)
            .collect::<Vec<_>>();
        let (status, resp) = app.post(who, path, body).await;
        assert_eq!(status, 400, "{who} {path}: {resp}");
        assert_eq!(resp["error"]["code"], "invalid_request");
        let text = resp.to_string();
        for s in &sent {
            let head: String = s.chars().take(12).collect();
            assert!(
                !text.contains(&head),
                "{who} {path} echoed a sent string: {text}"
            );
        }
    }
    // Forbidden and unknown answers name neither the type nor the keyring sent.
    let (status, resp) = app
        .post(
            "tokenizer",
            "/v1/encrypt",
            json!({"keyring": "pii", "plaintext": ""}),
        )
        .await;
    assert_eq!(status, 403);
    assert!(!resp.to_string().contains("pii"), "{resp}");
    let (status, resp) = app
        .post(
            "app",
            "/v1/tokenize",
            json!({"type": "nosuchtype", "value": "x"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(!resp.to_string().contains("nosuchtype"), "{resp}");

    let audit = audit_text(&app).await;
    assert!(
        !audit.contains("xxxxxxxxxxxx"),
        "a caller's long string reached the audit trail"
    );
    assert!(!audit.contains('\u{0}'), "a NUL reached the audit trail");
    assert!(
        !audit.contains(pan_as_type),
        "a card number reached the audit trail"
    );
    assert!(!audit.contains("nosuchtype"));
}

/// The label prefix each test's vault gets ends up in its audit trail (the KEK's label),
/// which the leak scan searches for card numbers. The prefix once read
/// `t-tls12-29536-136-1234abcd`: pid, counter and hex joined across dashes into a
/// Luhn-valid 12-digit run, and CI failed on a card number that was no card number.
#[test]
fn the_labels_tests_give_their_vaults_never_read_as_card_numbers() {
    for _ in 0..20_000 {
        let label = format!("{}-kek-1", helpers::unique_prefix("tls12"));
        assert!(!tokenvault::cardscan::contains_pan(&label), "{label}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn card_numbers_sent_where_they_do_not_belong_never_reach_the_audit_trail() {
    let app = spawn_app("pan-audit").await;
    let token = app.tokenize("card", "5555555555554444").await;
    let pan = "4111111111111111";
    // A PAN where a token belongs: answered like any unknown token.
    let (status, _) = app
        .post("app", "/v1/detokenize", json!({"token": pan}))
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .post(
            "app",
            "/v1/detokenize/batch",
            json!({"tokens": [pan, "4111-1111-1111-1111"]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(app.get("app", &format!("/v1/tokens/{pan}")).await.0, 404);
    assert_eq!(app.delete("app", &format!("/v1/tokens/{pan}")).await.0, 404);
    // A PAN in the reason, with or without separators: refused, not stored.
    for reason in [
        "refund 4111 1111 1111 1111",
        "refund 4111-1111-1111-1111",
        "refund 4111111111111111",
    ] {
        let (status, resp) = app
            .post(
                "app",
                "/v1/detokenize",
                json!({"token": token, "reason": reason}),
            )
            .await;
        assert_eq!(status, 400, "{reason}: {resp}");
        assert!(resp.get("value").is_none());
    }
    // A PAN in metadata: refused, not stored.
    let (status, resp) = app
        .post(
            "app",
            "/v1/tokenize",
            json!({"type": "card", "value": "5105105105105100",
                   "metadata": {"note": "card 4111 1111 1111 1111"}}),
        )
        .await;
    assert_eq!(status, 422, "{resp}");
    assert_eq!(resp["error"]["code"], "invalid_value", "{resp}");
    // An ordinary reason with digits is kept.
    let (status, _) = app
        .post(
            "app",
            "/v1/detokenize",
            json!({"token": token, "reason": "order 12345"}),
        )
        .await;
    assert_eq!(status, 200);

    let audit = audit_text(&app).await;
    let digits: String = audit.chars().filter(char::is_ascii_digit).collect();
    assert!(
        !digits.contains(pan),
        "a card number reached the audit trail:\n{audit}"
    );
    assert!(audit.contains("order 12345"));
    let mut db = app.db().await;
    let stored: Vec<Option<String>> = sqlx::query_scalar("SELECT metadata FROM tokens")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert!(stored.iter().flatten().all(|m| !m.contains("4111")));
}

#[tokio::test(flavor = "multi_thread")]
async fn identities_without_a_client_entry_are_rate_limited() {
    let app = spawn_with("stranger-rate", |s, _| {
        s.limits.unknown_rate_per_second = 1.0;
        s.limits.unknown_burst = 3.0;
    })
    .await;
    let mut limited = 0;
    for _ in 0..10 {
        let r = client("stranger")
            .post(app.url("/v1/encrypt"))
            .json(&json!({"keyring": "pii", "plaintext": ""}))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            403 => {}
            429 => {
                assert!(r.headers().contains_key("retry-after"));
                limited += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(limited >= 6, "only {limited} of 10 were rate limited");
    // Known clients keep their own (unlimited) rate.
    for _ in 0..10 {
        assert_eq!(app.tokenize("card", "4111111111111111").await.len(), 28);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_failing_write_fails_alone_and_not_the_group_commit_it_shared() {
    // PostgreSQL refuses a NUL in text (SQLSTATE 22021); SQLite stores it. Only there can
    // one row make a real group commit fail.
    if helpers::postgres().is_none() {
        return;
    }
    let dir = helpers::test_dir("isolation");
    let settings = helpers::api_settings(&dir, "isolation");
    let vault = Vault::open(settings).await.unwrap();
    vault.keys.init("test", now_ms()).await.unwrap();
    let services = vault.services();
    let writer = &services.writer;
    let now = now_ms();
    // A token row the database refuses. The services never build one (names and strings
    // are checked before they are enqueued); the writer must still contain the damage.
    let bad = TokenInsert {
        token: "tok_bad\u{0}row".into(),
        token_type: "card".into(),
        keyring: "pan".into(),
        key_version: 1,
        ciphertext: vec![1, 2, 3],
        fingerprint: None,
        fingerprint_version: None,
        masked: "x".into(),
        metadata: None,
        created_at: now,
        expires_at: None,
        aad_version: 2,
        fingerprint_namespace: None,
    };
    let event = |i: usize| Write::Event {
        event: AuditEvent::new(format!("client-{i}"), Action::Read, Outcome::Success),
        at: now,
    };
    let bad_event = AuditEvent::new("client-bad", Action::Tokenize, Outcome::Success);
    let mut jobs: Vec<_> = (0..40).map(|i| writer.submit(event(i))).collect();
    jobs.insert(
        20,
        writer.submit(Write::InsertTokens {
            rows: vec![(bad, bad_event)],
            events: Vec::new(),
            journal: None,
        }),
    );
    let results = futures_util::future::join_all(jobs).await;
    let failed: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_err())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(failed, vec![20], "only the culprit fails");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_body_gets_a_readable_413_over_http1_and_http2() {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app("too-large").await;
    let body = format!(r#"{{"type":"text","value":"{}"}}"#, "a".repeat(2 << 20));

    // HTTP/1.1, written the way Python's http.client and Java's HttpURLConnection do:
    // the whole body first, then the answer is read.
    let config = helpers::client_tls(
        Some(&helpers::pki().clients["app"]),
        &[&rustls::version::TLS13],
    );
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let head = format!(
        "POST /v1/tokenize HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(body.as_bytes())
        .await
        .expect("the server took the whole body");
    tls.flush().await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tls.read_to_end(&mut answer),
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");

    // HTTP/2, as curl speaks it: the answer must arrive as an answer (curl gives up with
    // exit 92, "stream error in the HTTP/2 framing layer", when the stream is reset).
    let dir = &app.dir;
    let client = &helpers::pki().clients["app"];
    std::fs::write(dir.join("client.pem"), &client.cert_pem).unwrap();
    std::fs::write(dir.join("client-key.pem"), &client.key_pem).unwrap();
    std::fs::write(dir.join("big.json"), &body).unwrap();
    let mut curl = std::process::Command::new("curl");
    curl.args(["-sS", "--http2", "--cacert"])
        .arg(dir.join("ca.pem"))
        .arg("--cert")
        .arg(dir.join("client.pem"))
        .arg("--key")
        .arg(dir.join("client-key.pem"))
        .args(["-H", "content-type: application/json", "--data-binary"])
        .arg(format!("@{}", dir.join("big.json").display()))
        .args(["-w", "\n%{http_code} %{http_version}"])
        .arg(app.url("/v1/tokenize"));
    let out = tokio::task::spawn_blocking(move || curl.output())
        .await
        .unwrap()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.ends_with("413 2"), "{text}");
    assert!(text.contains("payload_too_large"), "{text}");
    std::fs::remove_file(dir.join("big.json")).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_rewrap_is_audited_so_contexts_cannot_be_guessed_silently() {
    use base64::Engine;
    let app = spawn_app("rewrap-oracle").await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let (status, ct) = app
        .post(
            "app",
            "/v1/encrypt",
            json!({"keyring": "pii", "plaintext": b64("canary-plaintext-91bd"), "context": b64("tenant-a")}),
        )
        .await;
    assert_eq!(status, 200, "{ct}");
    for guess in ["tenant-b", "tenant-c"] {
        let (status, _) = app
            .post(
                "app",
                "/v1/rewrap",
                json!({"ciphertext": ct["ciphertext"], "context": b64(guess)}),
            )
            .await;
        assert_eq!(status, 422);
    }
    let mut db = app.db().await;
    let failed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_events WHERE action = 'rewrap' AND outcome = 'failure' \
         AND reason = 'invalid_value' AND resource LIKE 'pii/%'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(failed, 2, "every failed open is in the audit trail");
}

#[test]
fn revealed_values_never_show_in_debug_output() {
    use tokenvault::api::crypto::{DecryptResponse, EncryptRequest};
    use tokenvault::api::tokens::DetokenizeResponse;
    let d = DetokenizeResponse {
        token: "tok_x".into(),
        token_type: "card".into(),
        value: Some("4111111111111111".into()),
        masked: None,
        metadata: None,
        synthetic: None,
    };
    assert!(!format!("{d:?}").contains("4111111111111111"), "{d:?}");
    assert!(
        serde_json::to_string(&d)
            .unwrap()
            .contains("4111111111111111")
    );
    let e: EncryptRequest =
        serde_json::from_value(json!({"keyring": "pii", "plaintext": "c2VjcmV0LXZhbHVl"})).unwrap();
    assert!(!format!("{e:?}").contains("c2VjcmV0LXZhbHVl"), "{e:?}");
    let p = DecryptResponse {
        plaintext: "c2VjcmV0LXZhbHVl".into(),
    };
    assert!(!format!("{p:?}").contains("c2VjcmV0LXZhbHVl"), "{p:?}");
    assert!(
        serde_json::to_string(&p)
            .unwrap()
            .contains("c2VjcmV0LXZhbHVl")
    );
}

/// Whether `needle` occurs in any of the vault's database files (SQLite file, WAL).
fn in_database_files(app: &TestApp, needle: &[u8]) -> Vec<String> {
    std::fs::read_dir(&app.dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("vault.db"))
        .filter(|e| {
            std::fs::read(e.path())
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_and_deleted_records_are_purged_and_gone_from_the_database_files() {
    let app = spawn_with("retention", |s, _| s.retention.purge_interval_secs = 1).await;
    let (status, short) = app
        .post(
            "app",
            "/v1/tokenize",
            json!({"type": "card", "value": "5105105105105100", "ttl_seconds": 1}),
        )
        .await;
    assert_eq!(status, 200);
    let short = short["token"].as_str().unwrap().to_owned();
    let deleted = app.tokenize("card", "4012888888881881").await;
    let kept = app.tokenize("card", "4222222222222").await;
    let mut db = app.db().await;
    let mut sealed = Vec::new();
    for t in [&short, &deleted] {
        let c: Vec<u8> = sqlx::query_scalar("SELECT ciphertext FROM tokens WHERE token = $1")
            .bind(t)
            .fetch_one(&mut db)
            .await
            .unwrap();
        sealed.push(c);
    }
    assert_eq!(
        app.delete("app", &format!("/v1/tokens/{deleted}")).await.0,
        204
    );
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;

    let left: Vec<String> = sqlx::query_scalar("SELECT token FROM tokens")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert_eq!(left, vec![kept.clone()], "the expired token is purged");
    let purged: Vec<String> = sqlx::query_scalar(
        "SELECT reason FROM audit_events WHERE action = 'token.purge' AND outcome = 'success'",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(purged, vec!["1 expired tokens purged".to_owned()]);
    drop(db);
    if helpers::postgres().is_none() {
        for (t, c) in [&short, &deleted].iter().zip(&sealed) {
            let found = in_database_files(&app, &c[c.len() - 24..]);
            assert!(
                found.is_empty(),
                "the sealed bytes of {t} are still in {found:?}"
            );
        }
    }
    assert_eq!(
        app.post("app", "/v1/detokenize", json!({"token": kept}))
            .await
            .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_decides_which_formats_a_type_allows() {
    use tokenvault::config::TokenFormat;
    let app = spawn_with("formats", |s, _| {
        s.types.get_mut("card").unwrap().formats = Some(vec![TokenFormat::Opaque]);
    })
    .await;
    for format in ["last4", "first6_last4"] {
        let (status, body) = app
            .post(
                "app",
                "/v1/tokenize",
                json!({"type": "card", "value": "4111111111111111", "format": format}),
            )
            .await;
        assert_eq!(status, 400, "{format}: {body}");
    }
    let (status, _) = app
        .post(
            "app",
            "/v1/tokenize",
            json!({"type": "card", "value": "4111111111111111", "format": "opaque"}),
        )
        .await;
    assert_eq!(status, 200);
}
