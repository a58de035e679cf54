//! The officer registry, officer requests and the signatures on them.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, Tx};

/// One registered officer key (active, or retired by a re-key or removal).
#[derive(Debug, Clone)]
pub struct OfficerKeyRow {
    pub public_key: Vec<u8>,
    pub name: String,
    pub state: String,
    pub registered_at: i64,
    pub retired_at: Option<i64>,
    /// The audit event that registered this key.
    pub audit_seq: i64,
    /// The add or re-key request that justifies it (None: a first officer).
    pub request_id: Option<String>,
}

/// A request: the canonical document every signature covers, and its state.
#[derive(Debug, Clone)]
pub struct RequestRow {
    pub id: String,
    pub document: String,
    pub operation: String,
    pub required: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub state: String,
    pub decided_at: Option<i64>,
}

/// One officer's signature on a request.
#[derive(Debug, Clone)]
pub struct SignatureRow {
    pub public_key: Vec<u8>,
    pub officer: String,
    pub signature: Vec<u8>,
    pub signed_at: i64,
}

fn officer_key(row: &AnyRow) -> Result<OfficerKeyRow, sqlx::Error> {
    Ok(OfficerKeyRow {
        public_key: row.try_get("public_key")?,
        name: row.try_get("name")?,
        state: row.try_get("state")?,
        registered_at: row.try_get("registered_at")?,
        retired_at: row.try_get("retired_at")?,
        audit_seq: row.try_get("audit_seq")?,
        request_id: row.try_get("request_id")?,
    })
}

fn request(row: &AnyRow) -> Result<RequestRow, sqlx::Error> {
    Ok(RequestRow {
        id: row.try_get("id")?,
        document: row.try_get("document")?,
        operation: row.try_get("operation")?,
        required: row.try_get("required")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        state: row.try_get("state")?,
        decided_at: row.try_get("decided_at")?,
    })
}

const REQUEST_COLUMNS: &str =
    "id, document, operation, required, created_at, expires_at, state, decided_at";

impl Store {
    /// Every officer key ever registered, oldest first.
    pub async fn officer_keys(&self) -> Result<Vec<OfficerKeyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT public_key, name, state, registered_at, retired_at, audit_seq, request_id \
             FROM officer_keys ORDER BY audit_seq",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(officer_key).collect::<Result<_, _>>()?)
    }

    /// How many officer registrations the audit trail holds (a registry emptied in the
    /// database still has them there).
    pub async fn officer_registrations(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_events WHERE action = 'officer.register'",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn insert_officer_key(
        &self,
        tx: &mut Tx,
        public_key: &[u8],
        name: &str,
        now: i64,
        audit_seq: i64,
        request_id: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO officer_keys (public_key, name, state, registered_at, audit_seq, request_id) \
             VALUES ($1, $2, 'active', $3, $4, $5)",
        )
        .bind(public_key)
        .bind(name)
        .bind(now)
        .bind(audit_seq)
        .bind(request_id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Retires an officer's active key; false if the officer had none.
    pub async fn retire_officer_key(
        &self,
        tx: &mut Tx,
        name: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE officer_keys SET state = 'retired', retired_at = $1 \
             WHERE name = $2 AND state = 'active'",
        )
        .bind(now)
        .bind(name)
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn insert_request(&self, tx: &mut Tx, r: &RequestRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO officer_requests (id, document, operation, required, created_at, \
             expires_at, state) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&r.id)
        .bind(&r.document)
        .bind(&r.operation)
        .bind(r.required)
        .bind(r.created_at)
        .bind(r.expires_at)
        .bind(&r.state)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn request(&self, id: &str) -> Result<Option<RequestRow>, StoreError> {
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM officer_requests WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(request).transpose()?)
    }

    pub async fn requests(&self) -> Result<Vec<RequestRow>, StoreError> {
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM officer_requests ORDER BY created_at, id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(request).collect::<Result<_, _>>()?)
    }

    /// Moves a request from state `from` to `to`; false if it was not in `from`.
    pub async fn decide_request(
        &self,
        tx: &mut Tx,
        id: &str,
        from: &str,
        to: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE officer_requests SET state = $1, decided_at = $2 WHERE id = $3 AND state = $4",
        )
        .bind(to)
        .bind(now)
        .bind(id)
        .bind(from)
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a signature; false if this key already signed the request.
    pub async fn insert_signature(
        &self,
        tx: &mut Tx,
        request_id: &str,
        s: &SignatureRow,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO officer_signatures (request_id, public_key, officer, signature, signed_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(request_id)
        .bind(&s.public_key)
        .bind(&s.officer)
        .bind(&s.signature)
        .bind(s.signed_at)
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The signatures on a request, in the order they were given; inside `tx` when the
    /// caller is deciding on them, so concurrent signers see each other.
    pub async fn signatures(
        &self,
        tx: Option<&mut Tx>,
        request_id: &str,
    ) -> Result<Vec<SignatureRow>, StoreError> {
        let q = sqlx::query(
            "SELECT public_key, officer, signature, signed_at FROM officer_signatures \
             WHERE request_id = $1 ORDER BY signed_at, officer",
        )
        .bind(request_id);
        let rows = match tx {
            Some(tx) => q.fetch_all(&mut **tx).await?,
            None => q.fetch_all(&self.pool).await?,
        };
        rows.iter()
            .map(|r| {
                Ok(SignatureRow {
                    public_key: r.try_get("public_key")?,
                    officer: r.try_get("officer")?,
                    signature: r.try_get("signature")?,
                    signed_at: r.try_get("signed_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}
