//! Key rows: KEK lifecycle records and wrapped data keys.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, Tx};

#[derive(Debug, Clone)]
pub struct KekRow {
    pub label: String,
    pub state: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

/// A data key row. `wrapped_key` is ciphertext under the KEK, never the key.
#[derive(Clone)]
pub struct DataKeyRow {
    pub keyring: String,
    pub version: i64,
    pub state: String,
    pub algorithm: String,
    pub wrapped_key: Option<Vec<u8>>,
    pub wrap_mechanism: String,
    pub kek_label: String,
    pub kcv: String,
    pub created_at: i64,
    pub activated_at: Option<i64>,
    pub cryptoperiod_ends_at: i64,
    pub state_changed_at: i64,
    pub usage_count: i64,
}

impl std::fmt::Debug for DataKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeyRow")
            .field("keyring", &self.keyring)
            .field("version", &self.version)
            .field("state", &self.state)
            .field("kcv", &self.kcv)
            .finish_non_exhaustive()
    }
}

pub struct NewDataKey<'a> {
    pub keyring: &'a str,
    pub version: i64,
    pub wrapped_key: &'a [u8],
    pub wrap_mechanism: &'a str,
    pub kek_label: &'a str,
    pub kcv: &'a str,
    pub now: i64,
    pub cryptoperiod_ends_at: i64,
}

const DATA_KEY_COLUMNS: &str = "keyring, version, state, algorithm, wrapped_key, wrap_mechanism, \
     kek_label, kcv, created_at, activated_at, cryptoperiod_ends_at, state_changed_at, usage_count";

fn data_key(row: &AnyRow) -> Result<DataKeyRow, sqlx::Error> {
    Ok(DataKeyRow {
        keyring: row.try_get("keyring")?,
        version: row.try_get("version")?,
        state: row.try_get("state")?,
        algorithm: row.try_get("algorithm")?,
        wrapped_key: row.try_get("wrapped_key")?,
        wrap_mechanism: row.try_get("wrap_mechanism")?,
        kek_label: row.try_get("kek_label")?,
        kcv: row.try_get("kcv")?,
        created_at: row.try_get("created_at")?,
        activated_at: row.try_get("activated_at")?,
        cryptoperiod_ends_at: row.try_get("cryptoperiod_ends_at")?,
        state_changed_at: row.try_get("state_changed_at")?,
        usage_count: row.try_get("usage_count")?,
    })
}

fn kek(row: &AnyRow) -> Result<KekRow, sqlx::Error> {
    Ok(KekRow {
        label: row.try_get("label")?,
        state: row.try_get("state")?,
        created_at: row.try_get("created_at")?,
        retired_at: row.try_get("retired_at")?,
    })
}

impl Store {
    pub async fn keks(&self) -> Result<Vec<KekRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT label, state, created_at, retired_at FROM keks ORDER BY created_at, label",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(kek).collect::<Result<_, _>>()?)
    }

    pub async fn active_kek(&self) -> Result<Option<KekRow>, StoreError> {
        let row = sqlx::query(
            "SELECT label, state, created_at, retired_at FROM keks WHERE state = 'active' \
             ORDER BY created_at DESC, label DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(kek).transpose()?)
    }

    /// Records a KEK; a second call with the same label changes nothing.
    pub async fn insert_kek(&self, tx: &mut Tx, label: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO keks (label, state, created_at) VALUES ($1, 'active', $2) ON CONFLICT DO NOTHING")
            .bind(label)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub async fn data_keys(&self) -> Result<Vec<DataKeyRow>, StoreError> {
        let sql = format!("SELECT {DATA_KEY_COLUMNS} FROM data_keys ORDER BY keyring, version");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(data_key).collect::<Result<_, _>>()?)
    }

    pub async fn data_key(
        &self,
        keyring: &str,
        version: i64,
    ) -> Result<Option<DataKeyRow>, StoreError> {
        let sql =
            format!("SELECT {DATA_KEY_COLUMNS} FROM data_keys WHERE keyring = $1 AND version = $2");
        let row = sqlx::query(&sql)
            .bind(keyring)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(data_key).transpose()?)
    }

    pub async fn active_data_key(&self, keyring: &str) -> Result<Option<DataKeyRow>, StoreError> {
        let sql = format!(
            "SELECT {DATA_KEY_COLUMNS} FROM data_keys WHERE keyring = $1 AND state = 'active' \
             ORDER BY version DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(keyring)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(data_key).transpose()?)
    }

    pub async fn max_version(&self, tx: &mut Tx, keyring: &str) -> Result<i64, StoreError> {
        let row =
            sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM data_keys WHERE keyring = $1")
                .bind(keyring)
                .fetch_one(&mut **tx)
                .await?;
        Ok(row.try_get("v")?)
    }

    /// Inserts a new active version and turns the previous active one decrypt-only,
    /// in the caller's transaction.
    pub async fn insert_active_data_key(
        &self,
        tx: &mut Tx,
        k: &NewDataKey<'_>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE data_keys SET state = 'decrypt-only', state_changed_at = $2 \
             WHERE keyring = $1 AND state = 'active'",
        )
        .bind(k.keyring)
        .bind(k.now)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO data_keys (keyring, version, state, algorithm, wrapped_key, wrap_mechanism, \
             kek_label, kcv, created_at, activated_at, cryptoperiod_ends_at, state_changed_at, usage_count) \
             VALUES ($1, $2, 'active', 'AES-256-GCM', $3, $4, $5, $6, $7, $7, $8, $7, 0)",
        )
        .bind(k.keyring)
        .bind(k.version)
        .bind(k.wrapped_key)
        .bind(k.wrap_mechanism)
        .bind(k.kek_label)
        .bind(k.kcv)
        .bind(k.now)
        .bind(k.cryptoperiod_ends_at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Records per key version: `(keyring, version, count)`.
    pub async fn records_per_key(&self) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT keyring, key_version, COUNT(*) AS n FROM tokens GROUP BY keyring, key_version",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("keyring")?,
                    r.try_get("key_version")?,
                    r.try_get("n")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }
}
