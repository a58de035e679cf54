//! What the bulk commands (`import`, `mask`) share: input formats, the progress bar and
//! its rate, and the files a resumable run leaves beside its output.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The format of an input file.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    Csv,
    Jsonl,
}

/// A rate as people read it: a whole number of records per second.
pub fn rate(n: u64, since: Instant) -> String {
    let secs = since.elapsed().as_secs_f64().max(0.001);
    format!("{n} records, {}/s", (n as f64 / secs).round() as u64)
}

pub fn progress(quiet: bool, len: Option<u64>) -> indicatif::ProgressBar {
    if quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::no_length(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {msg}  ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

pub fn guess_format(input: &Path) -> InputFormat {
    match input.extension().and_then(|e| e.to_str()) {
        Some("jsonl" | "ndjson" | "json") => InputFormat::Jsonl,
        _ => InputFormat::Csv,
    }
}

pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

/// Opens a file a run left (its state or its output): never through a symbolic link, and
/// only a regular file of this user that nobody else may read or write — a planted state
/// file or a link to another file must not make an import resume into it.
pub fn open_own(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o077 != 0
    {
        return Err(std::io::Error::other(format!(
            "{} is not a private regular file of this user (mode 0600, no link)",
            path.display()
        )));
    }
    Ok(file)
}

/// Locks a run's state file for as long as the run lasts: a second run on the same output
/// is refused instead of writing over the first.
pub fn lock_state(file: File, path: &Path) -> anyhow::Result<nix::fcntl::Flock<File>> {
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
        anyhow::anyhow!(
            "another run is writing this output ({} is locked)",
            path.display()
        )
    })
}

/// A new private output or state file (mode 0600): never through a link, and an existing
/// file is refused, naming what kind of `run` it would have to belong to.
pub fn create_private(path: &Path, run: &str) -> anyhow::Result<File> {
    crate::secret_file::private_options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => anyhow::anyhow!(
                "{} exists and belongs to no unfinished {run}; choose another output",
                path.display()
            ),
            _ => anyhow::anyhow!("cannot create {}: {e}", path.display()),
        })
}
