//! The officer-request flow every lifecycle command shares: create the request, add the
//! signatures given (a local `--key`, or `--signature` files made elsewhere), and run the
//! operation as the signers once enough distinct officers signed.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::officers::{
    self, Executed, OfficerKey, Operation, Progress, RequestDocument, SignatureFile,
};
use crate::tokenize::RewrapOptions;
use crate::vault::{Vault, now_ms};

/// How an officer signs, on any lifecycle command.
#[derive(Debug, Clone, clap::Args)]
pub struct SignArgs {
    /// Sign here with this officer key file (made by `tokenvault officer keygen`).
    /// Without it, the request is only recorded, for officers to sign elsewhere.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Also write the request document here (what `tokenvault officer sign` reads).
    #[arg(long, value_name = "FILE")]
    pub request_out: Option<PathBuf>,
    /// Hours until an unsigned request expires.
    #[arg(long, default_value_t = 24)]
    pub expires_in_hours: u32,
}

/// Records per rewrap transaction unless `--batch` says otherwise. Measured (release
/// build, SQLite, 10⁵ records on a shared 2-core machine): 500 → 32,700 records/s,
/// 2,000 → 44,200, 5,000 → 36,200. Larger batches pay the fsync and the audit event less
/// often, but hold SQLite's write lock longer (a batch's writes, tens of ms) and, past
/// a few thousand, no longer gain; `--rate` spares live traffic further.
pub const DEFAULT_SWEEP_BATCH: usize = 2000;

/// How a rewrap sweep runs once approved.
#[derive(Debug, Clone, Copy)]
pub struct SweepOptions {
    pub batch: usize,
    pub rate: Option<u32>,
    pub quiet: bool,
}

impl Default for SweepOptions {
    fn default() -> Self {
        Self {
            batch: 500,
            rate: None,
            quiet: false,
        }
    }
}

/// Ends a CLI command that worked on `vault`: seals what it did under a signed checkpoint
/// right away and closes the database, then reports the command's own error first.
pub async fn seal_and_close(vault: Vault, result: anyhow::Result<()>) -> anyhow::Result<()> {
    let sealed = vault.checkpointer().checkpoint(now_ms()).await;
    vault.store.close().await;
    result?;
    sealed?;
    Ok(())
}

/// Records `op` as a request, signs it with `--key` if given, and runs it if that was
/// enough.
pub async fn submit(
    vault: &Vault,
    op: Operation,
    reason: Option<&str>,
    args: &SignArgs,
    sweep: SweepOptions,
) -> anyhow::Result<()> {
    let ttl = i64::from(args.expires_in_hours) * 3_600_000;
    let doc = officers::create(&vault.store, op, reason, ttl, now_ms()).await?;
    if let Some(path) = &args.request_out {
        write_request(path, &doc)?;
    }
    println!("request {}: {}", doc.id, doc.summary);
    match &args.key {
        Some(key) => {
            let key = OfficerKey::load(key)?;
            sign_and_run(vault, &key.sign(&doc), sweep).await
        }
        None => {
            print_how_to_sign(&doc, 0);
            Ok(())
        }
    }
}

/// Adds one officer's signature to a pending request; runs it if that was the last one.
pub async fn sign_and_run(
    vault: &Vault,
    sig: &SignatureFile,
    sweep: SweepOptions,
) -> anyhow::Result<()> {
    match officers::add_signature(&vault.store, sig, now_ms()).await? {
        Progress::Waiting { doc, signed_by } => {
            println!(
                "signed by {}; {} of {} officer signatures",
                signed_by.join(", "),
                signed_by.len(),
                doc.signatures_required
            );
            print_how_to_sign(&doc, signed_by.len());
            Ok(())
        }
        Progress::Ready { doc, actor } => {
            let outcome = run(vault, &doc, &actor, sweep).await;
            officers::finish(&vault.store, &doc.id, outcome.is_ok(), now_ms()).await?;
            outcome?;
            println!("approved by {actor}: {}", doc.operation);
            Ok(())
        }
    }
}

async fn run(
    vault: &Vault,
    doc: &RequestDocument,
    actor: &str,
    sweep: SweepOptions,
) -> anyhow::Result<()> {
    match officers::execute(&vault.store, &vault.keys, doc, actor, now_ms()).await? {
        Executed::Done(line) => println!("{line}"),
        Executed::Rewrap { keyring } => rewrap(vault, &keyring, actor, sweep).await?,
    }
    Ok(())
}

fn print_how_to_sign(doc: &RequestDocument, have: usize) {
    let need = doc.signatures_required as usize;
    if have >= need {
        return;
    }
    let who = if have == 0 {
        "An officer"
    } else {
        "A second, different officer"
    };
    println!("{who} signs it where their key lives:");
    println!("  tokenvault keys request {} > {}.json", doc.id, doc.id);
    println!(
        "  tokenvault officer sign {}.json --key <their key file> --out {}.sig",
        doc.id, doc.id
    );
    println!(
        "and on the vault host: tokenvault keys approve {} --signature {}.sig",
        doc.id, doc.id
    );
}

/// Writes a request document (canonical JSON) to a file.
pub fn write_request(path: &Path, doc: &RequestDocument) -> anyhow::Result<()> {
    std::fs::write(path, format!("{}\n", doc.canonical()))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a signature file.
pub fn read_signature(path: &Path) -> anyhow::Result<SignatureFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(SignatureFile::parse(&text)?)
}

async fn rewrap(
    vault: &Vault,
    keyring: &str,
    actor: &str,
    sweep: SweepOptions,
) -> anyhow::Result<()> {
    let service = vault.services().tokens;
    // Expired records are deleted, never re-sealed under the new key.
    let purged = service.purge_expired(actor, now_ms()).await?;
    if purged > 0 {
        eprintln!("{purged} expired tokens purged before the sweep");
    }
    let bar = sweep_bar(
        sweep.quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()),
        indicatif::ProgressDrawTarget::stderr(),
    );
    // Log lines go above the bar. sqlx's slow-statement warnings stay on: with the cursor
    // index no statement of the sweep should take a second, and one that does is news.
    let logs_above = crate::telemetry::show_logs_above(&bar);
    let started = std::time::Instant::now();
    let report = service
        .rewrap(
            keyring,
            RewrapOptions {
                batch: sweep.batch,
                rate: sweep.rate,
            },
            actor,
            now_ms,
            |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            },
        )
        .await?;
    bar.finish_and_clear();
    drop(logs_above);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{keyring}: {} of {} records now under v{} in {secs:.1}s ({:.0} records/s); {} failed",
        report.done,
        report.total,
        report.to_version,
        report.done as f64 / secs.max(0.001),
        report.failed
    );
    if report.failed > 0 {
        for t in report.failures.iter().take(20) {
            eprintln!("  could not rewrap {t}");
        }
        anyhow::bail!(
            "{} records could not be rewrapped (their key is destroyed or the record is corrupt); see above",
            report.failed
        );
    }
    Ok(())
}

/// The sweep's progress bar (hidden when quiet or not on a terminal): records done, the
/// rate as a whole number of records per second, and the time left.
fn sweep_bar(hidden: bool, target: indicatif::ProgressDrawTarget) -> indicatif::ProgressBar {
    if hidden {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(Some(0), target);
    // `{per_sec}` would print fractions ("845.0181/s"): a whole number reads at a glance.
    let rate = |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
        let r = state.per_sec();
        let _ = write!(w, "{:.0}/s", if r.is_finite() { r } else { 0.0 });
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} records  {rate}  ETA {eta}")
            .map(|s| s.with_key("rate", rate))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use indicatif::{ProgressDrawTarget, TermLike};

    /// A terminal that records what is drawn, and a log sink writing to the same record.
    #[derive(Debug, Clone, Default)]
    struct Screen(Arc<Mutex<Vec<String>>>);

    impl Screen {
        fn push(&self, what: String) -> std::io::Result<()> {
            self.0.lock().unwrap().push(what);
            Ok(())
        }
        fn events(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            120
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.push(format!("bar {s}"))
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.push(format!("bar {s}"))
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.push("clear".into())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Write for Screen {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.push(format!("log {}", String::from_utf8_lossy(buf).trim_end()))?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_sweep_bar_shows_the_rate_as_a_whole_number() {
        let screen = Screen::default();
        let bar = super::sweep_bar(
            false,
            ProgressDrawTarget::term_like(Box::new(screen.clone())),
        );
        bar.set_length(1_000_000);
        for done in 1..=20 {
            std::thread::sleep(std::time::Duration::from_millis(2));
            bar.set_position(done * 1000);
        }
        let drawn = screen.events();
        let last = drawn.iter().rev().find(|l| l.contains("records")).unwrap();
        let rate = last
            .split_whitespace()
            .find(|w| w.ends_with("/s"))
            .unwrap_or_else(|| panic!("no rate in {last:?}"));
        let number = rate.trim_end_matches("/s");
        assert!(
            !number.is_empty() && number.chars().all(|c| c.is_ascii_digit()),
            "the rate must be a whole number: {last:?}"
        );
    }

    #[test]
    fn log_lines_go_above_the_bar_not_through_it() {
        let screen = Screen::default();
        let bar = super::sweep_bar(
            false,
            ProgressDrawTarget::term_like(Box::new(screen.clone())),
        );
        bar.set_length(10);
        bar.set_position(3);
        let guard = crate::telemetry::show_logs_above(&bar);
        let mut log = crate::telemetry::AboveBar(screen.clone());
        log.write_all(b"a slow statement\n").unwrap();
        drop(guard);
        bar.set_position(4);
        let events = screen.events();
        let at = events
            .iter()
            .position(|e| e == "log a slow statement")
            .unwrap();
        assert_eq!(
            events[at - 1],
            "clear",
            "the bar is cleared before the line: {events:?}"
        );
        assert!(
            events[at + 1..]
                .iter()
                .any(|e| e.starts_with("bar") && e.contains("3/10 records")),
            "the bar is drawn again below the line: {events:?}"
        );
        let mut after = crate::telemetry::AboveBar(screen.clone());
        after.write_all(b"after the bar\n").unwrap();
        let events = screen.events();
        assert_eq!(
            events[events.len() - 1],
            "log after the bar",
            "with the guard gone, lines are written as they come"
        );
    }
}
