//! The key policy, turned into PKCS#11 attribute templates in one place.
//!
//! Every flag is set explicitly: SoftHSM2 defaults omitted flags to WRAP/UNWRAP/ENCRYPT
//! true and SENSITIVE false, which is the opposite of what a vault wants.

use cryptoki::object::{Attribute, KeyType, ObjectClass};

/// DER encoding of the OID of NIST P-256 (prime256v1), for CKA_EC_PARAMS.
pub const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// The kinds of object the vault creates in the token.
#[derive(Debug, Clone, Copy)]
pub enum KeyRole {
    /// The key-encryption key: a token object that only wraps and unwraps, never leaves.
    Kek,
    /// A data key on its way out of the HSM: a session object that lives only long
    /// enough to be wrapped and read into the process.
    TransientDataKey,
    /// The private half of the audit signing key pair: signs, never leaves.
    AuditPrivate,
    /// The public half of the audit signing key pair.
    AuditPublic,
}

/// The attribute template for `role`. Labels go on token objects only.
pub fn template(role: KeyRole, label: &str) -> Vec<Attribute> {
    let label = Attribute::Label(label.as_bytes().to_vec());
    match role {
        KeyRole::Kek => vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            label,
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
            Attribute::Modifiable(false),
        ],
        KeyRole::TransientDataKey => vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
        ],
        KeyRole::AuditPrivate => vec![
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::EC),
            label,
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Modifiable(false),
        ],
        KeyRole::AuditPublic => vec![
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::EcParams(P256_PARAMS.to_vec()),
            label,
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
            Attribute::Derive(false),
            Attribute::Modifiable(false),
        ],
    }
}
