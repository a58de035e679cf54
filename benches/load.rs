//! The load generator of `scripts/bench`: HTTPS with a client certificate over keep-alive
//! connections, every request different, latency per request, correctness checked at the
//! end (every token produced is detokenized back to its value).
//!
//! `cargo bench --bench load -- --url https://127.0.0.1:8443 --tls data/dev/tls
//!   --scenario tokenize --seconds 10 --concurrency 32 [--malformed 1] [--state FILE]`
//! prints one JSON line per scenario.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

struct Args {
    url: String,
    tls: std::path::PathBuf,
    scenario: String,
    seconds: f64,
    concurrency: usize,
    malformed_percent: u32,
    state: std::path::PathBuf,
    count: u64,
}

fn args() -> Args {
    let mut a = Args {
        url: "https://127.0.0.1:8443".into(),
        tls: "data/dev/tls".into(),
        scenario: "tokenize".into(),
        seconds: 10.0,
        concurrency: 32,
        malformed_percent: 0,
        state: "data/bench/tokens.jsonl".into(),
        count: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_default();
        match k.as_str() {
            "--url" => a.url = v(),
            "--tls" => a.tls = v().into(),
            "--scenario" => a.scenario = v(),
            "--seconds" => a.seconds = v().parse().expect("--seconds"),
            "--concurrency" => a.concurrency = v().parse().expect("--concurrency"),
            "--malformed" => a.malformed_percent = v().parse().expect("--malformed"),
            "--state" => a.state = v().into(),
            "--count" => a.count = v().parse().expect("--count"),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn client(tls: &std::path::Path) -> reqwest::Client {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(tls.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let certs = CertificateDer::pem_file_iter(tls.join("app.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(tls.join("app-key.pem")).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .http1_only()
        .pool_max_idle_per_host(1024)
        .build()
        .unwrap()
}

/// A random Luhn-valid 16-digit card number from a fast non-cryptographic generator
/// (these are test values, not secrets).
fn pan(state: &mut u64) -> String {
    let mut d = Vec::with_capacity(16);
    d.push(b'4');
    for _ in 0..14 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        d.push(b'0' + (*state % 10) as u8);
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let n = u32::from(c - b'0');
            if i % 2 == 0 {
                let x = n * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                n
            }
        })
        .sum();
    d.push(b'0' + ((10 - sum % 10) % 10) as u8);
    String::from_utf8(d).unwrap()
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    ok: u64,
    values: u64,
    expected_4xx: u64,
    errors: u64,
    mismatches: u64,
    produced: Vec<(String, String)>,
}

async fn run(a: &Args) -> Value {
    let client = client(&a.tls);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let tokens: Arc<Vec<(String, String)>> =
        Arc::new(if matches!(a.scenario.as_str(), "detokenize" | "verify") {
            std::fs::read_to_string(&a.state)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<(String, String)>(l).ok())
                .collect()
        } else {
            Vec::new()
        });
    let ciphertexts: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    if a.scenario == "decrypt" {
        // Seal a pool of 1 KiB values first.
        let body = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 1024]);
        for _ in 0..256 {
            let r: Value = client
                .post(format!("{}/v1/encrypt", a.url))
                .json(&json!({"keyring": "pii", "plaintext": body}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            ciphertexts
                .lock()
                .unwrap()
                .push(r["ciphertext"].as_str().unwrap().to_owned());
        }
    }
    // The Vault-compatible scenarios log in once and send the session token.
    let vault_token = if a.scenario.starts_with("vault-") {
        let r: Value = client
            .post(format!("{}/v1/auth/cert/login", a.url))
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["auth"]["client_token"].as_str().unwrap().to_owned()
    } else {
        String::new()
    };
    if a.scenario == "vault-decrypt" {
        let body = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 1024]);
        for _ in 0..256 {
            let r: Value = client
                .post(format!("{}/v1/transit/encrypt/pii", a.url))
                .header("X-Vault-Token", &vault_token)
                .json(&json!({"plaintext": body}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            ciphertexts
                .lock()
                .unwrap()
                .push(r["data"]["ciphertext"].as_str().unwrap().to_owned());
        }
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..a.concurrency {
        let vault_token = vault_token.clone();
        let (client, stop, sent, tokens, ciphertexts) = (
            client.clone(),
            stop.clone(),
            sent.clone(),
            tokens.clone(),
            ciphertexts.clone(),
        );
        let (url, scenario, malformed, count) = (
            a.url.clone(),
            a.scenario.clone(),
            a.malformed_percent,
            a.count,
        );
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            let mut rng = 0x9E37_79B9_7F4A_7C15u64
                ^ ((w as u64 + 1) * 0x1000_0001)
                ^ started.elapsed().as_nanos() as u64;
            let kib = base64::engine::general_purpose::STANDARD.encode(vec![42u8; 1024]);
            loop {
                let i = sent.fetch_add(1, Ordering::Relaxed);
                if stop.load(Ordering::Relaxed) || (count > 0 && i >= count) {
                    break;
                }
                if scenario == "verify" && i as usize >= tokens.len() {
                    break;
                }
                let bad = malformed > 0 && (i % 100) < u64::from(malformed);
                let (path, body, values, expect): (&str, Value, u64, Option<String>) =
                    match scenario.as_str() {
                        "tokenize" | "preload" => {
                            let v = if bad {
                                "4111111111111112".to_owned()
                            } else {
                                pan(&mut rng)
                            };
                            (
                                "/v1/tokenize",
                                json!({"type": "pan", "value": v}),
                                1,
                                Some(v),
                            )
                        }
                        "batch100" | "batch1000" | "preload-batch" => {
                            let n = if scenario == "batch100" { 100 } else { 1000 };
                            let items: Vec<Value> = (0..n)
                                .map(|_| json!({"type": "pan", "value": pan(&mut rng)}))
                                .collect();
                            ("/v1/tokenize/batch", json!({"items": items}), n, None)
                        }
                        "detokenize" | "verify" => {
                            let (tok, val) = if scenario == "verify" {
                                &tokens[i as usize]
                            } else {
                                &tokens[(rng_next(&mut rng) % tokens.len() as u64) as usize]
                            };
                            let tok = if bad { "tok_malformed/x" } else { tok.as_str() };
                            (
                                "/v1/detokenize",
                                json!({"token": tok}),
                                1,
                                Some(val.clone()),
                            )
                        }
                        "encrypt" => (
                            "/v1/encrypt",
                            json!({"keyring": "pii", "plaintext": kib}),
                            1,
                            None,
                        ),
                        "decrypt" => {
                            let ct = {
                                let c = ciphertexts.lock().unwrap();
                                c[(rng_next(&mut rng) % c.len() as u64) as usize].clone()
                            };
                            ("/v1/decrypt", json!({"ciphertext": ct}), 1, None)
                        }
                        "vault-encrypt" => (
                            "/v1/transit/encrypt/pii",
                            json!({"plaintext": kib}),
                            1,
                            None,
                        ),
                        "vault-decrypt" => {
                            let ct = {
                                let c = ciphertexts.lock().unwrap();
                                c[(rng_next(&mut rng) % c.len() as u64) as usize].clone()
                            };
                            (
                                "/v1/transit/decrypt/pii",
                                json!({"ciphertext": ct}),
                                1,
                                None,
                            )
                        }
                        other => panic!("unknown scenario {other}"),
                    };
                let t0 = Instant::now();
                let mut req = client.post(format!("{url}{path}")).json(&body);
                if !vault_token.is_empty() {
                    req = req.header("X-Vault-Token", &vault_token);
                }
                let resp = req.send().await;
                let (status, json) = match resp {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        (s, r.json::<Value>().await.unwrap_or(Value::Null))
                    }
                    Err(_) => (0, Value::Null),
                };
                let us = t0.elapsed().as_micros() as u64;
                match (status, bad) {
                    (200, false) => {
                        t.ok += 1;
                        t.values += values;
                        t.latencies_us.push(us);
                        match scenario.as_str() {
                            "tokenize" | "preload" => {
                                if let (Some(tok), Some(v)) = (json["token"].as_str(), expect) {
                                    t.produced.push((tok.to_owned(), v));
                                }
                            }
                            "detokenize" | "verify"
                                if json["value"].as_str() != expect.as_deref() =>
                            {
                                t.mismatches += 1;
                            }
                            _ => {}
                        }
                    }
                    (400 | 404 | 422, true) => t.expected_4xx += 1,
                    _ => t.errors += 1,
                }
            }
            t
        }));
    }
    if a.count == 0 && a.scenario != "verify" {
        tokio::time::sleep(Duration::from_secs_f64(a.seconds)).await;
        stop.store(true, Ordering::Relaxed);
    }
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await.unwrap();
        all.latencies_us.extend(t.latencies_us);
        all.ok += t.ok;
        all.values += t.values;
        all.expected_4xx += t.expected_4xx;
        all.errors += t.errors;
        all.mismatches += t.mismatches;
        all.produced.extend(t.produced);
    }
    let secs = started.elapsed().as_secs_f64();
    if !all.produced.is_empty() {
        use std::io::Write;
        if let Some(dir) = a.state.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&a.state)
            .unwrap();
        for p in &all.produced {
            writeln!(f, "{}", serde_json::to_string(p).unwrap()).unwrap();
        }
    }
    all.latencies_us.sort_unstable();
    let pct = |p: f64| {
        let l = &all.latencies_us;
        if l.is_empty() {
            0.0
        } else {
            l[((l.len() - 1) as f64 * p) as usize] as f64 / 1000.0
        }
    };
    json!({
        "scenario": a.scenario,
        "requests": all.ok,
        "values": all.values,
        "seconds": secs,
        "rps": all.ok as f64 / secs,
        "values_per_s": all.values as f64 / secs,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "errors": all.errors,
        "expected_4xx": all.expected_4xx,
        "mismatches": all.mismatches,
    })
}

fn rng_next(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = rt.block_on(run(&a));
    println!("{out}");
}
