//! Vault clients for the Vault-compatible API suites: an HTTPS client with a certificate
//! and its session token, and the audit events they cause.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::{TestApp, http_client, pki, spawn_with};

/// One Vault client: an HTTPS client with a certificate, and its session token.
pub struct VaultClient {
    pub http: reqwest::Client,
    pub token: Option<String>,
}

impl VaultClient {
    pub fn new(cert: &tokenvault::devpki::Issued) -> Self {
        Self {
            http: http_client(Some(cert)),
            token: None,
        }
    }

    pub fn of(name: &str) -> Self {
        Self::new(&pki().clients[name])
    }

    pub async fn call(
        &self,
        app: &TestApp,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, app.url(path));
        if let Some(t) = &self.token {
            req = req.header("X-Vault-Token", t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body, content_type)
    }

    pub async fn login(&mut self, app: &TestApp) -> Value {
        let (status, body, _) = self
            .call(app, "POST", "/v1/auth/cert/login", Some(json!({})))
            .await;
        assert_eq!(status, 200, "{body}");
        self.token = Some(body["auth"]["client_token"].as_str().unwrap().to_owned());
        body
    }
}

pub fn b64(s: &str) -> String {
    STANDARD.encode(s)
}

pub async fn spawn_vault(tag: &str) -> TestApp {
    spawn_with(tag, |s, _| {
        s.vault_api.token_ttl_secs = 2;
        s.vault_api.token_max_ttl_secs = 5;
    })
    .await
}

/// (action, outcome, reason) of every event of these actions, in order.
pub async fn events(app: &TestApp, prefix: &str) -> Vec<(String, String, Option<String>)> {
    let mut db = app.db().await;
    sqlx::query_as(
        "SELECT action, outcome, reason FROM audit_events WHERE action LIKE $1 ORDER BY seq",
    )
    .bind(format!("{prefix}%"))
    .fetch_all(&mut db)
    .await
    .unwrap()
}
