//! Signed checkpoints: (sequence, chain head, time) signed with ECDSA P-256 by the key
//! that never leaves the HSM. A checkpoint pins everything before it: rewriting, deleting
//! or truncating covered events no longer matches a signature only the HSM can make.

use std::sync::Arc;

use p256::ecdsa::{Signature, VerifyingKey, signature::Verifier};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::chain_hash;
use super::sink::{CheckpointSinks, SinkError};
use crate::hsm::{Hsm, HsmError};
use crate::store::{CheckpointRow, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Hsm(#[from] HsmError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("not a P-256 public key: {0}")]
    BadKey(String),
    #[error("checkpoint file: {0}")]
    File(String),
    /// The chain since the previous checkpoint is not what it must be: nothing was signed.
    #[error(
        "refusing to sign the audit chain: {0} — nothing was signed; run `tokenvault audit verify --checkpoints FILE` and investigate who wrote to the database"
    )]
    Refused(String),
    /// The checkpoint is signed and stored, but an outside copy failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// The exact bytes a checkpoint signature covers: format v1 (no `prev_digest`, made
/// before checkpoints were chained), v2 (with the previous checkpoint's digest) or v3
/// (and the vault's environment, `production` or `nonproduction`).
pub fn message(c: &CheckpointRow) -> Vec<u8> {
    match (&c.prev_digest, &c.environment) {
        (Some(prev), Some(env)) => format!(
            "tokenvault audit checkpoint v3\nseq={}\nhead={}\nat={}\nprev={}\nenv={}\n",
            c.seq,
            hex::encode(&c.head_hash),
            c.at,
            hex::encode(prev),
            env
        ),
        // An environment without a previous digest was never signed: no signature fits.
        (None, Some(_)) => "tokenvault audit checkpoint: not a format this build signs\n".into(),
        (None, None) => format!(
            "tokenvault audit checkpoint v1\nseq={}\nhead={}\nat={}\n",
            c.seq,
            hex::encode(&c.head_hash),
            c.at
        ),
        (Some(prev), None) => format!(
            "tokenvault audit checkpoint v2\nseq={}\nhead={}\nat={}\nprev={}\n",
            c.seq,
            hex::encode(&c.head_hash),
            c.at,
            hex::encode(prev)
        ),
    }
    .into_bytes()
}

/// What the next checkpoint signs as `prev`: SHA-256 over this checkpoint's signed
/// message and its signature, so deleting or replacing it breaks the next one's link.
pub fn digest(c: &CheckpointRow) -> Vec<u8> {
    let msg = message(c);
    let mut h = Sha256::new();
    h.update(b"tokenvault/audit/checkpoint-digest/v1");
    h.update((msg.len() as u64).to_be_bytes());
    h.update(&msg);
    h.update(&c.signature);
    h.finalize().to_vec()
}

/// The `prev` of the first chained checkpoint of a vault.
pub const NO_PREVIOUS: [u8; 32] = [0; 32];

/// A P-256 public key from its SEC1 point.
pub fn verifying_key(sec1: &[u8]) -> Result<VerifyingKey, CheckpointError> {
    VerifyingKey::from_sec1_bytes(sec1).map_err(|e| CheckpointError::BadKey(e.to_string()))
}

/// A P-256 public key from PEM (SubjectPublicKeyInfo), as `audit export-key` writes it.
pub fn verifying_key_pem(pem: &str) -> Result<VerifyingKey, CheckpointError> {
    VerifyingKey::from_public_key_pem(pem).map_err(|e| CheckpointError::BadKey(e.to_string()))
}

pub fn public_key_pem(key: &VerifyingKey) -> Result<String, CheckpointError> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|e| CheckpointError::BadKey(e.to_string()))
}

/// Whether `signature` (raw r ‖ s or DER) is `key`'s ECDSA-SHA-256 signature of `msg`.
pub fn signature_valid(key: &VerifyingKey, msg: &[u8], signature: &[u8]) -> bool {
    let sig = Signature::from_slice(signature).or_else(|_| Signature::from_der(signature));
    sig.is_ok_and(|s| key.verify(msg, &s).is_ok())
}

/// A checkpoint as exported for safekeeping outside the database.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExportedCheckpoint {
    pub seq: i64,
    pub head_hash: String,
    pub at: i64,
    pub key_label: String,
    /// ECDSA P-256 over [`message`], raw r ‖ s, hex.
    pub signature: String,
    /// The previous checkpoint's [`digest`], hex; absent for a v1 checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_digest: Option<String>,
    /// The key the signer read from the HSM when it signed.
    pub public_key_pem: String,
    /// The vault's environment, signed (format v3); absent before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

impl ExportedCheckpoint {
    pub fn row(&self) -> Result<CheckpointRow, CheckpointError> {
        let bad = |what: &str| CheckpointError::File(format!("{what} is not hex"));
        Ok(CheckpointRow {
            seq: self.seq,
            head_hash: hex::decode(&self.head_hash).map_err(|_| bad("head_hash"))?,
            at: self.at,
            key_label: self.key_label.clone(),
            signature: hex::decode(&self.signature).map_err(|_| bad("signature"))?,
            prev_digest: match &self.prev_digest {
                Some(d) => Some(hex::decode(d).map_err(|_| bad("prev_digest"))?),
                None => None,
            },
            environment: self.environment.clone(),
        })
    }

    pub fn new(c: &CheckpointRow, key: &VerifyingKey) -> Result<Self, CheckpointError> {
        Ok(Self {
            seq: c.seq,
            head_hash: hex::encode(&c.head_hash),
            at: c.at,
            key_label: c.key_label.clone(),
            signature: hex::encode(&c.signature),
            prev_digest: c.prev_digest.as_ref().map(hex::encode),
            public_key_pem: public_key_pem(key)?,
            environment: c.environment.clone(),
        })
    }
}

/// Makes checkpoints with the HSM key.
#[derive(Clone)]
pub struct Checkpointer {
    store: Store,
    hsm: Arc<Hsm>,
    label: String,
    sinks: CheckpointSinks,
    /// Signed into every checkpoint (format v3) when set.
    environment: Option<&'static str>,
}

impl Checkpointer {
    pub fn new(store: Store, hsm: Arc<Hsm>, label: String) -> Self {
        Self {
            store,
            hsm,
            label,
            sinks: CheckpointSinks::default(),
            environment: None,
        }
    }

    /// Signs the vault's environment into every checkpoint.
    pub fn with_environment(mut self, environment: &'static str) -> Self {
        self.environment = Some(environment);
        self
    }

    /// Also writes every checkpoint to these outside copies as it is made.
    pub fn with_sinks(mut self, sinks: CheckpointSinks) -> Self {
        self.sinks = sinks;
        self
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The public half of the signing key, read from the HSM (never from the database).
    pub async fn hsm_key(&self) -> Result<VerifyingKey, CheckpointError> {
        let (hsm, label) = (self.hsm.clone(), self.label.clone());
        let sec1 = tokio::task::spawn_blocking(move || hsm.signing_public_key(&label))
            .await
            .map_err(|e| HsmError::TaskFailed(e.to_string()))??;
        verifying_key(&sec1)
    }

    /// Records the public half of the signing key in the database (idempotent), so a
    /// verifier without the HSM can find it; assessors should still pin an exported copy.
    /// A stored key that is not the HSM's is left as evidence and reported loudly.
    pub async fn publish_key(&self, now: i64) -> Result<VerifyingKey, CheckpointError> {
        let key = self.hsm_key().await?;
        let sec1 = key.to_encoded_point(false).as_bytes().to_vec();
        self.store.insert_audit_key(&self.label, &sec1, now).await?;
        if self.store.audit_key(&self.label).await?.as_deref() != Some(sec1.as_slice()) {
            metrics::counter!("tokenvault_audit_key_mismatch_total").increment(1);
            tracing::error!(
                label = %self.label,
                "the audit public key stored in the database is not the HSM's key: it was replaced"
            );
        }
        Ok(key)
    }

    /// Signs `bytes` (ECDSA P-256, SHA-256) with the HSM key: raw r ‖ s.
    pub async fn sign(&self, bytes: Vec<u8>) -> Result<Vec<u8>, CheckpointError> {
        let (hsm, label) = (self.hsm.clone(), self.label.clone());
        Ok(
            tokio::task::spawn_blocking(move || hsm.sign(&label, &bytes))
                .await
                .map_err(|e| HsmError::TaskFailed(e.to_string()))??,
        )
    }

    /// Signs the current chain head unless the newest checkpoint already covers it, after
    /// checking the chain since that checkpoint (see [`Checkpointer::check`]).
    pub async fn checkpoint(&self, now: i64) -> Result<Option<CheckpointRow>, CheckpointError> {
        // Another node may store a checkpoint between our read of the newest one and our
        // insert; it may cover less than the tip we read (it read the tip earlier), so
        // sign again on top of it rather than leave the caller's events unsigned.
        for _ in 0..3 {
            let prev = self.store.latest_checkpoint().await?;
            let covered = prev.as_ref().map_or(0, |c| c.seq);
            match self.checkpoint_after(prev, now).await? {
                Some(row) => return Ok(Some(row)),
                None => {
                    let (tip, _) = self.store.audit_tip().await?;
                    let newest = self.store.latest_checkpoint().await?;
                    if tip <= newest.as_ref().map_or(covered, |c| c.seq) {
                        return Ok(None);
                    }
                }
            }
        }
        Ok(None)
    }

    /// Checkpoints when `every` events or `interval_ms` have passed since the last one.
    /// Reads the newest checkpoint only: it runs every 2 s on every node.
    pub async fn checkpoint_if_due(
        &self,
        every: i64,
        interval_ms: i64,
        now: i64,
    ) -> Result<Option<CheckpointRow>, CheckpointError> {
        let prev = self.store.latest_checkpoint().await?;
        let (seq, _) = self.store.audit_tip().await?;
        let last = prev.as_ref().map_or((0, 0), |c| (c.seq, c.at));
        let due = seq > last.0 && (seq - last.0 >= every || now - last.1 >= interval_ms);
        if due {
            self.checkpoint_after(prev, now).await
        } else {
            Ok(None)
        }
    }

    async fn checkpoint_after(
        &self,
        prev: Option<CheckpointRow>,
        now: i64,
    ) -> Result<Option<CheckpointRow>, CheckpointError> {
        // The witness first: whatever this process committed before it, the tip read
        // after it includes.
        let witness = self.store.audit_witness();
        let (seq, head) = self.store.audit_tip().await?;
        let after = prev.as_ref().map_or(0, |c| c.seq);
        if seq == 0 || seq <= after {
            return Ok(None);
        }
        let key = self.hsm_key().await?;
        if let Err(why) = self
            .check(&key, prev.as_ref(), &witness, seq, &head)
            .await?
        {
            metrics::counter!("tokenvault_audit_checkpoint_refused_total").increment(1);
            tracing::error!(problem = %why, "refusing to sign an audit checkpoint");
            return Err(CheckpointError::Refused(why));
        }
        let mut row = CheckpointRow {
            seq,
            head_hash: head,
            at: now,
            key_label: self.label.clone(),
            signature: Vec::new(),
            prev_digest: Some(prev.as_ref().map_or(NO_PREVIOUS.to_vec(), digest)),
            environment: self.environment.map(str::to_owned),
        };
        row.signature = self.sign(message(&row)).await?;
        if !self.store.insert_checkpoint_after(&row, after).await? {
            // Another node checkpointed meanwhile; the next round follows its checkpoint.
            return Ok(None);
        }
        self.sinks.write(&ExportedCheckpoint::new(&row, &key)?)?;
        Ok(Some(row))
    }

    /// What must hold before the HSM signs the head `(tip, tip_hash)`; `Ok(Err(why))`
    /// names the first thing that does not:
    /// - the newest checkpoint carries a valid signature of the HSM's key (read from the
    ///   HSM, not the database);
    /// - it signs this vault's environment, when it signs one;
    /// - the checkpoint this process signed last is still stored, unchanged;
    /// - every event since that checkpoint follows it: consecutive, linked, its hash
    ///   matching its content, up to the tip;
    /// - the newest event this process wrote is still there with the hash it wrote.
    ///
    /// A database writer who rewrites events this process did not write since the last
    /// checkpoint (another node's, a CLI's), recomputing every hash, passes these checks:
    /// docs/threat-model.md (M2) says what covers that.
    async fn check(
        &self,
        key: &VerifyingKey,
        prev: Option<&CheckpointRow>,
        witness: &crate::store::AuditWitness,
        tip: i64,
        tip_hash: &[u8],
    ) -> Result<Result<(), String>, StoreError> {
        let (mut seq, mut hash) = match prev {
            Some(c) if !signature_valid(key, &message(c), &c.signature) => {
                return Ok(Err(format!(
                    "the newest checkpoint (at {}) is not signed by the HSM's audit key",
                    c.seq
                )));
            }
            // A vault's environment never changes (see `Vault::open`).
            Some(c)
                if self.environment.is_some()
                    && c.environment.is_some()
                    && c.environment.as_deref() != self.environment =>
            {
                return Ok(Err(format!(
                    "the newest checkpoint (at {}) signs another environment than this vault's",
                    c.seq
                )));
            }
            Some(c) => (c.seq, c.head_hash.clone()),
            None => (0, vec![0u8; 32]),
        };
        if let Some(mine) = &witness.signed
            && self.store.checkpoint_at(mine.seq).await?.as_ref() != Some(mine)
        {
            return Ok(Err(format!(
                "the checkpoint at {} that this vault signed is missing from the database or changed",
                mine.seq
            )));
        }
        while seq < tip {
            let batch = self.store.audit_events(seq, (tip - seq).min(5000)).await?;
            if batch.is_empty() {
                break;
            }
            for row in batch {
                if row.seq != seq + 1 {
                    return Ok(Err(format!("event {} is missing", seq + 1)));
                }
                if row.prev_hash != hash {
                    return Ok(Err(format!(
                        "event {} does not link to event {seq}",
                        row.seq
                    )));
                }
                let computed = chain_hash(row.seq, row.at, &row).to_vec();
                if computed != row.hash {
                    return Ok(Err(format!(
                        "event {} was altered: its content does not match its hash",
                        row.seq
                    )));
                }
                (seq, hash) = (row.seq, computed);
            }
        }
        if seq != tip || hash != tip_hash {
            return Ok(Err(format!(
                "the chain changed while it was checked (ends at {seq}, expected {tip})"
            )));
        }
        if let Some((wseq, whash)) = &witness.appended {
            if *wseq > tip {
                return Ok(Err(format!(
                    "the chain ends at {tip} but this vault wrote up to {wseq}: events were deleted"
                )));
            }
            let stored = self.store.audit_events(wseq - 1, 1).await?;
            if stored
                .first()
                .is_none_or(|r| r.seq != *wseq || &r.hash != whash)
            {
                return Ok(Err(format!(
                    "event {wseq} is not the one this vault wrote: the chain was rewritten"
                )));
            }
        }
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(prev_digest: Option<Vec<u8>>) -> CheckpointRow {
        CheckpointRow {
            seq: 7,
            head_hash: vec![0xab; 32],
            at: 1_700_000_000_000,
            key_label: "k".into(),
            signature: vec![1; 64],
            prev_digest,
            environment: None,
        }
    }

    #[test]
    fn v1_checkpoints_keep_the_message_they_were_signed_over() {
        let head = "ab".repeat(32);
        assert_eq!(
            message(&row(None)),
            format!("tokenvault audit checkpoint v1\nseq=7\nhead={head}\nat=1700000000000\n")
                .into_bytes()
        );
        assert_eq!(
            message(&row(Some(vec![0xcd; 32]))),
            format!(
                "tokenvault audit checkpoint v2\nseq=7\nhead={head}\nat=1700000000000\nprev={}\n",
                "cd".repeat(32)
            )
            .into_bytes()
        );
        // v3 signs the environment: a staging trail cannot pass for a production one.
        let mut staging = row(Some(vec![0xcd; 32]));
        staging.environment = Some("nonproduction".into());
        let mut production = staging.clone();
        production.environment = Some("production".into());
        assert!(
            String::from_utf8(message(&staging))
                .unwrap()
                .ends_with("env=nonproduction\n")
        );
        assert_ne!(message(&staging), message(&production));
    }

    #[test]
    fn the_digest_covers_the_message_and_the_signature() {
        let a = row(Some(vec![0; 32]));
        let mut b = a.clone();
        b.signature[0] ^= 1;
        let mut c = a.clone();
        c.prev_digest = Some(vec![1; 32]);
        assert_ne!(digest(&a), digest(&b));
        assert_ne!(digest(&a), digest(&c));
        assert_eq!(digest(&a), digest(&a.clone()));
    }
}
