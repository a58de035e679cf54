//! `WrapMechanism`: the key-wrap mechanism, written in config and in the database as its
//! PKCS#11 name.

use std::fmt;

use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use serde::{Deserialize, Serialize};

/// A standard or vendor key-wrap mechanism, written as its PKCS#11 name.
/// Stored next to every wrapped key so a profile change never strands old keys.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum WrapMechanism {
    /// `CKM_AES_KEY_WRAP_PAD` (RFC 5649 on SoftHSM2).
    AesKeyWrapPad,
    /// `CKM_AES_KEY_WRAP` (RFC 3394): the most portable for 32-byte keys.
    AesKeyWrap,
    /// `CKM_AES_KEY_WRAP_KWP` (0x210B, RFC 5649 under its PKCS#11 3.0 name).
    AesKeyWrapKwp,
    /// A vendor mechanism code (≥ 0x80000000), e.g. `vendor:0x80000171`.
    Vendor(u64),
}

impl WrapMechanism {
    pub(super) fn mechanism_type(self) -> MechanismType {
        match self {
            WrapMechanism::AesKeyWrapPad => MechanismType::AES_KEY_WRAP_PAD,
            WrapMechanism::AesKeyWrap => MechanismType::AES_KEY_WRAP,
            WrapMechanism::AesKeyWrapKwp => {
                MechanismType::new_vendor_defined(0x210B).unwrap_or(MechanismType::AES_KEY_WRAP_PAD)
            }
            WrapMechanism::Vendor(code) => {
                MechanismType::new_vendor_defined(code as _).unwrap_or(MechanismType::AES_KEY_WRAP)
            }
        }
    }

    pub(super) fn mechanism(self) -> Mechanism<'static> {
        match self {
            WrapMechanism::AesKeyWrapPad => Mechanism::AesKeyWrapPad,
            WrapMechanism::AesKeyWrap => Mechanism::AesKeyWrap,
            other => Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(
                other.mechanism_type(),
                None,
            )),
        }
    }
}

impl fmt::Display for WrapMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WrapMechanism::AesKeyWrapPad => f.write_str("CKM_AES_KEY_WRAP_PAD"),
            WrapMechanism::AesKeyWrap => f.write_str("CKM_AES_KEY_WRAP"),
            WrapMechanism::AesKeyWrapKwp => f.write_str("CKM_AES_KEY_WRAP_KWP"),
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

impl std::str::FromStr for WrapMechanism {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "CKM_AES_KEY_WRAP_PAD" => Ok(WrapMechanism::AesKeyWrapPad),
            "CKM_AES_KEY_WRAP" => Ok(WrapMechanism::AesKeyWrap),
            "CKM_AES_KEY_WRAP_KWP" => Ok(WrapMechanism::AesKeyWrapKwp),
            _ => s
                .strip_prefix("vendor:0x")
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                .filter(|code| *code >= 0x8000_0000)
                .map(WrapMechanism::Vendor)
                .ok_or_else(|| {
                    format!(
                        "unknown wrap mechanism `{s}`: use CKM_AES_KEY_WRAP_PAD, CKM_AES_KEY_WRAP, \
                         CKM_AES_KEY_WRAP_KWP or vendor:0x…"
                    )
                }),
        }
    }
}
