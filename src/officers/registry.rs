//! The officer registry: who counts in dual control, read from the vault's database and
//! justified row by row, never taken on the database's word.
//!
//! A key counts only if (1) the audit event named by its row registered exactly this name
//! and key, and (2) either it is one of the first officers, registered together by the
//! first `init` (one contiguous block of events by `bootstrap`, before any other
//! registration), or an executed add or re-key request names it and carries enough valid
//! signatures by officers registered before it. A database writer who inserts a row, and
//! even a consistent audit event for it (the chain is unkeyed), still needs real officer
//! signatures, and the number of rows must equal the registrations the trail records, so
//! deleted rows or a forged "first init" appended to the trail do not pass. What this does
//! not catch: a writer who rolls back a row's state (a removed officer made active again)
//! or rewrites the trail's old events too; that shows as a rewritten audit trail under
//! `audit verify` against exported checkpoints.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::VerifyingKey;

use crate::audit::{Action, AuditEvent, AuditLog, AuditTx, Outcome};
use crate::store::{OfficerKeyRow, Store, StoreError};

use super::{OfficerError, Operation, RequestDocument, check_name, parse_public_key, verifies};

/// The audit resource of a registration; the registry row must match it.
fn registration_resource(name: &str, key: &VerifyingKey) -> String {
    format!("officer:{name} key:{}", STANDARD.encode(key.as_bytes()))
}

/// One justified registry row.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    key: VerifyingKey,
    audit_seq: i64,
    retired_at: Option<i64>,
    active: bool,
}

/// The active officers.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    active: Vec<(String, VerifyingKey)>,
}

impl Registry {
    pub async fn load(store: &Store) -> Result<Self, OfficerError> {
        let mut accepted: Vec<Entry> = Vec::new();
        let mut last_first: Option<i64> = None;
        let mut any_requested = false;
        let rows = store.officer_keys().await?;
        // Every registration the trail records has its row and no row is without one: rows
        // deleted, or replaced by a forged "first init" appended to the trail, do not pass.
        let recorded = store.officer_registrations().await?;
        if usize::try_from(recorded).ok() != Some(rows.len()) {
            return Err(OfficerError::RegistryMismatch {
                recorded,
                rows: rows.len(),
            });
        }
        for row in rows {
            let tampered = || OfficerError::RegistryTampered(row.name.clone());
            let key = row
                .public_key
                .as_slice()
                .try_into()
                .ok()
                .and_then(|b: [u8; 32]| VerifyingKey::from_bytes(&b).ok())
                .filter(|k| !k.is_weak())
                .ok_or_else(tampered)?;
            let event = store.audit_events(row.audit_seq - 1, 1).await?;
            let event = event
                .first()
                .filter(|e| {
                    e.seq == row.audit_seq
                        && e.action == Action::OfficerRegister.as_str()
                        && e.outcome == Outcome::Success.as_str()
                        && e.resource.as_deref() == Some(&registration_resource(&row.name, &key))
                })
                .ok_or_else(tampered)?;
            match &row.request_id {
                None => {
                    let contiguous = last_first.is_none_or(|prev| row.audit_seq == prev + 1);
                    if event.actor != "bootstrap" || any_requested || !contiguous {
                        return Err(tampered());
                    }
                    last_first = Some(row.audit_seq);
                }
                Some(id) => {
                    any_requested = true;
                    if !justified(store, &row, id, &key, &accepted).await? {
                        return Err(tampered());
                    }
                }
            }
            accepted.push(Entry {
                name: row.name.clone(),
                key,
                audit_seq: row.audit_seq,
                retired_at: row.retired_at,
                active: row.state == "active",
            });
        }
        Ok(Self {
            active: accepted
                .into_iter()
                .filter(|e| e.active)
                .map(|e| (e.name, e.key))
                .collect(),
        })
    }

    /// The officer whose active key this is.
    pub fn officer_of(&self, public_key: &[u8]) -> Option<(&str, &VerifyingKey)> {
        self.active
            .iter()
            .find(|(_, k)| k.as_bytes().as_slice() == public_key)
            .map(|(n, k)| (n.as_str(), k))
    }

    pub fn is_active(&self, name: &str) -> bool {
        self.active.iter().any(|(n, _)| n == name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.active.iter().map(|(n, _)| n.as_str())
    }

    pub fn len(&self) -> usize {
        self.active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }
}

/// Whether request `id` registered `row`'s key: an executed add or re-key of this name and
/// key, signed by enough distinct officers registered before it and not retired by then.
async fn justified(
    store: &Store,
    row: &OfficerKeyRow,
    id: &str,
    key: &VerifyingKey,
    before: &[Entry],
) -> Result<bool, OfficerError> {
    let Some(request) = store.request(id).await? else {
        return Ok(false);
    };
    if request.state != "approved" && request.state != "executed" {
        return Ok(false);
    }
    let Ok(doc) = RequestDocument::parse(&request.document) else {
        return Ok(false);
    };
    let names_this_key = match &doc.operation {
        Operation::AddOfficer { name, public_key }
        | Operation::RekeyOfficer { name, public_key } => {
            name == &row.name && parse_public_key(public_key).is_ok_and(|k| &k == key)
        }
        _ => false,
    };
    if doc.id != request.id || !names_this_key {
        return Ok(false);
    }
    let mut signers: Vec<&str> = Vec::new();
    for sig in store.signatures(None, id).await? {
        let signer = before.iter().find(|e| {
            e.key.as_bytes().as_slice() == sig.public_key.as_slice()
                && e.audit_seq < row.audit_seq
                && e.retired_at.is_none_or(|r| r >= row.registered_at)
        });
        if let Some(e) = signer
            && verifies(&doc, &e.key, &sig.signature)
            && !signers.contains(&e.name.as_str())
        {
            signers.push(&e.name);
        }
    }
    Ok(signers.len() >= doc.signatures_required as usize)
}

/// Registers `name` with `key` in an open audit transaction (the one place a registry row
/// is written): for the first officers (`request` None) and approved add or re-key
/// requests.
pub(super) async fn register(
    atx: &mut AuditTx,
    store: &Store,
    name: &str,
    key: &VerifyingKey,
    actor: &str,
    request: Option<&RequestDocument>,
    now: i64,
) -> Result<(), OfficerError> {
    let event = AuditEvent::new(actor, Action::OfficerRegister, Outcome::Success)
        .resource(registration_resource(name, key))
        .origin("cli")
        .reason(
            request
                .map(|r| format!("request {}", r.id))
                .or_else(|| Some("first init".to_owned())),
        );
    let seq = atx.append(&event, now).await?;
    store
        .insert_officer_key(
            &mut atx.tx,
            key.as_bytes(),
            name,
            now,
            seq,
            request.map(|r| r.id.as_str()),
        )
        .await
        .map_err(|e| match e {
            StoreError::Rejected(_) => OfficerError::Registry(
                "this public key or officer name is already registered (a key can be registered once, ever): every officer needs a key of their own".into(),
            ),
            other => other.into(),
        })?;
    Ok(())
}

/// The first officers, registered by the first `init` (trust on first use: whoever sets
/// up the vault names them, and the audit trail and report show who they are).
pub async fn bootstrap(
    store: &Store,
    officers: &[(String, String)],
    now: i64,
) -> Result<Vec<String>, OfficerError> {
    let mut parsed: Vec<(String, VerifyingKey)> = Vec::new();
    for (name, key) in officers {
        check_name(name)?;
        let key = parse_public_key(key)?;
        if parsed.iter().any(|(n, _)| n == name) {
            return Err(OfficerError::Registry(format!(
                "officer {name} is named twice"
            )));
        }
        if parsed.iter().any(|(_, k)| k == &key) {
            return Err(OfficerError::Registry(
                "two officers were given the same public key: every officer needs a key of their own".into(),
            ));
        }
        parsed.push((name.clone(), key));
    }
    if parsed.len() < 2 {
        return Err(OfficerError::NoOfficers);
    }
    // Checked under the audit-head lock, so two first inits cannot both pass. Once
    // officers were registered, never again: not when the registry rows are gone (a
    // database writer deleting them) while the audit trail remembers them.
    let mut atx = AuditLog::new(store.clone()).begin().await?;
    if !store.officer_keys().await?.is_empty() || store.officer_registrations().await? > 0 {
        return Err(OfficerError::AlreadyBootstrapped);
    }
    for (name, key) in &parsed {
        register(&mut atx, store, name, key, "bootstrap", None, now).await?;
    }
    atx.commit().await?;
    Ok(parsed.into_iter().map(|(n, _)| n).collect())
}
