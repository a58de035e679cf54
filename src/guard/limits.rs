//! Abuse limits per client identity (from the certificate — never from a header): a
//! token-bucket request rate and an hourly reveal budget. Time is a parameter
//! (milliseconds), so the rules are tested without sleeping. State is per node: with N
//! nodes behind a balancer a client gets up to N times the budget.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const HOUR_MS: i64 = 3_600_000;

struct Bucket {
    tokens: f64,
    last_ms: i64,
}

struct Budget {
    used: u64,
    window_start_ms: i64,
}

/// The limits of one identity, from its client entry in the config.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateLimit {
    /// Requests per second; `None` or ≤ 0: unlimited.
    pub per_second: Option<f64>,
    /// Bucket size (default: one second's worth).
    pub burst: Option<f64>,
}

#[derive(Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<String, Bucket>>,
    budgets: Mutex<HashMap<String, Budget>>,
}

impl Limiter {
    /// Takes one request from the identity's bucket; `Err(wait)` when empty.
    pub fn take(&self, identity: &str, limit: RateLimit, now_ms: i64) -> Result<(), Duration> {
        let Some(rate) = limit.per_second.filter(|r| *r > 0.0) else {
            return Ok(());
        };
        let burst = limit.burst.unwrap_or(rate).max(1.0);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = buckets.entry(identity.to_owned()).or_insert(Bucket {
            tokens: burst,
            last_ms: now_ms,
        });
        // A clock that steps back refills nothing.
        let elapsed = (now_ms - b.last_ms).max(0) as f64 / 1000.0;
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.last_ms = b.last_ms.max(now_ms);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }

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
}

impl Limiter {
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

    #[test]
    fn the_bucket_refills_with_time_and_never_beyond_its_burst() {
        let l = Limiter::default();
        let limit = RateLimit {
            per_second: Some(2.0),
            burst: Some(2.0),
        };
        assert!(l.take("a", limit, 0).is_ok() && l.take("a", limit, 0).is_ok());
        let wait = l.take("a", limit, 0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(
            l.take("b", limit, 0).is_ok(),
            "identities have their own buckets"
        );
        assert!(l.take("a", limit, 500).is_ok());
        assert!(l.take("a", limit, 10_000).is_ok() && l.take("a", limit, 10_000).is_ok());
        assert!(l.take("a", limit, 10_000).is_err());
        assert!(l.take("a", RateLimit::default(), 10_000).is_ok());
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
