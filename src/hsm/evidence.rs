//! What the HSM says about its keys and itself: the evidence an assessor asks for.

use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use serde::Serialize;

use super::error::failed;
use super::{Hsm, HsmError};

/// What the HSM says about a key: the evidence an assessor asks for.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KeyEvidence {
    pub label: String,
    pub class: String,
    pub key_type: String,
    pub sensitive: bool,
    pub extractable: bool,
    pub never_extractable: bool,
    pub always_sensitive: bool,
    pub local: bool,
    pub token: bool,
    pub wrap: bool,
    pub unwrap: bool,
    pub encrypt: bool,
    pub decrypt: bool,
    pub sign: bool,
    /// CKA_VALUE_LEN in bytes (secret keys only; None when the token does not say).
    pub value_len: Option<u64>,
    /// CKA_DERIVE; true when the token does not say (fail closed).
    pub derive: bool,
    /// CKA_MODIFIABLE; true when the token does not say (its default).
    pub modifiable: bool,
    /// CKA_WRAP_WITH_TRUSTED; false when the token does not say (its default).
    pub wrap_with_trusted: bool,
}

/// What the token says about itself.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenEvidence {
    pub label: String,
    pub manufacturer: String,
    pub model: String,
    pub serial: String,
    pub firmware: String,
}

impl Hsm {
    /// Token identity for evidence: model, serial, firmware.
    pub fn token_evidence(&self) -> Result<TokenEvidence, HsmError> {
        let info = self
            .module
            .pkcs11
            .get_token_info(self.pool.slot())
            .map_err(failed("C_GetTokenInfo"))?;
        let fw = info.firmware_version();
        Ok(TokenEvidence {
            label: info.label().trim_end().to_owned(),
            manufacturer: info.manufacturer_id().trim_end().to_owned(),
            model: info.model().trim_end().to_owned(),
            serial: info.serial_number().trim_end().to_owned(),
            firmware: format!("{}.{}", fw.major(), fw.minor()),
        })
    }

    /// Reads the policy-relevant attributes of the key labelled `label`.
    pub fn kek_evidence(&self, label: &str) -> Result<KeyEvidence, HsmError> {
        self.key_evidence(ObjectClass::SECRET_KEY, label)
    }

    /// Evidence for the private half of the audit signing key.
    pub fn signing_key_evidence(&self, label: &str) -> Result<KeyEvidence, HsmError> {
        self.key_evidence(ObjectClass::PRIVATE_KEY, label)
    }

    pub(super) fn key_evidence(
        &self,
        class: ObjectClass,
        label: &str,
    ) -> Result<KeyEvidence, HsmError> {
        let handle = self
            .find(class, label)?
            .ok_or_else(|| HsmError::KeyMissing(label.to_owned()))?;
        let session = self.pool.get()?;
        let wanted = [
            AttributeType::KeyType,
            AttributeType::Sensitive,
            AttributeType::Extractable,
            AttributeType::NeverExtractable,
            AttributeType::AlwaysSensitive,
            AttributeType::Local,
            AttributeType::Token,
        ];
        let attrs = session
            .get_attributes(handle, &wanted)
            .map_err(session.failed("C_GetAttributeValue"))?;
        // Usage flags differ per class (a private key has no CKA_WRAP on some tokens), so
        // they are read one by one and a missing one counts as false.
        let one = |t: AttributeType| -> Option<Attribute> {
            session
                .get_attributes(handle, &[t])
                .ok()
                .and_then(|a| a.into_iter().next())
        };
        let flag = |t: AttributeType| -> bool {
            one(t).is_some_and(|a| {
                matches!(
                    a,
                    Attribute::Wrap(true)
                        | Attribute::Unwrap(true)
                        | Attribute::Encrypt(true)
                        | Attribute::Decrypt(true)
                        | Attribute::Sign(true)
                )
            })
        };
        let mut ev = KeyEvidence {
            label: label.to_owned(),
            class: class.to_string(),
            key_type: String::new(),
            sensitive: false,
            extractable: true,
            never_extractable: false,
            always_sensitive: false,
            local: false,
            token: false,
            wrap: flag(AttributeType::Wrap),
            unwrap: flag(AttributeType::Unwrap),
            encrypt: flag(AttributeType::Encrypt),
            decrypt: flag(AttributeType::Decrypt),
            sign: flag(AttributeType::Sign),
            // The other policy attributes, read the same way; a missing one reads as the
            // value the policy refuses (CKA_VALUE_LEN: none), so an HSM that hides them
            // fails the check instead of passing it.
            value_len: match one(AttributeType::ValueLen) {
                Some(Attribute::ValueLen(n)) => Some(n.into()),
                _ => None,
            },
            derive: !matches!(one(AttributeType::Derive), Some(Attribute::Derive(false))),
            modifiable: !matches!(
                one(AttributeType::Modifiable),
                Some(Attribute::Modifiable(false))
            ),
            wrap_with_trusted: matches!(
                one(AttributeType::WrapWithTrusted),
                Some(Attribute::WrapWithTrusted(true))
            ),
        };
        for attr in attrs {
            match attr {
                Attribute::KeyType(t) => {
                    ev.key_type = match t {
                        KeyType::AES => "AES".into(),
                        KeyType::EC => "EC".into(),
                        other => other.to_string(),
                    }
                }
                Attribute::Sensitive(v) => ev.sensitive = v,
                Attribute::Extractable(v) => ev.extractable = v,
                Attribute::NeverExtractable(v) => ev.never_extractable = v,
                Attribute::AlwaysSensitive(v) => ev.always_sensitive = v,
                Attribute::Local(v) => ev.local = v,
                Attribute::Token(v) => ev.token = v,
                _ => {}
            }
        }
        Ok(ev)
    }
}
