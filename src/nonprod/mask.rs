//! Consistent masking: a real value in, a synthetic value of the same kind out, the same
//! output for the same input in every table and every run under the same masking key.
//!
//! The masking key of a kind is derived from the vault's fingerprint key (HKDF label
//! `mask/<name>/<kind>`), which never leaves the vault's key hierarchy: without the vault,
//! a masked value cannot be traced back to its input, not even by guessing inputs. Inputs
//! are normalized before they are keyed, so one card written `4111 1111 1111 1111` in one
//! table and `4111111111111111` in another masks to the same test card (each keeps its own
//! separators); e-mail addresses compare without case, names and addresses without case
//! and extra spaces. An empty value stays empty.

use crate::crypto::{FingerprintKey, Fingerprinter};
use crate::nonprod::synth::{self, Draw, Kind};

/// The masking keys of one run, one per kind.
#[derive(Clone)]
pub struct Masker {
    /// One key per kind, in the order of [`Kind::ALL`].
    keys: [Fingerprinter; Kind::ALL.len()],
    prefixes: Vec<String>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Masker([REDACTED])")
    }
}

/// HKDF label of the masking key `name` of `kind`.
fn label(name: &str, kind: Kind) -> String {
    format!("mask/{name}/{}", kind.as_str())
}

impl Masker {
    /// The masking keys named `name` under `key`; card numbers come out with one of the
    /// test card `prefixes`.
    pub fn new(key: &FingerprintKey, name: &str, prefixes: Vec<String>) -> Self {
        Self {
            keys: Kind::ALL.map(|k| key.derive(&label(name, k))),
            prefixes,
        }
    }

    /// The masked form of `input`.
    pub fn mask(&self, kind: Kind, input: &str) -> String {
        let normal = normalize(kind, input);
        if normal.is_empty() {
            return String::new();
        }
        let key = &self.keys[kind as usize];
        let mut draw = Draw::new(key.fingerprint(normal.as_bytes()));
        synth::generate(kind, &mut draw, &self.prefixes, input.trim())
    }
}

/// The form of a value that decides its mask (cleared on drop).
fn normalize(kind: Kind, input: &str) -> zeroize::Zeroizing<String> {
    // Room for an SSN's leading zeros: no reallocation leaves a copy behind.
    let mut out = zeroize::Zeroizing::new(String::with_capacity(input.len().max(9)));
    match kind {
        Kind::Pan => out.extend(input.chars().filter(char::is_ascii_digit)),
        // Nine digits: an SSN exported as a number has lost its leading zeros.
        Kind::Ssn => {
            let n = input.chars().filter(char::is_ascii_digit).count();
            if n > 0 {
                out.extend(std::iter::repeat_n('0', 9usize.saturating_sub(n)));
            }
            out.extend(input.chars().filter(char::is_ascii_digit));
        }
        Kind::Email => out.extend(input.trim().chars().flat_map(char::to_lowercase)),
        Kind::Name | Kind::Address => {
            for word in input.split_whitespace() {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.extend(word.chars().flat_map(char::to_lowercase));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn masker(ikm: u8, name: &str) -> Masker {
        let key = FingerprintKey::from_bytes(Zeroizing::new(vec![ikm; 32])).unwrap();
        Masker::new(
            &key,
            name,
            crate::nonprod::TestData::default().test_card_prefixes,
        )
    }

    #[test]
    fn equal_inputs_mask_alike_and_keys_and_names_separate_runs() {
        let m = masker(1, "default");
        let a = m.mask(Kind::Pan, "5500 0000 0000 0004");
        let b = m.mask(Kind::Pan, "5500000000000004");
        assert_eq!(a.replace(' ', ""), b);
        assert_eq!(a.matches(' ').count(), 3);
        assert_ne!(b, "5500000000000004");
        assert_eq!(
            m.mask(Kind::Email, "Jane.Roe@Mail.example"),
            m.mask(Kind::Email, " jane.roe@mail.example")
        );
        assert_eq!(
            m.mask(Kind::Name, "Jane  Roe"),
            m.mask(Kind::Name, "jane roe")
        );
        assert_ne!(
            m.mask(Kind::Name, "Jane Roe"),
            m.mask(Kind::Name, "Jane Rae")
        );
        assert_eq!(m.mask(Kind::Ssn, "  "), "");
        assert_ne!(masker(2, "default").mask(Kind::Pan, "5500000000000004"), b);
        assert_ne!(masker(1, "other").mask(Kind::Pan, "5500000000000004"), b);
        // From the review of issue 18: an SSN exported as a JSON number has lost its
        // leading zero; it masks as the same SSN written out.
        let digits = |s: String| s.chars().filter(char::is_ascii_digit).collect::<String>();
        assert_eq!(
            digits(m.mask(Kind::Ssn, "78051120")),
            digits(m.mask(Kind::Ssn, "078-05-1120"))
        );
        assert_eq!(m.mask(Kind::Ssn, "78051120").len(), 11);
        // The same input as another kind masks unrelated.
        assert_ne!(
            m.mask(Kind::Ssn, "078051120"),
            m.mask(Kind::Pan, "078051120")
        );
    }
}
