//! The `tokenvault` binary as its own process, configured through the environment as an
//! operator would: `serve` on a port chosen beforehand, ready once `/readyz` answers 200;
//! and what a running command shows from outside (the database it has open).

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use tokenvault::config::Settings;

use super::{client, config_file};

/// The `tokenvault` binary configured (through the environment, as an operator would)
/// for the same database, HSM token, labels, TLS files and officers as `settings`.
pub fn cli(settings: &Settings) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tokenvault"));
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

/// The directory for the logs of this run (scripts/test sets it; the leak scan reads it).
pub fn log_dir() -> PathBuf {
    let dir =
        std::env::var_os("TOKENVAULT_TEST_LOG_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `tokenvault serve` as its own process with `settings` (through the
/// environment); returns it and its port once it is ready. Its log goes to
/// `serve-<label prefix>-<name>.log` in the test log directory, where the leak scan reads it.
pub async fn serve_process(settings: &Settings, name: &str) -> (Child, u16) {
    serve_process_with(settings, name, |_| {}).await
}

/// `serve_process` with more of the environment set by `tweak`.
pub async fn serve_process_with(
    settings: &Settings,
    name: &str,
    tweak: impl FnOnce(&mut Command),
) -> (Child, u16) {
    let mut command = cli(settings);
    command.env(
        "TOKENVAULT_LOG",
        "debug,sqlx=warn,hyper=info,h2=info,rustls=info",
    );
    tweak(&mut command);
    serve(
        command,
        &format!("serve-{}-{name}", settings.hsm.label_prefix),
    )
    .await
}

/// Runs `command serve` on a free port and returns the process and its port once
/// `/readyz` answers 200. Its stderr goes to `<log_name>.log` in the test log directory.
/// If another process took the port between `free_port` and the server's bind, it tries
/// again on another port.
pub async fn serve(mut command: Command, log_name: &str) -> (Child, u16) {
    let log_path = log_dir().join(format!("{log_name}.log"));
    command.arg("serve").stderr(Stdio::piped());
    let attempts = 3;
    for attempt in 1..=attempts {
        let port = free_port();
        command.env("TOKENVAULT_SERVER__LISTEN", format!("127.0.0.1:{port}"));
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let copy = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = writeln!(log, "{line}");
            }
        });
        match wait_ready(&mut child, port).await {
            Ok(()) => return (child, port),
            Err(status) => {
                let _ = copy.join();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if attempt < attempts && log.contains("in use") {
                    continue;
                }
                panic!("serve exited ({status}) before it was ready:\n{log}");
            }
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released),
/// for a server process to listen on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `/readyz` on `port` (HTTPS with the `app` client certificate) every 20 ms until
/// it answers 200, for at most 60 s. Returns the exit status instead if the process exits
/// first; kills it and panics if it is not ready in time.
async fn wait_ready(child: &mut Child, port: u16) -> Result<(), ExitStatus> {
    let http = client("app");
    let url = format!("https://localhost:{port}/readyz");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Err(status);
        }
        let last = match http.get(&url).timeout(Duration::from_secs(2)).send().await {
            Ok(r) if r.status() == 200 => return Ok(()),
            Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => e.to_string(),
        };
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve on port {port} was not ready within 60 s: /readyz: {last}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether process `pid` has the database of `settings` open: the SQLite file among its
/// open files, or one of its sockets an established TCP connection to PostgreSQL's port.
/// A vault opens its database only once it has logged in to the HSM (`Vault::open`).
pub fn has_database_open(pid: u32, settings: &Settings) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let links: Vec<PathBuf> = fds
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .collect();
    let url = settings.database.url.expose_secret();
    if let Some(path) = url.strip_prefix("sqlite://") {
        let file = PathBuf::from(path.split('?').next().unwrap_or_default());
        let file = std::fs::canonicalize(&file).unwrap_or(file);
        return links.contains(&file);
    }
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let port = host_port
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .unwrap_or(5432);
    let sockets: HashSet<String> = links
        .iter()
        .filter_map(|l| {
            let l = l.to_str()?;
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|line| {
                // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
                let f: Vec<&str> = line.split_whitespace().collect();
                f.len() > 9
                    && f[3] == "01"
                    && f[2]
                        .rsplit(':')
                        .next()
                        .and_then(|p| u16::from_str_radix(p, 16).ok())
                        == Some(port)
                    && sockets.contains(f[9])
            })
    })
}
