//! Issue 14, item 4 (review finding M3): identity comes from the one source
//! `server.identity` names, never a fallback; ambiguous certificates are refused; client
//! certificates are checked against CRLs that are re-read without a restart.

use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use serde_json::json;
use tokenvault::config::IdentitySource;
use tokenvault::devpki::Issued;

use crate::helpers::{self, http_client, pki, serial_of, spawn_with};

/// POST /v1/tokenize presenting `cert` on a fresh connection: the status, or the error.
async fn tokenize_as(app: &helpers::TestApp, cert: &Issued) -> Result<u16, String> {
    http_client(Some(cert))
        .post(app.url("/v1/tokenize"))
        .json(&json!({"type": "card", "value": "4111111111111111"}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn in_uri_mode_only_the_one_uri_san_with_the_prefix_names_the_client() {
    let app = spawn_with("id-uri", |s, _| {
        s.server.identity = IdentitySource::Uri;
        s.server.identity_uri_prefix = "spiffe://".into();
        let app_policy = s.clients["app"].clone();
        s.clients.clear();
        s.clients
            .insert("spiffe://payments/checkout".into(), app_policy);
    })
    .await;
    let ca = &pki().ca;
    let checkout = ca
        .client_with(Some("anything"), &["spiffe://payments/checkout"])
        .unwrap();
    assert_eq!(tokenize_as(&app, &checkout).await, Ok(200));
    // The attack of M3: a CN spelling the URI identity, with no URI SAN.
    let posing_cn = ca
        .client_with(Some("spiffe://payments/checkout"), &[])
        .unwrap();
    assert_eq!(
        tokenize_as(&app, &posing_cn).await,
        Ok(401),
        "CN posing as URI"
    );
    // The wanted URI placed first among several.
    let several = ca
        .client_with(
            Some("x"),
            &["spiffe://payments/checkout", "spiffe://other/team"],
        )
        .unwrap();
    assert_eq!(
        tokenize_as(&app, &several).await,
        Ok(401),
        "several URI SANs"
    );
    // A URI outside the configured prefix, and none at all with a known CN.
    let foreign_scheme = ca
        .client_with(Some("app"), &["https://payments/checkout"])
        .unwrap();
    assert_eq!(tokenize_as(&app, &foreign_scheme).await, Ok(401), "prefix");
    assert_eq!(
        tokenize_as(&app, &pki().clients["app"]).await,
        Ok(401),
        "a CN-only certificate in uri mode"
    );
}

#[tokio::test]
async fn in_cn_mode_only_the_cn_names_the_client_and_it_cannot_pose_as_a_uri() {
    let app = spawn_with("id-cn", |_, _| {}).await;
    assert_eq!(
        app.settings.server.identity,
        IdentitySource::Cn,
        "the development default is what dev-certs issues: CN"
    );
    let ca = &pki().ca;
    // A URI SAN does not displace the CN.
    let with_uri = ca
        .client_with(Some("app"), &["spiffe://payments/checkout"])
        .unwrap();
    assert_eq!(tokenize_as(&app, &with_uri).await, Ok(200));
    let posing_cn = ca
        .client_with(Some("spiffe://payments/checkout"), &[])
        .unwrap();
    assert_eq!(tokenize_as(&app, &posing_cn).await, Ok(401), "CN with ://");
    let several = ca
        .client_with(Some("app"), &["spiffe://a/b", "spiffe://c/d"])
        .unwrap();
    assert_eq!(
        tokenize_as(&app, &several).await,
        Ok(401),
        "several URI SANs"
    );
}

/// Polls `f` until it returns true or `secs` pass.
async fn eventually(secs: u64, mut f: impl AsyncFnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < end {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_once_the_crl_file_changes_without_a_restart() {
    let ca = &pki().ca;
    let app = spawn_with("crl", |s, dir| {
        let path = dir.join("clients.crl.pem");
        std::fs::write(&path, ca.crl(&[], 1).unwrap()).unwrap();
        s.server.crl_file = Some(path);
        s.server.crl_reload_secs = 1;
    })
    .await;
    let crl = app.dir.join("clients.crl.pem");
    let (victim, other) = (&pki().clients["app"], &pki().clients["tokenizer"]);
    assert_eq!(tokenize_as(&app, victim).await, Ok(200));
    let serial = serial_of(victim);
    std::fs::write(&crl, ca.crl(&[&serial], 2).unwrap()).unwrap();
    let refused = eventually(10, async || tokenize_as(&app, victim).await.is_err()).await;
    assert!(
        refused,
        "the revoked certificate was still admitted 10 s after the CRL changed"
    );
    assert_eq!(tokenize_as(&app, other).await, Ok(200), "another client");
    // A CRL file that no longer parses keeps the last good one (and logs an error).
    std::fs::write(
        &crl,
        "-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        tokenize_as(&app, victim).await.is_err(),
        "a bad CRL re-admitted it"
    );
    assert_eq!(tokenize_as(&app, other).await, Ok(200));
    // DER works as well as PEM: an empty CRL in DER admits the certificate again.
    let pem = ca.crl(&[], 3).unwrap();
    let der = rustls::pki_types::CertificateRevocationListDer::from_pem_slice(pem.as_bytes());
    std::fs::write(&crl, der.unwrap().as_ref()).unwrap();
    let back = eventually(10, async || tokenize_as(&app, victim).await == Ok(200)).await;
    assert!(back, "a DER CRL without the serial was not picked up");
}

#[tokio::test]
async fn a_configured_but_unreadable_crl_stops_start_up() {
    let dir = helpers::test_dir("crl-bad");
    let mut s = helpers::api_settings(&dir, "crl-bad");
    helpers::init_vault(&s).await;
    for (name, content) in [
        ("missing.crl", None),
        ("bad.crl", Some(&b"\x30\x03\x02\x01"[..])),
    ] {
        if let Some(content) = content {
            std::fs::write(dir.join(name), content).unwrap();
        }
        s.server.crl_file = Some(dir.join(name));
        let e = tokenvault::api::Server::bind(s.clone())
            .await
            .err()
            .expect(name);
        assert!(format!("{e:#}").contains("CRL"), "{name}: {e:#}");
    }
}
