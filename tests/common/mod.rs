//! Test set-up shared by the integration suites: the real SoftHSM2 token that
//! `scripts/test` creates, a fresh SQLite file per test, unique key labels per test.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use secrecy::SecretString;
use tokenvault::config::Settings;

/// The token, module and PIN file of the test HSM, from the environment scripts/test sets.
pub struct TestHsm {
    pub module: PathBuf,
    pub token: String,
    pub pin_file: PathBuf,
}

pub fn test_hsm() -> TestHsm {
    assert!(
        std::env::var_os("SOFTHSM2_CONF").is_some(),
        "SOFTHSM2_CONF is not set: run the tests through scripts/test, which creates the test token"
    );
    let token =
        std::env::var("TOKENVAULT_TEST_HSM_TOKEN").unwrap_or_else(|_| "tokenvault-test".into());
    let pin_file = std::env::var("TOKENVAULT_TEST_HSM_PIN_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/test/hsm-user-pin")
        });
    TestHsm {
        module: "/usr/lib/softhsm/libsofthsm2.so".into(),
        token,
        pin_file,
    }
}

/// A label prefix no other test (or earlier run) uses.
pub fn unique_prefix(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let mut r = [0u8; 4];
    tokenvault::crypto::random_bytes(&mut r);
    format!(
        "t-{tag}-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        hex::encode(r)
    )
}

/// Settings for one test: the test token, a fresh SQLite file in `dir`, unique labels.
pub fn settings(dir: &std::path::Path, tag: &str) -> Settings {
    let hsm = test_hsm();
    let mut s = Settings::load(None).expect("default settings load");
    s.hsm.module = hsm.module;
    s.hsm.token_label = hsm.token;
    s.hsm.pin = None;
    s.hsm.pin_file = Some(hsm.pin_file);
    s.hsm.label_prefix = unique_prefix(tag);
    s.database.url = SecretString::from(format!("sqlite://{}", dir.join("vault.db").display()));
    s
}

/// The PIN of the test token, for tests that talk PKCS#11 themselves.
pub fn test_pin() -> String {
    std::fs::read_to_string(test_hsm().pin_file)
        .expect("test PIN file")
        .trim()
        .to_owned()
}

/// Raw PKCS#11 access for independent checks: the same module, already initialized
/// and logged in by the vault in this process.
pub fn raw_session() -> (cryptoki::context::Pkcs11, cryptoki::session::Session) {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    let hsm = test_hsm();
    let p = Pkcs11::new(&hsm.module).expect("load module");
    let _ = p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = p
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| p.get_token_info(*s).unwrap().label().trim_end() == hsm.token)
        .expect("test token present");
    let session = p.open_rw_session(slot).unwrap();
    let pin = SecretString::from(test_pin());
    match session.login(cryptoki::session::UserType::User, Some(&pin)) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(e) => panic!("login: {e}"),
    }
    (p, session)
}

/// Every occurrence of `needle` in the files of `dir` (the database and its WAL).
pub fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(path);
            }
        }
    }
    hits
}
