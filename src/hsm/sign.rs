//! Key pairs generated in the HSM whose private halves never leave the token: the audit
//! signing key (EC P-256, signs audit checkpoints and reports) and the versions of Transit
//! signing keys (ECDSA P-256 or Ed25519).

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use sha2::{Digest, Sha256};

use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};

use super::policy::{self, KeyRole, SignAlgorithm};
use super::{Hsm, HsmError, count};

impl Hsm {
    /// Finds or generates the EC P-256 audit signing key pair. Returns whether it was created.
    pub fn ensure_signing_key(&self, label: &str) -> Result<bool, HsmError> {
        self.with_object_lock(|| {
            let private = self.find(ObjectClass::PRIVATE_KEY, label)?;
            let public = self.find(ObjectClass::PUBLIC_KEY, label)?;
            let created = match (private, public) {
                (Some(_), Some(_)) => false,
                (None, None) => {
                    let session = self.pool.get()?;
                    session
                        .generate_key_pair(
                            &Mechanism::EccKeyPairGen,
                            &policy::template(KeyRole::AuditPublic, label),
                            &policy::template(KeyRole::AuditPrivate, label),
                        )
                        .map_err(session.failed("C_GenerateKeyPair"))?;
                    true
                }
                _ => {
                    return Err(HsmError::KeyMissing(format!(
                        "{label} (one half of the key pair)"
                    )));
                }
            };
            let ev = self.signing_key_evidence(label)?;
            policy::enforce(KeyRole::AuditPrivate, &ev)?;
            Ok(created)
        })
    }

    /// The uncompressed SEC1 point (0x04 ‖ X ‖ Y) of the audit signing public key.
    pub fn signing_public_key(&self, label: &str) -> Result<Vec<u8>, HsmError> {
        let der = self.ec_point(label)?;
        // CKA_EC_POINT is a DER OCTET STRING (04 41 04‖X‖Y); some tokens return the raw point.
        match der.as_slice() {
            [0x04, 0x41, rest @ ..] if rest.len() == 65 => Ok(rest.to_vec()),
            raw if raw.len() == 65 && raw[0] == 0x04 => Ok(raw.to_vec()),
            _ => Err(HsmError::BadAnswer("unexpected CKA_EC_POINT encoding")),
        }
    }

    /// ECDSA P-256 over SHA-256(`message`): the 64-byte r ‖ s signature.
    pub fn sign(&self, label: &str, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        count("sign");
        let handle = self
            .find(ObjectClass::PRIVATE_KEY, label)?
            .ok_or_else(|| HsmError::KeyMissing(label.to_owned()))?;
        let digest = Sha256::digest(message);
        let session = self.pool.get()?;
        session
            .sign(&Mechanism::Ecdsa, handle, &digest)
            .map_err(session.failed("C_Sign"))
    }

    /// Generates a Transit signing key pair under `label` (both halves token objects),
    /// checks its private half against the key policy and answers its public key. A pair
    /// that breaks the policy is destroyed again before the error is returned. A label
    /// already in use is refused (labels carry random bits, so this is a safeguard).
    pub fn generate_signing_pair(
        &self,
        label: &str,
        algorithm: SignAlgorithm,
    ) -> Result<Vec<u8>, HsmError> {
        self.with_object_lock(|| {
            if self.find(ObjectClass::PRIVATE_KEY, label)?.is_some()
                || self.find(ObjectClass::PUBLIC_KEY, label)?.is_some()
            {
                return Err(HsmError::KeyPolicy {
                    label: label.to_owned(),
                    problem: "a key pair under this label exists already".into(),
                });
            }
            let mechanism = match algorithm {
                SignAlgorithm::EcdsaP256 => Mechanism::EccKeyPairGen,
                SignAlgorithm::Ed25519 => Mechanism::EccEdwardsKeyPairGen,
            };
            let session = self.pool.get()?;
            session
                .generate_key_pair(
                    &mechanism,
                    &policy::template(KeyRole::SigningPublic(algorithm), label),
                    &policy::template(KeyRole::SigningPrivate(algorithm), label),
                )
                .map_err(session.failed("C_GenerateKeyPair"))?;
            drop(session);
            let checked = self.signing_key_evidence(label).and_then(|ev| {
                policy::enforce(KeyRole::SigningPrivate(algorithm), &ev)?;
                self.public_point(label, algorithm)
            });
            if checked.is_err() {
                self.destroy_labelled(label);
            }
            checked
        })
    }

    /// The public key of a Transit signing key version: the uncompressed SEC1 point for
    /// ECDSA P-256, the 32-byte key for Ed25519.
    pub fn public_point(&self, label: &str, algorithm: SignAlgorithm) -> Result<Vec<u8>, HsmError> {
        match algorithm {
            SignAlgorithm::EcdsaP256 => self.signing_public_key(label),
            SignAlgorithm::Ed25519 => {
                let der = self.ec_point(label)?;
                match der.as_slice() {
                    [0x04, 0x20, rest @ ..] if rest.len() == 32 => Ok(rest.to_vec()),
                    raw if raw.len() == 32 => Ok(raw.to_vec()),
                    _ => Err(HsmError::BadAnswer(
                        "unexpected Ed25519 CKA_EC_POINT encoding",
                    )),
                }
            }
        }
    }

    /// Signs with a Transit signing key version: ECDSA P-256 over `message` (SHA-256 of
    /// it, or `message` itself when it is already that digest) as r ‖ s, or Ed25519 over
    /// `message` itself (64 bytes).
    pub fn sign_transit(
        &self,
        label: &str,
        algorithm: SignAlgorithm,
        message: &[u8],
        prehashed: bool,
    ) -> Result<Vec<u8>, HsmError> {
        count("sign");
        let handle = self
            .find(ObjectClass::PRIVATE_KEY, label)?
            .ok_or_else(|| HsmError::KeyMissing(label.to_owned()))?;
        let session = self.pool.get()?;
        let signed = match algorithm {
            SignAlgorithm::EcdsaP256 if prehashed => {
                session.sign(&Mechanism::Ecdsa, handle, message)
            }
            SignAlgorithm::EcdsaP256 => {
                session.sign(&Mechanism::Ecdsa, handle, &Sha256::digest(message))
            }
            SignAlgorithm::Ed25519 => session.sign(
                &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                handle,
                message,
            ),
        };
        signed.map_err(session.failed("C_Sign"))
    }

    fn ec_point(&self, label: &str) -> Result<Vec<u8>, HsmError> {
        let handle = self
            .find(ObjectClass::PUBLIC_KEY, label)?
            .ok_or_else(|| HsmError::KeyMissing(label.to_owned()))?;
        let session = self.pool.get()?;
        let attrs = session
            .get_attributes(handle, &[AttributeType::EcPoint])
            .map_err(session.failed("C_GetAttributeValue"))?;
        match attrs.into_iter().next() {
            Some(Attribute::EcPoint(der)) => Ok(der),
            _ => Err(HsmError::BadAnswer("the public key has no CKA_EC_POINT")),
        }
    }
}
