//! The per-request rate check (`cargo bench --bench limiter`): what every `/v1` request
//! pays in `Guard::admit` — governor's GCRA behind `guard::Rates` — for a configured
//! client and for identities without a client entry, on one thread and on two; and the
//! hand-written hourly budget (`guard::Limiter::charge`) for comparison. Every check
//! admits (the common path). The numbers, and those of the hand-written token bucket
//! that `Rates` replaced, are in docs/architecture.md.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tokenvault::guard::{Limiter, RateLimit, Rates};

const IDENTITIES: usize = 1000;

fn limit() -> RateLimit {
    RateLimit {
        per_second: Some(1e9),
        burst: Some(1e9),
    }
}

/// `iters` checks split over two threads, timed together.
fn on_two_threads(iters: u64, check: impl Fn(u64) + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..2 {
            let check = &check;
            s.spawn(move || {
                for i in 0..iters / 2 {
                    check(i * 2 + t);
                }
            });
        }
    });
    start.elapsed()
}

fn limiter(c: &mut Criterion) {
    let names: Vec<String> = (0..IDENTITIES).map(|i| format!("client-{i}")).collect();
    let strangers: Vec<String> = (0..IDENTITIES).map(|i| format!("stranger-{i}")).collect();
    let rates = Rates::new(names.iter().map(|n| (n.clone(), limit())), limit());

    let mut i = 0;
    c.bench_function("rate check: configured client (1000 clients)", |b| {
        b.iter(|| {
            i = (i + 1) % IDENTITIES;
            rates.take(black_box(&names[i])).unwrap()
        })
    });
    c.bench_function("rate check: configured client, 2 threads", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, |i| {
                rates.take(&names[i as usize % IDENTITIES]).unwrap()
            })
        })
    });
    let mut i = 0;
    c.bench_function("rate check: identity without an entry (1000)", |b| {
        b.iter(|| {
            i = (i + 1) % IDENTITIES;
            rates.take(black_box(&strangers[i])).unwrap()
        })
    });
    c.bench_function("rate check: identity without an entry, 2 threads", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, |i| {
                rates.take(&strangers[i as usize % IDENTITIES]).unwrap()
            })
        })
    });

    let budgets = Limiter::default();
    let now = 1_780_000_000_000_i64;
    let mut i = 0;
    c.bench_function("hourly budget charge (1000 identities)", |b| {
        b.iter(|| {
            i = (i + 1) % IDENTITIES;
            budgets
                .charge(black_box(&names[i]), Some(u64::MAX), 1, now)
                .unwrap()
        })
    });
}

criterion_group!(benches, limiter);
criterion_main!(benches);
