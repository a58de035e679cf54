//! The API harness: the real server in this process on port 0, real TLS, real SoftHSM2,
//! a fresh database per test; requests as the test identities.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokenvault::config::Settings;

use super::{api_settings, capture_logs, captured, client, connect, test_dir};

pub struct TestApp {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub settings: Settings,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts the real server (init first) on a random port.
pub async fn spawn_app(tag: &str) -> TestApp {
    spawn_with(tag, |_, _| {}).await
}

pub async fn spawn_with(tag: &str, tweak: impl FnOnce(&mut Settings, &std::path::Path)) -> TestApp {
    capture_logs();
    let dir = test_dir(tag);
    let mut settings = api_settings(&dir, tag);
    tweak(&mut settings, &dir);
    init_vault(&settings).await;
    let server = tokenvault::api::Server::bind(settings.clone())
        .await
        .unwrap();
    let addr = server.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        dir,
        settings,
        shutdown: Some(tx),
    }
}

impl TestApp {
    /// A second node of this vault: another server in this process on the same database
    /// and HSM token, on its own port.
    pub async fn another_node(&self) -> TestApp {
        let server = tokenvault::api::Server::bind(self.settings.clone())
            .await
            .unwrap();
        let addr = server.local_addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        TestApp {
            addr,
            dir: self.dir.clone(),
            settings: self.settings.clone(),
            shutdown: Some(tx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    pub async fn post(
        &self,
        who: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let r = client(who)
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        captured("POST", path, r).await
    }

    /// A POST with extra headers (`Tokenvault-Approval`, …).
    pub async fn post_with(
        &self,
        who: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let mut req = client(who).post(self.url(path)).json(&body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        captured("POST", path, req.send().await.unwrap()).await
    }

    pub async fn get(&self, who: &str, path: &str) -> (u16, serde_json::Value) {
        let r = client(who).get(self.url(path)).send().await.unwrap();
        captured("GET", path, r).await
    }

    pub async fn delete(&self, who: &str, path: &str) -> (u16, serde_json::Value) {
        let r = client(who).delete(self.url(path)).send().await.unwrap();
        captured("DELETE", path, r).await
    }

    pub async fn tokenize(&self, ty: &str, value: &str) -> String {
        let (status, body) = self
            .post(
                "app",
                "/v1/tokenize",
                serde_json::json!({"type": ty, "value": value}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// A direct connection to the test's database.
    pub async fn db(&self) -> sqlx::AnyConnection {
        connect(&self.settings).await
    }
}

/// The Prometheus text of `/metrics` at `url` (public in the test configuration).
pub async fn metrics_text(url: &str) -> String {
    client("auditor")
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Every route of the API (method, OpenAPI path). The permission matrix and the OpenAPI
/// test both compare against this list, so a route added to one place only fails a test.
pub const ROUTES: [(&str, &str); 14] = [
    ("POST", "/v1/tokenize"),
    ("POST", "/v1/tokenize/batch"),
    ("POST", "/v1/detokenize"),
    ("POST", "/v1/detokenize/batch"),
    ("GET", "/v1/tokens/{token}"),
    ("DELETE", "/v1/tokens/{token}"),
    ("POST", "/v1/encrypt"),
    ("POST", "/v1/decrypt"),
    ("POST", "/v1/rewrap"),
    ("GET", "/v1/keys"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
];

/// `tokenvault init` in process, for a test's set-up. SoftHSM2 rarely answers
/// `CKR_GENERAL_ERROR` to a key generation while other processes of the suite work on the
/// same token (seen once in about ten full runs, under the object lock); init is
/// idempotent, so the set-up tries once more with a fresh vault (a failed HSM call marks
/// the first one down). Only the set-up retries: what a test asserts runs once.
pub async fn init_vault(settings: &Settings) {
    for attempt in 1..=2 {
        let vault = tokenvault::vault::Vault::open(settings.clone())
            .await
            .unwrap();
        if tokenvault::officers::Registry::load(&vault.store)
            .await
            .unwrap()
            .is_empty()
        {
            super::bootstrap_officers(&vault.store).await;
        }
        let done = vault.keys.init("test", tokenvault::vault::now_ms()).await;
        vault.store.close().await;
        match done {
            Ok(_) => return,
            Err(e) if attempt == 1 => eprintln!("test set-up: init failed ({e}); once more"),
            Err(e) => panic!("test set-up: init failed twice: {e}"),
        }
    }
}
