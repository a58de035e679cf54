//! Issue 15: the `keys rewrap` sweep costs the same per batch at any table size. The
//! planners' choices for the exact SQL the store runs, on SQLite and (in the second pass
//! of scripts/test) PostgreSQL; the set-based batch update; and, ignored by default, a
//! measurement of the sweep at 10⁴–10⁶ records.

use std::collections::BTreeMap;

use secrecy::ExposeSecret;
use sqlx::Row;
use tokenvault::audit::AuditLog;
use tokenvault::config::Settings;
use tokenvault::store::{
    NewToken, Resealed, Store, reindex_cursor_sql, rewrap_cursor_sql, update_ciphertexts_sql,
    update_fingerprints_sql,
};

use crate::helpers;

async fn store(tag: &str) -> (Settings, Store) {
    let dir = helpers::test_dir(tag);
    let s = helpers::settings(&dir, tag);
    let store = Store::connect(&s.database.url, 4).await.unwrap();
    (s, store)
}

/// Binds `binds` to a query of either driver.
macro_rules! bind {
    ($q:expr, $binds:expr) => {{
        let mut q = $q;
        for b in $binds {
            q = match *b {
                Bind::Text(t) => q.bind(t),
                Bind::Int(i) => q.bind(i),
                Bind::Bytes(b) => q.bind(b),
            };
        }
        q
    }};
}

/// What the planner does with `sql`, one line per step (SQLite: the `detail` of EXPLAIN
/// QUERY PLAN; PostgreSQL: each node of EXPLAIN (FORMAT JSON) as `node type [index]`),
/// with sorts and sequential scans disabled on PostgreSQL, so that a plan that still
/// sorts or scans has no index that could serve it. `binds` are text or integer values.
async fn plan(settings: &Settings, sql: &str, binds: &[Bind<'_>]) -> Vec<String> {
    match helpers::postgres() {
        None => {
            let mut db = helpers::connect(settings).await;
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let q = bind!(sqlx::query(&explain), binds);
            q.fetch_all(&mut db)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>("detail"))
                .collect()
        }
        Some(_) => {
            use sqlx::Connection;
            let url = settings.database.url.expose_secret();
            let mut db = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::raw_sql("SET enable_seqscan = off; SET enable_sort = off")
                .execute(&mut db)
                .await
                .unwrap();
            let explain = format!("EXPLAIN (FORMAT JSON) {sql}");
            let q = bind!(sqlx::query(&explain), binds);
            let row = q.fetch_one(&mut db).await.unwrap();
            // The JSON arrives as text; sqlx is built without its JSON type.
            let text: String = row.try_get_unchecked(0).unwrap();
            let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
            let mut lines = Vec::new();
            nodes(&doc[0]["Plan"], &mut lines);
            lines
        }
    }
}

fn nodes(node: &serde_json::Value, out: &mut Vec<String>) {
    let mut line = node["Node Type"].as_str().unwrap_or_default().to_owned();
    if let Some(index) = node["Index Name"].as_str() {
        line.push_str(&format!(" using {index}"));
    }
    if let Some(rel) = node["Relation Name"].as_str() {
        line.push_str(&format!(" on {rel}"));
    }
    out.push(line);
    for child in node["Plans"].as_array().into_iter().flatten() {
        nodes(child, out);
    }
}

#[derive(Clone, Copy)]
enum Bind<'a> {
    Text(&'a str),
    Int(i64),
    Bytes(&'a [u8]),
}

/// Whether a plan line reads through `index` (SQLite names the implicit primary-key index
/// of a TEXT key `sqlite_autoindex_tokens_1`; PostgreSQL `tokens_pkey`).
fn uses(lines: &[String], index: &str) -> bool {
    lines.iter().any(|l| l.contains(index))
}

fn sorts(lines: &[String]) -> bool {
    lines
        .iter()
        .any(|l| l.contains("TEMP B-TREE") || l.contains("Sort"))
}

fn backend() -> tokenvault::store::Backend {
    if helpers::postgres().is_some() {
        tokenvault::store::Backend::Postgres
    } else {
        tokenvault::store::Backend::Sqlite
    }
}

fn primary_key() -> &'static str {
    if helpers::postgres().is_some() {
        "tokens_pkey"
    } else {
        "sqlite_autoindex_tokens_1"
    }
}

#[tokio::test]
async fn each_rewrap_batch_starts_at_the_cursor_in_an_index_and_sorts_nothing() {
    let (settings, _store) = store("rwplan").await;
    let lines = plan(
        &settings,
        &rewrap_cursor_sql(),
        &[
            Bind::Text("pan"),
            Bind::Int(2),
            Bind::Int(1_700_000_000_000),
            Bind::Text("tok_cursor"),
            Bind::Int(1000),
        ],
    )
    .await;
    assert!(
        uses(&lines, "tokens_by_keyring_age") && !sorts(&lines),
        "the rewrap cursor must walk tokens_by_keyring_age from the cursor, not sort the \
         keyring's records: {lines:?}"
    );
}

#[tokio::test]
async fn each_reindex_batch_walks_the_primary_key_from_the_cursor() {
    let (settings, _store) = store("rxplan").await;
    let lines = plan(
        &settings,
        &reindex_cursor_sql(),
        &[Bind::Int(2), Bind::Text("tok_cursor"), Bind::Int(1000)],
    )
    .await;
    assert!(
        uses(&lines, primary_key()) && !sorts(&lines),
        "the reindex cursor must walk the primary key: {lines:?}"
    );
}

#[tokio::test]
async fn a_batch_update_finds_each_record_by_its_primary_key() {
    let (settings, _store) = store("upplan").await;
    let lines = plan(
        &settings,
        &update_ciphertexts_sql(backend(), 2),
        &[
            Bind::Text("tok_a"),
            Bind::Bytes(b"ct"),
            Bind::Int(2),
            Bind::Int(1),
            Bind::Int(2),
            Bind::Text("tok_b"),
            Bind::Bytes(b"ct"),
            Bind::Int(2),
            Bind::Int(1),
            Bind::Int(1),
        ],
    )
    .await;
    let scans_tokens = |l: &String| {
        (l.starts_with("SCAN tokens") || l.starts_with("Seq Scan")) && l.contains("tokens")
    };
    assert!(
        uses(&lines, primary_key()) && !lines.iter().any(scans_tokens),
        "{lines:?}"
    );
    let lines = plan(
        &settings,
        &update_fingerprints_sql(backend(), 1),
        &[Bind::Text("tok_a"), Bind::Bytes(b"fp"), Bind::Int(2)],
    )
    .await;
    assert!(
        uses(&lines, primary_key()) && !lines.iter().any(scans_tokens),
        "{lines:?}"
    );
}

fn record<'a>(token: &'a str, key_version: i64, aad_version: i64) -> NewToken<'a> {
    NewToken {
        token,
        token_type: "card",
        keyring: "pan",
        key_version,
        ciphertext: b"old",
        fingerprint: None,
        fingerprint_version: None,
        masked: "****",
        metadata: None,
        created_at: 0,
        expires_at: None,
        aad_version,
        fingerprint_namespace: None,
    }
}

#[tokio::test]
async fn a_set_based_update_changes_only_the_records_still_as_read() {
    let (settings, store) = store("rwset").await;
    let log = AuditLog::new(store.clone());
    // More records than one statement takes, so the chunking is exercised too.
    let n = tokenvault::store::UPDATE_CHUNK + 7;
    let tokens: Vec<String> = (0..n).map(|i| format!("tok_{i:06}")).collect();
    let mut atx = log.begin().await.unwrap();
    let rows: Vec<NewToken> = tokens.iter().map(|t| record(t, 1, 2)).collect();
    assert_eq!(
        store.insert_tokens(&mut atx.tx, &rows).await.unwrap().len(),
        n
    );
    atx.commit().await.unwrap();

    // As read: every record under v1, AAD 2, but two changed since: one re-sealed by a
    // concurrent run (now v2), one deleted.
    let mut atx = log.begin().await.unwrap();
    sqlx::query("UPDATE tokens SET key_version = 2, ciphertext = $1 WHERE token = $2")
        .bind(&b"theirs"[..])
        .bind(&tokens[3])
        .execute(&mut *atx.tx)
        .await
        .unwrap();
    assert!(
        store
            .delete_token(&mut atx.tx, &tokens[n - 1])
            .await
            .unwrap()
    );
    atx.commit().await.unwrap();
    let mut atx = log.begin().await.unwrap();
    let updates: Vec<Resealed> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| Resealed {
            token: t,
            ciphertext: if i % 2 == 0 { b"new-even" } else { b"new-odd" },
            old_version: 1,
            old_aad: 2,
        })
        .collect();
    let changed = store
        .update_ciphertexts(&mut atx.tx, 2, &updates)
        .await
        .unwrap();
    atx.commit().await.unwrap();
    assert_eq!(changed, (n - 2) as u64);

    let mut db = helpers::connect(&settings).await;
    let rows: Vec<(String, i64, i64, Vec<u8>)> =
        sqlx::query_as("SELECT token, key_version, aad_version, ciphertext FROM tokens")
            .fetch_all(&mut db)
            .await
            .unwrap();
    let rows: BTreeMap<String, (i64, i64, Vec<u8>)> = rows
        .into_iter()
        .map(|(t, v, a, c)| (t, (v, a, c)))
        .collect();
    assert_eq!(rows.len(), n - 1);
    for (i, t) in tokens.iter().enumerate().take(n - 1) {
        let expected: &[u8] = match i {
            3 => b"theirs",
            _ if i % 2 == 0 => b"new-even",
            _ => b"new-odd",
        };
        assert_eq!(rows[t], (2, 2, expected.to_vec()), "{t}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_value_twice_in_one_reindex_batch_keeps_the_older_token_in_the_index() {
    use tokenvault::crypto::Aad;
    use tokenvault::vault::{Vault, now_ms};
    let app = helpers::spawn_app("rxdup").await;
    let value = "4012888888881881";
    let older = app.tokenize("pan", value).await;
    let vault = Vault::open(app.settings.clone()).await.unwrap();
    let namespace: Option<String> =
        sqlx::query_scalar("SELECT fingerprint_namespace FROM tokens WHERE token = $1")
            .bind(&older)
            .fetch_one(&mut app.db().await)
            .await
            .unwrap();
    let label = tokenvault::tokenize::lookup_label(
        "pan",
        namespace
            .as_deref()
            .unwrap_or(tokenvault::guard::SHARED_NAMESPACE),
    );
    // A second record of the value, indexed under fingerprint v2 (a node that did not yet
    // know v2's records): then v3, so that one re-index batch meets the value twice.
    vault
        .keys
        .rotate("fingerprint", "test", None, now_ms())
        .await
        .unwrap();
    let (v2, fp_key) = vault.keys.fingerprint_keys().await.unwrap()[0].clone();
    assert_eq!(v2.get(), 2);
    let fp = fp_key.derived(&label).fingerprint(value.as_bytes());
    let newer = "tok_second_record_of_the_value";
    let now = now_ms();
    let (version, key) = vault.keys.seal_key("pan", 1, now).await.unwrap();
    let aad = Aad::token_record("pan", version.get(), newer, "pan", None, None);
    let sealed = key.seal(&aad, value.as_bytes());
    let mut tx = vault.store.begin().await.unwrap();
    assert!(
        vault
            .store
            .insert_token(
                &mut tx,
                &NewToken {
                    token: newer,
                    token_type: "pan",
                    keyring: "pan",
                    key_version: i64::from(version.get()),
                    ciphertext: &sealed,
                    fingerprint: Some(&fp),
                    fingerprint_version: Some(2),
                    masked: "************1881",
                    metadata: None,
                    created_at: now + 1,
                    expires_at: None,
                    aad_version: 2,
                    fingerprint_namespace: namespace.as_deref(),
                },
            )
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    vault
        .keys
        .rotate("fingerprint", "test", None, now_ms())
        .await
        .unwrap();

    let report = vault
        .services()
        .tokens
        .rewrap(
            "fingerprint",
            tokenvault::tokenize::RewrapOptions {
                batch: 10,
                rate: None,
            },
            "test",
            now_ms,
            |_, _| {},
        )
        .await
        .unwrap();
    assert_eq!((report.done, report.failed), (1, 0), "{report:?}");
    let rows: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT token, fingerprint_version FROM tokens ORDER BY created_at")
            .fetch_all(&mut app.db().await)
            .await
            .unwrap();
    assert_eq!(
        rows,
        [(older.clone(), Some(3)), (newer.to_owned(), None)],
        "the older token answers for the value; the newer leaves the index"
    );
    let events: Vec<String> =
        sqlx::query_scalar("SELECT reason FROM audit_events WHERE action = 'key.reindex'")
            .fetch_all(&mut app.db().await)
            .await
            .unwrap();
    assert_eq!(
        events,
        ["1 fingerprints re-computed; 1 duplicate values resolved"]
    );
}

/// Stores `n` real sealed records of keyring `pan` (type `pan`, a random lookup
/// fingerprint each, random tokens) straight through the store, 10,000 per transaction:
/// what the batch API stores, without its per-request cost. As through the batch API
/// (at most 1,000 items a request), 1,000 records share a creation time.
async fn fill_sealed(vault: &tokenvault::vault::Vault, n: usize) {
    use tokenvault::crypto::Aad;
    let mut left = n;
    while left > 0 {
        let k = left.min(10_000);
        let now = tokenvault::vault::now_ms();
        let (version, key) = vault.keys.seal_key("pan", k as u64, now).await.unwrap();
        let mut tokens = Vec::with_capacity(k);
        let mut sealed = Vec::with_capacity(k);
        let mut fps = Vec::with_capacity(k);
        for _ in 0..k {
            let mut r = [0u8; 16];
            tokenvault::crypto::random_bytes(&mut r);
            let token = format!("tok_{}", hex::encode(r));
            let aad = Aad::token_record("pan", version.get(), &token, "pan", None, None);
            sealed.push(key.seal(&aad, helpers::random_pan().as_bytes()));
            let mut fp = [0u8; 32];
            tokenvault::crypto::random_bytes(&mut fp);
            fps.push(fp);
            tokens.push(token);
        }
        let rows: Vec<NewToken> = (0..k)
            .map(|i| NewToken {
                token: &tokens[i],
                token_type: "pan",
                keyring: "pan",
                key_version: i64::from(version.get()),
                ciphertext: &sealed[i],
                fingerprint: Some(&fps[i]),
                fingerprint_version: Some(1),
                masked: "************1111",
                metadata: None,
                created_at: now + (i / 1000) as i64,
                expires_at: None,
                aad_version: 2,
                fingerprint_namespace: None,
            })
            .collect();
        let mut tx = vault.store.begin().await.unwrap();
        assert_eq!(
            vault
                .store
                .insert_tokens(&mut tx, &rows)
                .await
                .unwrap()
                .len(),
            k
        );
        tx.commit().await.unwrap();
        left -= k;
    }
}

/// A measurement, not a timed test (it asserts only that every record was re-sealed):
///
/// ```text
/// TOKENVAULT_REWRAP_SCALES=10000,100000,1000000 TOKENVAULT_REWRAP_BATCH=2000 \
///   cargo test --release --test it -- rewrap::measure --ignored --nocapture
/// ```
///
/// prints the sweep's records/s at each scale (a fresh vault per scale, filled, rotated,
/// then one `rewrap` of keyring `pan`; the batch defaults to the CLI's, 2,000).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement: run it by hand"]
async fn measure_the_sweep_at_each_scale() {
    let scales: Vec<usize> = std::env::var("TOKENVAULT_REWRAP_SCALES")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let batch: usize = std::env::var("TOKENVAULT_REWRAP_BATCH")
        .map(|b| b.parse().unwrap())
        .unwrap_or(2000);
    for n in scales {
        let dir = helpers::test_dir("rwspeed");
        let settings = helpers::settings(&dir, "rwspeed");
        helpers::init_vault(&settings).await;
        let vault = tokenvault::vault::Vault::open(settings).await.unwrap();
        let filled = std::time::Instant::now();
        fill_sealed(&vault, n).await;
        let fill_secs = filled.elapsed().as_secs_f64();
        vault
            .keys
            .rotate("pan", "test", None, tokenvault::vault::now_ms())
            .await
            .unwrap();
        let service = vault.services().tokens;
        let started = std::time::Instant::now();
        let report = service
            .rewrap(
                "pan",
                tokenvault::tokenize::RewrapOptions { batch, rate: None },
                "test",
                tokenvault::vault::now_ms,
                |_, _| {},
            )
            .await
            .unwrap();
        let secs = started.elapsed().as_secs_f64();
        assert_eq!((report.done, report.failed), (n as u64, 0));
        println!(
            "rewrap of {n} records, batch {batch}: {secs:.2} s, {:.0} records/s (fill {fill_secs:.1} s)",
            n as f64 / secs
        );
        vault.store.close().await;
    }
}

/// A measurement, not a timed test (it asserts only that every data key moved):
///
/// ```text
/// TOKENVAULT_KEK_VERSIONS=10000 \
///   cargo test --release --test it -- rewrap::measure_kek --ignored --nocapture
/// ```
///
/// creates that many data-key versions (keyring `pan` rotated again and again), then
/// times one `rotate_kek`: every version unwrapped and wrapped again in the HSM, and the
/// new wrappings committed in one audited transaction.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement: run it by hand"]
async fn measure_kek_rotation_over_many_data_key_versions() {
    let versions: usize = std::env::var("TOKENVAULT_KEK_VERSIONS")
        .map(|n| n.parse().unwrap())
        .unwrap_or(10_000);
    let dir = helpers::test_dir("kekspeed");
    let settings = helpers::settings(&dir, "kekspeed");
    helpers::init_vault(&settings).await;
    let vault = tokenvault::vault::Vault::open(settings).await.unwrap();
    let made = std::time::Instant::now();
    let before = vault.store.data_keys().await.unwrap().len();
    for _ in before..versions {
        let now = tokenvault::vault::now_ms();
        vault.keys.rotate("pan", "test", None, now).await.unwrap();
    }
    let make_secs = made.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    let r = vault
        .keys
        .rotate_kek("test", None, tokenvault::vault::now_ms())
        .await
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let keys = vault.store.data_keys().await.unwrap();
    assert_eq!(r.rewrapped, keys.len());
    assert!(
        keys.iter().all(|k| k.kek_label == r.new),
        "a data key stayed under the old KEK"
    );
    println!(
        "KEK rotation over {} data-key versions: {secs:.2} s, {:.0} versions/s (made in {make_secs:.1} s)",
        keys.len(),
        keys.len() as f64 / secs
    );
    vault.store.close().await;
}
