//! The guard: the one place that decides whether an identity may act, charges its
//! limits, and audits a refusal. Every surface reaches the services, and the services
//! ask the guard before they act, so a new route to a service cannot skip a permission,
//! a rate or a budget:
//!
//! - [`Guard::admit`]: the request rate of the identity, at the edge, before the body is
//!   read;
//! - [`Guard::charge`]: the reveal budget, at the entry of a revealing service call,
//!   for every value the call may reveal;
//! - [`Guard::check`]: the typed permission for an action on an object (type, keyring
//!   or scope), and the suspension of an identity blocked by anomaly scoring;
//! - [`Guard::screen`]: anomaly scoring of a reveal, after its tokens were looked up and
//!   before anything is revealed (allow, alert, step-up, block; `crate::anomaly`).
//!
//! Each refusal is audited once, here, as a `denied` event with a stable reason.

mod limits;
mod permission;
mod screen;

pub use limits::{Limiter, RateLimit, Rates};
pub use permission::{Grant, GrantError, Principal, SHARED_NAMESPACE};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::anomaly::Scorer;
use crate::anomaly::webhook::Alerts;
use crate::audit::writer::{Write, Writer};
use crate::audit::{Action, AuditEvent, ObjectKind, Outcome, Verb};
use crate::error::Error;

/// A client identity's entry in the config: what it may do and how much.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct ClientPolicy {
    /// Permission patterns such as `tokenize:pan`, `detokenize:*`, `keys:read`, `*`;
    /// parsed (and refused when mistyped) as the config loads.
    #[serde(default)]
    pub permissions: Vec<Grant>,
    /// Requests per second this identity may send to `/v1` (token bucket); none: unlimited.
    #[serde(default)]
    pub rate_per_second: Option<f64>,
    /// Burst size of the token bucket (default: one second's worth).
    #[serde(default)]
    pub burst: Option<f64>,
    /// Values this identity may detokenize per hour (a security control, per node).
    #[serde(default)]
    pub detokenize_per_hour: Option<u64>,
    /// Ciphertexts this identity may decrypt per hour (per node).
    #[serde(default)]
    pub decrypt_per_hour: Option<u64>,
    /// New deterministic values this identity may create per hour (default
    /// `limits.new_values_per_hour`); `import:<type>` lifts it for migrations.
    #[serde(default)]
    pub new_values_per_hour: Option<u64>,
    /// The token namespace (default: the identity itself). Clients that must share
    /// deterministic tokens are configured into one namespace; `shared` is the namespace
    /// of every value tokenized before namespaces existed.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The lifetime of this identity's Vault-compatible session tokens (default
    /// `vault_api.token_ttl_secs`; never above `vault_api.token_max_ttl_secs`).
    #[serde(default)]
    pub vault_token_ttl_secs: Option<u64>,
    /// This identity's anomaly rules over `[anomaly]`'s (only the keys it names), e.g.
    /// `{ step_up_at = 40, cold_start = "step_up" }`.
    #[serde(default)]
    pub anomaly: Option<serde_json::Value>,
}

/// What the guard decided about one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// The identity holds no grant for it.
    Deny,
}

/// Audit reasons of the guard's refusals (stable: reports and tests read them).
pub const REASON_FORBIDDEN: &str = "forbidden";
pub const REASON_RATE_LIMITED: &str = "rate_limited";
pub const REASON_BUDGET: &str = "detokenize_budget_exhausted";
pub const REASON_NEW_VALUES: &str = "new_value_budget_exhausted";
pub const REASON_DECRYPT_BUDGET: &str = "decrypt_budget_exhausted";
pub const REASON_SUSPENDED: &str = "identity_suspended";

pub struct Guard {
    clients: HashMap<String, (Arc<[Grant]>, ClientPolicy)>,
    /// The request rate of every identity (identities without a client entry at
    /// `limits.unknown_rate_per_second`).
    rates: Rates,
    /// New deterministic values per identity and hour, unless its entry says otherwise.
    new_values_per_hour: u64,
    /// Namespaces more than one client is configured into (and `shared`).
    shared_namespaces: std::collections::HashSet<String>,
    limiter: Limiter,
    scorer: Arc<Scorer>,
    /// The anomaly webhook (never waited on).
    alerts: Alerts,
    writer: Writer,
}

impl Guard {
    pub fn new(
        clients: &BTreeMap<String, ClientPolicy>,
        unknown_rate: RateLimit,
        new_values_per_hour: u64,
        (scorer, alerts): (Arc<Scorer>, Alerts),
        writer: Writer,
    ) -> Self {
        let mut members: HashMap<String, usize> = HashMap::new();
        for (id, c) in clients {
            *members
                .entry(c.namespace.clone().unwrap_or_else(|| id.clone()))
                .or_default() += 1;
        }
        let shared_namespaces = members
            .into_iter()
            .filter(|(ns, n)| *n > 1 || ns == SHARED_NAMESPACE)
            .map(|(ns, _)| ns)
            .collect();
        let rates = Rates::new(
            clients.iter().map(|(id, c)| {
                let limit = RateLimit {
                    per_second: c.rate_per_second,
                    burst: c.burst,
                };
                (id.clone(), limit)
            }),
            unknown_rate,
        );
        let clients = clients
            .iter()
            .map(|(id, c)| (id.clone(), (Arc::from(c.permissions.clone()), c.clone())))
            .collect();
        Self {
            clients,
            rates,
            new_values_per_hour,
            shared_namespaces,
            limiter: Limiter::default(),
            scorer,
            alerts,
            writer,
        }
    }

    /// The principal for a verified identity, with its grants (none if unknown).
    pub fn principal(&self, identity: &str, origin: &str) -> Principal {
        let (grants, namespace) = match self.clients.get(identity) {
            Some((g, p)) => (g.clone(), p.namespace.as_deref().unwrap_or(identity)),
            None => (Arc::from(Vec::new()), identity),
        };
        let private = !self.shared_namespaces.contains(namespace);
        Principal::new(identity, origin, (namespace, private), grants)
    }

    /// The anomaly scorer (baselines for the report and tests; flushing at shutdown).
    pub fn anomaly(&self) -> &Arc<Scorer> {
        &self.scorer
    }

    /// The config entry of a client identity; `None` for an identity the config does not
    /// name (it holds no permission).
    pub fn client_policy(&self, identity: &str) -> Option<&ClientPolicy> {
        self.policy(identity)
    }

    fn policy(&self, identity: &str) -> Option<&ClientPolicy> {
        self.clients.get(identity).map(|(_, p)| p)
    }

    /// Takes one request from the identity's rate; a 429 (audited) when it is spent.
    /// Identities the config does not know share no bucket: each has its own, at the
    /// rate `limits.unknown_rate_per_second`.
    pub async fn admit(&self, who: &Principal, now: i64) -> Result<(), Error> {
        let Err(wait) = self.rates.take(&who.identity) else {
            return Ok(());
        };
        metrics::counter!("tokenvault_rate_limited_total").increment(1);
        let event = AuditEvent::new(&who.identity, Action::RateLimit, Outcome::Denied)
            .origin(&who.origin)
            .reason(Some(REASON_RATE_LIMITED.into()));
        self.record(event, now).await?;
        Err(Error::RateLimited {
            message: format!(
                "request rate limit of identity `{}` reached; slow down",
                who.identity
            ),
            retry_after: wait,
        })
    }

    /// Charges `n` values that `action` may reveal to the identity's budget; a 429
    /// (audited) when they do not fit. Actions that reveal nothing are free.
    pub async fn charge(
        &self,
        who: &Principal,
        action: Action,
        n: u64,
        now: i64,
    ) -> Result<(), Error> {
        // Every action that reveals cleartext has its budget; the others are free.
        let policy = self.policy(&who.identity);
        let limit = match action {
            Action::Detokenize => policy.and_then(|p| p.detokenize_per_hour),
            Action::Decrypt => policy.and_then(|p| p.decrypt_per_hour),
            _ => None,
        };
        let key = format!("{action}\u{0}{}", who.identity);
        let Err(wait) = self.limiter.charge(&key, limit, n, now) else {
            return Ok(());
        };
        metrics::counter!("tokenvault_reveal_budget_exhausted_total", "action" => action.as_str())
            .increment(1);
        if action == Action::Detokenize {
            metrics::counter!("tokenvault_detokenize_budget_exhausted_total").increment(1);
        }
        let reason = match action {
            Action::Detokenize => REASON_BUDGET,
            _ => REASON_DECRYPT_BUDGET,
        };
        let event = AuditEvent::new(&who.identity, action, Outcome::Denied)
            .origin(&who.origin)
            .reason(Some(reason.into()));
        self.record(event, now).await?;
        Err(Error::RateLimited {
            message: format!(
                "the hourly {action} budget of identity `{}` is spent",
                who.identity
            ),
            retry_after: wait,
        })
    }

    /// Reserves one new deterministic value of `token_type` in the identity's hourly
    /// budget, before the lookup that tells whether the value is new; a 429, audited as
    /// an alert, when it is spent — for a value the namespace holds as much as for a new
    /// one, since a lone 200 among 429s would point at the right guess. A hit gives the
    /// unit back ([`Guard::refund_new_value`]). Each miss is a guess an attacker could be
    /// testing, so a run of them is refused early; `import:<type>` lifts the budget.
    pub async fn charge_new_value(
        &self,
        who: &Principal,
        token_type: &str,
        now: i64,
    ) -> Result<(), Error> {
        if who.may(Verb::Import, token_type) {
            return Ok(());
        }
        self.charge_probe(who, now).await
    }

    /// [`Guard::charge_new_value`] for a lookup (Transform's `tokenized`): `import:` lifts
    /// the budget of values a client stores, never of the guesses it tests, so a lookup
    /// is charged to every client. [`Guard::refund_probe`] gives a hit's unit back.
    pub async fn charge_probe(&self, who: &Principal, now: i64) -> Result<(), Error> {
        let limit = self.new_values_limit(who);
        let Err(wait) = self
            .limiter
            .charge(&new_values_key(who), Some(limit), 1, now)
        else {
            return Ok(());
        };
        self.refuse_new_values(who, wait, now).await
    }

    pub fn refund_probe(&self, who: &Principal, now: i64) {
        self.limiter.refund(&new_values_key(who), 1, now);
    }

    /// Gives back the unit [`Guard::charge_new_value`] reserved, for a value the namespace
    /// already held.
    pub fn refund_new_value(&self, who: &Principal, token_type: &str, now: i64) {
        if !who.may(Verb::Import, token_type) {
            self.limiter.refund(&new_values_key(who), 1, now);
        }
    }

    fn new_values_limit(&self, who: &Principal) -> u64 {
        self.policy(&who.identity)
            .and_then(|p| p.new_values_per_hour)
            .unwrap_or(self.new_values_per_hour)
    }

    async fn refuse_new_values(
        &self,
        who: &Principal,
        wait: std::time::Duration,
        now: i64,
    ) -> Result<(), Error> {
        metrics::counter!("tokenvault_new_value_budget_exhausted_total").increment(1);
        tracing::warn!(
            identity = %who.identity,
            "hourly budget of new deterministic values spent: possible guessing of values"
        );
        let event = AuditEvent::new(&who.identity, Action::Tokenize, Outcome::Denied)
            .origin(&who.origin)
            .reason(Some(REASON_NEW_VALUES.into()));
        self.record(event, now).await?;
        Err(Error::RateLimited {
            message: format!(
                "the hourly budget of new values of identity `{}` is spent; bulk imports need \
                 the import permission",
                who.identity
            ),
            retry_after: wait,
        })
    }

    /// The decision for `action` on `object`, without side effects.
    pub fn decide(&self, who: &Principal, action: Action, object: &str) -> Decision {
        match action.verb() {
            Some(verb) if who.may(verb, object) => Decision::Allow,
            _ => Decision::Deny,
        }
    }

    /// Requires the permission for `action` on `object`; a refusal is audited (with
    /// `resource`, when the request named one) and answered `Forbidden`.
    pub async fn check(
        &self,
        who: &Principal,
        action: Action,
        object: &str,
        resource: Option<&str>,
        now: i64,
    ) -> Result<(), Error> {
        if self.scorer.is_suspended(&who.identity).await? {
            let event = AuditEvent::new(&who.identity, action, Outcome::Denied)
                .origin(&who.origin)
                .reason(Some(REASON_SUSPENDED.into()));
            self.record(event, now).await?;
            return Err(Error::Suspended);
        }
        match self.decide(who, action, object) {
            Decision::Allow => Ok(()),
            Decision::Deny => {
                let mut event = AuditEvent::new(&who.identity, action, Outcome::Denied)
                    .origin(&who.origin)
                    .reason(Some(REASON_FORBIDDEN.into()));
                if let Some(r) = resource {
                    event = event.resource(r);
                }
                self.record(event, now).await?;
                Err(Error::Forbidden(refusal(action, object)))
            }
        }
    }

    async fn write(&self, write: Write) -> Result<crate::audit::writer::Written, Error> {
        self.writer
            .submit(write)
            .await
            .map_err(|e| Error::Unavailable(format!("audit trail unavailable: {e}")))
    }

    /// Records events together (one job of the group commit; returns once durable).
    pub async fn record_all(&self, events: Vec<(AuditEvent, i64)>) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        self.writer
            .submit(Write::Events { events })
            .await
            .map(drop)
            .map_err(|e| Error::Unavailable(format!("audit trail unavailable: {e}")))
    }

    /// Records an event on its own (group-committed; returns once durable).
    pub async fn record(&self, event: AuditEvent, now: i64) -> Result<(), Error> {
        self.writer
            .submit(Write::Event { event, at: now })
            .await
            .map(drop)
            .map_err(|e| Error::Unavailable(format!("audit trail unavailable: {e}")))
    }
}

/// The budget of new deterministic values of an identity, apart from its reveal budget.
fn new_values_key(who: &Principal) -> String {
    format!("new-values\u{0}{}", who.identity)
}

/// The message of a refusal; it names the action, never what the caller sent.
fn refusal(action: Action, object: &str) -> String {
    let Some(verb) = action.verb() else {
        return format!("`{action}` is not available to clients");
    };
    // The object came from the caller: it is named only when it is a fixed scope word.
    match verb.object() {
        ObjectKind::TokenType => format!("not allowed to {action} this type"),
        ObjectKind::Keyring => format!("not allowed to {action} with this keyring"),
        ObjectKind::SigningKey => format!("not allowed to {action} with this signing key"),
        ObjectKind::TransitKey => format!("not allowed to {action} this key"),
        ObjectKind::Scope => format!("missing permission `{}:{object}`", verb.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_action_but_never_echo_what_the_caller_sent() {
        assert_eq!(
            refusal(Action::Tokenize, "pan"),
            "not allowed to tokenize this type"
        );
        assert_eq!(
            refusal(Action::Rewrap, "pii"),
            "not allowed to rewrap with this keyring"
        );
        assert_eq!(
            refusal(Action::KeysList, "read"),
            "missing permission `keys:read`"
        );
        assert_eq!(
            refusal(Action::KeyDestroy, "pan"),
            "`key.destroy` is not available to clients"
        );
    }
}
