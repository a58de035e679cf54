//! Group commit: one writer task per process turns the writes of many concurrent
//! requests — each with its audit event — into one transaction and one fsync. A request
//! is answered only after the transaction holding its write and its event committed, so
//! durability and the audit guarantee are those of a transaction per request, at a
//! fraction of the commits.

use tokio::sync::{mpsc, oneshot};

use super::{AuditEvent, AuditLog, AuditTx, audit_failed};
use crate::store::{ImportJournal, NewToken, SessionRow, StepUpRow, Store, StoreError};

/// Most writes gathered into one transaction.
const MAX_BATCH: usize = 512;

/// A token row to insert, owned so it can travel to the writer.
#[derive(Debug)]
pub struct TokenInsert {
    pub token: String,
    pub token_type: String,
    pub keyring: String,
    pub key_version: i64,
    pub ciphertext: Vec<u8>,
    pub fingerprint: Option<Vec<u8>>,
    pub fingerprint_version: Option<i64>,
    pub masked: String,
    pub metadata: Option<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    /// Which AAD the ciphertext was sealed with (see `store::NewToken`).
    pub aad_version: i64,
    /// The namespace of the lookup fingerprint (`None`: the shared namespace).
    pub fingerprint_namespace: Option<String>,
}

/// One write and the event that records it.
#[derive(Debug)]
pub enum Write {
    /// An event on its own (reads, denials, failures).
    Event { event: AuditEvent, at: i64 },
    /// Events of one call, together (a decrypt batch).
    Events { events: Vec<(AuditEvent, i64)> },
    /// New tokens, each with its event, in order (one tokenize, a batch or an import
    /// chunk): one job, so they land in one transaction with `events` (those of the
    /// call's items that found their value already stored) and `journal` (an import's
    /// checkpoint). For deterministic types (with a fingerprint) an existing token for
    /// the same value wins; an expired one gives way. Each event's resource is its token.
    InsertTokens {
        rows: Vec<(TokenInsert, AuditEvent)>,
        events: Vec<(AuditEvent, i64)>,
        journal: Option<ImportJournal>,
    },
    /// Deletes a token; the event is written only if a row went away.
    DeleteToken {
        token: String,
        event: AuditEvent,
        at: i64,
    },
    /// A session of the Vault-compatible API issued, renewed or revoked; the event is
    /// written only if the change applied (`Written::Applied`).
    Session {
        change: SessionChange,
        event: AuditEvent,
        at: i64,
    },
    /// A verdict of anomaly scoring that keeps a row (a held request, a suspension),
    /// with its event.
    Anomaly {
        record: AnomalyRecord,
        event: AuditEvent,
        at: i64,
    },
}

/// What a [`Write::Anomaly`] keeps besides its event.
#[derive(Debug)]
pub enum AnomalyRecord {
    /// A reveal request held for an officer's approval.
    Hold(Box<StepUpRow>),
    /// The identity suspended until an officer lifts it (the reasons of the block).
    Suspend { identity: String, reasons: String },
    /// An approval used by its identity's retry: the event is written, and the outcome
    /// is `Written::Applied(true)`, only if it was still approved and within its window.
    Redeem { held: String, identity: String },
}

/// What a [`Write::Session`] does to the stored session.
#[derive(Debug)]
pub enum SessionChange {
    Issue(SessionRow),
    /// A new expiry for the live session with this token digest.
    Renew {
        digest: Vec<u8>,
        expires_at: i64,
    },
    Revoke {
        digest: Vec<u8>,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    Recorded,
    /// The token that now stands for the value, and its expiry.
    Token {
        token: String,
        expires_at: Option<i64>,
    },
    /// A random token collided with an existing one: draw another.
    Collision,
    Deleted(bool),
    /// Whether a session change applied (the session was still live).
    Applied(bool),
    /// One outcome per row of [`Write::InsertTokens`], in order (`Token` or `Collision`).
    Tokens(Vec<Written>),
}

type Job = (Write, oneshot::Sender<Result<Written, StoreError>>);

/// Handle to the writer task; cheap to clone.
#[derive(Debug, Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task on the current runtime.
    pub fn spawn(store: Store) -> Self {
        let store = store.writer();
        let (jobs, mut rx) = mpsc::channel::<Job>(4096);
        let log = AuditLog::new(store.clone());
        tokio::spawn(async move {
            let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
            let mut replies: Vec<Result<Written, StoreError>> = Vec::new();
            while let Some(first) = rx.recv().await {
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                metrics::histogram!("tokenvault_group_commit_size").record(batch.len() as f64);
                let result = commit(&store, &log, &batch).await;
                match result {
                    Ok(outcomes) => {
                        for ((_, reply), outcome) in batch.drain(..).zip(outcomes) {
                            let _ = reply.send(Ok(outcome));
                        }
                    }
                    // The database refused a value (SQLSTATE 22/23, not an outage or a
                    // timeout): one job's data is the cause. The transaction rolled back, so
                    // each job is retried on its own and only the culprit fails.
                    Err(StoreError::Rejected(_)) if batch.len() > 1 => {
                        for i in 0..batch.len() {
                            let one = commit(&store, &log, &batch[i..=i]).await;
                            if one.is_err() {
                                audit_failed();
                            }
                            // One job in, one outcome out.
                            let outcome = one.and_then(|o| {
                                o.into_iter().next().ok_or_else(|| {
                                    StoreError::Corrupt("a commit gave no outcome".into())
                                })
                            });
                            replies.push(outcome);
                        }
                        for ((_, reply), outcome) in batch.drain(..).zip(replies.drain(..)) {
                            let _ = reply.send(outcome);
                        }
                    }
                    Err(e) => {
                        for (_, reply) in batch.drain(..) {
                            audit_failed();
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        Self { jobs }
    }

    /// Hands `write` to the writer and waits until it is committed (or failed).
    pub async fn submit(&self, write: Write) -> Result<Written, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send((write, reply))
            .await
            .map_err(|_| StoreError::Unavailable("the writer stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the writer stopped".into()))?
    }
}

/// Applies a batch in one transaction: all token inserts in one statement (per chunk),
/// conflicts resolved row by row (rare), then every event in one statement (per chunk).
async fn commit(store: &Store, log: &AuditLog, batch: &[Job]) -> Result<Vec<Written>, StoreError> {
    let mut atx = log.begin().await?;
    // Each token drawn once in the commit: a later row that drew a token an earlier one
    // did is not inserted and redraws. "The token was inserted" then means "this row
    // was": a row skipped for its fingerprint can never take a token another row drew.
    let mut rows: Vec<NewToken<'_>> = Vec::new();
    let mut drawn = std::collections::HashSet::new();
    let mut redraw = Vec::new();
    for (w, _) in batch {
        let Write::InsertTokens { rows: many, .. } = w else {
            continue;
        };
        for (row, _) in many {
            let again = !drawn.insert(row.token.as_str());
            if !again {
                rows.push(new_token(row));
            }
            redraw.push(again);
        }
    }
    let mut redraw = redraw.into_iter();
    let inserted = if rows.is_empty() {
        Default::default()
    } else {
        store.insert_tokens(&mut atx.tx, &rows).await?
    };
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut events: Vec<(AuditEvent, i64)> = Vec::with_capacity(batch.len());
    for (write, _) in batch {
        match write {
            Write::Event { event, at } => {
                events.push((event.clone(), *at));
                outcomes.push(Written::Recorded);
            }
            Write::Events { events: all } => {
                events.extend(all.iter().cloned());
                outcomes.push(Written::Recorded);
            }
            Write::InsertTokens {
                rows,
                events: others,
                journal,
            } => {
                events.extend(others.iter().cloned());
                let mut each = Vec::with_capacity(rows.len());
                for (row, event) in rows {
                    let again = redraw.next().unwrap_or(true);
                    each.push(
                        settle(
                            store,
                            &mut atx,
                            (row, event),
                            (&inserted, again),
                            &mut events,
                        )
                        .await?,
                    );
                }
                if let Some(j) = journal {
                    let mut j = j.clone();
                    for (slot, outcome) in j.slots.iter().zip(&each) {
                        if let (Some(record), Written::Token { token, .. }) =
                            (j.records.get_mut(*slot), outcome)
                        {
                            record.clone_from(token);
                        }
                    }
                    store.write_import_journal(&mut atx.tx, &j).await?;
                }
                outcomes.push(Written::Tokens(each));
            }
            Write::DeleteToken { token, event, at } => {
                let gone = store.delete_token(&mut atx.tx, token).await?;
                if gone {
                    events.push((event.clone(), *at));
                }
                outcomes.push(Written::Deleted(gone));
            }
            Write::Session { change, event, at } => {
                let applied = match change {
                    SessionChange::Issue(row) => {
                        store.insert_session(&mut atx.tx, row).await?;
                        true
                    }
                    SessionChange::Renew { digest, expires_at } => {
                        store
                            .renew_session(&mut atx.tx, digest, *expires_at, *at)
                            .await?
                    }
                    SessionChange::Revoke { digest } => {
                        store.revoke_session(&mut atx.tx, digest, *at).await?
                    }
                };
                if applied {
                    events.push((event.clone(), *at));
                }
                outcomes.push(Written::Applied(applied));
            }
            Write::Anomaly { record, event, at } => {
                let outcome = match record {
                    AnomalyRecord::Hold(row) => {
                        store.insert_step_up(&mut atx.tx, row).await?;
                        Written::Recorded
                    }
                    AnomalyRecord::Suspend { identity, reasons } => {
                        store.suspend(&mut atx.tx, identity, reasons, *at).await?;
                        Written::Recorded
                    }
                    AnomalyRecord::Redeem { held, identity } => Written::Applied(
                        store
                            .redeem_step_up(&mut atx.tx, (held, identity), *at)
                            .await?,
                    ),
                };
                if outcome != Written::Applied(false) {
                    events.push((event.clone(), *at));
                }
                outcomes.push(outcome);
            }
        }
    }
    atx.append_many(&events).await?;
    atx.commit().await?;
    Ok(outcomes)
}

/// The outcome of one token row of a commit, its event queued when a token stands for it.
/// `again`: an earlier row of the commit drew the same token, so this one redraws.
async fn settle(
    store: &Store,
    atx: &mut AuditTx,
    (row, event): (&TokenInsert, &AuditEvent),
    (inserted, again): (&std::collections::HashSet<String>, bool),
    events: &mut Vec<(AuditEvent, i64)>,
) -> Result<Written, StoreError> {
    let result = if again {
        None
    } else if inserted.contains(&row.token) {
        Some((row.token.clone(), row.expires_at))
    } else {
        resolve_conflict(store, atx, row).await?
    };
    Ok(match result {
        Some((token, expires_at)) => {
            events.push((event.clone().resource(&token), row.created_at));
            Written::Token { token, expires_at }
        }
        None => Written::Collision,
    })
}

fn new_token(row: &TokenInsert) -> NewToken<'_> {
    NewToken {
        token: &row.token,
        token_type: &row.token_type,
        keyring: &row.keyring,
        key_version: row.key_version,
        ciphertext: &row.ciphertext,
        fingerprint: row.fingerprint.as_deref(),
        fingerprint_version: row.fingerprint_version,
        masked: &row.masked,
        metadata: row.metadata.as_deref(),
        created_at: row.created_at,
        expires_at: row.expires_at,
        aad_version: row.aad_version,
        fingerprint_namespace: row.fingerprint_namespace.as_deref(),
    }
}

/// A token that was not inserted: for a deterministic type the value's existing token
/// wins (perhaps inserted earlier in this batch), unless it expired, when it gives way;
/// for a random type the token itself collided (`None`: draw another).
async fn resolve_conflict(
    store: &Store,
    atx: &mut AuditTx,
    row: &TokenInsert,
) -> Result<Option<(String, Option<i64>)>, StoreError> {
    let Some(fp) = &row.fingerprint else {
        return Ok(None);
    };
    match store
        .token_by_fingerprint(Some(&mut atx.tx), &row.token_type, fp)
        .await?
    {
        Some(old) if old.expires_at.is_some_and(|e| e <= row.created_at) => {
            store.delete_token(&mut atx.tx, &old.token).await?;
            let inserted = store.insert_token(&mut atx.tx, &new_token(row)).await?;
            Ok(inserted.then(|| (row.token.clone(), row.expires_at)))
        }
        Some(winner) => Ok(Some((winner.token, winner.expires_at))),
        None => Ok(None),
    }
}
