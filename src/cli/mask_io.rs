//! What `tokenvault mask` reads and writes: CSV and JSON-lines files (or standard input),
//! and database tables read through a connection URL; masked rows go to a CSV or
//! JSON-lines file. Every source can start again where a killed run stood: files at a
//! byte offset, standard input by skipping rows, a table at a row of its order.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, bail};
use futures_util::TryStreamExt;
use zeroize::Zeroize;

use sha2::{Digest, Sha256};

use super::files::InputFormat;
use crate::crypto::Fingerprinter;
use crate::nonprod::Kind;
use crate::nonprod::mask::Masker;

/// One row: fields in column order (CSV, a table; `None` is SQL NULL), or a JSON object.
pub enum Row {
    Fields(Vec<Option<String>>),
    Object(serde_json::Map<String, serde_json::Value>),
}

/// Which columns are masked as what.
pub struct Plan {
    /// Column name and kind, as the command line gave them.
    pub columns: Vec<(String, Kind)>,
    /// Their positions in a source with a header (CSV, tables).
    positions: Vec<(usize, Kind)>,
}

impl Plan {
    pub fn new(columns: Vec<(String, Kind)>, header: Option<&[String]>) -> anyhow::Result<Self> {
        let mut positions = Vec::new();
        if let Some(header) = header {
            // A column named twice would be masked once and copied once.
            let mut seen = std::collections::HashSet::new();
            if let Some(twice) = header.iter().find(|h| !seen.insert(h.as_str())) {
                bail!("the input has two columns named `{twice}`: rename one");
            }
            for (name, kind) in &columns {
                let at = header
                    .iter()
                    .position(|h| h == name)
                    .with_context(|| format!("the input has no column `{name}` (--columns)"))?;
                positions.push((at, *kind));
            }
        }
        Ok(Self { columns, positions })
    }

    /// Replaces the mapped fields of `row` with their masks (the inputs are wiped). A JSON
    /// row whose mapped field is missing or holds a list or an object is refused: it
    /// would be copied with its value in place.
    pub fn apply(&self, masker: &Masker, row: &mut Row) -> Result<(), String> {
        match row {
            Row::Fields(fields) => {
                for &(at, kind) in &self.positions {
                    if let Some(Some(v)) = fields.get_mut(at) {
                        let mut old = std::mem::replace(v, masker.mask(kind, v));
                        old.zeroize();
                    }
                }
            }
            Row::Object(obj) => {
                for (name, kind) in &self.columns {
                    let v = obj
                        .get_mut(name)
                        .ok_or_else(|| format!("a row has no field `{name}` (--columns)"))?;
                    let masked = match v {
                        serde_json::Value::String(s) => masker.mask(*kind, s),
                        // An integer only: a fraction or an exponent has lost the value.
                        serde_json::Value::Number(n) if n.is_u64() || n.is_i64() => {
                            masker.mask(*kind, &n.to_string())
                        }
                        serde_json::Value::Null => continue,
                        _ => {
                            return Err(format!(
                                "a row's field `{name}` is not a string, an integer or null"
                            ));
                        }
                    };
                    if let serde_json::Value::String(s) = v {
                        s.zeroize();
                    }
                    *v = serde_json::Value::String(masked);
                }
            }
        }
        Ok(())
    }
}

/// Masks `rows` on every core (the reading and writing around it are sequential); the
/// first row that cannot be masked stops the run.
pub fn mask_all(masker: &Masker, plan: &Plan, rows: &mut [Row]) -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let part = |rows: &mut [Row]| rows.iter_mut().try_for_each(|r| plan.apply(masker, r));
    let result = if threads == 1 || rows.len() < 256 {
        part(rows)
    } else {
        std::thread::scope(|s| {
            let workers: Vec<_> = rows
                .chunks_mut(rows.len().div_ceil(threads))
                .map(|chunk| s.spawn(move || part(chunk)))
                .collect();
            workers.into_iter().try_for_each(|w| {
                w.join()
                    .unwrap_or_else(|_| Err("a masking thread failed".into()))
            })
        })
    };
    result.map_err(|why| anyhow::anyhow!("{why}; the run stopped before writing that row"))
}

/// Where a run stands in its source: bytes read (files) and rows read.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Position {
    pub bytes: u64,
    pub rows: u64,
}

pub enum Source {
    Csv {
        reader: csv::Reader<Box<dyn Read>>,
        header: Vec<String>,
        /// The offset the reader started at (a resumed run seeks past the done rows).
        base: u64,
        record: csv::ByteRecord,
    },
    Jsonl {
        reader: BufReader<Box<dyn Read>>,
        line: zeroize::Zeroizing<String>,
    },
    Table {
        header: Vec<String>,
        rows: tokio::sync::mpsc::Receiver<anyhow::Result<Vec<Row>>>,
    },
}

/// An input file (`-`: standard input), opened at `at`.
/// A keyed digest of everything a run has read of an input file, kept up as it reads
/// on: a resumed run compares it with the one its last checkpoint recorded, so a file
/// regenerated at the same path is refused, not resumed mid-way. Regular files only (a
/// pipe cannot be read twice). The key is the run's, so the digest says nothing of the
/// values.
pub struct InputDigest {
    file: File,
    hash: Sha256,
    at: u64,
    key: Fingerprinter,
}

impl InputDigest {
    pub fn open(path: &Path, key: Fingerprinter) -> anyhow::Result<Option<Self>> {
        if path.as_os_str() == "-" {
            return Ok(None);
        }
        // The type first: opening a named pipe would take the writer's rows.
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot open {}", path.display()))?;
        if !meta.is_file() {
            return Ok(None);
        }
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut hash = Sha256::new();
        hash.update(b"tokenvault/mask/input/v1");
        Ok(Some(Self {
            file,
            hash,
            at: 0,
            key,
        }))
    }

    /// Reads on to `upto` and answers the digest of the bytes before it (`None` when the
    /// file ends sooner).
    pub fn upto(&mut self, upto: u64) -> anyhow::Result<Option<String>> {
        anyhow::ensure!(upto >= self.at, "the input digest cannot go back");
        let mut buf = zeroize::Zeroizing::new(vec![0u8; 1 << 16]);
        self.file.seek(SeekFrom::Start(self.at))?;
        while self.at < upto {
            let n = usize::try_from((upto - self.at).min(1 << 16))?;
            if self.file.read_exact(&mut buf[..n]).is_err() {
                return Ok(None);
            }
            self.hash.update(&buf[..n]);
            self.at += n as u64;
        }
        let digest = self.hash.clone().finalize();
        Ok(Some(hex::encode(self.key.fingerprint(&digest))))
    }
}

pub fn open_file(
    path: &Path,
    format: InputFormat,
    at: Position,
) -> anyhow::Result<(Source, Position, Option<u64>)> {
    // Only a regular file is seeked; a pipe named by a path (`/dev/stdin`,
    // `<(zcat dump.gz)`) is read like standard input.
    let (raw, len, seekable): (Box<dyn Read>, Option<u64>, bool) = if path.as_os_str() == "-" {
        (Box::new(std::io::stdin().lock()), None, false)
    } else {
        let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let len = f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
        (Box::new(f), len, len.is_some())
    };
    let resume_at = |at: u64| -> anyhow::Result<Box<dyn Read>> {
        let mut f = File::open(path)?;
        f.seek(SeekFrom::Start(at))?;
        Ok(Box::new(f))
    };
    let mut source = match format {
        InputFormat::Csv => {
            let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(raw);
            let header: Vec<String> = reader
                .headers()
                .context("the input's first line is not a CSV header")?
                .iter()
                .map(str::to_owned)
                .collect();
            let mut base = 0;
            // A resumed run starts again from the file at the offset it reached.
            if seekable && at.bytes > 0 {
                reader = csv::ReaderBuilder::new()
                    .flexible(true)
                    .has_headers(false)
                    .from_reader(resume_at(at.bytes)?);
                base = at.bytes;
            }
            Source::Csv {
                reader,
                header,
                base,
                record: csv::ByteRecord::new(),
            }
        }
        InputFormat::Jsonl => Source::Jsonl {
            reader: BufReader::with_capacity(
                1 << 20,
                if seekable { resume_at(at.bytes)? } else { raw },
            ),
            line: zeroize::Zeroizing::new(String::new()),
        },
    };
    let mut pos = if seekable { at } else { Position::default() };
    // Standard input cannot seek: the rows done are read again and dropped.
    while !seekable && pos.rows < at.rows {
        let mut skipped = Vec::new();
        source.next_rows(1, &mut skipped, &mut pos)?;
        if skipped.is_empty() {
            bail!("the input ended before the rows the run had done: give it the same input");
        }
    }
    Ok((source, pos, len))
}

/// `sqlite://…` or `postgres://…`, table `table` in the order of `order_by`, from row
/// `at.rows` on. A database password belongs in `PGPASSWORD`, not in the URL.
pub async fn open_table(
    url: &str,
    table: &str,
    order_by: Option<&str>,
    at: Position,
) -> anyhow::Result<(Source, Option<u64>)> {
    use sqlx::{Connection, Row as _};
    for name in std::iter::once(table).chain(order_by) {
        if !identifier(name) {
            bail!(
                "`{name}` is not a plain SQL name (letters, digits and _, optionally schema.name)"
            );
        }
    }
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the source database: {e}"))?;
    let postgres = url.starts_with("postgres");
    let (schema, bare) = table
        .rsplit_once('.')
        .map_or((None, table), |(s, t)| (Some(s), t));
    let header: Vec<String> = if postgres {
        sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns WHERE table_name = $1 \
             AND table_schema = COALESCE($2, current_schema()) ORDER BY ordinal_position",
        )
        .bind(bare)
        .bind(schema)
        .fetch_all(&mut conn)
        .await?
    } else {
        sqlx::query_scalar("SELECT name FROM pragma_table_info($1) ORDER BY cid")
            .bind(bare)
            .fetch_all(&mut conn)
            .await?
    };
    if header.is_empty() {
        bail!("the source database has no table `{table}`");
    }
    // Column names come from the source's schema, which whoever can alter the table
    // controls: only plain names go into the query.
    if header.iter().any(|c| c.contains('.') || !identifier(c)) {
        bail!("a column of `{table}` has a name that is not a plain SQL name (letters, digits, _)");
    }
    let order = order_by.unwrap_or(&header[0]).to_owned();
    if !header.contains(&order) {
        bail!("the table has no column `{order}` (--order-by)");
    }
    let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", quoted(table)))
        .fetch_one(&mut conn)
        .await?;
    let columns: Vec<String> = header
        .iter()
        .map(|c| format!("CAST({} AS TEXT)", quoted(c)))
        .collect();
    let sql = format!(
        "SELECT {} FROM {} ORDER BY {} {} OFFSET {}",
        columns.join(", "),
        quoted(table),
        quoted(&order),
        if postgres { "LIMIT ALL" } else { "LIMIT -1" },
        at.rows
    );
    let width = header.len();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let result: anyhow::Result<()> = async {
            let mut rows = sqlx::query(&sql).fetch(&mut conn);
            let mut chunk = Vec::with_capacity(CHUNK);
            while let Some(row) = rows.try_next().await? {
                let fields = (0..width)
                    .map(|i| row.try_get::<Option<String>, _>(i))
                    .collect::<Result<Vec<_>, _>>()?;
                chunk.push(Row::Fields(fields));
                if chunk.len() == CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                    if tx.send(Ok(full)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            if !chunk.is_empty() {
                let _ = tx.send(Ok(chunk)).await;
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let _ = tx
                .send(Err(e.context("reading the source table failed")))
                .await;
        }
    });
    Ok((
        Source::Table { header, rows: rx },
        Some(total.max(0) as u64),
    ))
}

/// Rows a table source sends at a time.
pub const CHUNK: usize = 8192;

fn identifier(s: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !p.as_bytes()[0].is_ascii_digit()
    };
    match s.split_once('.') {
        Some((a, b)) => part(a) && part(b),
        None => part(s),
    }
}

fn quoted(name: &str) -> String {
    name.split('.')
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

impl Source {
    /// The column names, for sources that have them.
    pub fn header(&self) -> Option<&[String]> {
        match self {
            Source::Csv { header, .. } | Source::Table { header, .. } => Some(header),
            Source::Jsonl { .. } => None,
        }
    }

    /// Reads up to `n` rows (a table: its next chunk) into `out`, advancing `pos`.
    pub fn next_rows(
        &mut self,
        n: usize,
        out: &mut Vec<Row>,
        pos: &mut Position,
    ) -> anyhow::Result<()> {
        match self {
            Source::Csv {
                reader,
                base,
                record,
                header,
            } => {
                while out.len() < n && reader.read_byte_record(record)? {
                    // A row of another width (an unquoted comma, say) would shift a value
                    // into a column that is not masked.
                    if record.len() != header.len() {
                        bail!(
                            "row {} has {} fields where the header has {}: fix the input (quote \
                             fields holding commas)",
                            pos.rows + 1,
                            record.len(),
                            header.len()
                        );
                    }
                    let fields = record
                        .iter()
                        .map(|f| Some(String::from_utf8_lossy(f).into_owned()))
                        .collect();
                    out.push(Row::Fields(fields));
                    pos.rows += 1;
                }
                pos.bytes = *base + reader.position().byte();
            }
            Source::Jsonl { reader, line } => {
                while out.len() < n {
                    line.clear();
                    let read = reader.read_line(line)?;
                    if read == 0 {
                        break;
                    }
                    pos.bytes += read as u64;
                    pos.rows += 1;
                    if line.trim().is_empty() {
                        continue;
                    }
                    let obj = serde_json::from_str(line).map_err(|_| {
                        anyhow::anyhow!("line {} of the input is not a JSON object", pos.rows)
                    })?;
                    out.push(Row::Object(obj));
                }
            }
            Source::Table { .. } => bail!("a table is read with next_chunk"),
        }
        Ok(())
    }

    /// The next rows of any source (an empty vector: the end).
    pub async fn next_chunk(&mut self, pos: &mut Position) -> anyhow::Result<Vec<Row>> {
        let mut out = Vec::with_capacity(CHUNK);
        match self {
            Source::Table { rows, .. } => {
                if let Some(chunk) = rows.recv().await {
                    out = chunk?;
                    pos.rows += out.len() as u64;
                    pos.bytes = pos.rows;
                }
            }
            _ => self.next_rows(CHUNK, &mut out, pos)?,
        }
        Ok(out)
    }
}

/// The masked copy: CSV (with the source's header) or JSON lines.
pub struct Sink {
    file: std::io::BufWriter<File>,
    jsonl: bool,
    header: Option<Vec<String>>,
}

impl Sink {
    /// Writes to `file` from its end; an empty CSV output starts with `header`.
    pub fn new(mut file: File, jsonl: bool, header: Option<&[String]>) -> anyhow::Result<Self> {
        let fresh = file.seek(SeekFrom::End(0))? == 0;
        let mut sink = Self {
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            jsonl,
            header: header.map(<[String]>::to_vec),
        };
        if !jsonl && fresh {
            let header = sink
                .header
                .clone()
                .context("CSV output needs a source with columns (CSV or a table)")?;
            let fields: Vec<Option<String>> = header.into_iter().map(Some).collect();
            sink.csv_line(&fields)?;
        }
        Ok(sink)
    }

    pub fn write(&mut self, row: &Row) -> anyhow::Result<()> {
        match (row, self.jsonl) {
            (Row::Fields(fields), false) => self.csv_line(fields)?,
            (Row::Fields(fields), true) => {
                let header = self.header.as_deref().unwrap_or_default();
                let mut line = String::from("{");
                for (i, (name, v)) in header.iter().zip(fields).enumerate() {
                    if i > 0 {
                        line.push(',');
                    }
                    line.push_str(&serde_json::to_string(name)?);
                    line.push(':');
                    line.push_str(&serde_json::to_string(v)?);
                }
                line.push_str("}\n");
                self.file.write_all(line.as_bytes())?;
            }
            (Row::Object(obj), true) => {
                serde_json::to_writer(&mut self.file, obj)?;
                self.file.write_all(b"\n")?;
            }
            (Row::Object(_), false) => {
                bail!("JSON-lines input is written as JSON lines (name the output .jsonl)")
            }
        }
        Ok(())
    }

    fn csv_line(&mut self, fields: &[Option<String>]) -> anyhow::Result<()> {
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                self.file.write_all(b",")?;
            }
            let f = f.as_deref().unwrap_or("");
            if f.contains([',', '"', '\n', '\r']) {
                write!(self.file, "\"{}\"", f.replace('"', "\"\""))?;
            } else {
                self.file.write_all(f.as_bytes())?;
            }
        }
        self.file.write_all(b"\n")?;
        Ok(())
    }

    /// Makes what was written durable; returns the output's length.
    pub fn sync(&mut self) -> anyhow::Result<u64> {
        self.file.flush()?;
        let f = self.file.get_ref();
        f.sync_data()?;
        Ok(f.metadata()?.len())
    }
}
