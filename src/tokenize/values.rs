//! Validation, normalization and masking of submitted values. Error messages describe
//! what is wrong and never quote the value.

use std::fmt;

use zeroize::Zeroizing;

use super::format::luhn_valid;

/// How a type's values are checked before they are tokenized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validator {
    Pan,
    Ssn,
    Email,
    None,
}

/// A validated, normalized value. Cleared on drop, never printed.
pub struct Value(Zeroizing<String>);

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Value([REDACTED])")
    }
}

impl Value {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn from_stored(bytes: Zeroizing<Vec<u8>>) -> Option<Self> {
        std::str::from_utf8(&bytes)
            .ok()
            .map(|s| Value(Zeroizing::new(s.to_owned())))
    }
}

/// Why a value was refused; the message is safe to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub &'static str);

/// Parses `raw` with `validator`; `max_bytes` bounds every type.
pub fn validate(validator: Validator, raw: &str, max_bytes: usize) -> Result<Value, ValueError> {
    if raw.len() > max_bytes {
        return Err(ValueError(
            "the value is longer than the configured maximum",
        ));
    }
    match validator {
        Validator::Pan => pan(raw),
        Validator::Ssn => ssn(raw),
        Validator::Email => email(raw),
        Validator::None => {
            if raw.is_empty() {
                Err(ValueError("the value is empty"))
            } else {
                Ok(Value(Zeroizing::new(raw.to_owned())))
            }
        }
    }
}

/// Digits after removing spaces and dashes; anything else is refused.
fn digits(raw: &str) -> Result<Zeroizing<String>, ValueError> {
    let mut out = Zeroizing::new(String::with_capacity(raw.len()));
    for c in raw.chars() {
        match c {
            '0'..='9' => out.push(c),
            ' ' | '-' => {}
            _ => {
                return Err(ValueError(
                    "the value may contain only ASCII digits, spaces and dashes",
                ));
            }
        }
    }
    Ok(out)
}

/// A social security number's nine digits, without the checks that refuse the ranges
/// never issued (a non-production vault accepts only those: `crate::nonprod`).
pub fn ssn_digits(raw: &str, max_bytes: usize) -> Result<Value, ValueError> {
    if raw.len() > max_bytes {
        return Err(ValueError(
            "the value is longer than the configured maximum",
        ));
    }
    let d = digits(raw)?;
    if d.len() != 9 {
        return Err(ValueError("a social security number has 9 digits"));
    }
    Ok(Value(d))
}

fn pan(raw: &str) -> Result<Value, ValueError> {
    let d = digits(raw)?;
    if !(12..=19).contains(&d.len()) {
        return Err(ValueError("a card number has 12 to 19 digits"));
    }
    if !luhn_valid(d.as_bytes()) {
        return Err(ValueError("not a valid card number: the Luhn check fails"));
    }
    Ok(Value(d))
}

fn ssn(raw: &str) -> Result<Value, ValueError> {
    let d = digits(raw)?;
    let b = d.as_bytes();
    if b.len() != 9 {
        return Err(ValueError("a social security number has 9 digits"));
    }
    let (area, group, serial) = (&d[0..3], &d[3..5], &d[5..9]);
    if area == "000" || area == "666" || b[0] == b'9' || group == "00" || serial == "0000" {
        return Err(ValueError("not a valid social security number"));
    }
    Ok(Value(d))
}

fn email(raw: &str) -> Result<Value, ValueError> {
    const BAD: ValueError = ValueError("not a valid email address");
    if raw.len() > 254 || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(BAD);
    }
    let (local, domain) = raw.rsplit_once('@').ok_or(BAD)?;
    let domain_ok = domain.len() >= 3
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_alphanumeric() || c == '-'));
    if local.is_empty() || local.len() > 64 || local.contains('@') || !domain_ok {
        return Err(BAD);
    }
    // Domains are case-insensitive: one address, one fingerprint.
    Ok(Value(Zeroizing::new(format!(
        "{local}@{}",
        domain.to_lowercase()
    ))))
}

/// The masked form shown instead of the value.
pub fn mask(validator: Validator, value: &Value) -> String {
    let v = value.as_str();
    match validator {
        Validator::Pan => format!("{}{}", "*".repeat(v.len() - 4), &v[v.len() - 4..]),
        Validator::Ssn => format!("***-**-{}", &v[5..]),
        Validator::Email => match v.split_once('@') {
            Some((local, domain)) => {
                let first: String = local.chars().take(1).collect();
                format!("{first}***@{domain}")
            }
            None => "****".into(),
        },
        Validator::None => "****".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(v: Validator, raw: &str) -> String {
        validate(v, raw, 4096).unwrap().as_str().to_owned()
    }

    #[test]
    fn card_numbers_are_normalized_and_checked() {
        assert_eq!(
            ok(Validator::Pan, "4111 1111-1111 1111"),
            "4111111111111111"
        );
        assert_eq!(ok(Validator::Pan, "378282246310005"), "378282246310005");
        for bad in [
            "4111111111111112",
            "41111111111",
            "41111111111111111111",
            "4111a11111111111",
            "",
            "٤١١١١١١١١١١١١١١١",
        ] {
            let err = validate(Validator::Pan, bad, 4096).unwrap_err();
            assert!(!err.0.contains(bad) || bad.is_empty(), "{err}");
        }
        assert!(validate(Validator::Pan, &"4".repeat(5000), 4096).is_err());
    }

    #[test]
    fn ssns_emails_and_free_text_are_validated() {
        assert_eq!(ok(Validator::Ssn, "123-45-6789"), "123456789");
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "912-12-3456",
            "123-00-4567",
            "123-45-0000",
            "12345678",
        ] {
            assert!(validate(Validator::Ssn, bad, 4096).is_err(), "{bad}");
        }
        assert_eq!(
            ok(Validator::Email, "Jane.Doe@Example.COM"),
            "Jane.Doe@example.com"
        );
        for bad in [
            "jane",
            "@example.com",
            "jane@",
            "jane@example",
            "ja ne@example.com",
            "jane@.com",
        ] {
            assert!(validate(Validator::Email, bad, 4096).is_err(), "{bad}");
        }
        assert_eq!(ok(Validator::None, "anything"), "anything");
        assert!(validate(Validator::None, "", 4096).is_err());
    }

    #[test]
    fn masks_show_at_most_the_last_four() {
        let m = |v, raw| mask(v, &validate(v, raw, 4096).unwrap());
        assert_eq!(m(Validator::Pan, "4111111111111111"), "************1111");
        assert_eq!(m(Validator::Ssn, "123-45-6789"), "***-**-6789");
        assert_eq!(m(Validator::Email, "jane@example.com"), "j***@example.com");
        assert_eq!(m(Validator::None, "secret"), "****");
        assert_eq!(
            format!(
                "{:?}",
                validate(Validator::Pan, "4111111111111111", 64).unwrap()
            ),
            "Value([REDACTED])"
        );
    }
}
