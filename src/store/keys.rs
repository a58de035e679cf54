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
    pub state_reason: Option<String>,
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

/// A state transition of one data key version, with who-knows-why.
pub struct StateChange<'a> {
    pub keyring: &'a str,
    pub version: i64,
    pub from: &'a [&'a str],
    pub to: &'a str,
    pub reason: Option<&'a str>,
    pub now: i64,
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
     kek_label, kcv, created_at, activated_at, cryptoperiod_ends_at, state_changed_at, usage_count, state_reason";

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
        state_reason: row.try_get("state_reason")?,
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

    /// The active version of `keyring` as seen inside `tx`.
    pub async fn active_version_in(
        &self,
        tx: &mut Tx,
        keyring: &str,
    ) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT MAX(version) AS v FROM data_keys WHERE keyring = $1 AND state = 'active'",
        )
        .bind(keyring)
        .fetch_one(&mut **tx)
        .await?;
        Ok(row.try_get("v")?)
    }

    /// Moves a version from one of `change.from` to `change.to`; false when it was in none.
    pub async fn set_key_state(
        &self,
        tx: &mut Tx,
        change: &StateChange<'_>,
    ) -> Result<bool, StoreError> {
        let mut changed = false;
        for state in change.from {
            let done = sqlx::query(
                "UPDATE data_keys SET state = $1, state_reason = $2, state_changed_at = $3 \
                 WHERE keyring = $4 AND version = $5 AND state = $6",
            )
            .bind(change.to)
            .bind(change.reason)
            .bind(change.now)
            .bind(change.keyring)
            .bind(change.version)
            .bind(*state)
            .execute(&mut **tx)
            .await?;
            changed |= done.rows_affected() == 1;
        }
        Ok(changed)
    }

    /// Crypto-shredding: erases the wrapped key and marks the version destroyed.
    pub async fn destroy_data_key(
        &self,
        tx: &mut Tx,
        keyring: &str,
        version: i64,
        reason: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE data_keys SET state = 'destroyed', wrapped_key = NULL, state_reason = $1, \
             state_changed_at = $2 WHERE keyring = $3 AND version = $4 AND state = 'retired'",
        )
        .bind(reason)
        .bind(now)
        .bind(keyring)
        .bind(version)
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Reserves `n` more encryptions under a key if its count is still `seen` (compare and
    /// set, so nodes never hand out the same budget twice).
    pub async fn reserve_usage(
        &self,
        keyring: &str,
        version: i64,
        seen: i64,
        n: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE data_keys SET usage_count = usage_count + $1 \
             WHERE keyring = $2 AND version = $3 AND usage_count = $4 AND state = 'active'",
        )
        .bind(n)
        .bind(keyring)
        .bind(version)
        .bind(seen)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records still sealed under `keyring` v`version`.
    /// Records that depend on a key version: sealed under it, or, for the fingerprint
    /// keyring, indexed by a fingerprint it made (retiring it then would make their values
    /// unfindable, and tokenize would issue second tokens).
    pub async fn records_under(&self, keyring: &str, version: i64) -> Result<i64, StoreError> {
        if keyring == crate::names::FINGERPRINT_KEYRING {
            let row = sqlx::query(
                "SELECT COUNT(*) AS n FROM tokens WHERE fingerprint IS NOT NULL \
                 AND fingerprint_version = $1",
            )
            .bind(version)
            .fetch_one(&self.pool)
            .await?;
            return Ok(row.try_get("n")?);
        }
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM tokens WHERE keyring = $1 AND key_version = $2")
                .bind(keyring)
                .bind(version)
                .fetch_one(&self.pool)
                .await?;
        Ok(row.try_get("n")?)
    }

    /// Records a KEK in a given state (`pending` while a KEK rotation is under way).
    pub async fn insert_kek_state(
        &self,
        tx: &mut Tx,
        label: &str,
        state: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO keks (label, state, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(label)
            .bind(state)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub async fn set_kek_state(
        &self,
        tx: &mut Tx,
        label: &str,
        state: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let retired_at = (state != "active" && state != "pending").then_some(now);
        let done = sqlx::query(
            "UPDATE keks SET state = $1, retired_at = COALESCE(retired_at, $2) WHERE label = $3",
        )
        .bind(state)
        .bind(retired_at)
        .bind(label)
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Points a data key at a new wrapping (KEK rotation).
    pub async fn rewrap_data_key(
        &self,
        tx: &mut Tx,
        keyring: &str,
        version: i64,
        wrapped: &[u8],
        mechanism: &str,
        kek_label: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE data_keys SET wrapped_key = $1, wrap_mechanism = $2, kek_label = $3 \
             WHERE keyring = $4 AND version = $5 AND wrapped_key IS NOT NULL",
        )
        .bind(wrapped)
        .bind(mechanism)
        .bind(kek_label)
        .bind(keyring)
        .bind(version)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// The active KEK's label as the caller's transaction sees it. Inside an audited
    /// transaction (which holds the audit head lock, like every key change) it cannot
    /// change before the commit: a data key inserted under it is never under a retired KEK.
    pub async fn active_kek_in(&self, tx: &mut Tx) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT label FROM keks WHERE state = 'active' \
             ORDER BY created_at DESC, label DESC LIMIT 1",
        )
        .fetch_optional(&mut **tx)
        .await?;
        Ok(row.map(|r| r.try_get("label")).transpose()?)
    }

    /// `(keyring, version, kek_label)` of every data key still wrapped under a KEK other
    /// than `label`, as the caller's transaction sees it (KEK rotation checks, under the
    /// audit head lock, that it re-wrapped every one of them).
    pub async fn keys_not_under_in(
        &self,
        tx: &mut Tx,
        label: &str,
    ) -> Result<Vec<(String, i64, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT keyring, version, kek_label FROM data_keys \
             WHERE kek_label <> $1 AND wrapped_key IS NOT NULL ORDER BY keyring, version",
        )
        .bind(label)
        .fetch_all(&mut **tx)
        .await?;
        rows.iter()
            .map(|r| -> Result<_, StoreError> {
                Ok((
                    r.try_get("keyring")?,
                    r.try_get("version")?,
                    r.try_get("kek_label")?,
                ))
            })
            .collect()
    }

    /// How many data keys each KEK still wraps.
    pub async fn keys_per_kek(&self, kek_label: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM data_keys WHERE kek_label = $1 AND wrapped_key IS NOT NULL",
        )
        .bind(kek_label)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Inserts a new active version and turns the previous active one decrypt-only,
    /// in the caller's transaction.
    pub async fn insert_active_data_key(
        &self,
        tx: &mut Tx,
        k: &NewDataKey<'_>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE data_keys SET state = 'decrypt-only', state_changed_at = $2, \
             state_reason = 'rotated' WHERE keyring = $1 AND state = 'active'",
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
