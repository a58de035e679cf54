//! The database of one test: a SQLite file in the test's directory, or, in the
//! PostgreSQL pass of scripts/test, a fresh PostgreSQL database made by shelling out to
//! `psql`.

use tokenvault::config::Settings;

/// Whether this run targets PostgreSQL (`TOKENVAULT_TEST_BACKEND=postgres`, set by
/// scripts/test for its second pass when `TOKENVAULT_TEST_POSTGRES_URL` is set).
pub fn postgres() -> Option<String> {
    match std::env::var("TOKENVAULT_TEST_BACKEND").as_deref() {
        Ok("postgres") => Some(
            std::env::var("TOKENVAULT_TEST_POSTGRES_URL")
                .expect("TOKENVAULT_TEST_BACKEND=postgres needs TOKENVAULT_TEST_POSTGRES_URL"),
        ),
        _ => None,
    }
}

/// A fresh PostgreSQL database for one test; scripts/test drops the `tv_*` databases of
/// earlier runs before it starts.
pub fn fresh_postgres_database(admin_url: &str, name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let name = format!("tv_{name}");
    let out = std::process::Command::new("psql")
        .args([
            admin_url,
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            &format!("CREATE DATABASE {name}"),
        ])
        .output()
        .expect("psql is installed");
    assert!(
        out.status.success(),
        "creating {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base = admin_url.rsplit_once('/').map_or(admin_url, |(b, _)| b);
    format!("{base}/{name}")
}

/// A connection to the test's database, whichever backend it is.
pub async fn connect(settings: &Settings) -> sqlx::AnyConnection {
    use secrecy::ExposeSecret;
    sqlx::any::install_default_drivers();
    <sqlx::AnyConnection as sqlx::Connection>::connect(settings.database.url.expose_secret())
        .await
        .unwrap()
}

/// Audit events of `action` with `outcome` in the test's database.
pub async fn count_events(settings: &Settings, action: &str, outcome: &str) -> i64 {
    let mut db = connect(settings).await;
    sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE action = $1 AND outcome = $2")
        .bind(action)
        .bind(outcome)
        .fetch_one(&mut db)
        .await
        .unwrap()
}
