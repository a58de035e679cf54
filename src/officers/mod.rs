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
mod registry;
mod request;
mod reveals;

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::store::StoreError;

pub use execute::{Executed, execute};
pub use flow::{Progress, add_signature, create, finish, pending_signers};
use registry::register;
pub use registry::{Registry, bootstrap};
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
    #[error(
        "a reason is plain text of at most 200 characters: no control, bidirectional or invisible characters, and no long digit runs (card numbers do not belong in the audit trail)"
    )]
    BadReason,
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
    /// A decision about a held reveal or a suspension that does not apply.
    #[error("{0}")]
    Approval(String),
    #[error(
        "the officer registry does not match the audit trail for officer {0}: it was changed outside dual control; run `tokenvault audit verify`"
    )]
    RegistryTampered(String),
    #[error(
        "the officer registry does not match the audit trail: {recorded} registrations recorded, {rows} registry rows; it was changed outside dual control; run `tokenvault audit verify`"
    )]
    RegistryMismatch { recorded: i64, rows: usize },
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
    let key =
        VerifyingKey::from_bytes(&bytes).map_err(|_| OfficerError::BadPublicKey(short(text)))?;
    // A small-order key verifies forged signatures (with a non-strict check): never one.
    if key.is_weak() {
        return Err(OfficerError::BadPublicKey(short(text)));
    }
    Ok(key)
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

/// Verifies `sig` over `doc` under `key` (strictly: no small-order components).
fn verifies(doc: &RequestDocument, key: &VerifyingKey, sig: &[u8]) -> bool {
    Signature::from_slice(sig)
        .map(|s| key.verify_strict(&doc.signing_message(), &s).is_ok())
        .unwrap_or(false)
}
