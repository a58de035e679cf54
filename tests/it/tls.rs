//! Issue 3: nobody reaches the vault without a valid certificate from the configured CA,
//! and nothing below TLS 1.3 is spoken.

use crate::helpers::{self, client_tls, pki, spawn_app};

async fn try_get(app: &helpers::TestApp, config: rustls::ClientConfig) -> Result<u16, String> {
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .build()
        .unwrap();
    client
        .get(app.url("/healthz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn a_valid_client_certificate_over_tls_1_3_is_admitted() {
    let app = spawn_app("tls-ok").await;
    let ok = try_get(
        &app,
        client_tls(Some(&pki().clients["app"]), &[&rustls::version::TLS13]),
    )
    .await;
    assert_eq!(ok, Ok(200));
}

#[tokio::test]
async fn tls_1_2_is_refused_even_with_a_valid_certificate() {
    let app = spawn_app("tls12").await;
    let r = try_get(
        &app,
        client_tls(Some(&pki().clients["app"]), &[&rustls::version::TLS12]),
    )
    .await;
    assert!(r.is_err(), "TLS 1.2 was accepted: {r:?}");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let app = spawn_app("nocert").await;
    let r = try_get(&app, client_tls(None, &[&rustls::version::TLS13])).await;
    assert!(r.is_err(), "no certificate was accepted: {r:?}");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let app = spawn_app("foreign").await;
    let r = try_get(
        &app,
        client_tls(Some(&pki().foreign), &[&rustls::version::TLS13]),
    )
    .await;
    assert!(r.is_err(), "a foreign CA's certificate was accepted: {r:?}");
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let app = spawn_app("expired").await;
    let r = try_get(
        &app,
        client_tls(Some(&pki().expired), &[&rustls::version::TLS13]),
    )
    .await;
    assert!(r.is_err(), "an expired certificate was accepted: {r:?}");
}

fn s_client(
    addr: std::net::SocketAddr,
    dir: std::path::PathBuf,
    version: &'static str,
) -> std::process::Output {
    std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            version,
            "-CAfile",
        ])
        .arg(dir.join("ca.pem"))
        .arg("-cert")
        .arg(dir.join("app.pem"))
        .arg("-key")
        .arg(dir.join("app-key.pem"))
        .args(["-verify_return_error", "-brief"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed (scripts/test installs it)")
}

#[tokio::test]
async fn openssl_s_client_agrees_tls_1_2_fails_and_1_3_succeeds() {
    let app = spawn_app("openssl").await;
    std::fs::write(app.dir.join("app.pem"), &pki().clients["app"].cert_pem).unwrap();
    std::fs::write(app.dir.join("app-key.pem"), &pki().clients["app"].key_pem).unwrap();
    let (addr, dir) = (app.addr, app.dir.clone());
    let old = tokio::task::spawn_blocking(move || s_client(addr, dir, "-tls1_2"))
        .await
        .unwrap();
    assert!(!old.status.success(), "TLS 1.2 handshake succeeded");
    let dir = app.dir.clone();
    let new = tokio::task::spawn_blocking(move || s_client(addr, dir, "-tls1_3"))
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&new.stderr).to_string() + &String::from_utf8_lossy(&new.stdout);
    assert!(text.contains("TLSv1.3"), "{text}");
}
