//! `keys rewrap`: re-seals every record of a keyring under its active version, or (for
//! the fingerprint keyring) re-computes every lookup fingerprint under the active
//! fingerprint key. Batches are transactions, and the records themselves are the
//! checkpoint: a killed run loses nothing and a re-run picks up what is left. Why a
//! batch costs the same at any table size (an index cursor in creation order, set-based
//! updates) is told in `store::rewrap`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{TokenService, is_expired, lookup_label, record_aad};
use crate::audit::AuditTx;
use crate::audit::{Action, AuditEvent, Outcome};
use crate::crypto::Aad;
use crate::error::Error;
use crate::keys::{FINGERPRINT_KEYRING, KeyVersion};
use crate::store::{Resealed, SweepCursor, TokenRow};

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
        let (version, limit) = (
            i64::from(active.get()),
            i64::try_from(opts.batch.max(1)).unwrap_or(500),
        );
        let mut batch = self
            .store
            .tokens_to_rewrap(filter, version, &SweepCursor::start(), limit)
            .await?;
        while let Some(last) = batch.last() {
            let started = Instant::now();
            let cursor = SweepCursor::after(last);
            // The next batch is read (on another connection) while this one is re-sealed
            // and written: the two hold different records, on either side of the cursor.
            let next = self.store.tokens_to_rewrap(filter, version, &cursor, limit);
            let work = async {
                if reindex {
                    self.reindex_batch(&batch, active, actor, now(), &mut report)
                        .await
                } else {
                    self.rewrap_batch(keyring, &batch, actor, now(), &mut report)
                        .await
                }
            };
            let (next, n) = tokio::join!(next, work);
            report.done += n?;
            progress(report.done + report.failed, total);
            if let Some(rate) = opts.rate.filter(|r| *r > 0) {
                let budget = Duration::from_secs_f64(batch.len() as f64 / f64::from(rate));
                if let Some(rest) = budget.checked_sub(started.elapsed()) {
                    tokio::time::sleep(rest).await;
                }
            }
            batch = next?;
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
        let updates: Vec<Resealed> = sealed
            .iter()
            .map(|(row, ct)| Resealed {
                token: &row.token,
                ciphertext: ct,
                old_version: row.key_version,
                old_aad: row.aad_version,
            })
            .collect();
        let mut atx = self.audit.begin().await?;
        // Only the records still as read change (a concurrent delete or rewrap wins).
        let n = self
            .store
            .update_ciphertexts(&mut atx.tx, i64::from(version.get()), &updates)
            .await?;
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
        let (clear, keep, duplicates) = self.resolve_duplicates(&mut atx, &updates, now).await?;
        for loser in &clear {
            self.store.clear_fingerprint(&mut atx.tx, loser).await?;
        }
        let winners: Vec<(&str, &[u8])> = updates
            .iter()
            .zip(&keep)
            .filter(|(_, keep)| **keep)
            .map(|((row, fp), _)| (row.token.as_str(), fp.as_slice()))
            .collect();
        let n = self
            .store
            .update_fingerprints(&mut atx.tx, i64::from(active.get()), &winners)
            .await?;
        let event = AuditEvent::new(actor, Action::KeyReindex, Outcome::Success)
            .resource(format!("{FINGERPRINT_KEYRING}/{active}"))
            .reason(Some(format!(
                "{n} fingerprints re-computed; {duplicates} duplicate values resolved"
            )));
        atx.append(&event, now).await?;
        atx.commit().await?;
        Ok(n)
    }

    /// Two rows can hold one value under two fingerprint versions (a value whose token
    /// expired, tokenized again after a rotation; a node with a stale key list). The
    /// unique index allows one answer per value: the live row keeps the fingerprint — of
    /// two live rows, the older token — and the other keeps its token and value but leaves
    /// the index. Re-indexing never stops at a duplicate.
    ///
    /// Returns the tokens to take out of the index, which of `updates` to apply, and how
    /// many duplicates were resolved. The rows already answering for the new fingerprints
    /// are read with one query per type; the batch's own rows are then decided in order,
    /// as if updated one by one (an earlier row of the batch may hold the same value).
    async fn resolve_duplicates(
        &self,
        atx: &mut AuditTx,
        updates: &[(&TokenRow, [u8; 32])],
        now: i64,
    ) -> Result<(Vec<String>, Vec<bool>, u64), Error> {
        let mut by_type: HashMap<&str, Vec<&[u8]>> = HashMap::new();
        for (row, fp) in updates {
            by_type.entry(&row.token_type).or_default().push(fp);
        }
        let mut stored: HashMap<(&str, Vec<u8>), TokenRow> = HashMap::new();
        for (token_type, fps) in by_type {
            let found = self
                .store
                .tokens_by_fingerprints(Some(&mut atx.tx), token_type, &fps)
                .await?;
            stored.extend(found.into_iter().map(|(fp, row)| ((token_type, fp), row)));
        }
        // Which row answers for (type, fingerprint) so far.
        let mut holder: HashMap<(&str, &[u8]), Holder> = stored
            .iter()
            .map(|((t, fp), row)| ((*t, fp.as_slice()), Holder::Stored(row)))
            .collect();
        let (mut clear, mut keep, mut duplicates) = (Vec::new(), vec![true; updates.len()], 0);
        for (i, (row, fp)) in updates.iter().enumerate() {
            let key = (row.token_type.as_str(), fp.as_slice());
            if let Some(held) = holder.get(&key) {
                let other = match held {
                    Holder::Stored(stored) => *stored,
                    Holder::Batch(j) => updates[*j].0,
                };
                if other.token != row.token {
                    duplicates += 1;
                    let row_wins = match (is_expired(row, now), is_expired(other, now)) {
                        (false, true) => true,
                        (true, false) => false,
                        _ => row.created_at < other.created_at,
                    };
                    let loser = if row_wins { other } else { row };
                    clear.push(loser.token.clone());
                    if !row_wins {
                        keep[i] = false;
                        continue;
                    }
                    if let Holder::Batch(j) = held {
                        keep[*j] = false;
                    }
                }
            }
            holder.insert(key, Holder::Batch(i));
        }
        Ok((clear, keep, duplicates))
    }
}

/// The row that answers for a fingerprint while a re-index batch is decided: one already
/// stored, or the batch's row at this index.
enum Holder<'a> {
    Stored(&'a TokenRow),
    Batch(usize),
}
