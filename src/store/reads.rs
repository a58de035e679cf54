//! Batched token reads for the reveal path. Every statement through sqlx's SQLite driver
//! is a hand-off to the connection's thread and back; under load most of a detokenize's
//! server time was those hand-offs (about 60 % of it in the kernel, switching threads).
//! Concurrent lookups of single tokens are gathered here into one multi-row statement.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{Backend, Store, StoreError, TokenRow, tokens};

/// Most lookups in one statement.
const MAX_BATCH: usize = 256;
/// Statements in flight at once (the pool has more connections for everything else).
const READERS: usize = 2;

type Job = (
    String,
    oneshot::Sender<Result<Option<TokenRow>, StoreError>>,
);

/// Handle to the read batcher; cheap to clone.
#[derive(Debug, Clone)]
pub struct TokenReader {
    jobs: mpsc::Sender<Job>,
}

impl TokenReader {
    /// Starts the batcher on the current runtime.
    pub fn spawn(store: Store) -> Self {
        let (jobs, mut rx) = mpsc::channel::<Job>(4096);
        let permits = Arc::new(Semaphore::new(READERS));
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Wait for a free reader first: lookups arriving meanwhile join the batch.
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let store = store.clone();
                tokio::spawn(async move {
                    let ids: Vec<&str> = batch.iter().map(|(t, _)| t.as_str()).collect();
                    match store.tokens_by_id(&ids).await {
                        Ok(rows) => {
                            for (token, reply) in batch {
                                // The same token may be asked for twice in one batch.
                                let _ = reply.send(Ok(rows.get(&token).cloned()));
                            }
                        }
                        Err(e) => {
                            for (_, reply) in batch {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                    drop(permit);
                });
            }
        });
        Self { jobs }
    }

    /// The row of `token`, if any (read with other concurrent lookups).
    pub async fn token(&self, token: &str) -> Result<Option<TokenRow>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the token reader stopped".into());
        self.jobs
            .send((token.to_owned(), reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl Store {
    /// The rows of these tokens, by token (absent ones are missing): one statement.
    pub async fn tokens_by_id(
        &self,
        ids: &[&str],
    ) -> Result<HashMap<String, TokenRow>, StoreError> {
        let columns = tokens::COLUMNS;
        let mut sql = match self.backend {
            Backend::Sqlite => format!("SELECT {columns} FROM tokens WHERE token IN ("),
            // One probe of the primary key per token, whatever the statistics (as for
            // `tokens_by_fingerprints`).
            Backend::Postgres => String::from("SELECT t.* FROM (VALUES "),
        };
        match self.backend {
            Backend::Sqlite => {
                super::push_list(&mut sql, self.backend, ids.len(), 1);
                sql.push(')');
            }
            Backend::Postgres => {
                super::push_rows(&mut sql, self.backend, ids.len(), 1, 1);
                sql.push_str(&format!(
                    ") AS v(id) CROSS JOIN LATERAL (SELECT {columns} FROM tokens \
                     WHERE token = v.id LIMIT 1) AS t"
                ));
            }
        }
        let mut q = sqlx::query(&sql);
        for id in ids {
            q = q.bind(*id);
        }
        let rows = q.fetch_all(&self.pool).await?;
        let mut found = HashMap::with_capacity(rows.len());
        for row in &rows {
            let t = tokens::token_row(row)?;
            found.insert(t.token.clone(), t);
        }
        Ok(found)
    }
}
