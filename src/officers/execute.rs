//! Carries out an approved request: the one place that turns officers' signatures into
//! key and registry changes, for the CLI and any later approval surface.

use crate::audit::{Action, AuditEvent, AuditLog, Outcome};
use crate::keys::{KeyError, KeyManager, KeyVersion};
use crate::store::Store;

use super::{
    OfficerError, Operation, Registry, RequestDocument, check_name, parse_public_key, register,
};

/// What an approved operation left to do or reported.
#[derive(Debug)]
pub enum Executed {
    /// Done; a line for the officer.
    Done(String),
    /// A rewrap sweep, which the caller runs (it is long, resumable and shows progress).
    Rewrap { keyring: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Officer(#[from] OfficerError),
}

impl From<crate::store::StoreError> for ExecuteError {
    fn from(e: crate::store::StoreError) -> Self {
        ExecuteError::Officer(e.into())
    }
}

/// Runs an approved request as `actor` (the officers who signed it).
pub async fn execute(
    store: &Store,
    keys: &KeyManager,
    doc: &RequestDocument,
    actor: &str,
    now: i64,
) -> Result<Executed, ExecuteError> {
    let (op, reason) = (&doc.operation, doc.reason.as_deref());
    let version =
        |v: u32| KeyVersion::new(v).ok_or_else(|| KeyError::Lifecycle(format!("no version {v}")));
    let done = |s: String| Ok(Executed::Done(s));
    match op {
        Operation::Init => {
            let report = keys.init(actor, now).await?;
            if report.created.is_empty() {
                done("nothing to create".into())
            } else {
                done(format!("created {}", report.created.join(", ")))
            }
        }
        Operation::Rotate { keyring } => {
            let v = keys.rotate(keyring, actor, reason, now).await?;
            if keys.signing_algorithm(keyring).is_some() {
                return done(format!(
                    "signing key {keyring} v{v} now signs; older versions verify only."
                ));
            }
            done(format!(
                "{keyring} v{v} is now active; older versions decrypt only. \
                 Run `tokenvault keys rewrap {keyring}` to move existing records to v{v}."
            ))
        }
        Operation::RotateKek => {
            let r = keys.rotate_kek(actor, reason, now).await?;
            done(format!(
                "KEK {} is active; {} data keys re-wrapped; {} is retired.",
                r.new, r.rewrapped, r.old
            ))
        }
        Operation::Rewrap { keyring } => {
            keys.check_keyring(keyring)?;
            Ok(Executed::Rewrap {
                keyring: keyring.clone(),
            })
        }
        Operation::Retire {
            keyring,
            version: v,
        } => {
            keys.retire(keyring, version(*v)?, false, actor, reason, now)
                .await?;
            done(format!("{keyring} v{v} is retired."))
        }
        Operation::ForceRetire {
            keyring,
            version: v,
        } => {
            keys.retire(keyring, version(*v)?, true, actor, reason, now)
                .await?;
            done(format!("{keyring} v{v} is retired (forced)."))
        }
        Operation::Destroy {
            keyring,
            version: v,
        } => {
            keys.destroy(keyring, version(*v)?, actor, reason, now)
                .await?;
            done(format!("{keyring} v{v} is destroyed."))
        }
        Operation::DestroyKek { label } => {
            keys.destroy_kek(label, actor, reason, now).await?;
            done(format!("KEK {label} is destroyed."))
        }
        Operation::DestroyWithKek {
            keyring,
            version: v,
        } => {
            destroy_with_kek(keys, keyring, version(*v)?, actor, reason, now).await?;
            done(format!(
                "{keyring} v{v} is destroyed, and so is every KEK that wrapped it."
            ))
        }
        Operation::AddOfficer { name, public_key } => {
            check_name(name)?;
            let key = parse_public_key(public_key)?;
            if Registry::load(store).await?.is_active(name) {
                return Err(OfficerError::Registry(format!(
                    "officer {name} is already registered: re-key them instead"
                ))
                .into());
            }
            let mut atx = AuditLog::new(store.clone()).begin().await?;
            register(&mut atx, store, name, &key, actor, Some(doc), now).await?;
            atx.commit().await.map_err(OfficerError::from)?;
            done(format!("officer {name} is registered."))
        }
        Operation::RemoveOfficer { name } => {
            let registry = Registry::load(store).await?;
            if !registry.is_active(name) {
                return Err(OfficerError::Registry(format!("no active officer {name}")).into());
            }
            if registry.len() <= 2 {
                return Err(OfficerError::Registry(
                    "at least two officers must remain: add one before removing one".into(),
                )
                .into());
            }
            remove(store, name, actor, reason, now).await?;
            done(format!("officer {name} is removed."))
        }
        Operation::ApproveReveal { .. }
        | Operation::DenyReveal { .. }
        | Operation::Reinstate { .. } => Ok(Executed::Done(
            super::reveals::decide(store, doc, actor, now).await?,
        )),
        Operation::RekeyOfficer { name, public_key } => {
            let key = parse_public_key(public_key)?;
            if !Registry::load(store).await?.is_active(name) {
                return Err(OfficerError::Registry(format!("no active officer {name}")).into());
            }
            let mut atx = AuditLog::new(store.clone()).begin().await?;
            store
                .retire_officer_key(&mut atx.tx, name, now)
                .await
                .map_err(OfficerError::from)?;
            register(&mut atx, store, name, &key, actor, Some(doc), now).await?;
            atx.commit().await.map_err(OfficerError::from)?;
            done(format!(
                "officer {name} has a new key; the old one no longer counts."
            ))
        }
    }
}

async fn remove(
    store: &Store,
    name: &str,
    actor: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<(), OfficerError> {
    let mut atx = AuditLog::new(store.clone()).begin().await?;
    store.retire_officer_key(&mut atx.tx, name, now).await?;
    let event = AuditEvent::new(actor, Action::OfficerRemove, Outcome::Success)
        .resource(format!("officer:{name}"))
        .origin("cli")
        .reason(reason.map(str::to_owned));
    atx.append(&event, now).await?;
    atx.commit().await?;
    Ok(())
}

async fn destroy_with_kek(
    keys: &KeyManager,
    keyring: &str,
    v: KeyVersion,
    actor: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<(), KeyError> {
    // Idempotent: a run that failed after the destruction finishes the KEK steps when a
    // new request for the same version is approved.
    if !keys.is_destroyed(keyring, v).await? {
        keys.destroy(keyring, v, actor, reason, now).await?;
    }
    // Every KEK that wrapped the version during its life goes: the active one after a
    // rotation (which re-wraps every other data key), and the retired ones.
    let (created_at, destroyed_at) = keys.key_lifetime(keyring, v).await?;
    let keks = keys.kek_rows().await?;
    let doomed: Vec<(String, String)> =
        crate::keys::keks_that_may_hold(&keks, created_at, destroyed_at)
            // A pending KEK (an interrupted rotation) never wrapped this version.
            .filter(|k| k.state == "active" || k.state == "retired")
            .map(|k| (k.label.clone(), k.state.clone()))
            .collect();
    // The steps after the destruction happen after it in time too (the evidence compares
    // KEK creation with the destruction).
    let later = now + 1;
    if doomed.iter().any(|(_, state)| state == "active") {
        keys.rotate_kek(actor, reason, later).await?;
    }
    for (label, _) in doomed {
        keys.destroy_kek(&label, actor, reason, later).await?;
    }
    Ok(())
}
