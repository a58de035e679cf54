//! A request's life: created on the vault host (inert until signed), signed by officers
//! wherever their keys are, approved once enough distinct officers signed, then executed
//! and closed. Every step is audited, refused steps too.

use crate::audit::{Action, AuditEvent, AuditLog, Outcome};
use crate::store::{RequestRow, SignatureRow, Store};

use super::{OfficerError, Operation, Registry, RequestDocument, SignatureFile, verifies};

/// Where a request stands after a signature.
#[derive(Debug)]
pub enum Progress {
    /// Enough officers signed: run the operation as `actor` (the signers), then `finish`.
    Ready { doc: RequestDocument, actor: String },
    /// More signatures are needed.
    Waiting {
        doc: RequestDocument,
        signed_by: Vec<String>,
    },
}

/// Records a new request; nothing happens until officers sign it.
pub async fn create(
    store: &Store,
    op: Operation,
    reason: Option<&str>,
    ttl_ms: i64,
    now: i64,
) -> Result<RequestDocument, OfficerError> {
    if let Some(reason) = reason {
        super::request::check_reason(reason)?;
    }
    let doc = RequestDocument::new(
        super::request::new_request_id(),
        op,
        reason.map(str::to_owned),
        now,
        ttl_ms,
    );
    let row = RequestRow {
        id: doc.id.clone(),
        document: doc.canonical(),
        operation: doc.operation.name().to_owned(),
        required: i64::from(doc.signatures_required),
        created_at: doc.created_at,
        expires_at: doc.expires_at,
        state: "pending".into(),
        decided_at: None,
    };
    let mut atx = AuditLog::new(store.clone()).begin().await?;
    store.insert_request(&mut atx.tx, &row).await?;
    // Creating a request proves nothing about who asked; the signers are the actors.
    let event = AuditEvent::new("cli", Action::OfficerRequest, Outcome::Success)
        .resource(format!("{} {}", doc.id, doc.operation))
        .origin("cli")
        .reason(doc.reason.clone());
    atx.append(&event, now).await?;
    atx.commit().await?;
    Ok(doc)
}

/// Checks a signature and records it; says whether the request can now run. A refused
/// signature is audited, under the officer's name when the key is a registered one.
pub async fn add_signature(
    store: &Store,
    sig: &SignatureFile,
    now: i64,
) -> Result<Progress, OfficerError> {
    let audit = AuditLog::new(store.clone());
    let mut signer = None;
    match accept(store, sig, now, &mut signer).await {
        Ok(progress) => Ok(progress),
        Err(e) => {
            // Named only when their signature verified: a file carrying someone's public
            // key proves nothing about them.
            let actor = signer.map_or_else(|| "cli".to_owned(), |n| format!("officer:{n}"));
            let event = AuditEvent::new(actor, Action::OfficerApprove, Outcome::Denied)
                .resource(sig.request_id.chars().take(64).collect::<String>())
                .origin("cli")
                .reason(Some(e.to_string()));
            audit.record(&event, now).await?;
            Err(e)
        }
    }
}

async fn accept(
    store: &Store,
    sig: &SignatureFile,
    now: i64,
    signer: &mut Option<String>,
) -> Result<Progress, OfficerError> {
    let id = sig.request_id.as_str();
    let row = store
        .request(id)
        .await?
        .ok_or_else(|| OfficerError::NoRequest(id.chars().take(64).collect()))?;
    let doc = RequestDocument::parse(&row.document)?;
    if doc.id != row.id {
        return Err(OfficerError::WrongRequest(doc.id, row.id));
    }
    if row.state != "pending" {
        return Err(OfficerError::NotPending(row.id, row.state));
    }
    // The signed expiry decides, whatever the row's column says.
    if now >= row.expires_at || now >= doc.expires_at {
        return Err(OfficerError::Expired(row.id));
    }
    let public_key = sig.public_key_bytes()?;
    let signature = sig.signature_bytes()?;
    let audit = AuditLog::new(store.clone());
    let mut atx = audit.begin().await?;
    // Read under the audit-head lock: a removal or re-key that committed before it is
    // seen, and none can commit until this signature is counted.
    let registry = Registry::load(store).await?;
    let (name, key) = registry
        .officer_of(&public_key)
        .ok_or(OfficerError::NotAnOfficer)?;
    if !verifies(&doc, key, &signature) {
        return Err(OfficerError::BadSignature(row.id));
    }
    *signer = Some(name.to_owned());
    let fresh = SignatureRow {
        public_key,
        officer: name.to_owned(),
        signature,
        signed_at: now,
    };
    if !store.insert_signature(&mut atx.tx, &row.id, &fresh).await? {
        return Err(OfficerError::AlreadySigned(name.to_owned(), row.id));
    }
    // Count distinct officers whose signatures verify under their current registered key
    // (an officer removed or re-keyed since signing no longer counts), read inside the
    // audit transaction so that concurrent signers are serialized.
    let signed_by = counted_signers(
        &registry,
        &doc,
        &store.signatures(Some(&mut atx.tx), &row.id).await?,
    );
    let ready = signed_by.len() >= doc.signatures_required as usize;
    if ready
        && !store
            .decide_request(&mut atx.tx, &row.id, "pending", "approved", now)
            .await?
    {
        return Err(OfficerError::NotPending(row.id, "decided meanwhile".into()));
    }
    let event = AuditEvent::new(
        format!("officer:{name}"),
        Action::OfficerApprove,
        Outcome::Success,
    )
    .resource(format!("{} {}", doc.id, doc.operation))
    .origin("cli")
    .reason(Some(format!(
        "signature {} of {}",
        signed_by.len(),
        doc.signatures_required
    )));
    atx.append(&event, now).await?;
    atx.commit().await?;
    Ok(if ready {
        Progress::Ready {
            actor: signed_by
                .iter()
                .map(|n| format!("officer:{n}"))
                .collect::<Vec<_>>()
                .join("+"),
            doc,
        }
    } else {
        Progress::Waiting { doc, signed_by }
    })
}

/// The distinct registered officers whose stored signatures verify, in signing order.
fn counted_signers(
    registry: &Registry,
    doc: &RequestDocument,
    sigs: &[SignatureRow],
) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for s in sigs {
        if let Some((name, key)) = registry.officer_of(&s.public_key)
            && name == s.officer
            && verifies(doc, key, &s.signature)
            && !names.iter().any(|n| n == name)
        {
            names.push(name.to_owned());
        }
    }
    names
}

/// Who has signed a request so far (for `keys requests`), re-verified against `registry`.
pub async fn pending_signers(
    store: &Store,
    registry: &Registry,
    row: &RequestRow,
) -> Result<Vec<String>, OfficerError> {
    let doc = RequestDocument::parse(&row.document)?;
    Ok(counted_signers(
        registry,
        &doc,
        &store.signatures(None, &row.id).await?,
    ))
}

/// Marks an approved request executed (or failed) once the operation ran.
pub async fn finish(store: &Store, id: &str, ok: bool, now: i64) -> Result<(), OfficerError> {
    let mut tx = store.begin().await?;
    store
        .decide_request(
            &mut tx,
            id,
            "approved",
            if ok { "executed" } else { "failed" },
            now,
        )
        .await?;
    tx.commit().await.map_err(crate::store::StoreError::from)?;
    Ok(())
}
