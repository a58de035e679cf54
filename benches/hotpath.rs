//! Micro-benchmarks of the in-process hot path (`cargo bench --bench hotpath`): sealing
//! and opening, keyed fingerprints, token generation, PAN validation and the audit chain
//! hash. None of these touch the HSM or the database.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tokenvault::audit::chain_hash;
use tokenvault::config::{TokenFormat, Validator};
use tokenvault::crypto::{Aad, DataKey, FingerprintKey};
use tokenvault::store::AuditRow;
use tokenvault::tokenize::{format, values};
use zeroize::Zeroizing;

fn hot_path(c: &mut Criterion) {
    let key = DataKey::from_bytes(Zeroizing::new(vec![7u8; 32])).unwrap();
    let aad = Aad::token("pan", 1, "tok_abcdefghijklmnopqrstuvwx");
    let pan = b"4111111111111111";
    let kib = vec![42u8; 1024];
    let sealed16 = key.seal(&aad, pan);
    let sealed1k = key.seal(&aad, &kib);
    c.bench_function("seal 16 B (AES-256-GCM)", |b| {
        b.iter(|| key.seal(black_box(&aad), black_box(pan)))
    });
    c.bench_function("open 16 B", |b| {
        b.iter(|| key.open(black_box(&aad), black_box(&sealed16)).unwrap())
    });
    c.bench_function("seal 1 KiB", |b| {
        b.iter(|| key.seal(black_box(&aad), black_box(&kib)))
    });
    c.bench_function("open 1 KiB", |b| {
        b.iter(|| key.open(black_box(&aad), black_box(&sealed1k)).unwrap())
    });

    let fk = FingerprintKey::from_bytes(Zeroizing::new(vec![3u8; 32])).unwrap();
    let fp = fk.derive("lookup/type/pan");
    c.bench_function("fingerprint (HMAC-SHA-256, derived key)", |b| {
        b.iter(|| fp.fingerprint(black_box(pan)))
    });

    c.bench_function("token: opaque", |b| {
        b.iter(|| format::generate(TokenFormat::Opaque, black_box("4111111111111111")))
    });
    c.bench_function("token: last4 (fails Luhn)", |b| {
        b.iter(|| format::generate(TokenFormat::Last4, black_box("4111111111111111")))
    });
    c.bench_function("validate PAN", |b| {
        b.iter(|| values::validate(Validator::Pan, black_box("4111 1111 1111 1111"), 4096).unwrap())
    });

    let row = AuditRow {
        seq: 1,
        at: 1_780_000_000_000,
        actor: "app".into(),
        action: "detokenize".into(),
        outcome: "success".into(),
        resource: Some("tok_abcdefghijklmnopqrstuvwx".into()),
        origin: Some("127.0.0.1".into()),
        reason: Some("refund".into()),
        prev_hash: vec![0; 32],
        hash: vec![],
    };
    c.bench_function("audit chain hash (SHA-256)", |b| {
        b.iter(|| chain_hash(black_box(1), black_box(row.at), black_box(&row)))
    });
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
