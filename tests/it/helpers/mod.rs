//! Test set-up shared by the integration suites: the real SoftHSM2 token that
//! `scripts/test` creates, a fresh SQLite file per test, unique key labels per test.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use secrecy::SecretString;
use tokenvault::config::Settings;

/// The token, module and PIN file of the test HSM, from the environment scripts/test sets.
pub struct TestHsm {
    pub module: PathBuf,
    pub token: String,
    pub pin_file: PathBuf,
}

pub fn test_hsm() -> TestHsm {
    assert!(
        std::env::var_os("SOFTHSM2_CONF").is_some(),
        "SOFTHSM2_CONF is not set: run the tests through scripts/test, which creates the test token"
    );
    let token =
        std::env::var("TOKENVAULT_TEST_HSM_TOKEN").unwrap_or_else(|_| "tokenvault-test".into());
    let pin_file = std::env::var("TOKENVAULT_TEST_HSM_PIN_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/test/hsm-user-pin")
        });
    TestHsm {
        module: "/usr/lib/softhsm/libsofthsm2.so".into(),
        token,
        pin_file,
    }
}

/// A label prefix no other test (or earlier run) uses.
pub fn unique_prefix(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let mut r = [0u8; 4];
    tokenvault::crypto::random_bytes(&mut r);
    format!(
        "t-{tag}-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        hex::encode(r)
    )
}

/// Whether this run targets PostgreSQL (`TOKENVAULT_TEST_BACKEND=postgres`, set by
/// scripts/test for its second pass when `TOKENVAULT_TEST_POSTGRES_URL` is set).
pub fn postgres() -> Option<String> {
    match std::env::var("TOKENVAULT_TEST_BACKEND").as_deref() {
        Ok("postgres") => Some(
            std::env::var("TOKENVAULT_TEST_POSTGRES_URL")
                .expect("TOKENVAULT_TEST_BACKEND=postgres needs TOKENVAULT_TEST_POSTGRES_URL"),
        ),
        _ => None,
    }
}

/// A fresh PostgreSQL database for one test; scripts/test drops the `tv_*` databases of
/// earlier runs before it starts.
pub fn fresh_postgres_database(admin_url: &str, name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let name = format!("tv_{name}");
    let out = std::process::Command::new("psql")
        .args([
            admin_url,
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            &format!("CREATE DATABASE {name}"),
        ])
        .output()
        .expect("psql is installed");
    assert!(
        out.status.success(),
        "creating {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base = admin_url.rsplit_once('/').map_or(admin_url, |(b, _)| b);
    format!("{base}/{name}")
}

/// Settings for one test: the test token, a fresh database (a SQLite file in `dir`, or a
/// new PostgreSQL database), unique labels.
pub fn settings(dir: &std::path::Path, tag: &str) -> Settings {
    let hsm = test_hsm();
    let mut s = Settings::load(None).expect("default settings load");
    s.hsm.module = hsm.module;
    s.hsm.token_label = hsm.token;
    s.hsm.pin = None;
    s.hsm.pin_file = Some(hsm.pin_file);
    s.hsm.label_prefix = unique_prefix(tag);
    s.database.url = SecretString::from(match postgres() {
        Some(admin) => fresh_postgres_database(&admin, &s.hsm.label_prefix),
        None => format!("sqlite://{}", dir.join("vault.db").display()),
    });
    s.hsm.lock_file = hsm_lock_file();
    s
}

/// A connection to the test's database, whichever backend it is.
pub async fn connect(settings: &Settings) -> sqlx::AnyConnection {
    use secrecy::ExposeSecret;
    sqlx::any::install_default_drivers();
    <sqlx::AnyConnection as sqlx::Connection>::connect(settings.database.url.expose_secret())
        .await
        .unwrap()
}

/// The PIN of the test token, for tests that talk PKCS#11 themselves.
pub fn test_pin() -> String {
    std::fs::read_to_string(test_hsm().pin_file)
        .expect("test PIN file")
        .trim()
        .to_owned()
}

/// The `hsm.lock_file` every test vault and process uses.
pub fn hsm_lock_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/hsm-objects.lock")
}

/// Takes the vault's cross-process object lock, as the vault does around every object
/// change and login: a test that writes through a raw session holds it, because SoftHSM2
/// corrupts its token under concurrent writers. Never call into a vault while holding it
/// (the vault takes the same lock through its own file).
pub fn hsm_object_lock() -> std::fs::File {
    let path = hsm_lock_file();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap();
    f.lock().unwrap();
    f
}

/// Raw PKCS#11 access for independent checks: the same module, already initialized
/// and logged in by the vault in this process. Writes through it need `hsm_object_lock`.
pub fn raw_session() -> (cryptoki::context::Pkcs11, cryptoki::session::Session) {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    let _lock = hsm_object_lock();
    let hsm = test_hsm();
    let p = Pkcs11::new(&hsm.module).expect("load module");
    let _ = p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = p
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| p.get_token_info(*s).unwrap().label().trim_end() == hsm.token)
        .expect("test token present");
    let session = p.open_rw_session(slot).unwrap();
    let pin = SecretString::from(test_pin());
    match session.login(cryptoki::session::UserType::User, Some(&pin)) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(e) => panic!("login: {e}"),
    }
    (p, session)
}

/// Every occurrence of `needle` in the files of `dir` (the database and its WAL).
pub fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(path);
            }
        }
    }
    hits
}

// ---------------------------------------------------------------------------------------
// The API harness: real server on port 0, real TLS, real SoftHSM2, SQLite in a test dir.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use tokenvault::devpki::{DevCa, Issued};

/// Certificates for every test client, made once per test process.
pub struct TestPki {
    pub ca: DevCa,
    pub server: Issued,
    pub clients: HashMap<&'static str, Issued>,
    /// A client certificate from a CA the server does not trust.
    pub foreign: Issued,
    /// A client certificate from the right CA whose validity ended yesterday.
    pub expired: Issued,
}

pub fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = DevCa::new("tokenvault test CA").unwrap();
        let clients = ["app", "tokenizer", "auditor", "stranger"]
            .into_iter()
            .map(|n| (n, ca.client(n).unwrap()))
            .collect();
        let foreign = DevCa::new("someone else's CA")
            .unwrap()
            .client("app")
            .unwrap();
        let now = time::OffsetDateTime::now_utc();
        let expired = ca
            .client_valid(
                "app",
                (
                    now - time::Duration::days(30),
                    now - time::Duration::days(1),
                ),
            )
            .unwrap();
        TestPki {
            server: ca.server().unwrap(),
            ca,
            clients,
            foreign,
            expired,
        }
    })
}

/// A directory for one test's files. Kept (not deleted) under TOKENVAULT_TEST_DATA_DIR,
/// which scripts/test sets, so the leak scan can read every database the suite wrote.
pub fn test_dir(tag: &str) -> PathBuf {
    match std::env::var_os("TOKENVAULT_TEST_DATA_DIR") {
        Some(base) => {
            std::fs::create_dir_all(&base).unwrap();
            tempfile::Builder::new()
                .prefix(&format!("{tag}-"))
                .tempdir_in(base)
                .unwrap()
                .keep()
        }
        None => tempfile::Builder::new()
            .prefix(&format!("tv-{tag}-"))
            .tempdir()
            .unwrap()
            .keep(),
    }
}

/// Sends this process's logs (debug level) to a file the tests and the leak scan read.
pub fn capture_logs() -> PathBuf {
    static LOG: OnceLock<PathBuf> = OnceLock::new();
    LOG.get_or_init(|| {
        let dir = std::env::var_os("TOKENVAULT_TEST_LOG_DIR")
            .map_or_else(std::env::temp_dir, PathBuf::from);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("test-{}.log", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,sqlx=warn,hyper=info,h2=info,rustls=info,reqwest=info",
            ))
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .try_init();
        path
    })
    .clone()
}

pub fn read_logs() -> String {
    std::fs::read_to_string(capture_logs()).unwrap_or_default()
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub settings: Settings,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Writes the server's TLS files into `dir` and points `settings` at them.
pub fn tls_files(dir: &std::path::Path, s: &mut Settings) {
    let p = pki();
    std::fs::write(dir.join("ca.pem"), &p.ca.cert_pem).unwrap();
    std::fs::write(dir.join("server.pem"), &p.server.cert_pem).unwrap();
    std::fs::write(dir.join("server-key.pem"), &p.server.key_pem).unwrap();
    s.server.client_ca = dir.join("ca.pem");
    s.server.tls_cert = dir.join("server.pem");
    s.server.tls_key = dir.join("server-key.pem");
    s.server.listen = "127.0.0.1:0".into();
}

/// Test settings plus the types the API tests exercise: `card` is a random (not
/// deterministic) PAN type so every format can be tried on card numbers.
pub fn api_settings(dir: &std::path::Path, tag: &str) -> Settings {
    use tokenvault::config::{TokenFormat, TypeSettings, Validator};
    let mut s = settings(dir, tag);
    tls_files(dir, &mut s);
    s.types.insert(
        "card".into(),
        TypeSettings {
            validator: Validator::Pan,
            keyring: "pan".into(),
            format: TokenFormat::Opaque,
            deterministic: false,
        },
    );
    s.types.insert(
        "email_det".into(),
        TypeSettings {
            validator: Validator::Email,
            keyring: "pii".into(),
            format: TokenFormat::Opaque,
            deterministic: true,
        },
    );
    s.limits.max_batch = 50;
    s
}

/// Starts the real server (init first) on a random port.
pub async fn spawn_app(tag: &str) -> TestApp {
    spawn_with(tag, |_, _| {}).await
}

pub async fn spawn_with(tag: &str, tweak: impl FnOnce(&mut Settings, &std::path::Path)) -> TestApp {
    capture_logs();
    let dir = test_dir(tag);
    let mut settings = api_settings(&dir, tag);
    tweak(&mut settings, &dir);
    let vault = tokenvault::vault::Vault::open(settings.clone())
        .await
        .unwrap();
    vault
        .keys
        .init("test", tokenvault::vault::now_ms())
        .await
        .unwrap();
    vault.store.close().await;
    let server = tokenvault::api::Server::bind(settings.clone())
        .await
        .unwrap();
    let addr = server.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        dir,
        settings,
        shutdown: Some(tx),
    }
}

fn root_store() -> rustls::RootCertStore {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pki().ca.cert_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    roots
}

/// A rustls client config presenting `cert` (or no certificate), for `versions`.
pub fn client_tls(
    cert: Option<&Issued>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(root_store());
    match cert {
        Some(c) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(c.cert_pem.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    }
}

pub fn http_client(cert: Option<&Issued>) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(client_tls(cert, &[&rustls::version::TLS13]))
        .build()
        .unwrap()
}

/// An HTTPS client for one of the test identities.
pub fn client(name: &str) -> reqwest::Client {
    http_client(Some(&pki().clients[name]))
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    pub async fn post(
        &self,
        who: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let r = client(who)
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        captured("POST", path, r).await
    }

    pub async fn get(&self, who: &str, path: &str) -> (u16, serde_json::Value) {
        let r = client(who).get(self.url(path)).send().await.unwrap();
        captured("GET", path, r).await
    }

    pub async fn delete(&self, who: &str, path: &str) -> (u16, serde_json::Value) {
        let r = client(who).delete(self.url(path)).send().await.unwrap();
        captured("DELETE", path, r).await
    }

    pub async fn tokenize(&self, ty: &str, value: &str) -> String {
        let (status, body) = self
            .post(
                "app",
                "/v1/tokenize",
                serde_json::json!({"type": ty, "value": value}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// A direct connection to the test's database.
    pub async fn db(&self) -> sqlx::AnyConnection {
        connect(&self.settings).await
    }
}

/// Reads a response and keeps a copy for the leak scan: every response the in-process
/// servers give, except those of the routes whose job is to return values (detokenize,
/// decrypt), is appended to `responses-<pid>.http` in the test log directory, where
/// `scripts/leak-scan` looks for canary values.
async fn captured(method: &str, path: &str, r: reqwest::Response) -> (u16, serde_json::Value) {
    use std::io::Write;
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(serde_json::Value::Null);
    let returns_values = path.starts_with("/v1/detokenize") || path == "/v1/decrypt";
    if let (Some(dir), false) = (std::env::var_os("TOKENVAULT_TEST_LOG_DIR"), returns_values) {
        let file = PathBuf::from(dir).join(format!("responses-{}.http", std::process::id()));
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
        {
            let _ = writeln!(f, "{method} {path} {status} {body}");
        }
    }
    (status, body)
}

/// The Prometheus text of `/metrics` at `url` (public in the test configuration).
pub async fn metrics_text(url: &str) -> String {
    client("auditor")
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The canary values of tests/canaries.txt.
pub fn canaries() -> Vec<&'static str> {
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/canaries.txt"))
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Panics if any canary appears in `text`.
pub fn assert_no_canary(text: &str, what: &str) {
    for c in canaries() {
        assert!(!text.contains(c), "{what} contains the canary {c}");
    }
}

/// Every route of the API (method, OpenAPI path). The permission matrix and the OpenAPI
/// test both compare against this list, so a route added to one place only fails a test.
pub const ROUTES: [(&str, &str); 14] = [
    ("POST", "/v1/tokenize"),
    ("POST", "/v1/tokenize/batch"),
    ("POST", "/v1/detokenize"),
    ("POST", "/v1/detokenize/batch"),
    ("GET", "/v1/tokens/{token}"),
    ("DELETE", "/v1/tokens/{token}"),
    ("POST", "/v1/encrypt"),
    ("POST", "/v1/decrypt"),
    ("POST", "/v1/rewrap"),
    ("GET", "/v1/keys"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
];

/// The `tokenvault` binary configured (through the environment, as an operator would)
/// for the same database, HSM token, labels, TLS files and officers as `settings`.
pub fn cli(settings: &Settings) -> std::process::Command {
    use secrecy::ExposeSecret;
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_tokenvault"));
    c.env("TOKENVAULT_CONFIG", config_file(settings))
        .env(
            "TOKENVAULT_DATABASE__URL",
            settings.database.url.expose_secret(),
        )
        .env("TOKENVAULT_HSM__TOKEN_LABEL", &settings.hsm.token_label)
        .env(
            "TOKENVAULT_HSM__PIN_FILE",
            settings.hsm.pin_file.as_ref().expect("pin file"),
        )
        .env("TOKENVAULT_HSM__LABEL_PREFIX", &settings.hsm.label_prefix)
        .env("TOKENVAULT_HSM__LOCK_FILE", &settings.hsm.lock_file)
        .env("TOKENVAULT_SERVER__LISTEN", "127.0.0.1:0")
        .env("TOKENVAULT_SERVER__TLS_CERT", &settings.server.tls_cert)
        .env("TOKENVAULT_SERVER__TLS_KEY", &settings.server.tls_key)
        .env("TOKENVAULT_SERVER__CLIENT_CA", &settings.server.client_ca)
        .env("TOKENVAULT_LOG", "warn");
    c
}

/// Writes the map-valued settings (types, keyrings, officers) and limits to a TOML file
/// next to the TLS files, as an operator's config file would hold them.
pub fn config_file(settings: &Settings) -> PathBuf {
    use std::fmt::Write;
    let mut t = String::new();
    let _ = writeln!(t, "[limits]\nmax_batch = {}\n", settings.limits.max_batch);
    for (name, k) in &settings.keyrings {
        let _ = writeln!(
            t,
            "[keyrings.{name}]\ncryptoperiod_days = {}\nusage_limit = {}\n",
            k.cryptoperiod_days, k.usage_limit
        );
    }
    for (name, ty) in &settings.types {
        let validator = match ty.validator {
            tokenvault::config::Validator::Pan => "pan",
            tokenvault::config::Validator::Ssn => "ssn",
            tokenvault::config::Validator::Email => "email",
            tokenvault::config::Validator::None => "none",
        };
        let format = serde_json::to_string(&ty.format).unwrap();
        let _ = writeln!(
            t,
            "[types.{name}]\nvalidator = \"{validator}\"\nkeyring = \"{}\"\nformat = {format}\ndeterministic = {}\n",
            ty.keyring, ty.deterministic
        );
    }
    for (name, o) in &settings.officers {
        let _ = writeln!(t, "[officers.{name}]\npublic_key = \"{}\"\n", o.public_key);
    }
    let path = settings.server.tls_cert.with_file_name("tokenvault.toml");
    std::fs::write(&path, t).unwrap();
    path
}

/// Registers officers `alice` and `bob` (keys written to `dir`) and makes `mallory`'s key,
/// which is not registered.
pub fn add_officers(dir: &std::path::Path, s: &mut Settings) {
    for name in ["alice", "bob", "mallory"] {
        let path = dir.join(format!("{name}.key"));
        let public = tokenvault::officers::OfficerKey::generate(&path).unwrap();
        if name != "mallory" {
            s.officers.insert(
                name.into(),
                tokenvault::officers::OfficerSettings { public_key: public },
            );
        }
    }
}

/// A random Luhn-valid 16-digit card number (not one of the canaries).
pub fn random_pan() -> String {
    let mut b = [0u8; 15];
    tokenvault::crypto::random_bytes(&mut b);
    let mut digits: Vec<u8> = std::iter::once(b'4')
        .chain(b[1..].iter().map(|x| b'0' + x % 10))
        .collect();
    for check in b'0'..=b'9' {
        digits.push(check);
        if tokenvault::tokenize::format::luhn_valid(&digits) {
            break;
        }
        digits.pop();
    }
    String::from_utf8(digits).unwrap()
}

/// Starts `tokenvault serve` as its own process with `settings` (through the
/// environment); returns it and its port once it listens. Its log goes to the test log
/// directory, where the leak scan reads it.
pub fn serve_process(settings: &Settings, name: &str) -> (std::process::Child, u16) {
    serve_process_with(settings, name, |_| {})
}

/// `serve_process` with more of the environment set by `tweak`.
pub fn serve_process_with(
    settings: &Settings,
    name: &str,
    tweak: impl FnOnce(&mut std::process::Command),
) -> (std::process::Child, u16) {
    use std::io::{BufRead, Write};
    let mut command = cli(settings);
    command.env(
        "TOKENVAULT_LOG",
        "debug,sqlx=warn,hyper=info,h2=info,rustls=info",
    );
    tweak(&mut command);
    let mut child = command
        .arg("serve")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log_dir =
        std::env::var_os("TOKENVAULT_TEST_LOG_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    std::fs::create_dir_all(&log_dir).unwrap();
    let mut log = std::fs::File::create(
        log_dir.join(format!("serve-{}-{name}.log", settings.hsm.label_prefix)),
    )
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = writeln!(log, "{line}");
            if line.contains("listening")
                && let Some(port) = line
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.trim().parse::<u16>().ok())
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(port);
            }
        }
    });
    let port = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("serve announced its port");
    (child, port)
}

/// Settings for tests that start their own processes: test token and database, TLS files.
pub fn process_settings(tag: &str) -> (PathBuf, Settings) {
    let dir = test_dir(tag);
    let mut s = api_settings(&dir, tag);
    s.limits.max_batch = 1000;
    (dir, s)
}

/// The fault-injecting PKCS#11 module of `tests/faulty-pkcs11` (a shim around the real
/// SoftHSM2 module), built once per test binary with the system C compiler.
pub fn faulty_module() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/faulty-pkcs11/faulty_pkcs11.c");
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("libfaultypkcs11-{}.so", std::process::id()));
        let built = std::process::Command::new("cc")
            .args(["-shared", "-fPIC", "-O1", "-I/usr/include/p11-kit-1", "-o"])
            .arg(&out)
            .arg(&src)
            .arg("-ldl")
            .output()
            .expect("a C compiler (cc)");
        assert!(
            built.status.success(),
            "building the fault-injecting PKCS#11 module (needs libp11-kit-dev, which scripts/test installs): {}",
            String::from_utf8_lossy(&built.stderr)
        );
        out
    })
    .clone()
}
