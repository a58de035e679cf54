//! Session tokens of the Vault-compatible API (`auth_sessions`): stored by the digest of
//! the token, never the token.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, Tx};

/// One issued session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub token_digest: Vec<u8>,
    pub accessor: String,
    pub identity: String,
    /// SHA-256 of the DER of the client certificate that logged in.
    pub thumbprint: Vec<u8>,
    pub issued_at: i64,
    pub ttl_ms: i64,
    pub expires_at: i64,
    pub max_expires_at: i64,
    pub revoked_at: Option<i64>,
}

const COLUMNS: &str = "token_digest, accessor, identity, thumbprint, issued_at, ttl_ms, \
                       expires_at, max_expires_at, revoked_at";

fn session(row: &AnyRow) -> Result<SessionRow, sqlx::Error> {
    Ok(SessionRow {
        token_digest: row.try_get("token_digest")?,
        accessor: row.try_get("accessor")?,
        identity: row.try_get("identity")?,
        thumbprint: row.try_get("thumbprint")?,
        issued_at: row.try_get("issued_at")?,
        ttl_ms: row.try_get("ttl_ms")?,
        expires_at: row.try_get("expires_at")?,
        max_expires_at: row.try_get("max_expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

impl Store {
    pub async fn insert_session(&self, tx: &mut Tx, s: &SessionRow) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO auth_sessions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(s.token_digest.as_slice())
        .bind(s.accessor.as_str())
        .bind(s.identity.as_str())
        .bind(s.thumbprint.as_slice())
        .bind(s.issued_at)
        .bind(s.ttl_ms)
        .bind(s.expires_at)
        .bind(s.max_expires_at)
        .bind(s.revoked_at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// The session a token digest names, whatever its state.
    pub async fn session(&self, token_digest: &[u8]) -> Result<Option<SessionRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM auth_sessions WHERE token_digest = $1"
        ))
        .bind(token_digest)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(session).transpose()?)
    }

    /// Moves a live session's expiry to `expires_at`; false if it is no longer live.
    pub async fn renew_session(
        &self,
        tx: &mut Tx,
        token_digest: &[u8],
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE auth_sessions SET expires_at = $1 \
             WHERE token_digest = $2 AND revoked_at IS NULL AND expires_at > $3",
        )
        .bind(expires_at)
        .bind(token_digest)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends a session; false if it had ended already.
    pub async fn revoke_session(
        &self,
        tx: &mut Tx,
        token_digest: &[u8],
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE auth_sessions SET revoked_at = $1 \
             WHERE token_digest = $2 AND revoked_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(token_digest)
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// How many live sessions `identity` holds.
    pub async fn live_sessions(&self, identity: &str, now: i64) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM auth_sessions \
             WHERE identity = $1 AND revoked_at IS NULL AND expires_at > $2",
        )
        .bind(identity)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Deletes sessions whose hard end passed before `before`; how many went.
    pub async fn purge_sessions(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM auth_sessions WHERE max_expires_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
