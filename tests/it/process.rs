//! The real binary: `init` is idempotent, `keys list` shows the inventory, and a record
//! acknowledged by `serve` survives `kill -9` and a restart (keys come back from the
//! database through the HSM).

use std::path::Path;
use std::process::{Child, Command};

use crate::helpers;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_tokenvault");

/// The binary with the test's configuration in the environment, as an operator would.
fn tokenvault(dir: &Path, prefix: &str) -> Command {
    let hsm = helpers::test_hsm();
    let mut c = Command::new(BIN);
    c.env(
        "TOKENVAULT_DATABASE__URL",
        format!("sqlite://{}", dir.join("vault.db").display()),
    )
    .env("TOKENVAULT_HSM__TOKEN_LABEL", &hsm.token)
    .env("TOKENVAULT_HSM__PIN_FILE", &hsm.pin_file)
    .env("TOKENVAULT_HSM__LABEL_PREFIX", prefix)
    .env("TOKENVAULT_SERVER__LISTEN", "127.0.0.1:0")
    .env("TOKENVAULT_SERVER__TLS_CERT", dir.join("server.pem"))
    .env("TOKENVAULT_SERVER__TLS_KEY", dir.join("server-key.pem"))
    .env("TOKENVAULT_SERVER__CLIENT_CA", dir.join("ca.pem"))
    .env(
        "TOKENVAULT_LOG",
        "debug,sqlx=warn,hyper=info,h2=info,rustls=info",
    )
    .env_remove("TOKENVAULT_CONFIG")
    // No config file: the development clients, which `serve` admits only when asked.
    .env("TOKENVAULT_DEV_MODE", "true");
    c
}

/// Starts `serve` on a free port, copies its log to the test log directory, returns it
/// and its port once `/readyz` answers 200.
async fn serve(dir: &Path, prefix: &str, run: usize) -> (Child, u16) {
    helpers::serve(tokenvault(dir, prefix), &format!("serve-{prefix}-{run}")).await
}

#[tokio::test(flavor = "multi_thread")]
async fn init_keys_list_and_a_record_surviving_kill_9() {
    let dir = helpers::test_dir("process");
    let mut s = helpers::settings(&dir, "proc");
    helpers::tls_files(&dir, &mut s);
    let prefix = s.hsm.label_prefix.clone();

    let first = tokenvault(&dir, &prefix)
        .arg("init")
        .args(helpers::bootstrap_args())
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        out.contains(&format!("created KEK {prefix}-kek-1")),
        "{out}"
    );
    let second = tokenvault(&dir, &prefix).arg("init").output().unwrap();
    assert!(second.status.success());
    assert_eq!(
        String::from_utf8_lossy(&second.stdout).trim(),
        "tokenvault is initialized; nothing to create."
    );

    let list = tokenvault(&dir, &prefix)
        .args(["keys", "list"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&list.stdout);
    for needle in [
        "KEYRING",
        "VERSION",
        "STATE",
        "KCV",
        "pan",
        "pii",
        "fingerprint",
        "active",
        &format!("{prefix}-kek-1"),
    ] {
        assert!(table.contains(needle), "missing {needle} in\n{table}");
    }
    let json_list = tokenvault(&dir, &prefix)
        .args(["keys", "list", "--json"])
        .output()
        .unwrap();
    let inv: serde_json::Value = serde_json::from_slice(&json_list.stdout).unwrap();
    assert_eq!(inv["keys"].as_array().unwrap().len(), 3);

    // A usage error exits 2; an operational failure exits 1 with a hint.
    assert_eq!(
        tokenvault(&dir, &prefix)
            .args(["keys", "frobnicate"])
            .output()
            .unwrap()
            .status
            .code(),
        Some(2)
    );
    let bad = tokenvault(&dir, &prefix)
        .env("TOKENVAULT_HSM__TOKEN_LABEL", "missing-token")
        .arg("init")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("run scripts/run"));

    let (mut child, port) = serve(&dir, &prefix, 1).await;
    let url = |p: &str| format!("https://localhost:{port}{p}");
    let app = helpers::client("app");
    let resp: serde_json::Value = app
        .post(url("/v1/tokenize"))
        .json(&json!({"type": "pan", "value": "5555555555554444"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = resp["token"].as_str().unwrap().to_owned();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let (mut child, port) = serve(&dir, &prefix, 2).await;
    let url = format!("https://localhost:{port}/v1/detokenize");
    let back: serde_json::Value = app
        .post(url)
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(back["value"], "5555555555554444");
    child.kill().unwrap();
    child.wait().unwrap();
}
