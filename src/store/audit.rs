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

    /// Inserts many chained events with one statement per chunk.
    pub async fn insert_audits(&self, tx: &mut Tx, rows: &[AuditRow]) -> Result<(), StoreError> {
        const COLS: usize = 10;
        for chunk in rows.chunks(300) {
            let mut sql = String::with_capacity(128 + chunk.len() * 64);
            sql.push_str(
                "INSERT INTO audit_events (seq, at, actor, action, outcome, resource, origin, reason, prev_hash, hash) VALUES ",
            );
            super::push_rows(&mut sql, self.backend, chunk.len(), COLS, 1);
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(r.seq)
                    .bind(r.at)
                    .bind(&r.actor)
                    .bind(&r.action)
                    .bind(&r.outcome)
                    .bind(&r.resource)
                    .bind(&r.origin)
                    .bind(&r.reason)
                    .bind(&r.prev_hash)
                    .bind(&r.hash);
            }
            q.execute(&mut **tx).await?;
        }
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
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(audit_row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRow {
    pub seq: i64,
    pub head_hash: Vec<u8>,
    pub at: i64,
    pub key_label: String,
    pub signature: Vec<u8>,
    /// The digest of the checkpoint before this one (format v2); `None` for a v1
    /// checkpoint, made before checkpoints were chained.
    pub prev_digest: Option<Vec<u8>>,
    /// The vault's environment, signed with the rest (format v3).
    pub environment: Option<String>,
}

/// What this process itself wrote to the chain and signed, so the signer can tell a
/// chain it extended from one a database writer rewrote (see `audit::checkpoint`).
#[derive(Debug, Clone, Default)]
pub struct AuditWitness {
    /// The newest event this process committed: (sequence, hash).
    pub appended: Option<(i64, Vec<u8>)>,
    /// The newest checkpoint this process signed and stored.
    pub signed: Option<CheckpointRow>,
}

const CHECKPOINT_COLUMNS: &str =
    "seq, head_hash, at, key_label, signature, prev_digest, environment";

fn checkpoint_row(r: &sqlx::any::AnyRow) -> Result<CheckpointRow, sqlx::Error> {
    Ok(CheckpointRow {
        seq: r.try_get("seq")?,
        head_hash: r.try_get("head_hash")?,
        at: r.try_get("at")?,
        key_label: r.try_get("key_label")?,
        signature: r.try_get("signature")?,
        prev_digest: r.try_get("prev_digest")?,
        environment: r.try_get("environment")?,
    })
}

impl Store {
    /// The newest event's (sequence, hash), or (0, zeros) for an empty chain.
    pub async fn audit_tip(&self) -> Result<(i64, Vec<u8>), StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok((r.try_get("seq")?, r.try_get("hash")?)),
            None => Ok((0, vec![0; 32])),
        }
    }

    /// The head as the chain's writers last left it.
    pub async fn audit_head(&self) -> Result<(i64, Vec<u8>), StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok((row.try_get("seq")?, row.try_get("hash")?))
    }

    /// What this process wrote and signed (see [`AuditWitness`]).
    pub fn audit_witness(&self) -> AuditWitness {
        self.witness
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Notes a committed append of this process; called after the commit.
    pub(crate) fn witness_appended(&self, seq: i64, hash: &[u8]) {
        let mut w = self.witness.lock().unwrap_or_else(|p| p.into_inner());
        if w.appended.as_ref().is_none_or(|(s, _)| *s < seq) {
            w.appended = Some((seq, hash.to_vec()));
        }
    }

    /// Stores `c` if the newest stored checkpoint is still the one it follows (`after`:
    /// its sequence, 0 for none); false if another signer got there first. Takes the
    /// chain head lock, so checkpoints of concurrent nodes form one chain.
    pub async fn insert_checkpoint_after(
        &self,
        c: &CheckpointRow,
        after: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        self.lock_audit_head(&mut tx).await?;
        let newest: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints")
            .fetch_one(&mut *tx)
            .await?;
        if newest != after {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq, head_hash, at, key_label, signature, prev_digest, \
             environment) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(c.seq)
        .bind(&c.head_hash)
        .bind(c.at)
        .bind(&c.key_label)
        .bind(&c.signature)
        .bind(&c.prev_digest)
        .bind(c.environment.as_deref())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut w = self.witness.lock().unwrap_or_else(|p| p.into_inner());
        w.signed = Some(c.clone());
        Ok(true)
    }

    /// Every checkpoint, oldest first: for the verifier, which reads the whole chain anyway.
    pub async fn checkpoints(&self) -> Result<Vec<CheckpointRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY seq"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(checkpoint_row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// The newest checkpoint: one row, whatever the number of checkpoints (the signer
    /// asks every 2 s).
    pub async fn latest_checkpoint(&self) -> Result<Option<CheckpointRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"
        ))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(checkpoint_row).transpose()?)
    }

    /// The checkpoint at `seq`, if there is one.
    pub async fn checkpoint_at(&self, seq: i64) -> Result<Option<CheckpointRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE seq = $1"
        ))
        .bind(seq)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(checkpoint_row).transpose()?)
    }

    pub async fn insert_audit_key(
        &self,
        label: &str,
        public_key: &[u8],
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO audit_keys (label, public_key, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(label)
            .bind(public_key)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The stored public key of `label`, if any.
    pub async fn audit_key(&self, label: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT public_key FROM audit_keys WHERE label = $1")
                .bind(label)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn audit_keys(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows =
            sqlx::query("SELECT label, public_key FROM audit_keys ORDER BY created_at, label")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("label")?, r.try_get("public_key")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Events whose time falls in [from, to), for reports.
    pub async fn audit_events_between(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE at >= $1 AND at < $2 ORDER BY seq"
        ))
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(audit_row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }
}

/// The columns `audit_row` reads, in the order the hash chain covers them.
const AUDIT_COLUMNS: &str =
    "seq, at, actor, action, outcome, resource, origin, reason, prev_hash, hash";

fn audit_row(r: &sqlx::any::AnyRow) -> Result<AuditRow, sqlx::Error> {
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
}

impl Store {
    /// Event counts by (actor, action, outcome) in [from, to).
    pub async fn audit_counts(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<(String, String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT actor, action, outcome, COUNT(*) AS n FROM audit_events WHERE at >= $1 AND at < $2 \
             GROUP BY actor, action, outcome ORDER BY actor, action, outcome",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("actor")?,
                    r.try_get("action")?,
                    r.try_get("outcome")?,
                    r.try_get("n")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Successful detokenizations per UTC day (day number since the epoch) in [from, to).
    pub async fn daily_counts(
        &self,
        action: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT at / 86400000 AS day, COUNT(*) AS n FROM audit_events \
             WHERE action = $1 AND outcome = 'success' AND at >= $2 AND at < $3 GROUP BY at / 86400000 ORDER BY day",
        )
        .bind(action)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("day")?, r.try_get("n")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Events of the given actions in [from, to), for the rotation history.
    pub async fn lifecycle_events(
        &self,
        actions: &[&str],
        from: i64,
        to: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        if actions.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (0..actions.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE at >= $1 AND at < $2 \
                 AND action IN ({}) ORDER BY seq",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(from).bind(to);
        for a in actions {
            query = query.bind(*a);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(audit_row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }
}
