//! Records of a Vault Transform export for `tokenvault import --vault-transform-export`:
//! one JSON object per line, as Vault's `transform/transformations/tokenization/
//! export-decoded/:name` lists them under `values` (`jq -c '.data.values[]'` over the
//! saved pages gives this file): `token`, `plaintext` (standard base64) and, for a token
//! that expires, `expiration_time` (RFC 3339). The token is kept; the value is tokenized
//! under it through the one tokenize path.

use base64::Engine;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

/// One exported token: the token, its value, and the seconds it has left.
pub struct Exported {
    pub token: String,
    pub value: Result<Zeroizing<String>, &'static str>,
    pub ttl_seconds: Option<u64>,
}

/// Reads one export record (`now` in Unix milliseconds). A record without a token is
/// `None`; one whose value is unusable keeps its token so the output can name it.
pub fn record(obj: &mut Map<String, Value>, now: i64) -> Option<Exported> {
    let token = match obj.get("token") {
        Some(Value::String(t)) => t.clone(),
        _ => return None,
    };
    let value = match obj.remove("plaintext") {
        Some(Value::String(b64)) => {
            let b64 = Zeroizing::new(b64);
            match base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
                Ok(bytes) => {
                    let bytes = Zeroizing::new(bytes);
                    match std::str::from_utf8(&bytes) {
                        Ok(v) => Ok(Zeroizing::new(v.to_owned())),
                        Err(_) => Err("the plaintext is not UTF-8"),
                    }
                }
                Err(_) => Err("the plaintext is not standard base64"),
            }
        }
        _ => Err("the record has no plaintext"),
    };
    let (value, ttl_seconds) = match expiry(obj.get("expiration_time"), now) {
        Ok(ttl) => (value, ttl),
        Err(why) => (Err(why), None),
    };
    Some(Exported {
        token,
        value,
        ttl_seconds,
    })
}

/// The seconds left before `expiration_time` (none for a token that does not expire);
/// a token that has expired is not imported.
fn expiry(field: Option<&Value>, now: i64) -> Result<Option<u64>, &'static str> {
    let text = match field {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.is_empty() || s.starts_with("0001-01-01") => return Ok(None),
        Some(Value::String(s)) => s,
        Some(_) => return Err("expiration_time is not RFC 3339 text"),
    };
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| "expiration_time is not RFC 3339 text")?;
    let ms = i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
    let left = ms.saturating_sub(now);
    if left <= 0 {
        return Err("the token expired in Vault");
    }
    Ok(Some(u64::try_from((left + 999) / 1000).unwrap_or(u64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: serde_json::Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn export_records_keep_their_token_value_and_expiry() {
        let now = 1_700_000_000_000;
        let r = record(
            &mut obj(serde_json::json!({"token": "Q4tYgFXHxUYfSrVv2Nq6Kdb2", "plaintext": "NDExMTExMTExMTExMTExMQ=="})),
            now,
        )
        .unwrap();
        assert_eq!(r.token, "Q4tYgFXHxUYfSrVv2Nq6Kdb2");
        assert_eq!(r.value.unwrap().as_str(), "4111111111111111");
        assert_eq!(r.ttl_seconds, None);
        let r = record(
            &mut obj(serde_json::json!({"token": "t", "plaintext": "YQ==", "expiration_time": "2023-11-14T22:13:30Z"})),
            now,
        )
        .unwrap();
        assert_eq!(r.ttl_seconds, Some(10));
        let expired = record(
            &mut obj(serde_json::json!({"token": "t", "plaintext": "YQ==", "expiration_time": "2020-01-01T00:00:00Z"})),
            now,
        )
        .unwrap();
        assert!(expired.value.is_err());
        for bad in [
            serde_json::json!({"token": "t", "plaintext": "not base64!"}),
            serde_json::json!({"token": "t"}),
            serde_json::json!({"token": "t", "plaintext": "YQ==", "expiration_time": 7}),
        ] {
            assert!(
                record(&mut obj(bad.clone()), now).unwrap().value.is_err(),
                "{bad}"
            );
        }
        assert!(record(&mut obj(serde_json::json!({"plaintext": "YQ=="})), now).is_none());
    }
}
