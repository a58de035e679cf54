//! Anomaly scoring's rows: each identity's baseline (`anomaly_baselines`), reveal
//! requests held for approval (`step_ups`) and suspended identities (`suspensions`).

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, Tx};

/// A reveal request held for an officer's approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUpRow {
    pub id: String,
    pub identity: String,
    pub origin: String,
    pub created_at: i64,
    pub score: i64,
    /// Comma-separated reason names.
    pub reasons: String,
    /// The tokens asked for, as a JSON array (tokens, never values).
    pub tokens: String,
    pub token_count: i64,
    pub state: String,
    pub decision: Option<Decision>,
    /// When the client used the approval (it can be used once).
    pub used_at: Option<i64>,
}

/// What officers decided about a held request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The approved tokens (a JSON array), or `None` for any `scope_count` tokens.
    pub scope_tokens: Option<String>,
    pub scope_count: i64,
    /// Until when (ms) the client may use the approval.
    pub valid_until: i64,
    /// The officers who signed (`officer:a+officer:b`).
    pub decided_by: String,
    pub decided_at: i64,
    /// The officers' reason.
    pub reason: String,
}

const STEP_UP_COLUMNS: &str = "id, identity, origin, created_at, score, reasons, tokens, token_count, state, \
     scope_tokens, scope_count, valid_until, decided_by, decided_at, decision, used_at";

fn step_up(row: &AnyRow) -> Result<StepUpRow, sqlx::Error> {
    Ok(StepUpRow {
        id: row.try_get("id")?,
        identity: row.try_get("identity")?,
        origin: row.try_get("origin")?,
        created_at: row.try_get("created_at")?,
        score: row.try_get("score")?,
        reasons: row.try_get("reasons")?,
        tokens: row.try_get("tokens")?,
        token_count: row.try_get("token_count")?,
        state: row.try_get("state")?,
        decision: match row.try_get::<Option<String>, _>("decided_by")? {
            None => None,
            Some(decided_by) => Some(Decision {
                scope_tokens: row.try_get("scope_tokens")?,
                scope_count: row.try_get::<Option<i64>, _>("scope_count")?.unwrap_or(0),
                valid_until: row.try_get::<Option<i64>, _>("valid_until")?.unwrap_or(0),
                decided_by,
                decided_at: row.try_get::<Option<i64>, _>("decided_at")?.unwrap_or(0),
                reason: row
                    .try_get::<Option<String>, _>("decision")?
                    .unwrap_or_default(),
            }),
        },
        used_at: row.try_get("used_at")?,
    })
}

impl Store {
    /// The stored baseline of `identity` (its serialized state), if any.
    pub async fn baseline(&self, identity: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT state FROM anomaly_baselines WHERE identity = $1")
            .bind(identity)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("state")).transpose()?)
    }

    /// Writes baselines (identity, serialized state), replacing the stored ones.
    pub async fn save_baselines(
        &self,
        rows: &[(String, String)],
        now: i64,
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for (identity, state) in rows {
            sqlx::query(
                "INSERT INTO anomaly_baselines (identity, state, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (identity) DO UPDATE SET state = excluded.state, \
                 updated_at = excluded.updated_at",
            )
            .bind(identity.as_str())
            .bind(state.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn insert_step_up(&self, tx: &mut Tx, s: &StepUpRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO step_ups (id, identity, origin, created_at, score, reasons, tokens, \
             token_count, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(s.id.as_str())
        .bind(s.identity.as_str())
        .bind(s.origin.as_str())
        .bind(s.created_at)
        .bind(s.score)
        .bind(s.reasons.as_str())
        .bind(s.tokens.as_str())
        .bind(s.token_count)
        .bind(s.state.as_str())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Held requests, newest first (at most `limit`).
    pub async fn step_ups(&self, limit: i64) -> Result<Vec<StepUpRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {STEP_UP_COLUMNS} FROM step_ups ORDER BY created_at DESC, id LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(step_up).collect::<Result<_, _>>()?)
    }

    /// Held requests made in [from, to), oldest first.
    pub async fn step_ups_between(&self, from: i64, to: i64) -> Result<Vec<StepUpRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {STEP_UP_COLUMNS} FROM step_ups WHERE created_at >= $1 AND created_at < $2 \
             ORDER BY created_at, id"
        ))
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(step_up).collect::<Result<_, _>>()?)
    }

    /// Every stored baseline: identity, serialized state, when it was written.
    pub async fn baselines(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT identity, state, updated_at FROM anomaly_baselines ORDER BY identity",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("identity")?,
                    r.try_get("state")?,
                    r.try_get("updated_at")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()?)
    }

    /// One held request.
    pub async fn step_up(&self, id: &str) -> Result<Option<StepUpRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {STEP_UP_COLUMNS} FROM step_ups WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(step_up).transpose()?)
    }

    /// Records the officers' decision on a pending held request of `identity` (`state`:
    /// approved or denied); whether it was still pending.
    pub async fn decide_step_up(
        &self,
        tx: &mut Tx,
        (id, identity): (&str, &str),
        state: &str,
        d: &Decision,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE step_ups SET state = $1, scope_tokens = $2, scope_count = $3, \
             valid_until = $4, decided_by = $5, decided_at = $6, decision = $7 \
             WHERE id = $8 AND identity = $9 AND state = 'pending'",
        )
        .bind(state)
        .bind(d.scope_tokens.as_deref())
        .bind(d.scope_count)
        .bind(d.valid_until)
        .bind(d.decided_by.as_str())
        .bind(d.decided_at)
        .bind(d.reason.as_str())
        .bind(id)
        .bind(identity)
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Uses an approval: once, by its identity, within its window; whether it applied.
    pub async fn redeem_step_up(
        &self,
        tx: &mut Tx,
        (id, identity): (&str, &str),
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE step_ups SET state = 'used', used_at = $1 \
             WHERE id = $2 AND identity = $3 AND state = 'approved' AND valid_until > $4",
        )
        .bind(now)
        .bind(id)
        .bind(identity)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Lifts the suspension of `identity` that began at `since`; whether there was one.
    pub async fn reinstate(
        &self,
        tx: &mut Tx,
        identity: &str,
        since: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM suspensions WHERE identity = $1 AND since = $2")
            .bind(identity)
            .bind(since)
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every suspension: identity, since, reasons.
    pub async fn suspensions(&self) -> Result<Vec<(String, i64, String)>, StoreError> {
        let rows =
            sqlx::query("SELECT identity, since, reasons FROM suspensions ORDER BY identity")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("identity")?,
                    r.try_get("since")?,
                    r.try_get("reasons")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()?)
    }

    /// Suspends `identity` (kept as it was if already suspended); whether it was new.
    pub async fn suspend(
        &self,
        tx: &mut Tx,
        identity: &str,
        reasons: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO suspensions (identity, since, reasons) VALUES ($1, $2, $3) \
             ON CONFLICT (identity) DO NOTHING",
        )
        .bind(identity)
        .bind(now)
        .bind(reasons)
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every suspended identity.
    pub async fn suspended(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .suspensions()
            .await?
            .into_iter()
            .map(|(identity, ..)| identity)
            .collect())
    }
}
