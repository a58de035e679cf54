//! The hot read on SQLite without a thread hand-off: a token's row by its token, read on
//! the calling thread through a synchronous binding (rusqlite, over the same bundled
//! SQLite that sqlx links).
//!
//! sqlx runs every SQLite connection on a thread of its own behind a channel, so each
//! statement wakes that thread and then the caller again: two context switches for a
//! point read of a few microseconds, which on two cores is most of a detokenize's cost
//! (README, "Where the request time goes"). Here the statement is a function call.
//! Only reads go this way, on connections that are `query_only`: every write still goes
//! through sqlx and the group-commit writer. In WAL mode a reader never waits for the
//! writer, and each read begins a transaction of its own, so it sees every commit that
//! finished before it began, as a pooled sqlx connection does.

use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::StoreError;
use super::tokens::{COLUMNS, TokenRow};

/// Idle connections kept; more may be open for a moment under a burst.
const KEEP: usize = 8;

/// Synchronous read connections to one SQLite file, opened on demand.
#[derive(Debug)]
pub struct QuickReads {
    file: PathBuf,
    /// `None` once closed: no connection is opened again.
    idle: Mutex<Option<Vec<Connection>>>,
}

impl QuickReads {
    /// For the database file sqlx opens (`Store::connect` takes it from sqlx's own
    /// parsing of the URL) and the URL's query; `None` for an in-memory database
    /// (another connection would see another database), a SQLite URI name, or a URL with
    /// options this cannot honour (read-only, immutable, another VFS…).
    pub fn for_file(file: PathBuf, query: Option<&str>) -> Option<Self> {
        let plain = matches!(query, None | Some("" | "mode=rwc" | "mode=rw"));
        let name = file.to_string_lossy();
        if name.is_empty() || name == ":memory:" || name.starts_with("file:") || !plain {
            return None;
        }
        Some(Self {
            file,
            idle: Mutex::new(Some(Vec::new())),
        })
    }

    /// The row of `token`, as `Store::token` reads it through sqlx.
    pub fn token(&self, token: &str) -> Result<Option<TokenRow>, StoreError> {
        self.with(|conn| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {COLUMNS} FROM tokens WHERE token = ?1"))?;
            stmt.query_row([token], token_row).optional()
        })
    }

    /// The rows a short fingerprint lookup (`Store::tokens_by_fingerprints`, a single
    /// tokenize's one or two values) finds: `sql` selects `COLUMNS, fingerprint` with
    /// the type as its first parameter and the fingerprints after it. Long lists stay on
    /// sqlx's thread: reading hundreds of index pages would hold up a runtime thread.
    pub fn tokens_by_fingerprints(
        &self,
        sql: &str,
        token_type: &str,
        fingerprints: &[&[u8]],
    ) -> Result<Vec<(Vec<u8>, TokenRow)>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(sql)?;
            stmt.raw_bind_parameter(1, token_type)?;
            for (i, fp) in fingerprints.iter().enumerate() {
                stmt.raw_bind_parameter(i + 2, *fp)?;
            }
            let mut rows = stmt.raw_query();
            let mut found = Vec::new();
            while let Some(r) = rows.next()? {
                found.push((r.get(12)?, token_row(r)?));
            }
            Ok(found)
        })
    }

    /// Runs `read` on an idle connection (or a new one) and gives the connection back,
    /// unless the read failed: a connection in an unknown state is closed, not reused.
    fn with<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let taken = match self.lock().as_mut() {
            Some(idle) => idle.pop(),
            None => return Err(closed()),
        };
        let conn = match taken {
            Some(c) => c,
            None => self.open().map_err(store_error)?,
        };
        let result = read(&conn).map_err(store_error)?;
        if let Some(idle) = self.lock().as_mut().filter(|i| i.len() < KEEP) {
            idle.push(conn);
        }
        Ok(result)
    }

    /// Closes the idle connections; later reads answer "unavailable", as a closed pool
    /// does. A read in progress finishes and its connection is then dropped.
    pub fn close(&self) {
        self.lock().take();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<Connection>>> {
        // The list holds no invariant a panic elsewhere could break.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.file,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // query_only: this handle can never write. A short busy wait: a reader in WAL
        // mode waits only while the WAL index is rebuilt, and this runs on a runtime
        // thread, so it answers "unavailable" rather than stall it for long.
        conn.execute_batch("PRAGMA query_only = ON; PRAGMA busy_timeout = 1000;")?;
        Ok(conn)
    }
}

/// A row of `SELECT {COLUMNS} …`, in the order of `tokens::COLUMNS`.
fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        token: r.get(0)?,
        token_type: r.get(1)?,
        keyring: r.get(2)?,
        key_version: r.get(3)?,
        ciphertext: r.get(4)?,
        masked: r.get(5)?,
        metadata: r.get(6)?,
        created_at: r.get(7)?,
        expires_at: r.get(8)?,
        fingerprint_version: r.get(9)?,
        aad_version: r.get(10)?,
        fingerprint_namespace: r.get(11)?,
    })
}

fn closed() -> StoreError {
    StoreError::Unavailable("the database was closed".into())
}

/// rusqlite's errors in the store's terms: SQLite's BUSY and LOCKED are an outage (503,
/// retried by clients), anything else a failed query. Neither carries a bound value.
fn store_error(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::CannotOpen) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Query(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_file_reads_on_the_calling_thread() {
        let file = |f: &str, q: Option<&str>| QuickReads::for_file(f.into(), q).map(|r| r.file);
        assert_eq!(file("data/v.db", None), Some(PathBuf::from("data/v.db")));
        assert_eq!(
            file("/var/v.db", Some("mode=rwc")),
            Some(PathBuf::from("/var/v.db"))
        );
        // Another connection to an in-memory database would open another, empty one
        // (sqlx names its own `file:sqlx-in-memory-N`).
        assert_eq!(file(":memory:", None), None);
        assert_eq!(file("file:sqlx-in-memory-3", Some("mode=rwc")), None);
        assert_eq!(file("v.db", Some("mode=memory")), None);
        // Options this binding would not apply the same way: sqlx reads them alone.
        assert_eq!(file("v.db", Some("mode=ro&cache=shared")), None);
        assert_eq!(file("v.db", Some("immutable=true")), None);
        assert_eq!(file("", None), None);
    }
}
