//! Officers' decisions about anomaly scoring's verdicts: approving or denying a held
//! reveal, and lifting a suspension. Each is a signed request like a key operation
//! ([`super::Operation`]); here it takes effect, with its audit event in the same
//! transaction.

use crate::anomaly::approvals::{MAX_VALID_FOR_SECS, RevealScope};
use crate::audit::{Action, AuditEvent, AuditLog, Outcome};
use crate::store::{Decision, Store};

use super::{OfficerError, Operation, RequestDocument};

/// Carries out an approved `approve-reveal`, `deny-reveal` or `reinstate` as `actor`
/// (the signers); a line for the officer.
pub async fn decide(
    store: &Store,
    doc: &RequestDocument,
    actor: &str,
    now: i64,
) -> Result<String, OfficerError> {
    let reason = doc.reason.clone().unwrap_or_default();
    let refuse = |s: String| Err(OfficerError::Approval(s));
    let (held, identity, decision) = match &doc.operation {
        Operation::Reinstate { identity, since } => {
            let mut atx = AuditLog::new(store.clone()).begin().await?;
            if !store.reinstate(&mut atx.tx, identity, *since).await? {
                return refuse(format!(
                    "client {identity} has no suspension of {}: it was lifted, or this is \
                     another one (propose a new reinstatement)",
                    crate::keys::rfc3339(*since)
                ));
            }
            let event = AuditEvent::new(actor, Action::IdentityReinstate, Outcome::Success)
                .resource(identity.as_str())
                .origin("cli")
                .reason(doc.reason.clone());
            atx.append(&event, now).await?;
            atx.commit().await?;
            return Ok(format!(
                "client {identity} is reinstated (a running server sees it within its \
                 anomaly flush interval)."
            ));
        }
        Operation::ApproveReveal {
            held,
            identity,
            scope,
            valid_for_secs,
        } => {
            if *valid_for_secs == 0 || *valid_for_secs > MAX_VALID_FOR_SECS {
                return refuse(format!(
                    "an approval is valid for 1 to {MAX_VALID_FOR_SECS} seconds"
                ));
            }
            let decision = Decision {
                scope_tokens: match scope {
                    RevealScope::Tokens(t) => Some(
                        serde_json::to_string(t)
                            .map_err(|e| OfficerError::Approval(e.to_string()))?,
                    ),
                    RevealScope::Count(_) => None,
                },
                scope_count: i64::from(scope.count()),
                valid_until: now + i64::from(*valid_for_secs) * 1000,
                decided_by: actor.to_owned(),
                decided_at: now,
                reason: reason.clone(),
            };
            (held, identity, Some((scope, decision)))
        }
        Operation::DenyReveal { held, identity } => (held, identity, None),
        other => return refuse(format!("{other} is not a decision about a reveal")),
    };
    let Some(row) = store.step_up(held).await? else {
        return refuse(format!("no held request {held}"));
    };
    if row.identity != *identity {
        return refuse(format!("held request {held} is not client {identity}'s"));
    }
    if row.state != "pending" {
        return refuse(format!(
            "held request {held} is {}; only a pending one can be decided",
            row.state
        ));
    }
    let (state, action, decision, said) = match decision {
        Some((scope, d)) => {
            scope.check_against(&row).map_err(OfficerError::Approval)?;
            let said = format!(
                "client {identity} may retry held request {held} once, until {}, for {}",
                crate::keys::rfc3339(d.valid_until),
                scope.describe()
            );
            ("approved", Action::ApprovalGrant, d, said)
        }
        None => {
            let d = Decision {
                scope_tokens: None,
                scope_count: 0,
                valid_until: 0,
                decided_by: actor.to_owned(),
                decided_at: now,
                reason: reason.clone(),
            };
            let said = format!("held request {held} of client {identity} is denied");
            ("denied", Action::ApprovalDeny, d, said)
        }
    };
    let mut atx = AuditLog::new(store.clone()).begin().await?;
    if !store
        .decide_step_up(&mut atx.tx, (held, identity), state, &decision)
        .await?
    {
        return refuse(format!("held request {held} was decided meanwhile"));
    }
    let event = AuditEvent::new(actor, action, Outcome::Success)
        .resource(held.as_str())
        .origin("cli")
        .reason(Some(format!("{said}: {reason}")));
    atx.append(&event, now).await?;
    atx.commit().await?;
    Ok(format!("{said}."))
}
