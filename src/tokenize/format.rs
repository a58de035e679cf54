//! Token formats: `opaque` (`tok_` + 144 random bits, URL-safe), and the format-preserving
//! `last4` and `first6_last4`, which keep the length and the named digits and always
//! fail the Luhn check, so a token can never pass for a card number.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

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
/// Longest string accepted as a token.
pub const MAX_TOKEN_LEN: usize = 64;

/// The Luhn (mod 10) check over ASCII digits.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut n = u32::from(d - b'0');
        if i % 2 == 1 {
            n *= 2;
            if n > 9 {
                n -= 9;
            }
        }
        sum += n;
    }
    sum.is_multiple_of(10)
}

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
        TokenFormat::First6Last4 => keep(value, 6, 4),
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
    if s.is_empty() || s.len() > MAX_TOKEN_LEN {
        return false;
    }
    match s.strip_prefix(OPAQUE_PREFIX) {
        Some(rest) => {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }
        None => s.bytes().all(|b| b.is_ascii_digit()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_matches_known_numbers() {
        assert!(luhn_valid(b"4111111111111111"));
        assert!(luhn_valid(b"79927398713"));
        assert!(!luhn_valid(b"4111111111111112"));
    }

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
                assert_eq!(&t[..6], &pan[..6]);
                assert_eq!(&t[t.len() - 4..], &pan[pan.len() - 4..]);
                assert!(!luhn_valid(t.as_bytes()), "{t}");
            }
        }
    }

    #[test]
    fn opaque_tokens_are_long_random_and_url_safe() {
        let a = generate(TokenFormat::Opaque, "x");
        let b = generate(TokenFormat::Opaque, "x");
        assert_ne!(a, b);
        assert!(a.starts_with("tok_") && a.len() == 4 + 24, "{a}");
        assert!(plausible_token(&a));
        for bad in ["", "tok_", "tok_a/b", "12ab", &"1".repeat(65), "tok_ä"] {
            assert!(!plausible_token(bad), "{bad}");
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
