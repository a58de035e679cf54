//! The audit trail, write side: every security-relevant fact becomes an event in a hash
//! chain, written in the same transaction as the change it describes. If it cannot be
//! written, the operation fails (the caller answers 503): no event, no action.
//!
//! Events never carry values: no PAN, no PII, no key material, no unkeyed hash of them.

pub mod action;
pub mod checkpoint;
pub mod report;
pub mod sink;
pub mod verify;
pub mod writer;

use sha2::{Digest, Sha256};

pub use action::{Action, ObjectKind, Verb};

use crate::store::{AuditRow, Store, StoreError, Tx};

/// Outcome of an audited action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Denied,
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failure => "failure",
        }
    }
}

/// One event, before it is chained.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// Who: the client certificate identity, an officer, or `system`.
    pub actor: String,
    /// What was done, from the one vocabulary.
    pub action: Action,
    pub outcome: Outcome,
    /// The affected token id or `keyring/version`.
    pub resource: Option<String>,
    /// Where from: peer address or `cli`.
    pub origin: Option<String>,
    /// The caller's stated reason, or the error code of a failure.
    pub reason: Option<String>,
}

impl AuditEvent {
    pub fn new(actor: impl Into<String>, action: Action, outcome: Outcome) -> Self {
        // Events raised inside the vault (CLI, background tasks) come from the local host;
        // request handlers replace this with the peer address.
        Self {
            actor: actor.into(),
            action,
            outcome,
            resource: None,
            origin: Some("local".into()),
            reason: None,
        }
    }

    pub fn resource(mut self, r: impl Into<String>) -> Self {
        self.resource = Some(r.into());
        self
    }

    pub fn origin(mut self, o: impl Into<String>) -> Self {
        self.origin = Some(o.into());
        self
    }

    pub fn reason(mut self, r: Option<String>) -> Self {
        self.reason = r;
        self
    }
}

/// The chain hash of an event: SHA-256 over a length-prefixed encoding of every field
/// and the previous hash, so no field can change without breaking every later link.
pub fn chain_hash(seq: i64, at: i64, e: &AuditRow) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tokenvault/audit/v1");
    fn opt(o: &Option<String>) -> Option<&[u8]> {
        o.as_deref().map(str::as_bytes)
    }
    let fields: [Option<&[u8]>; 6] = [
        Some(e.actor.as_bytes()),
        Some(e.action.as_bytes()),
        Some(e.outcome.as_bytes()),
        opt(&e.resource),
        opt(&e.origin),
        opt(&e.reason),
    ];
    h.update(seq.to_be_bytes());
    h.update(at.to_be_bytes());
    for f in fields {
        match f {
            Some(bytes) => {
                h.update([1]);
                h.update((bytes.len() as u64).to_be_bytes());
                h.update(bytes);
            }
            None => h.update([0]),
        }
    }
    h.update((e.prev_hash.len() as u64).to_be_bytes());
    h.update(&e.prev_hash);
    h.finalize().into()
}

/// Longest text field an event stores, in bytes.
pub const MAX_FIELD_BYTES: usize = 1024;

/// An event field as stored: control characters removed (PostgreSQL refuses a NUL, and a
/// NUL would fail every request sharing the group commit), and at most
/// [`MAX_FIELD_BYTES`]. The services validate what callers send before it gets here; this
/// is the last line, so no string can make the audit trail unwritable or unbounded.
fn stored(field: &str) -> String {
    let mut out = String::with_capacity(field.len().min(MAX_FIELD_BYTES));
    for c in field.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_FIELD_BYTES {
            break;
        }
        out.push(c);
    }
    out
}

/// A write transaction that holds the audit chain head: the change and its events
/// commit together or not at all.
pub struct AuditTx {
    pub tx: Tx,
    store: Store,
    seq: i64,
    hash: Vec<u8>,
    appended: bool,
}

impl AuditTx {
    /// Appends `event` to the chain inside this transaction; returns its sequence number.
    pub async fn append(&mut self, event: &AuditEvent, now: i64) -> Result<i64, StoreError> {
        self.append_many(std::slice::from_ref(&(event.clone(), now)))
            .await?;
        Ok(self.seq)
    }

    /// Appends many events in order, with one insert per chunk.
    pub async fn append_many(&mut self, events: &[(AuditEvent, i64)]) -> Result<(), StoreError> {
        let mut rows = Vec::with_capacity(events.len());
        for (event, at) in events {
            let seq = self.seq + 1;
            let mut row = AuditRow {
                seq,
                at: *at,
                actor: stored(&event.actor),
                action: event.action.as_str().to_owned(),
                outcome: event.outcome.as_str().to_owned(),
                resource: event.resource.as_deref().map(stored),
                origin: event.origin.as_deref().map(stored),
                reason: event.reason.as_deref().map(stored),
                prev_hash: std::mem::take(&mut self.hash),
                hash: Vec::new(),
            };
            row.hash = chain_hash(seq, *at, &row).to_vec();
            self.seq = seq;
            self.hash.clone_from(&row.hash);
            rows.push(row);
        }
        if !rows.is_empty() {
            self.appended = true;
            self.store.insert_audits(&mut self.tx, &rows).await?;
        }
        Ok(())
    }

    /// Moves the chain head and commits the change with its events.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        if self.appended {
            self.store
                .set_audit_head(&mut self.tx, self.seq, &self.hash)
                .await?;
        }
        self.tx.commit().await?;
        if self.appended {
            self.store.witness_appended(self.seq, &self.hash);
        }
        Ok(())
    }
}

/// Opens write transactions and appends events to the chain.
#[derive(Debug, Clone)]
pub struct AuditLog {
    store: Store,
}

impl AuditLog {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Begins a write transaction that owns the chain head until it commits. A transient
    /// failure here is retried (twice, with a short pause): nothing has been written
    /// yet, so a retry can never duplicate a write. Failures later in the transaction
    /// are not retried: the caller answers 503 and the client decides.
    pub async fn begin(&self) -> Result<AuditTx, StoreError> {
        let mut attempt = 0;
        loop {
            let result = async {
                let mut tx = self.store.begin().await?;
                let (seq, hash) = self.store.lock_audit_head(&mut tx).await?;
                Ok::<_, StoreError>(AuditTx {
                    tx,
                    store: self.store.clone(),
                    seq,
                    hash,
                    appended: false,
                })
            }
            .await;
            match result {
                Err(e) if e.is_transient() && attempt < 2 => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "retrying the start of a write transaction");
                    tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// Appends `event` in a transaction of its own (reads, denials) and commits it.
    pub async fn record(&self, event: &AuditEvent, now: i64) -> Result<i64, StoreError> {
        let mut atx = self.begin().await.inspect_err(|_| audit_failed())?;
        let seq = atx
            .append(event, now)
            .await
            .inspect_err(|_| audit_failed())?;
        atx.commit().await.inspect_err(|_| audit_failed())?;
        Ok(seq)
    }
}

/// Counts an audit write that failed (the request it belonged to failed closed).
pub fn audit_failed() {
    metrics::counter!("tokenvault_audit_failures_total").increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_fields_hold_no_control_characters_and_are_bounded() {
        assert_eq!(stored("pii\u{0}x\n"), "piix");
        assert_eq!(stored(&"é".repeat(1000)).len(), MAX_FIELD_BYTES);
        assert_eq!(stored("refund requested"), "refund requested");
    }
}
