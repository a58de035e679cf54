//! `tokenvault import`: bulk tokenization of a CSV or JSON-lines file (or stdin) on behalf
//! of a configured client, through the one tokenize path (same validation, formats,
//! namespace, permissions and audit as the API), writing `id → token` to an output file.
//!
//! Resumable after `kill -9`: each batch commits with a journal entry holding the tokens it
//! issued ([`crate::store::ImportJournal`]); the output file is synced now and then and the
//! journal entries it covers are pruned. A resumed run keeps the complete records of the
//! output, writes the records the journal holds but the output lost from the journal, and
//! tokenizes only what was never committed — no record is tokenized twice or lost. A run
//! is tied to its output file by `<output>.import-state`, removed when the run ends.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use zeroize::Zeroizing;

use crate::audit::Verb;
use crate::error::Error;
use crate::guard::Principal;
use crate::tokenize::{JournalSpec, RawValue, TokenService, TokenizeInput, Tokenized};
use crate::vault::{Vault, now_ms};

pub use super::files::InputFormat;
use super::files::{create_private, guess_format, lock_state, open_own, progress, rate, sibling};

/// Batches in flight at once: one is being committed while the next is prepared.
const IN_FLIGHT: usize = 3;
/// How often the output file is synced (and the journal behind it pruned).
const SYNC_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The configured client the values are tokenized for: its namespace and permissions
    /// apply (it needs `tokenize:<type>` and `import:<type>`), and the audit trail names it.
    #[arg(long = "as", value_name = "CLIENT")]
    pub client: String,
    /// The token type of every value.
    #[arg(long = "type", value_name = "TYPE")]
    pub token_type: String,
    /// The input file; `-` reads standard input (a resumed run must be given the same
    /// records again).
    #[arg(long, value_name = "FILE", default_value = "-")]
    pub input: PathBuf,
    /// The input format (default: from the file name, else csv).
    #[arg(long, value_enum)]
    pub input_format: Option<InputFormat>,
    /// The CSV column or JSON field holding the value.
    #[arg(long, default_value = "value")]
    pub value_column: String,
    /// The CSV column or JSON field holding the caller's id of a record (optional; without
    /// it the output names records by their number, from 1).
    #[arg(long)]
    pub id_column: Option<String>,
    /// Where `id,token,error` goes (JSON lines if the name ends in .jsonl). An existing
    /// file is only accepted to resume the run that wrote it.
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    /// Records per batch (one transaction each).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: u32,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// The input is Vault Transform's `export-decoded` output, one exported value per
    /// JSON line (`token`, base64 `plaintext`, `expiration_time`): each value is stored
    /// under its Vault token, so downstream databases keep their tokens. The output names
    /// each record by its token.
    #[arg(long, conflicts_with_all = ["value_column", "id_column"])]
    pub vault_transform_export: bool,
}

/// What ties an output file to its run.
#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
struct RunState {
    run: String,
    client: String,
    token_type: String,
    input: PathBuf,
    input_format: InputFormat,
    value_column: String,
    id_column: Option<String>,
    #[serde(default)]
    vault_transform_export: bool,
}

/// One input record: the caller's id and the value (cleared on drop), or why it is unusable.
struct Record {
    id: String,
    value: Result<Zeroizing<String>, &'static str>,
    /// An exported token to keep, and the seconds it has left (Vault Transform imports).
    token: Option<String>,
    ttl_seconds: Option<u64>,
}

pub async fn run(vault: &Vault, args: ImportArgs) -> anyhow::Result<()> {
    let services = vault.services();
    let who = services.guard.principal(&args.client, "cli");
    for (verb, what) in [(Verb::Tokenize, "tokenize"), (Verb::Import, "import")] {
        if !who.may(verb, &args.token_type) {
            bail!(
                "client `{}` lacks `{what}:{}`; an import tokenizes as a client that holds \
                 both tokenize and import for the type",
                args.client,
                args.token_type
            );
        }
    }
    let format = if args.vault_transform_export {
        InputFormat::Jsonl
    } else {
        args.input_format
            .unwrap_or_else(|| guess_format(&args.input))
    };
    let state_path = sibling(&args.output, "import-state");
    let wanted = RunState {
        run: String::new(),
        client: args.client.clone(),
        token_type: args.token_type.clone(),
        input: args.input.clone(),
        input_format: format,
        value_column: args.value_column.clone(),
        id_column: args.id_column.clone(),
        vault_transform_export: args.vault_transform_export,
    };
    let (run_lock, output, resumed) = open_run(&args.output, &state_path, wanted)?;
    let state = &run_lock.state;
    let journal = vault.store.import_journal(&state.run).await?;
    let journaled = !journal.is_empty();
    let mut from_journal: HashMap<i64, String> = HashMap::new();
    let mut next_batch = 0;
    // Until every record of the old entries is in the output and synced, none is pruned.
    let (mut oldest, mut old_end) = (None, 0i64);
    for entry in journal {
        next_batch = next_batch.max(entry.batch + 1);
        oldest = Some(oldest.map_or(entry.batch, |o: i64| o.min(entry.batch)));
        old_end = old_end.max(entry.first_record + entry.records.len() as i64);
        for (k, r) in entry.records.into_iter().enumerate() {
            from_journal.insert(entry.first_record + k as i64, r);
        }
    }
    let mut out = Output::open(output, &args.output)?;
    let skip = out.records;
    // After its first commit, a run always has a journal entry until it ends: an output
    // with records whose run the vault has no record of was not written by an import.
    if resumed && skip > 0 && !journaled {
        bail!(
            "{} holds records but the vault has no journal of its run; it was not written by \
             an unfinished import — choose another output",
            args.output.display()
        );
    }
    if resumed {
        eprintln!(
            "resuming: {skip} records already in {}, {} more committed before the stop",
            args.output.display(),
            from_journal.keys().filter(|r| **r >= skip as i64).count()
        );
    }
    let mut input = Input::open(&args, format)?;
    let bar = progress(args.quiet, input.len);
    let started = Instant::now();
    let run = Importer {
        tokens: &services.tokens,
        who: &who,
        token_type: &args.token_type,
    };
    let mut in_flight = FuturesOrdered::new();
    let mut pending: Vec<Record> = Vec::new();
    let mut first = skip as i64;
    let mut record_no = 0i64;
    let mut last_sync = Instant::now();
    let mut synced_batch = oldest.unwrap_or(next_batch);
    let (mut done, mut failed) = (0u64, 0u64);
    loop {
        let next = input.next(&args)?;
        let covered = next
            .as_ref()
            .map(|_| from_journal.contains_key(&record_no))
            .unwrap_or(false);
        let flush = next.is_none() || covered || pending.len() == args.batch as usize;
        if flush && !pending.is_empty() {
            let batch = std::mem::take(&mut pending);
            let spec = JournalSpec {
                run: state.run.clone(),
                batch: next_batch,
                first_record: first,
                prune_before: synced_batch,
            };
            next_batch += 1;
            in_flight.push_back(run.batch(batch, spec));
        }
        // Results are written in input order; the queue is drained when full, at a record
        // the journal already holds, and at the end.
        while in_flight.len() >= IN_FLIGHT || ((covered || next.is_none()) && !in_flight.is_empty())
        {
            let Some(result) = in_flight.next().await else {
                break;
            };
            let (ids, answers, batch_no) = result?;
            for (id, answer) in ids.iter().zip(&answers) {
                match answer {
                    Ok(token) => {
                        out.write(id, Some(token), None)?;
                        done += 1;
                    }
                    Err(code) => {
                        out.write(id, None, Some(code))?;
                        failed += 1;
                    }
                }
            }
            if last_sync.elapsed() >= SYNC_EVERY {
                out.sync()?;
                last_sync = Instant::now();
                if out.records as i64 >= old_end {
                    synced_batch = batch_no + 1;
                }
                // The events written so far under a signed checkpoint, when one is due.
                vault
                    .checkpointer()
                    .checkpoint_if_due(
                        vault.settings.audit.checkpoint_every,
                        vault.settings.audit.checkpoint_interval_secs * 1000,
                        now_ms(),
                    )
                    .await?;
            }
            bar.set_position(input.consumed());
            bar.set_message(rate(done + failed, started));
        }
        let Some(mut record) = next else { break };
        let this = record_no;
        record_no += 1;
        if args.id_column.is_none() && (record.token.is_none() || record.id.is_empty()) {
            record.id = record_no.to_string();
        }
        if this < skip as i64 {
            continue;
        }
        if let Some(committed) = from_journal.get(&this) {
            // Committed before the stop: written from the journal, or (a record whose
            // random token was still being redrawn) tokenized now on its own.
            let id = record.id.clone();
            let answer = match committed.strip_prefix('!') {
                Some(code) => Err(code.to_owned()),
                None if committed.is_empty() => run.one(record).await?.1,
                // The journal is a database table like any other: its token is handed out
                // only once its record is seen to hold this value.
                None => run.confirm(committed, record).await?,
            };
            match answer {
                Ok(t) => {
                    out.write(&id, Some(&t), None)?;
                    done += 1;
                }
                Err(code) => {
                    out.write(&id, None, Some(&code))?;
                    failed += 1;
                }
            }
            continue;
        }
        if pending.is_empty() {
            first = this;
        }
        pending.push(record);
    }
    out.sync()?;
    bar.finish_and_clear();
    // The state file first: a stop between the two leaves a journal of no run (harmless)
    // rather than a run whose journal is gone.
    std::fs::remove_file(&state_path)
        .with_context(|| format!("cannot remove {}", state_path.display()))?;
    vault.store.delete_import_journal(&state.run).await?;
    let secs = started.elapsed().as_secs_f64().max(0.001);
    println!(
        "{} records tokenized as {} ({} failed) in {secs:.1}s ({} records/s); output in {}",
        done,
        args.token_type,
        failed,
        ((done + failed) as f64 / secs).round() as u64,
        args.output.display()
    );
    if failed > 0 {
        eprintln!("{failed} records were refused; their error codes are in the output");
    }
    Ok(())
}

/// What a batch needs to tokenize its records.
struct Importer<'a> {
    tokens: &'a TokenService,
    who: &'a Principal,
    token_type: &'a str,
}

type BatchResult = (Vec<String>, Vec<Result<String, String>>, i64);

impl Importer<'_> {
    async fn batch(&self, records: Vec<Record>, spec: JournalSpec) -> anyhow::Result<BatchResult> {
        let batch_no = spec.batch;
        let (ids, items) = self.items(records);
        let results = self
            .tokens
            .tokenize_many(self.who, items, now_ms(), Some(spec))
            .await
            .map_err(fatal)?;
        Ok((ids, results.into_iter().map(answer).collect(), batch_no))
    }

    async fn one(&self, record: Record) -> anyhow::Result<(String, Result<String, String>)> {
        let (mut ids, items) = self.items(vec![record]);
        let mut results = self
            .tokens
            .tokenize_many(self.who, items, now_ms(), None)
            .await
            .map_err(fatal)?;
        let result = results
            .pop()
            .ok_or_else(|| anyhow::anyhow!("a tokenize gave no answer"))?;
        Ok((ids.pop().unwrap_or_default(), answer(result)))
    }

    async fn confirm(&self, token: &str, record: Record) -> anyhow::Result<Result<String, String>> {
        let Ok(value) = record.value else {
            return Ok(Err(Error::InvalidRequest(String::new())
                .code()
                .as_str()
                .to_owned()));
        };
        match self.tokens.confirm_token(token, value.as_bytes()).await {
            Ok(()) => Ok(Ok(token.to_owned())),
            Err(e @ Error::Unavailable(_)) => Err(fatal(e)),
            Err(e) => {
                tracing::error!("a token of the import journal does not hold its record's value");
                Ok(Err(e.code().as_str().to_owned()))
            }
        }
    }

    fn items(&self, records: Vec<Record>) -> (Vec<String>, Vec<Result<TokenizeInput, Error>>) {
        records
            .into_iter()
            .map(|r| {
                let (token, ttl_seconds) = (r.token, r.ttl_seconds);
                let item = r
                    .value
                    .map(|v| TokenizeInput {
                        token_type: self.token_type.to_owned(),
                        value: RawValue(v),
                        format: None,
                        metadata: None,
                        ttl_seconds,
                        given_token: token,
                    })
                    .map_err(|why| Error::InvalidRequest(why.into()));
                (r.id, item)
            })
            .unzip()
    }
}

fn answer(r: Result<Tokenized, Error>) -> Result<String, String> {
    r.map(|t| t.token).map_err(|e| e.code().as_str().to_owned())
}

/// A failure of the whole batch (HSM, database, audit trail): the run stops; it resumes
/// where it stood.
fn fatal(e: Error) -> anyhow::Error {
    anyhow::anyhow!("import stopped: {e}; run the same command again to resume")
}

/// The run of an output, held for as long as the import runs: its state file, locked so
/// that a second import on the same output is refused instead of writing over this one.
struct RunLock {
    state: RunState,
    _lock: nix::fcntl::Flock<File>,
}

/// Starts a run, or finds the one an existing output belongs to.
fn open_run(
    output: &Path,
    state_path: &Path,
    mut wanted: RunState,
) -> anyhow::Result<(RunLock, File, bool)> {
    match open_own(state_path) {
        Ok(file) => {
            let mut lock = lock_state(file, state_path)?;
            let mut text = String::new();
            lock.read_to_string(&mut text)?;
            let state: RunState = serde_json::from_str(&text)
                .with_context(|| format!("{} is not an import state file", state_path.display()))?;
            wanted.run.clone_from(&state.run);
            if state != wanted {
                bail!(
                    "{} belongs to an import with other arguments (client, type, input or \
                     columns); resume it with the same arguments or choose another output",
                    output.display()
                );
            }
            let file =
                open_own(output).with_context(|| format!("cannot open {}", output.display()))?;
            return Ok((RunLock { state, _lock: lock }, file, true));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow::anyhow!("cannot open {}: {e}", state_path.display())),
    }
    // create_new never follows a link: an existing file or link is refused.
    let file = create_private(output, "import")?;
    let mut id = [0u8; 16];
    crate::crypto::random_bytes(&mut id);
    wanted.run = hex::encode(id);
    let mut f = crate::secret_file::private_options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(state_path)
        .with_context(|| format!("cannot create {}", state_path.display()))?;
    f.write_all(serde_json::to_string(&wanted)?.as_bytes())?;
    f.sync_all()?;
    // The new names reach the disk too (a power loss must not lose the output whose
    // journal entries are pruned as it is synced).
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    let lock = lock_state(f, state_path)?;
    Ok((
        RunLock {
            state: wanted,
            _lock: lock,
        },
        file,
        false,
    ))
}

/// The output file: complete records only (a torn last line from a kill is cut off).
struct Output {
    file: std::io::BufWriter<File>,
    jsonl: bool,
    records: u64,
}

impl Output {
    fn open(mut file: File, path: &Path) -> anyhow::Result<Self> {
        let jsonl = path.extension().is_some_and(|e| e == "jsonl");
        let mut text = Vec::new();
        file.read_to_end(&mut text)?;
        let complete = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        file.set_len(complete as u64)?;
        file.seek(std::io::SeekFrom::Start(complete as u64))?;
        let lines = text[..complete].iter().filter(|b| **b == b'\n').count() as u64;
        let mut out = Self {
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            jsonl,
            records: lines,
        };
        if !jsonl {
            if lines == 0 {
                out.file.write_all(b"id,token,error\n")?;
            } else {
                out.records -= 1;
            }
        }
        Ok(out)
    }

    fn write(&mut self, id: &str, token: Option<&str>, error: Option<&str>) -> anyhow::Result<()> {
        if self.jsonl {
            let mut line = serde_json::json!({ "id": id });
            match (token, error) {
                (Some(t), _) => line["token"] = t.into(),
                (None, e) => line["error"] = e.unwrap_or("internal").into(),
            }
            writeln!(self.file, "{line}")?;
        } else {
            writeln!(
                self.file,
                "{},{},{}",
                csv_field(id),
                token.unwrap_or(""),
                error.unwrap_or("")
            )?;
        }
        self.records += 1;
        Ok(())
    }

    fn sync(&mut self) -> anyhow::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_data()?;
        Ok(())
    }
}

/// A CSV field, quoted when it must be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The input records, one at a time.
struct Input {
    source: Source,
    /// The size of the input file, for the progress bar (`None`: standard input).
    len: Option<u64>,
}

enum Source {
    Csv {
        reader: csv::Reader<Box<dyn Read>>,
        value: usize,
        id: Option<usize>,
        record: csv::ByteRecord,
    },
    Jsonl {
        reader: BufReader<Box<dyn Read>>,
        line: Zeroizing<String>,
        consumed: u64,
    },
}

impl Input {
    fn open(args: &ImportArgs, format: InputFormat) -> anyhow::Result<Self> {
        let (raw, len): (Box<dyn Read>, Option<u64>) = if args.input.as_os_str() == "-" {
            (Box::new(std::io::stdin().lock()), None)
        } else {
            let f = File::open(&args.input)
                .with_context(|| format!("cannot open {}", args.input.display()))?;
            let len = f.metadata().ok().map(|m| m.len());
            (Box::new(f), len)
        };
        let source = match format {
            InputFormat::Csv => {
                let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(raw);
                let headers = reader.byte_headers()?.clone();
                let find = |name: &str| headers.iter().position(|h| h == name.as_bytes());
                let value = find(&args.value_column).with_context(|| {
                    format!(
                        "the input has no column `{}` (--value-column)",
                        args.value_column
                    )
                })?;
                let id =
                    match &args.id_column {
                        Some(c) => Some(find(c).with_context(|| {
                            format!("the input has no column `{c}` (--id-column)")
                        })?),
                        None => None,
                    };
                Source::Csv {
                    reader,
                    value,
                    id,
                    record: csv::ByteRecord::new(),
                }
            }
            InputFormat::Jsonl => Source::Jsonl {
                reader: BufReader::with_capacity(1 << 20, raw),
                line: Zeroizing::new(String::new()),
                consumed: 0,
            },
        };
        Ok(Self { source, len })
    }

    /// Bytes read so far, for the progress bar.
    fn consumed(&self) -> u64 {
        match &self.source {
            Source::Csv { reader, .. } => reader.position().byte(),
            Source::Jsonl { consumed, .. } => *consumed,
        }
    }

    fn next(&mut self, args: &ImportArgs) -> anyhow::Result<Option<Record>> {
        match &mut self.source {
            Source::Csv {
                reader,
                value,
                id,
                record,
            } => {
                if !reader.read_byte_record(record)? {
                    record.clear();
                    return Ok(None);
                }
                let id = match id {
                    Some(i) => {
                        String::from_utf8_lossy(record.get(*i).unwrap_or_default()).into_owned()
                    }
                    None => String::new(),
                };
                let value = match record.get(*value).map(std::str::from_utf8) {
                    Some(Ok(v)) => Ok(Zeroizing::new(v.to_owned())),
                    Some(Err(_)) => Err("the value is not UTF-8"),
                    None => Err("the record has no value column"),
                };
                Ok(Some(Record {
                    id: one_line(id),
                    value,
                    token: None,
                    ttl_seconds: None,
                }))
            }
            Source::Jsonl {
                reader,
                line,
                consumed,
            } => loop {
                line.clear();
                let n = reader.read_line(line)?;
                if n == 0 {
                    return Ok(None);
                }
                *consumed += n as u64;
                if line.trim().is_empty() {
                    continue;
                }
                let parsed: Result<serde_json::Map<String, serde_json::Value>, _> =
                    serde_json::from_str(line);
                let Ok(mut obj) = parsed else {
                    return Ok(Some(Record {
                        id: String::new(),
                        value: Err("the line is not a JSON object"),
                        token: None,
                        ttl_seconds: None,
                    }));
                };
                if args.vault_transform_export {
                    return Ok(Some(
                        match super::import_vault::record(&mut obj, now_ms()) {
                            // A string that is no token (a card number, say) never
                            // names the record in the output: its number does.
                            Some(e) => Record {
                                id: if crate::tokenize::format::importable_token(&e.token) {
                                    one_line(e.token.clone())
                                } else {
                                    String::new()
                                },
                                value: e.value,
                                token: Some(e.token),
                                ttl_seconds: e.ttl_seconds,
                            },
                            None => Record {
                                id: String::new(),
                                value: Err("the record has no token"),
                                token: None,
                                ttl_seconds: None,
                            },
                        },
                    ));
                }
                let id = match args.id_column.as_ref().and_then(|c| obj.get(c)) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(v @ serde_json::Value::Number(_)) => v.to_string(),
                    _ => String::new(),
                };
                let value = match obj.remove(&args.value_column) {
                    Some(serde_json::Value::String(s)) => Ok(Zeroizing::new(s)),
                    _ => Err("the record has no string value field"),
                };
                return Ok(Some(Record {
                    id: one_line(id),
                    value,
                    token: None,
                    ttl_seconds: None,
                }));
            },
        }
    }
}

/// An id as written to the output: one line, so a torn line can be told from a record.
fn one_line(id: String) -> String {
    if id.contains(['\n', '\r']) {
        id.replace(['\n', '\r'], " ")
    } else {
        id
    }
}
