//! The report's anomaly section (PCI DSS 10.4.1, 10.7, 12.10.5: alerts from security
//! monitoring and the response to them): per client, the reveals that scored as
//! unusual, were held for approval or blocked; each held request with what officers
//! decided, who, and whether the client used it; and what each baseline has learned.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::anomaly::{Baseline, Profile};
use crate::audit::Action;
use crate::keys::rfc3339;
use crate::store::{StepUpRow, Store, StoreError};

#[derive(Debug, Serialize, Default)]
pub struct AnomalySection {
    pub clients: Vec<ClientAnomalies>,
    pub held: Vec<HeldEntry>,
    pub baselines: Vec<BaselineEntry>,
}

#[derive(Debug, Serialize, Default)]
pub struct ClientAnomalies {
    pub client: String,
    /// Reveals allowed with an alert.
    pub alerts: i64,
    /// Reveals held for an officer's approval, and how those were decided.
    pub step_ups: i64,
    pub approved: i64,
    pub denied: i64,
    pub used: i64,
    /// Block verdicts (the client suspended).
    pub blocks: i64,
    /// Suspended when the report was made.
    pub suspended: bool,
}

#[derive(Debug, Serialize)]
pub struct HeldEntry {
    pub id: String,
    pub client: String,
    pub origin: String,
    pub at: String,
    pub score: i64,
    pub reasons: String,
    pub tokens: i64,
    pub state: String,
    pub decided_by: String,
    pub decided_at: String,
    /// What was approved: `2 named tokens until …`, or empty.
    pub scope: String,
    pub reason: String,
    pub used_at: String,
}

#[derive(Debug, Serialize)]
pub struct BaselineEntry {
    pub client: String,
    pub updated_at: String,
    #[serde(flatten)]
    pub profile: Profile,
}

pub const CLIENT_COLUMNS: [&str; 8] = [
    "client",
    "alerts",
    "step-ups",
    "approved",
    "denied",
    "used",
    "blocks",
    "suspended now",
];

pub const HELD_COLUMNS: [&str; 11] = [
    "held request",
    "client",
    "from",
    "at",
    "score (reasons)",
    "tokens",
    "state",
    "decided by",
    "approved scope",
    "officers' reason",
    "used",
];

pub const BASELINE_COLUMNS: [&str; 8] = [
    "client",
    "reveals learned",
    "since",
    "peak / minute",
    "peak / hour",
    "peak batch",
    "usual new-token share",
    "origins",
];

impl ClientAnomalies {
    pub fn cells(&self) -> Vec<String> {
        let n = [
            self.alerts,
            self.step_ups,
            self.approved,
            self.denied,
            self.used,
            self.blocks,
        ];
        std::iter::once(self.client.clone())
            .chain(n.iter().map(i64::to_string))
            .chain(std::iter::once(
                if self.suspended { "yes" } else { "no" }.to_owned(),
            ))
            .collect()
    }

    /// Verdicts above allow, together (the chart's bar).
    pub fn flagged(&self) -> i64 {
        self.alerts + self.step_ups + self.blocks
    }
}

impl HeldEntry {
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.client.clone(),
            self.origin.clone(),
            self.at.clone(),
            format!("{} ({})", self.score, self.reasons),
            self.tokens.to_string(),
            self.state.clone(),
            self.decided_by.clone(),
            self.scope.clone(),
            self.reason.clone(),
            self.used_at.clone(),
        ]
    }
}

impl BaselineEntry {
    pub fn cells(&self) -> Vec<String> {
        let p = &self.profile;
        vec![
            self.client.clone(),
            p.learned.to_string(),
            p.first_seen.map(rfc3339).unwrap_or_default(),
            p.peak_minute.to_string(),
            p.peak_hour.to_string(),
            p.peak_batch.to_string(),
            format!("{:.0} %", p.usual_novel_share * 100.0),
            p.origins.to_string(),
        ]
    }
}

fn held_entry(r: StepUpRow) -> HeldEntry {
    let scope = crate::anomaly::approvals::scope_text(&r);
    let (decided_by, decided_at, reason) = r.decision.as_ref().map_or_else(Default::default, |d| {
        (
            d.decided_by.clone(),
            rfc3339(d.decided_at),
            d.reason.clone(),
        )
    });
    HeldEntry {
        id: r.id,
        client: r.identity,
        origin: r.origin,
        at: rfc3339(r.created_at),
        score: r.score,
        reasons: r.reasons,
        tokens: r.token_count,
        state: r.state,
        decided_by,
        decided_at,
        scope,
        reason,
        used_at: r.used_at.map(rfc3339).unwrap_or_default(),
    }
}

/// Gathers the section for [from, to) from the audit counts `(actor, action, outcome, n)`
/// of the period, the held requests and the stored baselines.
pub async fn collect(
    store: &Store,
    counts: &[(String, String, String, i64)],
    (from, to): (i64, i64),
) -> Result<AnomalySection, StoreError> {
    let mut clients: BTreeMap<String, ClientAnomalies> = BTreeMap::new();
    for (actor, action, outcome, n) in counts {
        match (Action::parse(action), outcome.as_str()) {
            (Some(Action::DetokenizeAnomaly), "success") => at(&mut clients, actor).alerts += n,
            (Some(Action::IdentitySuspend), "success") => at(&mut clients, actor).blocks += n,
            _ => {}
        }
    }
    let held = store.step_ups_between(from, to).await?;
    for r in &held {
        let c = at(&mut clients, &r.identity);
        c.step_ups += 1;
        match r.state.as_str() {
            "approved" => c.approved += 1,
            "used" => {
                c.approved += 1;
                c.used += 1;
            }
            "denied" => c.denied += 1,
            _ => {}
        }
    }
    for (identity, _, _) in store.suspensions().await? {
        at(&mut clients, &identity).suspended = true;
    }
    let baselines = store
        .baselines()
        .await?
        .into_iter()
        .filter_map(|(client, state, updated_at)| {
            let b: Baseline = serde_json::from_str(&state).ok()?;
            Some(BaselineEntry {
                client,
                updated_at: rfc3339(updated_at),
                profile: b.profile(),
            })
        })
        .collect();
    Ok(AnomalySection {
        clients: clients.into_values().collect(),
        held: held.into_iter().map(held_entry).collect(),
        baselines,
    })
}

fn at<'a>(clients: &'a mut BTreeMap<String, ClientAnomalies>, id: &str) -> &'a mut ClientAnomalies {
    clients
        .entry(id.to_owned())
        .or_insert_with(|| ClientAnomalies {
            client: id.to_owned(),
            ..Default::default()
        })
}
