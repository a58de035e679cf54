//! The external ciphertext format of the encrypt API:
//! `tv1:<keyring>:<version>:<base64url(nonce ‖ ciphertext ‖ tag)>`.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{NONCE_LEN, TAG_LEN};
use crate::names::{KeyVersion, KeyringName};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ciphertext {
    pub keyring: KeyringName,
    pub version: KeyVersion,
    pub sealed: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed ciphertext: expected tv1:<keyring>:<version>:<base64url>")]
pub struct CiphertextError;

impl FromStr for Ciphertext {
    type Err = CiphertextError;

    fn from_str(s: &str) -> Result<Self, CiphertextError> {
        let mut parts = s.splitn(4, ':');
        let (Some("tv1"), Some(keyring), Some(version), Some(body)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CiphertextError);
        };
        let keyring = KeyringName::parse(keyring).map_err(|_| CiphertextError)?;
        let version = version.parse::<KeyVersion>().map_err(|_| CiphertextError)?;
        let sealed = URL_SAFE_NO_PAD.decode(body).map_err(|_| CiphertextError)?;
        Ciphertext::new(keyring, version, sealed)
    }
}

impl Ciphertext {
    /// A ciphertext from its parts, however another surface spelled them; refused when
    /// `sealed` is too short to hold a nonce and a tag.
    pub fn new(
        keyring: KeyringName,
        version: KeyVersion,
        sealed: Vec<u8>,
    ) -> Result<Self, CiphertextError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(CiphertextError);
        }
        Ok(Ciphertext {
            keyring,
            version,
            sealed,
        })
    }
}

impl fmt::Display for Ciphertext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tv1:{}:{}:{}",
            self.keyring,
            self.version,
            URL_SAFE_NO_PAD.encode(&self.sealed)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ciphertext_strings_round_trip_and_reject_garbage() {
        let c = Ciphertext {
            keyring: KeyringName::parse("pii").unwrap(),
            version: KeyVersion::new(3).unwrap(),
            sealed: vec![9; 40],
        };
        let s = c.to_string();
        assert!(s.starts_with("tv1:pii:3:"));
        assert_eq!(s.parse::<Ciphertext>().unwrap(), c);
        for bad in [
            "",
            "tv1",
            "tv2:pii:3:AAAA",
            "tv1:PII:3:AAAA",
            "tv1:pii:0:AAAA",
            "tv1:pii:x:AAAA",
            "tv1:pii:3:@@",
            "tv1:pii:3:AAAA",
        ] {
            assert_eq!(bad.parse::<Ciphertext>(), Err(CiphertextError), "{bad}");
        }
    }
}
