//! Logging to stderr: human-readable by default, JSON with `TOKENVAULT_LOG_FORMAT=json`.
//! Filter with `TOKENVAULT_LOG` (or `RUST_LOG`), e.g. `info,sqlx=warn`.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = std::env::var("TOKENVAULT_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info,sqlx=warn".to_owned());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = if std::env::var("TOKENVAULT_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests) keeps the first subscriber.
    drop(result);
}

/// Keeps key material out of core dumps: no core files, and (Linux) the process is not
/// dumpable, which also stops other unprivileged processes from attaching with ptrace.
/// Called first thing in `main`.
pub fn harden_process() -> Result<(), String> {
    #[cfg(unix)]
    {
        use nix::sys::resource::{Resource, setrlimit};
        setrlimit(Resource::RLIMIT_CORE, 0, 0)
            .map_err(|e| format!("cannot disable core dumps: {e}"))?;
    }
    #[cfg(target_os = "linux")]
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| format!("cannot make the process non-dumpable: {e}"))?;
    Ok(())
}
