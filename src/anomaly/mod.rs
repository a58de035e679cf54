//! Detokenize anomaly scoring: every reveal request is scored against its identity's own
//! baseline before anything is revealed, and the score decides whether it is allowed,
//! allowed with an alert, held for an officer's approval (step-up), or whether the
//! identity is suspended. The guard acts on the verdict ([`crate::guard::Guard::screen`]);
//! this module only keeps the baselines and scores. The model, the defaults and their
//! reasoning: `docs/anomaly-detection.md`.

pub mod approvals;
mod baseline;
mod rules;
pub mod webhook;

pub use baseline::{Baseline, Features, Profile, RequestShares, Sighting};
pub use rules::{Assessment, ColdStart, Reason, Rules, Verdict, Weights};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};

use crate::store::{Store, StoreError};

/// `[anomaly]` in the config.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default)]
pub struct AnomalySettings {
    /// Scoring on (the default) or off for every identity.
    pub enabled: bool,
    /// How often changed baselines are written to the database (a kill loses at most
    /// this much learning; a clean stop writes them all).
    pub flush_secs: u64,
    /// Where alerts are posted (`[anomaly.webhook]`); none: the audit trail and
    /// `/metrics` only.
    pub webhook: Option<webhook::WebhookSettings>,
    /// The rules of every identity, unless its client entry overrides some.
    #[serde(flatten)]
    pub rules: Rules,
}

impl Default for AnomalySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            flush_secs: 10,
            webhook: None,
            rules: Rules::default(),
        }
    }
}

impl AnomalySettings {
    /// Refuses thresholds that cannot work and client overrides that do not parse.
    pub fn validate<'a>(
        &self,
        clients: impl Iterator<Item = (&'a String, Option<&'a serde_json::Value>)>,
    ) -> Result<(), String> {
        let check = |who: &str, r: &Rules| {
            let ordered = |low: u32, high: u32| low == 0 || high == 0 || low < high;
            if r.step_up_at == 0
                || !ordered(r.alert_at, r.step_up_at)
                || !ordered(r.step_up_at, r.block_at)
            {
                return Err(format!(
                    "{who}: anomaly thresholds need 0 < step_up_at, alert_at < step_up_at and \
                     step_up_at < block_at (0 turns alert_at or block_at off)"
                ));
            }
            if r.rate_factor < 1.0 || r.min_window == 0 {
                return Err(format!(
                    "{who}: anomaly rate_factor must be at least 1 and min_window at least 1"
                ));
            }
            Ok(())
        };
        check("[anomaly]", &self.rules)?;
        if let Some(w) = &self.webhook {
            w.validate()?;
        }
        for (id, o) in clients {
            if let Some(o) = o {
                let r = self
                    .rules
                    .with(o)
                    .map_err(|e| format!("client `{id}`: bad anomaly setting: {e}"))?;
                check(&format!("client `{id}`"), &r)?;
            }
        }
        Ok(())
    }

    /// Each client's overrides, for [`Scorer::new`].
    pub fn overrides<'a>(
        clients: impl Iterator<Item = (&'a String, Option<&'a serde_json::Value>)>,
    ) -> BTreeMap<String, serde_json::Value> {
        clients
            .filter_map(|(id, o)| o.map(|o| (id.clone(), o.clone())))
            .collect()
    }
}

const HOUR_MS: i64 = 3_600_000;

/// The baselines of every identity this node has seen, and the rules of each.
pub struct Scorer {
    enabled: bool,
    defaults: Rules,
    rules: HashMap<String, Rules>,
    store: Store,
    baselines: Mutex<HashMap<String, Baseline>>,
    dirty: Mutex<HashSet<String>>,
    /// Suspended identities as last read from the database (`None`: not read yet).
    suspended: std::sync::RwLock<Option<HashSet<String>>>,
}

impl std::fmt::Debug for Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scorer")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl Scorer {
    /// The scorer, with each client's rules (`overrides`: its `[clients.<id>.anomaly]`).
    /// A bad override was refused when the config loaded; here it would fall back to the
    /// defaults, never to no scoring.
    pub fn new(
        settings: &AnomalySettings,
        overrides: &BTreeMap<String, serde_json::Value>,
        store: Store,
    ) -> Arc<Self> {
        let rules = overrides
            .iter()
            .map(|(id, o)| {
                let r = settings.rules.with(o).unwrap_or_else(|e| {
                    tracing::error!(identity = %id, error = %e, "bad anomaly overrides");
                    settings.rules.clone()
                });
                (id.clone(), r)
            })
            .collect();
        Arc::new(Self {
            enabled: settings.enabled,
            defaults: settings.rules.clone(),
            rules,
            store,
            baselines: Mutex::default(),
            dirty: Mutex::default(),
            suspended: std::sync::RwLock::default(),
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The database the baselines, held requests and suspensions live in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn rules_of(&self, identity: &str) -> &Rules {
        self.rules.get(identity).unwrap_or(&self.defaults)
    }

    /// Scores a reveal request and records it in the identity's windows; the baseline
    /// learns from it only if nothing in it scored (or, while it is cold, if the request
    /// is allowed). `None` when scoring is off, or for a request of no tokens (it reveals
    /// nothing and teaches nothing).
    pub async fn assess(
        &self,
        identity: &str,
        origin: &str,
        sightings: &[Sighting<'_>],
        now: i64,
    ) -> Result<Option<Assessment>, StoreError> {
        if !self.enabled || sightings.is_empty() {
            return Ok(None);
        }
        let rules = self.rules_of(identity);
        loop {
            self.load(identity).await?;
            let mut all = self.lock();
            // A flush may have forgotten it between the load and this lock: read it again
            // rather than score against an empty, cold baseline.
            let Some(b) = all.get_mut(identity) else {
                continue;
            };
            let mut f = b.features(origin, sightings, now);
            f.warm = b.learned >= rules.warmup_reveals
                && b.first_seen
                    .is_some_and(|t| now - t >= rules.warmup_hours as i64 * HOUR_MS);
            let a = rules.assess(&f);
            let allowed = a.verdict <= Verdict::Alert;
            let learn = if f.warm { a.score == 0 } else { allowed };
            b.record(origin, sightings, (learn, allowed), now);
            // Marked while the baselines are locked, so a flush never forgets a change.
            self.mark(identity);
            return Ok(Some(a));
        }
    }

    /// Teaches the baseline a reveal officers approved (a held request's retry): vetted
    /// traffic, so a client held while cold (`cold_start = "step_up"`) warms up.
    pub async fn learn_approved(
        &self,
        identity: &str,
        origin: &str,
        sightings: &[Sighting<'_>],
        now: i64,
    ) -> Result<(), StoreError> {
        if !self.enabled || sightings.is_empty() {
            return Ok(());
        }
        loop {
            self.load(identity).await?;
            let mut all = self.lock();
            let Some(b) = all.get_mut(identity) else {
                continue;
            };
            b.record(origin, sightings, (true, true), now);
            self.mark(identity);
            return Ok(());
        }
    }

    fn mark(&self, identity: &str) {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(identity.to_owned());
    }

    /// Reads the identity's stored baseline the first time this node sees it. A stored
    /// baseline that does not parse fails the request closed (503) and stays as it is
    /// for an operator to look at: replacing it with a cold one would switch most rules
    /// off for a day.
    async fn load(&self, identity: &str) -> Result<(), StoreError> {
        if self.lock().contains_key(identity) {
            return Ok(());
        }
        let b = match self.store.baseline(identity).await? {
            Some(text) => serde_json::from_str::<Baseline>(&text).map_err(|e| {
                tracing::error!(identity, error = %e, "stored anomaly baseline unreadable");
                StoreError::Query(format!("the anomaly baseline of {identity} is unreadable"))
            })?,
            None => Baseline::default(),
        };
        self.lock().entry(identity.to_owned()).or_insert(b);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Baseline>> {
        self.baselines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The baseline of an identity as this node holds it (for the report and tests).
    pub async fn baseline(&self, identity: &str) -> Result<Baseline, StoreError> {
        self.load(identity).await?;
        Ok(self.lock().get(identity).cloned().unwrap_or_default())
    }

    /// Whether `identity` is suspended. The list is read from the database the first time
    /// and again at every flush, so a suspension made by another node applies here
    /// within `flush_secs`; one made here applies at once.
    pub async fn is_suspended(&self, identity: &str) -> Result<bool, StoreError> {
        if let Some(set) = &*self.suspended.read().unwrap_or_else(|p| p.into_inner()) {
            return Ok(set.contains(identity));
        }
        self.refresh_suspensions().await?;
        Ok(self
            .suspended
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|set| set.contains(identity)))
    }

    /// Re-reads the suspended identities.
    pub async fn refresh_suspensions(&self) -> Result<(), StoreError> {
        let now: HashSet<String> = self.store.suspended().await?.into_iter().collect();
        *self.suspended.write().unwrap_or_else(|p| p.into_inner()) = Some(now);
        Ok(())
    }

    /// Records a suspension this node just wrote.
    pub fn suspended_now(&self, identity: &str) {
        self.suspended
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(HashSet::new)
            .insert(identity.to_owned());
    }

    /// Writes every changed baseline to the database, then forgets the baselines this
    /// node did not change since the last flush: they are read again on next use, so
    /// what another node sharing the database learned reaches this one within
    /// `flush_secs` (an identity served by several nodes at once keeps the baseline of
    /// the node that wrote last: docs/anomaly-detection.md).
    pub async fn flush(&self, now: i64) -> Result<(), StoreError> {
        let changed: Vec<String> = self
            .dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        let mut rows = Vec::with_capacity(changed.len());
        {
            let all = self.lock();
            for id in &changed {
                if let Some(b) = all.get(id) {
                    let text = serde_json::to_string(b)
                        .map_err(|e| StoreError::Query(format!("baseline: {e}")))?;
                    rows.push((id.clone(), text));
                }
            }
        }
        if let Err(e) = self.store.save_baselines(&rows, now).await {
            self.dirty
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(changed);
            return Err(e);
        }
        let mut all = self.lock();
        let dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|id, _| dirty.contains(id));
        Ok(())
    }
}

/// Writes changed baselines every `every` until the scorer is dropped (`clock`: Unix
/// milliseconds, read at the edge that starts the task).
pub async fn flush_every(scorer: Weak<Scorer>, every: std::time::Duration, clock: fn() -> i64) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(s) = scorer.upgrade() else { return };
        if let Err(e) = s.flush(clock()).await {
            tracing::warn!(error = %e, "anomaly baselines not written; retried next time");
        }
        if let Err(e) = s.refresh_suspensions().await {
            tracing::warn!(error = %e, "suspended identities not re-read; retried next time");
        }
    }
}
