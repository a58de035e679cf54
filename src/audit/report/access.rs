//! The report's access section (PCI DSS 10.2.1): per client, how many values it had
//! revealed, by action, and how many of its requests were denied or failed. The
//! revealing actions come from the audit vocabulary, so a new path that reveals
//! cleartext gets its own column without a change here.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::audit::Action;

#[derive(Debug, Serialize, Default)]
pub struct ClientAccess {
    pub client: String,
    /// Successful events per revealing action (`detokenize`, `decrypt`, …), every
    /// revealing action present, zero or not.
    #[serde(flatten)]
    pub revealed: BTreeMap<&'static str, i64>,
    pub denied: i64,
    pub failed: i64,
}

/// The column heads: the client, one per revealing action, denied, failed.
pub fn columns() -> Vec<&'static str> {
    std::iter::once("client")
        .chain(Action::revealing().map(Action::as_str))
        .chain(["denied", "failed"])
        .collect()
}

impl ClientAccess {
    fn new(client: String) -> Self {
        Self {
            client,
            revealed: Action::revealing().map(|a| (a.as_str(), 0)).collect(),
            denied: 0,
            failed: 0,
        }
    }

    /// Values revealed to this client by every revealing action together.
    pub fn revealed_total(&self) -> i64 {
        self.revealed.values().sum()
    }

    pub fn cells(&self) -> Vec<String> {
        std::iter::once(self.client.clone())
            .chain(Action::revealing().map(|a| {
                self.revealed
                    .get(a.as_str())
                    .copied()
                    .unwrap_or(0)
                    .to_string()
            }))
            .chain([self.denied.to_string(), self.failed.to_string()])
            .collect()
    }
}

/// Folds event counts `(actor, action, outcome, n)` into one row per client. Events of
/// the vault itself, the CLI and officers are not client access.
pub fn tally(counts: Vec<(String, String, String, i64)>) -> Vec<ClientAccess> {
    let mut access: BTreeMap<String, ClientAccess> = BTreeMap::new();
    for (actor, action, outcome, n) in counts {
        if actor == "system" || actor.starts_with("cli:") || actor.starts_with("officer:") {
            continue;
        }
        let a = access
            .entry(actor.clone())
            .or_insert_with(|| ClientAccess::new(actor));
        let action = Action::parse(&action);
        match outcome.as_str() {
            "denied" => a.denied += n,
            "failure" => a.failed += n,
            "success" => {
                if let Some(action) = action.filter(|a| a.reveals_cleartext())
                    && let Some(count) = a.revealed.get_mut(action.as_str())
                {
                    *count += n;
                }
            }
            _ => {}
        }
    }
    access
        .into_values()
        .filter(|a| a.revealed_total() + a.denied + a.failed > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(actor: &str, action: Action, outcome: &str, n: i64) -> (String, String, String, i64) {
        (actor.into(), action.as_str().into(), outcome.into(), n)
    }

    #[test]
    fn every_action_that_reveals_cleartext_is_counted() {
        let counts = Action::ALL
            .into_iter()
            .map(|a| row("svc", a, "success", 1))
            .collect();
        let access = tally(counts);
        let svc = &access[0];
        let revealing: Vec<Action> = Action::revealing().collect();
        assert_eq!(svc.revealed_total(), revealing.len() as i64);
        for a in revealing {
            assert_eq!(svc.revealed[a.as_str()], 1, "{a} is not counted");
            assert!(columns().contains(&a.as_str()), "{a} has no column");
        }
        assert_eq!(svc.cells().len(), columns().len());
    }

    #[test]
    fn non_revealing_success_system_actors_and_outcomes_are_kept_apart() {
        let access = tally(vec![
            row("svc", Action::Tokenize, "success", 7),
            row("svc", Action::Detokenize, "denied", 2),
            row("svc", Action::Decrypt, "failure", 3),
            row("system", Action::Detokenize, "success", 9),
            row("officer:alice", Action::Decrypt, "success", 9),
            row("quiet", Action::Tokenize, "success", 4),
        ]);
        assert_eq!(access.len(), 1, "only clients with access or refusals");
        let svc = &access[0];
        assert_eq!((svc.revealed_total(), svc.denied, svc.failed), (0, 2, 3));
        let json = serde_json::to_value(svc).unwrap();
        assert_eq!(json["detokenize"], 0);
        assert_eq!(json["decrypt"], 0);
        assert_eq!(json["denied"], 2);
    }
}
