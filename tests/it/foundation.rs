//! Issue 2: the key hierarchy on the real SoftHSM2 token and a real SQLite file.

use crate::helpers;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use secrecy::SecretString;
use tokenvault::crypto::{Aad, CryptoError};
use tokenvault::hsm::{Hsm, HsmError, Pin, WrapMechanism};
use tokenvault::keys::{KeyError, KeyVersion};
use tokenvault::vault::Vault;

const NOW: i64 = 1_780_000_000_000;

async fn open(dir: &std::path::Path, tag: &str) -> Vault {
    Vault::open(helpers::settings(dir, tag))
        .await
        .expect("vault opens")
}

fn find_one(
    session: &cryptoki::session::Session,
    class: ObjectClass,
    label: &str,
) -> cryptoki::object::ObjectHandle {
    let found = session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1, "exactly one {label}");
    found[0]
}

#[tokio::test]
async fn the_kek_is_generated_in_the_hsm_and_can_never_leave_it() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path(), "kek").await;
    vault.keys.init("test", NOW).await.unwrap();
    let label = vault.keys.labels().kek(1);

    // Read back independently through raw PKCS#11, not through the vault's own code.
    let (_p, session) = helpers::raw_session();
    let kek = find_one(&session, ObjectClass::SECRET_KEY, &label);
    let attrs = session
        .get_attributes(
            kek,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
                AttributeType::Local,
                AttributeType::Token,
                AttributeType::Encrypt,
                AttributeType::Wrap,
            ],
        )
        .unwrap();
    for expected in [
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::NeverExtractable(true),
        Attribute::Local(true),
        Attribute::Token(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(true),
    ] {
        assert!(
            attrs.contains(&expected),
            "{expected:?} missing from {attrs:?}"
        );
    }

    // CKA_VALUE cannot be read: the call fails or leaves the value out.
    let value = session.get_attributes(kek, &[AttributeType::Value]);
    assert!(
        !matches!(value, Ok(ref v) if v.iter().any(|a| matches!(a, Attribute::Value(_)))),
        "the KEK value was readable"
    );

    // Wrapping the KEK with another (extractable-wrapping) key fails.
    let lock = helpers::hsm_object_lock();
    let wrapper = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Token(false),
                Attribute::Wrap(true),
            ],
        )
        .unwrap();
    assert!(
        session
            .wrap_key(&Mechanism::AesKeyWrapPad, wrapper, kek)
            .is_err(),
        "the KEK was wrapped"
    );
    // Making it extractable is refused too.
    assert!(
        session
            .update_attributes(kek, &[Attribute::Extractable(true)])
            .is_err()
    );
    session.destroy_object(wrapper).unwrap();
    drop(lock);

    // The vault's own evidence agrees.
    let ev = vault.keys.hsm().kek_evidence(&label).unwrap();
    assert!(
        ev.sensitive
            && !ev.extractable
            && ev.never_extractable
            && ev.local
            && ev.unwrap
            && !ev.decrypt
    );
}

#[tokio::test]
async fn init_twice_creates_nothing_new_and_the_inventory_shows_every_keyring() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path(), "init").await;
    let first = vault.keys.init("test", NOW).await.unwrap();
    assert_eq!(first.created.len(), 5, "{:?}", first.created);
    let before = vault.keys.inventory(NOW).await.unwrap();
    let second = vault.keys.init("test", NOW + 1000).await.unwrap();
    assert!(second.created.is_empty(), "{:?}", second.created);
    let after = vault.keys.inventory(NOW).await.unwrap();
    assert_eq!(
        serde_json::to_value(&before).unwrap(),
        serde_json::to_value(&after).unwrap()
    );

    let rings: Vec<_> = after
        .keys
        .iter()
        .map(|k| (k.keyring.as_str(), k.version, k.state.as_str()))
        .collect();
    assert_eq!(
        rings,
        [
            ("fingerprint", 1, "active"),
            ("pan", 1, "active"),
            ("pii", 1, "active")
        ]
    );
    for k in &after.keys {
        assert_eq!(k.kcv.len(), 6, "KCV is 3 bytes of hex");
        assert_eq!(k.kek_label, vault.keys.labels().kek(1));
        assert_eq!(k.wrap_mechanism, "CKM_AES_KEY_WRAP_PAD");
    }
    assert_eq!(after.keks.len(), 1);
    // Each data key is distinct.
    let mut kcvs: Vec<_> = after.keys.iter().map(|k| k.kcv.clone()).collect();
    kcvs.dedup();
    assert_eq!(kcvs.len(), 3);
}

#[tokio::test]
async fn sealed_values_open_only_in_their_place_and_survive_a_fresh_key_manager() {
    let dir = tempfile::tempdir().unwrap();
    let settings = helpers::settings(dir.path(), "seal");
    let vault = Vault::open(settings.clone()).await.unwrap();
    vault.keys.init("test", NOW).await.unwrap();
    let (v1, key) = vault.keys.active("pii").await.unwrap();
    let aad = Aad::token("pii", v1.get(), "tok_one");
    let sealed = key.seal(&aad, b"jane@example.com");
    assert_eq!(
        key.open(&aad, &sealed).unwrap().as_slice(),
        b"jane@example.com"
    );
    assert_eq!(
        key.open(&Aad::token("pii", v1.get(), "tok_two"), &sealed),
        Err(CryptoError::DecryptionFailed)
    );
    let mut flipped = sealed.clone();
    flipped[20] ^= 0x01;
    assert_eq!(key.open(&aad, &flipped), Err(CryptoError::DecryptionFailed));

    // A second version cannot open what the first sealed, even with the first's AAD.
    let v2 = vault
        .keys
        .rotate("pii", "test", None, NOW + 1)
        .await
        .unwrap();
    assert_eq!(v2.get(), 2);
    let key2 = vault.keys.key("pii", v2).await.unwrap();
    assert_eq!(key2.open(&aad, &sealed), Err(CryptoError::DecryptionFailed));

    // A new key manager on the same database: keys come back through the HSM.
    drop(vault);
    let reopened = Vault::open(settings).await.unwrap();
    let again = reopened.keys.key("pii", v1).await.unwrap();
    assert_eq!(
        again.open(&aad, &sealed).unwrap().as_slice(),
        b"jane@example.com"
    );
    assert_eq!(reopened.keys.active("pii").await.unwrap().0, v2);
}

#[tokio::test]
async fn the_database_holds_no_data_key_and_no_plaintext_in_clear() {
    if helpers::postgres().is_some() {
        // This inspects the SQLite file byte for byte; the PostgreSQL pass is covered by
        // scripts/leak-scan over a pg_dump.
        eprintln!("skipped on PostgreSQL: inspects the SQLite file");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path(), "leak").await;
    vault.keys.init("test", NOW).await.unwrap();
    let (v, key) = vault.keys.active("pan").await.unwrap();
    let canary = b"CANARY-4111111111111111-PLAINTEXT";
    let sealed = key.seal(&Aad::token("pan", v.get(), "tok_x"), canary);
    // Store the sealed value where a real record would go, so the check sees it.
    std::fs::write(dir.path().join("sealed.bin"), &sealed).unwrap();

    // Unwrap each stored DEK independently (raw PKCS#11) and look for its bytes on disk.
    let (_p, session) = helpers::raw_session();
    let kek = find_one(
        &session,
        ObjectClass::SECRET_KEY,
        &vault.keys.labels().kek(1),
    );
    let wrapped_keys = wrapped_keys(&vault.settings).await;
    assert_eq!(wrapped_keys.len(), 3);
    let _lock = helpers::hsm_object_lock();
    for wrapped in wrapped_keys {
        let dek = session
            .unwrap_key(
                &Mechanism::AesKeyWrapPad,
                kek,
                &wrapped,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Token(false),
                    Attribute::Sensitive(false),
                    Attribute::Extractable(true),
                ],
            )
            .unwrap();
        let Attribute::Value(bytes) = session
            .get_attributes(dek, &[AttributeType::Value])
            .unwrap()
            .remove(0)
        else {
            panic!("no value")
        };
        session.destroy_object(dek).unwrap();
        assert_eq!(bytes.len(), 32);
        assert!(
            helpers::files_containing(dir.path(), &bytes).is_empty(),
            "a DEK is on disk in clear"
        );
    }
    assert!(helpers::files_containing(dir.path(), b"4111111111111111").is_empty());
}

/// The wrapped keys, read straight from the SQLite file with the sqlite driver.
async fn wrapped_keys(settings: &tokenvault::config::Settings) -> Vec<Vec<u8>> {
    let mut conn = helpers::connect(settings).await;
    sqlx::query_scalar("SELECT wrapped_key FROM data_keys")
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_wrapped_key_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let settings = helpers::settings(dir.path(), "corrupt");
    let vault = Vault::open(settings.clone()).await.unwrap();
    vault.keys.init("test", NOW).await.unwrap();
    drop(vault);
    let mut conn = helpers::connect(&settings).await;
    // Flip one byte of the wrapped pan key.
    let wrapped: Vec<u8> =
        sqlx::query_scalar("SELECT wrapped_key FROM data_keys WHERE keyring = 'pan'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let mut bad = wrapped.clone();
    bad[10] ^= 0x40;
    sqlx::query("UPDATE data_keys SET wrapped_key = $1 WHERE keyring = 'pan'")
        .bind(&bad)
        .execute(&mut conn)
        .await
        .unwrap();
    let reopened = Vault::open(settings).await.unwrap();
    let err = reopened
        .keys
        .key("pan", KeyVersion::new(1).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            KeyError::Hsm(HsmError::UnwrapFailed) | KeyError::KcvMismatch(..)
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("altered") || err.to_string().contains("check value"),
        "{err}"
    );
    // The other keyrings are unaffected.
    reopened
        .keys
        .key("pii", KeyVersion::new(1).unwrap())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kek_with_the_wrong_attributes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let settings = helpers::settings(dir.path(), "badkek");
    let vault = Vault::open(settings.clone()).await.unwrap();
    // Plant an extractable AES key under the label the vault would use for its KEK.
    let label = vault.keys.labels().kek(1);
    let (_p, session) = helpers::raw_session();
    let lock = helpers::hsm_object_lock();
    session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Token(true),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
                Attribute::Label(label.as_bytes().to_vec()),
            ],
        )
        .unwrap();
    drop(lock);
    let err = vault.keys.init("test", NOW).await.unwrap_err();
    assert!(
        matches!(err, KeyError::Hsm(HsmError::KeyPolicy { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("CKA_SENSITIVE"), "{err}");
    // Nothing was half-written: no KEK row, no data key.
    assert!(vault.store.keks().await.unwrap().is_empty());
    assert!(vault.store.data_keys().await.unwrap().is_empty());
    vault.keys.hsm().destroy_objects(&label).unwrap();
}

/// Review L4: the key policy also covers the key length, derivation, modifiability and
/// trusted-only wrapping. A planted KEK that breaks any one of them is refused by `init`
/// (and so by `serve`, which runs the same check), and nothing is recorded.
#[tokio::test(flavor = "multi_thread")]
async fn a_kek_that_may_derive_or_change_or_is_short_or_wraps_untrusted_is_refused() {
    let cases = [
        ("derive", Attribute::Derive(true), "CKA_DERIVE is true"),
        (
            "modifiable",
            Attribute::Modifiable(true),
            "CKA_MODIFIABLE is true",
        ),
        (
            "short",
            Attribute::ValueLen(16.into()),
            "CKA_VALUE_LEN is not 32",
        ),
        (
            "untrusted",
            Attribute::WrapWithTrusted(false),
            "CKA_WRAP_WITH_TRUSTED is false",
        ),
    ];
    for (tag, change, problem) in cases {
        let dir = tempfile::tempdir().unwrap();
        let settings = helpers::settings(dir.path(), &format!("badkek-{tag}"));
        let vault = Vault::open(settings).await.unwrap();
        let label = vault.keys.labels().kek(1);
        helpers::replace_kek(&label, &[change]);
        let err = vault.keys.init("test", NOW).await.unwrap_err();
        assert!(
            matches!(err, KeyError::Hsm(HsmError::KeyPolicy { .. })),
            "{tag}: {err:?}"
        );
        assert!(err.to_string().contains(problem), "{tag}: {err}");
        assert!(vault.store.keks().await.unwrap().is_empty(), "{tag}");
        assert!(vault.store.data_keys().await.unwrap().is_empty(), "{tag}");
        vault.keys.hsm().destroy_objects(&label).unwrap();
    }
}

#[tokio::test]
async fn a_wrong_pin_a_missing_token_and_a_missing_module_get_clear_errors() {
    let hsm = helpers::test_hsm();
    let dir = tempfile::tempdir().unwrap();
    // Log in first with the right PIN, so the wrong one meets the per-process login too.
    let _vault = open(dir.path(), "pin").await;
    let open = |module: &std::path::Path, token: &str, pin: &str| {
        Hsm::open(
            module,
            token,
            Pin::new(SecretString::from(pin.to_owned())),
            WrapMechanism::AesKeyWrapPad,
            1,
            None,
        )
    };
    // The open HSM keeps its PIN (to log in again after an outage) and never prints it.
    let pin = helpers::test_pin();
    let right = open(&hsm.module, &hsm.token, &pin).unwrap();
    let debug = format!("{right:?}");
    assert!(!debug.contains(&pin), "{debug}");
    let wrong = open(&hsm.module, &hsm.token, "not-the-pin").unwrap_err();
    assert!(matches!(wrong, HsmError::PinIncorrect), "{wrong:?}");
    assert!(wrong.to_string().contains("wrong PIN"));

    let missing = open(&hsm.module, "no-such-token", &helpers::test_pin()).unwrap_err();
    assert!(matches!(missing, HsmError::TokenNotFound(_)), "{missing:?}");
    assert!(missing.to_string().contains("run scripts/run"));

    let no_module = open(
        std::path::Path::new("/nonexistent/libpkcs11.so"),
        &hsm.token,
        "x",
    )
    .unwrap_err();
    assert!(
        matches!(no_module, HsmError::ModuleLoad { .. }),
        "{no_module:?}"
    );
    assert!(no_module.to_string().contains("hsm.module"));
}

#[test]
fn a_pin_file_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pin");
    std::fs::write(&path, "1234\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Pin::from_file(&path).unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let pin = Pin::from_file(&path).unwrap();
    assert_eq!(format!("{pin:?}"), "Pin([REDACTED])");
}
