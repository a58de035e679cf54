//! Submitted values: every validator and mask on arbitrary text, never a panic. (Errors
//! are `ValueError(&'static str)`: by their type they cannot quote the value.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenvault::config::Validator;
use tokenvault::tokenize::values::{mask, validate};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    for v in [Validator::Pan, Validator::Ssn, Validator::Email, Validator::None] {
        if let Ok(value) = validate(v, s, 4096) {
            let masked = mask(v, &value);
            assert!(masked.len() <= value.as_str().len() + 8);
        }
    }
});
