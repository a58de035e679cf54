//! Issue 6: several `serve` processes on one PostgreSQL database and one HSM token
//! behave as one vault, and survive their database connections being cut.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::helpers;
use serde_json::{Value, json};

fn skip() -> bool {
    if helpers::postgres().is_none() {
        eprintln!("skipped: multi-node tests need PostgreSQL (TOKENVAULT_TEST_BACKEND=postgres)");
        return true;
    }
    false
}

async fn post(port: u16, who: &str, path: &str, body: Value) -> (u16, Value) {
    let r = helpers::client(who)
        .post(format!("https://localhost:{port}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn key_version_of(settings: &tokenvault::config::Settings, token: &str) -> i64 {
    let mut db = helpers::connect(settings).await;
    sqlx::query_scalar("SELECT key_version FROM tokens WHERE token = $1")
        .bind(token)
        .fetch_one(&mut db)
        .await
        .unwrap()
}

struct Node(std::process::Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_one_database_behave_as_one_vault() {
    if skip() {
        return;
    }
    let (_dir, s) = helpers::process_settings("nodes");
    let o = helpers::cli(&s)
        .arg("init")
        .args(helpers::bootstrap_args())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, pa) = helpers::serve_process(&s, "a").await;
    let (b, pb) = helpers::serve_process(&s, "b").await;
    let (_a, _b) = (Node(a), Node(b));

    // Tokenize on A, detokenize on B.
    let (_, t) = post(
        pa,
        "app",
        "/v1/tokenize",
        json!({"type": "card", "value": "4111111111111111"}),
    )
    .await;
    let token = t["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{t}"))
        .to_owned();
    let (status, d) = post(pb, "app", "/v1/detokenize", json!({"token": token})).await;
    assert_eq!(
        (status, d["value"].as_str()),
        (200, Some("4111111111111111"))
    );

    // Rotate from the CLI: both nodes seal with v2 within 5 s.
    let o = helpers::cli(&s)
        .args(["keys", "rotate", "pan", "--key"])
        .arg(helpers::officer_key("alice"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let started = std::time::Instant::now();
    let mut switched = BTreeSet::new();
    while switched.len() < 2 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "nodes did not pick up v2 within 5 s: {switched:?}"
        );
        for port in [pa, pb] {
            let (_, t) = post(
                port,
                "app",
                "/v1/tokenize",
                json!({"type": "card", "value": "5555555555554444"}),
            )
            .await;
            if key_version_of(&s, t["token"].as_str().unwrap()).await == 2 {
                switched.insert(port);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    eprintln!(
        "both nodes used the new version after {:?}",
        started.elapsed()
    );

    // 1,000 concurrent deterministic tokenizations of 100 values over both nodes.
    let values: Arc<Vec<String>> = Arc::new((0..100).map(|_| helpers::random_pan()).collect());
    let limit = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let (values, limit) = (values.clone(), limit.clone());
        let port = if i % 2 == 0 { pa } else { pb };
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire().await.unwrap();
            let v = &values[i % 100];
            let (status, t) = post(
                port,
                "app",
                "/v1/tokenize",
                json!({"type": "pan", "value": v}),
            )
            .await;
            assert_eq!(status, 200, "{t}");
            (i % 100, t["token"].as_str().unwrap().to_owned())
        }));
    }
    let mut per_value: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for t in tasks {
        let (v, token) = t.await.unwrap();
        per_value.entry(v).or_default().insert(token);
    }
    assert!(
        per_value.values().all(|t| t.len() == 1),
        "a value got two tokens"
    );
    let distinct: BTreeSet<_> = per_value.values().flatten().collect();
    assert_eq!(distinct.len(), 100);
    let mut db = helpers::connect(&s).await;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens WHERE token_type = 'pan'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(rows, 100, "exactly one row per value");

    // One audit chain, no forks or gaps, with both nodes appending.
    let o = helpers::cli(&s).args(["audit", "verify"]).output().unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_database_connections_fail_only_in_flight_requests_and_lose_nothing() {
    if skip() {
        return;
    }
    let (_dir, s) = helpers::process_settings("dbfault");
    let o = helpers::cli(&s)
        .arg("init")
        .args(helpers::bootstrap_args())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, port) = helpers::serve_process(&s, "a").await;
    let _a = Node(a);
    let db_name = secrecy::ExposeSecret::expose_secret(&s.database.url)
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let admin = helpers::postgres().unwrap();
    let psql = |sql: String| {
        let out = std::process::Command::new("psql")
            .args([admin.as_str(), "-qAtc", &sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let terminate = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db_name}' AND pid <> pg_backend_pid()"
    );

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let (mut acked, mut statuses) = (Vec::new(), BTreeMap::<u16, u32>::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let v = helpers::random_pan();
                let (status, t) = post(
                    port,
                    "app",
                    "/v1/tokenize",
                    json!({"type": "card", "value": v}),
                )
                .await;
                *statuses.entry(status).or_default() += 1;
                if status == 200 {
                    acked.push((t["token"].as_str().unwrap().to_owned(), v));
                }
            }
            (acked, statuses)
        }));
    }
    for _ in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        psql(terminate.clone());
    }
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut acked, mut statuses) = (Vec::new(), BTreeMap::<u16, u32>::new());
    for w in workers {
        let (a, s) = w.await.unwrap();
        acked.extend(a);
        for (k, v) in s {
            *statuses.entry(k).or_default() += v;
        }
    }
    eprintln!(
        "under connection cuts: {statuses:?}, {} acknowledged",
        acked.len()
    );
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 503),
        "only 503 for in-flight requests: {statuses:?}"
    );
    assert!(acked.len() > 50, "too little load: {statuses:?}");
    // No restart: every acknowledged token detokenizes to its value.
    for chunk in acked.chunks(500) {
        let tokens: Vec<&String> = chunk.iter().map(|(t, _)| t).collect();
        let (status, d) = post(
            port,
            "app",
            "/v1/detokenize/batch",
            json!({"tokens": tokens}),
        )
        .await;
        assert_eq!(status, 200, "{d}");
        for ((_, v), item) in chunk.iter().zip(d["items"].as_array().unwrap()) {
            assert_eq!(item["value"].as_str(), Some(v.as_str()), "{item}");
        }
    }

    // A read-only database: writes answer 503 with Retry-After, no partial rows; then recovery.
    psql(format!(
        "ALTER DATABASE {db_name} SET default_transaction_read_only = on"
    ));
    psql(terminate.clone());
    let mut db = helpers::connect(&s).await;
    let before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
        .fetch_one(&mut db)
        .await
        .unwrap();
    let r = helpers::client("app")
        .post(format!("https://localhost:{port}/v1/tokenize"))
        .json(&json!({"type": "card", "value": "378282246310005"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    psql(format!(
        "ALTER DATABASE {db_name} RESET default_transaction_read_only"
    ));
    psql(terminate);
    let after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
        .fetch_one(&mut helpers::connect(&s).await)
        .await
        .unwrap();
    assert_eq!(before, after, "no partial rows");
    let (status, _) = post(
        port,
        "app",
        "/v1/tokenize",
        json!({"type": "card", "value": "378282246310005"}),
    )
    .await;
    assert_eq!(status, 200, "recovered without a restart");
}
