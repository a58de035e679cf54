//! Non-production vaults (issue 18): a staging or development vault that never holds a
//! real value. `environment = "nonproduction"` is recorded in the database the first
//! time a vault opens it, and a vault whose config and database disagree does not open,
//! so a staging config pointed at a production database (or the reverse) stops at once.
//!
//! In a non-production vault, tokenize refuses every value that could be real, where the
//! value's type lets that be decided (422 `real_value_refused`, the value never echoed):
//! - card numbers outside the configured test prefixes (default: the card networks'
//!   published test numbers' prefixes);
//! - SSNs outside the ranges the SSA never issues (area 000, 666 or 900–999, group 00,
//!   serial 0000), which a production vault refuses for the opposite reason;
//! - e-mail addresses outside reserved domains (`example.com/.net/.org` and the `.test`,
//!   `.example`, `.invalid` and `.localhost` top-level domains, RFC 2606 and 6761).
//!
//! Free text cannot be judged and is accepted. Production and non-production vaults are
//! meant to trust different client CAs (`server.client_ca`): a staging service's
//! certificate is then refused by production, and the reverse.

pub mod mask;
pub mod synth;
mod words;

use serde::Deserialize;

pub use synth::Kind;

use crate::tokenize::{Validator, Value, ValueError, values};

/// `environment` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Production,
    Nonproduction,
}

impl Environment {
    pub const fn as_str(self) -> &'static str {
        match self {
            Environment::Production => "production",
            Environment::Nonproduction => "nonproduction",
        }
    }
}

/// `[nonproduction]`: what a non-production vault accepts as test data.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestData {
    /// Card number prefixes accepted as test cards.
    pub test_card_prefixes: Vec<String>,
    /// E-mail domains accepted as test addresses, besides the reserved top-level domains.
    pub email_domains: Vec<String>,
}

impl Default for TestData {
    fn default() -> Self {
        Self {
            // The prefixes of the networks' published test card numbers (Visa 4111 1111…,
            // 4242 4242…, 4012 8888…; Mastercard 5555 5555…, 5105 1051…, 2223 0031…;
            // American Express 3782 8224…, 3714 4963…; Discover 6011 1111…, 6011 0009…;
            // Diners 3056 9309…; JCB 3530 1113…). Where a published number sits in a range
            // issuers use (Visa 4000 00…, UnionPay 6200 00…), its prefix runs to 12 digits,
            // so a number made under it is that test number's neighbour, not any card of
            // the range.
            test_card_prefixes: [
                "41111111",
                "42424242",
                "40128888",
                "42222222",
                "55555555",
                "51051051",
                "52008282",
                "54252334",
                "22230031",
                "22230000",
                "37828224",
                "37144963",
                "60111111",
                "60110009",
                "60119811",
                "30569309",
                "30569300",
                "36227206",
                "35301113",
                "35660020",
                "400000000000",
                "400005665566",
                "400000250000",
                "620000000000",
            ]
            .map(String::from)
            .to_vec(),
            email_domains: ["example.com", "example.net", "example.org"]
                .map(String::from)
                .to_vec(),
        }
    }
}

impl Kind {
    /// Whether a type checked by `validator` may answer synthetic values of this kind
    /// (a synthetic value must pass the type's own checks).
    pub fn fits(self, validator: Validator) -> bool {
        matches!(
            (self, validator),
            (Kind::Pan, Validator::Pan)
                | (Kind::Ssn, Validator::Ssn)
                | (Kind::Email, Validator::Email)
                | (Kind::Name | Kind::Address, Validator::None)
        )
    }
}

/// Checks the types' `synthetic` settings: only a non-production vault answers synthetic
/// values, and only of a kind that passes the type's own checks.
pub fn check_synthetic(
    environment: Environment,
    types: &std::collections::BTreeMap<String, crate::tokenize::TypeSettings>,
) -> Result<(), String> {
    for (name, t) in types {
        let Some(kind) = t.synthetic else { continue };
        if environment == Environment::Production {
            return Err(format!(
                "type `{name}`: synthetic values are for non-production vaults only (environment \
                 = \"nonproduction\"); a production vault answers an unknown token with not_found"
            ));
        }
        if !kind.fits(t.validator) {
            return Err(format!(
                "type `{name}`: synthetic = \"{}\" does not fit its validator (pan, ssn and email \
                 need their own validator; name and address need validator \"none\")",
                kind.as_str()
            ));
        }
    }
    Ok(())
}

/// Top-level domains reserved for tests and documentation (RFC 2606, RFC 6761).
const RESERVED_TLDS: [&str; 4] = ["test", "example", "invalid", "localhost"];

/// Why a value was refused as possibly real (never the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealValue(pub &'static str);

impl TestData {
    /// Checks the config: prefixes of 8 to 15 digits (room for a check digit in a 16-digit
    /// synthetic number), domains that look like domains.
    pub fn validate(&self) -> Result<(), String> {
        for p in &self.test_card_prefixes {
            // Eight digits at least: a shorter prefix ("4") would admit real cards.
            if p.len() < 8 || p.len() > 15 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err("nonproduction.test_card_prefixes: 8 to 15 digits each".into());
            }
        }
        for d in &self.email_domains {
            if d.is_empty() || d.contains('@') || d.contains(char::is_whitespace) {
                return Err("nonproduction.email_domains: domain names (no @)".into());
            }
        }
        Ok(())
    }

    /// Validates a value of a non-production vault: the type's own checks, then that it
    /// is test data. SSNs are the exception: only never-issued numbers are accepted.
    pub fn validate_value(
        &self,
        validator: Validator,
        raw: &str,
        max_bytes: usize,
    ) -> Result<Value, TestDataError> {
        if validator == Validator::Ssn {
            let v = values::ssn_digits(raw, max_bytes)?;
            return if never_issued_ssn(v.as_str()) {
                Ok(v)
            } else {
                Err(RealValue(
                    "a non-production vault accepts only SSNs that are never issued (area 000, \
                     666 or 900–999, group 00 or serial 0000)",
                )
                .into())
            };
        }
        let v = values::validate(validator, raw, max_bytes)?;
        match validator {
            Validator::Pan if !self.is_test_card(v.as_str()) => Err(RealValue(
                "a non-production vault accepts only test card numbers (see \
                 nonproduction.test_card_prefixes)",
            )
            .into()),
            Validator::Email if !self.is_test_email(v.as_str()) => Err(RealValue(
                "a non-production vault accepts only addresses in reserved test domains \
                 (example.com, .test, …)",
            )
            .into()),
            // Free text and addresses cannot be judged whole, but a card number inside
            // them can be found.
            Validator::Email | Validator::None if crate::cardscan::contains_pan(v.as_str()) => Err(
                RealValue("a non-production vault refuses text that holds a card number").into(),
            ),
            _ => Ok(v),
        }
    }

    /// Plaintext to encrypt, whose type the vault cannot know: refused when it holds a
    /// card number outside the test prefixes (read as text; other bytes cannot be judged).
    pub fn check_plaintext(&self, plaintext: &[u8]) -> Result<(), RealValue> {
        let text = zeroize::Zeroizing::new(String::from_utf8_lossy(plaintext).into_owned());
        // A card number: 13–19 digits starting as the networks' do (2–6); a timestamp or
        // an identifier that happens to pass Luhn is not one.
        let live = |d: &[u8]| {
            d.len() >= 13
                && (b'2'..=b'6').contains(&d[0])
                && !self
                    .test_card_prefixes
                    .iter()
                    .any(|p| d.starts_with(p.as_bytes()))
        };
        if crate::cardscan::any_pan(&text, live) {
            return Err(RealValue(
                "a non-production vault refuses to encrypt text that holds a card number \
                 outside its test prefixes (see nonproduction.test_card_prefixes)",
            ));
        }
        Ok(())
    }

    pub(crate) fn is_test_card(&self, digits: &str) -> bool {
        self.test_card_prefixes
            .iter()
            .any(|p| digits.starts_with(p.as_str()))
    }

    pub(crate) fn is_test_email(&self, address: &str) -> bool {
        let Some((_, domain)) = address.rsplit_once('@') else {
            return false;
        };
        let domain = domain.to_ascii_lowercase();
        let tld = domain.rsplit('.').next().unwrap_or("");
        RESERVED_TLDS.contains(&tld)
            || self.email_domains.iter().any(|d| {
                let d = d.to_ascii_lowercase();
                domain == d || domain.ends_with(&format!(".{d}"))
            })
    }
}

/// The SSA never issues area 000, 666 or 900–999, group 00 or serial 0000; but the IRS
/// issues area 9xx as taxpayer numbers (ITIN groups 50–65, 70–88, 90–92, 94–99; ATIN
/// group 93), which are real too.
fn never_issued_ssn(d: &str) -> bool {
    let (area, group, serial) = (&d[0..3], &d[3..5], &d[5..9]);
    let irs = |g: u32| matches!(g, 50..=65 | 70..=88 | 90..=99);
    let nine_hundreds = area.starts_with('9') && !group.parse().is_ok_and(irs);
    area == "000" || area == "666" || nine_hundreds || group == "00" || serial == "0000"
}

/// A value refused by a non-production vault: not valid for its type, or possibly real.
#[derive(Debug)]
pub enum TestDataError {
    Invalid(ValueError),
    Real(RealValue),
}

impl From<ValueError> for TestDataError {
    fn from(e: ValueError) -> Self {
        TestDataError::Invalid(e)
    }
}

impl From<RealValue> for TestDataError {
    fn from(e: RealValue) -> Self {
        TestDataError::Real(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(v: Validator, raw: &str) -> Result<String, TestDataError> {
        TestData::default()
            .validate_value(v, raw, 4096)
            .map(|v| v.as_str().to_owned())
    }

    fn real(r: Result<String, TestDataError>) -> bool {
        matches!(r, Err(TestDataError::Real(_)))
    }

    #[test]
    fn only_test_data_is_accepted_where_it_can_be_decided() {
        assert_eq!(
            check(Validator::Pan, "4111 1111 1111 1111").unwrap(),
            "4111111111111111"
        );
        assert!(check(Validator::Pan, "378282246310005").is_ok());
        assert!(
            real(check(Validator::Pan, "4000123412341234")),
            "a real-looking Visa"
        );
        assert!(real(check(Validator::Pan, "5454545454545454")));
        assert!(matches!(
            check(Validator::Pan, "4111111111111112"),
            Err(TestDataError::Invalid(_))
        ));
        for ok in [
            "987-45-4321",
            "666-12-3456",
            "000-12-3456",
            "123-00-4567",
            "123-45-0000",
        ] {
            assert!(check(Validator::Ssn, ok).is_ok(), "{ok}");
        }
        assert!(real(check(Validator::Ssn, "123-45-6789")));
        assert!(
            real(check(Validator::Ssn, "912-70-1234")),
            "an ITIN is real"
        );
        assert!(
            real(check(Validator::Ssn, "912-93-1234")),
            "an ATIN is real"
        );
        assert!(matches!(
            check(Validator::Ssn, "12345"),
            Err(TestDataError::Invalid(_))
        ));
        for ok in [
            "jane@example.com",
            "a@mail.example.org",
            "b@shop.test",
            "c@x.invalid",
        ] {
            assert!(check(Validator::Email, ok).is_ok(), "{ok}");
        }
        for bad in [
            "jane@gmail.com",
            "jane@example.com.evil.io",
            "x@notexample.com",
        ] {
            assert!(real(check(Validator::Email, bad)), "{bad}");
        }
        assert!(check(Validator::None, "anything").is_ok());
        assert!(real(check(Validator::None, "card 4000 1234 1234 1234")));
        assert!(real(check(
            Validator::Email,
            "4000123412341234@example.com"
        )));
        assert!(TestData::default().validate().is_ok());
        let loose = TestData {
            test_card_prefixes: vec!["4".into()],
            ..TestData::default()
        };
        assert!(
            loose.validate().is_err(),
            "a one-digit prefix admits every Visa"
        );
    }
}
