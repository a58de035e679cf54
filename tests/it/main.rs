//! The integration tests, in one binary: one module per suite, and `helpers`, the set-up
//! they share. The tests run on parallel threads of this one process. scripts/test runs
//! them all on SQLite, then again on PostgreSQL the suites that use the database
//! (selected by module path).

mod helpers;

mod alerts;
mod anomaly;
mod api;
mod approvals;
mod audit;
mod connection;
mod dual_control;
mod foundation;
mod guard;
mod hardening;
mod hsm_faults;
mod identity;
mod import;
mod import_vault;
mod lifecycle;
mod limits;
mod mask;
mod multinode;
mod nonprod;
mod oracle;
mod permissions;
mod process;
mod properties;
mod report;
mod rewrap;
mod store;
mod synthetic;
mod tampering;
mod tls;
mod untrusted_input;
mod vault_api;
mod vault_routes;
mod vault_sign;
mod vault_transform;
