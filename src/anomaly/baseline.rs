//! One identity's reveal behaviour: short windows of what it just did (every attempt,
//! refused ones too) and long baselines of what it usually does (learned only from
//! requests that scored below the alert threshold, so an attack does not teach the
//! vault that it is normal). Serializable, so it survives a restart; a few tens of KB
//! per identity, most of it the filter of tokens it has revealed.

use std::collections::{BTreeMap, VecDeque};

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// Days the peaks (per minute, per hour, per batch) are remembered.
const PEAK_DAYS: usize = 7;
/// Reveal attempts the recent window holds.
pub const WINDOW: usize = 32;
/// Origins remembered per identity (the least recently seen goes first).
const MAX_ORIGINS: usize = 64;
/// Bits of one generation of the seen-token filter, and tokens per generation before
/// the older generation is dropped (false positives stay under about 1 %).
const FILTER_BITS: usize = 1 << 17;
const FILTER_CAPACITY: u64 = 10_000;
/// Weight of one request in the long-run shares (an exponential moving average).
const SHARE_ALPHA: f64 = 0.02;
/// The hour-of-day histogram loses this share of its weight per day.
const HOURS_DECAY_PER_DAY: f64 = 0.9;

/// What one token of a reveal request turned out to be.
#[derive(Debug, Clone, Copy)]
pub struct Sighting<'a> {
    pub token: &'a str,
    /// The record's creation time; `None`: no such token (or not the caller's).
    pub created_at: Option<i64>,
}

/// One attempt in the recent window.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Attempt {
    /// The token was never revealed to this identity before.
    novel: bool,
    found: bool,
    /// Later than the previous found token of this identity (`None`: not comparable).
    rising: Option<bool>,
}

/// Counts per time slot in a ring (per minute over an hour).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Ring {
    /// (slot number, count), oldest first.
    slots: VecDeque<(i64, u64)>,
}

impl Ring {
    fn add(&mut self, slot: i64, n: u64, keep: i64) {
        match self.slots.back_mut() {
            Some((s, c)) if *s == slot => *c += n,
            _ => self.slots.push_back((slot, n)),
        }
        while self.slots.front().is_some_and(|(s, _)| *s <= slot - keep) {
            self.slots.pop_front();
        }
    }

    fn at(&self, slot: i64) -> u64 {
        self.slots
            .iter()
            .rev()
            .find(|(s, _)| *s == slot)
            .map_or(0, |(_, c)| *c)
    }

    fn since(&self, slot: i64) -> u64 {
        self.slots
            .iter()
            .filter(|(s, _)| *s >= slot)
            .map(|(_, c)| c)
            .sum()
    }
}

/// The largest value seen per day, for the last [`PEAK_DAYS`] days.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DailyPeak {
    days: VecDeque<(i64, u64)>,
}

impl DailyPeak {
    fn record(&mut self, day: i64, v: u64) {
        match self.days.back_mut() {
            Some((d, m)) if *d == day => *m = (*m).max(v),
            _ => self.days.push_back((day, v)),
        }
        while self
            .days
            .front()
            .is_some_and(|(d, _)| *d <= day - PEAK_DAYS as i64)
        {
            self.days.pop_front();
        }
    }

    fn max(&self) -> u64 {
        self.days.iter().map(|(_, m)| *m).max().unwrap_or(0)
    }

    /// The peak of the days before `day`: what today is compared with, so requests of
    /// today cannot raise their own bar (a ramp of ever larger batches).
    fn max_before(&self, day: i64) -> u64 {
        self.days
            .iter()
            .filter(|(d, _)| *d < day)
            .map(|(_, m)| *m)
            .max()
            .unwrap_or(0)
    }
}

/// The request's tokens once each (the first sighting of each): a token asked twice in
/// one request is one attempt, so repeats cannot dilute the shares.
fn distinct<'a>(sightings: &[Sighting<'a>]) -> Vec<Sighting<'a>> {
    let mut seen = std::collections::HashSet::with_capacity(sightings.len());
    sightings
        .iter()
        .filter(|s| seen.insert(s.token))
        .copied()
        .collect()
}

/// Shares of a run of attempts: never revealed, unknown, and later than the previous
/// found token (with the number of comparable pairs).
fn shares(attempts: &[Attempt]) -> (f64, f64, Option<f64>, usize) {
    let n = attempts.len().max(1) as f64;
    let novel = attempts.iter().filter(|a| a.novel).count() as f64 / n;
    let not_found = attempts.iter().filter(|a| !a.found).count() as f64 / n;
    let rising: Vec<bool> = attempts.iter().filter_map(|a| a.rising).collect();
    let rising_share = (!rising.is_empty())
        .then(|| rising.iter().filter(|r| **r).count() as f64 / rising.len() as f64);
    (novel, not_found, rising_share, rising.len())
}

/// Tokens revealed to the identity: two generations of a Bloom filter, so the memory is
/// bounded and a token revealed within about the last 10,000 to 20,000 reveals counts as
/// seen. Holds SHA-256 bit positions of tokens, never a value.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SeenFilter {
    #[serde(with = "bits")]
    current: Vec<u8>,
    #[serde(with = "bits")]
    previous: Vec<u8>,
    in_current: u64,
}

impl Default for SeenFilter {
    fn default() -> Self {
        Self {
            current: vec![0; FILTER_BITS / 8],
            previous: vec![0; FILTER_BITS / 8],
            in_current: 0,
        }
    }
}

impl SeenFilter {
    fn positions(token: &str) -> [usize; 3] {
        let d = Sha256::digest(token.as_bytes());
        let at = |i: usize| {
            u32::from_le_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]) as usize % FILTER_BITS
        };
        [at(0), at(4), at(8)]
    }

    fn holds(bits: &[u8], p: &[usize; 3]) -> bool {
        p.iter()
            .all(|&i| bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
    }

    fn contains(&self, token: &str) -> bool {
        let p = Self::positions(token);
        Self::holds(&self.current, &p) || Self::holds(&self.previous, &p)
    }

    fn insert(&mut self, token: &str) {
        let p = Self::positions(token);
        if Self::holds(&self.current, &p) {
            return;
        }
        if self.in_current >= FILTER_CAPACITY {
            self.previous = std::mem::replace(&mut self.current, vec![0; FILTER_BITS / 8]);
            self.in_current = 0;
        }
        for i in p {
            if let Some(b) = self.current.get_mut(i / 8) {
                *b |= 1 << (i % 8);
            }
        }
        self.in_current += 1;
    }
}

mod bits {
    use super::*;

    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD_NO_PAD.encode(v))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        let v = STANDARD_NO_PAD
            .decode(text)
            .map_err(serde::de::Error::custom)?;
        if v.len() != FILTER_BITS / 8 {
            return Err(serde::de::Error::custom("seen filter of the wrong size"));
        }
        Ok(v)
    }
}

/// What the rules look at, computed for one request before anything is revealed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Features {
    /// Whether the baseline has seen enough to compare with (`warmup_*`).
    pub warm: bool,
    /// Attempts in the current minute and in the last 60 minutes, this request included.
    pub this_minute: u64,
    pub last_hour: u64,
    pub peak_minute: u64,
    pub peak_hour: u64,
    pub batch: u64,
    pub peak_batch: u64,
    /// Shares over the recent window (this request included) and their long-run usual.
    pub novel_share: f64,
    pub usual_novel_share: f64,
    pub rising_share: Option<f64>,
    pub usual_rising_share: f64,
    pub not_found_share: f64,
    pub usual_not_found_share: f64,
    /// Attempts in the window (the shares' sample size), and comparable pairs.
    pub window: usize,
    pub rising_pairs: usize,
    /// The same shares over this request's own tokens (each once): a large batch is
    /// judged on all of its tokens, not only on the last ones that fit the window.
    pub request: RequestShares,
    /// The share of the identity's usual reveals that fall in this hour of the day.
    pub hour_share: f64,
    pub known_origin: bool,
}

/// Shares over one request's distinct tokens.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestShares {
    pub distinct: usize,
    pub novel_share: f64,
    pub not_found_share: f64,
    pub rising_share: Option<f64>,
    pub rising_pairs: usize,
}

/// What a baseline has learned, in figures an assessor can read (the report).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    pub learned: u64,
    pub first_seen: Option<i64>,
    /// The highest reveals in a minute, an hour and a request over the last seven days.
    pub peak_minute: u64,
    pub peak_hour: u64,
    pub peak_batch: u64,
    /// Long-run shares of reveals of never-revealed tokens, of tokens in creation
    /// order, and of unknown tokens.
    pub usual_novel_share: f64,
    pub usual_rising_share: f64,
    pub usual_not_found_share: f64,
    pub origins: usize,
    /// The share of learned reveals in each hour of the day (UTC).
    pub hours: [f64; 24],
}

/// One identity's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Baseline {
    /// When the identity first revealed, and how many reveals the baseline learned from.
    pub first_seen: Option<i64>,
    pub learned: u64,
    minutes: Ring,
    peak_minute: DailyPeak,
    peak_hour: DailyPeak,
    peak_batch: DailyPeak,
    /// Decayed counts of learned reveals per hour of the day (UTC), and the day the
    /// decay was last applied.
    hours: [f64; 24],
    hours_day: i64,
    origins: BTreeMap<String, i64>,
    seen: SeenFilter,
    window: VecDeque<Attempt>,
    last_created: Option<i64>,
    novel_share: f64,
    rising_share: f64,
    not_found_share: f64,
}

impl Baseline {
    /// What it has learned (for the report).
    pub fn profile(&self) -> Profile {
        let total: f64 = self.hours.iter().sum();
        Profile {
            learned: self.learned,
            first_seen: self.first_seen,
            peak_minute: self.peak_minute.max(),
            peak_hour: self.peak_hour.max(),
            peak_batch: self.peak_batch.max(),
            usual_novel_share: self.novel_share,
            usual_rising_share: self.rising_share,
            usual_not_found_share: self.not_found_share,
            origins: self.origins.len(),
            hours: self
                .hours
                .map(|h| if total > 0.0 { h / total } else { 0.0 }),
        }
    }

    /// The features of a request of `sightings` from `origin`, as if it were recorded.
    pub fn features(&self, origin: &str, sightings: &[Sighting<'_>], now: i64) -> Features {
        let minute = now.div_euclid(MINUTE_MS);
        let day = now.div_euclid(DAY_MS);
        let n = sightings.len() as u64;
        let mut last = self.last_created;
        let asked: Vec<Attempt> = distinct(sightings)
            .iter()
            .map(|s| self.attempt(s, &mut last))
            .collect();
        let mut window: Vec<Attempt> = self.window.iter().copied().collect();
        window.extend(&asked);
        let start = window.len().saturating_sub(WINDOW);
        let window = &window[start..];
        let (novel_share, not_found_share, rising_share, rising_pairs) = shares(window);
        let (request_novel_share, request_not_found_share, request_rising_share, request_pairs) =
            shares(&asked);
        let total: f64 = self.hours.iter().sum();
        let hour = (now.div_euclid(HOUR_MS)).rem_euclid(24) as usize;
        Features {
            warm: false,
            this_minute: self.minutes.at(minute) + n,
            last_hour: self.minutes.since(minute - 59) + n,
            peak_minute: self.peak_minute.max_before(day),
            peak_hour: self.peak_hour.max_before(day),
            batch: n,
            peak_batch: self.peak_batch.max_before(day),
            novel_share,
            usual_novel_share: self.novel_share,
            rising_share,
            usual_rising_share: self.rising_share,
            not_found_share,
            usual_not_found_share: self.not_found_share,
            window: window.len(),
            rising_pairs,
            request: RequestShares {
                distinct: asked.len(),
                novel_share: request_novel_share,
                not_found_share: request_not_found_share,
                rising_share: request_rising_share,
                rising_pairs: request_pairs,
            },
            hour_share: if total > 0.0 {
                self.hours[hour] / total
            } else {
                0.0
            },
            known_origin: self.origins.contains_key(origin),
        }
    }

    fn attempt(&self, s: &Sighting<'_>, last: &mut Option<i64>) -> Attempt {
        let rising = match (s.created_at, *last) {
            (Some(c), Some(l)) if c != l => Some(c > l),
            _ => None,
        };
        if s.created_at.is_some() {
            *last = s.created_at;
        }
        Attempt {
            novel: s.created_at.is_some() && !self.seen.contains(s.token),
            found: s.created_at.is_some(),
            rising,
        }
    }

    /// Records an attempt in the recent windows (whatever its verdict); when `learn`, the
    /// long baselines learn from it too, and `revealed` tokens join the seen filter.
    pub fn record(
        &mut self,
        origin: &str,
        sightings: &[Sighting<'_>],
        (learn, revealed): (bool, bool),
        now: i64,
    ) {
        let minute = now.div_euclid(MINUTE_MS);
        let day = now.div_euclid(DAY_MS);
        let n = sightings.len() as u64;
        let mut last = self.last_created;
        let attempts: Vec<Attempt> = distinct(sightings)
            .iter()
            .map(|s| self.attempt(s, &mut last))
            .collect();
        self.last_created = last;
        self.minutes.add(minute, n, 60);
        for a in &attempts {
            if self.window.len() == WINDOW {
                self.window.pop_front();
            }
            self.window.push_back(*a);
        }
        if revealed {
            for s in sightings.iter().filter(|s| s.created_at.is_some()) {
                self.seen.insert(s.token);
            }
        }
        if !learn {
            return;
        }
        self.first_seen.get_or_insert(now);
        self.learned += n;
        self.peak_minute.record(day, self.minutes.at(minute));
        self.peak_hour.record(day, self.minutes.since(minute - 59));
        self.peak_batch.record(day, n);
        self.decay_hours(day);
        let hour = (now.div_euclid(HOUR_MS)).rem_euclid(24) as usize;
        self.hours[hour] += n as f64;
        self.origins.insert(origin.to_owned(), now);
        if self.origins.len() > MAX_ORIGINS
            && let Some(oldest) = self
                .origins
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(o, _)| o.clone())
        {
            self.origins.remove(&oldest);
        }
        for a in &attempts {
            let mix = |usual: &mut f64, v: bool| {
                *usual += SHARE_ALPHA * (f64::from(u8::from(v)) - *usual);
            };
            mix(&mut self.novel_share, a.novel);
            mix(&mut self.not_found_share, !a.found);
            if let Some(r) = a.rising {
                mix(&mut self.rising_share, r);
            }
        }
    }

    fn decay_hours(&mut self, day: i64) {
        if day > self.hours_day {
            let factor = HOURS_DECAY_PER_DAY.powi((day - self.hours_day).min(365) as i32);
            for h in &mut self.hours {
                *h *= factor;
            }
            self.hours_day = day;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(token: &str, created: i64) -> Sighting<'_> {
        Sighting {
            token,
            created_at: Some(created),
        }
    }

    #[test]
    fn the_filter_remembers_revealed_tokens_and_forgets_beyond_two_generations() {
        let mut f = SeenFilter::default();
        f.insert("tok_a");
        assert!(f.contains("tok_a"));
        assert!(!f.contains("tok_b"));
        for i in 0..(3 * FILTER_CAPACITY) {
            f.insert(&format!("tok_{i}"));
        }
        assert!(!f.contains("tok_a"), "dropped with its generation");
        let false_positives = (0..10_000)
            .filter(|i| f.contains(&format!("never_{i}")))
            .count();
        assert!(false_positives < 200, "{false_positives} false positives");
    }

    #[test]
    fn windows_count_every_attempt_but_only_learned_requests_teach_the_baseline() {
        let mut b = Baseline::default();
        let now = 10 * DAY_MS + 3 * HOUR_MS;
        b.record("10.0.0.1", &[seen("t1", 1)], (true, true), now);
        b.record(
            "10.0.0.9",
            &[seen("t2", 2), seen("t3", 3)],
            (false, false),
            now,
        );
        let f = b.features("10.0.0.9", &[seen("t1", 4)], now);
        assert_eq!(f.this_minute, 4, "refused attempts count in the window");
        assert_eq!(f.peak_minute, 0, "today's requests do not set today's bar");
        assert_eq!(
            b.features("10.0.0.9", &[], now + DAY_MS).peak_minute,
            1,
            "only the learned request set the peak"
        );
        assert!(!f.known_origin, "an unlearned origin stays unknown");
        assert!(b.features("10.0.0.1", &[], now).known_origin);
        // t1 was novel when first revealed, t2 and t3 were never revealed, t1 now is not.
        assert_eq!(f.novel_share, 0.75);
        assert_eq!(f.rising_share, Some(1.0));
        assert!((f.hour_share - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_baseline_survives_serialization() {
        let mut b = Baseline::default();
        b.record("o", &[seen("t1", 1)], (true, true), DAY_MS);
        let text = serde_json::to_string(&b).unwrap();
        assert!(!text.contains("t1"), "no token is stored in the clear");
        let back: Baseline = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back.features("o", &[seen("t1", 2)], DAY_MS),
            b.features("o", &[seen("t1", 2)], DAY_MS)
        );
    }
}
