//! Abuse limits per client identity (from the certificate — never from a header).
//!
//! - [`Rates`], the request rate: governor's GCRA rate limiters — one per configured
//!   client that has a rate, and one keyed limiter for identities without a client entry
//!   (each its own state, at `limits.unknown_rate_per_second`). Governor reads its own
//!   monotonic clock; tests give it a `FakeRelativeClock`.
//! - [`Limiter`], the hourly budgets (reveals, new deterministic values): fixed windows,
//!   hand-written because governor cannot give a unit back (`Guard::refund_new_value`
//!   reserves a new value before the lookup and refunds it on a hit), because its quota
//!   is fixed per limiter where a budget's limit is read per identity and action, and
//!   because a refusal must say when the hour ends (`Retry-After`). Time is a parameter
//!   (milliseconds), so the rules are tested without sleeping.
//!
//! Why governor for the rate: the check every `/v1` request makes was measured against
//! the hand-written token bucket it replaced (the numbers are in `docs/architecture.md`;
//! `benches/limiter.rs` measures it now). Both take a fraction of a microsecond, under
//! 1 % of a request's CPU, so the maintained crate wins. State is per node: with N nodes
//! behind a balancer a client gets up to N times the rate and the budgets.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// The limits of one identity, from its client entry in the config.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateLimit {
    /// Requests per second; `None`, ≤ 0 or not a number: unlimited.
    pub per_second: Option<f64>,
    /// Burst size (default: one second's worth, at least 1; fractions round down).
    pub burst: Option<f64>,
}

impl RateLimit {
    /// The governor quota: one request per `1 / per_second`, `burst` at once. A rate
    /// slower than one a day counts as one a day, and the burst is capped so that the
    /// burst window stays within governor's 584 years.
    fn quota(self) -> Option<Quota> {
        const NANOS_PER_DAY: f64 = 86_400e9;
        let rate = self.per_second.filter(|r| *r > 0.0)?;
        let period_ns = (1e9 / rate).clamp(1.0, NANOS_PER_DAY);
        let max_burst = (u64::MAX / 2) as f64 / period_ns;
        let burst = self
            .burst
            .unwrap_or(rate)
            .clamp(1.0, max_burst.min(f64::from(u32::MAX)));
        let quota = Quota::with_period(Duration::from_nanos(period_ns as u64))?;
        Some(quota.allow_burst(NonZeroU32::new(burst as u32)?))
    }
}

type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;
type Keyed<C> =
    RateLimiter<String, HashMapStateStore<String>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The request rate of every identity (governor's GCRA).
pub struct Rates<C: Clock = DefaultClock> {
    /// Configured clients; `None`: no rate (unlimited).
    clients: HashMap<String, Option<Direct<C>>>,
    /// Identities without a client entry, each with its own state.
    unknown: Option<Keyed<C>>,
    clock: C,
}

impl Rates {
    pub fn new(clients: impl IntoIterator<Item = (String, RateLimit)>, unknown: RateLimit) -> Self {
        Self::with_clock(clients, unknown, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Rates<C> {
    pub fn with_clock(
        clients: impl IntoIterator<Item = (String, RateLimit)>,
        unknown: RateLimit,
        clock: C,
    ) -> Self {
        let clients = clients
            .into_iter()
            .map(|(id, limit)| {
                let direct = limit
                    .quota()
                    .map(|q| RateLimiter::direct_with_clock(q, clock.clone()));
                (id, direct)
            })
            .collect();
        let unknown = unknown
            .quota()
            .map(|q| RateLimiter::new(q, HashMapStateStore::default(), clock.clone()));
        Self {
            clients,
            unknown,
            clock,
        }
    }

    /// Admits one request of `identity`; `Err(wait)` when its rate is spent.
    pub fn take(&self, identity: &str) -> Result<(), Duration> {
        let checked = match self.clients.get(identity) {
            Some(None) => return Ok(()),
            Some(Some(limiter)) => limiter.check(),
            None => match &self.unknown {
                None => return Ok(()),
                Some(limiter) => limiter.check_key(&identity.to_owned()),
            },
        };
        checked.map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

const HOUR_MS: i64 = 3_600_000;

struct Budget {
    used: u64,
    window_start_ms: i64,
}

/// The hourly budgets, per key (an action and an identity).
#[derive(Default)]
pub struct Limiter {
    budgets: Mutex<HashMap<String, Budget>>,
}

impl Limiter {
    /// Charges `n` units to the hourly budget `key` (an identity's reveals, its new
    /// values) of `limit`; `Err(wait)` until the window ends when they do not fit
    /// (nothing is charged then).
    pub fn charge(
        &self,
        key: &str,
        limit: Option<u64>,
        n: u64,
        now_ms: i64,
    ) -> Result<(), Duration> {
        let Some(limit) = limit else { return Ok(()) };
        let mut budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        let b = budgets.entry(key.to_owned()).or_insert(Budget {
            used: 0,
            window_start_ms: now_ms,
        });
        if now_ms - b.window_start_ms >= HOUR_MS || now_ms < b.window_start_ms {
            *b = Budget {
                used: 0,
                window_start_ms: now_ms,
            };
        }
        if b.used.saturating_add(n) > limit {
            let left = HOUR_MS - (now_ms - b.window_start_ms);
            return Err(Duration::from_millis(u64::try_from(left).unwrap_or(0)));
        }
        b.used += n;
        Ok(())
    }

    /// Gives `n` units back to the budget `key`, within the window they were charged in.
    pub fn refund(&self, key: &str, n: u64, now_ms: i64) {
        let mut budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = budgets.get_mut(key)
            && (0..HOUR_MS).contains(&(now_ms - b.window_start_ms))
        {
            b.used = b.used.saturating_sub(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn the_rate_refills_with_time_and_never_beyond_its_burst() {
        let clock = FakeRelativeClock::default();
        let limit = RateLimit {
            per_second: Some(2.0),
            burst: Some(2.0),
        };
        let r = Rates::with_clock(
            [
                ("a".to_owned(), limit),
                ("b".to_owned(), limit),
                ("free".to_owned(), RateLimit::default()),
            ],
            RateLimit {
                per_second: Some(1.0),
                burst: Some(1.0),
            },
            clock.clone(),
        );
        assert!(r.take("a").is_ok() && r.take("a").is_ok());
        assert_eq!(r.take("a"), Err(Duration::from_millis(500)));
        assert!(r.take("b").is_ok(), "identities have their own state");
        clock.advance(Duration::from_millis(500));
        assert!(r.take("a").is_ok());
        clock.advance(Duration::from_secs(10));
        assert!(r.take("a").is_ok() && r.take("a").is_ok());
        assert!(r.take("a").is_err(), "never beyond the burst");
        for _ in 0..100 {
            assert!(
                r.take("free").is_ok(),
                "a client without a rate is not limited"
            );
        }
        // Identities without a client entry: each its own state, at the unknown rate.
        assert!(r.take("stranger-1").is_ok());
        assert_eq!(r.take("stranger-1"), Err(Duration::from_secs(1)));
        assert!(r.take("stranger-2").is_ok());
    }

    #[test]
    fn config_rates_become_quotas_and_extremes_neither_panic_nor_overflow() {
        let q = |per_second, burst| RateLimit { per_second, burst }.quota();
        for none in [None, Some(0.0), Some(-1.0), Some(f64::NAN)] {
            assert!(q(none, None).is_none(), "{none:?} is unlimited");
        }
        let half = q(Some(0.5), None).unwrap();
        assert_eq!(half.replenish_interval(), Duration::from_secs(2));
        assert_eq!(half.burst_size().get(), 1);
        let five = q(Some(2.0), Some(5.5)).unwrap();
        assert_eq!(five.replenish_interval(), Duration::from_millis(500));
        assert_eq!(five.burst_size().get(), 5);
        let slow = q(Some(1e-12), Some(1e12)).unwrap();
        assert_eq!(slow.replenish_interval(), Duration::from_secs(86_400));
        for (rate, burst) in [(1e-12, 1e12), (f64::INFINITY, f64::INFINITY), (1e12, 1e12)] {
            let clock = FakeRelativeClock::default();
            let limit = RateLimit {
                per_second: Some(rate),
                burst: Some(burst),
            };
            let r = Rates::with_clock([("x".to_owned(), limit)], limit, clock);
            assert!(r.take("x").is_ok() && r.take("y").is_ok(), "{rate} {burst}");
        }
    }

    #[test]
    fn the_budget_is_hourly_and_a_refused_charge_costs_nothing() {
        let l = Limiter::default();
        assert!(l.charge("a", Some(3), 2, 0).is_ok());
        assert_eq!(
            l.charge("a", Some(3), 2, 1000),
            Err(Duration::from_millis(3_599_000))
        );
        assert!(l.charge("a", Some(3), 1, 1000).is_ok());
        assert!(l.charge("a", Some(3), 1, 2000).is_err());
        assert!(l.charge("a", Some(3), 3, HOUR_MS).is_ok());
        assert!(l.charge("a", None, 1_000_000, HOUR_MS).is_ok());
        // A refund makes room again, in the same window only.
        assert!(l.charge("a", Some(3), 1, HOUR_MS + 1).is_err());
        l.refund("a", 1, HOUR_MS + 1);
        assert!(l.charge("a", Some(3), 1, HOUR_MS + 1).is_ok());
        l.refund("a", 3, 3 * HOUR_MS);
        assert!(l.charge("a", Some(3), 1, 3 * HOUR_MS).is_ok());
        assert!(
            l.charge("b", Some(0), 1, 0).is_err(),
            "a budget of 0 lets nothing through"
        );
    }
}
