//! Dual control (PCI DSS 3.6.1.2 split knowledge and dual control): destructive key
//! operations are a request signed by one registered officer and run only when a
//! different officer approves it with their own signature. Requests expire.
//!
//! Officers are registered in the config (`[officers.<name>] public_key = "<base64>"`),
//! which is deployed under change control; each officer keeps an Ed25519 private key
//! (a 0600 file made by `tokenvault officer keygen`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::audit::{Action, AuditEvent, AuditLog, Outcome};
use crate::keys::{KeyError, KeyManager, KeyVersion};
use crate::store::{RequestRow, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum OfficerError {
    #[error("'{0}' is not a registered officer — add it under [officers] in the config")]
    Unknown(String),
    #[error("the key in {0} is not the registered key of officer '{1}'")]
    WrongKey(String, String),
    #[error("officer key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("officer '{0}': the configured public key is not a base64 Ed25519 key")]
    BadPublicKey(String),
    #[error("no request {0} — see `tokenvault keys requests`")]
    NoRequest(String),
    #[error("request {0} is {1}; only a pending request can be approved")]
    NotPending(String, String),
    #[error("request {0} expired — submit a new one")]
    Expired(String),
    #[error("the requester cannot approve their own request: a second officer must")]
    SelfApproval,
    #[error("the requester's signature on request {0} does not verify: the request was altered")]
    BadSignature(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The operations that need two officers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "kebab-case")]
pub enum Operation {
    /// Crypto-shred a retired data key version.
    Destroy { keyring: String, version: u32 },
    /// Retire a version that still protects records.
    ForceRetire { keyring: String, version: u32 },
    /// Destroy a retired KEK in the HSM.
    DestroyKek { label: String },
    /// Crypto-shred a retired version so that no backup can bring it back: destroy it,
    /// rotate the KEK (every other data key re-wrapped under a new one), then destroy the
    /// KEK that wrapped it, all under this one approval.
    DestroyWithKek { keyring: String, version: u32 },
}

impl Operation {
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Destroy { .. } => "destroy",
            Operation::ForceRetire { .. } => "force-retire",
            Operation::DestroyKek { .. } => "destroy-kek",
            Operation::DestroyWithKek { .. } => "destroy-with-kek",
        }
    }

    fn params(&self) -> String {
        // Invariant: the enum serializes to a JSON object of strings and numbers.
        serde_json::to_string(self).expect("operation serializes")
    }

    fn parse(params: &str) -> Result<Self, StoreError> {
        serde_json::from_str(params)
            .map_err(|e| StoreError::Corrupt(format!("officer request params: {e}")))
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::Destroy { keyring, version } => write!(f, "destroy {keyring} v{version}"),
            Operation::ForceRetire { keyring, version } => {
                write!(f, "force-retire {keyring} v{version}")
            }
            Operation::DestroyKek { label } => write!(f, "destroy KEK {label}"),
            Operation::DestroyWithKek { keyring, version } => write!(
                f,
                "destroy {keyring} v{version}, rotate the KEK and destroy the KEK that wrapped it"
            ),
        }
    }
}

/// Carries out an approved operation as `actor` (the two officers). The one place that
/// turns an approval into key changes, for the CLI and any later approval surface.
pub async fn execute(
    keys: &KeyManager,
    op: &Operation,
    actor: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<(), KeyError> {
    let version =
        |v: u32| KeyVersion::new(v).ok_or_else(|| KeyError::Lifecycle(format!("no version {v}")));
    match op {
        Operation::Destroy {
            keyring,
            version: v,
        } => {
            keys.destroy(keyring, version(*v)?, actor, reason, now)
                .await
        }
        Operation::ForceRetire {
            keyring,
            version: v,
        } => {
            keys.retire(keyring, version(*v)?, true, actor, reason, now)
                .await
        }
        Operation::DestroyKek { label } => keys.destroy_kek(label, actor, reason, now).await,
        Operation::DestroyWithKek {
            keyring,
            version: v,
        } => {
            let v = version(*v)?;
            // Idempotent: a run that failed after the destruction can be approved again
            // and finishes the KEK steps.
            if !keys.is_destroyed(keyring, v).await? {
                keys.destroy(keyring, v, actor, reason, now).await?;
            }
            // Every KEK that wrapped the version during its life goes: the active one after
            // a rotation (which re-wraps every other data key), and the retired ones.
            let (created_at, destroyed_at) = keys.key_lifetime(keyring, v).await?;
            let keks = keys.kek_rows().await?;
            let doomed: Vec<(String, String)> =
                crate::keys::keks_that_may_hold(&keks, created_at, destroyed_at)
                    // A pending KEK (an interrupted rotation) never wrapped this version.
                    .filter(|k| k.state == "active" || k.state == "retired")
                    .map(|k| (k.label.clone(), k.state.clone()))
                    .collect();
            // The steps after the destruction happen after it in time too (the evidence
            // compares KEK creation with the destruction).
            let later = now + 1;
            if doomed.iter().any(|(_, state)| state == "active") {
                keys.rotate_kek(actor, reason, later).await?;
            }
            for (label, _) in doomed {
                keys.destroy_kek(&label, actor, reason, later).await?;
            }
            Ok(())
        }
    }
}

/// The registered officers and their public keys.
#[derive(Debug, Clone, Default)]
pub struct Officers {
    keys: BTreeMap<String, VerifyingKey>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct OfficerSettings {
    /// Ed25519 public key, base64.
    pub public_key: String,
}

impl Officers {
    pub fn from_config(officers: &BTreeMap<String, OfficerSettings>) -> Result<Self, OfficerError> {
        let mut keys = BTreeMap::new();
        for (name, o) in officers {
            let bytes: [u8; 32] = STANDARD
                .decode(o.public_key.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| OfficerError::BadPublicKey(name.clone()))?;
            let key = VerifyingKey::from_bytes(&bytes)
                .map_err(|_| OfficerError::BadPublicKey(name.clone()))?;
            keys.insert(name.clone(), key);
        }
        Ok(Self { keys })
    }

    fn key(&self, name: &str) -> Result<&VerifyingKey, OfficerError> {
        self.keys
            .get(name)
            .ok_or_else(|| OfficerError::Unknown(name.to_owned()))
    }
}

/// An officer's private key, loaded from its file. Never printed.
pub struct OfficerKey {
    key: SigningKey,
    path: String,
}

impl fmt::Debug for OfficerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OfficerKey([REDACTED])")
    }
}

impl OfficerKey {
    /// Reads a hex Ed25519 seed from a file no one else may read.
    pub fn load(path: &Path) -> Result<Self, OfficerError> {
        let err = |reason: String| OfficerError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        let text = crate::secret_file::read_private_file(path).map_err(err)?;
        let mut seed = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), seed.as_mut())
            .map_err(|_| err("not a 64-digit hex Ed25519 seed".into()))?;
        Ok(Self {
            key: SigningKey::from_bytes(&seed),
            path: path.display().to_string(),
        })
    }

    /// Makes a new key file (0600) and returns the base64 public key to register.
    pub fn generate(path: &Path) -> Result<String, OfficerError> {
        let err = |reason: String| OfficerError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        let mut seed = Zeroizing::new([0u8; 32]);
        crate::crypto::random_bytes(seed.as_mut());
        let key = SigningKey::from_bytes(&seed);
        let text = Zeroizing::new(hex::encode(seed.as_ref()));
        #[cfg(unix)]
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| err(e.to_string()))?;
            f.write_all(text.as_bytes())
                .map_err(|e| err(e.to_string()))?;
        }
        #[cfg(not(unix))]
        std::fs::write(path, text.as_bytes()).map_err(|e| err(e.to_string()))?;
        Ok(STANDARD.encode(key.verifying_key().as_bytes()))
    }

    fn check(&self, officers: &Officers, name: &str) -> Result<(), OfficerError> {
        if officers.key(name)? != &self.key.verifying_key() {
            return Err(OfficerError::WrongKey(self.path.clone(), name.to_owned()));
        }
        Ok(())
    }
}

/// What a requester signs: every field that defines the request.
fn request_message(r: &RequestRow) -> Vec<u8> {
    format!(
        "tokenvault officer request v1\nid={}\noperation={}\nparams={}\nreason={}\nrequester={}\ncreated={}\nexpires={}\n",
        r.id,
        r.operation,
        r.params,
        r.reason.as_deref().unwrap_or(""),
        r.requester,
        r.created_at,
        r.expires_at
    )
    .into_bytes()
}

/// What an approver signs: the request and the requester's signature on it.
fn approval_message(r: &RequestRow, approver: &str) -> Vec<u8> {
    let mut m = request_message(r);
    m.extend_from_slice(
        format!(
            "request_sig={}\napprover={approver}\n",
            STANDARD.encode(&r.request_sig)
        )
        .as_bytes(),
    );
    m
}

/// Submits a signed request; returns it (its id is what the second officer approves).
#[allow(clippy::too_many_arguments)]
pub async fn submit(
    store: &Store,
    officers: &Officers,
    requester: &str,
    key: &OfficerKey,
    op: &Operation,
    reason: Option<&str>,
    ttl_ms: i64,
    now: i64,
) -> Result<RequestRow, OfficerError> {
    key.check(officers, requester)?;
    let mut id_bytes = [0u8; 8];
    crate::crypto::random_bytes(&mut id_bytes);
    let mut row = RequestRow {
        id: format!("req-{}", hex::encode(id_bytes)),
        operation: op.name().to_owned(),
        params: op.params(),
        reason: reason.map(str::to_owned),
        requester: requester.to_owned(),
        request_sig: Vec::new(),
        created_at: now,
        expires_at: now + ttl_ms,
        state: "pending".into(),
        approver: None,
        approval_sig: None,
        decided_at: None,
    };
    row.request_sig = key.key.sign(&request_message(&row)).to_bytes().to_vec();
    let mut atx = AuditLog::new(store.clone()).begin().await?;
    store.insert_request(&mut atx.tx, &row).await?;
    let event = AuditEvent::new(
        format!("officer:{requester}"),
        Action::OfficerRequest,
        Outcome::Success,
    )
    .resource(format!("{} {op}", row.id))
    .origin("cli")
    .reason(reason.map(str::to_owned));
    atx.append(&event, now).await?;
    atx.commit().await?;
    Ok(row)
}

/// Checks and records a second officer's approval; returns the operation to execute.
/// A refused approval is audited too.
pub async fn approve(
    store: &Store,
    officers: &Officers,
    id: &str,
    approver: &str,
    key: &OfficerKey,
    now: i64,
) -> Result<(RequestRow, Operation), OfficerError> {
    let audit = AuditLog::new(store.clone());
    let checked = check_approval(store, officers, id, approver, key, now).await;
    let (row, op, sig) = match checked {
        Ok(ok) => ok,
        Err(e) => {
            let event = AuditEvent::new(
                format!("officer:{approver}"),
                Action::OfficerApprove,
                Outcome::Denied,
            )
            .resource(id)
            .origin("cli")
            .reason(Some(e.to_string()));
            audit.record(&event, now).await?;
            return Err(e);
        }
    };
    let mut atx = audit.begin().await?;
    if !store
        .decide_request(
            &mut atx.tx,
            id,
            "pending",
            "approved",
            Some((approver, &sig)),
            now,
        )
        .await?
    {
        return Err(OfficerError::NotPending(
            id.to_owned(),
            "decided meanwhile".into(),
        ));
    }
    let event = AuditEvent::new(
        format!("officer:{approver}"),
        Action::OfficerApprove,
        Outcome::Success,
    )
    .resource(format!("{id} {op}"))
    .origin("cli")
    .reason(Some(format!("requested by officer:{}", row.requester)));
    atx.append(&event, now).await?;
    atx.commit().await?;
    Ok((row, op))
}

async fn check_approval(
    store: &Store,
    officers: &Officers,
    id: &str,
    approver: &str,
    key: &OfficerKey,
    now: i64,
) -> Result<(RequestRow, Operation, Vec<u8>), OfficerError> {
    key.check(officers, approver)?;
    let row = store
        .request(id)
        .await?
        .ok_or_else(|| OfficerError::NoRequest(id.to_owned()))?;
    if row.state != "pending" {
        return Err(OfficerError::NotPending(id.to_owned(), row.state));
    }
    if now >= row.expires_at {
        return Err(OfficerError::Expired(id.to_owned()));
    }
    if row.requester == approver {
        return Err(OfficerError::SelfApproval);
    }
    let requester_key = officers.key(&row.requester)?;
    let sig = Signature::from_slice(&row.request_sig)
        .map_err(|_| OfficerError::BadSignature(id.to_owned()))?;
    requester_key
        .verify(&request_message(&row), &sig)
        .map_err(|_| OfficerError::BadSignature(id.to_owned()))?;
    let op = Operation::parse(&row.params)?;
    if op.name() != row.operation {
        return Err(OfficerError::BadSignature(id.to_owned()));
    }
    let approval = key
        .key
        .sign(&approval_message(&row, approver))
        .to_bytes()
        .to_vec();
    Ok((row, op, approval))
}

/// Marks an approved request executed (or failed) once the operation ran.
pub async fn finish(store: &Store, id: &str, ok: bool, now: i64) -> Result<(), OfficerError> {
    let mut tx = store.begin().await?;
    store
        .decide_request(
            &mut tx,
            id,
            "approved",
            if ok { "executed" } else { "failed" },
            None,
            now,
        )
        .await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(())
}
