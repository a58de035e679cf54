//! Anomaly alerts to a webhook: every verdict above `allow` (alert, step-up, block) is
//! posted as JSON over HTTPS to `[anomaly.webhook] url`, signed with HMAC-SHA256.
//!
//! - The request path only puts the alert in a bounded queue (`try_send`): a slow,
//!   failing or unreachable receiver never delays a reveal. A full queue drops the alert.
//! - One task delivers, in order, retrying with doubling back-off up to `attempts`; an
//!   alert that still failed is dropped. Drops are counted in
//!   `tokenvault_anomaly_alerts_total{result="dropped"}` and recorded in the audit trail
//!   as one `alert.dropped` event per few seconds with the count, so a gap in what the
//!   receiver saw is itself evidence. The audit trail holds every alert in any case
//!   (`detokenize.anomaly`): the webhook is a notification, not the record.
//! - Signature: header `Tokenvault-Signature: t=<unix ms>,v1=<hex HMAC-SHA256 of
//!   "<t>.<body>">` under the secret in `secret_file`; a receiver recomputes it, compares
//!   in constant time and refuses old `t` (replay). `Tokenvault-Delivery` is the alert id,
//!   the same on every retry, for de-duplication.
//! - The receiver's certificate is verified against `ca_file` (an internal SIEM's CA, or
//!   the system bundle for a public one): there is no unverified mode.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use crate::audit::writer::{Write, Writer};
use crate::audit::{Action, AuditEvent, Outcome};

/// `[anomaly.webhook]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// `https://…` only.
    pub url: String,
    /// PEM certificates the receiver's certificate must chain to.
    pub ca_file: PathBuf,
    /// The HMAC key (at least 32 bytes of text), in a file only the vault's user reads.
    pub secret_file: PathBuf,
    /// Alerts waiting for delivery at most; more are dropped.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Tries per alert (the first included).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// One try's time limit.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Wait before the first retry; doubled for each next one.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
}

fn default_queue() -> usize {
    1024
}
fn default_attempts() -> u32 {
    5
}
fn default_timeout_ms() -> u64 {
    2_000
}
fn default_backoff_ms() -> u64 {
    500
}

/// How often dropped alerts are written to the audit trail (as one event with a count).
const DROP_REPORT_EVERY: Duration = Duration::from_secs(2);

/// The header names (lowercase, as HTTP/2 sends them).
pub const SIGNATURE_HEADER: &str = "tokenvault-signature";
pub const DELIVERY_HEADER: &str = "tokenvault-delivery";

/// One alert as the receiver gets it: identities, origins, reasons and token counts,
/// never a token or a value.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub id: String,
    pub event: &'static str,
    pub verdict: &'static str,
    pub identity: String,
    pub origin: String,
    pub score: u32,
    pub reasons: Vec<&'static str>,
    /// The held request (a step-up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub tokens: usize,
    /// Unix milliseconds.
    pub at: i64,
}

/// The receiver, ready to post to.
struct Target {
    url: reqwest::Url,
    client: reqwest::Client,
    secret: Zeroizing<Vec<u8>>,
    attempts: u32,
    backoff: Duration,
}

impl WebhookSettings {
    /// Reads the CA and the secret and builds the client; the error says what to fix.
    fn target(&self) -> Result<Target, String> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let url = reqwest::Url::parse(&self.url)
            .ok()
            .filter(|u| u.scheme() == "https" && u.host().is_some())
            .ok_or("anomaly.webhook.url must be an https:// URL")?;
        if self.queue == 0 || self.attempts == 0 || self.timeout_ms == 0 {
            return Err("anomaly.webhook: queue, attempts and timeout_ms must be above 0".into());
        }
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(&self.ca_file)
            .map_err(|e| format!("anomaly.webhook.ca_file {}: {e}", self.ca_file.display()))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("anomaly.webhook.ca_file: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("anomaly.webhook.ca_file: {e}"))?;
        }
        if roots.is_empty() {
            return Err("anomaly.webhook.ca_file holds no certificate".into());
        }
        let secret = crate::secret_file::read_private_file(&self.secret_file).map_err(|e| {
            format!(
                "anomaly.webhook.secret_file {}: {e}",
                self.secret_file.display()
            )
        })?;
        let secret = Zeroizing::new(secret.trim().as_bytes().to_vec());
        if secret.len() < 32 {
            return Err("anomaly.webhook.secret_file must hold at least 32 bytes".into());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_millis(self.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("anomaly.webhook: {e}"))?;
        Ok(Target {
            url,
            client,
            secret,
            attempts: self.attempts,
            backoff: Duration::from_millis(self.backoff_ms),
        })
    }

    /// Checks the settings as the config loads (`serve` refuses a webhook it could not
    /// use rather than run without alerts).
    pub fn validate(&self) -> Result<(), String> {
        self.target().map(drop)
    }
}

/// `t=<ms>,v1=<hex>`: the signature header of `body` sent at `t`.
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    // Invariant: HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

struct Inner {
    queue: Option<mpsc::Sender<Alert>>,
    dropped: Arc<AtomicU64>,
}

/// Where the guard sends alerts. Cheap to clone; sending never waits.
#[derive(Clone)]
pub struct Alerts {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts")
            .field("webhook", &self.inner.is_some())
            .finish()
    }
}

impl Alerts {
    /// No webhook configured.
    pub fn off() -> Self {
        Self { inner: None }
    }

    /// Starts delivery to the configured webhook (on the current tokio runtime). A
    /// webhook that cannot be used (the config check passed, the files changed since)
    /// is logged, and every alert counts as dropped.
    pub fn start(settings: Option<&WebhookSettings>, writer: Writer, clock: fn() -> i64) -> Self {
        let Some(settings) = settings else {
            return Self::off();
        };
        let dropped = Arc::new(AtomicU64::new(0));
        let queue = match settings.target() {
            Ok(target) => {
                let (tx, rx) = mpsc::channel(settings.queue);
                tokio::spawn(deliver(rx, target, dropped.clone(), clock));
                Some(tx)
            }
            Err(e) => {
                tracing::error!(error = %e, "anomaly webhook unusable: alerts are dropped");
                None
            }
        };
        let inner = Arc::new(Inner { queue, dropped });
        tokio::spawn(report_drops(Arc::downgrade(&inner), writer, clock));
        Self { inner: Some(inner) }
    }

    /// Queues an alert for delivery, or drops it (counted) when the queue is full.
    pub fn send(&self, alert: Alert) {
        let Some(inner) = &self.inner else { return };
        let queued = inner
            .queue
            .as_ref()
            .is_some_and(|q| q.try_send(alert).is_ok());
        if !queued {
            dropped(&inner.dropped);
        }
    }
}

fn dropped(count: &AtomicU64) {
    count.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("tokenvault_anomaly_alerts_total", "result" => "dropped").increment(1);
}

async fn deliver(
    mut rx: mpsc::Receiver<Alert>,
    target: Target,
    drops: Arc<AtomicU64>,
    clock: fn() -> i64,
) {
    while let Some(alert) = rx.recv().await {
        // Invariant: a struct of strings and numbers serializes.
        let body = serde_json::to_vec(&alert).expect("an alert serializes");
        let mut wait = target.backoff;
        let mut delivered = false;
        for attempt in 1..=target.attempts {
            let sent = target
                .client
                .post(target.url.clone())
                .header("content-type", "application/json")
                .header(SIGNATURE_HEADER, signature(&target.secret, clock(), &body))
                .header(DELIVERY_HEADER, alert.id.as_str())
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    delivered = true;
                    break;
                }
                Ok(r) => tracing::warn!(status = %r.status(), attempt, "webhook refused an alert"),
                Err(e) => tracing::warn!(error = %e, attempt, "webhook unreachable"),
            }
            if attempt < target.attempts {
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
        }
        if delivered {
            metrics::counter!("tokenvault_anomaly_alerts_total", "result" => "delivered")
                .increment(1);
        } else {
            dropped(&drops);
        }
    }
}

/// Writes the alerts dropped since the last report as one audit event, until the
/// services are dropped.
async fn report_drops(inner: Weak<Inner>, writer: Writer, clock: fn() -> i64) {
    let mut tick = tokio::time::interval(DROP_REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let n = inner.dropped.swap(0, Ordering::Relaxed);
        if n == 0 {
            continue;
        }
        let event = AuditEvent::new("system", Action::AlertDropped, Outcome::Failure)
            .origin("local")
            .reason(Some(format!(
                "{n} anomaly alerts not delivered to the webhook"
            )));
        if writer
            .submit(Write::Event { event, at: clock() })
            .await
            .is_err()
        {
            // Kept for the next report.
            inner.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_is_a_table_of_the_anomaly_settings() {
        let s: crate::anomaly::AnomalySettings = toml::from_str(
            "alert_at = 25\n[webhook]\nurl = \"https://siem:8443/h\"\n\
             ca_file = \"/etc/ca.pem\"\nsecret_file = \"/etc/s\"\nattempts = 3\n",
        )
        .unwrap();
        assert_eq!(s.rules.alert_at, 25);
        let w = s.webhook.unwrap();
        assert_eq!((w.attempts, w.queue), (3, 1024));
        assert!(
            toml::from_str::<crate::anomaly::AnomalySettings>("[webhook]\nurl = \"x\"\nbogus = 1")
                .is_err()
        );
    }

    #[test]
    fn the_signature_covers_the_time_and_the_body() {
        let s = signature(b"k", 1_700_000_000_000, b"{}");
        assert!(s.starts_with("t=1700000000000,v1="));
        assert_ne!(s, signature(b"k", 1_700_000_000_001, b"{}"));
        assert_ne!(s, signature(b"k", 1_700_000_000_000, b"{ }"));
        assert_ne!(s, signature(b"j", 1_700_000_000_000, b"{}"));
    }
}
