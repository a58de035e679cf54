//! The store on its own, on SQLite and (in the second pass of scripts/test) PostgreSQL:
//! concurrency, compare-and-set, conflicts, and clear connection errors.

use crate::helpers;
use secrecy::SecretString;
use tokenvault::audit::{Action, AuditEvent, AuditLog, Outcome, verify};
use tokenvault::store::{NewToken, Store, StoreError};

async fn store(tag: &str) -> Store {
    let dir = helpers::test_dir(tag);
    let s = helpers::settings(&dir, tag);
    Store::connect(&s.database.url, 8).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_form_one_unbroken_audit_chain() {
    let store = store("chain").await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let log = AuditLog::new(store.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..40 {
                let e =
                    AuditEvent::new(format!("writer-{w}"), Action::Detokenize, Outcome::Success)
                        .resource(format!("tok_{w}_{i}"));
                log.record(&e, 1_700_000_000_000 + i).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let v = verify::verify(&store, &Default::default(), &[])
        .await
        .unwrap();
    assert!(v.ok(), "{:?}", v.first_bad);
    assert_eq!(v.events, 320);
    assert_eq!(store.audit_head().await.unwrap().0, 320);
}

#[tokio::test]
async fn usage_reservations_are_compare_and_set() {
    let store = store("cas").await;
    let log = AuditLog::new(store.clone());
    let mut atx = log.begin().await.unwrap();
    store.insert_kek(&mut atx.tx, "k", 0).await.unwrap();
    store
        .insert_active_data_key(
            &mut atx.tx,
            &tokenvault::store::NewDataKey {
                keyring: "pii",
                version: 1,
                wrapped_key: &[1, 2, 3],
                wrap_mechanism: "CKM_AES_KEY_WRAP_PAD",
                kek_label: "k",
                kcv: "000000",
                now: 0,
                cryptoperiod_ends_at: 1,
            },
        )
        .await
        .unwrap();
    atx.commit().await.unwrap();
    assert!(store.reserve_usage("pii", 1, 0, 10).await.unwrap());
    assert!(
        !store.reserve_usage("pii", 1, 0, 10).await.unwrap(),
        "a stale count must not reserve"
    );
    assert!(store.reserve_usage("pii", 1, 10, 5).await.unwrap());
    assert_eq!(
        store.data_key("pii", 1).await.unwrap().unwrap().usage_count,
        15
    );
}

#[tokio::test]
async fn duplicate_tokens_and_fingerprints_are_refused_without_writing() {
    let store = store("conflict").await;
    let log = AuditLog::new(store.clone());
    let t = |token: &'static str, fp: Option<&'static [u8]>| NewToken {
        token,
        token_type: "pan",
        keyring: "pan",
        key_version: 1,
        ciphertext: b"ct",
        fingerprint: fp,
        fingerprint_version: fp.map(|_| 1),
        masked: "****",
        metadata: None,
        created_at: 0,
        expires_at: None,
        aad_version: 2,
        fingerprint_namespace: None,
    };
    let mut atx = log.begin().await.unwrap();
    assert!(
        store
            .insert_token(&mut atx.tx, &t("tok_a", Some(b"fp1")))
            .await
            .unwrap()
    );
    assert!(
        !store
            .insert_token(&mut atx.tx, &t("tok_a", Some(b"fp2")))
            .await
            .unwrap(),
        "same token"
    );
    assert!(
        !store
            .insert_token(&mut atx.tx, &t("tok_b", Some(b"fp1")))
            .await
            .unwrap(),
        "same fingerprint"
    );
    assert!(
        store
            .insert_token(&mut atx.tx, &t("tok_c", None))
            .await
            .unwrap()
    );
    assert!(
        store
            .insert_token(&mut atx.tx, &t("tok_d", None))
            .await
            .unwrap(),
        "random types share no fingerprint"
    );
    atx.commit().await.unwrap();
    assert!(store.token("tok_b").await.unwrap().is_none());
    assert_eq!(
        store
            .token_by_fingerprint(None, "pan", b"fp1")
            .await
            .unwrap()
            .unwrap()
            .token,
        "tok_a"
    );
}

#[tokio::test]
async fn a_wrong_database_url_gets_a_clear_error_that_hides_the_password() {
    let err = Store::connect(&SecretString::from("mysql://root@localhost/x"), 1)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::BadUrl), "{err}");
    assert!(err.to_string().contains("TOKENVAULT_DATABASE__URL"));
    let err = Store::connect(
        &SecretString::from("postgres://vault:s3cret-pw@127.0.0.1:1/nowhere"),
        1,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Connect(_)), "{err}");
    assert!(!err.to_string().contains("s3cret-pw"), "{err}");
    assert!(err.to_string().contains("TOKENVAULT_DATABASE__URL"));
}

/// Pentest of issue 15 (finding 1): in one commit, a row skipped for its fingerprint (the
/// same value twice in a batch) drew the same random token as a later row of another
/// value. The writer took "the token was inserted" to mean "this row was", so the
/// duplicate was answered with the other value's token.
#[tokio::test]
async fn a_row_is_never_answered_with_a_token_another_row_of_its_commit_drew() {
    use tokenvault::audit::writer::{TokenInsert, Write, Writer, Written};
    let store = store("drawn").await;
    let row = |token: &str, value: &[u8], fp: &[u8]| TokenInsert {
        token: token.to_owned(),
        token_type: "ssn".into(),
        keyring: "pii".into(),
        key_version: 1,
        ciphertext: value.to_vec(),
        fingerprint: Some(fp.to_vec()),
        fingerprint_version: Some(1),
        masked: "***".into(),
        metadata: None,
        created_at: 1,
        expires_at: None,
        aad_version: 2,
        fingerprint_namespace: None,
    };
    let event = || AuditEvent::new("app", Action::Tokenize, Outcome::Success);
    let writer = Writer::spawn(store.clone());
    let written = writer
        .submit(Write::InsertTokens {
            rows: vec![
                (row("tok_one", b"X", b"fp-x"), event()),
                (row("tok_two", b"X", b"fp-x"), event()),
                (row("tok_two", b"Y", b"fp-y"), event()),
            ],
            events: Vec::new(),
            journal: None,
        })
        .await
        .unwrap();
    let Written::Tokens(out) = written else {
        panic!("{written:?}")
    };
    // The second X row: the first X row's token, or a redraw; never Y's.
    assert!(
        matches!(&out[1], Written::Collision)
            || matches!(&out[1], Written::Token { token, .. } if token == "tok_one"),
        "{out:?}"
    );
    // Every token handed out holds the value of the row it answers.
    for (i, value) in [(0usize, b"X"), (1, b"X"), (2, b"Y")] {
        if let Written::Token { token, .. } = &out[i] {
            let stored = store.token(token).await.unwrap().unwrap();
            assert_eq!(stored.ciphertext, value.to_vec(), "row {i}: {out:?}");
        }
    }
}

/// On SQLite the group-commit writer has a connection of its own (`Store::writer`), while
/// officer operations and direct records still write through the shared pool. Both kinds
/// of write at once must still form one unbroken chain, and what the writer committed is
/// read back through the pool as soon as its submit returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_writers_connection_and_the_pool_write_one_chain() {
    use tokenvault::audit::writer::{TokenInsert, Write, Writer, Written};
    let store = store("two-pools").await;
    let writer = Writer::spawn(store.clone());
    let mut tasks = Vec::new();
    for w in 0..4 {
        let writer = writer.clone();
        let reader = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..30 {
                let token = format!("tok_{w}_{i}");
                let row = TokenInsert {
                    token: token.clone(),
                    token_type: "ssn".into(),
                    keyring: "pii".into(),
                    key_version: 1,
                    ciphertext: vec![w, i],
                    fingerprint: None,
                    fingerprint_version: None,
                    masked: "***".into(),
                    metadata: None,
                    created_at: 1,
                    expires_at: None,
                    aad_version: 2,
                    fingerprint_namespace: None,
                };
                let event = AuditEvent::new("app", Action::Tokenize, Outcome::Success);
                let written = writer
                    .submit(Write::InsertTokens {
                        rows: vec![(row, event)],
                        events: Vec::new(),
                        journal: None,
                    })
                    .await
                    .unwrap();
                assert!(
                    matches!(&written, Written::Tokens(t) if t.len() == 1),
                    "{written:?}"
                );
                let stored = reader.token(&token).await.unwrap().expect("read back");
                assert_eq!(stored.ciphertext, vec![w, i]);
            }
        }));
        let log = AuditLog::new(store.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..30 {
                let e = AuditEvent::new(format!("officer-{w}"), Action::KeysList, Outcome::Success);
                log.record(&e, 1_700_000_000_000 + i).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let v = verify::verify(&store, &Default::default(), &[])
        .await
        .unwrap();
    assert!(v.ok(), "{:?}", v.first_bad);
    assert_eq!(v.events, 240);
}
