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
}

const STEP_UP_COLUMNS: &str =
    "id, identity, origin, created_at, score, reasons, tokens, token_count, state";

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
        sqlx::query(&format!(
            "INSERT INTO step_ups ({STEP_UP_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
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
        let rows = sqlx::query("SELECT identity FROM suspensions ORDER BY identity")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("identity"))
            .collect::<Result<_, _>>()?)
    }
}
