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

/// A row of a random (fingerprint-less) type, for the writer.
fn random_row(token: &str, ciphertext: Vec<u8>) -> tokenvault::audit::writer::TokenInsert {
    tokenvault::audit::writer::TokenInsert {
        token: token.to_owned(),
        token_type: "ssn".into(),
        keyring: "pii".into(),
        key_version: 1,
        ciphertext,
        fingerprint: None,
        fingerprint_version: None,
        masked: "***".into(),
        metadata: None,
        created_at: 1,
        expires_at: None,
        aad_version: 2,
        fingerprint_namespace: None,
    }
}

/// Commits `row` with its event through the group-commit writer.
async fn insert_one(
    writer: &tokenvault::audit::writer::Writer,
    row: tokenvault::audit::writer::TokenInsert,
) -> tokenvault::audit::writer::Written {
    let event = AuditEvent::new("app", Action::Tokenize, Outcome::Success);
    writer
        .submit(tokenvault::audit::writer::Write::InsertTokens {
            rows: vec![(row, event)],
            events: Vec::new(),
            journal: None,
        })
        .await
        .unwrap()
}

/// The chain verifies end to end and holds `events` events.
async fn assert_one_chain(store: &Store, events: i64) {
    let v = verify::verify(store, &Default::default(), &[])
        .await
        .unwrap();
    assert!(v.ok(), "{:?}", v.first_bad);
    assert_eq!(v.events, events);
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
/// read back by another connection (on SQLite, a quick read) as soon as its submit returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_writers_connection_and_the_pool_write_one_chain() {
    use tokenvault::audit::writer::{Writer, Written};
    let store = store("two-pools").await;
    let writer = Writer::spawn(store.clone());
    let mut tasks = Vec::new();
    for w in 0..4 {
        let writer = writer.clone();
        let reader = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..30 {
                let token = format!("tok_{w}_{i}");
                let written = insert_one(&writer, random_row(&token, vec![w, i])).await;
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
    assert_one_chain(&store, 240).await;
}

/// Review of the quick read path (finding 1): sqlx parses `sqlite://` URLs (dot segments,
/// percent-encoding) before it opens the file, while the quick reads and the 0600 file
/// creation used the raw text. A URL whose raw text names another file had the vault's
/// reads look at an empty file of that name (every reveal failed) and its database
/// created under the umask.
#[tokio::test]
async fn every_connection_opens_the_file_sqlx_opens_and_it_is_private() {
    use std::os::unix::fs::PermissionsExt;
    use tokenvault::audit::writer::Writer;
    if helpers::postgres().is_some() {
        return;
    }
    let dir = helpers::test_dir("url-forms");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    for (url, opened) in [
        (format!("sqlite://{}/vault%2Edb", dir.display()), "vault.db"),
        (
            format!("sqlite://{}/sub/../other.db", dir.display()),
            "other.db",
        ),
    ] {
        let store = Store::connect(&SecretString::from(url.clone()), 4)
            .await
            .unwrap();
        let writer = Writer::spawn(store.clone());
        insert_one(&writer, random_row("tok_url", vec![1])).await;
        let found = store.token("tok_url").await;
        assert!(matches!(&found, Ok(Some(_))), "{url}: {found:?}");
        let mode = std::fs::metadata(dir.join(opened))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{url}: {mode:o}");
        store.close().await;
    }
    // Nothing was created under the raw spelling.
    assert!(!dir.join("vault%2Edb").exists());
}

/// Review of the quick read path (finding 3): a closed store answered reads through its
/// quick connections, where the pool answers "unavailable".
#[tokio::test]
async fn a_closed_store_reads_nothing() {
    let store = store("closed").await;
    assert!(matches!(store.token("tok_none").await, Ok(None)));
    store.close().await;
    let after = store.token("tok_none").await;
    assert!(
        matches!(after, Err(StoreError::Unavailable(_))),
        "{after:?}"
    );
}

/// Review of the quick read path (finding 2): a quick read runs on the runtime thread,
/// and a batch reveal polls up to `limits.max_batch` of them at once. Without a yield
/// point the whole batch's reads ran in one poll while every other task on that thread
/// waited; each read now spends a unit of tokio's cooperative budget.
#[tokio::test]
async fn a_thousand_reads_let_other_tasks_run_between_them() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let store = store("coop").await;
    let ticks = Arc::new(AtomicUsize::new(0));
    let counter = ticks.clone();
    let probe = tokio::spawn(async move {
        loop {
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::task::yield_now().await;
        }
    });
    tokio::task::yield_now().await;
    let before = ticks.load(Ordering::Relaxed);
    let names: Vec<String> = (0..1000).map(|i| format!("tok_absent_{i}")).collect();
    let reads = futures_util::future::join_all(names.iter().map(|t| store.token(t))).await;
    let during = ticks.load(Ordering::Relaxed) - before;
    probe.abort();
    assert!(reads.iter().all(|r| matches!(r, Ok(None))));
    assert!(
        during >= 3,
        "the other task ran {during} times during 1,000 reads"
    );
}

/// The quick reads (SQLite: a single token, a short fingerprint list) and sqlx (a long
/// fingerprint list) map the same row alike, NULL columns included.
#[tokio::test]
async fn a_quick_read_and_a_pooled_read_see_the_same_row() {
    use tokenvault::audit::writer::{TokenInsert, Write, Writer};
    let store = store("same-row").await;
    let writer = Writer::spawn(store.clone());
    let full = TokenInsert {
        token: "tok_full".into(),
        token_type: "ssn".into(),
        keyring: "pii".into(),
        key_version: 3,
        ciphertext: vec![7; 40],
        fingerprint: Some(b"fp-full".to_vec()),
        fingerprint_version: Some(2),
        masked: "***-**-1234".into(),
        metadata: Some("{\"k\":\"v\"}".into()),
        created_at: 11,
        expires_at: Some(99),
        aad_version: 2,
        fingerprint_namespace: Some("tenant-a".into()),
    };
    let bare = TokenInsert {
        token: "tok_bare".into(),
        token_type: "ssn".into(),
        keyring: "pii".into(),
        key_version: 1,
        ciphertext: vec![8; 20],
        fingerprint: Some(b"fp-bare".to_vec()),
        fingerprint_version: None,
        masked: "***".into(),
        metadata: None,
        created_at: 12,
        expires_at: None,
        aad_version: 1,
        fingerprint_namespace: None,
    };
    let event = || AuditEvent::new("app", Action::Tokenize, Outcome::Success);
    writer
        .submit(Write::InsertTokens {
            rows: vec![(full, event()), (bare, event())],
            events: Vec::new(),
            journal: None,
        })
        .await
        .unwrap();
    let long: Vec<&[u8]> = vec![b"fp-full", b"fp-bare", b"x1", b"x2", b"x3"];
    let mut pooled = store
        .tokens_by_fingerprints(None, "ssn", &long)
        .await
        .unwrap();
    pooled.sort_by(|a, b| a.1.token.cmp(&b.1.token));
    assert_eq!(pooled.len(), 2);
    for (fp, row) in &pooled {
        let quick = store.token(&row.token).await.unwrap().unwrap();
        assert_eq!(format!("{quick:?}"), format!("{row:?}"));
        let short = store
            .tokens_by_fingerprints(None, "ssn", &[fp.as_slice()])
            .await
            .unwrap();
        assert_eq!(short.len(), 1);
        assert_eq!(&short[0].0, fp);
        assert_eq!(format!("{:?}", short[0].1), format!("{row:?}"));
    }
    assert_eq!(pooled[0].1.metadata, None);
    assert_eq!(
        pooled[1].1.fingerprint_namespace.as_deref(),
        Some("tenant-a")
    );
}
