//! Key lifecycle for security officers: rotation, KEK rotation, retirement, destruction,
//! durable usage counting and automatic rotation. Every step is one transaction with its
//! audit event, so an interrupted step leaves either the old state or the new one.

use std::collections::HashMap;
use std::sync::Arc;

use super::{FINGERPRINT_KEYRING, KeyError, KeyManager, KeyState, KeyVersion};
use crate::audit::{Action, AuditEvent, Outcome};
use crate::crypto::DataKey;
use crate::hsm::{HsmError, WrapMechanism};
use crate::store::{StateChange, StoreError};

/// Encryptions reserved in the database for this process and not used yet. A crash
/// loses at most the unused part of a block: the count errs high, never low.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reservation {
    version: KeyVersion,
    remaining: u64,
}

/// How often `rotate_kek` looks for data keys created while it re-wrapped before it
/// re-wraps the last of them under the audit head lock.
const KEK_ROTATION_ROUNDS: usize = 3;

/// What `rotate_kek` did.
#[derive(Debug)]
pub struct KekRotation {
    pub old: String,
    pub new: String,
    pub rewrapped: usize,
}

impl KeyManager {
    pub(super) fn settings(&self, keyring: &str) -> (i64, u64) {
        let s = self.keyrings.get(keyring).cloned().unwrap_or_default();
        (
            i64::from(s.cryptoperiod_days) * super::DAY_MS,
            s.usage_limit.max(1),
        )
    }

    /// Fails unless `keyring` is configured (or the fingerprint keyring).
    /// Whether `keyring` is a configured keyring for user data (not the internal
    /// fingerprint keyring).
    pub fn has_keyring(&self, keyring: &str) -> bool {
        self.keyrings.contains_key(keyring)
    }

    /// When the newest version of a keyring or signing key was made (Unix ms).
    pub async fn newest_version_created(&self, name: &str) -> Result<Option<i64>, KeyError> {
        if self.signing_algorithm(name).is_some() {
            let versions = self.store.signing_versions(name).await?;
            return Ok(versions.iter().map(|v| v.created_at).max());
        }
        Ok(self
            .store
            .data_keys()
            .await?
            .into_iter()
            .filter(|k| k.keyring == name)
            .map(|k| k.created_at)
            .max())
    }

    /// Whether `keyring` encrypts convergently (deterministically per context).
    pub fn is_convergent(&self, keyring: &str) -> bool {
        self.keyrings.get(keyring).is_some_and(|k| k.convergent)
    }

    /// Whether `keyring` is configured `derived` (every operation names a context).
    pub fn is_derived(&self, keyring: &str) -> bool {
        self.keyrings.get(keyring).is_some_and(|k| k.derived)
    }

    pub fn check_keyring(&self, keyring: &str) -> Result<(), KeyError> {
        if keyring == FINGERPRINT_KEYRING || self.has_keyring(keyring) {
            Ok(())
        } else {
            Err(KeyError::UnknownKeyring(keyring.to_owned()))
        }
    }

    async fn active_kek_label(&self) -> Result<String, KeyError> {
        Ok(self
            .store
            .active_kek()
            .await?
            .ok_or_else(|| KeyError::NotInitialized("(KEK)".into()))?
            .label)
    }

    /// A new active version; older versions stay decrypt-only.
    pub async fn rotate(
        &self,
        keyring: &str,
        actor: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<KeyVersion, KeyError> {
        if keyring != FINGERPRINT_KEYRING && self.signing_algorithm(keyring).is_some() {
            return self.rotate_signing(keyring, actor, reason, now).await;
        }
        self.check_keyring(keyring)?;
        let kek = self.active_kek_label().await?;
        self.create_version(keyring, &kek, None, actor, reason, now)
            .await
    }

    /// Rotates only if `version` is still active (automatic rotation on several nodes).
    async fn rotate_if(
        &self,
        keyring: &str,
        version: KeyVersion,
        reason: &str,
        now: i64,
    ) -> Result<KeyVersion, KeyError> {
        let kek = self.active_kek_label().await?;
        let v = self
            .create_version(keyring, &kek, Some(version), "system", Some(reason), now)
            .await?;
        if v != version {
            tracing::info!(
                keyring,
                from = version.get(),
                to = v.get(),
                reason,
                "data key rotated"
            );
        }
        Ok(v)
    }

    /// The active key for sealing `uses` values, counted against the version's usage
    /// limit; at the limit the keyring rotates first.
    pub async fn seal_key(
        &self,
        keyring: &str,
        uses: u64,
        now: i64,
    ) -> Result<(KeyVersion, Arc<DataKey>), KeyError> {
        let (_, limit) = self.settings(keyring);
        let block = (limit / 1024).clamp(1, 4096);
        for _ in 0..8 {
            let (version, key) = self.active(keyring).await?;
            let mut reservations = self.reservations.lock().await;
            let r = reservations
                .entry(keyring.to_owned())
                .or_insert(Reservation {
                    version,
                    remaining: 0,
                });
            if r.version != version {
                *r = Reservation {
                    version,
                    remaining: 0,
                };
            }
            if r.remaining >= uses {
                r.remaining -= uses;
                return Ok((version, key));
            }
            let row = self
                .store
                .data_key(keyring, i64::from(version.get()))
                .await?
                .ok_or_else(|| KeyError::UnknownVersion(keyring.to_owned(), version))?;
            let used = u64::try_from(row.usage_count).unwrap_or(u64::MAX);
            let available = limit.saturating_sub(used);
            let need = uses - r.remaining;
            if row.state != KeyState::Active.as_str() || available < need {
                drop(reservations);
                if row.state == KeyState::Active.as_str() {
                    self.rotate_if(keyring, version, "usage limit reached", now)
                        .await?;
                } else {
                    self.refresh().await?;
                }
                continue;
            }
            let n = need.max(block).min(available);
            let n_db = i64::try_from(n).unwrap_or(i64::MAX);
            if self
                .store
                .reserve_usage(keyring, row.version, row.usage_count, n_db)
                .await?
            {
                r.remaining += n;
            }
        }
        Err(KeyError::Internal(format!(
            "could not reserve usage of keyring `{keyring}` (contention)"
        )))
    }

    /// Rotates every keyring whose active version passed its cryptoperiod or usage limit.
    /// `serve` calls this periodically; several nodes calling it rotate once.
    pub async fn maintain(&self, now: i64) -> Result<Vec<String>, KeyError> {
        let mut rotated = Vec::new();
        for row in self.store.data_keys().await? {
            if row.state != KeyState::Active.as_str() {
                continue;
            }
            let Some(v) = KeyVersion::from_db(row.version) else {
                continue;
            };
            let (_, limit) = self.settings(&row.keyring);
            let reason = if now >= row.cryptoperiod_ends_at {
                "cryptoperiod ended"
            } else if u64::try_from(row.usage_count).unwrap_or(0) >= limit {
                "usage limit reached"
            } else {
                continue;
            };
            let new = self.rotate_if(&row.keyring, v, reason, now).await?;
            rotated.push(format!("{} v{} -> v{} ({reason})", row.keyring, v, new));
        }
        Ok(rotated)
    }

    /// A new KEK generated in the HSM; every data key re-wrapped under it in one
    /// transaction; the old KEK kept (retired) until it is destroyed under dual control.
    /// Safe to interrupt: before the commit nothing refers to the new KEK, and a re-run
    /// picks up the half-made one.
    pub async fn rotate_kek(
        &self,
        actor: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<KekRotation, KeyError> {
        let old = self.active_kek_label().await?;
        let keks = self.store.keks().await?;
        let new = match keks.iter().find(|k| k.state == "pending") {
            Some(pending) => pending.label.clone(),
            None => {
                let label = self.labels.kek(keks.len() + 1);
                let mut atx = self.audit.begin().await?;
                self.store
                    .insert_kek_state(&mut atx.tx, &label, "pending", now)
                    .await?;
                let event = AuditEvent::new(actor, Action::KekCreate, Outcome::Success)
                    .resource(&label)
                    .reason(Some("rotation started".into()));
                atx.append(&event, now).await?;
                atx.commit().await?;
                label
            }
        };
        let l = new.clone();
        match self.hsm_call(move |h| h.ensure_kek(&l)).await {
            Ok(_) => {}
            // A pending KEK was never committed: nothing is wrapped under it. If an earlier
            // run died while the HSM created it (a half-made or doubled object), discard
            // it and generate it again.
            Err(KeyError::Hsm(HsmError::KeyPolicy { .. }))
                if self.store.keys_per_kek(&new).await? == 0 =>
            {
                tracing::warn!(label = %new, "discarding an incomplete pending KEK left by an interrupted rotation");
                let l = new.clone();
                self.hsm_call(move |h| h.destroy_objects(&l)).await?;
                let l = new.clone();
                self.hsm_call(move |h| h.ensure_kek(&l)).await?;
            }
            Err(e) => return Err(e),
        }

        // Re-wrap outside any database lock, then commit in one audited transaction that
        // first checks, under the audit head lock every key change takes, that no data key
        // is wrapped under another KEK than the ones re-wrapped here. A data key created
        // meanwhile (automatic rotation, another node) is picked up by the next round; in
        // the last round the few such keys are re-wrapped under the lock, so a busy
        // keyring cannot starve the rotation. Once the commit is in, `create_version`
        // sees the new KEK.
        let mechanism = self.hsm.wrap_mechanism().to_string();
        let mut rewrapped: HashMap<(String, i64), (String, Vec<u8>)> = HashMap::new();
        for round in 1..=KEK_ROTATION_ROUNDS {
            let rows = self.store.data_keys().await?;
            for row in rows
                .iter()
                .filter(|r| r.wrapped_key.is_some() && r.kek_label != new)
            {
                self.rewrap_once(row, &new, &mut rewrapped).await?;
            }
            let mut atx = self.audit.begin().await?;
            let remaining = self.store.keys_not_under_in(&mut atx.tx, &new).await?;
            let missing: Vec<&(String, i64, String)> = remaining
                .iter()
                .filter(|(keyring, version, from)| {
                    rewrapped
                        .get(&(keyring.clone(), *version))
                        .is_none_or(|(f, _)| f != from)
                })
                .collect();
            if !missing.is_empty() {
                if round < KEK_ROTATION_ROUNDS {
                    drop(atx);
                    tracing::info!(
                        n = missing.len(),
                        "data keys appeared during the KEK rotation; re-wrapping them too"
                    );
                    continue;
                }
                for (keyring, version, _) in missing {
                    let row = self
                        .store
                        .data_key(keyring, *version)
                        .await?
                        .ok_or_else(|| StoreError::Corrupt("a data key vanished".into()))?;
                    self.rewrap_once(&row, &new, &mut rewrapped).await?;
                }
            }
            for (keyring, version, _) in &remaining {
                let (_, wrapped) = &rewrapped[&(keyring.clone(), *version)];
                self.store
                    .rewrap_data_key(&mut atx.tx, keyring, *version, wrapped, &mechanism, &new)
                    .await?;
            }
            self.store
                .set_kek_state(&mut atx.tx, &old, "retired", now)
                .await?;
            self.store
                .set_kek_state(&mut atx.tx, &new, "active", now)
                .await?;
            let event = AuditEvent::new(actor, Action::KekRotate, Outcome::Success)
                .resource(format!("{old}->{new}"))
                .reason(Some(reason.map_or_else(
                    || format!("{} data keys re-wrapped", remaining.len()),
                    str::to_owned,
                )));
            atx.append(&event, now).await?;
            atx.commit().await?;
            return Ok(KekRotation {
                old,
                new,
                rewrapped: remaining.len(),
            });
        }
        Err(KeyError::Internal(format!(
            "KEK rotation to '{new}' ended without a commit"
        )))
    }

    /// Re-wraps `row` under `new` in the HSM unless `done` already holds it re-wrapped
    /// from the KEK it is under now.
    async fn rewrap_once(
        &self,
        row: &crate::store::DataKeyRow,
        new: &str,
        done: &mut HashMap<(String, i64), (String, Vec<u8>)>,
    ) -> Result<(), KeyError> {
        let id = (row.keyring.clone(), row.version);
        if done
            .get(&id)
            .is_some_and(|(from, _)| *from == row.kek_label)
        {
            return Ok(());
        }
        let mechanism =
            WrapMechanism::from_stored(&row.wrap_mechanism).map_err(StoreError::Corrupt)?;
        let (from, to, wrapped) = (
            row.kek_label.clone(),
            new.to_owned(),
            row.wrapped_key.clone().unwrap_or_default(),
        );
        let out = self
            .hsm_call(move |h| h.rewrap_data_key(&from, mechanism, &wrapped, &to))
            .await?;
        done.insert(id, (row.kek_label.clone(), out));
        Ok(())
    }

    /// When a version was created and when its state last changed (for a destroyed
    /// version: when it was destroyed).
    pub async fn key_lifetime(
        &self,
        keyring: &str,
        version: KeyVersion,
    ) -> Result<(i64, i64), KeyError> {
        let row = self.version_row(keyring, version).await?;
        Ok((row.created_at, row.state_changed_at))
    }

    pub async fn is_destroyed(&self, keyring: &str, version: KeyVersion) -> Result<bool, KeyError> {
        let row = self.version_row(keyring, version).await?;
        Ok(KeyState::parse(&row.state) == Some(KeyState::Destroyed))
    }

    /// Every KEK the vault has made, in every state.
    pub async fn kek_rows(&self) -> Result<Vec<crate::store::KekRow>, KeyError> {
        Ok(self.store.keks().await?)
    }

    async fn version_row(
        &self,
        keyring: &str,
        version: KeyVersion,
    ) -> Result<crate::store::DataKeyRow, KeyError> {
        self.check_keyring(keyring)?;
        self.store
            .data_key(keyring, i64::from(version.get()))
            .await?
            .ok_or_else(|| KeyError::UnknownVersion(keyring.to_owned(), version))
    }

    /// Checks that `version` may be retired; `force` allows records to remain (dual control).
    pub async fn check_retire(
        &self,
        keyring: &str,
        version: KeyVersion,
        force: bool,
    ) -> Result<(), KeyError> {
        let row = self.version_row(keyring, version).await?;
        match KeyState::parse(&row.state) {
            Some(KeyState::Active) => {
                return Err(KeyError::Lifecycle(format!(
                    "{keyring} v{version} is the active version — rotate the keyring first (tokenvault keys rotate {keyring})"
                )));
            }
            Some(KeyState::DecryptOnly) => {}
            _ => {
                return Err(KeyError::Lifecycle(format!(
                    "{keyring} v{version} is already {}",
                    row.state
                )));
            }
        }
        let records = self.store.records_under(keyring, row.version).await?;
        if records > 0 && !force {
            return Err(KeyError::Lifecycle(format!(
                "{records} records are still under {keyring} v{version} — run `tokenvault keys rewrap {keyring}` first, \
                 or request a forced retirement under dual control (--force)"
            )));
        }
        Ok(())
    }

    /// decrypt-only → retired: the version is no longer used at all.
    pub async fn retire(
        &self,
        keyring: &str,
        version: KeyVersion,
        force: bool,
        actor: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<(), KeyError> {
        self.check_retire(keyring, version, force).await?;
        let mut atx = self.audit.begin().await?;
        let v = i64::from(version.get());
        let change = StateChange {
            keyring,
            version: v,
            from: &["decrypt-only"],
            to: "retired",
            reason,
            now,
        };
        if !self.store.set_key_state(&mut atx.tx, &change).await? {
            return Err(KeyError::Lifecycle(format!(
                "{keyring} v{version} changed state meanwhile; look again"
            )));
        }
        let action = if force {
            Action::KeyRetireForced
        } else {
            Action::KeyRetire
        };
        let event = AuditEvent::new(actor, action, Outcome::Success)
            .resource(format!("{keyring}/{version}"))
            .reason(reason.map(str::to_owned));
        atx.append(&event, now).await?;
        atx.commit().await?;
        self.refresh().await
    }

    /// Checks that `version` may be destroyed: it must be retired.
    pub async fn check_destroy(&self, keyring: &str, version: KeyVersion) -> Result<i64, KeyError> {
        let row = self.version_row(keyring, version).await?;
        if row.state != KeyState::Retired.as_str() {
            return Err(KeyError::Lifecycle(format!(
                "{keyring} v{version} is {}; only a retired version can be destroyed (tokenvault keys retire)",
                row.state
            )));
        }
        Ok(self.store.records_under(keyring, row.version).await?)
    }

    /// Crypto-shredding: the wrapped key is erased; what it protected can never be read.
    pub async fn destroy(
        &self,
        keyring: &str,
        version: KeyVersion,
        actor: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<(), KeyError> {
        let records = self.check_destroy(keyring, version).await?;
        let mut atx = self.audit.begin().await?;
        if !self
            .store
            .destroy_data_key(&mut atx.tx, keyring, i64::from(version.get()), reason, now)
            .await?
        {
            return Err(KeyError::Lifecycle(format!(
                "{keyring} v{version} changed state meanwhile; look again"
            )));
        }
        let event = AuditEvent::new(actor, Action::KeyDestroy, Outcome::Success)
            .resource(format!("{keyring}/{version}"))
            .reason(Some(format!(
                "{}; {records} records crypto-shredded",
                reason.unwrap_or("destroyed")
            )));
        atx.append(&event, now).await?;
        atx.commit().await?;
        self.refresh().await
    }

    /// Checks that a KEK may be destroyed: not active, and wrapping no data key.
    pub async fn check_destroy_kek(&self, label: &str) -> Result<(), KeyError> {
        let kek = self
            .store
            .keks()
            .await?
            .into_iter()
            .find(|k| k.label == label);
        let Some(kek) = kek else {
            return Err(KeyError::Lifecycle(format!(
                "no KEK labelled '{label}' (see tokenvault keys list)"
            )));
        };
        if kek.state != "retired" {
            return Err(KeyError::Lifecycle(format!(
                "KEK '{label}' is {}; only a retired KEK can be destroyed",
                kek.state
            )));
        }
        let users = self.store.keys_per_kek(label).await?;
        if users > 0 {
            return Err(KeyError::Lifecycle(format!(
                "KEK '{label}' still wraps {users} data keys — run keys rotate-kek"
            )));
        }
        Ok(())
    }

    /// Destroys a retired KEK in the HSM, audited before and after:
    /// 1. the intent (`key.kek.destroy`, "destroying …") is committed first, so no KEK
    ///    ever leaves the HSM without a record, and no database lock is held during the
    ///    HSM call;
    /// 2. the HSM object is destroyed; if that fails, the failure is audited and the KEK
    ///    stays retired;
    /// 3. the KEK is recorded as destroyed with the outcome event. Should this last step
    ///    fail, the KEK is gone but still recorded as retired, next to its intent event:
    ///    running the destruction again finishes it (the HSM step then finds nothing).
    pub async fn destroy_kek(
        &self,
        label: &str,
        actor: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<(), KeyError> {
        self.check_destroy_kek(label).await?;
        let intent = AuditEvent::new(actor, Action::KekDestroy, Outcome::Success)
            .resource(label)
            .reason(Some(format!(
                "destroying the HSM object: {}",
                reason.unwrap_or("no reason given")
            )));
        self.audit.record(&intent, now).await?;

        let l = label.to_owned();
        match self.hsm_call(move |h| h.destroy_objects(&l)).await {
            Ok(_) | Err(KeyError::Hsm(HsmError::KeyMissing(_))) => {}
            Err(e) => {
                let failed = AuditEvent::new(actor, Action::KekDestroy, Outcome::Failure)
                    .resource(label)
                    .reason(Some(format!(
                        "the HSM object was not destroyed ({e}); the KEK stays retired"
                    )));
                if let Err(audit) = self.audit.record(&failed, now).await {
                    tracing::error!(error = %audit, label, "could not audit a failed KEK destruction");
                }
                return Err(e);
            }
        }

        let mut atx = self.audit.begin().await?;
        self.store
            .set_kek_state(&mut atx.tx, label, "destroyed", now)
            .await?;
        let event = AuditEvent::new(actor, Action::KekDestroy, Outcome::Success)
            .resource(label)
            .reason(reason.map(str::to_owned));
        atx.append(&event, now).await?;
        atx.commit().await?;
        Ok(())
    }
}
