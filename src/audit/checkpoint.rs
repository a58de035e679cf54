//! Signed checkpoints: (sequence, chain head, time) signed with ECDSA P-256 by the key
//! that never leaves the HSM. A checkpoint pins everything before it: rewriting, deleting
//! or truncating covered events no longer matches a signature only the HSM can make.

use std::sync::Arc;

use p256::ecdsa::{Signature, VerifyingKey, signature::Verifier};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use serde::{Deserialize, Serialize};

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
}

/// The exact bytes a checkpoint signature covers.
pub fn message(seq: i64, head: &[u8], at: i64) -> Vec<u8> {
    format!(
        "tokenvault audit checkpoint v1\nseq={seq}\nhead={}\nat={at}\n",
        hex::encode(head)
    )
    .into_bytes()
}

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
    /// ECDSA P-256 over `message(seq, head, at)`, raw r ‖ s, hex.
    pub signature: String,
    pub public_key_pem: String,
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
        })
    }
}

/// Makes checkpoints with the HSM key.
#[derive(Clone)]
pub struct Checkpointer {
    store: Store,
    hsm: Arc<Hsm>,
    label: String,
}

impl Checkpointer {
    pub fn new(store: Store, hsm: Arc<Hsm>, label: String) -> Self {
        Self { store, hsm, label }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Records the public half of the signing key in the database (idempotent), so a
    /// verifier without the HSM can find it; assessors should still pin an exported copy.
    pub async fn publish_key(&self, now: i64) -> Result<VerifyingKey, CheckpointError> {
        let (hsm, label) = (self.hsm.clone(), self.label.clone());
        let sec1 = tokio::task::spawn_blocking(move || hsm.signing_public_key(&label))
            .await
            .map_err(|e| HsmError::TaskFailed(e.to_string()))??;
        let key = verifying_key(&sec1)?;
        self.store.insert_audit_key(&self.label, &sec1, now).await?;
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

    /// Signs the current chain head unless the newest checkpoint already covers it.
    pub async fn checkpoint(&self, now: i64) -> Result<Option<CheckpointRow>, CheckpointError> {
        let (seq, head) = self.store.audit_tip().await?;
        let last = self.store.checkpoints().await?.last().map_or(0, |c| c.seq);
        if seq == 0 || seq <= last {
            return Ok(None);
        }
        let signature = self.sign(message(seq, &head, now)).await?;
        let row = CheckpointRow {
            seq,
            head_hash: head,
            at: now,
            key_label: self.label.clone(),
            signature,
        };
        self.store.insert_checkpoint(&row).await?;
        Ok(Some(row))
    }

    /// Checkpoints when `every` events or `interval_ms` have passed since the last one.
    pub async fn checkpoint_if_due(
        &self,
        every: i64,
        interval_ms: i64,
        now: i64,
    ) -> Result<Option<CheckpointRow>, CheckpointError> {
        let (seq, _) = self.store.audit_tip().await?;
        let last = self
            .store
            .checkpoints()
            .await?
            .last()
            .map(|c| (c.seq, c.at))
            .unwrap_or((0, 0));
        let due = seq > last.0 && (seq - last.0 >= every || now - last.1 >= interval_ms);
        if due {
            self.checkpoint(now).await
        } else {
            Ok(None)
        }
    }
}
