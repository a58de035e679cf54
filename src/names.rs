//! Parsed names: a keyring name and a key version are checked once, at the edge.

use std::fmt;
use std::str::FromStr;

/// Internal keyring of the fingerprint key; not available for user data.
pub const FINGERPRINT_KEYRING: &str = "fingerprint";

/// A keyring name: 1–32 of `a-z 0-9 _ -`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyringName(String);

/// Whether `s` is a name: 1–32 of `a-z 0-9 _ -`, starting with a letter. A name never
/// holds a card number (it starts with a letter) nor anything a log or database minds.
fn is_name(s: &str) -> bool {
    let ok_len = (1..=32).contains(&s.len());
    let ok_first = s.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    ok_len && ok_first && ok_chars
}

impl KeyringName {
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if is_name(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err("a keyring name is 1–32 characters of a-z, 0-9, _ and -, starting with a letter")
        }
    }

    pub fn fingerprint() -> Self {
        Self(FINGERPRINT_KEYRING.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyringName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A token type name, with the same rules as a keyring name; checked before a request's
/// type is used for anything (permission, lookup, audit).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TypeName(String);

impl TypeName {
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if is_name(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err("a token type is 1–32 characters of a-z, 0-9, _ and -, starting with a letter")
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A data key version: 1, 2, 3, …
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyVersion(u32);

impl KeyVersion {
    pub fn new(v: u32) -> Option<Self> {
        (v >= 1).then_some(Self(v))
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// From a database column; anything out of range is corrupt data.
    pub fn from_db(v: i64) -> Option<Self> {
        u32::try_from(v).ok().and_then(Self::new)
    }
}

impl FromStr for KeyVersion {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const MSG: &str = "a key version is a whole number from 1";
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.starts_with('0') {
            return Err(MSG);
        }
        s.parse::<u32>().ok().and_then(Self::new).ok_or(MSG)
    }
}

impl fmt::Display for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Lifecycle state of a data key version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Encrypts and decrypts.
    Active,
    /// Decrypts what it protected; encrypts nothing new (after rotation).
    DecryptOnly,
    /// No use at all.
    Retired,
    /// Wrapped material erased: what it protected is crypto-shredded.
    Destroyed,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::DecryptOnly => "decrypt-only",
            KeyState::Retired => "retired",
            KeyState::Destroyed => "destroyed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => KeyState::Active,
            "decrypt-only" => KeyState::DecryptOnly,
            "retired" => KeyState::Retired,
            "destroyed" => KeyState::Destroyed,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyring_names_and_versions_are_parsed_strictly() {
        assert!(KeyringName::parse("pan").is_ok());
        assert!(KeyringName::parse("pii-eu_2").is_ok());
        for bad in ["", "Pan", "1pan", "pan:x", "p an", &"a".repeat(33)] {
            assert!(KeyringName::parse(bad).is_err(), "{bad}");
        }
        assert_eq!("7".parse::<KeyVersion>().unwrap().get(), 7);
        for bad in ["", "0", "07", "-1", "x", "99999999999"] {
            assert!(bad.parse::<KeyVersion>().is_err(), "{bad}");
        }
    }
}
