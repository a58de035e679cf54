//! Issue 14, items 1 and 2 (review H3, M6, L16): dual control that one person cannot pass,
//! officers who sign where their keys live, and every key lifecycle command attributed to
//! the officer whose signature it carries, never to the environment.

use std::path::Path;
use std::process::{Command, Output};

use crate::helpers::{self, TestApp, cli, officer_key, officer_public, spawn_app};
use tokenvault::officers::{Operation, RequestDocument};
use tokenvault::vault::{Vault, now_ms};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(app: &TestApp, args: &[&str]) -> Output {
    cli(&app.settings).args(args).output().unwrap()
}

/// Runs a command with `--key <officer's key file>` appended.
fn signed(app: &TestApp, args: &[&str], officer: &str) -> Output {
    cli(&app.settings)
        .args(args)
        .arg("--key")
        .arg(officer_key(officer))
        .output()
        .unwrap()
}

fn request_id(o: &Output) -> String {
    text(o)
        .split_whitespace()
        .find(|w| w.starts_with("req-"))
        .map(|w| w.trim_end_matches(':').to_owned())
        .unwrap_or_else(|| panic!("no request id in: {}", text(o)))
}

/// `tokenvault officer sign`, as an officer runs it on their own machine: no config, no
/// database, no HSM in its environment.
fn offline_sign(request: &Path, officer: &str, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tokenvault"))
        .env_clear()
        .args(["officer", "sign"])
        .arg(request)
        .arg("--key")
        .arg(officer_key(officer))
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

async fn state_of(app: &TestApp, keyring: &str, version: u32) -> String {
    let vault = Vault::open(app.settings.clone()).await.unwrap();
    let inv = vault.keys.inventory(now_ms()).await.unwrap();
    vault.store.close().await;
    inv.keys
        .iter()
        .find(|k| k.keyring == keyring && k.version == version)
        .map(|k| k.state.clone())
        .unwrap()
}

async fn events(app: &TestApp) -> Vec<(String, String, String)> {
    let mut db = app.db().await;
    sqlx::query_as("SELECT actor, action, outcome FROM audit_events ORDER BY seq")
        .fetch_all(&mut db)
        .await
        .unwrap()
}

/// pan v1 rotated away, rewrapped and retired, each by one officer: ready to destroy.
async fn retired_v1(app: &TestApp) {
    app.tokenize("card", "4111111111111111").await;
    for args in [
        &["keys", "rotate", "pan"][..],
        &["keys", "rewrap", "pan", "--quiet"],
        &["keys", "retire", "pan", "1"],
    ] {
        let o = signed(app, args, "alice");
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    }
    assert_eq!(state_of(app, "pan", 1).await, "retired");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destroy_needs_two_registered_officers_who_sign_where_their_keys_are() {
    let app = spawn_app("dual").await;
    retired_v1(&app).await;
    let req_file = app.dir.join("destroy.request.json");
    let o = cli(&app.settings)
        .args(["keys", "destroy", "pan", "1", "--reason", "end of life"])
        .arg("--key")
        .arg(officer_key("alice"))
        .arg("--request-out")
        .arg(&req_file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("1 of 2"), "{}", text(&o));
    let id = request_id(&o);

    // Alice cannot count twice, however she presents her key.
    let o = signed(&app, &["keys", "approve", &id], "alice");
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("already signed"), "{}", text(&o));

    // The officer sees exactly what they sign, offline.
    let bob_sig = app.dir.join("bob.sig");
    let o = offline_sign(&req_file, "bob", &bob_sig);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("DESTROY pan v1") && text(&o).contains("UNRECOVERABLE"),
        "{}",
        text(&o)
    );

    // An unregistered key's signature does not count.
    let mallory_sig = app.dir.join("mallory.sig");
    assert!(
        offline_sign(&req_file, "mallory", &mallory_sig)
            .status
            .success()
    );
    let o = cli(&app.settings)
        .args(["keys", "approve", &id, "--signature"])
        .arg(&mallory_sig)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("not a registered officer"),
        "{}",
        text(&o)
    );

    // A registered officer's signature over another text (pan v2) does not count for v1.
    let mut other = RequestDocument::parse(&std::fs::read_to_string(&req_file).unwrap()).unwrap();
    other.operation = Operation::Destroy {
        keyring: "pan".into(),
        version: 2,
    };
    other.summary = other.operation.summary();
    let forged = helpers::load_officer("carol").sign(&other);
    let forged_file = app.dir.join("forged.sig");
    std::fs::write(&forged_file, serde_json::to_string(&forged).unwrap()).unwrap();
    let o = cli(&app.settings)
        .args(["keys", "approve", &id, "--signature"])
        .arg(&forged_file)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("does not verify"), "{}", text(&o));
    assert_eq!(state_of(&app, "pan", 1).await, "retired");

    // Bob's signature, made elsewhere, completes it; the host needed no private key.
    let o = cli(&app.settings)
        .args(["keys", "approve", &id, "--signature"])
        .arg(&bob_sig)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(state_of(&app, "pan", 1).await, "destroyed");
    // It runs once.
    let o = cli(&app.settings)
        .args(["keys", "approve", &id, "--signature"])
        .arg(&bob_sig)
        .output()
        .unwrap();
    assert!(text(&o).contains("executed"), "{}", text(&o));

    // An expired request cannot be signed.
    let o = signed(
        &app,
        &["keys", "rotate", "pan", "--expires-in-hours", "0"],
        "alice",
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("expired"), "{}", text(&o));

    let ev = events(&app).await;
    let has = |actor: &str, action: &str, outcome: &str| {
        ev.iter()
            .any(|e| e.0 == actor && e.1 == action && e.2 == outcome)
    };
    assert!(has("cli", "officer.request", "success"));
    assert!(has("officer:alice", "officer.approve", "denied"));
    assert!(
        has("cli", "officer.approve", "denied"),
        "mallory's key is nobody's"
    );
    // Carol's signature over another text proves nothing about this request: the refusal
    // is not put in her name.
    assert!(!has("officer:carol", "officer.approve", "denied"));
    assert!(has("officer:bob", "officer.approve", "success"));
    assert!(has("officer:alice+officer:bob", "key.destroy", "success"));
    assert!(has("officer:alice", "key.retire", "success"));
}

#[tokio::test(flavor = "multi_thread")]
async fn one_operator_with_one_officer_key_and_the_whole_host_cannot_complete_a_destroy() {
    let app = spawn_app("h3").await;
    retired_v1(&app).await;
    let o = signed(&app, &["keys", "destroy", "pan", "1"], "alice");
    assert!(o.status.success(), "{}", text(&o));
    let id = request_id(&o);
    let alice_public = officer_public("alice");

    // 1. Alice's key under a second name from the environment: refused outright.
    let o = cli(&app.settings)
        .env("TOKENVAULT_OFFICERS__BOB2__PUBLIC_KEY", &alice_public)
        .args(["keys", "approve", &id, "--key"])
        .arg(officer_key("alice"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("no longer read from the config"),
        "{}",
        text(&o)
    );

    // 2. The same through a config file the operator controls.
    let config = app.dir.join("operator.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[officers.bob2]\npublic_key = \"{alice_public}\"\n",
            std::fs::read_to_string(helpers::config_file(&app.settings)).unwrap()
        ),
    )
    .unwrap();
    let o = cli(&app.settings)
        .env("TOKENVAULT_CONFIG", &config)
        .args(["keys", "approve", &id, "--key"])
        .arg(officer_key("alice"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("no longer read from the config"),
        "{}",
        text(&o)
    );

    // 3. A second first-init with a key the operator owns.
    let o = cli(&app.settings)
        .args(["init", "--officer"])
        .arg(format!("bob2={}", officer_public("mallory")))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("already set up"), "{}", text(&o));

    // 4. Registering a key the operator owns is itself a dual-control request.
    let o = cli(&app.settings)
        .args([
            "officer",
            "add",
            "bob2",
            &officer_public("mallory"),
            "--key",
        ])
        .arg(officer_key("alice"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("1 of 2"), "{}", text(&o));
    let o = signed(&app, &["keys", "approve", &id], "mallory");
    assert!(
        text(&o).contains("not a registered officer"),
        "{}",
        text(&o)
    );

    // 5. A registry row written straight into the database, around the audit chain,
    //    with the audit event of a real registration: the registry is refused.
    let mut db = app.db().await;
    let seq: i64 = sqlx::query_scalar(
        "SELECT seq FROM audit_events WHERE action = 'officer.register' ORDER BY seq LIMIT 1",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    plant_bob2_and_try_to_approve(&app, &id, seq).await;

    // Nothing of it destroyed the key or claimed a second officer.
    assert_eq!(state_of(&app, "pan", 1).await, "retired");
    let ev = events(&app).await;
    assert!(
        !ev.iter().any(|e| e.1 == "key.destroy"),
        "no destruction in the trail: {ev:?}"
    );
    assert!(
        !ev.iter().any(|e| e.0.contains('+')),
        "no two-officer actor: {ev:?}"
    );
}

/// Writes a registry row for `bob2` with mallory's key straight into the database, tied to
/// audit event `seq`; mallory's signature must then be refused because the registry does
/// not match the trail. The row is removed again.
async fn plant_bob2_and_try_to_approve(app: &TestApp, id: &str, seq: i64) {
    let mut db = app.db().await;
    sqlx::query(
        "INSERT INTO officer_keys (public_key, name, state, registered_at, audit_seq) \
         VALUES ($1, 'bob2', 'active', $2, $3)",
    )
    .bind(base64_decode(&officer_public("mallory")))
    .bind(now_ms())
    .bind(seq)
    .execute(&mut db)
    .await
    .unwrap();
    let o = signed(app, &["keys", "approve", id], "mallory");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("does not match the audit trail"),
        "{}",
        text(&o)
    );
    sqlx::query("DELETE FROM officer_keys WHERE name = 'bob2'")
        .execute(&mut db)
        .await
        .unwrap();
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_lifecycle_command_names_the_signing_officer_never_the_environment() {
    let app = spawn_app("attrib").await;
    // Without a signature nothing changes, whatever $USER says.
    let o = cli(&app.settings)
        .env("USER", "alice")
        .args(["keys", "rotate", "pan"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("An officer signs it"), "{}", text(&o));
    let id = request_id(&o);
    let vault = Vault::open(app.settings.clone()).await.unwrap();
    assert_eq!(vault.keys.active("pan").await.unwrap().0.get(), 1);

    // Signed elsewhere by bob, approved on the host with no private key: bob rotated.
    let req_file = app.dir.join("rotate.json");
    let o = run(&app, &["keys", "request", &id]);
    std::fs::write(&req_file, &o.stdout).unwrap();
    let sig = app.dir.join("rotate.sig");
    assert!(offline_sign(&req_file, "bob", &sig).status.success());
    let o = cli(&app.settings)
        .env("USER", "mallory")
        .args(["keys", "approve", &id, "--signature"])
        .arg(&sig)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    vault.keys.refresh().await.unwrap();
    assert_eq!(vault.keys.active("pan").await.unwrap().0.get(), 2);

    let o = cli(&app.settings)
        .env("USER", "mallory")
        .args(["keys", "rotate-kek", "--key"])
        .arg(officer_key("carol"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));

    let ev = events(&app).await;
    let actor_of = |action: &str| -> Vec<String> {
        ev.iter()
            .filter(|e| e.1 == action && e.2 == "success")
            .map(|e| e.0.clone())
            .collect()
    };
    assert!(
        actor_of("key.create").contains(&"officer:bob".to_owned()),
        "{ev:?}"
    );
    assert_eq!(actor_of("key.kek.rotate"), vec!["officer:carol".to_owned()]);
    assert!(
        !ev.iter()
            .any(|e| e.0.contains("mallory") || e.0.starts_with("cli:")),
        "no actor from the environment: {ev:?}"
    );
    vault.store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_changes_are_dual_control_and_a_key_is_registered_once_ever() {
    let app = spawn_app("registry").await;
    let store = Vault::open(app.settings.clone()).await.unwrap().store;
    let dave = app.dir.join("dave.key");
    let dave_public = tokenvault::officers::OfficerKey::generate(&dave).unwrap();
    let add = Operation::AddOfficer {
        name: "dave".into(),
        public_key: dave_public.clone(),
    };
    // One signature is not enough to add an officer.
    assert!(
        helpers::sign_request(&store, add.clone(), &["alice"])
            .await
            .is_none()
    );
    let o = cli(&app.settings)
        .args(["officer", "add", "dave", &dave_public, "--key"])
        .arg(officer_key("alice"))
        .output()
        .unwrap();
    let id = request_id(&o);
    let o = signed(&app, &["keys", "approve", &id], "bob");
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&app, &["officer", "list"]);
    assert!(text(&o).contains("dave"), "{}", text(&o));

    // Carol's key can never come back, not under another name.
    let o = signed(&app, &["officer", "remove", "carol"], "alice");
    let id = request_id(&o);
    let o = cli(&app.settings)
        .args(["keys", "approve", &id, "--key"])
        .arg(&dave)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = signed(
        &app,
        &["officer", "add", "carol2", &officer_public("carol")],
        "alice",
    );
    let id = request_id(&o);
    let o = signed(&app, &["keys", "approve", &id], "bob");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("already registered"), "{}", text(&o));

    // At least two officers remain.
    for (name, signers) in [("dave", ["alice", "bob"]), ("bob", ["alice", "bob"])] {
        let op = Operation::RemoveOfficer { name: name.into() };
        let (doc, actor) = helpers::sign_request(&store, op, &signers).await.unwrap();
        let done = tokenvault::officers::execute(
            &store,
            &Vault::open(app.settings.clone()).await.unwrap().keys,
            &doc,
            &actor,
            now_ms(),
        )
        .await;
        if name == "dave" {
            done.unwrap();
        } else {
            assert!(done.unwrap_err().to_string().contains("at least two"));
        }
    }
    let o = run(&app, &["officer", "list"]);
    assert_eq!(
        text(&o).split_whitespace().collect::<Vec<_>>(),
        ["alice", "bob"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_emptied_in_the_database_cannot_be_bootstrapped_again() {
    let app = spawn_app("rebootstrap").await;
    // A database writer deletes every registry row, then runs a "first" init naming two
    // keys they own.
    let mut db = app.db().await;
    sqlx::query("DELETE FROM officer_keys")
        .execute(&mut db)
        .await
        .unwrap();
    let dave = app.dir.join("dave.key");
    let dave_public = tokenvault::officers::OfficerKey::generate(&dave).unwrap();
    let o = cli(&app.settings)
        .args(["init", "--officer"])
        .arg(format!("mallory={}", officer_public("mallory")))
        .arg("--officer")
        .arg(format!("dave={dave_public}"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // Refused as tampering (the trail records three registrations, the registry none)
    // before the first-init check would refuse it as already set up.
    assert!(
        text(&o)
            .contains("does not match the audit trail: 3 registrations recorded, 0 registry rows"),
        "{}",
        text(&o)
    );
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM officer_keys")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(n, 0, "nobody was registered");
}

/// Appends an event to the chain the way a database writer can (the chain is unkeyed):
/// the hash recomputed and the head moved. Returns its sequence number.
async fn forge_event(app: &TestApp, actor: &str, action: &str, resource: &str) -> i64 {
    use tokenvault::store::AuditRow;
    let mut db = app.db().await;
    let (seq, hash): (i64, Vec<u8>) = sqlx::query_as("SELECT seq, hash FROM audit_head")
        .fetch_one(&mut db)
        .await
        .unwrap();
    let at = now_ms();
    let mut row = AuditRow {
        seq: seq + 1,
        at,
        actor: actor.into(),
        action: action.into(),
        outcome: "success".into(),
        resource: Some(resource.into()),
        origin: Some("cli".into()),
        reason: None,
        prev_hash: hash,
        hash: Vec::new(),
    };
    row.hash = tokenvault::audit::chain_hash(seq + 1, at, &row).to_vec();
    sqlx::query(
        "INSERT INTO audit_events (seq, at, actor, action, outcome, resource, origin, reason, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(row.seq)
    .bind(row.at)
    .bind(&row.actor)
    .bind(&row.action)
    .bind(&row.outcome)
    .bind(&row.resource)
    .bind(&row.origin)
    .bind(&row.reason)
    .bind(&row.prev_hash)
    .bind(&row.hash)
    .execute(&mut db)
    .await
    .unwrap();
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2")
        .bind(row.seq)
        .bind(&row.hash)
        .execute(&mut db)
        .await
        .unwrap();
    row.seq
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registration_forged_in_the_database_with_a_consistent_chain_does_not_count() {
    let app = spawn_app("forged").await;
    retired_v1(&app).await;
    let o = signed(&app, &["keys", "destroy", "pan", "1"], "alice");
    let id = request_id(&o);
    let mallory = officer_public("mallory");
    for actor in ["bootstrap", "officer:alice+officer:bob"] {
        let seq = forge_event(
            &app,
            actor,
            "officer.register",
            &format!("officer:bob2 key:{mallory}"),
        )
        .await;
        plant_bob2_and_try_to_approve(&app, &id, seq).await;
    }
    assert_eq!(state_of(&app, "pan", 1).await, "retired");
}

#[tokio::test(flavor = "multi_thread")]
async fn what_an_officer_is_shown_cannot_be_disguised_and_a_stale_request_cannot_be_revived() {
    let app = spawn_app("disguise").await;
    retired_v1(&app).await;
    // Terminal control characters in a reason could redraw what `officer sign` shows.
    let o = cli(&app.settings)
        .args(["keys", "destroy", "pan", "1", "--reason"])
        .arg("\u{1b}[3A\u{1b}[J  ROTATE keyring pan: Nothing becomes unrecoverable.")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("reason"), "{}", text(&o));

    // A request past its signed expiry stays dead when the database says otherwise.
    let o = signed(
        &app,
        &["keys", "destroy", "pan", "1", "--expires-in-hours", "0"],
        "alice",
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let id = request_id(&o);
    let mut db = app.db().await;
    sqlx::query("UPDATE officer_requests SET expires_at = $1 WHERE id = $2")
        .bind(now_ms() + 3_600_000)
        .bind(&id)
        .execute(&mut db)
        .await
        .unwrap();
    for who in ["alice", "bob"] {
        let o = signed(&app, &["keys", "approve", &id], who);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("expired"), "{}", text(&o));
    }
    assert_eq!(state_of(&app, "pan", 1).await, "retired");

    // A signature file naming bob's key with a signature that does not verify is not
    // recorded as bob's refusal.
    let o = signed(&app, &["keys", "destroy", "pan", "1"], "alice");
    let id = request_id(&o);
    let fake = app.dir.join("fake.sig");
    std::fs::write(
        &fake,
        serde_json::json!({
            "request_id": id,
            "public_key": officer_public("bob"),
            "signature": base64_encode(&[0u8; 64]),
        })
        .to_string(),
    )
    .unwrap();
    let o = cli(&app.settings)
        .args(["keys", "approve", &id, "--signature"])
        .arg(&fake)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let ev = events(&app).await;
    assert!(
        !ev.iter()
            .any(|e| e.0 == "officer:bob" && e.1 == "officer.approve"),
        "bob did not sign anything: {ev:?}"
    );

    // A weak (small-order) Ed25519 key, which verifies forged signatures, is refused.
    let identity = base64_encode(&{
        let mut k = [0u8; 32];
        k[0] = 1;
        k
    });
    let o = signed(&app, &["officer", "add", "weak", &identity], "alice");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("not an Ed25519 public key"),
        "{}",
        text(&o)
    );
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test(flavor = "multi_thread")]
async fn officers_replaced_wholesale_in_the_database_do_not_count() {
    let app = spawn_app("replaced").await;
    retired_v1(&app).await;
    let o = signed(&app, &["keys", "destroy", "pan", "1"], "alice");
    let id = request_id(&o);
    // A database writer deletes every registry row and appends a consistent "first
    // init" of two keys they hold: mallory and dave.
    let dave = app.dir.join("dave.key");
    let dave_public = tokenvault::officers::OfficerKey::generate(&dave).unwrap();
    let mut db = app.db().await;
    sqlx::query("DELETE FROM officer_keys")
        .execute(&mut db)
        .await
        .unwrap();
    for (name, key) in [
        ("mallory", officer_public("mallory")),
        ("dave", dave_public),
    ] {
        let seq = forge_event(
            &app,
            "bootstrap",
            "officer.register",
            &format!("officer:{name} key:{key}"),
        )
        .await;
        sqlx::query(
            "INSERT INTO officer_keys (public_key, name, state, registered_at, audit_seq) \
             VALUES ($1, $2, 'active', $3, $4)",
        )
        .bind(base64_decode(&key))
        .bind(name)
        .bind(now_ms())
        .bind(seq)
        .execute(&mut db)
        .await
        .unwrap();
    }
    for signer in [officer_key("mallory"), dave] {
        let o = cli(&app.settings)
            .args(["keys", "approve", &id, "--key"])
            .arg(signer)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(
            text(&o).contains("does not match the audit trail"),
            "{}",
            text(&o)
        );
    }
    assert_eq!(state_of(&app, "pan", 1).await, "retired");
}
