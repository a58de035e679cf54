//! HSM fault injection. Each test runs `tokenvault serve` as its own process with the
//! fault-injecting PKCS#11 module of `tests/faulty-pkcs11` (a shim around the real
//! SoftHSM2 module) as its `hsm.module`, then injects one fault through the shim's control
//! file. During the fault every request that needs a key must answer 503 with Retry-After
//! (never an answer from keys cached in memory) and `/readyz` must answer 503; the outage
//! must be audited; and once the fault ends the same process must serve again by itself,
//! with every earlier token and ciphertext intact.
//!
//! Each fault gets its own server process: SoftHSM2 keeps login state per process, and
//! some faults end every session of the process.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::helpers;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tokenvault::config::Settings;

struct FaultyServer {
    child: std::process::Child,
    port: u16,
    control: PathBuf,
    settings: Settings,
    client: reqwest::Client,
    log: PathBuf,
}

impl Drop for FaultyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a request got back.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

impl FaultyServer {
    async fn start(tag: &str) -> Self {
        let (dir, settings) = helpers::process_settings(tag);
        let o = helpers::cli(&settings)
            .arg("init")
            .args(helpers::bootstrap_args())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let control = dir.join("hsm-fault");
        std::fs::write(&control, "ok").unwrap();
        let module = helpers::faulty_module();
        let (child, port) = helpers::serve_process_with(&settings, tag, |c| {
            c.env("TOKENVAULT_HSM__MODULE", &module)
                .env("FAULTY_PKCS11_MODULE", helpers::test_hsm().module)
                .env("FAULTY_PKCS11_CONTROL", &control)
                .env("TOKENVAULT_HSM__HEALTH_INTERVAL_MS", "200")
                .env("TOKENVAULT_HSM__CALL_TIMEOUT_MS", "500");
        })
        .await;
        let log = helpers::log_dir().join(format!("serve-{}-{tag}.log", settings.hsm.label_prefix));
        Self {
            child,
            port,
            control,
            settings,
            client: helpers::client("app"),
            log,
        }
    }

    fn inject(&self, fault: &str) {
        std::fs::write(&self.control, fault).unwrap();
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let r = req.timeout(Duration::from_secs(30)).send().await.unwrap();
        let status = r.status().as_u16();
        let retry_after = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = r.json().await.unwrap_or(Value::Null);
        Answer {
            status,
            retry_after,
            body,
        }
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(self.client.post(self.url(path)).json(&body))
            .await
    }

    async fn readyz(&self) -> Answer {
        self.send(self.client.get(self.url("/readyz"))).await
    }

    /// Polls `/readyz` until it answers `want` (bounded: a fault test must end).
    async fn wait_ready(&self, want: u16) -> Answer {
        let start = Instant::now();
        loop {
            let a = self.readyz().await;
            if a.status == want {
                return a;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "/readyz still answers {} ({}) instead of {want}",
                a.status,
                a.body
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The sum of the `/metrics` samples named `name` whose labels contain `label`.
    async fn metric(&self, name: &str, label: &str) -> f64 {
        helpers::metrics_text(&self.url("/metrics"))
            .await
            .lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// `tokenvault_hsm_calls_total{op="unwrap_data_key"}`.
    async fn unwraps(&self) -> u64 {
        self.metric("tokenvault_hsm_calls_total", "unwrap_data_key")
            .await as u64
    }

    /// Polls until the `tokenvault_hsm_up` gauge reads `want` (the watch sets it after each
    /// look, just after it changes readiness).
    async fn wait_hsm_up(&self, want: f64) {
        let start = Instant::now();
        while self.metric("tokenvault_hsm_up", "").await != want {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "tokenvault_hsm_up never read {want}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `(action, outcome, reason)` of the HSM events in the audit trail, in order.
    async fn hsm_events(&self) -> Vec<(String, String, Option<String>)> {
        let mut db = helpers::connect(&self.settings).await;
        sqlx::query_as(
            "SELECT action, outcome, reason FROM audit_events WHERE action LIKE 'hsm.%' ORDER BY seq",
        )
        .fetch_all(&mut db)
        .await
        .unwrap()
    }

    /// The shim's record of every `C_Login` and its return value.
    fn logins(&self) -> Vec<String> {
        std::fs::read_to_string(self.control.with_extension("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// The whole story for one fault; `logs_out` says whether the fault ends the process's
/// sessions and login (so recovery must log in again).
async fn the_vault_fails_closed_and_recovers_from(tag: &str, fault: &str, logs_out: bool) {
    let mut server = FaultyServer::start(tag).await;
    let pid = server.child.id();

    // Before: a value of each kind, and the keys in memory.
    let pan = helpers::random_pan();
    let t = server
        .post("/v1/tokenize", json!({"type": "card", "value": pan}))
        .await;
    assert_eq!(t.status, 200, "{}", t.body);
    let token = t.body["token"].as_str().unwrap().to_owned();
    let email = format!("{tag}@example.com");
    let d = server
        .post("/v1/tokenize", json!({"type": "email_det", "value": email}))
        .await;
    assert_eq!(d.status, 200, "{}", d.body);
    let det_token = d.body["token"].as_str().unwrap().to_owned();
    let secret = B64.encode(format!("secret of {tag}"));
    let e = server
        .post(
            "/v1/encrypt",
            json!({"keyring": "pii", "plaintext": secret}),
        )
        .await;
    assert_eq!(e.status, 200, "{}", e.body);
    let ciphertext = e.body["ciphertext"].as_str().unwrap().to_owned();
    assert_eq!(server.readyz().await.status, 200);
    let unwraps_before = server.unwraps().await;

    // The fault: not ready, and every key-using request fails closed.
    server.inject(fault);
    let not_ready = server.wait_ready(503).await;
    assert_eq!(not_ready.body["hsm"], "unavailable", "{}", not_ready.body);
    assert_eq!(not_ready.body["database"], "ok", "{}", not_ready.body);
    server.wait_hsm_up(0.0).await;
    let unwraps_at_fault = server.unwraps().await;
    let other_pan = helpers::random_pan();
    let mut refused = 0;
    for _round in 0..3 {
        let answers = [
            server
                .post("/v1/tokenize", json!({"type": "card", "value": other_pan}))
                .await,
            server
                .post("/v1/tokenize", json!({"type": "email_det", "value": email}))
                .await,
            server.post("/v1/detokenize", json!({"token": token})).await,
            server
                .post(
                    "/v1/detokenize/batch",
                    json!({"tokens": [token, det_token]}),
                )
                .await,
            server
                .post(
                    "/v1/encrypt",
                    json!({"keyring": "pii", "plaintext": secret}),
                )
                .await,
            server
                .post("/v1/decrypt", json!({"ciphertext": ciphertext}))
                .await,
            server
                .post("/v1/rewrap", json!({"ciphertext": ciphertext}))
                .await,
        ];
        for a in answers {
            // A batch answers 200 with every item failed, or 503 as a whole.
            let items_failed = a.body["items"].as_array().is_some_and(|items| {
                items
                    .iter()
                    .all(|i| i["error"]["code"] == "unavailable" && i.get("value").is_none())
            });
            if a.status == 200 && items_failed {
                refused += 1;
                continue;
            }
            assert_eq!(a.status, 503, "answered during the HSM fault: {}", a.body);
            assert_eq!(a.body["error"]["code"], "unavailable", "{}", a.body);
            assert!(a.retry_after.is_some(), "503 without Retry-After");
            let text = a.body.to_string();
            assert!(!text.contains(&pan) && !text.contains(&other_pan) && !text.contains(&email));
            refused += 1;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(refused, 21);
    // Refused without asking the HSM: nothing hammers a device that is down.
    assert_eq!(
        server.unwraps().await,
        unwraps_at_fault,
        "requests called the HSM during the outage"
    );
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited during the fault"
    );

    // The fault ends: the same process is ready again by itself.
    server.inject("ok");
    server.wait_ready(200).await;
    server.wait_hsm_up(1.0).await;
    assert_eq!(server.child.id(), pid);
    let back = server.post("/v1/detokenize", json!({"token": token})).await;
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!(back.body["value"], pan);
    let again = server
        .post("/v1/tokenize", json!({"type": "email_det", "value": email}))
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        again.body["token"],
        det_token.as_str(),
        "deterministic token changed"
    );
    let plain = server
        .post("/v1/decrypt", json!({"ciphertext": ciphertext}))
        .await;
    assert_eq!(plain.status, 200, "{}", plain.body);
    assert_eq!(plain.body["plaintext"], secret.as_str());
    let fresh = server
        .post("/v1/tokenize", json!({"type": "card", "value": other_pan}))
        .await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    // The cache was emptied, so the watch's reload or these requests unwrapped through
    // the HSM again (checked after them: readiness returns just before the reload).
    assert!(
        server.unwraps().await > unwraps_before,
        "keys were not reloaded through the HSM after the outage"
    );

    // Audited: one outage, then its end, in that order.
    let events = server.hsm_events().await;
    let actions: Vec<(&str, &str)> = events
        .iter()
        .map(|(a, o, _)| (a.as_str(), o.as_str()))
        .collect();
    assert_eq!(
        actions,
        [("hsm.unavailable", "failure"), ("hsm.recovered", "success")],
        "{events:?}"
    );
    if logs_out {
        let ok_logins = server.logins().iter().filter(|l| *l == "login 0x0").count();
        assert!(
            ok_logins >= 2,
            "the vault did not log in again after the HSM dropped its login: {:?}",
            server.logins()
        );
    }
    let verify = helpers::cli(&server.settings)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_errors_fail_closed_and_the_vault_recovers_without_a_restart() {
    the_vault_fails_closed_and_recovers_from("fault-device", "device_error", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_sessions_fail_closed_and_the_vault_logs_in_again() {
    the_vault_fails_closed_and_recovers_from("fault-session", "session_invalid", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_token_fails_closed_and_is_found_again_when_reinserted() {
    the_vault_fails_closed_and_recovers_from("fault-removed", "removed", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_hsm_times_out_fails_closed_and_recovers() {
    the_vault_fails_closed_and_recovers_from("fault-slow", "slow 1500", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vault_stays_down_while_the_audit_trail_cannot_record_the_recovery() {
    let server = FaultyServer::start("fault-noaudit").await;
    let pan = helpers::random_pan();
    let t = server
        .post("/v1/tokenize", json!({"type": "card", "value": pan}))
        .await;
    assert_eq!(t.status, 200, "{}", t.body);
    let token = t.body["token"].as_str().unwrap().to_owned();

    server.inject("device_error");
    server.wait_ready(503).await;
    let mut db = helpers::connect(&server.settings).await;
    sqlx::query("ALTER TABLE audit_events RENAME TO audit_events_away")
        .execute(&mut db)
        .await
        .unwrap();
    server.inject("ok");
    // The HSM answers again, but its recovery cannot be recorded: the vault stays down,
    // and says why, until the audit trail can be written.
    let start = Instant::now();
    while !std::fs::read_to_string(&server.log)
        .unwrap_or_default()
        .contains("staying down")
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the watch never tried to recover"
        );
        assert_eq!(server.readyz().await.status, 503);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.readyz().await.status, 503);
    let d = server.post("/v1/detokenize", json!({"token": token})).await;
    assert_eq!(d.status, 503, "{}", d.body);

    sqlx::query("ALTER TABLE audit_events_away RENAME TO audit_events")
        .execute(&mut db)
        .await
        .unwrap();
    server.wait_ready(200).await;
    let d = server.post("/v1/detokenize", json!({"token": token})).await;
    assert_eq!(d.status, 200, "{}", d.body);
    assert_eq!(d.body["value"], pan);
    let actions: Vec<String> = server
        .hsm_events()
        .await
        .into_iter()
        .map(|(a, _, _)| a)
        .collect();
    assert_eq!(actions, ["hsm.unavailable", "hsm.recovered"]);
}

/// Review L5: an HSM that answers `C_UnwrapKey` with CKR_GENERAL_ERROR is failing, not
/// proving the stored key was altered (SoftHSM2 says GENERAL_ERROR for both): requests
/// answer 503 `unavailable`, never 500 `integrity_error`, the node counts the HSM as
/// down, and the audit trail records an HSM outage, not tampering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_general_error_on_unwrap_is_a_device_fault_not_tampering() {
    let server = FaultyServer::start("fault-unwrap").await;
    let pan = helpers::random_pan();
    let t = server
        .post("/v1/tokenize", json!({"type": "card", "value": pan}))
        .await;
    assert_eq!(t.status, 200, "{}", t.body);
    let token = t.body["token"].as_str().unwrap().to_owned();

    // An outage empties the key cache, so the next use of a key unwraps it again; the HSM
    // then comes back failing every unwrap.
    server.inject("device_error");
    server.wait_ready(503).await;
    server.inject("unwrap_general_error");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        let d = server.post("/v1/detokenize", json!({"token": token})).await;
        assert_ne!(
            d.body["error"]["code"], "integrity_error",
            "a device fault was reported as tampering: {}",
            d.body
        );
        assert_eq!(d.status, 503, "{}", d.body);
        assert_eq!(d.body["error"]["code"], "unavailable", "{}", d.body);
        assert!(d.body.get("value").is_none());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = server.hsm_events().await;
    assert!(
        events.iter().any(|(a, _, r)| a == "hsm.unavailable"
            && r.as_deref().unwrap_or("").contains("C_UnwrapKey")),
        "the failing unwrap was not audited as an HSM outage: {events:?}"
    );
    let log = std::fs::read_to_string(&server.log).unwrap_or_default();
    assert!(
        !log.contains("integrity check") && !log.contains("altered"),
        "the log calls a device fault tampering"
    );

    server.inject("ok");
    server.wait_ready(200).await;
    let d = server.post("/v1/detokenize", json!({"token": token})).await;
    assert_eq!(d.status, 200, "{}", d.body);
    assert_eq!(d.body["value"], pan);
}

/// Review L4: when the HSM comes back after an outage, the KEK found under the vault's
/// label must still obey the key policy; one that does not (here it was swapped, during
/// the outage, for a key that is not sensitive) keeps the node not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kek_that_breaks_the_policy_after_a_reconnect_keeps_the_node_not_ready() {
    let server = FaultyServer::start("fault-badkek").await;
    let t = server
        .post(
            "/v1/tokenize",
            json!({"type": "card", "value": helpers::random_pan()}),
        )
        .await;
    assert_eq!(t.status, 200, "{}", t.body);
    server.inject("device_error");
    server.wait_ready(503).await;
    let kek = tokenvault::keys::KeyLabels::new(&server.settings.hsm.label_prefix).kek(1);
    helpers::replace_kek(&kek, &[cryptoki::object::Attribute::Sensitive(false)]);
    server.inject("ok");
    // The watch reconnects every 200 ms; the node must stay down through many looks.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        let r = server.readyz().await;
        assert_eq!(
            r.status, 503,
            "ready with a KEK that breaks the key policy: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(&server.log).unwrap_or_default();
    assert!(log.contains("CKA_SENSITIVE"), "the log does not say why");
}
