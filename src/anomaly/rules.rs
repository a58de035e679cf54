//! The rules: which features of a reveal request are unusual for its identity, what each
//! weighs, and what the total score does. Defaults and their reasoning are in
//! `docs/anomaly-detection.md`.

use serde::{Deserialize, Serialize};

use super::baseline::Features;

/// What happens while an identity's baseline is still cold (fewer than `warmup_reveals`
/// learned, or younger than `warmup_hours`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColdStart {
    /// Learn from what it does; only the rule that needs no baseline (the share of
    /// unknown tokens) scores, and alone it only alerts.
    Learn,
    /// Every reveal needs an officer's approval until the baseline is warm.
    StepUp,
}

/// The thresholds and weights of one identity (`[anomaly]`, and per client
/// `[clients.<id>.anomaly]` over it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// Scores at or above these alert (allowed, audited, counted, sent to the webhook),
    /// step up (refused until an officer approves) and block (the identity is suspended;
    /// 0: never).
    pub alert_at: u32,
    pub step_up_at: u32,
    pub block_at: u32,
    pub cold_start: ColdStart,
    pub warmup_reveals: u64,
    pub warmup_hours: u64,
    /// A minute's (an hour's, a batch's) reveals are a spike above `rate_factor` times the
    /// identity's peak of the last seven days, and never below the floor.
    pub rate_factor: f64,
    pub min_spike_per_minute: u64,
    pub min_spike_per_hour: u64,
    pub min_spike_batch: u64,
    /// The recent window's share of never-revealed tokens above the usual share by this.
    pub novel_margin: f64,
    /// The recent window's share of tokens in creation order at least this, when the
    /// usual share is below `sequential_usual_below`.
    pub sequential_share: f64,
    pub sequential_usual_below: f64,
    /// The recent window's share of unknown tokens above the usual share by this.
    pub not_found_margin: f64,
    /// An hour of the day that held less than this share of the usual reveals.
    pub off_hours_share: f64,
    /// Fewest attempts in the recent window before its shares count.
    pub min_window: usize,
    pub weights: Weights,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            alert_at: 20,
            step_up_at: 50,
            block_at: 0,
            cold_start: ColdStart::Learn,
            warmup_reveals: 200,
            warmup_hours: 24,
            rate_factor: 3.0,
            min_spike_per_minute: 60,
            min_spike_per_hour: 600,
            min_spike_batch: 50,
            novel_margin: 0.4,
            sequential_share: 0.9,
            sequential_usual_below: 0.7,
            not_found_margin: 0.2,
            off_hours_share: 0.01,
            min_window: 20,
            weights: Weights::default(),
        }
    }
}

/// The weight of each reason (0 turns it off).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Weights {
    pub rate_spike: u32,
    pub volume_spike: u32,
    pub batch_size: u32,
    pub novel_tokens: u32,
    pub sequential_scan: u32,
    pub not_found: u32,
    pub off_hours: u32,
    pub new_origin: u32,
    pub cold_start: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            rate_spike: 25,
            volume_spike: 15,
            batch_size: 15,
            novel_tokens: 20,
            sequential_scan: 25,
            not_found: 25,
            off_hours: 15,
            new_origin: 15,
            cold_start: 50,
        }
    }
}

/// Why a request scored. The strings are stable: audit events, the 403 body, metrics
/// and the report carry them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    RateSpike,
    VolumeSpike,
    BatchSize,
    NovelTokens,
    SequentialScan,
    NotFound,
    OffHours,
    NewOrigin,
    ColdStart,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::RateSpike => "rate_spike",
            Reason::VolumeSpike => "volume_spike",
            Reason::BatchSize => "batch_size",
            Reason::NovelTokens => "novel_tokens",
            Reason::SequentialScan => "sequential_scan",
            Reason::NotFound => "not_found",
            Reason::OffHours => "off_hours",
            Reason::NewOrigin => "new_origin",
            Reason::ColdStart => "cold_start",
        }
    }

    fn weight(self, w: &Weights) -> u32 {
        match self {
            Reason::RateSpike => w.rate_spike,
            Reason::VolumeSpike => w.volume_spike,
            Reason::BatchSize => w.batch_size,
            Reason::NovelTokens => w.novel_tokens,
            Reason::SequentialScan => w.sequential_scan,
            Reason::NotFound => w.not_found,
            Reason::OffHours => w.off_hours,
            Reason::NewOrigin => w.new_origin,
            Reason::ColdStart => w.cold_start,
        }
    }
}

/// What a score leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Allow,
    Alert,
    StepUp,
    Block,
}

impl Verdict {
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Alert => "alert",
            Verdict::StepUp => "step_up",
            Verdict::Block => "block",
        }
    }
}

/// The score of one request, with its reasons (those with a weight) and its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub score: u32,
    pub reasons: Vec<Reason>,
    pub verdict: Verdict,
}

impl Assessment {
    /// `score=55 reasons=new_origin,sequential_scan`: the audit event's reason text.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.reasons.iter().map(|r| r.as_str()).collect();
        format!("score={} reasons={}", self.score, names.join(","))
    }
}

impl Rules {
    /// Scores `f`.
    pub fn assess(&self, f: &Features) -> Assessment {
        let mut reasons = Vec::new();
        let spike = |now: u64, peak: u64, floor: u64| {
            now > floor.max((self.rate_factor * peak as f64).ceil() as u64)
        };
        if f.warm && spike(f.this_minute, f.peak_minute, self.min_spike_per_minute) {
            reasons.push(Reason::RateSpike);
        }
        if f.warm && spike(f.last_hour, f.peak_hour, self.min_spike_per_hour) {
            reasons.push(Reason::VolumeSpike);
        }
        // Each share is judged on the recent window and on the request's own tokens, each
        // when it holds enough attempts: a big batch cannot hide in the window's tail.
        let windowed = f.window >= self.min_window;
        let batched = f.request.distinct >= self.min_window;
        let above = |window: f64, request: f64, usual: f64, margin: f64| {
            (windowed && window >= usual + margin) || (batched && request >= usual + margin)
        };
        if above(
            f.not_found_share,
            f.request.not_found_share,
            f.usual_not_found_share,
            self.not_found_margin,
        ) {
            reasons.push(Reason::NotFound);
        }
        if f.warm {
            if spike(f.batch, f.peak_batch, self.min_spike_batch) {
                reasons.push(Reason::BatchSize);
            }
            if above(
                f.novel_share,
                f.request.novel_share,
                f.usual_novel_share,
                self.novel_margin,
            ) {
                reasons.push(Reason::NovelTokens);
            }
            let in_order = |pairs: usize, share: Option<f64>| {
                pairs >= self.min_window && share.is_some_and(|s| s >= self.sequential_share)
            };
            if (in_order(f.rising_pairs, f.rising_share)
                || in_order(f.request.rising_pairs, f.request.rising_share))
                && f.usual_rising_share < self.sequential_usual_below
            {
                reasons.push(Reason::SequentialScan);
            }
            if f.hour_share < self.off_hours_share {
                reasons.push(Reason::OffHours);
            }
            if !f.known_origin {
                reasons.push(Reason::NewOrigin);
            }
        } else if self.cold_start == ColdStart::StepUp {
            reasons.push(Reason::ColdStart);
        }
        reasons.retain(|r| r.weight(&self.weights) > 0);
        let score = reasons.iter().map(|r| r.weight(&self.weights)).sum();
        let verdict = if self.block_at > 0 && score >= self.block_at {
            Verdict::Block
        } else if self.step_up_at > 0 && score >= self.step_up_at {
            Verdict::StepUp
        } else if self.alert_at > 0 && score >= self.alert_at {
            Verdict::Alert
        } else {
            Verdict::Allow
        };
        Assessment {
            score,
            reasons,
            verdict,
        }
    }

    /// These rules with a client's overrides (`[clients.<id>.anomaly]`) on top: the keys
    /// it names replace these, the rest stay.
    pub fn with(&self, overrides: &serde_json::Value) -> Result<Rules, String> {
        let mut merged = serde_json::to_value(self).map_err(|e| e.to_string())?;
        overlay(&mut merged, overrides);
        serde_json::from_value(merged).map_err(|e| e.to_string())
    }
}

fn overlay(base: &mut serde_json::Value, top: &serde_json::Value) {
    match (base, top) {
        (serde_json::Value::Object(b), serde_json::Value::Object(t)) => {
            for (k, v) in t {
                match b.get_mut(k) {
                    Some(slot) => overlay(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, t) => *b = t.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warm() -> Features {
        Features {
            warm: true,
            this_minute: 1,
            last_hour: 10,
            peak_minute: 3,
            peak_hour: 40,
            batch: 1,
            peak_batch: 1,
            novel_share: 0.9,
            usual_novel_share: 0.9,
            rising_share: Some(0.5),
            usual_rising_share: 0.5,
            not_found_share: 0.0,
            usual_not_found_share: 0.02,
            window: 50,
            rising_pairs: 45,
            request: Default::default(),
            hour_share: 0.08,
            known_origin: true,
        }
    }

    #[test]
    fn usual_behaviour_scores_nothing() {
        let a = Rules::default().assess(&warm());
        assert_eq!((a.score, a.verdict), (0, Verdict::Allow), "{a:?}");
    }

    #[test]
    fn reasons_add_up_to_the_verdict() {
        let r = Rules::default();
        let f = Features {
            known_origin: false,
            hour_share: 0.0,
            ..warm()
        };
        let a = r.assess(&f);
        assert_eq!(a.reasons, vec![Reason::OffHours, Reason::NewOrigin]);
        assert_eq!((a.score, a.verdict), (30, Verdict::Alert));
        assert_eq!(a.describe(), "score=30 reasons=off_hours,new_origin");
        let f = Features {
            rising_share: Some(0.95),
            ..f
        };
        assert_eq!(r.assess(&f).verdict, Verdict::StepUp);
        let spike = Features {
            this_minute: 61,
            ..warm()
        };
        assert_eq!(r.assess(&spike).reasons, vec![Reason::RateSpike]);
        let at_peak = Features {
            this_minute: 60,
            ..warm()
        };
        assert_eq!(r.assess(&at_peak).reasons, vec![]);
    }

    #[test]
    fn a_cold_baseline_scores_only_what_needs_none_unless_told_to_step_up() {
        let cold = Features {
            warm: false,
            known_origin: false,
            hour_share: 0.0,
            batch: 1000,
            ..warm()
        };
        assert_eq!(Rules::default().assess(&cold).verdict, Verdict::Allow);
        let scan = Features {
            not_found_share: 0.5,
            ..cold.clone()
        };
        assert_eq!(
            Rules::default().assess(&scan).reasons,
            vec![Reason::NotFound]
        );
        let strict = Rules {
            cold_start: ColdStart::StepUp,
            ..Rules::default()
        };
        assert_eq!(strict.assess(&cold).verdict, Verdict::StepUp);
    }

    #[test]
    fn a_client_overrides_what_it_names_and_keeps_the_rest() {
        let base = Rules {
            step_up_at: 45,
            ..Rules::default()
        };
        let client = base
            .with(&serde_json::json!({"block_at": 90, "weights": {"new_origin": 0}}))
            .unwrap();
        assert_eq!(client.block_at, 90);
        assert_eq!(client.step_up_at, 45);
        assert_eq!(client.weights.new_origin, 0);
        assert_eq!(client.weights.off_hours, 15);
        assert!(base.with(&serde_json::json!({"alert_at": -1})).is_err());
        assert!(base.with(&serde_json::json!({"alrt_at": 1})).is_err());
    }

    #[test]
    fn a_batch_cannot_hide_behind_repeats_nor_raise_its_own_bar() {
        use crate::anomaly::{Baseline, Sighting};
        const HOUR: i64 = 3_600_000;
        const DAY: i64 = 24 * HOUR;
        let rules = Rules::default();
        let mut b = Baseline::default();
        // A week of refunds from one address: a reveal every 4 minutes from 08:00 to
        // 20:00, over 300 stored cards in no particular order.
        let known: Vec<String> = (0..300).map(|i| format!("tok_{i:04}")).collect();
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for day in 0..7 {
            for minute in (8 * 60..20 * 60).step_by(4) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x % 300) as usize;
                let s = [Sighting {
                    token: &known[i],
                    created_at: Some(((i * 7919) % 300) as i64),
                }];
                b.record("10.0.1.5", &s, (true, true), day * DAY + minute * 60_000);
            }
        }
        // Day seven, 10:00, the usual address: 50 never-revealed cards in creation order,
        // then one revealed card 32 times to fill the window.
        let fresh: Vec<String> = (0..50).map(|i| format!("new_{i:04}")).collect();
        let mut ask: Vec<Sighting<'_>> = fresh
            .iter()
            .enumerate()
            .map(|(i, t)| Sighting {
                token: t,
                created_at: Some(1_000 + i as i64),
            })
            .collect();
        ask.extend((0..32).map(|_| Sighting {
            token: &known[0],
            created_at: Some(0),
        }));
        let now = 7 * DAY + 10 * HOUR;
        let mut f = b.features("10.0.1.5", &ask, now);
        f.warm = true;
        let a = rules.assess(&f);
        assert!(a.verdict >= Verdict::StepUp, "{a:?}");
        assert!(a.reasons.contains(&Reason::NovelTokens), "{a:?}");
        assert!(a.reasons.contains(&Reason::SequentialScan), "{a:?}");
        // Or followed by 32 distinct revealed cards, which fill the window with
        // harmless-looking attempts: the request is judged on all of its tokens too.
        let mut ask2: Vec<Sighting<'_>> = ask[..50].to_vec();
        ask2.extend(known[..32].iter().enumerate().map(|(i, t)| Sighting {
            token: t,
            created_at: Some(((i * 7919) % 300) as i64),
        }));
        let mut f = b.features("10.0.1.5", &ask2, now);
        f.warm = true;
        assert!(f.novel_share < 0.4, "the window alone sees nothing");
        let a = rules.assess(&f);
        assert!(a.verdict >= Verdict::Alert, "{a:?}");
        assert!(a.reasons.contains(&Reason::NovelTokens), "{a:?}");
        // What today taught does not raise today's bar: a ramp of ever larger batches
        // is compared with the days before.
        b.record("10.0.1.5", &ask, (true, true), now);
        let f = b.features("10.0.1.5", &ask[..1], now + 60_000);
        assert_eq!(f.peak_batch, 1, "yesterday's peak, not this morning's");
    }
}
