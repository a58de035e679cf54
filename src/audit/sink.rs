//! Outside copies of every checkpoint, written as it is made: an append-only file (one
//! JSON line per checkpoint) and syslog over the local socket. A database writer can
//! delete or replace checkpoint rows; these copies are out of their reach, and
//! `audit verify --checkpoints FILE` checks the database against them.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use super::checkpoint::ExportedCheckpoint;
use crate::config::AuditSettings;

/// syslog facility `authpriv` (10), severity `notice` (5): security records, kept apart
/// from the general log on most systems.
const PRIORITY: u8 = 10 * 8 + 5;

#[derive(Debug, Clone, Default)]
pub struct CheckpointSinks {
    file: Option<PathBuf>,
    syslog: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[error("could not write the checkpoint at {seq} to {sink}: {reason}")]
pub struct SinkError {
    seq: i64,
    sink: String,
    reason: String,
}

impl CheckpointSinks {
    pub fn from_settings(audit: &AuditSettings) -> Self {
        let set = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
        Self {
            file: set(&audit.checkpoint_file),
            syslog: set(&audit.syslog),
        }
    }

    /// Writes `c` to every configured sink; every sink is tried, the first failure is
    /// returned.
    pub fn write(&self, c: &ExportedCheckpoint) -> Result<(), SinkError> {
        // Serializing a struct of strings and integers cannot fail.
        let line = serde_json::to_string(c).unwrap_or_default();
        let mut first = None;
        if let Some(path) = &self.file
            && let Err(e) = append_line(path, &line)
        {
            first.get_or_insert(SinkError {
                seq: c.seq,
                sink: path.display().to_string(),
                reason: e.to_string(),
            });
        }
        if let Some(socket) = &self.syslog
            && let Err(e) = send_syslog(socket, &line)
        {
            first.get_or_insert(SinkError {
                seq: c.seq,
                sink: format!("syslog at {}", socket.display()),
                reason: e.to_string(),
            });
        }
        match first {
            None => Ok(()),
            Some(e) => {
                metrics::counter!("tokenvault_audit_sink_failures_total").increment(1);
                tracing::error!(error = %e, "an audit checkpoint did not reach its outside copy");
                Err(e)
            }
        }
    }
}

/// Appends one line (O_APPEND, created 0600) and makes it durable.
fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(format!("{line}\n").as_bytes())?;
    f.sync_data()
}

/// One RFC 5424 message on the local syslog socket (a datagram socket such as /dev/log).
fn send_syslog(socket: &Path, line: &str) -> std::io::Result<()> {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "-".into());
    let msg = format!(
        "<{PRIORITY}>1 {now} - tokenvault {} checkpoint - {line}",
        std::process::id()
    );
    UnixDatagram::unbound()?.send_to(msg.as_bytes(), socket)?;
    Ok(())
}

/// Reads an exported series: one checkpoint per line (blank lines skipped), or a single
/// pretty-printed checkpoint as `audit export-checkpoint` writes it.
pub fn read_series(text: &str) -> Result<Vec<ExportedCheckpoint>, String> {
    if let Ok(one) = serde_json::from_str::<ExportedCheckpoint>(text) {
        return Ok(vec![one]);
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("line {}: not a checkpoint ({e})", i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exported(seq: i64) -> ExportedCheckpoint {
        ExportedCheckpoint {
            seq,
            head_hash: "00".repeat(32),
            at: 1,
            key_label: "k".into(),
            signature: "11".repeat(64),
            prev_digest: Some("22".repeat(32)),
            public_key_pem: "pem".into(),
            environment: Some("production".into()),
        }
    }

    #[test]
    fn the_file_sink_appends_one_line_per_checkpoint_readable_only_by_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints.jsonl");
        let sinks = CheckpointSinks {
            file: Some(path.clone()),
            syslog: None,
        };
        sinks.write(&exported(1)).unwrap();
        sinks.write(&exported(2)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let series = read_series(&text).unwrap();
        assert_eq!(series, vec![exported(1), exported(2)]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_sink_that_cannot_be_written_is_an_error_that_names_it() {
        let sinks = CheckpointSinks {
            file: Some("/nonexistent-dir/checkpoints.jsonl".into()),
            syslog: Some("/nonexistent-dir/log".into()),
        };
        let e = sinks.write(&exported(7)).unwrap_err().to_string();
        assert!(
            e.contains("checkpoint at 7") && e.contains("/nonexistent-dir/checkpoints.jsonl"),
            "{e}"
        );
    }

    #[test]
    fn the_syslog_sink_sends_one_rfc5424_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("log");
        let listener = UnixDatagram::bind(&socket).unwrap();
        let sinks = CheckpointSinks {
            file: None,
            syslog: Some(socket),
        };
        sinks.write(&exported(3)).unwrap();
        let mut buf = [0u8; 4096];
        let n = listener.recv(&mut buf).unwrap();
        let msg = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(msg.starts_with("<85>1 "), "{msg}");
        assert!(
            msg.contains(" tokenvault ") && msg.contains("\"seq\":3"),
            "{msg}"
        );
    }
}
