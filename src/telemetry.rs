//! Logging to stderr: human-readable by default, JSON with `TOKENVAULT_LOG_FORMAT=json`.
//! Filter with `TOKENVAULT_LOG` (or `RUST_LOG`), e.g. `info,sqlx=warn`. While the CLI
//! shows a progress bar, log lines are printed above it, not through it.

use std::io::Write;
use std::sync::RwLock;

use indicatif::ProgressBar;
use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = std::env::var("TOKENVAULT_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info,sqlx=warn".to_owned());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(|| AboveBar(std::io::stderr()))
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

/// The progress bar on the terminal, if one is shown (`show_logs_above`).
static BAR: RwLock<Option<ProgressBar>> = RwLock::new(None);

/// Routes log lines above `bar` until the returned guard is dropped: each line is written
/// while the bar is cleared, then the bar is drawn again below it. Without this, a log
/// line (e.g. sqlx's slow-statement warning) lands in the middle of the bar's line and
/// the next redraw leaves both garbled.
#[must_use = "the logs go above the bar only while the guard lives"]
pub fn show_logs_above(bar: &ProgressBar) -> LogsAboveBar {
    *BAR.write().unwrap_or_else(|p| p.into_inner()) = Some(bar.clone());
    LogsAboveBar(())
}

/// While it lives, log lines are printed above the bar given to `show_logs_above`.
pub struct LogsAboveBar(());

impl Drop for LogsAboveBar {
    fn drop(&mut self) {
        *BAR.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// A log writer that suspends the bar, if one is shown, around each write. The fmt layer
/// writes each event with one `write_all`, so one event is one suspension.
pub struct AboveBar<W>(pub W);

impl<W: Write> Write for AboveBar<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = BAR.read().unwrap_or_else(|p| p.into_inner()).clone();
        match bar {
            Some(bar) => bar.suspend(|| self.0.write_all(buf).map(|()| buf.len())),
            None => self.0.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
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
