//! Request bodies as the API parses them (size, depth, shape): never a panic, and an
//! error message is always one of the fixed templates (plus line and column), so it can
//! never quote the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenvault::api::crypto::{DecryptRequest, EncryptRequest};
use tokenvault::api::json::parse;
use tokenvault::api::tokens::{DetokenizeBatchRequest, DetokenizeRequest, TokenizeBatchRequest, TokenizeRequest};

const TEMPLATES: [&str; 3] = [
    "the body is not valid JSON",
    "the JSON does not match this endpoint's request shape (see /openapi.json)",
    "JSON nests deeper than 32 levels",
];

fn check<T: serde::de::DeserializeOwned>(data: &[u8]) {
    if let Err(e) = parse::<T>(data, 32) {
        let message = e.public_message();
        let head = match message.rsplit_once(" (line ") {
            Some((head, tail)) => {
                let ok = tail.strip_suffix(')').and_then(|t| t.split_once(", column ")).is_some_and(|(l, c)| {
                    l.bytes().all(|b| b.is_ascii_digit()) && c.bytes().all(|b| b.is_ascii_digit())
                });
                assert!(ok, "unexpected position text: {message}");
                head
            }
            None => message.as_ref(),
        };
        assert!(TEMPLATES.contains(&head), "not a fixed template: {message}");
    }
}

fuzz_target!(|data: &[u8]| {
    check::<TokenizeRequest>(data);
    check::<TokenizeBatchRequest>(data);
    check::<DetokenizeRequest>(data);
    check::<DetokenizeBatchRequest>(data);
    check::<EncryptRequest>(data);
    check::<DecryptRequest>(data);
});
