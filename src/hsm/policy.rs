//! The key policy in one place: the PKCS#11 attribute templates the vault creates keys
//! with, and the check that a key found in the token obeys it (`check`), used by `serve`
//! (through `Hsm::check_kek` and `Hsm::ensure_signing_key`) and by the audit report.
//!
//! Every flag is set explicitly: SoftHSM2 defaults omitted flags to WRAP/UNWRAP/ENCRYPT
//! true and SENSITIVE false, which is the opposite of what a vault wants.

use cryptoki::object::{Attribute, KeyType, ObjectClass};

use super::{HsmError, KeyEvidence};

/// DER encoding of the OID of NIST P-256 (prime256v1), for CKA_EC_PARAMS.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// DER encoding of the OID of Ed25519 (1.3.101.112), for CKA_EC_PARAMS.
const ED25519_PARAMS: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// The algorithm of a Transit signing key pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum SignAlgorithm {
    /// ECDSA on NIST P-256 over SHA-256.
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    /// Pure Ed25519 (RFC 8032).
    #[serde(rename = "ed25519")]
    Ed25519,
}

impl SignAlgorithm {
    /// Vault's name for the key type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::Ed25519 => "ed25519",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ecdsa-p256" => Some(Self::EcdsaP256),
            "ed25519" => Some(Self::Ed25519),
            _ => None,
        }
    }

    fn key_type(self) -> KeyType {
        match self {
            Self::EcdsaP256 => KeyType::EC,
            Self::Ed25519 => KeyType::EC_EDWARDS,
        }
    }

    fn params(self) -> Vec<u8> {
        match self {
            Self::EcdsaP256 => P256_PARAMS.to_vec(),
            Self::Ed25519 => ED25519_PARAMS.to_vec(),
        }
    }
}

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
    /// The private half of one version of a Transit signing key: signs, never leaves.
    SigningPrivate(SignAlgorithm),
    /// Its public half.
    SigningPublic(SignAlgorithm),
}

/// The attribute template for `role`. Labels go on token objects only.
pub(super) fn template(role: KeyRole, label: &str) -> Vec<Attribute> {
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
            // Moot while the KEK is not extractable, and kept so if that ever changes:
            // only a key the HSM trusts could wrap it.
            Attribute::WrapWithTrusted(true),
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
        KeyRole::SigningPrivate(alg) => vec![
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(alg.key_type()),
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
        KeyRole::SigningPublic(alg) => vec![
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(alg.key_type()),
            Attribute::EcParams(alg.params()),
            label,
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
            Attribute::Derive(false),
            Attribute::Modifiable(false),
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

/// One thing a key must be, and what to tell the operator when it is not.
struct Requirement {
    holds: fn(&KeyEvidence) -> bool,
    problem: &'static str,
}

const SENSITIVE: Requirement = Requirement {
    holds: |e| e.sensitive,
    problem: "CKA_SENSITIVE is false",
};
const NOT_EXTRACTABLE: Requirement = Requirement {
    holds: |e| !e.extractable,
    problem: "CKA_EXTRACTABLE is true",
};
const NEVER_EXTRACTABLE: Requirement = Requirement {
    holds: |e| e.never_extractable,
    problem: "CKA_NEVER_EXTRACTABLE is false: it was extractable once",
};
const GENERATED_IN_HSM: Requirement = Requirement {
    holds: |e| e.local,
    problem: "CKA_LOCAL is false: it was imported, not generated in the HSM",
};

/// The KEK: what `template(KeyRole::Kek)` asks for (its usage, length, no derivation, not
/// modifiable, wrapped only by a trusted key), plus what only generation inside the token
/// gives (CKA_LOCAL, CKA_NEVER_EXTRACTABLE).
const KEK: &[Requirement] = &[
    SENSITIVE,
    NOT_EXTRACTABLE,
    NEVER_EXTRACTABLE,
    GENERATED_IN_HSM,
    Requirement {
        holds: |e| e.key_type == "AES",
        problem: "it is not an AES key",
    },
    Requirement {
        holds: |e| !(e.encrypt || e.decrypt || e.sign),
        problem: "it may encrypt, decrypt or sign; a KEK may only wrap and unwrap",
    },
    Requirement {
        holds: |e| e.value_len == Some(32),
        problem: "CKA_VALUE_LEN is not 32: a KEK is a 256-bit AES key",
    },
    Requirement {
        holds: |e| !e.derive,
        problem: "CKA_DERIVE is true: a KEK must not derive other keys",
    },
    Requirement {
        holds: |e| !e.modifiable,
        problem: "CKA_MODIFIABLE is true: its attributes could change after this check",
    },
    Requirement {
        holds: |e| e.wrap_with_trusted,
        problem: "CKA_WRAP_WITH_TRUSTED is false: it was not made by this tokenvault version \
                  (run `tokenvault keys rotate-kek`)",
    },
];

/// The private half of the audit signing key: the three properties `serve` has always
/// refused it without. Its template sets more (key type, no decrypt or unwrap), but
/// checking those would refuse signing keys that are accepted today — a decision to make
/// on its own, not as part of defining the policy once.
const AUDIT_PRIVATE: &[Requirement] = &[SENSITIVE, NOT_EXTRACTABLE, GENERATED_IN_HSM];

/// The private half of a Transit signing key version: made by this version of the vault,
/// so it is held to everything generation inside the token gives.
const SIGNING_PRIVATE: &[Requirement] = &[
    SENSITIVE,
    NOT_EXTRACTABLE,
    NEVER_EXTRACTABLE,
    GENERATED_IN_HSM,
    Requirement {
        holds: |e| !e.decrypt && !e.unwrap && !e.derive,
        problem: "it may decrypt, unwrap or derive; a signing key may only sign",
    },
];

/// Checks what the token says about a key in `role` against the policy. On failure,
/// returns every requirement the key breaks, most important first.
///
/// A transient data key and the audit public key have nothing to check: the first lives
/// for one call in a session and is meant to leave the HSM, the second is public.
pub fn check(role: KeyRole, evidence: &KeyEvidence) -> Result<(), Vec<&'static str>> {
    let requirements = match role {
        KeyRole::Kek => KEK,
        KeyRole::AuditPrivate => AUDIT_PRIVATE,
        KeyRole::SigningPrivate(_) => SIGNING_PRIVATE,
        KeyRole::TransientDataKey | KeyRole::AuditPublic | KeyRole::SigningPublic(_) => &[],
    };
    let broken: Vec<&'static str> = requirements
        .iter()
        .filter(|r| !(r.holds)(evidence))
        .map(|r| r.problem)
        .collect();
    if broken.is_empty() {
        Ok(())
    } else {
        Err(broken)
    }
}

/// `check`, as the error `serve` refuses to start with.
pub(super) fn enforce(role: KeyRole, evidence: &KeyEvidence) -> Result<(), HsmError> {
    check(role, evidence).map_err(|broken| HsmError::KeyPolicy {
        label: evidence.label.clone(),
        problem: broken.join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a token reports for a key it generated from `template(role)`: the template's
    /// flags, plus CKA_LOCAL and the "always/never" flags that generation sets. Usage
    /// flags the template leaves out read as false, as `Hsm::key_evidence` reads them.
    fn generated(role: KeyRole) -> KeyEvidence {
        let mut e = KeyEvidence {
            label: "tv-test".into(),
            class: String::new(),
            key_type: String::new(),
            sensitive: false,
            extractable: true,
            never_extractable: false,
            always_sensitive: false,
            local: true,
            token: false,
            wrap: false,
            unwrap: false,
            encrypt: false,
            decrypt: false,
            sign: false,
            value_len: None,
            derive: true,
            modifiable: true,
            wrap_with_trusted: false,
        };
        for attr in template(role, "tv-test") {
            match attr {
                Attribute::Class(c) => e.class = c.to_string(),
                Attribute::KeyType(KeyType::AES) => e.key_type = "AES".into(),
                Attribute::KeyType(KeyType::EC) => e.key_type = "EC".into(),
                Attribute::Sensitive(v) => e.sensitive = v,
                Attribute::Extractable(v) => e.extractable = v,
                Attribute::Token(v) => e.token = v,
                Attribute::Wrap(v) => e.wrap = v,
                Attribute::Unwrap(v) => e.unwrap = v,
                Attribute::Encrypt(v) => e.encrypt = v,
                Attribute::Decrypt(v) => e.decrypt = v,
                Attribute::Sign(v) => e.sign = v,
                Attribute::ValueLen(n) => e.value_len = Some(n.into()),
                Attribute::Derive(v) => e.derive = v,
                Attribute::Modifiable(v) => e.modifiable = v,
                Attribute::WrapWithTrusted(v) => e.wrap_with_trusted = v,
                _ => {}
            }
        }
        e.never_extractable = !e.extractable;
        e.always_sensitive = e.sensitive;
        e
    }

    fn broken(role: KeyRole, change: impl FnOnce(&mut KeyEvidence)) -> Vec<&'static str> {
        let mut e = generated(role);
        change(&mut e);
        check(role, &e).err().unwrap_or_default()
    }

    #[test]
    fn keys_made_from_the_templates_obey_the_policy() {
        for role in [
            KeyRole::Kek,
            KeyRole::AuditPrivate,
            KeyRole::AuditPublic,
            KeyRole::TransientDataKey,
            KeyRole::SigningPrivate(SignAlgorithm::EcdsaP256),
            KeyRole::SigningPrivate(SignAlgorithm::Ed25519),
            KeyRole::SigningPublic(SignAlgorithm::Ed25519),
        ] {
            assert_eq!(check(role, &generated(role)), Ok(()), "{role:?}");
        }
    }

    #[test]
    fn a_kek_is_refused_for_each_wrong_attribute() {
        let kek = KeyRole::Kek;
        assert_eq!(
            broken(kek, |e| e.sensitive = false),
            ["CKA_SENSITIVE is false"]
        );
        assert_eq!(
            broken(kek, |e| e.extractable = true),
            ["CKA_EXTRACTABLE is true"]
        );
        assert_eq!(
            broken(kek, |e| e.never_extractable = false),
            ["CKA_NEVER_EXTRACTABLE is false: it was extractable once"]
        );
        assert_eq!(
            broken(kek, |e| e.local = false),
            ["CKA_LOCAL is false: it was imported, not generated in the HSM"]
        );
        for key_type in ["EC", "GENERIC_SECRET", "DES3", ""] {
            assert_eq!(
                broken(kek, |e| e.key_type = key_type.into()),
                ["it is not an AES key"],
                "{key_type}"
            );
        }
        let usage = ["it may encrypt, decrypt or sign; a KEK may only wrap and unwrap"];
        assert_eq!(broken(kek, |e| e.encrypt = true), usage);
        assert_eq!(broken(kek, |e| e.decrypt = true), usage);
        assert_eq!(broken(kek, |e| e.sign = true), usage);
        for len in [None, Some(16), Some(24), Some(64)] {
            assert_eq!(
                broken(kek, |e| e.value_len = len),
                ["CKA_VALUE_LEN is not 32: a KEK is a 256-bit AES key"],
                "{len:?}"
            );
        }
        assert_eq!(
            broken(kek, |e| e.derive = true),
            ["CKA_DERIVE is true: a KEK must not derive other keys"]
        );
        assert_eq!(
            broken(kek, |e| e.modifiable = true),
            ["CKA_MODIFIABLE is true: its attributes could change after this check"]
        );
        let untrusted = broken(kek, |e| e.wrap_with_trusted = false);
        assert_eq!(untrusted.len(), 1);
        assert!(untrusted[0].starts_with("CKA_WRAP_WITH_TRUSTED is false"));
    }

    #[test]
    fn every_broken_requirement_is_reported_most_important_first() {
        let imported = broken(KeyRole::Kek, |e| {
            e.sensitive = false;
            e.extractable = true;
            e.never_extractable = false;
            e.local = false;
            e.encrypt = true;
        });
        assert_eq!(
            imported,
            [
                "CKA_SENSITIVE is false",
                "CKA_EXTRACTABLE is true",
                "CKA_NEVER_EXTRACTABLE is false: it was extractable once",
                "CKA_LOCAL is false: it was imported, not generated in the HSM",
                "it may encrypt, decrypt or sign; a KEK may only wrap and unwrap",
            ]
        );
        let mut e = generated(KeyRole::Kek);
        e.sensitive = false;
        e.local = false;
        let err = enforce(KeyRole::Kek, &e).unwrap_err().to_string();
        assert!(
            err.contains("'tv-test'")
                && err.contains(
                    "(CKA_SENSITIVE is false; CKA_LOCAL is false: it was imported, not generated in the HSM)"
                ),
            "{err}"
        );
    }

    #[test]
    fn the_audit_signing_key_is_refused_when_it_can_leave_the_hsm_or_was_imported() {
        let private = KeyRole::AuditPrivate;
        assert_eq!(
            broken(private, |e| e.sensitive = false),
            ["CKA_SENSITIVE is false"]
        );
        assert_eq!(
            broken(private, |e| e.extractable = true),
            ["CKA_EXTRACTABLE is true"]
        );
        assert_eq!(
            broken(private, |e| e.local = false),
            ["CKA_LOCAL is false: it was imported, not generated in the HSM"]
        );
    }
}
