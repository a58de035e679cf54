//! Config files: arbitrary TOML is refused with an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenvault::config::Settings;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = Settings::from_toml(s);
    }
});
