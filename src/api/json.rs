//! Request bodies: size-limited, depth-limited JSON whose errors never quote the input.

use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};
use zeroize::Zeroizing;

use super::AppState;
use crate::error::Error;

/// JSON body extractor enforcing `limits.max_body_bytes` and `limits.max_json_depth`.
pub struct ApiJson<T>(pub T);

/// Whether brackets nest deeper than `max` (strings are skipped).
pub fn too_deep(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Parses JSON into `T`, describing a failure by position and kind only: serde's own
/// messages can quote the offending value.
pub fn parse<T: DeserializeOwned>(bytes: &[u8], max_depth: usize) -> Result<T, Error> {
    if too_deep(bytes, max_depth) {
        return Err(Error::InvalidRequest(format!(
            "JSON nests deeper than {max_depth} levels"
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        let what = match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => "the body is not valid JSON",
            Category::Data => {
                "the JSON does not match this endpoint's request shape (see /openapi.json)"
            }
        };
        Error::InvalidRequest(format!("{what} (line {}, column {})", e.line(), e.column()))
    })
}

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Error> {
        let limits = &state.vault.settings.limits;
        let bytes = read_body(req.into_body(), limits.max_body_bytes).await?;
        parse(&bytes, limits.max_json_depth).map(ApiJson)
    }
}

/// How much of an oversized body is read and thrown away so the client gets its 413.
const DRAIN_MAX_BYTES: usize = 16 << 20;

/// Reads the body up to `limit` bytes. Past the limit it keeps reading, and discarding,
/// up to [`DRAIN_MAX_BYTES`] before it answers 413: a client that sends the whole body
/// before reading (Python's http.client, Java's HttpURLConnection), and an HTTP/2 client
/// whose stream would otherwise be reset (curl: "stream error in the HTTP/2 framing
/// layer"), then read a 413 with its JSON body instead of a dropped connection.
pub(crate) async fn read_body(body: axum::body::Body, limit: usize) -> Result<Vec<u8>, Error> {
    use futures_util::StreamExt;
    let too_large = || Error::PayloadTooLarge(format!("the request body exceeds {limit} bytes"));
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|_| Error::InvalidRequest("the request body could not be read".into()))?;
        seen = seen.saturating_add(chunk.len());
        if seen <= limit {
            buf.extend_from_slice(&chunk);
        } else if seen > limit.saturating_add(DRAIN_MAX_BYTES) {
            return Err(too_large());
        } else {
            buf = Vec::new();
        }
    }
    if seen > limit {
        return Err(too_large());
    }
    Ok(buf)
}

/// A submitted secret string: cleared on drop, never printed.
#[derive(Deserialize)]
#[serde(transparent)]
pub struct SecretField(pub(crate) Zeroizing<String>);

impl std::fmt::Debug for SecretField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// A value the vault hands back in clear (detokenize, decrypt): cleared on drop, never
/// printed. It serializes, because a response body is where it is meant to go; it is used
/// for nothing else.
pub struct Revealed(Zeroizing<String>);

impl From<&str> for Revealed {
    fn from(s: &str) -> Self {
        Self(Zeroizing::new(s.to_owned()))
    }
}

impl From<String> for Revealed {
    fn from(s: String) -> Self {
        Self(Zeroizing::new(s))
    }
}

impl Serialize for Revealed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl std::fmt::Debug for Revealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_brackets_outside_strings() {
        assert!(!too_deep(br#"{"a":[1,{"b":"[[[[[[["}]}"#, 3));
        assert!(too_deep(br#"[[[[1]]]]"#, 3));
        assert!(!too_deep(br#"{"a":"\"[[[[["}"#, 1));
    }

    #[test]
    fn a_body_that_looks_like_our_own_message_gets_the_fixed_template() {
        // Found by fuzzing (fuzz/fuzz_targets/api_json.rs): the message is the template.
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct R {
            n: u64,
        }
        let err = parse::<R>(b"ody is not valid JSON (line 1, column ", 8).unwrap_err();
        assert_eq!(
            err.public_message(),
            "the body is not valid JSON (line 1, column 1)"
        );
    }

    #[test]
    fn parse_errors_never_quote_the_input() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct R {
            n: u64,
        }
        let err = parse::<R>(br#"{"n":"4111111111111111"}"#, 8).unwrap_err();
        assert!(
            !err.public_message().contains("4111"),
            "{}",
            err.public_message()
        );
        let err = parse::<R>(b"4111111111111111 x", 8).unwrap_err();
        assert!(
            !err.public_message().contains("4111"),
            "{}",
            err.public_message()
        );
    }
}
