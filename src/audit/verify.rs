//! The read side an assessor runs: walks the whole chain, recomputes every hash, checks
//! every checkpoint signature, and names the first bad sequence number. It needs only
//! the database and the public key — not the HSM.

use std::collections::HashMap;
use std::time::Instant;

use p256::ecdsa::VerifyingKey;
use serde::Serialize;

use super::checkpoint::{message, signature_valid};
use super::{Action, chain_hash};
use crate::store::{CheckpointRow, Store, StoreError};

/// The outcome of a verification run.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub events: i64,
    pub checkpoints: usize,
    /// Events after the newest checkpoint: linked, but not yet signed.
    pub unsigned_tail: i64,
    /// The first bad sequence number and what is wrong there.
    pub first_bad: Option<(i64, String)>,
    pub seconds: f64,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.first_bad.is_none()
    }

    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.seconds.max(1e-9)
    }
}

/// Which public keys to trust, by checkpoint key label. `pinned` (an exported key the
/// assessor holds) applies to every label; otherwise the keys recorded in the database.
pub async fn trusted_keys(
    store: &Store,
    pinned: Option<VerifyingKey>,
) -> Result<HashMap<String, VerifyingKey>, StoreError> {
    let mut keys = HashMap::new();
    for (label, sec1) in store.audit_keys().await? {
        let key = match pinned {
            Some(k) => k,
            None => match super::checkpoint::verifying_key(&sec1) {
                Ok(k) => k,
                Err(_) => continue,
            },
        };
        keys.insert(label, key);
    }
    if let Some(k) = pinned {
        keys.insert(String::new(), k);
    }
    Ok(keys)
}

pub async fn verify(
    store: &Store,
    keys: &HashMap<String, VerifyingKey>,
    external: Option<&CheckpointRow>,
) -> Result<Verification, StoreError> {
    let started = Instant::now();
    let checkpoints = store.checkpoints().await?;
    let by_seq: HashMap<i64, &CheckpointRow> = checkpoints
        .iter()
        .chain(external)
        .map(|c| (c.seq, c))
        .collect();
    let mut failures: Vec<(i64, String)> = Vec::new();
    let key_for = |c: &CheckpointRow| keys.get(&c.key_label).or_else(|| keys.get(""));
    for c in checkpoints.iter().chain(external) {
        match key_for(c) {
            Some(k) if signature_valid(k, &message(c.seq, &c.head_hash, c.at), &c.signature) => {}
            Some(_) => failures.push((
                c.seq,
                format!("the checkpoint at {} has an invalid signature", c.seq),
            )),
            None => failures.push((
                c.seq,
                format!("no trusted public key for checkpoint key '{}'", c.key_label),
            )),
        }
    }

    let (mut expected, mut prev, mut prev2) = (1i64, vec![0u8; 32], Vec::new());
    let mut chain_broken = false;
    'walk: loop {
        let batch = store.audit_events(expected - 1, 5000).await?;
        if batch.is_empty() {
            break;
        }
        for row in batch {
            if row.seq != expected {
                failures.push((
                    expected,
                    format!("event {expected} is missing (the next one is {})", row.seq),
                ));
                chain_broken = true;
                break 'walk;
            }
            if row.prev_hash != prev {
                let why = if !prev2.is_empty() && row.prev_hash == prev2 {
                    (
                        expected - 1,
                        format!(
                            "event {} was inserted: event {expected} links past it",
                            expected - 1
                        ),
                    )
                } else {
                    (
                        expected,
                        format!("event {expected} does not link to event {}", expected - 1),
                    )
                };
                failures.push(why);
                chain_broken = true;
                break 'walk;
            }
            let computed = chain_hash(row.seq, row.at, &row).to_vec();
            if computed != row.hash {
                failures.push((
                    expected,
                    format!("event {expected} was altered: its content does not match its hash"),
                ));
                chain_broken = true;
                break 'walk;
            }
            // The vault writes only actions of its vocabulary: another one was written
            // by someone who recomputed the hashes.
            if Action::parse(&row.action).is_none() {
                failures.push((
                    expected,
                    format!("event {expected} records an action outside the audit vocabulary"),
                ));
            }
            if let Some(c) = by_seq.get(&row.seq)
                && c.head_hash != computed
            {
                failures.push((
                    expected,
                    format!("the chain at {expected} differs from the signed checkpoint"),
                ));
                chain_broken = true;
                break 'walk;
            }
            prev2 = std::mem::replace(&mut prev, computed);
            expected += 1;
        }
    }
    let last = expected - 1;
    if !chain_broken {
        let newest_signed = by_seq.keys().copied().max().unwrap_or(0);
        if newest_signed > last {
            failures.push((last + 1, format!("the chain was truncated: it ends at {last} but a checkpoint signed {newest_signed}")));
        }
        let (head_seq, _) = store.audit_head().await?;
        if head_seq > last {
            failures.push((
                last + 1,
                format!("the chain was truncated: it ends at {last} but its head says {head_seq}"),
            ));
        }
    }
    let newest_signed = by_seq.keys().copied().max().unwrap_or(0);
    Ok(Verification {
        events: last,
        checkpoints: checkpoints.len(),
        unsigned_tail: (last - newest_signed).max(0),
        first_bad: failures.into_iter().min_by_key(|f| f.0),
        seconds: started.elapsed().as_secs_f64(),
    })
}
