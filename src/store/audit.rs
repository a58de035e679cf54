//! Audit rows and the chain head. Appends serialize on the single `audit_head` row: the
//! first statement of every write transaction locks it until commit, so concurrent
//! writers (and nodes) form one chain.

use sqlx::Row;

use super::{Store, StoreError, Tx};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub outcome: String,
    pub resource: Option<String>,
    pub origin: Option<String>,
    pub reason: Option<String>,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

impl Store {
    /// Locks the chain head for this transaction and returns it (sequence, hash). As the
    /// transaction's first statement it is a write: SQLite takes its write lock here (and
    /// waits for it), PostgreSQL its row lock, so no read snapshot goes stale before a write.
    pub async fn lock_audit_head(&self, tx: &mut Tx) -> Result<(i64, Vec<u8>), StoreError> {
        let row = sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
            .fetch_one(&mut **tx)
            .await?;
        Ok((row.try_get("seq")?, row.try_get("hash")?))
    }

    pub async fn insert_audit(&self, tx: &mut Tx, r: &AuditRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_events (seq, at, actor, action, outcome, resource, origin, reason, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(r.seq)
        .bind(r.at)
        .bind(&r.actor)
        .bind(&r.action)
        .bind(&r.outcome)
        .bind(&r.resource)
        .bind(&r.origin)
        .bind(&r.reason)
        .bind(&r.prev_hash)
        .bind(&r.hash)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn set_audit_head(
        &self,
        tx: &mut Tx,
        seq: i64,
        hash: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(seq)
            .bind(hash)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Events in sequence order, `limit` at a time from `after`.
    pub async fn audit_events(&self, after: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, outcome, resource, origin, reason, prev_hash, hash \
             FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRow {
                    seq: r.try_get("seq")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    outcome: r.try_get("outcome")?,
                    resource: r.try_get("resource")?,
                    origin: r.try_get("origin")?,
                    reason: r.try_get("reason")?,
                    prev_hash: r.try_get("prev_hash")?,
                    hash: r.try_get("hash")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }
}
