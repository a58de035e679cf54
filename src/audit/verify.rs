//! The read side an assessor runs: walks the whole chain, recomputes every hash, checks
//! every checkpoint signature, and names the first bad sequence number. It needs only
//! the database and the public key — not the HSM.

use std::collections::HashMap;
use std::time::Instant;

use p256::ecdsa::VerifyingKey;
use serde::Serialize;

use super::checkpoint::{NO_PREVIOUS, digest, message, signature_valid};
use super::{Action, chain_hash};
use crate::store::{CheckpointRow, Store, StoreError};

/// Where the public key that checks the checkpoint signatures came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeySource {
    /// An exported copy the assessor holds (`--public-key`).
    Pinned,
    /// The key recorded in the exported checkpoint series (`--checkpoints`).
    CheckpointFile,
    /// Read from the HSM (the report).
    Hsm,
    /// The `audit_keys` table: whoever can write the database can replace it.
    #[default]
    Database,
}

impl KeySource {
    fn name(self) -> &'static str {
        match self {
            KeySource::Pinned => "the pinned key",
            KeySource::CheckpointFile => "the key that signed the exported checkpoints",
            KeySource::Hsm => "the HSM's key",
            KeySource::Database => "the stored key",
        }
    }
}

/// The outcome of a verification run.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub events: i64,
    pub checkpoints: usize,
    /// Events after the newest checkpoint: linked, but not yet signed.
    pub unsigned_tail: i64,
    /// The first bad sequence number and what is wrong there.
    pub first_bad: Option<(i64, String)>,
    /// Every problem found (sequence, what), in sequence order.
    pub problems: Vec<(i64, String)>,
    /// The stored public key is not the trusted one (it was replaced).
    pub key_problem: Option<String>,
    pub key_source: KeySource,
    /// True when the signatures were checked with the database's own key: a database
    /// writer can replace the key and re-sign everything, so "intact" then proves nothing
    /// against them.
    pub proves_nothing_against_a_database_writer: bool,
    /// Checkpoints from an outside copy that were compared with the database.
    pub exported_checkpoints: usize,
    /// The environment the newest checkpoint signed (`None`: no checkpoint signs one).
    pub environment: Option<String>,
    pub seconds: f64,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.first_bad.is_none() && self.key_problem.is_none()
    }

    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.seconds.max(1e-9)
    }
}

/// The keys that check checkpoint signatures, by key label, and where they came from.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: HashMap<String, VerifyingKey>,
    /// The key from outside the database, if any: it applies to every label.
    outside: Option<VerifyingKey>,
    source: KeySource,
}

/// Which public keys to trust. `outside` (a pinned key, the exported series' key or the
/// HSM's key) applies to every label; without it, the keys recorded in the database.
pub async fn trusted_keys(
    store: &Store,
    outside: Option<(VerifyingKey, KeySource)>,
) -> Result<TrustedKeys, StoreError> {
    let mut keys = HashMap::new();
    if outside.is_none() {
        for (label, sec1) in store.audit_keys().await? {
            if let Ok(k) = super::checkpoint::verifying_key(&sec1) {
                keys.insert(label, k);
            }
        }
    }
    Ok(TrustedKeys {
        keys,
        outside: outside.map(|(k, _)| k),
        source: outside.map_or(KeySource::Database, |(_, s)| s),
    })
}

impl TrustedKeys {
    fn for_label(&self, label: &str) -> Option<&VerifyingKey> {
        self.outside.as_ref().or_else(|| self.keys.get(label))
    }
}

/// Walks the whole chain and checks every checkpoint: its signature, its link to the
/// checkpoint before it (v2), and, for `exported` (an outside copy of checkpoints), that
/// the database still holds each one unchanged.
pub async fn verify(
    store: &Store,
    keys: &TrustedKeys,
    exported: &[CheckpointRow],
) -> Result<Verification, StoreError> {
    let started = Instant::now();
    let checkpoints = store.checkpoints().await?;
    let mut failures: Vec<(i64, String)> = Vec::new();
    let key_problem = match &keys.outside {
        Some(k) => {
            // Only the labels that signed checkpoints: keys of other labels check nothing.
            let outside = k.to_encoded_point(false);
            let used: std::collections::HashSet<&str> = checkpoints
                .iter()
                .chain(exported)
                .map(|c| c.key_label.as_str())
                .collect();
            store
                .audit_keys()
                .await?
                .iter()
                .any(|(label, sec1)| {
                    used.contains(label.as_str()) && sec1.as_slice() != outside.as_bytes()
                })
                .then(|| {
                    format!(
                        "the audit public key stored in the database is not {}: it was replaced",
                        keys.source.name()
                    )
                })
        }
        None => None,
    };
    for c in checkpoints.iter().chain(exported) {
        match keys.for_label(&c.key_label) {
            Some(k) if signature_valid(k, &message(c), &c.signature) => {}
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
    // Chained checkpoints: each v2 checkpoint names its predecessor's digest.
    let mut before: Option<&CheckpointRow> = None;
    for c in &checkpoints {
        if let Some(link) = &c.prev_digest {
            let expected = before.map_or(NO_PREVIOUS.to_vec(), digest);
            if *link != expected {
                let why = match before {
                    Some(b) => format!(
                        "the checkpoint at {} does not follow the one before it (at {}): \
                         checkpoints in between were deleted or replaced",
                        c.seq, b.seq
                    ),
                    None => format!(
                        "the checkpoint at {} follows a checkpoint that is not in the database: \
                         earlier checkpoints were deleted",
                        c.seq
                    ),
                };
                failures.push((c.seq, why));
            }
        }
        before = Some(c);
    }
    // A vault's environment never changes: checkpoints that sign different ones mean the
    // recorded environment was rewritten (a production database opened as staging).
    let mut first_env: Option<(&str, i64)> = None;
    for c in &checkpoints {
        let Some(env) = c.environment.as_deref() else {
            continue;
        };
        match first_env {
            None => first_env = Some((env, c.seq)),
            Some((first, at)) if first != env => failures.push((
                c.seq,
                format!(
                    "the checkpoint at {} signs environment {env} but the one at {at} signed \
                     {first}: the vault's recorded environment was changed",
                    c.seq
                ),
            )),
            Some(_) => {}
        }
    }
    let stored: HashMap<i64, &CheckpointRow> = checkpoints.iter().map(|c| (c.seq, c)).collect();
    for e in exported {
        match stored.get(&e.seq) {
            None => failures.push((
                e.seq,
                format!(
                    "the exported checkpoint at {} is missing from the database: checkpoint rows were deleted",
                    e.seq
                ),
            )),
            Some(c) if *c != e => failures.push((
                e.seq,
                format!(
                    "the checkpoint at {} in the database differs from the exported one: it was replaced",
                    e.seq
                ),
            )),
            Some(_) => {}
        }
    }
    let by_seq: HashMap<i64, &CheckpointRow> = checkpoints
        .iter()
        .chain(exported)
        .map(|c| (c.seq, c))
        .collect();

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
    failures.sort_by_key(|f| f.0);
    Ok(Verification {
        events: last,
        checkpoints: checkpoints.len(),
        unsigned_tail: (last - newest_signed).max(0),
        first_bad: failures.first().cloned(),
        problems: failures,
        key_problem,
        key_source: keys.source,
        proves_nothing_against_a_database_writer: keys.source == KeySource::Database,
        exported_checkpoints: exported.len(),
        environment: checkpoints.iter().rev().find_map(|c| c.environment.clone()),
        seconds: started.elapsed().as_secs_f64(),
    })
}
