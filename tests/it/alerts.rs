//! Anomaly alerts to a webhook (issue 17): a real local HTTPS receiver gets each alert
//! signed with HMAC, retried after a failure under the same delivery id; a receiver that
//! hangs does not slow reveals, and the alerts it never got are counted and audited.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use tokenvault::anomaly::webhook::{WebhookSettings, signature};

use crate::helpers::{Receiver, TestApp, spawn_receiver, spawn_with, write_private};

const SECRET: &str = "tv-webhook-secret-for-tests-only-7c1e5a9d-b4f2";

fn webhook(rx: &Receiver, dir: &std::path::Path) -> WebhookSettings {
    write_private(&dir.join("webhook-secret"), SECRET);
    std::fs::write(
        dir.join("webhook-ca.pem"),
        &crate::helpers::pki().ca.cert_pem,
    )
    .unwrap();
    WebhookSettings {
        url: rx.url(),
        ca_file: dir.join("webhook-ca.pem"),
        secret_file: dir.join("webhook-secret"),
        queue: 4,
        attempts: 2,
        // Long enough that a reveal waiting for delivery would be plain to see.
        timeout_ms: 10_000,
        backoff_ms: 50,
    }
}

/// Every reveal of app scores 20 while its baseline is cold: an alert.
async fn alerting_app(tag: &str, rx: &Receiver) -> TestApp {
    spawn_with(tag, |s, dir| {
        s.anomaly.webhook = Some(webhook(rx, dir));
        s.clients.get_mut("app").unwrap().anomaly =
            Some(json!({"cold_start": "step_up", "alert_at": 10, "weights": {"cold_start": 20}}));
    })
    .await
}

async fn wait_for(mut done: impl FnMut() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_reaches_the_webhook_signed_and_is_retried_after_a_failure() {
    let rx = spawn_receiver().await;
    let app = alerting_app("alerts-signed", &rx).await;
    let pan = crate::helpers::random_pan();
    let token = app.tokenize("card", &pan).await;
    rx.got.fail_next.store(1, Ordering::SeqCst);
    let (status, body) = app
        .post("app", "/v1/detokenize", json!({"token": token}))
        .await;
    assert_eq!(status, 200, "an alert still reveals: {body}");
    wait_for(|| rx.posts().len() >= 2).await;
    let posts = rx.posts();
    assert_eq!(posts.len(), 2, "one failed try, one retry");
    let (headers, raw) = &posts[1];
    let alert: serde_json::Value = serde_json::from_slice(raw).unwrap();
    assert_eq!(alert["verdict"], "alert");
    assert_eq!(alert["identity"], "app");
    assert_eq!(alert["reasons"], json!(["cold_start"]));
    assert_eq!(alert["tokens"], 1);
    let text = String::from_utf8_lossy(raw);
    assert!(!text.contains(&pan) && !text.contains(&token), "{text}");
    let delivery =
        |h: &axum::http::HeaderMap| h["tokenvault-delivery"].to_str().unwrap().to_owned();
    assert_eq!(delivery(headers), alert["id"].as_str().unwrap());
    assert_eq!(
        delivery(&posts[0].0),
        delivery(headers),
        "a retry keeps its id"
    );
    // The receiver checks the signature with the shared secret; another body or secret
    // does not verify.
    let sig = headers["tokenvault-signature"].to_str().unwrap();
    let t: i64 = sig
        .strip_prefix("t=")
        .and_then(|r| r.split(',').next())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(sig, signature(SECRET.as_bytes(), t, raw));
    assert_ne!(sig, signature(b"another secret of enough length!!", t, raw));
    assert!((tokenvault::vault::now_ms() - t).abs() < 60_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_receiver_slows_no_reveal_and_dropped_alerts_are_audited() {
    let rx = spawn_receiver().await;
    rx.got.hang.store(true, Ordering::SeqCst);
    let app = alerting_app("alerts-hang", &rx).await;
    let token = app.tokenize("card", &crate::helpers::random_pan()).await;
    // 30 alerts against a queue of 4 and a receiver that never answers (10 s per try):
    // a reveal that waited for delivery would take minutes.
    let reveals = async {
        for _ in 0..30 {
            let (status, _) = app
                .post("app", "/v1/detokenize", json!({"token": token}))
                .await;
            assert_eq!(status, 200);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), reveals)
        .await
        .expect("reveals do not wait for the webhook");

    let mut db = app.db().await;
    let mut dropped = 0;
    for _ in 0..50 {
        let reasons: Vec<String> = sqlx::query_scalar(
            "SELECT reason FROM audit_events WHERE action = 'alert.dropped' AND outcome = 'failure'",
        )
        .fetch_all(&mut db)
        .await
        .unwrap();
        dropped = reasons
            .iter()
            .map(|r| r.split(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        if dropped >= 25 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // At most the queue (4) and the one in delivery were kept.
    assert!(dropped >= 25, "dropped alerts audited: {dropped}");
    let metrics = crate::helpers::metrics_text(&app.url("/metrics")).await;
    assert!(
        metrics.contains("tokenvault_anomaly_alerts_total{result=\"dropped\"}"),
        "{metrics}"
    );
}

#[test]
fn a_webhook_the_vault_could_not_use_is_refused_at_start() {
    let dir = crate::helpers::test_dir("alerts-config");
    std::fs::write(dir.join("ca.pem"), &crate::helpers::pki().ca.cert_pem).unwrap();
    write_private(&dir.join("secret"), SECRET);
    write_private(&dir.join("short"), "too short");
    let ok = WebhookSettings {
        url: "https://siem.example:8443/hook".into(),
        ca_file: dir.join("ca.pem"),
        secret_file: dir.join("secret"),
        queue: 8,
        attempts: 3,
        timeout_ms: 1000,
        backoff_ms: 10,
    };
    assert!(ok.validate().is_ok());
    let cases = [
        WebhookSettings {
            url: "http://siem.example/hook".into(),
            ..ok.clone()
        },
        WebhookSettings {
            secret_file: dir.join("short"),
            ..ok.clone()
        },
        WebhookSettings {
            ca_file: dir.join("secret"),
            ..ok.clone()
        },
        WebhookSettings {
            queue: 0,
            ..ok.clone()
        },
    ];
    for bad in cases {
        let e = bad.validate().unwrap_err();
        assert!(!e.contains(SECRET), "{e}");
    }
}
