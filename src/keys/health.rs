//! Whether the HSM answers, and what the vault does when it stops: it fails closed.
//!
//! The steady state makes no HSM call (data keys are cached), so an outage would go
//! unnoticed without a look: `serve` calls [`KeyManager::watch_hsm`] every
//! `hsm.health_interval_ms`, and any HSM call that fails with a device error or does not
//! answer within `hsm.call_timeout_ms` counts too. From that moment:
//! - every cached data key and fingerprint key is dropped (zeroized), so nothing is
//!   served from memory while the root of trust is unreachable;
//! - requests that need a key answer 503 `unavailable` with `Retry-After`, without
//!   calling the HSM, and `/readyz` answers 503;
//! - the outage is written to the audit trail (`hsm.unavailable`).
//!
//! Each later look reconnects (new sessions, a new login, the token and its keys found
//! again by label). Once the KEK answers again and still obeys the key policy (the object
//! found under its label may not be the one that was there before), `hsm.recovered` is
//! audited, the vault is ready and the active keys are unwrapped again through the HSM. No
//! restart is needed. A KEK that breaks the policy keeps the vault down.
//! If the audit trail cannot record the outage or the recovery, the vault stays down.
//!
//! One-shot CLI commands run no watch: after an HSM failure the command fails, and
//! running it again (rewrap and KEK rotation resume) starts with a fresh connection.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{KeyError, KeyManager};
use crate::audit::{Action, AuditEvent, Outcome};
use crate::hsm::HsmError;

/// The HSM's state as the vault sees it.
#[derive(Default)]
pub(super) struct Health {
    /// Read on every request: set while the HSM is not known to answer.
    down: AtomicBool,
    outage: Mutex<Option<Outage>>,
    /// Counts every failure, so the watch can tell whether one came in while it was
    /// reconnecting (then the outage is not over).
    failures: AtomicU64,
    /// Set while the watch's HSM call runs, which may outlast its timeout: a slow HSM
    /// must not pile up one blocked thread per look.
    watching: Arc<AtomicBool>,
}

/// Clears the watch's flag when its HSM call ends, however it ends.
struct WatchDone(Arc<AtomicBool>);

impl Drop for WatchDone {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

struct Outage {
    started: Instant,
    /// The first failure, as classified by the HSM module (never key material or values).
    reason: String,
    /// Whether `hsm.unavailable` is in the audit trail yet.
    audited: bool,
}

/// What one look at the HSM found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HsmStatus {
    /// It answered, as before.
    Up,
    /// It does not answer (yet); the vault is not ready.
    Down(String),
    /// It answers again after an outage of this many milliseconds.
    Recovered(u128),
}

impl KeyManager {
    /// Whether the HSM is known to answer. False from the first failed call until the
    /// watch has reconnected.
    pub fn hsm_available(&self) -> bool {
        !self.health.down.load(Ordering::Acquire)
    }

    /// Fails closed while the HSM is down: no cached key is handed out.
    pub(super) fn ensure_hsm_available(&self) -> Result<(), KeyError> {
        if self.hsm_available() {
            Ok(())
        } else {
            Err(KeyError::Hsm(HsmError::Unavailable(
                "the HSM is not answering; the vault is reconnecting".into(),
            )))
        }
    }

    /// Records an outage (the first failure wins) and drops every cached key.
    pub(super) fn mark_hsm_down(&self, reason: &str) {
        let mut outage = self.health.outage.lock().unwrap_or_else(|p| p.into_inner());
        if outage.is_none() {
            tracing::error!(reason, "the HSM stopped answering: failing closed");
            *outage = Some(Outage {
                started: Instant::now(),
                reason: reason.to_owned(),
                audited: false,
            });
        }
        self.health.failures.fetch_add(1, Ordering::AcqRel);
        self.health.down.store(true, Ordering::Release);
        drop(outage);
        self.forget_keys();
    }

    /// One look at the HSM (see the module documentation). `now` stamps audit events.
    pub async fn watch_hsm(&self, now: i64) -> HsmStatus {
        // The KEK the database names is the one that must answer; without a database
        // there is nothing to check (the database has its own readiness check).
        let kek = match self.store.active_kek().await {
            Ok(Some(row)) => row.label,
            Ok(None) | Err(_) => return self.status(),
        };
        if self.hsm_available() {
            let label = kek.clone();
            match self.watch_call(move |h| h.probe(&label)).await {
                None | Some(Ok(())) => return self.status(),
                Some(Err(e)) => self.mark_hsm_down(&e.to_string()),
            }
        }
        if let Err(e) = self.audit_outage(now).await {
            tracing::error!(error = %e, "could not audit the HSM outage; staying down");
            return self.status();
        }
        let failures = self.health.failures.load(Ordering::Acquire);
        let label = kek.clone();
        let reconnected = self
            .watch_call(move |h| {
                h.reconnect()?;
                h.probe(&label)?;
                h.check_kek(&label)
            })
            .await;
        match reconnected {
            Some(Ok(())) => {}
            Some(Err(KeyError::Hsm(e @ HsmError::KeyPolicy { .. }))) => {
                tracing::error!(error = %e, "the KEK found after reconnecting breaks the key policy; staying down");
                return self.status();
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "the HSM still does not answer");
                return self.status();
            }
            None => return self.status(),
        }
        let Some(outage_ms) = self.audit_recovery(now).await else {
            return self.status();
        };
        {
            let mut outage = self.health.outage.lock().unwrap_or_else(|p| p.into_inner());
            if self.health.failures.load(Ordering::Acquire) != failures {
                // A call failed after the reconnect: still down. The recovery is in the
                // trail, so this failure is audited as an outage of its own.
                if let Some(o) = &mut *outage {
                    o.audited = false;
                }
                return HsmStatus::Down("the HSM failed again while reconnecting".into());
            }
            outage.take();
            self.health.down.store(false, Ordering::Release);
        }
        tracing::warn!(
            outage_ms,
            "the HSM answers again: keys are reloaded through it"
        );
        if let Err(e) = self.warm().await {
            // A failure here marks the HSM down again through `hsm_call`, or is a key
            // problem that requests will report themselves.
            tracing::warn!(error = %e, "reloading keys after the HSM outage failed");
        }
        HsmStatus::Recovered(outage_ms)
    }

    /// Runs `f` through `hsm_call` unless the watch's previous call is still running.
    async fn watch_call(
        &self,
        f: impl FnOnce(&crate::hsm::Hsm) -> Result<(), HsmError> + Send + 'static,
    ) -> Option<Result<(), KeyError>> {
        if self.health.watching.swap(true, Ordering::AcqRel) {
            return None;
        }
        let done = WatchDone(self.health.watching.clone());
        Some(
            self.hsm_call(move |h| {
                let _done = done;
                f(h)
            })
            .await,
        )
    }

    fn status(&self) -> HsmStatus {
        match &*self.health.outage.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(o) => HsmStatus::Down(o.reason.clone()),
            None => HsmStatus::Up,
        }
    }

    /// Writes `hsm.unavailable` once per outage.
    async fn audit_outage(&self, now: i64) -> Result<(), KeyError> {
        let reason = {
            let outage = self.health.outage.lock().unwrap_or_else(|p| p.into_inner());
            match &*outage {
                Some(o) if !o.audited => o.reason.clone(),
                _ => return Ok(()),
            }
        };
        self.audit_hsm_event(Action::HsmUnavailable, Outcome::Failure, reason, now)
            .await?;
        if let Some(o) = &mut *self.health.outage.lock().unwrap_or_else(|p| p.into_inner()) {
            o.audited = true;
        }
        Ok(())
    }

    /// Writes `hsm.recovered`; None (still down) if it cannot.
    async fn audit_recovery(&self, now: i64) -> Option<u128> {
        let outage_ms = {
            let outage = self.health.outage.lock().unwrap_or_else(|p| p.into_inner());
            outage
                .as_ref()
                .map_or(0, |o| o.started.elapsed().as_millis())
        };
        let reason = format!("the HSM answers again after {outage_ms} ms");
        if let Err(e) = self
            .audit_hsm_event(Action::HsmRecovered, Outcome::Success, reason, now)
            .await
        {
            tracing::error!(error = %e, "could not audit the HSM recovery; staying down");
            return None;
        }
        Some(outage_ms)
    }

    async fn audit_hsm_event(
        &self,
        action: Action,
        outcome: Outcome,
        reason: String,
        now: i64,
    ) -> Result<(), KeyError> {
        let event = AuditEvent::new("system", action, outcome)
            .resource(format!("hsm:{}", self.hsm.token_label()))
            .reason(Some(reason));
        let mut atx = self.audit.begin().await?;
        atx.append(&event, now).await?;
        atx.commit().await?;
        Ok(())
    }
}
