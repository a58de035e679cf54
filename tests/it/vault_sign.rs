//! Transit's keyed digests and signatures (issue 16). `hmac` and its `verify`: per key
//! version, their own grant. `sign` and `verify` with signing keys made in the HSM: the
//! private half never leaves the token, signatures check out with tools that are not
//! ours, a rotation keeps old signatures verifiable, and each key needs its own grants.

use serde_json::{Value, json};

use crate::helpers::{TestApp, VaultClient, b64, events, spawn_vault, spawn_with};

async fn spawn_signing(
    tag: &str,
    tweak: impl FnOnce(&mut tokenvault::config::Settings),
) -> TestApp {
    spawn_with(tag, |s, _| {
        let key = |algorithm: &str| {
            serde_json::from_value::<tokenvault::keys::SigningKeySettings>(
                json!({ "algorithm": algorithm }),
            )
            .unwrap()
        };
        s.signing_keys.insert("receipts".into(), key("ecdsa-p256"));
        s.signing_keys.insert("docs".into(), key("ed25519"));
        tweak(s);
    })
    .await
}

async fn sign(c: &VaultClient, app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    let (status, body, _) = c
        .call(app, "POST", &format!("/v1/transit/sign/{key}"), Some(body))
        .await;
    (status, body)
}

async fn verify(c: &VaultClient, app: &TestApp, key: &str, input: &str, sig: &str) -> bool {
    let (status, body, _) = c
        .call(
            app,
            "POST",
            &format!("/v1/transit/verify/{key}"),
            Some(json!({"input": b64(input), "signature": sig})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["valid"].as_bool().unwrap()
}

fn signature_bytes(sig: &str) -> Vec<u8> {
    use base64::Engine;
    let body = sig.splitn(3, ':').nth(2).unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

#[tokio::test]
async fn transit_signs_in_the_hsm_and_others_verify_the_signatures() {
    let app = spawn_signing("vault-sign", |_| {}).await;
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    // Key descriptions need `keys:read`, which the auditor has.
    let mut auditor = VaultClient::of("auditor");
    auditor.login(&app).await;

    // ECDSA P-256: DER signature over SHA-256, checked by openssl against the PEM the
    // key description publishes.
    let (status, key, _) = auditor
        .call(&app, "GET", "/v1/transit/keys/receipts", None)
        .await;
    assert_eq!(status, 200, "{key}");
    assert_eq!(key["data"]["type"], "ecdsa-p256");
    assert_eq!(key["data"]["supports_signing"], true);
    assert_eq!(key["data"]["supports_encryption"], false);
    let pem = key["data"]["keys"]["1"]["public_key"].as_str().unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let (status, body) = sign(&c, &app, "receipts", json!({"input": b64("receipt 42")})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["key_version"], 1);
    let sig = body["data"]["signature"].as_str().unwrap().to_owned();
    assert!(sig.starts_with("vault:v1:"), "{sig}");
    let dir = &app.dir;
    std::fs::write(dir.join("pub.pem"), pem).unwrap();
    std::fs::write(dir.join("sig.der"), signature_bytes(&sig)).unwrap();
    let openssl = |message: &str| {
        std::fs::write(dir.join("msg"), message).unwrap();
        std::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(dir.join("pub.pem"))
            .arg("-signature")
            .arg(dir.join("sig.der"))
            .arg(dir.join("msg"))
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(
        openssl("receipt 42"),
        "openssl refuses the vault's signature"
    );
    assert!(
        !openssl("receipt 43"),
        "openssl accepts it for another message"
    );
    assert!(verify(&c, &app, "receipts", "receipt 42", &sig).await);
    assert!(!verify(&c, &app, "receipts", "receipt 43", &sig).await);

    // A prehashed input is signed as the digest it is.
    use sha2::Digest;
    let digest = sha2::Sha256::digest(b"receipt 42");
    let (status, body) = sign(
        &c,
        &app,
        "receipts",
        json!({"input": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, digest), "prehashed": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    std::fs::write(
        dir.join("sig.der"),
        signature_bytes(body["data"]["signature"].as_str().unwrap()),
    )
    .unwrap();
    assert!(
        openssl("receipt 42"),
        "the prehashed signature is not over the message"
    );

    // Ed25519: 64 bytes over the input itself, checked with ed25519-dalek against the
    // published key.
    let (_, key, _) = auditor
        .call(&app, "GET", "/v1/transit/keys/docs", None)
        .await;
    assert_eq!(key["data"]["type"], "ed25519");
    let public = signature_bytes(&format!(
        "x:y:{}",
        key["data"]["keys"]["1"]["public_key"].as_str().unwrap()
    ));
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&public.try_into().unwrap()).unwrap();
    let (status, body) = sign(&c, &app, "docs", json!({"input": b64("contract")})).await;
    assert_eq!(status, 200, "{body}");
    let sig = body["data"]["signature"].as_str().unwrap().to_owned();
    let raw = ed25519_dalek::Signature::from_slice(&signature_bytes(&sig)).unwrap();
    vk.verify_strict(b"contract", &raw).unwrap();
    assert!(vk.verify_strict(b"contracts", &raw).is_err());
    assert!(verify(&c, &app, "docs", "contract", &sig).await);
    // A signature by one key is not one by the other.
    assert!(!verify(&c, &app, "receipts", "contract", &sig).await);

    // The private halves are token objects that can never leave the HSM.
    let vault = tokenvault::vault::Vault::open(app.settings.clone())
        .await
        .unwrap();
    let inventory = vault.keys.inventory(0).await.unwrap();
    assert_eq!(inventory.signing_keys.len(), 2);
    for k in &inventory.signing_keys {
        let ev = vault.keys.hsm().signing_key_evidence(&k.hsm_label).unwrap();
        assert!(
            ev.sensitive && !ev.extractable && ev.never_extractable && ev.local,
            "{ev:?}"
        );
    }

    // Every signature and verification is in the trail, with the verification's answer.
    let trail = events(&app, "sign").await;
    let count = |action: &str, reason: Option<&str>| {
        trail
            .iter()
            .filter(|(a, o, r)| a == action && o == "success" && r.as_deref() == reason)
            .count()
    };
    assert_eq!(count("sign", None), 3, "{trail:?}");
    assert_eq!(count("sign.verify", Some("valid")), 2, "{trail:?}");
    assert_eq!(count("sign.verify", Some("invalid")), 2, "{trail:?}");
}

#[tokio::test]
async fn a_rotation_signs_with_the_new_version_and_old_signatures_still_verify() {
    let app = spawn_signing("vault-sign-rotate", |_| {}).await;
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    let (_, body) = sign(&c, &app, "receipts", json!({"input": b64("m")})).await;
    let old = body["data"]["signature"].as_str().unwrap().to_owned();
    let vault = tokenvault::vault::Vault::open(app.settings.clone())
        .await
        .unwrap();
    // An officer's signed request, as `tokenvault keys rotate receipts` makes it.
    let op = tokenvault::officers::Operation::Rotate {
        keyring: "receipts".into(),
    };
    let (doc, actor) = crate::helpers::sign_request(&vault.store, op, &["alice"])
        .await
        .expect("one officer approves a rotation");
    let done = tokenvault::officers::execute(
        &vault.store,
        &vault.keys,
        &doc,
        &actor,
        tokenvault::vault::now_ms(),
    )
    .await
    .unwrap();
    assert!(format!("{done:?}").contains("receipts v2"), "{done:?}");
    // The server picks the rotation up within its 2 s refresh.
    tokio::time::sleep(std::time::Duration::from_millis(2600)).await;
    let (status, body) = sign(&c, &app, "receipts", json!({"input": b64("m")})).await;
    assert_eq!(status, 200, "{body}");
    let new = body["data"]["signature"].as_str().unwrap().to_owned();
    assert!(new.starts_with("vault:v2:"), "{new}");
    assert!(verify(&c, &app, "receipts", "m", &old).await);
    assert!(verify(&c, &app, "receipts", "m", &new).await);
    // v1 verifies only; a version that does not exist is an error, not "invalid".
    let (status, body) = sign(
        &c,
        &app,
        "receipts",
        json!({"input": b64("m"), "key_version": 1}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transit/verify/receipts",
            Some(json!({"input": b64("m"), "signature": old.replace("vault:v1:", "vault:v9:")})),
        )
        .await;
    assert!(status == 400 || status == 422, "{status} {body}");
    let mut auditor = VaultClient::of("auditor");
    auditor.login(&app).await;
    let (_, key, _) = auditor
        .call(&app, "GET", "/v1/transit/keys/receipts", None)
        .await;
    assert_eq!(key["data"]["latest_version"], 2);
    let keys = key["data"]["keys"].as_object().unwrap();
    assert_ne!(keys["1"]["public_key"], keys["2"]["public_key"]);
    let states: Vec<_> = vault
        .keys
        .inventory(0)
        .await
        .unwrap()
        .signing_keys
        .into_iter()
        .filter(|k| k.name == "receipts")
        .map(|k| (k.version, k.state))
        .collect();
    assert_eq!(
        states,
        [(1, "verify_only".to_owned()), (2, "active".to_owned())]
    );
}

#[tokio::test]
async fn each_signing_key_needs_its_own_grants() {
    let app = spawn_signing("vault-sign-grants", |s| {
        s.clients.get_mut("tokenizer").unwrap().permissions = ["encrypt:pii", "sign:docs"]
            .iter()
            .map(|g| tokenvault::guard::Grant::parse(g).unwrap())
            .collect();
    })
    .await;
    let mut t = VaultClient::of("tokenizer");
    t.login(&app).await;
    let mut a = VaultClient::of("app");
    a.login(&app).await;
    let (_, body) = sign(&a, &app, "receipts", json!({"input": b64("m")})).await;
    let sig = body["data"]["signature"].as_str().unwrap().to_owned();

    // encrypt: does not give sign:, sign:docs does not give receipts, and sign: does not
    // give verify:.
    let (status, body) = sign(&t, &app, "receipts", json!({"input": b64("m")})).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = sign(&t, &app, "docs", json!({"input": b64("m")})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = t
        .call(
            &app,
            "POST",
            "/v1/transit/verify/receipts",
            Some(json!({"input": b64("m"), "signature": sig})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let denied = events(&app, "sign")
        .await
        .into_iter()
        .filter(|(_, o, _)| o == "denied")
        .count();
    assert_eq!(denied, 2);

    // A keyring does not sign and a signing key does not encrypt, even for a client that
    // may do everything.
    let (status, body) = sign(&a, &app, "pii", json!({"input": b64("m")})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body, _) = a
        .call(
            &app,
            "POST",
            "/v1/transit/encrypt/receipts",
            Some(json!({"plaintext": b64("m")})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    // A derivation context or an Ed25519 prehash is refused, not ignored.
    let (status, _) = sign(
        &a,
        &app,
        "docs",
        json!({"input": b64("m"), "context": b64("c")}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = sign(
        &a,
        &app,
        "docs",
        json!({"input": b64("m"), "prehashed": true}),
    )
    .await;
    assert_eq!(status, 400);
}

/// Transit `hmac` and `verify`: a keyed digest per key version, checked in constant time
/// and bound to its keyring; permission `encrypt:` and an audit event each.
#[tokio::test]
async fn hmac_digests_verify_only_under_their_keyring_and_input() {
    let app = spawn_vault("vault-hmac").await;
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    let (status, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transit/hmac/pii",
            Some(json!({"input": b64("msg")})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mac = body["data"]["hmac"].as_str().unwrap().to_owned();
    assert!(mac.starts_with("vault:v1:"), "{mac}");
    let verify = |path: &'static str, input: &str, mac: &str| {
        (path, json!({"input": b64(input), "hmac": mac}))
    };
    for ((path, body), want) in [
        (verify("/v1/transit/verify/pii", "msg", &mac), true),
        (verify("/v1/transit/verify/pii", "msh", &mac), false),
        (verify("/v1/transit/verify/pan", "msg", &mac), false),
        (verify("/v1/transit/verify/pii/sha2-256", "msg", &mac), true),
    ] {
        let (status, answer, _) = c.call(&app, "POST", path, Some(body)).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["data"]["valid"], want, "{path}");
    }
    // The digest is not the encryption key's: two keyrings give two digests.
    let (_, other, _) = c
        .call(
            &app,
            "POST",
            "/v1/transit/hmac/pan",
            Some(json!({"input": b64("msg")})),
        )
        .await;
    assert_ne!(other["data"]["hmac"], mac);
    let (status, _, _) = c
        .call(
            &app,
            "POST",
            "/v1/transit/hmac/pii/sha2-512",
            Some(json!({"input": b64("msg")})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transit/hmac/pii",
            Some(json!({"batch_input": [{"input": b64("a"), "reference": "r"}, {"input": "%%"}]})),
        )
        .await;
    assert_eq!(status, 200, "an hmac batch answers 200: {body}");
    assert_eq!(body["data"]["batch_results"][0]["reference"], "r");
    assert!(body["data"]["batch_results"][1]["error"].is_string());
    let mut t = VaultClient::of("tokenizer");
    t.login(&app).await;
    let (status, _, _) = t
        .call(
            &app,
            "POST",
            "/v1/transit/hmac/pii",
            Some(json!({"input": b64("msg")})),
        )
        .await;
    assert_eq!(status, 403);
    let audited = events(&app, "hmac").await;
    assert!(
        audited.contains(&(
            "hmac.verify".into(),
            "success".into(),
            Some("invalid".into())
        )),
        "{audited:?}"
    );
    assert!(
        audited.contains(&("hmac".into(), "denied".into(), Some("forbidden".into()))),
        "{audited:?}"
    );
}

/// Review of hmac (finding 1): a keyed digest is deterministic, so it is a guessing
/// oracle against any stored digest; it needs its own grant, `hmac:<keyring>`, and
/// `encrypt:` alone does not give it.
#[tokio::test]
async fn hmac_needs_its_own_grant() {
    let app = spawn_with("vault-hmac-grant", |s, _| {
        s.clients.get_mut("tokenizer").unwrap().permissions =
            vec![tokenvault::guard::Grant::parse("encrypt:pii").unwrap()];
    })
    .await;
    let mut t = VaultClient::of("tokenizer");
    t.login(&app).await;
    let (status, _, _) = t
        .call(
            &app,
            "POST",
            "/v1/transit/encrypt/pii",
            Some(json!({"plaintext": b64("x")})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body, _) = t
        .call(
            &app,
            "POST",
            "/v1/transit/hmac/pii",
            Some(json!({"input": b64("x")})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
}

/// Review of hmac (finding 2): new digests come only from the active version, as new
/// ciphertexts do; an older version still verifies the digests it made.
#[tokio::test]
async fn only_the_active_version_makes_new_digests() {
    let app = spawn_with("vault-hmac-version", |_, _| {}).await;
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    let (_, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transit/hmac/pii",
            Some(json!({"input": b64("m")})),
        )
        .await;
    let old = body["data"]["hmac"].as_str().unwrap().to_owned();
    let vault = tokenvault::vault::Vault::open(app.settings.clone())
        .await
        .unwrap();
    vault
        .keys
        .rotate("pii", "test", None, tokenvault::vault::now_ms())
        .await
        .unwrap();
    // The server picks the rotation up within its 2 s refresh.
    tokio::time::sleep(std::time::Duration::from_millis(2600)).await;
    let (status, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transit/hmac/pii",
            Some(json!({"input": b64("m"), "key_version": 1})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (_, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transit/hmac/pii",
            Some(json!({"input": b64("m")})),
        )
        .await;
    assert!(
        body["data"]["hmac"]
            .as_str()
            .unwrap()
            .starts_with("vault:v2:"),
        "{body}"
    );
    let (_, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transit/verify/pii",
            Some(json!({"input": b64("m"), "hmac": old})),
        )
        .await;
    assert_eq!(body["data"]["valid"], true, "{body}");
}

/// Review of sign (finding 2): the key report reconciles signing key pairs with the
/// database like the other keys: present pairs are not orphans, a deleted one is missing.
#[tokio::test]
async fn the_key_report_reconciles_signing_key_pairs() {
    let app = spawn_signing("vault-sign-report", |_| {}).await;
    let vault = tokenvault::vault::Vault::open(app.settings.clone())
        .await
        .unwrap();
    let now = tokenvault::vault::now_ms();
    let titles = |r: &tokenvault::audit::report::Report| {
        r.findings
            .iter()
            .map(|f| f.title.clone())
            .collect::<Vec<_>>()
    };
    let report = tokenvault::audit::report::collect(&vault, 0, now)
        .await
        .unwrap();
    let about_signing: Vec<_> = titles(&report)
        .into_iter()
        .filter(|t| t.contains("-sign-"))
        .collect();
    assert!(about_signing.is_empty(), "{about_signing:?}");
    let label = vault.keys.inventory(now).await.unwrap().signing_keys[0]
        .hsm_label
        .clone();
    vault.keys.hsm().destroy_objects(&label).unwrap();
    let report = tokenvault::audit::report::collect(&vault, 0, now)
        .await
        .unwrap();
    assert!(
        titles(&report)
            .iter()
            .any(|t| t.contains(&label) && t.contains("missing from the HSM")),
        "{:?}",
        titles(&report)
    );
}

/// Review of sign (finding 7): a signature is made and written by the algorithm of the
/// version that signs, not by what the configuration says now (an operator who edits
/// `algorithm` without rotating still gets signatures that verify).
#[tokio::test]
async fn signatures_follow_the_stored_version_not_an_edited_config() {
    let app = spawn_signing("vault-sign-algo", |_| {}).await;
    let mut edited = app.settings.clone();
    edited.signing_keys.get_mut("receipts").unwrap().algorithm =
        tokenvault::hsm::SignAlgorithm::Ed25519;
    let vault = tokenvault::vault::Vault::open(edited).await.unwrap();
    let services = vault.services();
    let who = services.guard.principal("app", "127.0.0.1");
    let name = tokenvault::keys::KeyringName::parse("receipts").unwrap();
    let options = tokenvault::tokenize::SignOptions {
        prehashed: false,
        marshaling: tokenvault::tokenize::Marshaling::Asn1,
    };
    let crypto = &services.crypto;
    let now = tokenvault::vault::now_ms();
    let signed = crypto
        .sign(&who, &name, None, b"m", options, now)
        .await
        .unwrap();
    let (v, sig) = (signed.version, signed.bytes);
    assert!(
        p256::ecdsa::Signature::from_der(&sig).is_ok(),
        "an ECDSA version's signature is DER"
    );
    assert!(
        crypto
            .verify_signature(&who, &name, v, b"m", &sig, options, now)
            .await
            .unwrap()
    );
}

/// Review of sign (finding 10): ECDSA signatures come out in low-S form (the HSM may give
/// either), so one message has one signature per nonce, and high-S ones are refused.
#[tokio::test]
async fn ecdsa_signatures_are_low_s() {
    let app = spawn_signing("vault-sign-low-s", |_| {}).await;
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    for _ in 0..10 {
        let (status, body) = sign(&c, &app, "receipts", json!({"input": b64("m")})).await;
        assert_eq!(status, 200, "{body}");
        let sig = body["data"]["signature"].as_str().unwrap().to_owned();
        let parsed = p256::ecdsa::Signature::from_der(&signature_bytes(&sig)).unwrap();
        assert!(parsed.normalize_s().is_none(), "a high-S signature: {sig}");
        // Its high-S twin verifies mathematically, and is refused.
        let (r, s) = parsed.split_scalars();
        let twin = p256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
        use base64::Engine;
        let twin = format!(
            "vault:v1:{}",
            base64::engine::general_purpose::STANDARD.encode(twin.to_der().as_bytes())
        );
        assert!(!verify(&c, &app, "receipts", "m", &twin).await);
    }
}

/// Review of sign (finding 11): as in Vault, `marshaling_algorithm` applies to ECDSA only;
/// an Ed25519 signature stays standard base64 whatever it says.
#[tokio::test]
async fn ed25519_signatures_ignore_the_marshaling() {
    let app = spawn_signing("vault-sign-jws", |_| {}).await;
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    let (_, body) = sign(
        &c,
        &app,
        "docs",
        json!({"input": b64("m"), "marshaling_algorithm": "jws"}),
    )
    .await;
    let sig = body["data"]["signature"].as_str().unwrap().to_owned();
    assert_eq!(signature_bytes(&sig).len(), 64, "{sig}");
    assert!(verify(&c, &app, "docs", "m", &sig).await);
}
