//! Anomaly scoring of reveals, and the retry of a held reveal under its approval.

use crate::anomaly::approvals::holds_for;
use crate::anomaly::webhook::Alert;
use crate::anomaly::{Assessment, Sighting, Verdict};
use crate::audit::writer::{AnomalyRecord, Write, Written};
use crate::audit::{Action, AuditEvent, Outcome};
use crate::error::Error;
use crate::store::StepUpRow;

use super::{Guard, Principal};

impl Guard {
    /// Scores a reveal of `sightings` (its tokens, each found or not) for the identity
    /// and acts on the verdict, before anything is revealed: an alert is audited and
    /// counted and the reveal goes on; a step-up holds the request for an officer's
    /// approval and refuses it (`approval_required`); a block suspends the identity.
    /// Fails closed when the baseline cannot be read.
    pub async fn screen(
        &self,
        who: &Principal,
        sightings: &[Sighting<'_>],
        now: i64,
    ) -> Result<(), Error> {
        if let Some(held) = &who.approval {
            return self.redeem(who, held, sightings, now).await;
        }
        let Some(a) = self
            .scorer
            .assess(&who.identity, &who.origin, sightings, now)
            .await?
        else {
            return Ok(());
        };
        // Reasons below the alert threshold are counted too (not learned, not audited).
        for r in &a.reasons {
            metrics::counter!("tokenvault_detokenize_anomalies_total",
                "verdict" => a.verdict.as_str(), "reason" => r.as_str())
            .increment(1);
        }
        if a.verdict == Verdict::Allow {
            return Ok(());
        }
        let said = format!("{} {}", a.verdict.as_str(), a.describe());
        let event = |action, outcome| {
            AuditEvent::new(&who.identity, action, outcome)
                .origin(&who.origin)
                .reason(Some(said.clone()))
        };
        match a.verdict {
            Verdict::Allow => Ok(()),
            Verdict::Alert => {
                tracing::warn!(identity = %who.identity, assessment = %said, "unusual reveal");
                self.record(event(Action::DetokenizeAnomaly, Outcome::Success), now)
                    .await?;
                self.notify(who, &a, None, sightings.len(), now);
                Ok(())
            }
            Verdict::StepUp => {
                let id = crate::anomaly::approvals::new_held_id();
                let tokens: Vec<&str> = sightings.iter().map(|s| s.token).collect();
                let row = StepUpRow {
                    id: id.clone(),
                    identity: who.identity.clone(),
                    origin: who.origin.clone(),
                    created_at: now,
                    score: i64::from(a.score),
                    reasons: a
                        .reasons
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    tokens: serde_json::to_string(&tokens)
                        .map_err(|e| Error::Internal(e.to_string()))?,
                    token_count: tokens.len() as i64,
                    state: "pending".into(),
                    decision: None,
                    used_at: None,
                };
                let event = event(Action::DetokenizeAnomaly, Outcome::Denied).resource(&id);
                self.write(Write::Anomaly {
                    record: AnomalyRecord::Hold(Box::new(row)),
                    event,
                    at: now,
                })
                .await?;
                self.notify(who, &a, Some(&id), sightings.len(), now);
                Err(Error::ApprovalRequired {
                    request_id: id,
                    reasons: a.reasons.iter().map(|r| r.as_str()).collect(),
                })
            }
            Verdict::Block => {
                tracing::error!(identity = %who.identity, assessment = %said,
                    "reveals blocked: identity suspended until an officer lifts it");
                let record = AnomalyRecord::Suspend {
                    identity: who.identity.clone(),
                    reasons: said.clone(),
                };
                let event = event(Action::IdentitySuspend, Outcome::Success);
                self.write(Write::Anomaly {
                    record,
                    event,
                    at: now,
                })
                .await?;
                self.scorer.suspended_now(&who.identity);
                self.notify(who, &a, None, sightings.len(), now);
                Err(Error::Suspended)
            }
        }
    }

    /// Queues the webhook alert of a verdict already in the audit trail (never waits).
    fn notify(
        &self,
        who: &Principal,
        a: &Assessment,
        request_id: Option<&str>,
        tokens: usize,
        now: i64,
    ) {
        let mut raw = [0u8; 16];
        crate::crypto::random_bytes(&mut raw);
        self.alerts.send(Alert {
            id: format!("al_{}", hex::encode(raw)),
            event: Action::DetokenizeAnomaly.as_str(),
            verdict: a.verdict.as_str(),
            identity: who.identity.clone(),
            origin: who.origin.clone(),
            score: a.score,
            reasons: a.reasons.iter().map(|r| r.as_str()).collect(),
            request_id: request_id.map(str::to_owned),
            tokens,
            at: now,
        });
    }

    /// A retry under an approval: it reveals only what officers approved for this
    /// identity, within the window, once. The approval is used up in the transaction of
    /// its audit event; a retry it does not cover is refused (`approval_invalid`), audited,
    /// and leaves the approval as it was. Nothing of it is scored or learned.
    async fn redeem(
        &self,
        who: &Principal,
        held: &str,
        sightings: &[Sighting<'_>],
        now: i64,
    ) -> Result<(), Error> {
        let asked: Vec<&str> = sightings.iter().map(|s| s.token).collect();
        let row = self.scorer.store().step_up(held).await?;
        let verdict = match &row {
            None => Err("no approval with this id for this client"),
            Some(row) => holds_for(row, &who.identity, &asked, now),
        };
        let event = |outcome, why: String| {
            AuditEvent::new(&who.identity, Action::ApprovalRedeem, outcome)
                .origin(&who.origin)
                .resource(crate::anomaly::approvals::audited_id(held))
                .reason(Some(why))
        };
        let refuse = |why: &'static str| async move {
            self.record(event(Outcome::Denied, why.into()), now).await?;
            Err(Error::ApprovalInvalid(why))
        };
        if let Err(why) = verdict {
            return refuse(why).await;
        }
        let used = Write::Anomaly {
            record: AnomalyRecord::Redeem {
                held: held.to_owned(),
                identity: who.identity.clone(),
            },
            event: event(Outcome::Success, format!("{} tokens", asked.len())),
            at: now,
        };
        match self.write(used).await? {
            Written::Applied(true) => {
                self.scorer
                    .learn_approved(&who.identity, &who.origin, sightings, now)
                    .await?;
                Ok(())
            }
            _ => refuse("the approval was used or expired meanwhile").await,
        }
    }
}
