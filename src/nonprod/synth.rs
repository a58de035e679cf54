//! Synthetic values: production-shaped data that is never real. One generator per kind,
//! used both by a non-production vault's answer for a token it has no record of and by
//! `tokenvault mask`. Every generator draws from a [`Draw`] seeded by a keyed digest (the
//! caller's), so the same input under the same key gives the same output, and nothing
//! about the input can be learnt from the output without the key.
//!
//! What each kind promises:
//! - `pan`: Luhn-valid, starting with one of the configured test card prefixes, with the
//!   shape's length (13–19 digits; 16 otherwise) and separators;
//! - `ssn`: never issued (area 900–999 outside the IRS's ITIN and ATIN groups);
//! - `email`: in a reserved domain (`example.com`, `.net`, `.org`), with 47 random bits in
//!   the local part (letters only), so distinct inputs collide about once in 10^14 pairs;
//! - `name`, `address`: plausible, from the shipped word lists ([`super::words`]).
//!
//! Digits and addresses live in smaller spaces: two distinct card numbers map to the same
//! test card about once per 2.4·10^8 pairs per prefix-length (8-digit prefixes leave 7 free
//! digits in a 16-digit number), and two SSNs about once per 4.9·10^7 pairs. A masked copy
//! keeps every join of equal inputs; a rare collision may join two unequal ones.

use sha2::{Digest, Sha256};

use super::words::{GIVEN_NAMES, STREET_SUFFIXES, STREETS, SURNAMES};
use crate::cardscan::luhn_valid;

/// What a synthetic value looks like.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Pan,
    Ssn,
    Email,
    Name,
    Address,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Pan, Kind::Ssn, Kind::Email, Kind::Name, Kind::Address];

    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Pan => "pan",
            Kind::Ssn => "ssn",
            Kind::Email => "email",
            Kind::Name => "name",
            Kind::Address => "address",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The reserved domains synthetic e-mail addresses use (RFC 2606).
const DOMAINS: [&str; 3] = ["example.com", "example.net", "example.org"];

/// A deterministic stream of bytes from a 32-byte seed (SHA-256 in counter mode over a
/// keyed digest: the seed is already unpredictable, the stream only stretches it).
pub struct Draw {
    seed: [u8; 32],
    block: [u8; 32],
    pos: usize,
    counter: u32,
}

impl Draw {
    pub fn new(seed: [u8; 32]) -> Self {
        Self {
            seed,
            block: seed,
            pos: 0,
            counter: 0,
        }
    }

    fn byte(&mut self) -> u8 {
        if self.pos == self.block.len() {
            self.counter += 1;
            let mut h = Sha256::new();
            h.update(self.seed);
            h.update(self.counter.to_be_bytes());
            self.block = h.finalize().into();
            self.pos = 0;
        }
        self.pos += 1;
        self.block[self.pos - 1]
    }

    /// A uniform decimal digit (rejection sampling).
    pub fn digit(&mut self) -> u8 {
        loop {
            let b = self.byte();
            if b < 250 {
                return b'0' + b % 10;
            }
        }
    }

    /// A uniform number below `n` (1 ≤ n ≤ 65,536; rejection sampling).
    pub fn below(&mut self, n: usize) -> usize {
        let n = n.clamp(1, 1 << 16) as u32;
        let zone = (1u32 << 16) - (1u32 << 16) % n;
        loop {
            let v = u32::from(u16::from_be_bytes([self.byte(), self.byte()]));
            if v < zone {
                return (v % n) as usize;
            }
        }
    }

    /// A uniform number below `n` (n ≥ 1; rejection sampling).
    pub fn below_u64(&mut self, n: u64) -> u64 {
        let n = n.max(1);
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let mut b = [0u8; 8];
            b.iter_mut().for_each(|x| *x = self.byte());
            let v = u64::from_be_bytes(b);
            if v < zone {
                return v % n;
            }
        }
    }

    fn pick<'a>(&mut self, list: &[&'a str]) -> &'a str {
        list[self.below(list.len())]
    }
}

/// A synthetic value of `kind` shaped like `shape` (an input value, a token, or empty).
pub fn generate(kind: Kind, draw: &mut Draw, prefixes: &[String], shape: &str) -> String {
    match kind {
        Kind::Pan => pan(draw, prefixes, shape, false),
        Kind::Ssn => ssn(draw, shape),
        Kind::Email => email(draw),
        Kind::Name => name(draw, shape),
        Kind::Address => address(draw),
    }
}

/// A Luhn-valid test card number with `shape`'s digit count (13–19, else 16) and its
/// separators (spaces, dashes, dots). With `keep_last4`, the shape's last four digits are
/// kept (a format-preserving token's, which its holder already sees).
pub fn pan(draw: &mut Draw, prefixes: &[String], shape: &str, keep_last4: bool) -> String {
    let shape_digits: Vec<u8> = shape.bytes().filter(u8::is_ascii_digit).collect();
    let mut len = shape_digits.len();
    let mut keep = keep_last4;
    if !(13..=19).contains(&len) {
        (len, keep) = (16, false);
    }
    let fits = |p: &&String, keep: bool, len: usize| p.len() + if keep { 5 } else { 1 } <= len;
    let mut candidates: Vec<&String> = prefixes.iter().filter(|p| fits(p, keep, len)).collect();
    if candidates.is_empty() {
        keep = false;
        len = 16;
        candidates = prefixes.iter().filter(|p| fits(p, false, len)).collect();
    }
    let free_end = if keep { len - 4 } else { len };
    // Each prefix in proportion to the numbers under it: a long (narrow) one is not a
    // cluster of collisions.
    let weight = |p: &String| 10u64.pow(u32::try_from(free_end - p.len()).unwrap_or(0).min(15));
    let total: u64 = candidates.iter().map(|p| weight(p)).sum();
    let mut at = draw.below_u64(total);
    let mut prefix = "41111111";
    for p in &candidates {
        if at < weight(p) {
            prefix = p.as_str();
            break;
        }
        at -= weight(p);
    }
    let mut d: Vec<u8> = prefix.bytes().collect();
    while d.len() < free_end {
        d.push(draw.digit());
    }
    if keep {
        d.extend_from_slice(&shape_digits[shape_digits.len() - 4..]);
    }
    // The check digit: the last digit, or (keeping the last four) the one before them.
    let slot = if keep { len - 5 } else { len - 1 };
    for c in b'0'..=b'9' {
        d[slot] = c;
        if luhn_valid(&d) {
            break;
        }
    }
    lay_out(&d, shape)
}

/// `digits` laid out as `shape` lays out its digits, when it has as many; plain otherwise.
fn lay_out(digits: &[u8], shape: &str) -> String {
    let shape_count = shape.bytes().filter(u8::is_ascii_digit).count();
    let separators = |c: char| matches!(c, ' ' | '-' | '.');
    if shape_count != digits.len() || !shape.chars().all(|c| c.is_ascii_digit() || separators(c)) {
        return String::from_utf8_lossy(digits).into_owned();
    }
    let mut out = String::with_capacity(shape.len());
    let mut next = digits.iter();
    for c in shape.chars() {
        match c {
            '0'..='9' => out.push(char::from(*next.next().unwrap_or(&b'0'))),
            other => out.push(other),
        }
    }
    out
}

/// A never-issued SSN: area 900–999 with a group the IRS does not use (01–49), any serial
/// but 0000; laid out as `shape` is (`123-45-6789` or `123456789`).
pub fn ssn(draw: &mut Draw, shape: &str) -> String {
    let area = 900 + draw.below(100);
    let group = 1 + draw.below(49);
    let serial = 1 + draw.below(9999);
    let digits = format!("{area:03}{group:02}{serial:04}");
    match shape.bytes().filter(u8::is_ascii_digit).count() {
        9 => lay_out(digits.as_bytes(), shape),
        _ if shape.is_empty() => digits,
        _ => format!("{}-{}-{}", &digits[..3], &digits[3..5], &digits[5..]),
    }
}

/// `given.surname.<10 letters>@example.{com,net,org}`.
pub fn email(draw: &mut Draw) -> String {
    let given = draw.pick(&GIVEN_NAMES).to_ascii_lowercase();
    let surname = draw.pick(&SURNAMES).to_ascii_lowercase();
    // Letters only: a run of digits could read as a card number, which a non-production
    // vault refuses to tokenize.
    let tag: String = (0..10)
        .map(|_| char::from(b'a' + draw.below(26) as u8))
        .collect();
    let domain = draw.pick(&DOMAINS);
    format!("{given}.{surname}.{tag}@{domain}")
}

/// A given name and a surname; one word shapes give a surname alone, three or more add a
/// middle initial; an all-capitals shape gives capitals.
pub fn name(draw: &mut Draw, shape: &str) -> String {
    let words = shape.split_whitespace().count();
    let given = draw.pick(&GIVEN_NAMES);
    let surname = draw.pick(&SURNAMES);
    let initial = char::from(b'A' + draw.below(26) as u8);
    let out = match words {
        1 => surname.to_owned(),
        0 | 2 => format!("{given} {surname}"),
        _ => format!("{given} {initial}. {surname}"),
    };
    let shouting =
        shape.chars().any(|c| c.is_alphabetic()) && !shape.chars().any(|c| c.is_lowercase());
    if shouting { out.to_uppercase() } else { out }
}

/// `<number> <street> <suffix>`.
pub fn address(draw: &mut Draw) -> String {
    let number = 1 + draw.below(9899);
    let street = draw.pick(&STREETS);
    let suffix = draw.pick(&STREET_SUFFIXES);
    format!("{number} {street} {suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nonprod::TestData;

    fn draws() -> impl Iterator<Item = Draw> {
        (0u32..2000).map(|i| {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_be_bytes());
            Draw::new(Sha256::digest(seed).into())
        })
    }

    #[test]
    fn synthetic_card_numbers_are_luhn_valid_test_cards_of_the_shape() {
        let data = TestData::default();
        let p = &data.test_card_prefixes;
        for mut d in draws() {
            let v = pan(&mut d, p, "5500 0000 0000 0004", false);
            assert_eq!(v.len(), 19);
            assert_eq!(v.matches(' ').count(), 3);
            let digits: String = v.chars().filter(char::is_ascii_digit).collect();
            assert!(luhn_valid(digits.as_bytes()), "{v}");
            assert!(data.is_test_card(&digits), "{v}");
            let kept = pan(&mut d, p, "4000000000009995", true);
            assert!(
                kept.ends_with("9995") && luhn_valid(kept.as_bytes()),
                "{kept}"
            );
            assert!(data.is_test_card(&kept));
            let amex = pan(&mut d, p, "3782-822463-10005", false);
            assert_eq!(amex.len(), 17);
            let odd = pan(&mut d, p, "12", false);
            assert_eq!(odd.len(), 16);
            assert!(luhn_valid(odd.as_bytes()));
        }
    }

    /// From the review of issue 18: random tails under the short prefixes 4000 0000 and
    /// 6200 0000 are numbers in ranges issuers use. The defaults name those networks' test
    /// numbers to 12 digits, and a prefix is drawn in proportion to the numbers under it,
    /// so the narrow ones add no collisions.
    #[test]
    fn synthetic_card_numbers_stay_under_test_only_prefixes_and_do_not_collide() {
        let data = TestData::default();
        let p = &data.test_card_prefixes;
        let mut seen = std::collections::HashSet::new();
        for mut d in draws() {
            let v = pan(&mut d, p, "", false);
            if v.starts_with("4000") || v.starts_with("6200") {
                assert!(
                    p.iter().any(|x| x.len() >= 12 && v.starts_with(x.as_str())),
                    "{v} is a random number in a live range"
                );
            }
            assert!(seen.insert(v.clone()), "{v} drawn twice");
        }
    }

    #[test]
    fn synthetic_ssns_are_never_issued_and_addresses_are_reserved() {
        let data = TestData::default();
        for mut d in draws() {
            let s = ssn(&mut d, "078-05-1120");
            assert_eq!(s.len(), 11);
            assert!(super::super::never_issued_ssn(&s.replace('-', "")), "{s}");
            assert_eq!(ssn(&mut d, "078051120").len(), 9);
            let e = email(&mut d);
            assert!(data.is_test_email(&e), "{e}");
            assert!(
                crate::tokenize::values::validate(crate::tokenize::Validator::Email, &e, 4096)
                    .is_ok()
            );
            assert_eq!(name(&mut d, "Ann Lee").split(' ').count(), 2);
            assert!(
                name(&mut d, "ANN B. LEE")
                    .chars()
                    .all(|c| !c.is_lowercase())
            );
            assert!(address(&mut d).split(' ').count() >= 3);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_value() {
        // The masker indexes its keys by `kind as usize`.
        assert!(Kind::ALL.iter().enumerate().all(|(i, k)| *k as usize == i));
        let p = TestData::default().test_card_prefixes;
        let seed = [7u8; 32];
        for kind in Kind::ALL {
            let a = generate(kind, &mut Draw::new(seed), &p, "x y");
            let b = generate(kind, &mut Draw::new(seed), &p, "x y");
            assert_eq!(a, b);
            let c = generate(kind, &mut Draw::new([8u8; 32]), &p, "x y");
            assert_ne!(a, c, "{kind:?}");
        }
    }
}
