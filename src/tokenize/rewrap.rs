//! `keys rewrap`: re-seals every record of a keyring under its active version, or (for
//! the fingerprint keyring) re-computes every lookup fingerprint under the active
//! fingerprint key. Batches are transactions, and the records themselves are the
//! checkpoint: a killed run loses nothing and a re-run picks up what is left.

use std::time::{Duration, Instant};

use super::{TokenService, is_expired, lookup_label, record_aad};
use crate::audit::{Action, AuditEvent, Outcome};
use crate::crypto::Aad;
use crate::error::Error;
use crate::keys::{FINGERPRINT_KEYRING, KeyVersion};
use crate::store::TokenRow;

#[derive(Debug, Clone, Copy)]
pub struct RewrapOptions {
    pub batch: usize,
    /// Records per second at most (so traffic is not starved); `None`: as fast as possible.
    pub rate: Option<u32>,
}

#[derive(Debug, Default, Clone)]
pub struct RewrapReport {
    pub total: u64,
    pub done: u64,
    pub failed: u64,
    /// Token ids that could not be rewrapped (their key is destroyed or the record is corrupt).
    pub failures: Vec<String>,
    pub to_version: u32,
}

impl TokenService {
    /// Re-seals (or re-indexes) every record not yet under the active key.
    /// `progress(done, total)` is called after every batch.
    pub async fn rewrap(
        &self,
        keyring: &str,
        opts: RewrapOptions,
        actor: &str,
        now: impl Fn() -> i64,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<RewrapReport, Error> {
        self.keys.check_keyring(keyring).map_err(Error::from)?;
        self.keys.refresh().await?;
        let reindex = keyring == FINGERPRINT_KEYRING;
        let active = if reindex {
            self.keys.fingerprint_keys().await?.first().map(|(v, _)| *v)
        } else {
            Some(self.keys.active(keyring).await?.0)
        }
        .ok_or_else(|| Error::Unavailable(format!("keyring `{keyring}` has no active key")))?;
        let filter = (!reindex).then_some(keyring);
        let total = u64::try_from(
            self.store
                .count_to_rewrap(filter, i64::from(active.get()))
                .await?,
        )
        .unwrap_or(0);
        let mut report = RewrapReport {
            total,
            to_version: active.get(),
            ..RewrapReport::default()
        };
        progress(0, total);
        let mut cursor = String::new();
        loop {
            let started = Instant::now();
            let batch = self
                .store
                .tokens_to_rewrap(
                    filter,
                    i64::from(active.get()),
                    &cursor,
                    i64::try_from(opts.batch.max(1)).unwrap_or(500),
                )
                .await?;
            let Some(last) = batch.last() else { break };
            cursor = last.token.clone();
            let n = if reindex {
                self.reindex_batch(&batch, active, actor, now(), &mut report)
                    .await?
            } else {
                self.rewrap_batch(keyring, &batch, actor, now(), &mut report)
                    .await?
            };
            report.done += n;
            progress(report.done + report.failed, total);
            if let Some(rate) = opts.rate.filter(|r| *r > 0) {
                let budget = Duration::from_secs_f64(batch.len() as f64 / f64::from(rate));
                if let Some(rest) = budget.checked_sub(started.elapsed()) {
                    tokio::time::sleep(rest).await;
                }
            }
        }
        Ok(report)
    }

    /// Opens a record under the key it names; `None` records a failure.
    async fn open_record(
        &self,
        row: &TokenRow,
        report: &mut RewrapReport,
    ) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, Error> {
        let Some(version) = KeyVersion::from_db(row.key_version) else {
            report.failed += 1;
            report.failures.push(row.token.clone());
            return Ok(None);
        };
        let key = match self.keys.key(&row.keyring, version).await {
            Ok(k) => k,
            Err(e) => match Error::from(e) {
                e @ Error::Unavailable(_) => return Err(e),
                _ => {
                    report.failed += 1;
                    report.failures.push(row.token.clone());
                    return Ok(None);
                }
            },
        };
        let opened = record_aad(row, version).and_then(|aad| {
            key.open(&aad, &row.ciphertext)
                .map_err(|_| Error::Integrity)
        });
        match opened {
            Ok(plain) => Ok(Some(plain)),
            Err(_) => {
                report.failed += 1;
                report.failures.push(row.token.clone());
                Ok(None)
            }
        }
    }

    async fn rewrap_batch(
        &self,
        keyring: &str,
        batch: &[TokenRow],
        actor: &str,
        now: i64,
        report: &mut RewrapReport,
    ) -> Result<u64, Error> {
        let (version, key) = self.keys.seal_key(keyring, batch.len() as u64, now).await?;
        let mut sealed = Vec::with_capacity(batch.len());
        for row in batch {
            if let Some(plain) = self.open_record(row, report).await? {
                // Re-sealed with the AAD that binds type, expiry and metadata: the sweep
                // also upgrades records sealed before it existed.
                let aad = Aad::token_record(
                    keyring,
                    version.get(),
                    &row.token,
                    &row.token_type,
                    row.expires_at,
                    row.metadata.as_deref(),
                );
                sealed.push((row, key.seal(&aad, &plain)));
            }
        }
        let mut atx = self.audit.begin().await?;
        let mut n = 0;
        for (row, ct) in &sealed {
            // Only if the record is still as read (a concurrent delete or rewrap wins).
            if self
                .store
                .update_ciphertext(
                    &mut atx.tx,
                    &row.token,
                    (row.key_version, row.aad_version),
                    i64::from(version.get()),
                    ct,
                )
                .await?
            {
                n += 1;
            }
        }
        let event = AuditEvent::new(actor, Action::KeyRewrap, Outcome::Success)
            .resource(format!("{keyring}/{version}"))
            .reason(Some(format!("{n} records re-sealed")));
        atx.append(&event, now).await?;
        atx.commit().await?;
        Ok(n)
    }

    async fn reindex_batch(
        &self,
        batch: &[TokenRow],
        active: KeyVersion,
        actor: &str,
        now: i64,
        report: &mut RewrapReport,
    ) -> Result<u64, Error> {
        let keys = self.keys.fingerprint_keys().await?;
        let (_, key) = keys
            .iter()
            .find(|(v, _)| *v == active)
            .ok_or(Error::Internal("fingerprint key".into()))?;
        let mut updates = Vec::with_capacity(batch.len());
        for row in batch {
            if let Some(plain) = self.open_record(row, report).await? {
                updates.push((
                    row,
                    key.derived(&lookup_label(
                        &row.token_type,
                        row.fingerprint_namespace
                            .as_deref()
                            .unwrap_or(crate::guard::SHARED_NAMESPACE),
                    ))
                    .fingerprint(&plain),
                ));
            }
        }
        let mut atx = self.audit.begin().await?;
        let (mut n, mut duplicates) = (0, 0);
        for (row, fp) in &updates {
            // Two rows can hold one value under two fingerprint versions (a value whose
            // token expired, tokenized again after a rotation; a node with a stale key
            // list). The unique index allows one answer per value: the live row keeps the
            // fingerprint — of two live rows, the older token — and the other keeps its
            // token and value but leaves the index. Re-indexing never stops at a duplicate.
            if let Some(other) = self
                .store
                .token_by_fingerprint(Some(&mut atx.tx), &row.token_type, fp)
                .await?
                && other.token != row.token
            {
                duplicates += 1;
                let row_wins = match (is_expired(row, now), is_expired(&other, now)) {
                    (false, true) => true,
                    (true, false) => false,
                    _ => row.created_at < other.created_at,
                };
                let loser = if row_wins { &other.token } else { &row.token };
                self.store.clear_fingerprint(&mut atx.tx, loser).await?;
                if !row_wins {
                    continue;
                }
            }
            if self
                .store
                .update_fingerprint(&mut atx.tx, &row.token, fp, i64::from(active.get()))
                .await?
            {
                n += 1;
            }
        }
        let event = AuditEvent::new(actor, Action::KeyReindex, Outcome::Success)
            .resource(format!("{FINGERPRINT_KEYRING}/{active}"))
            .reason(Some(format!(
                "{n} fingerprints re-computed; {duplicates} duplicate values resolved"
            )));
        atx.append(&event, now).await?;
        atx.commit().await?;
        Ok(n)
    }
}
