//! Signatures by Transit signing keys, through the same service as encryption: the
//! guard's permission check first (`sign:<key>`, `verify:<key>`), then the HSM (signing)
//! or the version's public key (verifying), then one audit event.

use p256::ecdsa::signature::Verifier;
use p256::ecdsa::signature::hazmat::PrehashVerifier;

use super::CryptoService;
use crate::audit::{Action, AuditEvent, Outcome};
use crate::error::Error;
use crate::guard::Principal;
use crate::hsm::SignAlgorithm;
use crate::keys::{KeyError, KeyVersion, KeyringName, SigningVersion};

/// How an ECDSA signature is written: DER (`asn1`, Vault's default) or r ‖ s (`jws`).
/// Ed25519 signatures are always their 64 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marshaling {
    Asn1,
    Jws,
}

/// What the caller asks of a signature besides the key and the input.
#[derive(Debug, Clone, Copy)]
pub struct SignOptions {
    /// The input is already the SHA-256 digest of the message (ECDSA only).
    pub prehashed: bool,
    pub marshaling: Marshaling,
}

/// A signature as the service answers it: the version that made it, its algorithm (the
/// version's, whatever the configuration says now) and its bytes (DER or r ‖ s for ECDSA,
/// 64 bytes for Ed25519).
#[derive(Debug)]
pub struct Signature {
    pub version: KeyVersion,
    pub algorithm: SignAlgorithm,
    pub bytes: Vec<u8>,
}

impl CryptoService {
    /// The permission, then whether `name` is a configured signing key.
    async fn signing_key(
        &self,
        who: &Principal,
        action: Action,
        name: &KeyringName,
        now: i64,
    ) -> Result<(), Error> {
        let name = name.as_str();
        self.guard.check(who, action, name, Some(name), now).await?;
        match self.keys.signing_algorithm(name) {
            Some(_) => Ok(()),
            None => Err(Error::InvalidRequest(
                "not a signing key (the configured signing keys are in the vault's config)".into(),
            )),
        }
    }

    /// Signs `input` with the newest version of the signing key `name` (`version`, if
    /// given, must be it) inside the HSM; needs `sign:<name>`. ECDSA signatures are
    /// returned in low-S form.
    pub async fn sign(
        &self,
        who: &Principal,
        name: &KeyringName,
        version: Option<u32>,
        input: &[u8],
        options: SignOptions,
        now: i64,
    ) -> Result<Signature, Error> {
        self.signing_key(who, Action::Sign, name, now).await?;
        let signer = match self.keys.active_signing(name.as_str(), version).await {
            Err(KeyError::Lifecycle(why)) => return Err(Error::InvalidRequest(why)),
            other => other?,
        };
        check_prehashed(signer.algorithm, input, options.prehashed)?;
        let raw = self
            .keys
            .sign_with(&signer, input, options.prehashed)
            .await?;
        let bytes = match signer.algorithm {
            SignAlgorithm::EcdsaP256 => {
                let sig = p256::ecdsa::Signature::from_slice(&raw).map_err(|_| {
                    Error::Internal("the HSM answered a malformed signature".into())
                })?;
                let sig = sig.normalize_s().unwrap_or(sig);
                match options.marshaling {
                    Marshaling::Asn1 => sig.to_der().as_bytes().to_vec(),
                    Marshaling::Jws => sig.to_bytes().to_vec(),
                }
            }
            SignAlgorithm::Ed25519 => raw,
        };
        let event = AuditEvent::new(&who.identity, Action::Sign, Outcome::Success)
            .origin(&who.origin)
            .resource(format!("{name}/{}", signer.version));
        self.guard.record(event, now).await?;
        Ok(Signature {
            version: signer.version,
            algorithm: signer.algorithm,
            bytes,
        })
    }

    /// Whether `signature` is a signature of `input` by version `version` of `name`,
    /// checked against that version's public key; needs `verify:<name>`; audited with its
    /// answer.
    #[allow(clippy::too_many_arguments)]
    pub async fn verify_signature(
        &self,
        who: &Principal,
        name: &KeyringName,
        version: KeyVersion,
        input: &[u8],
        signature: &[u8],
        options: SignOptions,
        now: i64,
    ) -> Result<bool, Error> {
        self.signing_key(who, Action::SignVerify, name, now).await?;
        let key = match self.keys.signing_version(name.as_str(), version).await {
            Err(KeyError::UnknownVersion(..)) => {
                return Err(Error::InvalidValue("the key version does not exist".into()));
            }
            other => other?,
        };
        check_prehashed(key.algorithm, input, options.prehashed)?;
        let valid = verifies(&key, input, signature, options);
        let event = AuditEvent::new(&who.identity, Action::SignVerify, Outcome::Success)
            .origin(&who.origin)
            .resource(format!("{name}/{version}"))
            .reason(Some(if valid { "valid" } else { "invalid" }.to_owned()));
        self.guard.record(event, now).await?;
        Ok(valid)
    }
}

fn check_prehashed(algorithm: SignAlgorithm, input: &[u8], prehashed: bool) -> Result<(), Error> {
    match (algorithm, prehashed) {
        (SignAlgorithm::Ed25519, true) => Err(Error::InvalidRequest(
            "prehashed: an ed25519 key signs the input itself".into(),
        )),
        (SignAlgorithm::EcdsaP256, true) if input.len() != 32 => Err(Error::InvalidRequest(
            "prehashed: the input must be a SHA-256 digest (32 bytes)".into(),
        )),
        _ => Ok(()),
    }
}

/// Checks a signature against a version's public key. A signature that does not parse is
/// simply not valid.
fn verifies(key: &SigningVersion, input: &[u8], signature: &[u8], options: SignOptions) -> bool {
    match key.algorithm {
        SignAlgorithm::EcdsaP256 => {
            let Ok(vk) = p256::ecdsa::VerifyingKey::from_sec1_bytes(&key.public_key) else {
                return false;
            };
            let sig = match options.marshaling {
                Marshaling::Asn1 => p256::ecdsa::Signature::from_der(signature),
                Marshaling::Jws => p256::ecdsa::Signature::from_slice(signature),
            };
            let Ok(sig) = sig else { return false };
            // Only the low-S form is a signature of this vault: its high-S twin would let
            // one signature be presented as two.
            if sig.normalize_s().is_some() {
                return false;
            }
            if options.prehashed {
                vk.verify_prehash(input, &sig).is_ok()
            } else {
                vk.verify(input, &sig).is_ok()
            }
        }
        SignAlgorithm::Ed25519 => {
            let Ok(bytes) = <[u8; 32]>::try_from(key.public_key.as_slice()) else {
                return false;
            };
            let Ok(vk) = ed25519_dalek::VerifyingKey::from_bytes(&bytes) else {
                return false;
            };
            let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
                return false;
            };
            vk.verify_strict(input, &sig).is_ok()
        }
    }
}
