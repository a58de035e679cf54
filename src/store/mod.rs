//! All SQL, for SQLite (the embedded default) and PostgreSQL, through one `sqlx::Any`
//! pool. Statements use the portable subset (`$1` placeholders, `RETURNING`,
//! `ON CONFLICT DO NOTHING`), so both backends run the same text.

mod anomaly;
mod audit;
mod import;
mod keys;
mod meta;
mod officers;
mod quick;
mod rewrap;
mod sessions;
mod signing;
mod tokens;

pub use anomaly::{Decision, StepUpRow};
pub use audit::{AuditRow, AuditWitness, CheckpointRow};
pub use import::{ImportJournal, JournalEntry};
pub use keys::{DataKeyRow, KekRow, NewDataKey, StateChange};
pub use officers::{OfficerKeyRow, RequestRow, SignatureRow};
pub use rewrap::{
    Resealed, SweepCursor, UPDATE_CHUNK, reindex_cursor_sql, rewrap_cursor_sql,
    update_ciphertexts_sql, update_fingerprints_sql,
};
pub use sessions::SessionRow;
pub use signing::SigningKeyRow;
pub use tokens::{NewToken, TokenRow};

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error(
        "unsupported database URL scheme — use sqlite://path or postgres://user@host/db \
         (TOKENVAULT_DATABASE__URL)"
    )]
    BadUrl,
    #[error(
        "cannot open the database: {0} — check TOKENVAULT_DATABASE__URL and that the server is up"
    )]
    Connect(String),
    #[error("database migration failed: {0}")]
    Migrate(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Query(String),
    /// The database refused the data of a statement (SQLSTATE class 22 or 23: a value it
    /// cannot store, a constraint): one row's fault, not the database's.
    #[error("database refused a value: {0}")]
    Rejected(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => StoreError::Unavailable(e.to_string()),
            sqlx::Error::Database(db) if is_transient(db.code().as_deref()) => {
                StoreError::Unavailable(e.to_string())
            }
            sqlx::Error::Database(db) if is_refused_value(db.as_ref()) => {
                StoreError::Rejected(e.to_string())
            }
            _ => StoreError::Query(e.to_string()),
        }
    }
}

/// A value the database will not store: a constraint (either backend, through sqlx's
/// kind), or a PostgreSQL data exception (SQLSTATE class 22, e.g. a NUL in text). SQLite's
/// codes are numbers, so the class test applies only to five-character SQLSTATEs.
fn is_refused_value(db: &dyn sqlx::error::DatabaseError) -> bool {
    use sqlx::error::ErrorKind;
    matches!(
        db.kind(),
        ErrorKind::UniqueViolation
            | ErrorKind::ForeignKeyViolation
            | ErrorKind::NotNullViolation
            | ErrorKind::CheckViolation
    ) || db
        .code()
        .is_some_and(|c| c.len() == 5 && c.starts_with("22"))
}

/// SQLSTATEs that mean "the connection or server went away", not "the statement is
/// wrong": class 08 (connection exception), 57P01–57P03 (shutdown, cannot connect now),
/// and SQLite's BUSY/LOCKED codes after the busy timeout.
fn is_transient(code: Option<&str>) -> bool {
    code.is_some_and(|c| {
        c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03" | "5" | "6" | "517")
    })
}

impl StoreError {
    /// Whether retrying may succeed (the database was unreachable, not the data wrong).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The database: cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// SQLite: one connection of its own for the group-commit writer (see [`Store::writer`]).
    writes: Option<AnyPool>,
    /// SQLite: the hot point read without sqlx's thread hand-off (`quick`).
    quick: Option<std::sync::Arc<quick::QuickReads>>,
    backend: Backend,
    /// What this process appended to the audit chain and signed (`audit::checkpoint`).
    witness: std::sync::Arc<std::sync::Mutex<AuditWitness>>,
}

impl Store {
    /// Opens (creating a SQLite file if needed) and migrates the database at `url`.
    pub async fn connect(url: &SecretString, max_connections: u32) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let raw = url.expose_secret();
        let mut quick = None;
        let (backend, url) = if let Some(path) = raw.strip_prefix("sqlite://") {
            let url = if path.contains('?') {
                raw.to_owned()
            } else {
                format!("{raw}?mode=rwc")
            };
            let (file, options) =
                sqlite_file(&url).map_err(|e| StoreError::Connect(redact(e, raw)))?;
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Connect(format!("{}: {e}", dir.display())))?;
            }
            create_private(&file)?;
            quick = quick::QuickReads::for_file(file, options.as_deref());
            (Backend::Sqlite, url)
        } else if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            (Backend::Postgres, raw.to_owned())
        } else {
            return Err(StoreError::BadUrl);
        };
        let options =
            AnyConnectOptions::from_str(&url).map_err(|e| StoreError::Connect(redact(e, raw)))?;
        let size = if backend == Backend::Sqlite {
            max_connections.max(2)
        } else {
            max_connections
        };
        let pool = open_pool(backend, options.clone(), size, None)
            .await
            .map_err(|e| StoreError::Connect(redact(e, raw)))?;
        let migrator = match backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("migrations/postgres"),
        };
        migrator
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))?;
        // A database that is not a plain file (in memory, a URI name, unusual options) gets
        // neither the writer's own connection nor the quick reads: another connection
        // could open another database.
        let writes = match backend {
            Backend::Sqlite if quick.is_some() => Some(
                open_pool(backend, options, 1, Some(WRITER_CACHE_KIB))
                    .await
                    .map_err(|e| StoreError::Connect(redact(e, raw)))?,
            ),
            _ => None,
        };
        let quick = quick.map(std::sync::Arc::new);
        Ok(Self {
            pool,
            writes,
            quick,
            backend,
            witness: Default::default(),
        })
    }

    /// The same database, seen through the group-commit writer's own connection on
    /// SQLite (on PostgreSQL, the shared pool). Only the writer task uses it, one
    /// transaction at a time, so its page cache stays valid from one commit to the next:
    /// in WAL mode a connection drops its whole cache whenever another connection has
    /// committed since its last transaction, and a writer that took whichever pooled
    /// connection was free began every commit cold, reading again each index page a
    /// random token lands on. Nothing else may begin a transaction on this handle while
    /// the writer runs: with one connection that would wait for the writer's.
    pub fn writer(&self) -> Store {
        Store {
            pool: self.writes.clone().unwrap_or_else(|| self.pool.clone()),
            writes: None,
            quick: self.quick.clone(),
            backend: self.backend,
            witness: self.witness.clone(),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// A round trip to the database, for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Makes deletions final in the files: on SQLite, a checkpoint that copies the WAL
    /// into the database (where `secure_delete` has zeroed the freed bytes) and truncates
    /// the WAL, whose older frames still hold deleted rows. On PostgreSQL nothing here can
    /// do that: dead tuples stay until VACUUM, and in WAL archives and backups until they
    /// age out (docs/deployment.md).
    pub async fn compact(&self) -> Result<(), StoreError> {
        if self.backend == Backend::Sqlite {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    pub async fn close(&self) {
        if let Some(quick) = &self.quick {
            quick.close();
        }
        if let Some(writes) = &self.writes {
            writes.close().await;
        }
        self.pool.close().await;
    }
}

/// The file sqlx opens for a `sqlite://` URL, and the options it reads: it parses the URL
/// first (dot segments, tabs and newlines dropped, percent-decoding), so the raw text may
/// name another file, and it takes its options after the first `?` of the whole text,
/// past a `#` too (where `Url::query` would stop).
fn sqlite_file(url: &str) -> Result<(std::path::PathBuf, Option<String>), sqlx::Error> {
    let parsed = AnyConnectOptions::from_str(url)?.database_url;
    let file = sqlx::sqlite::SqliteConnectOptions::from_url(&parsed)?
        .get_filename()
        .to_path_buf();
    let options = parsed.as_str().split_once('?').map(|(_, q)| q.to_owned());
    Ok((file, options))
}

/// The group-commit writer's SQLite page cache, in KiB (SQLite's default is 2 MiB). A
/// batch of 1,000 new tokens dirties about a page of each random index (the token key,
/// the fingerprint) per value, so with the default the cache spills dirty pages to the WAL
/// in the middle of the transaction and forgets the upper levels of the indexes it needs
/// next. Measured in `scripts/bench` (README, "Where the bulk time goes"); it counts in
/// the server's RSS only as far as it fills.
const WRITER_CACHE_KIB: u32 = 65_536;

/// A pool whose connections are set up for the vault: on SQLite, WAL and durable commits
/// (and `cache_kib` of page cache where given); on PostgreSQL, a statement timeout.
async fn open_pool(
    backend: Backend,
    options: AnyConnectOptions,
    size: u32,
    cache_kib: Option<u32>,
) -> Result<AnyPool, sqlx::Error> {
    AnyPoolOptions::new()
        .max_connections(size)
        // The writer's own connection (the one given a cache) waits as long as SQLite's
        // busy handler would.
        .acquire_timeout(Duration::from_secs(if cache_kib.is_some() {
            10
        } else {
            5
        }))
        .after_connect(move |conn, _| {
            Box::pin(async move {
                let setup = match backend {
                    // WAL for concurrent readers, FULL so an acknowledged commit survives
                    // power loss. secure_delete: a deleted or purged record's bytes are
                    // overwritten in the file, not left on a free page.
                    Backend::Sqlite => {
                        let cache = cache_kib
                            .map(|k| format!(" PRAGMA cache_size = -{k};"))
                            .unwrap_or_default();
                        format!(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; \
                             PRAGMA secure_delete = ON;{cache}"
                        )
                    }
                    Backend::Postgres => "SET statement_timeout = '10s'".to_owned(),
                };
                conn.execute(setup.as_str()).await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await
}

/// Creates the SQLite file with mode 0600 if it does not exist yet, so it is never
/// readable by others (SQLite itself would create it under the umask). SQLite gives its
/// `-wal` and `-shm` files the mode of the database file. An existing file is not opened
/// here: closing any descriptor of a database file drops every POSIX lock this process
/// holds on it, including those of connections already open (another `Store` in the
/// same process).
fn create_private(file: &Path) -> Result<(), StoreError> {
    if file.as_os_str().is_empty() || file.as_os_str() == ":memory:" {
        return Ok(());
    }
    match crate::secret_file::private_options()
        .write(true)
        .create_new(true)
        .open(file)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Connect(format!("{}: {e}", file.display()))),
    }
}

/// Appends `rows` groups of `cols` placeholders, `($first, …), (…)`: the VALUES of a
/// multi-row statement, whose arguments are bound in the order they appear.
///
/// SQLite gets anonymous `?`: sqlx looks up the name of every parameter it binds, and
/// SQLite finds a name by a linear scan of all of them, so `$n` makes a statement with
/// thousands of parameters quadratic (measured: 46 % of an import's CPU in
/// `sqlite3_bind_parameter_name` with 2,600 parameters per insert). PostgreSQL gets `$n`.
fn push_rows(sql: &mut String, backend: Backend, rows: usize, cols: usize, first: usize) {
    for i in 0..rows {
        sql.push_str(if i == 0 { "(" } else { ", (" });
        push_list(sql, backend, cols, first + i * cols);
        sql.push(')');
    }
}

/// Appends `n` placeholders from `$first` (SQLite: `?`), comma-separated, as
/// [`push_rows`] does.
fn push_list(sql: &mut String, backend: Backend, n: usize, first: usize) {
    use std::fmt::Write;
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        match backend {
            Backend::Sqlite => sql.push('?'),
            // Writing to a String cannot fail.
            Backend::Postgres => {
                let _ = write!(sql, "${}", first + i);
            }
        }
    }
}

/// Connection errors may quote the URL, which may hold a password.
fn redact(e: impl std::fmt::Display, url: &str) -> String {
    let msg = e.to_string();
    if url.is_empty() {
        msg
    } else {
        msg.replace(url, "<database url>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reviews of the quick reads: the file and options are sqlx's, not the raw text's.
    #[test]
    fn the_file_and_options_are_those_sqlx_reads() {
        let f = |u: &str| sqlite_file(u).unwrap();
        assert_eq!(
            f("sqlite://data/v.db?mode=rwc"),
            ("data/v.db".into(), Some("mode=rwc".into()))
        );
        assert_eq!(
            f("sqlite:///srv/a/../v%2Edb?mode=rwc").0,
            std::path::PathBuf::from("/srv/v.db")
        );
        // Options behind a `#` are sqlx's options all the same (`Url::query` says none).
        let url = "sqlite://d/v.db#?mode=memory";
        let parsed = AnyConnectOptions::from_str(url).unwrap().database_url;
        assert_eq!(parsed.query(), None);
        let (file, options) = f(url);
        assert_eq!(options.as_deref(), Some("mode=memory"));
        assert!(quick::QuickReads::for_file(file, options.as_deref()).is_none());
    }
}
