//! Settings for one test: the test token, a fresh database, unique labels, a directory
//! the leak scan reads; and the TOML file through which processes get the same settings.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use secrecy::SecretString;
use tokenvault::config::Settings;

use super::{fresh_postgres_database, hsm_lock_file, postgres, test_hsm, tls_files};

/// A label prefix no other test (or earlier run) uses. Letters lead each number, so no
/// dash joins pid, counter and hex into a run of digits that reads as a card number in
/// the audit trail (where the KEK's label is stored) and fails the leak scan.
pub fn unique_prefix(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let mut r = [0u8; 4];
    tokenvault::crypto::random_bytes(&mut r);
    format!(
        "t-{tag}-p{}-n{}-x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        hex::encode(r)
    )
}

/// Settings for one test: the test token, a fresh database (a SQLite file in `dir`, or a
/// new PostgreSQL database), unique labels.
pub fn settings(dir: &std::path::Path, tag: &str) -> Settings {
    let hsm = test_hsm();
    let mut s = Settings::load(None).expect("default settings load");
    s.hsm.module = hsm.module;
    s.hsm.token_label = hsm.token;
    s.hsm.pin = None;
    s.hsm.pin_file = Some(hsm.pin_file);
    s.hsm.label_prefix = unique_prefix(tag);
    s.database.url = SecretString::from(match postgres() {
        Some(admin) => fresh_postgres_database(&admin, &s.hsm.label_prefix),
        None => format!("sqlite://{}", dir.join("vault.db").display()),
    });
    s.hsm.lock_file = hsm_lock_file();
    // The suite runs many vaults on one SoftHSM2 token, whose every object change rewrites
    // a growing file under one cross-process lock: on a loaded two-core machine a call
    // can wait seconds for its turn. In-process vaults get a generous deadline, so a busy
    // machine is not mistaken for an HSM outage; the fault tests run `serve` processes
    // with the production default and inject their own slowness.
    s.hsm.call_timeout_ms = 30_000;
    // The suites read `/metrics` as every client (the permission matrix covers both ways).
    s.server.public_metrics = true;
    s
}

/// A directory for one test's files. Kept (not deleted) under TOKENVAULT_TEST_DATA_DIR,
/// which scripts/test sets, so the leak scan can read every database the suite wrote.
pub fn test_dir(tag: &str) -> PathBuf {
    match std::env::var_os("TOKENVAULT_TEST_DATA_DIR") {
        Some(base) => {
            std::fs::create_dir_all(&base).unwrap();
            tempfile::Builder::new()
                .prefix(&format!("{tag}-"))
                .tempdir_in(base)
                .unwrap()
                .keep()
        }
        None => tempfile::Builder::new()
            .prefix(&format!("tv-{tag}-"))
            .tempdir()
            .unwrap()
            .keep(),
    }
}

/// Test settings plus the types the API tests exercise: `card` is a random (not
/// deterministic) PAN type so every format can be tried on card numbers.
pub fn api_settings(dir: &std::path::Path, tag: &str) -> Settings {
    use tokenvault::config::{TokenFormat, TypeSettings, Validator};
    let mut s = settings(dir, tag);
    tls_files(dir, &mut s);
    s.types.insert(
        "card".into(),
        TypeSettings {
            validator: Validator::Pan,
            keyring: "pan".into(),
            format: TokenFormat::Opaque,
            deterministic: false,
            formats: None,
            synthetic: None,
        },
    );
    s.types.insert(
        "email_det".into(),
        TypeSettings {
            validator: Validator::Email,
            keyring: "pii".into(),
            format: TokenFormat::Opaque,
            deterministic: true,
            formats: None,
            synthetic: None,
        },
    );
    s.limits.max_batch = 50;
    s
}

/// Settings for tests that start their own processes: test token and database, TLS files.
pub fn process_settings(tag: &str) -> (PathBuf, Settings) {
    let dir = test_dir(tag);
    let mut s = api_settings(&dir, tag);
    s.limits.max_batch = 1000;
    (dir, s)
}

/// Writes the map-valued settings (types, keyrings, clients), limits and
/// `public_metrics` to a TOML file next to the TLS files, as an operator's config file
/// would hold them (`serve` refuses to start without configured clients).
pub fn config_file(settings: &Settings) -> PathBuf {
    use std::fmt::Write;
    let mut t = String::new();
    let _ = writeln!(t, "[limits]\nmax_batch = {}\n", settings.limits.max_batch);
    let _ = writeln!(
        t,
        "[server]\npublic_metrics = {}\n",
        settings.server.public_metrics
    );
    for (identity, c) in &settings.clients {
        let quoted = |v: &str| serde_json::to_string(v).unwrap();
        let permissions: Vec<String> = c
            .permissions
            .iter()
            .map(|g| quoted(&g.to_string()))
            .collect();
        let _ = writeln!(
            t,
            "[clients.{}]\npermissions = [{}]",
            quoted(identity),
            permissions.join(", ")
        );
        for (key, value) in [
            (
                "rate_per_second",
                c.rate_per_second.map(|v| format!("{v:?}")),
            ),
            ("burst", c.burst.map(|v| format!("{v:?}"))),
            (
                "detokenize_per_hour",
                c.detokenize_per_hour.map(|v| v.to_string()),
            ),
            (
                "decrypt_per_hour",
                c.decrypt_per_hour.map(|v| v.to_string()),
            ),
            (
                "new_values_per_hour",
                c.new_values_per_hour.map(|v| v.to_string()),
            ),
            ("namespace", c.namespace.as_deref().map(quoted)),
        ] {
            if let Some(value) = value {
                let _ = writeln!(t, "{key} = {value}");
            }
        }
        let _ = writeln!(t);
    }
    for (name, k) in &settings.keyrings {
        let _ = writeln!(
            t,
            "[keyrings.{name}]\ncryptoperiod_days = {}\nusage_limit = {}\n",
            k.cryptoperiod_days, k.usage_limit
        );
    }
    for (name, ty) in &settings.types {
        let validator = match ty.validator {
            tokenvault::config::Validator::Pan => "pan",
            tokenvault::config::Validator::Ssn => "ssn",
            tokenvault::config::Validator::Email => "email",
            tokenvault::config::Validator::None => "none",
        };
        let format = serde_json::to_string(&ty.format).unwrap();
        let _ = writeln!(
            t,
            "[types.{name}]\nvalidator = \"{validator}\"\nkeyring = \"{}\"\nformat = {format}\ndeterministic = {}\n",
            ty.keyring, ty.deterministic
        );
    }
    let path = settings.server.tls_cert.with_file_name("tokenvault.toml");
    std::fs::write(&path, t).unwrap();
    path
}
