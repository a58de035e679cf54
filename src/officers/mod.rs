//! Officers and dual control (PCI DSS 3.6.1.2 split knowledge and dual control, 10.2.1.2
//! attribution of administrative actions).
//!
//! - The registry of officers lives in the vault's database, never in the config or the
//!   environment. The first `init` registers at least two officers; every later change
//!   (add, remove, re-key) is itself a request two officers sign. A public key can be
//!   registered once, ever. Each registry row names the audit event that registered it, and
//!   the registry is refused if a row does not match its event, so a row written around
//!   the audit chain does not count.
//! - Every key lifecycle command is a request: a canonical JSON document
//!   ([`RequestDocument`]) saying exactly what happens and what becomes unrecoverable.
//!   Officers sign it where their key lives (`tokenvault officer sign`, which needs no
//!   database or HSM); the vault host only verifies signatures (`keys approve --signature`).
//! - Who signed is the registered owner of the verifying key, never a name typed on the
//!   command line, so one key cannot count twice. Destructive operations and registry
//!   changes need two distinct officers, the rest one. The audit actor is the signers.

mod execute;
mod flow;
mod request;

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::audit::{Action, AuditEvent, AuditLog, Outcome};
use crate::store::{Store, StoreError};

pub use execute::{Executed, execute};
pub use flow::{Progress, add_signature, create, finish, pending_signers};
pub use request::{FORMAT, Operation, RequestDocument, SignatureFile};

#[derive(Debug, thiserror::Error)]
pub enum OfficerError {
    #[error("officer key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("'{0}' is not an Ed25519 public key in base64 (as `tokenvault officer keygen` prints)")]
    BadPublicKey(String),
    #[error("officer names are 1 to 32 characters of a-z, 0-9, '-' and '_'")]
    BadName,
    #[error("no request {0}: see `tokenvault keys requests`")]
    NoRequest(String),
    #[error("request {0} is {1}; only a pending request can be signed")]
    NotPending(String, String),
    #[error("request {0} expired: submit a new one")]
    Expired(String),
    #[error("the signature is for request {0}, not {1}")]
    WrongRequest(String, String),
    #[error("the signature does not verify over request {0}: it was made for another text or key")]
    BadSignature(String),
    #[error("the signing key is not a registered officer's active key")]
    NotAnOfficer,
    #[error("officer {0} has already signed request {1}: a second, different officer must sign")]
    AlreadySigned(String, String),
    #[error("not a request file: {0}")]
    BadRequestFile(String),
    #[error("not a signature file: {0}")]
    BadSignatureFile(String),
    #[error(
        "the officer registry is already set up: officers are added with `tokenvault officer add` under dual control"
    )]
    AlreadyBootstrapped,
    #[error(
        "no officers are registered: the first `tokenvault init` needs at least two, e.g. --officer alice=<public key> --officer bob=<public key>"
    )]
    NoOfficers,
    #[error("{0}")]
    Registry(String),
    #[error(
        "the officer registry does not match the audit trail for officer {0}: it was changed outside dual control; run `tokenvault audit verify`"
    )]
    RegistryTampered(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The old config section. Officers are no longer read from the config or environment;
/// its presence is refused at load so nobody believes it still counts.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OfficerSettings {
    pub public_key: String,
}

/// Decodes a base64 Ed25519 public key.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, OfficerError> {
    let bytes: [u8; 32] = STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| OfficerError::BadPublicKey(short(text)))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| OfficerError::BadPublicKey(short(text)))
}

fn short(text: &str) -> String {
    text.chars().take(60).collect()
}

/// Officer names: what the audit actor `officer:<name>` carries.
pub fn check_name(name: &str) -> Result<(), OfficerError> {
    let ok = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(OfficerError::BadName)
    }
}

/// The audit resource of a registration; the registry row must match it.
fn registration_resource(name: &str, key: &VerifyingKey) -> String {
    format!("officer:{name} key:{}", STANDARD.encode(key.as_bytes()))
}

/// The active officers, read from the vault and checked against the audit trail.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    active: Vec<(String, VerifyingKey)>,
}

impl Registry {
    pub async fn load(store: &Store) -> Result<Self, OfficerError> {
        let mut active = Vec::new();
        for row in store.officer_keys().await? {
            if row.state != "active" {
                continue;
            }
            let key = row
                .public_key
                .as_slice()
                .try_into()
                .ok()
                .and_then(|b: [u8; 32]| VerifyingKey::from_bytes(&b).ok())
                .ok_or_else(|| OfficerError::RegistryTampered(row.name.clone()))?;
            let event = store.audit_events(row.audit_seq - 1, 1).await?;
            let matches = event.first().is_some_and(|e| {
                e.seq == row.audit_seq
                    && e.action == Action::OfficerRegister.as_str()
                    && e.outcome == Outcome::Success.as_str()
                    && e.resource.as_deref() == Some(&registration_resource(&row.name, &key))
            });
            if !matches {
                return Err(OfficerError::RegistryTampered(row.name));
            }
            active.push((row.name, key));
        }
        Ok(Self { active })
    }

    /// The officer whose active key this is.
    pub fn officer_of(&self, public_key: &[u8]) -> Option<(&str, &VerifyingKey)> {
        self.active
            .iter()
            .find(|(_, k)| k.as_bytes().as_slice() == public_key)
            .map(|(n, k)| (n.as_str(), k))
    }

    pub fn is_active(&self, name: &str) -> bool {
        self.active.iter().any(|(n, _)| n == name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.active.iter().map(|(n, _)| n.as_str())
    }

    pub fn len(&self) -> usize {
        self.active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }
}

/// Registers `name` with `key` in an open audit transaction (the one place a registry row
/// is written, for the bootstrap and for approved add and re-key requests).
async fn register(
    atx: &mut crate::audit::AuditTx,
    store: &Store,
    name: &str,
    key: &VerifyingKey,
    actor: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<(), OfficerError> {
    let event = AuditEvent::new(actor, Action::OfficerRegister, Outcome::Success)
        .resource(registration_resource(name, key))
        .origin("cli")
        .reason(reason.map(str::to_owned));
    let seq = atx.append(&event, now).await?;
    store
        .insert_officer_key(&mut atx.tx, key.as_bytes(), name, now, seq)
        .await
        .map_err(|e| match e {
            StoreError::Rejected(_) => OfficerError::Registry(
                "this public key or officer name is already registered (a key can be registered once, ever): every officer needs a key of their own".into(),
            ),
            other => other.into(),
        })?;
    Ok(())
}

/// The first officers, registered by the first `init` (trust on first use: whoever sets
/// up the vault names them, and the audit trail and report show who they are).
pub async fn bootstrap(
    store: &Store,
    officers: &[(String, String)],
    now: i64,
) -> Result<Vec<String>, OfficerError> {
    // Once officers were registered, never again: not when the registry rows are gone
    // (a database writer deleting them) as long as the audit trail remembers them.
    if !store.officer_keys().await?.is_empty() || store.officer_registrations().await? > 0 {
        return Err(OfficerError::AlreadyBootstrapped);
    }
    let mut parsed: Vec<(String, VerifyingKey)> = Vec::new();
    for (name, key) in officers {
        check_name(name)?;
        let key = parse_public_key(key)?;
        if parsed.iter().any(|(n, _)| n == name) {
            return Err(OfficerError::Registry(format!(
                "officer {name} is named twice"
            )));
        }
        if parsed.iter().any(|(_, k)| k == &key) {
            return Err(OfficerError::Registry(
                "two officers were given the same public key: every officer needs a key of their own".into(),
            ));
        }
        parsed.push((name.clone(), key));
    }
    if parsed.len() < 2 {
        return Err(OfficerError::NoOfficers);
    }
    let mut atx = AuditLog::new(store.clone()).begin().await?;
    for (name, key) in &parsed {
        register(
            &mut atx,
            store,
            name,
            key,
            "bootstrap",
            Some("first init"),
            now,
        )
        .await?;
    }
    atx.commit().await?;
    Ok(parsed.into_iter().map(|(n, _)| n).collect())
}

/// An officer's private key, loaded from its file. Never printed.
pub struct OfficerKey {
    key: SigningKey,
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
        })
    }

    /// Makes a new key file (0600 from the start) and returns the base64 public key.
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

    pub fn public_key(&self) -> String {
        STANDARD.encode(self.key.verifying_key().as_bytes())
    }

    /// Signs a request document (after [`RequestDocument::parse`] checked it).
    pub fn sign(&self, doc: &RequestDocument) -> SignatureFile {
        SignatureFile {
            request_id: doc.id.clone(),
            public_key: self.public_key(),
            signature: STANDARD.encode(self.key.sign(&doc.signing_message()).to_bytes()),
        }
    }
}

/// Verifies `sig` over `doc` under `key`.
fn verifies(doc: &RequestDocument, key: &VerifyingKey, sig: &[u8]) -> bool {
    Signature::from_slice(sig)
        .map(|s| key.verify(&doc.signing_message(), &s).is_ok())
        .unwrap_or(false)
}
