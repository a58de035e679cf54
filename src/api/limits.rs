//! Abuse limits per client identity (from the certificate — never from a header): a
//! token-bucket request rate on `/v1`, checked before the body is read, and an hourly
//! detokenize budget. Both answer 429 with `Retry-After` and an audit event. State is per
//! node: with N nodes behind a balancer a client gets up to N times the budget.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::ConnInfo;
use super::error::ApiError;
use crate::audit::{AuditEvent, Outcome};
use crate::config::ClientSettings;

struct Bucket {
    tokens: f64,
    last: Instant,
}

struct Budget {
    used: u64,
    window_start: Instant,
}

#[derive(Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<String, Bucket>>,
    budgets: Mutex<HashMap<String, Budget>>,
}

const HOUR: Duration = Duration::from_secs(3600);

impl Limiter {
    /// Takes one request from the identity's bucket; `Err(wait)` when empty.
    fn take(&self, identity: &str, client: &ClientSettings, now: Instant) -> Result<(), Duration> {
        let Some(rate) = client.rate_per_second.filter(|r| *r > 0.0) else {
            return Ok(());
        };
        let burst = client.burst.unwrap_or(rate).max(1.0);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = buckets.entry(identity.to_owned()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }

    /// Charges `n` detokenized values to the identity's hourly budget.
    pub fn charge_detokenize(
        &self,
        identity: &str,
        client: Option<&ClientSettings>,
        n: u64,
        now: Instant,
    ) -> Result<(), Duration> {
        let Some(limit) = client.and_then(|c| c.detokenize_per_hour) else {
            return Ok(());
        };
        let mut budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        let b = budgets.entry(identity.to_owned()).or_insert(Budget {
            used: 0,
            window_start: now,
        });
        if now.duration_since(b.window_start) >= HOUR {
            *b = Budget {
                used: 0,
                window_start: now,
            };
        }
        if b.used + n > limit {
            return Err(HOUR.saturating_sub(now.duration_since(b.window_start)));
        }
        b.used += n;
        Ok(())
    }
}

/// A 429 answer with the seconds to wait.
pub fn too_many(message: String, wait: Duration) -> Response {
    let mut resp =
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message).into_response();
    let secs = wait.as_secs().max(1).to_string();
    if let Ok(v) = axum::http::HeaderValue::from_str(&secs) {
        resp.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, v);
    }
    resp
}

/// Middleware for `/v1`: the request rate of the calling identity.
pub async fn rate_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let identity = req
        .extensions()
        .get::<ConnInfo>()
        .and_then(|c| c.identity.clone());
    if let Some(identity) = identity
        && req.uri().path().starts_with("/v1/")
        && let Some(client) = state.vault.settings.clients.get(&identity)
        && let Err(wait) = state.limiter.take(&identity, client, Instant::now())
    {
        metrics::counter!("tokenvault_rate_limited_total").increment(1);
        let origin = req
            .extensions()
            .get::<ConnInfo>()
            .map(|c| c.peer.ip().to_string())
            .unwrap_or_default();
        let event = AuditEvent::new(&identity, "rate_limit", Outcome::Denied)
            .origin(origin)
            .reason(Some("rate_limited".into()));
        if let Err(e) = state.record(event).await {
            return e.into_response();
        }
        return too_many(
            format!("request rate limit of identity `{identity}` reached; slow down"),
            wait,
        );
    }
    next.run(req).await
}
