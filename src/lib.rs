//! tokenvault: a self-hosted, HSM-backed key management and tokenization vault.
//!
//! Dependencies flow one way: `api`/`cli` → `tokenize`/`keys`/`audit` →
//! `crypto`/`hsm`/`store`. Key bytes never leave `crypto` and `hsm`.
#![forbid(unsafe_code)]

/// Detokenize anomaly scoring: per-identity baselines, rules, verdicts.
pub mod anomaly;
/// HTTPS API: axum on rustls with mutual TLS, one file per resource.
pub mod api;
/// Write side of the hash-chained audit trail.
pub mod audit;
/// Finds card numbers in free text (leaf), so none is stored where it does not belong.
pub mod cardscan;
/// The `tokenvault` command line, one file per subcommand.
pub mod cli;
/// Typed settings: TOML file, then `TOKENVAULT_*` environment overrides.
pub mod config;
/// Envelope encryption in process: data keys, AES-256-GCM with AAD, fingerprints.
pub mod crypto;
/// Development PKI for `dev-certs` and tests (rcgen).
pub mod devpki;
/// The one error type of the services and the one list of stable error codes.
pub mod error;
/// The one check before a service acts: typed permissions, rates, reveal budgets;
/// refusals audited once.
pub mod guard;
/// The only module that speaks PKCS#11.
pub mod hsm;
/// Keyrings, versions, states and the cache of unwrapped data keys.
pub mod keys;
/// Parsed names (leaf): keyring names, key versions, key states.
pub mod names;
/// Non-production vaults: the environment setting and the test-data checks.
pub mod nonprod;
/// Dual control: officer keys, signed requests and approvals.
pub mod officers;
/// Reads secrets from files only their owner may read (PIN files, officer keys).
pub mod secret_file;
/// Sessions of the Vault-compatible API: certificate login, certificate-bound tokens.
pub mod session;
/// All SQL, for SQLite and PostgreSQL.
pub mod store;
/// Logging set-up; never logs values or keys.
pub mod telemetry;
/// Token types, validators, formats and the tokenize/detokenize/encrypt services.
pub mod tokenize;
/// Wiring: opens the HSM, the database and the key manager from settings, and builds
/// the services once.
pub mod vault;
