//! Officer requests awaiting (or past) a second officer's approval.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, Tx};

#[derive(Debug, Clone)]
pub struct RequestRow {
    pub id: String,
    pub operation: String,
    pub params: String,
    pub reason: Option<String>,
    pub requester: String,
    pub request_sig: Vec<u8>,
    pub created_at: i64,
    pub expires_at: i64,
    pub state: String,
    pub approver: Option<String>,
    pub approval_sig: Option<Vec<u8>>,
    pub decided_at: Option<i64>,
}

fn request(row: &AnyRow) -> Result<RequestRow, sqlx::Error> {
    Ok(RequestRow {
        id: row.try_get("id")?,
        operation: row.try_get("operation")?,
        params: row.try_get("params")?,
        reason: row.try_get("reason")?,
        requester: row.try_get("requester")?,
        request_sig: row.try_get("request_sig")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        state: row.try_get("state")?,
        approver: row.try_get("approver")?,
        approval_sig: row.try_get("approval_sig")?,
        decided_at: row.try_get("decided_at")?,
    })
}

const COLUMNS: &str = "id, operation, params, reason, requester, request_sig, created_at, expires_at, state, \
     approver, approval_sig, decided_at";

impl Store {
    pub async fn insert_request(&self, tx: &mut Tx, r: &RequestRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO officer_requests (id, operation, params, reason, requester, request_sig, created_at, \
             expires_at, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&r.id)
        .bind(&r.operation)
        .bind(&r.params)
        .bind(&r.reason)
        .bind(&r.requester)
        .bind(&r.request_sig)
        .bind(r.created_at)
        .bind(r.expires_at)
        .bind(&r.state)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn request(&self, id: &str) -> Result<Option<RequestRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM officer_requests WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(request).transpose()?)
    }

    pub async fn requests(&self) -> Result<Vec<RequestRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM officer_requests ORDER BY created_at, id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(request).collect::<Result<_, _>>()?)
    }

    /// Records a decision on a request that is still in state `from`.
    pub async fn decide_request(
        &self,
        tx: &mut Tx,
        id: &str,
        from: &str,
        to: &str,
        approver: Option<(&str, &[u8])>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE officer_requests SET state = $1, approver = COALESCE($2, approver), \
             approval_sig = COALESCE($3, approval_sig), decided_at = $4 WHERE id = $5 AND state = $6",
        )
        .bind(to)
        .bind(approver.map(|a| a.0))
        .bind(approver.map(|a| a.1))
        .bind(now)
        .bind(id)
        .bind(from)
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
