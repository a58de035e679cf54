//! Transit signing key versions (`signing_keys`): where each version's key pair lives in
//! the HSM, its public key and its state. Never a private key.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, Tx};

/// One version of a signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRow {
    pub name: String,
    pub version: i64,
    pub algorithm: String,
    pub state: String,
    pub hsm_label: String,
    pub public_key: Vec<u8>,
    pub created_at: i64,
    pub state_changed_at: i64,
}

const COLUMNS: &str =
    "name, version, algorithm, state, hsm_label, public_key, created_at, state_changed_at";

fn signing_key(row: &AnyRow) -> Result<SigningKeyRow, sqlx::Error> {
    Ok(SigningKeyRow {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        algorithm: row.try_get("algorithm")?,
        state: row.try_get("state")?,
        hsm_label: row.try_get("hsm_label")?,
        public_key: row.try_get("public_key")?,
        created_at: row.try_get("created_at")?,
        state_changed_at: row.try_get("state_changed_at")?,
    })
}

impl Store {
    /// Every version of the signing key `name`, oldest first.
    pub async fn signing_versions(&self, name: &str) -> Result<Vec<SigningKeyRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM signing_keys WHERE name = $1 ORDER BY version"
        ))
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(signing_key).collect::<Result<_, _>>()?)
    }

    /// Every version of every signing key, by name and version.
    pub async fn all_signing_versions(&self) -> Result<Vec<SigningKeyRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM signing_keys ORDER BY name, version"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(signing_key).collect::<Result<_, _>>()?)
    }

    /// The newest version number of `name` inside `tx` (0 when it has none).
    pub async fn max_signing_version(&self, tx: &mut Tx, name: &str) -> Result<i64, StoreError> {
        let row =
            sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM signing_keys WHERE name = $1")
                .bind(name)
                .fetch_one(&mut **tx)
                .await?;
        Ok(row.try_get::<i64, _>("v")?)
    }

    /// Adds `row` as the active version of its key; the version active before verifies
    /// only from now on.
    pub async fn insert_active_signing_version(
        &self,
        tx: &mut Tx,
        row: &SigningKeyRow,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE signing_keys SET state = 'verify_only', state_changed_at = $1 \
             WHERE name = $2 AND state = 'active'",
        )
        .bind(row.created_at)
        .bind(row.name.as_str())
        .execute(&mut **tx)
        .await?;
        sqlx::query(&format!(
            "INSERT INTO signing_keys ({COLUMNS}) VALUES ($1, $2, $3, 'active', $4, $5, $6, $6)"
        ))
        .bind(row.name.as_str())
        .bind(row.version)
        .bind(row.algorithm.as_str())
        .bind(row.hsm_label.as_str())
        .bind(row.public_key.as_slice())
        .bind(row.created_at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
