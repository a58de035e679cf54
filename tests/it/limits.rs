//! Service limits an operator relies on without looking: memory stays flat when nobody
//! scrapes `/metrics`, `serve` does not start with the development clients unless asked,
//! the files the vault creates are private from the start, and the key inventory is
//! audited as what actually happened.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers;

/// Recording rounds of the soak child, one every `ROUND`; each records `PER_ROUND`
/// samples (about 400,000 requests a second, the rate of a busy node in seconds rather
/// than hours). RSS is compared between the end of round `WARM` and the last round.
const ROUNDS: usize = 20;
const PER_ROUND: usize = 100_000;
const ROUND: Duration = Duration::from_millis(250);
const WARM: usize = 8;

/// The resident set of this process, in KiB.
fn vm_rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Runs `metrics_soak_child` in a process of its own (this test binary, filtered to that
/// one test), so the resident set it measures is its own and not the suite's.
#[test]
fn request_metrics_stay_bounded_when_nobody_scrapes() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "limits::metrics_soak_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "the child test ran: {text}");
}

/// Records request durations through the server's recorder (`api::metrics_handle`, which
/// `AppState::new` installs) under the key the request middleware uses, and never renders
/// `/metrics`. Every sample left queued costs 8 bytes; the resident set after warm-up must
/// grow by far less than the samples recorded since would take if they were kept.
#[test]
#[ignore = "run in its own process by request_metrics_stay_bounded_when_nobody_scrapes"]
fn metrics_soak_child() {
    let _handle = tokenvault::api::metrics_handle();
    let histogram =
        metrics::histogram!("tokenvault_request_duration_seconds", "route" => "/v1/tokenize");
    let mut rss = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let start = Instant::now();
        for i in 0..PER_ROUND {
            histogram.record((round * PER_ROUND + i) as f64 * 1e-9);
        }
        rss.push(vm_rss_kib());
        std::thread::sleep(ROUND.saturating_sub(start.elapsed()));
    }
    let grown = rss[ROUNDS - 1].saturating_sub(rss[WARM]);
    let kept_if_queued = (ROUNDS - 1 - WARM) * PER_ROUND * 8 / 1024;
    println!("RSS per round (KiB): {rss:?}; grown {grown} KiB after warm-up");
    assert!(
        grown < kept_if_queued / 4,
        "RSS grew {grown} KiB while {} samples were recorded without a scrape \
         ({kept_if_queued} KiB if every sample stays queued): {rss:?}",
        (ROUNDS - 1 - WARM) * PER_ROUND
    );
}

/// L15: the inventory is read first, then audited as what happened. With the token table
/// gone (a lost table or a revoked grant), the listing fails and the audit trail says so;
/// before, a success event was written before the read.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_inventory_that_cannot_be_read_is_audited_as_a_failure() {
    let app = helpers::spawn_app("keyslist").await;
    let (status, _) = app.get("auditor", "/v1/keys").await;
    assert_eq!(status, 200);
    let mut db = app.db().await;
    sqlx::query("ALTER TABLE tokens RENAME TO tokens_away")
        .execute(&mut db)
        .await
        .unwrap();
    let (status, body) = app.get("auditor", "/v1/keys").await;
    sqlx::query("ALTER TABLE tokens_away RENAME TO tokens")
        .execute(&mut db)
        .await
        .unwrap();
    assert!(status >= 500, "{status} {body}");
    assert!(body.get("keys").is_none(), "{body}");
    let events: Vec<(String, String)> = sqlx::query_as(
        "SELECT outcome, COALESCE(reason, '') FROM audit_events \
         WHERE action = 'keys.list' ORDER BY seq",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    let outcomes: Vec<&str> = events.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(
        outcomes,
        ["success", "failure"],
        "one served listing, one failed: {events:?}"
    );
    assert_eq!(events[1].1, body["error"]["code"].as_str().unwrap());
}

/// L8: with no client configured anywhere, `serve` refuses to start (before it opens the
/// HSM or the database) and says what to do; `TOKENVAULT_DEV_MODE=true` (what scripts/run
/// sets) lets the development clients in.
#[tokio::test(flavor = "multi_thread")]
async fn serve_refuses_the_development_clients_unless_the_set_up_asked_for_them() {
    let (_dir, s) = helpers::process_settings("devclients");
    let o = helpers::cli(&s)
        .arg("init")
        .args(helpers::bootstrap_args())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let mut child = helpers::cli(&s)
        .env_remove("TOKENVAULT_CONFIG")
        .env_remove("TOKENVAULT_DEV_MODE")
        .env(
            "TOKENVAULT_SERVER__LISTEN",
            format!("127.0.0.1:{}", helpers::free_port()),
        )
        .arg("serve")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve was still running after 30 s with the development clients");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    for needle in ["[clients]", "TOKENVAULT_DEV_MODE=true", "scripts/run"] {
        assert!(stderr.contains(needle), "missing {needle:?} in: {stderr}");
    }

    let mut dev = helpers::cli(&s);
    dev.env_remove("TOKENVAULT_CONFIG")
        .env("TOKENVAULT_DEV_MODE", "true");
    let (mut child, port) = helpers::serve(dev, "serve-devclients").await;
    let (status, body) = {
        let r = helpers::client("app")
            .get(format!("https://localhost:{port}/v1/keys"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    let _ = child.kill();
    let _ = child.wait();
    // The development `app` client is admitted (and, being no auditor, refused the inventory).
    assert_eq!(status, 403, "{body}");
}

/// L13: the database and its WAL and shared-memory files, and the HSM lock file, are
/// created with mode 0600 — never readable by others, not even for a moment — whatever the
/// umask; so are the private keys `dev-certs` writes; and `serve` refuses a server TLS key
/// that others may read, like the PIN file.
#[tokio::test(flavor = "multi_thread")]
async fn files_the_vault_creates_are_private_from_the_start() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let dir = helpers::test_dir("private");
    // A control: what this process's umask gives a file created without a mode.
    let control = dir.join("control");
    std::fs::write(&control, "x").unwrap();
    let umask_leaks = mode(&control) & 0o077 != 0;

    let lock = dir.join("hsm-objects.lock");
    let app = helpers::spawn_with("private", |s, _| {
        if helpers::postgres().is_none() {
            s.hsm.lock_file = lock.clone();
        }
    })
    .await;
    let _ = app.tokenize("card", "4111111111111111").await;
    if helpers::postgres().is_none() {
        let db = app.dir.join("vault.db");
        for p in [
            db.clone(),
            db.with_extension("db-wal"),
            db.with_extension("db-shm"),
            lock.clone(),
        ] {
            assert_eq!(mode(&p) & 0o077, 0, "{} is {:o}", p.display(), mode(&p));
        }
    }

    let out = dir.join("dev-tls");
    let o = Command::new(env!("CARGO_BIN_EXE_tokenvault"))
        .args(["dev-certs", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for key in [
        "server-key.pem",
        "app-key.pem",
        "tokenizer-key.pem",
        "auditor-key.pem",
    ] {
        assert_eq!(mode(&out.join(key)), 0o600, "{key}");
    }

    // The server key: a copy others may read is refused, naming the fix.
    let mut s = app.settings.clone();
    let loose = dir.join("loose-key.pem");
    std::fs::copy(&s.server.tls_key, &loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    s.server.tls_key = loose.clone();
    let err = tokenvault::api::Server::bind(s)
        .await
        .err()
        .expect("a server key readable by others is refused")
        .to_string();
    assert!(
        err.contains("chmod 600") && err.contains("loose-key.pem"),
        "{err}"
    );
    println!("umask would have let others read new files: {umask_leaks}");
}
