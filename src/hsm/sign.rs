//! The audit signing key: an EC P-256 key pair generated in the HSM, whose private half
//! signs audit checkpoints and never leaves the token.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use sha2::{Digest, Sha256};

use super::policy::{self, KeyRole};
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
        let handle = self
            .find(ObjectClass::PUBLIC_KEY, label)?
            .ok_or_else(|| HsmError::KeyMissing(label.to_owned()))?;
        let session = self.pool.get()?;
        let attrs = session
            .get_attributes(handle, &[AttributeType::EcPoint])
            .map_err(session.failed("C_GetAttributeValue"))?;
        let Some(Attribute::EcPoint(der)) = attrs.into_iter().next() else {
            return Err(HsmError::BadAnswer("the public key has no CKA_EC_POINT"));
        };
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
}
