//! Token rows: the sealed value, its keyed fingerprint and non-sensitive metadata.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Backend, Store, StoreError, Tx};

pub struct NewToken<'a> {
    pub token: &'a str,
    pub token_type: &'a str,
    pub keyring: &'a str,
    pub key_version: i64,
    pub ciphertext: &'a [u8],
    pub fingerprint: Option<&'a [u8]>,
    pub fingerprint_version: Option<i64>,
    pub masked: &'a str,
    pub metadata: Option<&'a str>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    /// Which AAD the ciphertext was sealed with (`crypto::Aad`: 1 legacy, 2 binds the
    /// type, expiry and metadata).
    pub aad_version: i64,
    /// The namespace of the lookup fingerprint (`None`: the shared namespace).
    pub fingerprint_namespace: Option<&'a str>,
}

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub token: String,
    pub token_type: String,
    pub keyring: String,
    pub key_version: i64,
    pub ciphertext: Vec<u8>,
    pub masked: String,
    pub metadata: Option<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub fingerprint_version: Option<i64>,
    pub aad_version: i64,
    pub fingerprint_namespace: Option<String>,
}

pub(super) const COLUMNS: &str = "token, token_type, keyring, key_version, ciphertext, masked, metadata, created_at, \
     expires_at, fingerprint_version, aad_version, fingerprint_namespace";

pub(super) fn token_row(row: &AnyRow) -> Result<TokenRow, sqlx::Error> {
    Ok(TokenRow {
        token: row.try_get("token")?,
        token_type: row.try_get("token_type")?,
        keyring: row.try_get("keyring")?,
        key_version: row.try_get("key_version")?,
        ciphertext: row.try_get("ciphertext")?,
        masked: row.try_get("masked")?,
        metadata: row.try_get("metadata")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        fingerprint_version: row.try_get("fingerprint_version")?,
        aad_version: row.try_get("aad_version")?,
        fingerprint_namespace: row.try_get("fingerprint_namespace")?,
    })
}

impl Store {
    /// Inserts a token; `false` when the token or (for deterministic types) the
    /// fingerprint already exists, so the caller can look up the winner or retry.
    pub async fn insert_token(&self, tx: &mut Tx, t: &NewToken<'_>) -> Result<bool, StoreError> {
        Ok(self
            .insert_tokens(tx, std::slice::from_ref(t))
            .await?
            .contains(t.token))
    }

    pub async fn token(&self, token: &str) -> Result<Option<TokenRow>, StoreError> {
        if let Some(quick) = &self.quick {
            // A read on this thread is a yield point: a batch reveal polls a thousand of
            // these at once, and the runtime's other tasks wait for none of them longer
            // than the cooperative budget (128 units) allows.
            tokio::task::consume_budget().await;
            return quick.token(token);
        }
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM tokens WHERE token = $1"))
            .bind(token)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(token_row).transpose()?)
    }

    /// The token already issued for this fingerprint of a deterministic type.
    pub async fn token_by_fingerprint(
        &self,
        tx: Option<&mut Tx>,
        token_type: &str,
        fingerprint: &[u8],
    ) -> Result<Option<TokenRow>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM tokens WHERE token_type = $1 AND fingerprint = $2");
        let q = sqlx::query(&sql).bind(token_type).bind(fingerprint);
        let row = match tx {
            Some(tx) => q.fetch_optional(&mut **tx).await?,
            None => q.fetch_optional(&self.pool).await?,
        };
        Ok(row.as_ref().map(token_row).transpose()?)
    }

    /// Deletes up to `limit` tokens whose expiry has passed; returns how many went.
    pub async fn purge_expired(
        &self,
        tx: &mut Tx,
        now: i64,
        limit: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM tokens WHERE token IN (SELECT token FROM tokens \
             WHERE expires_at IS NOT NULL AND expires_at <= $1 LIMIT $2)",
        )
        .bind(now)
        .bind(limit)
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected())
    }

    /// Deletes the row and with it the only ciphertext of the value.
    pub async fn delete_token(&self, tx: &mut Tx, token: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM tokens WHERE token = $1")
            .bind(token)
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Store {
    /// Inserts many tokens with one statement per chunk; returns the tokens that were
    /// inserted (the others met an existing token or fingerprint).
    pub async fn insert_tokens(
        &self,
        tx: &mut Tx,
        rows: &[NewToken<'_>],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        const COLS: usize = 13;
        let mut inserted = std::collections::HashSet::with_capacity(rows.len());
        for chunk in rows.chunks(200) {
            let mut sql = String::with_capacity(160 + chunk.len() * 64);
            sql.push_str(
                "INSERT INTO tokens (token, token_type, keyring, key_version, ciphertext, fingerprint, masked, \
                 metadata, created_at, expires_at, fingerprint_version, aad_version, \
                 fingerprint_namespace) VALUES ",
            );
            super::push_rows(&mut sql, self.backend, chunk.len(), COLS, 1);
            sql.push_str(" ON CONFLICT DO NOTHING RETURNING token");
            let mut q = sqlx::query(&sql);
            for t in chunk {
                q = q
                    .bind(t.token)
                    .bind(t.token_type)
                    .bind(t.keyring)
                    .bind(t.key_version)
                    .bind(t.ciphertext)
                    .bind(t.fingerprint)
                    .bind(t.masked)
                    .bind(t.metadata)
                    .bind(t.created_at)
                    .bind(t.expires_at)
                    .bind(t.fingerprint_version)
                    .bind(t.aad_version)
                    .bind(t.fingerprint_namespace);
            }
            for row in q.fetch_all(&mut **tx).await? {
                inserted.insert(row.try_get::<String, _>("token")?);
            }
        }
        Ok(inserted)
    }
}

impl Store {
    /// The tokens issued for these fingerprints of a deterministic type, with the
    /// fingerprint each answers: one statement per chunk instead of one per value.
    pub async fn tokens_by_fingerprints(
        &self,
        mut tx: Option<&mut Tx>,
        token_type: &str,
        fingerprints: &[&[u8]],
    ) -> Result<Vec<(Vec<u8>, TokenRow)>, StoreError> {
        let mut found = Vec::new();
        for chunk in fingerprints.chunks(500) {
            let sql = match self.backend {
                // SQLite probes the unique index once per listed value. Anonymous
                // parameters throughout (see `push_rows`).
                Backend::Sqlite => {
                    let mut sql =
                        format!("SELECT {COLUMNS}, fingerprint FROM tokens WHERE token_type = ?");
                    sql.push_str(" AND fingerprint IN (");
                    super::push_list(&mut sql, self.backend, chunk.len(), 2);
                    sql.push(')');
                    sql
                }
                // PostgreSQL may plan a long IN list as a scan of every row of the type
                // with the list as a filter (statistics of a table that grew since its
                // last ANALYZE: measured 486 values/s importing 2×10^5 values). A LATERAL
                // subquery with LIMIT is never flattened into a join, so each value is one
                // probe of the unique index whatever the statistics say.
                Backend::Postgres => {
                    let mut sql = String::from("SELECT t.* FROM (VALUES ");
                    super::push_rows(&mut sql, self.backend, chunk.len(), 1, 2);
                    sql.push_str(&format!(
                        ") AS v(fp) CROSS JOIN LATERAL (SELECT {COLUMNS}, fingerprint FROM tokens \
                         WHERE token_type = $1 AND fingerprint = v.fp LIMIT 1) AS t"
                    ));
                    sql
                }
            };
            // A short list (a single tokenize: one or two fingerprints) keeps its prepared
            // statement, and outside a transaction on SQLite is read on this thread
            // (`quick`); a long one is prepared for its call (the text varies with its
            // length, and would churn the statement cache).
            if let (Some(quick), None, true) = (&self.quick, tx.as_deref(), chunk.len() <= 4) {
                tokio::task::consume_budget().await;
                found.extend(quick.tokens_by_fingerprints(&sql, token_type, chunk)?);
                continue;
            }
            let mut q = sqlx::query(&sql)
                .persistent(chunk.len() <= 4)
                .bind(token_type);
            for fp in chunk {
                q = q.bind(*fp);
            }
            let rows = match tx.as_deref_mut() {
                Some(tx) => q.fetch_all(&mut **tx).await?,
                None => q.fetch_all(&self.pool).await?,
            };
            for row in rows {
                found.push((row.try_get("fingerprint")?, token_row(&row)?));
            }
        }
        Ok(found)
    }
}
