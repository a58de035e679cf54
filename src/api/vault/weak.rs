//! Vault's weak typing: clients send `"1"` for 1, `"true"` for true, `"1h"` for 3600
//! seconds, and explicit `null`s. These read such a field into a plain Rust type; a
//! value they cannot read is a request error that never quotes the value.

use serde::Deserialize;
use serde::de::{Deserializer, Error as _};
use serde_json::Value;

fn number(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// An optional integer: a number or a string of digits; `null` or absent is `None`.
pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => number(&v)
            .map(Some)
            .ok_or_else(|| D::Error::custom("expected an integer")),
    }
}

/// An optional boolean: `true`, `"true"`, `"1"`, `1` (and their opposites).
pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    Ok(match v {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(b),
        Some(Value::Number(n)) => Some(n.as_i64().is_some_and(|n| n != 0)),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "t" | "yes" => Some(true),
            "false" | "0" | "f" | "no" | "" => Some(false),
            _ => return Err(D::Error::custom("expected a boolean")),
        },
        Some(_) => return Err(D::Error::custom("expected a boolean")),
    })
}

/// An optional duration in seconds: a number, a string of digits, or a Go-style
/// duration (`"90s"`, `"15m"`, `"1h30m"`, `"2d"` is not Go but Vault accepts it).
pub fn opt_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(v) => number(&v)
            .or_else(|| v.as_str().and_then(duration))
            .map(Some)
            .ok_or_else(|| D::Error::custom("expected a duration")),
    }
}

/// `1h30m10s` → 5410; `None` for anything else.
fn duration(s: &str) -> Option<i64> {
    let (mut total, mut digits) = (0i64, String::new());
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        let n: i64 = digits.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        digits.clear();
    }
    digits.is_empty().then_some(total)
}

/// An optional string; a number is taken as its decimal text (weakly typed clients).
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(D::Error::custom("expected a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Fields {
        #[serde(deserialize_with = "opt_i64")]
        n: Option<i64>,
        #[serde(deserialize_with = "opt_bool")]
        b: Option<bool>,
        #[serde(deserialize_with = "opt_seconds")]
        d: Option<i64>,
        #[serde(deserialize_with = "opt_string")]
        s: Option<String>,
    }

    fn read(json: &str) -> Result<Fields, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn weakly_typed_fields_read_as_vault_reads_them() {
        let f = read(r#"{"n":"3","b":"true","d":"1h30m","s":7,"unknown":[1]}"#).unwrap();
        assert_eq!(
            (f.n, f.b, f.d, f.s.as_deref()),
            (Some(3), Some(true), Some(5400), Some("7"))
        );
        let f = read(r#"{"n":null,"b":null,"d":null,"s":null}"#).unwrap();
        assert_eq!((f.n, f.b, f.d, f.s), (None, None, None, None));
        let f = read(r#"{"n":4,"b":0,"d":"900"}"#).unwrap();
        assert_eq!((f.n, f.b, f.d), (Some(4), Some(false), Some(900)));
        let f = read("{}").unwrap();
        assert_eq!((f.n, f.b, f.d), (None, None, None));
    }

    #[test]
    fn unreadable_fields_are_refused() {
        assert!(read(r#"{"n":"three"}"#).is_err());
        assert!(read(r#"{"b":"maybe"}"#).is_err());
        assert!(read(r#"{"d":"1y"}"#).is_err());
        assert!(read(r#"{"d":"15"}"#).is_ok());
        assert!(read(r#"{"s":{"a":1}}"#).is_err());
    }
}
