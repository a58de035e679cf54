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
    idle: Mutex<Vec<Connection>>,
}

impl QuickReads {
    /// For an `sqlite://` URL naming a file; `None` for an in-memory database (another
    /// connection would see another database) or a URL with options this cannot honour.
    pub fn for_url(url: &str) -> Option<Self> {
        let rest = url.strip_prefix("sqlite://")?;
        let (file, query) = rest.split_once('?').unwrap_or((rest, ""));
        let plain = query.is_empty() || query == "mode=rwc" || query == "mode=rw";
        if file.is_empty() || file == ":memory:" || !plain {
            return None;
        }
        Some(Self {
            file: PathBuf::from(file),
            idle: Mutex::new(Vec::new()),
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
        let taken = self.lock().pop();
        let conn = match taken {
            Some(c) => c,
            None => self.open().map_err(store_error)?,
        };
        let result = read(&conn).map_err(store_error)?;
        let mut idle = self.lock();
        if idle.len() < KEEP {
            idle.push(conn);
        }
        Ok(result)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
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
    fn only_a_plain_file_url_reads_on_the_calling_thread() {
        let file = |u: &str| QuickReads::for_url(u).map(|q| q.file);
        assert_eq!(file("sqlite://data/v.db"), Some(PathBuf::from("data/v.db")));
        assert_eq!(
            file("sqlite:///var/lib/v.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/v.db"))
        );
        // Another connection to ":memory:" would open another, empty database.
        assert_eq!(file("sqlite://:memory:"), None);
        assert_eq!(file("sqlite://v.db?mode=memory"), None);
        // Options this binding would not apply the same way: sqlx reads them alone.
        assert_eq!(file("sqlite://v.db?mode=ro&cache=shared"), None);
        assert_eq!(file("sqlite://"), None);
        assert_eq!(file("postgres://u@h/db"), None);
    }
}
