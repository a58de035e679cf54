//! Test set-up shared by the suites, one module per concern. The suites run against the
//! real SoftHSM2 token that `scripts/test` creates, a fresh database per test (SQLite, or
//! PostgreSQL in the second pass) and unique key labels per test.

mod app;
mod config;
mod hsm;
mod leak;
mod officers;
mod pki;
mod postgres;
mod process;
mod receiver;
mod vault;

pub use app::*;
pub use config::*;
pub use hsm::*;
pub use leak::*;
pub use officers::*;
pub use pki::*;
pub use postgres::*;
pub use process::*;
pub use receiver::*;
pub use vault::*;

/// A random Luhn-valid 16-digit card number (not one of the canaries).
pub fn random_pan() -> String {
    let mut b = [0u8; 15];
    tokenvault::crypto::random_bytes(&mut b);
    let mut digits: Vec<u8> = std::iter::once(b'4')
        .chain(b[1..].iter().map(|x| b'0' + x % 10))
        .collect();
    for check in b'0'..=b'9' {
        digits.push(check);
        if tokenvault::tokenize::format::luhn_valid(&digits) {
            break;
        }
        digits.pop();
    }
    String::from_utf8(digits).unwrap()
}
