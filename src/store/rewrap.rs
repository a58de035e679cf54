//! The `keys rewrap` sweep's SQL: a cursor over the records not yet under the active key,
//! and set-based updates of a batch.
//!
//! Why the per-batch cost does not grow with the table:
//! - The keyring sweep's cursor (`keyring = $1 AND (created_at, token) > ($3, $4) ORDER BY
//!   created_at, token LIMIT $5`) is served by the index `tokens_by_keyring_age (keyring,
//!   created_at, token)` (migration 0009): each batch starts at the cursor in the index
//!   and stops after `limit` matches, already in order. Before it, both planners took
//!   `tokens_by_key (keyring, key_version)` and sorted: every batch read and sorted every
//!   remaining record of the keyring (a quadratic sweep: 11,386 records/s at 2×10⁵
//!   records, 845/s at 3.8×10⁶).
//! - The order is the order of creation, not of tokens: records are stored roughly in
//!   the order they were created, so a batch reads and rewrites neighbouring pages of the
//!   table and of `tokens_by_key`. In token order (random) each record dirtied pages of its
//!   own, and the sweep slowed as the table outgrew the page cache (SQLite, debug build,
//!   10⁵ records: 8,700 records/s in token order, 19,300 in creation order). A
//!   record created during the sweep comes after the cursor and is visited too (it is
//!   already under the active key); the cursor is a total order, since tokens are unique.
//! - The fingerprint sweep (`keyring = None`) walks the primary key from the cursor.
//! - A batch is written with one statement per chunk of [`UPDATE_CHUNK`] records
//!   (`WITH v (…) AS (VALUES …) UPDATE tokens … FROM v`, SQLite ≥ 3.33 and PostgreSQL),
//!   not one statement per record; each row is joined by primary key.
//!
//! `tests/it/rewrap.rs` asserts these plans on both backends with the SQL texts below.

use sqlx::Row;

use super::tokens::{COLUMNS, token_row};
use super::{Backend, Store, StoreError, Tx};
use crate::store::TokenRow;

/// Records per set-based UPDATE: 5 parameters each, so 500 records bind 2,500, far under
/// SQLite's 32,766 and PostgreSQL's 65,535. On SQLite the parameters are anonymous `?`
/// (see `store::push_rows`): with `$n` names, sqlx's lookup of each name by a linear
/// search made binding quadratic (30 % of a profile at 1,000 records a chunk).
pub const UPDATE_CHUNK: usize = 500;

/// Where a sweep stands: the creation time and token of the last record of the previous
/// batch (the fingerprint sweep uses only the token).
#[derive(Debug, Clone)]
pub struct SweepCursor {
    pub created_at: i64,
    pub token: String,
}

impl SweepCursor {
    /// Before every record.
    pub fn start() -> Self {
        Self {
            created_at: i64::MIN,
            token: String::new(),
        }
    }

    /// Just after `row`.
    pub fn after(row: &TokenRow) -> Self {
        Self {
            created_at: row.created_at,
            token: row.token.clone(),
        }
    }
}

/// The batch query of a keyring's sweep: `$1` keyring, `$2` active version, `$3` and `$4`
/// the cursor (creation time and token of the previous batch's last record), `$5` limit.
pub fn rewrap_cursor_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM tokens WHERE keyring = $1 AND (created_at, token) > ($3, $4) \
         AND (key_version <> $2 OR aad_version < 2) ORDER BY created_at, token LIMIT $5"
    )
}

/// The batch query of the fingerprint sweep (re-indexing): `$1` active fingerprint
/// version, `$2` cursor, `$3` limit. Deterministic records only, in primary-key order.
pub fn reindex_cursor_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM tokens WHERE token > $2 AND fingerprint IS NOT NULL \
         AND COALESCE(fingerprint_version, 1) <> $1 ORDER BY token LIMIT $3"
    )
}

/// The set-based re-seal of `rows` records: per record its token, ciphertext, new version
/// and the (version, AAD version) it was read under, bound in that order. A record changes
/// only if it is still as read, so a concurrent delete or rewrap wins.
pub fn update_ciphertexts_sql(backend: Backend, rows: usize) -> String {
    let mut sql = String::with_capacity(200 + rows * 24);
    sql.push_str("WITH v (token, ciphertext, new_version, old_version, old_aad) AS (VALUES ");
    super::push_rows(&mut sql, backend, rows, 5, 1);
    sql.push_str(
        ") UPDATE tokens SET ciphertext = v.ciphertext, key_version = v.new_version, \
         aad_version = 2 FROM v WHERE tokens.token = v.token \
         AND tokens.key_version = v.old_version AND tokens.aad_version = v.old_aad",
    );
    sql
}

/// The set-based re-index of `rows` records: per record its token, new lookup fingerprint
/// and the fingerprint key version that made it.
pub fn update_fingerprints_sql(backend: Backend, rows: usize) -> String {
    let mut sql = String::with_capacity(200 + rows * 12);
    sql.push_str("WITH v (token, fingerprint, version) AS (VALUES ");
    super::push_rows(&mut sql, backend, rows, 3, 1);
    sql.push_str(
        ") UPDATE tokens SET fingerprint = v.fingerprint, fingerprint_version = v.version \
         FROM v WHERE tokens.token = v.token",
    );
    sql
}

/// One record's new ciphertext, and the key version and AAD version it was read under.
pub struct Resealed<'a> {
    pub token: &'a str,
    pub ciphertext: &'a [u8],
    pub old_version: i64,
    pub old_aad: i64,
}

impl Store {
    /// Records of `keyring` not under version `active` (or sealed with the legacy AAD),
    /// after `after` in order of creation: a resumable cursor. With no keyring:
    /// deterministic records whose lookup fingerprint was not made by fingerprint key
    /// `active`, after `after.token` in token order.
    pub async fn tokens_to_rewrap(
        &self,
        keyring: Option<&str>,
        active: i64,
        after: &SweepCursor,
        limit: i64,
    ) -> Result<Vec<TokenRow>, StoreError> {
        let rows = match keyring {
            Some(k) => {
                sqlx::query(&rewrap_cursor_sql())
                    .bind(k)
                    .bind(active)
                    .bind(after.created_at)
                    .bind(&after.token)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(&reindex_cursor_sql())
                    .bind(active)
                    .bind(&after.token)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        Ok(rows.iter().map(token_row).collect::<Result<_, _>>()?)
    }

    /// How many records `tokens_to_rewrap` would visit from the start.
    pub async fn count_to_rewrap(
        &self,
        keyring: Option<&str>,
        active: i64,
    ) -> Result<i64, StoreError> {
        let row = match keyring {
            Some(k) => {
                sqlx::query(
                    "SELECT COUNT(*) AS n FROM tokens WHERE keyring = $1 \
                     AND (key_version <> $2 OR aad_version < 2)",
                )
                .bind(k)
                .bind(active)
                .fetch_one(&self.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT COUNT(*) AS n FROM tokens WHERE fingerprint IS NOT NULL \
                     AND COALESCE(fingerprint_version, 1) <> $1",
                )
                .bind(active)
                .fetch_one(&self.pool)
                .await?
            }
        };
        Ok(row.try_get("n")?)
    }

    /// Replaces the ciphertexts (sealed with AAD version 2 under `new_version`) of the
    /// records still as read; returns how many changed.
    pub async fn update_ciphertexts(
        &self,
        tx: &mut Tx,
        new_version: i64,
        rows: &[Resealed<'_>],
    ) -> Result<u64, StoreError> {
        let mut changed = 0;
        for chunk in rows.chunks(UPDATE_CHUNK) {
            let sql = update_ciphertexts_sql(self.backend, chunk.len());
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(r.token)
                    .bind(r.ciphertext)
                    .bind(new_version)
                    .bind(r.old_version)
                    .bind(r.old_aad);
            }
            changed += q.execute(&mut **tx).await?.rows_affected();
        }
        Ok(changed)
    }

    /// Replaces the lookup fingerprints of `rows` (token, fingerprint) with ones made by
    /// fingerprint key `version`; returns how many changed.
    pub async fn update_fingerprints(
        &self,
        tx: &mut Tx,
        version: i64,
        rows: &[(&str, &[u8])],
    ) -> Result<u64, StoreError> {
        let mut changed = 0;
        for chunk in rows.chunks(UPDATE_CHUNK) {
            let sql = update_fingerprints_sql(self.backend, chunk.len());
            let mut q = sqlx::query(&sql);
            for (token, fp) in chunk {
                q = q.bind(*token).bind(*fp).bind(version);
            }
            changed += q.execute(&mut **tx).await?.rows_affected();
        }
        Ok(changed)
    }

    /// Takes a row out of the deterministic index: it keeps its token and value, but is no
    /// longer the answer for its value (another row is).
    pub async fn clear_fingerprint(&self, tx: &mut Tx, token: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE tokens SET fingerprint = NULL, fingerprint_version = NULL WHERE token = $1",
        )
        .bind(token)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
