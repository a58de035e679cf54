//! `tokenvault mask`: a masked copy of a data set for test environments. Every mapped
//! column is replaced by a synthetic value of its kind ([`crate::nonprod::mask`]): the same
//! input gives the same output in every table and every run with the same masking key, so
//! joins survive; unmapped columns are copied as they are.
//!
//! The masking key is derived from the vault's active fingerprint key (the run records its
//! version, and a resumed run keeps it); without the vault a masked value cannot be traced
//! back. Inputs are never written anywhere: not to the output, the state file beside it
//! (offsets and counts only), the logs or the audit trail (a `data.mask` event with the
//! row count, the kinds and the key name).
//!
//! Resumable after `kill -9`: the output is synced about once a second and a line holding
//! the input offset, the output length and the row count is appended to
//! `<output>.mask-state`; a resumed run cuts the output back to the last recorded length
//! and reads on from the recorded offset (masking is deterministic, so nothing is lost or
//! written twice). For an input file each line also holds a keyed digest of the bytes
//! read so far (their first and last 64 KiB): a file regenerated at the same path is
//! refused, not resumed mid-way. Standard input cannot be checked: a resumed run must be
//! given the same rows again. The state file goes when the run ends.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::files::{
    InputFormat, create_private, guess_format, lock_state, open_own, progress, rate, sibling,
};
use super::mask_io::{InputDigest, Plan, Position, Sink, mask_all, open_file, open_table};
use crate::audit::{Action, AuditEvent, Outcome};
use crate::nonprod::Kind;
use crate::nonprod::mask::Masker;
use crate::vault::{Vault, now_ms};

#[derive(Debug, clap::Args)]
pub struct MaskArgs {
    /// The columns to mask and what they hold, e.g.
    /// `card_number=pan,ssn=ssn,email=email,name=name,address=address` (kinds: pan, ssn,
    /// email, name, address).
    #[arg(long, value_name = "COLUMN=KIND,…")]
    pub columns: String,
    /// A CSV or JSON-lines file; `-` reads standard input (a resumed run must be given the
    /// same rows again).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "from_url",
        required_unless_present = "from_url"
    )]
    pub input: Option<PathBuf>,
    /// The input format (default: from the file name, else csv).
    #[arg(long, value_enum)]
    pub input_format: Option<InputFormat>,
    /// A database to read `--table` from (`sqlite://…`, `postgres://…`; a password
    /// belongs in PGPASSWORD, not in the URL).
    #[arg(long, value_name = "URL", requires = "table")]
    pub from_url: Option<String>,
    /// The table to mask (`name` or `schema.name`).
    #[arg(long, requires = "from_url")]
    pub table: Option<String>,
    /// A unique column that orders the table's rows, so a resumed run continues where it
    /// stood (default: the first column).
    #[arg(long, requires = "from_url")]
    pub order_by: Option<String>,
    /// Where the masked copy goes: CSV, or JSON lines if the name ends in .jsonl. An
    /// existing file is only accepted to resume the run that wrote it.
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    /// The masking key's name: runs with the same name on the same vault mask alike.
    #[arg(long, default_value = "default")]
    pub key: String,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// How often the output is synced and the run's progress recorded (tests shorten it).
    #[arg(long, hide = true, default_value_t = 1000)]
    pub sync_every_ms: u64,
}

/// What ties an output to its run (written once, as the state file's first line).
#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
struct RunKey {
    /// The masking algorithm's version: a run started by a release that masked otherwise
    /// is not resumed (its copy would mix two sets of masked values).
    #[serde(default)]
    algorithm: u32,
    columns: Vec<(String, Kind)>,
    source: String,
    input_format: Option<InputFormat>,
    key: String,
    key_version: u32,
}

/// A progress line of the state file.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    input: Position,
    output_len: u64,
    /// For an input file: a keyed digest of what the run had read ([`InputDigest`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    input_mac: Option<String>,
}

/// The version of what a masked value is (2: the 12-digit default test prefixes, card
/// prefixes drawn in proportion to their numbers, SSNs read as nine digits).
const MASK_ALGORITHM: u32 = 2;

fn parse_columns(spec: &str) -> anyhow::Result<Vec<(String, Kind)>> {
    let mut out: Vec<(String, Kind)> = Vec::new();
    for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (column, kind) = pair
            .split_once('=')
            .with_context(|| format!("`{pair}`: expected COLUMN=KIND"))?;
        let kind = Kind::parse(kind.trim())
            .with_context(|| format!("`{kind}`: the kinds are pan, ssn, email, name, address"))?;
        let column = column.trim().to_owned();
        if out.iter().any(|(c, _)| *c == column) {
            bail!("column `{column}` is mapped twice");
        }
        out.push((column, kind));
    }
    if out.is_empty() {
        bail!("--columns maps no column");
    }
    Ok(out)
}

pub async fn run(vault: &Vault, args: MaskArgs) -> anyhow::Result<()> {
    let columns = parse_columns(&args.columns)?;
    if crate::names::TypeName::parse(&args.key).is_err() {
        bail!("--key: 1–32 characters of a-z, 0-9, _ and -, starting with a letter");
    }
    let format = match (&args.input, args.input_format) {
        (Some(_), Some(f)) => Some(f),
        (Some(path), None) => Some(guess_format(path)),
        (None, _) => None,
    };
    let source_name = match (&args.input, &args.table) {
        (Some(path), _) => format!("file {}", path.display()),
        (None, Some(table)) => format!("table {table} ordered by {:?}", args.order_by),
        (None, None) => bail!("give --input or --from-url with --table"),
    };
    let keys = vault.keys.fingerprint_keys().await?;
    let state_path = sibling(&args.output, "mask-state");
    let wanted = |key_version| RunKey {
        algorithm: MASK_ALGORITHM,
        columns: columns.clone(),
        source: source_name.clone(),
        input_format: format,
        key: args.key.clone(),
        key_version,
    };
    let (run, mut state, output, resumed_at) = match open_own(&state_path) {
        Ok(file) => {
            let mut lock = lock_state(file, &state_path)?;
            let (run, at) = read_state(&mut lock)?;
            if run.algorithm != MASK_ALGORITHM {
                bail!(
                    "{} belongs to a mask run of an earlier release, which masked values \
                     otherwise; remove it and {} to start again",
                    args.output.display(),
                    state_path.display()
                );
            }
            if run != wanted(run.key_version) {
                bail!(
                    "{} belongs to a mask run with other arguments; resume it with the same \
                     arguments or choose another output",
                    args.output.display()
                );
            }
            let output = open_own(&args.output)
                .with_context(|| format!("cannot open {}", args.output.display()))?;
            output.set_len(at.output_len)?;
            (run, lock, output, Some(at))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (version, _) = keys.first().context("the vault has no fingerprint key")?;
            let output = create_private(&args.output, "mask run")?;
            let run = wanted(version.get());
            let mut file = create_private(&state_path, "mask run")?;
            writeln!(file, "{}", serde_json::to_string(&run)?)?;
            file.sync_all()?;
            (run, lock_state(file, &state_path)?, output, None)
        }
        Err(e) => bail!("cannot open {}: {e}", state_path.display()),
    };
    let key = keys
        .iter()
        .find(|(v, _)| v.get() == run.key_version)
        .map(|(_, k)| k)
        .context("the fingerprint key version this run started with is no longer usable")?;
    let masker = Masker::new(
        key,
        &run.key,
        vault.settings.nonproduction.test_card_prefixes.clone(),
    );
    // What identifies the input file's content to a resumed run (none for standard input
    // or a table, which are read again from their start or their order).
    let mut digest = match args.input.as_deref() {
        Some(path) => InputDigest::open(path, key.derived(&format!("mask/{}/resume", run.key)))?,
        None => None,
    };
    if let (Some(at), Some(d)) = (&resumed_at, digest.as_mut())
        && at.input.bytes > 0
        && d.upto(at.input.bytes)? != at.input_mac
    {
        bail!(
            "{} changed since the run stopped: it no longer holds the rows the run read. Give \
             it the same input, or remove {} and {} to start again",
            args.input.as_deref().unwrap_or(Path::new("-")).display(),
            args.output.display(),
            state_path.display()
        );
    }
    let at = resumed_at.as_ref().map(|c| c.input).unwrap_or_default();
    let (mut source, mut pos, len) = match (&args.input, format) {
        (Some(path), Some(format)) => open_file(path, format, at)?,
        _ => {
            let (url, table) = (args.from_url.as_deref(), args.table.as_deref());
            let (url, table) = url.zip(table).context("give --from-url with --table")?;
            let (source, len) = open_table(url, table, args.order_by.as_deref(), at).await?;
            (source, at, len)
        }
    };
    let plan = Plan::new(columns, source.header())?;
    let kinds: Vec<&str> = plan.columns.iter().map(|(_, k)| k.as_str()).collect();
    let described = format!(
        "{} to {} ({}) with masking key {} of fingerprint key v{}",
        audited_source(&args),
        args.output.display(),
        kinds.join(", "),
        run.key,
        run.key_version
    );
    let verb = if resumed_at.is_some() {
        "resumed"
    } else {
        "started"
    };
    let event = AuditEvent::new("cli", Action::DataMaskStart, Outcome::Success)
        .origin("cli")
        .reason(Some(format!("{verb} at row {}: {described}", pos.rows)));
    vault.services().guard.record(event, now_ms()).await?;
    let jsonl = args.output.extension().is_some_and(|e| e == "jsonl");
    let mut sink = Sink::new(output, jsonl, source.header())?;

    let bar = progress(args.quiet, len);
    let started = Instant::now();
    let first_row = pos.rows;
    let mut last_sync = Instant::now();
    loop {
        let mut rows = source.next_chunk(&mut pos).await?;
        if rows.is_empty() {
            break;
        }
        mask_all(&masker, &plan, &mut rows)?;
        for row in &rows {
            sink.write(row)?;
        }
        bar.set_position(pos.bytes);
        bar.set_message(rate(pos.rows - first_row, started));
        if last_sync.elapsed() >= Duration::from_millis(args.sync_every_ms) {
            let mac = digest.as_mut().map(|d| d.upto(pos.bytes)).transpose()?;
            checkpoint(&mut sink, &mut state, pos, mac.flatten())?;
            last_sync = Instant::now();
        }
    }
    let mac = digest.as_mut().map(|d| d.upto(pos.bytes)).transpose()?;
    checkpoint(&mut sink, &mut state, pos, mac.flatten())?;
    bar.finish_and_clear();

    let event = AuditEvent::new("cli", Action::DataMask, Outcome::Success)
        .origin("cli")
        .reason(Some(format!("{} rows masked: {described}", pos.rows)));
    vault.services().guard.record(event, now_ms()).await?;
    std::fs::remove_file(&state_path)?;
    eprintln!(
        "masked {} rows into {} ({})",
        pos.rows,
        args.output.display(),
        rate(pos.rows - first_row, started),
    );
    Ok(())
}

/// The source as the audit trail names it: a database URL without its credentials or
/// parameters (a password belongs in PGPASSWORD, but may have been put in the URL).
fn audited_source(args: &MaskArgs) -> String {
    match (&args.input, &args.from_url, &args.table) {
        (Some(path), _, _) if path.as_os_str() == "-" => "standard input".into(),
        (Some(path), _, _) => path.display().to_string(),
        (None, Some(url), Some(table)) => {
            let url = url.split(['?', '#']).next().unwrap_or_default();
            let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
            // Whatever precedes the last `@` may hold a user and password (a SQLite
            // URL is a path, where `@` is a character like any other).
            let rest = if scheme.starts_with("sqlite") {
                rest
            } else {
                rest.rsplit_once('@').map_or(rest, |(_, host)| host)
            };
            format!("table {table} of {scheme}://{rest}")
        }
        _ => "an unnamed source".into(),
    }
}

/// Makes the output durable, then records how far it goes.
fn checkpoint(
    sink: &mut Sink,
    state: &mut File,
    input: Position,
    input_mac: Option<String>,
) -> anyhow::Result<()> {
    let output_len = sink.sync()?;
    let line = serde_json::to_string(&Checkpoint {
        input,
        output_len,
        input_mac,
    })?;
    state.seek(std::io::SeekFrom::End(0))?;
    writeln!(state, "{line}")?;
    state.sync_data()?;
    Ok(())
}

/// The run and its last complete checkpoint (a torn last line from a kill is ignored).
fn read_state(file: &mut File) -> anyhow::Result<(RunKey, Checkpoint)> {
    file.rewind()?;
    let mut lines = BufReader::new(&mut *file).lines();
    let run: RunKey = lines
        .next()
        .transpose()?
        .and_then(|l| serde_json::from_str(&l).ok())
        .context("the mask state file is not one")?;
    let mut last = Checkpoint {
        input: Position::default(),
        output_len: 0,
        input_mac: None,
    };
    for line in lines {
        match serde_json::from_str(&line?) {
            Ok(c) => last = c,
            Err(_) => break,
        }
    }
    Ok((run, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(url: &str) -> String {
        audited_source(&MaskArgs {
            columns: "card=pan".into(),
            input: None,
            input_format: None,
            from_url: Some(url.into()),
            table: Some("payments".into()),
            order_by: None,
            output: "out.csv".into(),
            key: "default".into(),
            quiet: true,
            sync_every_ms: 1000,
        })
    }

    #[test]
    fn the_audited_source_names_no_credentials_and_keeps_sqlite_paths() {
        assert_eq!(
            from("postgres://u:p@ss@db:5432/prod?password=x"),
            "table payments of postgres://db:5432/prod"
        );
        assert_eq!(
            from("postgresql:///prod?host=/tmp&user=u&password=p"),
            "table payments of postgresql:///prod"
        );
        assert_eq!(
            from("sqlite:///srv/user@corp/db.sqlite?mode=ro"),
            "table payments of sqlite:///srv/user@corp/db.sqlite"
        );
    }
}
