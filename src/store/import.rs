//! The import journal (`tokenvault import`): what each committed batch of a run issued.

use sqlx::Row;

use super::{Store, StoreError, Tx};

/// An import's progress, committed with the batch it describes, so a run killed after
/// the commit but before its output reached the disk writes the batch's tokens out again
/// on resume instead of tokenizing its records twice. A batch whose random tokens
/// collided commits again (an upsert) once the redrawn tokens are in.
#[derive(Debug, Clone)]
pub struct ImportJournal {
    pub run: String,
    pub batch: i64,
    /// The input record of `records[0]`.
    pub first_record: i64,
    /// Per record: its token, `!code` for a record refused with that error code, or empty
    /// while it has no token yet.
    pub records: Vec<String>,
    /// For each token row of the write, in order, its index in `records`: the writer puts
    /// the token that stands for the row there.
    pub slots: Vec<usize>,
    /// Entries of this run before this batch number are pruned (their output is durable).
    pub prune_before: i64,
}

/// A journal entry as read back: the batch, its first input record and its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub batch: i64,
    pub first_record: i64,
    /// As [`ImportJournal::records`].
    pub records: Vec<String>,
}

impl Store {
    /// Writes a batch's entry and prunes the entries before `prune_before`, inside the
    /// transaction that commits the batch.
    pub async fn write_import_journal(
        &self,
        tx: &mut Tx,
        j: &ImportJournal,
    ) -> Result<(), StoreError> {
        let records = j.records.join("\n");
        sqlx::query("DELETE FROM import_journal WHERE run = $1 AND batch < $2")
            .bind(&j.run)
            .bind(j.prune_before)
            .execute(&mut **tx)
            .await?;
        sqlx::query(
            "INSERT INTO import_journal (run, batch, first_record, records) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (run, batch) DO UPDATE SET records = excluded.records",
        )
        .bind(&j.run)
        .bind(j.batch)
        .bind(j.first_record)
        .bind(records)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// The entries of a run, in batch order.
    pub async fn import_journal(&self, run: &str) -> Result<Vec<JournalEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT batch, first_record, records FROM import_journal WHERE run = $1 ORDER BY batch",
        )
        .bind(run)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let records: String = r.try_get("records")?;
                Ok(JournalEntry {
                    batch: r.try_get("batch")?,
                    first_record: r.try_get("first_record")?,
                    records: records.split('\n').map(str::to_owned).collect(),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Forgets a finished run.
    pub async fn delete_import_journal(&self, run: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM import_journal WHERE run = $1")
            .bind(run)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
