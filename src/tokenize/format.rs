//! Token formats: `opaque` (`tok_` + 144 random bits, URL-safe), and the format-preserving
//! `last4` and `first6_last4`, which keep the length and the named digits and always
//! fail the Luhn check, so a token can never pass for a card number.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub use crate::cardscan::luhn_valid;
use crate::crypto::random_bytes;

/// How a token looks.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TokenFormat {
    Opaque,
    Last4,
    First6Last4,
}

/// Prefix of opaque tokens.
pub const OPAQUE_PREFIX: &str = "tok_";
const OPAQUE_RANDOM_BYTES: usize = 18;
/// Longest string accepted as a token (imported tokens included).
pub const MAX_TOKEN_LEN: usize = 128;
/// Shortest token imported from another vault (`tokenvault import
/// --vault-transform-export`): shorter strings are no token.
const MIN_FOREIGN_TOKEN_LEN: usize = 16;

/// Uniform random decimal digits from the CSPRNG (rejection sampling, no modulo bias).
fn random_digits(n: usize, out: &mut String) {
    let mut buf = [0u8; 32];
    let mut have = 0;
    while have < n {
        random_bytes(&mut buf);
        for b in buf {
            if b < 250 && have < n {
                out.push(char::from(b'0' + b % 10));
                have += 1;
            }
        }
    }
}

/// Whether `format` can apply to a normalized value of this length.
pub fn fits(format: TokenFormat, digits_only: bool, len: usize) -> bool {
    match format {
        TokenFormat::Opaque => true,
        TokenFormat::Last4 => digits_only && len >= 8,
        TokenFormat::First6Last4 => digits_only && len >= 12,
    }
}

/// A fresh token for `value` (normalized; digits for the format-preserving formats).
pub fn generate(format: TokenFormat, value: &str) -> String {
    match format {
        TokenFormat::Opaque => {
            let mut b = [0u8; OPAQUE_RANDOM_BYTES];
            random_bytes(&mut b);
            format!("{OPAQUE_PREFIX}{}", URL_SAFE_NO_PAD.encode(b))
        }
        TokenFormat::Last4 => keep(value, 0, 4),
        // PCI DSS truncation: at most the first six, and at least six digits hidden.
        TokenFormat::First6Last4 => keep(value, 6.min(value.len().saturating_sub(10)), 4),
    }
}

/// Keeps `head` leading and `tail` trailing digits, draws the rest, and redraws until the
/// result fails Luhn (nine draws in ten do).
fn keep(value: &str, head: usize, tail: usize) -> String {
    let len = value.len();
    loop {
        let mut t = String::with_capacity(len);
        t.push_str(&value[..head]);
        random_digits(len - head - tail, &mut t);
        t.push_str(&value[len - tail..]);
        if !luhn_valid(t.as_bytes()) {
            return t;
        }
    }
}

/// Whether `s` is shaped like a token this vault issues (checked before any lookup).
pub fn plausible_token(s: &str) -> bool {
    // A string holding a card number is no token, whatever else it holds: it is refused
    // before anything (the audit trail included) records it.
    if s.is_empty() || s.len() > MAX_TOKEN_LEN || crate::cardscan::contains_pan(s) {
        return false;
    }
    // A string of letters and digits is no token once it holds a long run of digits (12
    // or more, whatever separates them): that is where a card number would hide.
    if !s.bytes().all(|b| b.is_ascii_digit()) && long_digit_run(s) {
        return false;
    }
    match s.strip_prefix(OPAQUE_PREFIX) {
        Some(rest) => {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }
        // Format-preserving tokens always fail Luhn: a Luhn-valid digit string is a card
        // number sent where a token belongs, never a token.
        None if s.bytes().all(|b| b.is_ascii_digit()) => !luhn_valid(s.as_bytes()),
        None => importable_token(s),
    }
}

/// Whether `s` may be kept as the token of an imported record (Vault Transform's tokens):
/// 16–128 characters of letters, digits and `-_.+/=`, at least one of them a letter,
/// holding no card number, and not in the shape of the vault's own opaque tokens.
pub fn importable_token(s: &str) -> bool {
    (MIN_FOREIGN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+/=".contains(&b))
        && s.bytes().any(|b| b.is_ascii_alphabetic())
        && !s.starts_with(OPAQUE_PREFIX)
        && !crate::cardscan::contains_pan(s)
        && !long_digit_run(s)
}

/// Whether `s` holds 12 or more digits in a row once every character that is neither a
/// letter nor a digit is skipped (`4111_1111.1111-1111` is one run of 16).
fn long_digit_run(s: &str) -> bool {
    let mut run = 0;
    for b in s.bytes() {
        if b.is_ascii_digit() {
            run += 1;
            if run >= 12 {
                return true;
            }
        } else if b.is_ascii_alphabetic() {
            run = 0;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_preserving_tokens_keep_shape_and_always_fail_luhn() {
        for pan in [
            "4111111111111111",
            "378282246310005",
            "6011000990139424",
            "4000056655665556123",
            "555555555544",
        ] {
            for _ in 0..300 {
                let t = generate(TokenFormat::Last4, pan);
                assert_eq!(t.len(), pan.len());
                assert_eq!(&t[t.len() - 4..], &pan[pan.len() - 4..]);
                assert!(!luhn_valid(t.as_bytes()), "{t}");
                assert!(plausible_token(&t));
                let t = generate(TokenFormat::First6Last4, pan);
                assert_eq!(&t[t.len() - 4..], &pan[pan.len() - 4..]);
                assert!(!luhn_valid(t.as_bytes()), "{t}");
            }
        }
    }

    /// PCI DSS truncation: at most the first six and last four digits, and only where at
    /// least six digits stay hidden; shorter PANs keep fewer leading digits.
    #[test]
    fn first6_last4_never_shows_more_than_pci_truncation_allows() {
        for pan in [
            "555555555544",
            "3530111333300",
            "30569309025904",
            "378282246310005",
            "4111111111111111",
            "4000056655665556123",
        ] {
            let len = pan.len();
            let head = 6.min(len - 10);
            for _ in 0..200 {
                let t = generate(TokenFormat::First6Last4, pan);
                assert_eq!(&t[..head], &pan[..head], "{pan}");
                let shown = t
                    .bytes()
                    .zip(pan.bytes())
                    .take_while(|(a, b)| a == b)
                    .count()
                    .min(head)
                    + 4;
                assert!(len - shown >= 6, "{pan} → {t} hides fewer than six digits");
            }
            // Over many draws, the digit after the kept head is not the PAN's.
            let same = (0..200)
                .filter(|_| {
                    generate(TokenFormat::First6Last4, pan).as_bytes()[head] == pan.as_bytes()[head]
                })
                .count();
            assert!(
                same < 60,
                "{pan}: digit {head} kept in {same} of 200 tokens"
            );
        }
    }

    #[test]
    fn a_luhn_valid_digit_string_is_never_a_plausible_token() {
        for pan in ["4111111111111111", "378282246310005", "5555555555554444"] {
            assert!(!plausible_token(pan), "{pan}");
        }
        assert!(plausible_token("4111111111111112"));
    }

    #[test]
    fn opaque_tokens_are_long_random_and_url_safe() {
        let a = generate(TokenFormat::Opaque, "x");
        let b = generate(TokenFormat::Opaque, "x");
        assert_ne!(a, b);
        assert!(a.starts_with("tok_") && a.len() == 4 + 24, "{a}");
        assert!(plausible_token(&a));
        for bad in ["", "tok_", "tok_a/b", "12ab", &"1".repeat(129), "tok_ä"] {
            assert!(!plausible_token(bad), "{bad}");
        }
        // Tokens imported from Vault Transform keep their shape.
        let vault = "Q4tYgFXHxUYfSrVv2Nq6Kdb2jSt1fQpxkC4r85ivpfA";
        assert!(importable_token(vault) && plausible_token(vault));
        for bad in [
            "short1234",
            &"1234567890".repeat(3),
            "spaces are not tokens",
            &"a".repeat(129),
        ] {
            assert!(!importable_token(bad), "{bad}");
        }
    }

    #[test]
    fn random_digits_are_roughly_uniform() {
        let mut s = String::new();
        random_digits(100_000, &mut s);
        let mut counts = [0u32; 10];
        for b in s.bytes() {
            counts[usize::from(b - b'0')] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }
}
