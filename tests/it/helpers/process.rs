//! The `tokenvault` binary as its own process, configured through the environment as an
//! operator would.

use std::path::PathBuf;

use tokenvault::config::Settings;

use super::config_file;

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
