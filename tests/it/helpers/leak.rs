//! What the leak scan (`scripts/leak-scan`) reads, and the checks tests make themselves:
//! this process's log, the captured HTTP responses, the canary values, files holding a
//! value.

use std::path::PathBuf;
use std::sync::OnceLock;

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

/// Reads a response and keeps a copy for the leak scan: every response the in-process
/// servers give, except those of the routes whose job is to return values (detokenize,
/// decrypt), is appended to `responses-<pid>.http` in the test log directory, where
/// `scripts/leak-scan` looks for canary values.
pub(super) async fn captured(
    method: &str,
    path: &str,
    r: reqwest::Response,
) -> (u16, serde_json::Value) {
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
            // The request path is the caller's input, not the vault's output: a token
            // (or what a test sends in its place) is left out of the record.
            let path = if path.starts_with("/v1/tokens/") {
                "/v1/tokens/{token}"
            } else {
                path
            };
            let _ = writeln!(f, "{method} {path} {status} {body}");
        }
    }
    (status, body)
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
