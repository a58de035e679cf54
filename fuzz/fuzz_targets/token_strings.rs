//! Token and ciphertext strings from clients: never a panic; a ciphertext that parses
//! prints back to a string that parses to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenvault::crypto::Ciphertext;
use tokenvault::tokenize::format::plausible_token;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = plausible_token(s);
    if let Ok(c) = s.parse::<Ciphertext>() {
        let again: Ciphertext = c.to_string().parse().expect("a printed ciphertext parses");
        assert_eq!(again, c);
    }
});
