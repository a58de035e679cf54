//! The integration tests, in one binary: one module per suite, and `helpers`, the set-up
//! they share. Tests run on parallel threads of this one process;
//! scripts/test runs them all on SQLite, then the suites that touch the database again on
//! PostgreSQL (selected by module path).

mod helpers;

mod api;
mod audit;
mod foundation;
mod hardening;
mod hsm_faults;
mod lifecycle;
mod multinode;
mod permissions;
mod process;
mod properties;
mod store;
mod tls;
