//! Test officers: key files for `alice`, `bob` and `carol` (registered by every test
//! vault's first init) and `mallory` (never registered), made once per test process.

use std::path::PathBuf;
use std::sync::OnceLock;

use tokenvault::officers::{self, OfficerKey, Operation, Progress, RequestDocument};
use tokenvault::store::Store;
use tokenvault::vault::now_ms;

const NAMES: [&str; 4] = ["alice", "bob", "carol", "mallory"];

fn keys() -> &'static Vec<(String, PathBuf, String)> {
    static KEYS: OnceLock<Vec<(String, PathBuf, String)>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = super::test_dir("officers");
        NAMES
            .iter()
            .map(|name| {
                let path = dir.join(format!("{name}.key"));
                let public = OfficerKey::generate(&path).unwrap();
                ((*name).to_owned(), path, public)
            })
            .collect()
    })
}

/// The key file of a test officer.
pub fn officer_key(name: &str) -> PathBuf {
    keys().iter().find(|k| k.0 == name).unwrap().1.clone()
}

/// The base64 public key of a test officer.
pub fn officer_public(name: &str) -> String {
    keys().iter().find(|k| k.0 == name).unwrap().2.clone()
}

pub fn load_officer(name: &str) -> OfficerKey {
    OfficerKey::load(&officer_key(name)).unwrap()
}

/// The `--officer` arguments of a first `init`: alice, bob and carol.
pub fn bootstrap_args() -> Vec<String> {
    ["alice", "bob", "carol"]
        .iter()
        .flat_map(|n| ["--officer".to_owned(), format!("{n}={}", officer_public(n))])
        .collect()
}

/// Registers alice, bob and carol in a new vault's database (what the first init does).
pub async fn bootstrap_officers(store: &Store) {
    let given: Vec<(String, String)> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| ((*n).to_owned(), officer_public(n)))
        .collect();
    officers::bootstrap(store, &given, now_ms()).await.unwrap();
}

/// Creates a request for `op` and has `signers` sign it in turn; returns the request and
/// its actor once enough signed (None while it still waits).
pub async fn sign_request(
    store: &Store,
    op: Operation,
    signers: &[&str],
) -> Option<(RequestDocument, String)> {
    let doc = officers::create(store, op, None, 3_600_000, now_ms())
        .await
        .unwrap();
    let mut actor = None;
    for name in signers {
        let sig = load_officer(name).sign(&doc);
        match officers::add_signature(store, &sig, now_ms())
            .await
            .unwrap()
        {
            Progress::Ready { actor: a, doc } => actor = Some((doc, a)),
            Progress::Waiting { .. } => {}
        }
    }
    actor
}
