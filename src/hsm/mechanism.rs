//! `WrapMechanism`: the key-wrap mechanism, written in config and in the database as its
//! PKCS#11 name.

use std::fmt;

use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use serde::{Deserialize, Serialize};

use super::HsmError;

/// A standard or vendor key-wrap mechanism, written as its PKCS#11 name.
/// Stored next to every wrapped key so a profile change never strands old keys.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum WrapMechanism {
    /// `CKM_AES_KEY_WRAP_PAD` (RFC 5649 on SoftHSM2).
    AesKeyWrapPad,
    /// `CKM_AES_KEY_WRAP` (RFC 3394): the most portable for 32-byte keys.
    AesKeyWrap,
    /// A vendor mechanism code (≥ 0x80000000), e.g. `vendor:0x80000171`.
    Vendor(u64),
}

/// Why `CKM_AES_KEY_WRAP_KWP` is refused: the PKCS#11 binding has no way to send 0x210B
/// (it is neither one of its standard mechanisms nor in the vendor range), and sending
/// another mechanism under its name would make the inventory and the signed report lie.
const KWP_REFUSED: &str = "CKM_AES_KEY_WRAP_KWP (0x210B) cannot be sent through this \
     build's PKCS#11 binding, and the vault will not wrap with another mechanism under its \
     name: use CKM_AES_KEY_WRAP (RFC 3394, enough for 32-byte keys) or CKM_AES_KEY_WRAP_PAD";

impl WrapMechanism {
    /// The mechanism sent to the HSM; an error, never a substitute, when it cannot be.
    pub(super) fn mechanism_type(self) -> Result<MechanismType, HsmError> {
        match self {
            WrapMechanism::AesKeyWrapPad => Ok(MechanismType::AES_KEY_WRAP_PAD),
            WrapMechanism::AesKeyWrap => Ok(MechanismType::AES_KEY_WRAP),
            WrapMechanism::Vendor(code) => MechanismType::new_vendor_defined(code as _)
                .map_err(|_| HsmError::BadMechanism(self.to_string())),
        }
    }

    pub(super) fn mechanism(self) -> Result<Mechanism<'static>, HsmError> {
        Ok(match self {
            WrapMechanism::AesKeyWrapPad => Mechanism::AesKeyWrapPad,
            WrapMechanism::AesKeyWrap => Mechanism::AesKeyWrap,
            WrapMechanism::Vendor(_) => Mechanism::VendorDefined(
                VendorDefinedMechanism::new::<()>(self.mechanism_type()?, None),
            ),
        })
    }
}

impl fmt::Display for WrapMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WrapMechanism::AesKeyWrapPad => f.write_str("CKM_AES_KEY_WRAP_PAD"),
            WrapMechanism::AesKeyWrap => f.write_str("CKM_AES_KEY_WRAP"),
            WrapMechanism::Vendor(code) => write!(f, "vendor:{code:#x}"),
        }
    }
}

impl fmt::Debug for WrapMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl TryFrom<String> for WrapMechanism {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<WrapMechanism> for String {
    fn from(m: WrapMechanism) -> String {
        m.to_string()
    }
}

impl WrapMechanism {
    /// The mechanism a stored wrapped key records. Keys recorded as
    /// `CKM_AES_KEY_WRAP_KWP` by versions before 0.2 were wrapped with
    /// `CKM_AES_KEY_WRAP_PAD` (the binding sent that instead), so that is what unwraps them.
    pub fn from_stored(s: &str) -> Result<Self, String> {
        match s {
            "CKM_AES_KEY_WRAP_KWP" => Ok(WrapMechanism::AesKeyWrapPad),
            other => other.parse(),
        }
    }
}

impl std::str::FromStr for WrapMechanism {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "CKM_AES_KEY_WRAP_PAD" => Ok(WrapMechanism::AesKeyWrapPad),
            "CKM_AES_KEY_WRAP" => Ok(WrapMechanism::AesKeyWrap),
            "CKM_AES_KEY_WRAP_KWP" => Err(KWP_REFUSED.to_owned()),
            _ => s
                .strip_prefix("vendor:0x")
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                .filter(|code| *code >= 0x8000_0000)
                .map(WrapMechanism::Vendor)
                .ok_or_else(|| {
                    format!(
                        "unknown wrap mechanism `{s}`: use CKM_AES_KEY_WRAP_PAD, CKM_AES_KEY_WRAP \
                         or vendor:0x…"
                    )
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mechanism a wrapped key records is the mechanism the HSM is asked for: a name
    /// that cannot be sent is refused, never silently replaced by another mechanism.
    #[test]
    fn the_configured_mechanism_is_the_one_sent_or_refused() {
        for (name, code) in [
            ("CKM_AES_KEY_WRAP", 0x2109u64),
            ("CKM_AES_KEY_WRAP_PAD", 0x210A),
            ("vendor:0x80000171", 0x8000_0171),
        ] {
            let m: WrapMechanism = name.parse().unwrap();
            assert_eq!(m.to_string(), name);
            let sent: u64 = *m.mechanism_type().unwrap();
            assert_eq!(sent, code, "{name}");
        }
        match "CKM_AES_KEY_WRAP_KWP".parse::<WrapMechanism>() {
            Err(e) => assert!(e.contains("CKM_AES_KEY_WRAP_KWP"), "{e}"),
            Ok(m) => {
                let sent: u64 = *m.mechanism_type().unwrap();
                assert_eq!(sent, 0x210B, "KWP configured but {sent:#x} sent");
            }
        }
        assert!(WrapMechanism::Vendor(0x1234).mechanism_type().is_err());
        // Keys stored under the old, wrong label still unwrap with what was really sent.
        assert_eq!(
            WrapMechanism::from_stored("CKM_AES_KEY_WRAP_KWP"),
            Ok(WrapMechanism::AesKeyWrapPad)
        );
    }
}
