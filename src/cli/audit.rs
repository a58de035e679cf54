//! `tokenvault audit …`: verification an assessor can run without the HSM, checkpoint
//! export, and the signed PCI key audit report.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::audit::checkpoint::{self, ExportedCheckpoint};
use crate::audit::report::{self, Format};
use crate::audit::sink;
use crate::audit::verify::{self, KeySource};
use crate::config::Settings;
use crate::store::Store;
use crate::vault::{Vault, now_ms};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the whole chain and every checkpoint signature; exit 1 on any break.
    /// Needs only the database and (preferably) the exported public key.
    Verify {
        /// The audit public key (PEM) from `audit export-key`; else the key recorded in
        /// the exported checkpoints; else the copy in the database, which proves nothing
        /// against whoever can write the database.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// A checkpoint exported earlier (`audit export-checkpoint`), to detect truncation
        /// even if the checkpoints in the database were removed too.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The series of checkpoints written outside the database as they were made
        /// (`audit.checkpoint_file`, one JSON line each): every one must still be in the
        /// database, unchanged, and the chain must match each.
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sign a checkpoint of the current chain head now.
    Checkpoint,
    /// Sign a checkpoint now and write it (with the public key) to FILE for safekeeping.
    ExportCheckpoint {
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the audit signing public key (PEM), read from the HSM.
    ExportKey {
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the PCI key audit report and its detached signature (FILE.sig).
    Report {
        #[arg(long, value_enum, default_value = "html")]
        format: Format,
        #[arg(long)]
        out: PathBuf,
        /// Report period in days, ending now.
        #[arg(long, default_value_t = 90)]
        days: u32,
    },
    /// Check a report's detached signature with the public key.
    VerifyReport {
        file: PathBuf,
        /// Defaults to FILE.sig.
        #[arg(long)]
        signature: Option<PathBuf>,
        #[arg(long)]
        public_key: PathBuf,
    },
}

pub async fn run(settings: Settings, cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Verify {
            public_key,
            checkpoint,
            checkpoints,
            json,
        } => {
            let store = Store::connect(&settings.database.url, 2).await?;
            let exported = [checkpoint, checkpoints].into_iter().flatten().collect();
            let result = verify_cmd(&store, public_key, exported, json).await;
            store.close().await;
            result
        }
        AuditCommand::VerifyReport {
            file,
            signature,
            public_key,
        } => {
            let pem = std::fs::read_to_string(&public_key)
                .with_context(|| format!("reading {}", public_key.display()))?;
            let key = checkpoint::verifying_key_pem(&pem)?;
            let sig_path = signature.unwrap_or_else(|| sig_path(&file));
            let body =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let sig = std::fs::read(&sig_path)
                .with_context(|| format!("reading {}", sig_path.display()))?;
            anyhow::ensure!(
                checkpoint::signature_valid(&key, &body, &sig),
                "the signature does not match {}: the report was changed or signed by another key",
                file.display()
            );
            println!("OK: {} is signed by the audit key", file.display());
            Ok(())
        }
        other => {
            let vault = Vault::open(settings).await?;
            let result = hsm_cmd(&vault, other).await;
            vault.store.close().await;
            result
        }
    }
}

fn sig_path(file: &std::path::Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}

async fn verify_cmd(
    store: &Store,
    public_key: Option<PathBuf>,
    exported: Vec<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let mut series = Vec::new();
    for p in &exported {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        series
            .extend(sink::read_series(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?);
    }
    let outside = match &public_key {
        Some(p) => Some((
            checkpoint::verifying_key_pem(
                &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            )?,
            KeySource::Pinned,
        )),
        None => series_key(&series)?.map(|k| (k, KeySource::CheckpointFile)),
    };
    let rows = series
        .iter()
        .map(ExportedCheckpoint::row)
        .collect::<Result<Vec<_>, _>>()?;
    let keys = verify::trusted_keys(store, outside).await?;
    let v = verify::verify(store, &keys, &rows).await?;
    if v.proves_nothing_against_a_database_writer {
        eprintln!(
            "WARNING: verified with the public key stored in the database. Whoever can write the \
             database can replace that key and re-sign every checkpoint: this result proves \
             nothing against a database writer. Pass --public-key (from `audit export-key`) or \
             --checkpoints (the outside series, audit.checkpoint_file)."
        );
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{} events, {} checkpoints ({} events after the newest checkpoint), {} exported checkpoints compared, checked in {:.2}s ({:.0} events/s)",
            v.events,
            v.checkpoints,
            v.unsigned_tail,
            v.exported_checkpoints,
            v.seconds,
            v.events_per_second()
        );
        if let Some(env) = &v.environment {
            println!("environment signed by the checkpoints: {env}");
        }
    }
    for (seq, why) in &v.problems {
        eprintln!("problem at sequence {seq}: {why}");
    }
    if let Some(why) = &v.key_problem {
        eprintln!("problem: {why}");
    }
    match (&v.first_bad, &v.key_problem) {
        (None, None) => {
            if !json {
                println!("OK: the audit chain is intact");
            }
            Ok(())
        }
        (Some((seq, why)), _) => anyhow::bail!("audit chain broken at sequence {seq}: {why}"),
        (None, Some(why)) => anyhow::bail!("audit key replaced: {why}"),
    }
}

/// The public key recorded in an exported series (the one the HSM held when it signed);
/// a series naming two keys needs `--public-key`.
fn series_key(series: &[ExportedCheckpoint]) -> anyhow::Result<Option<p256::ecdsa::VerifyingKey>> {
    let Some(first) = series.first() else {
        return Ok(None);
    };
    anyhow::ensure!(
        series
            .iter()
            .all(|c| c.public_key_pem == first.public_key_pem),
        "the exported checkpoints name more than one public key: pass --public-key"
    );
    Ok(Some(checkpoint::verifying_key_pem(&first.public_key_pem)?))
}

async fn hsm_cmd(vault: &Vault, cmd: AuditCommand) -> anyhow::Result<()> {
    let signer = vault.checkpointer();
    match cmd {
        AuditCommand::Checkpoint => match signer.checkpoint(now_ms()).await? {
            Some(c) => println!("signed checkpoint at sequence {}", c.seq),
            None => println!("the newest checkpoint already covers the chain"),
        },
        AuditCommand::ExportCheckpoint { out } => {
            let key = signer.publish_key(now_ms()).await?;
            signer.checkpoint(now_ms()).await?;
            let c = vault
                .store
                .latest_checkpoint()
                .await?
                .context("the audit chain is empty: nothing to checkpoint")?;
            let e = ExportedCheckpoint::new(&c, &key)?;
            std::fs::write(&out, serde_json::to_string_pretty(&e)?)
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "checkpoint at sequence {} written to {}",
                e.seq,
                out.display()
            );
        }
        AuditCommand::ExportKey { out } => {
            let key = signer.publish_key(now_ms()).await?;
            std::fs::write(&out, checkpoint::public_key_pem(&key)?)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("audit public key written to {}", out.display());
            println!(
                "verify a report with: openssl dgst -sha256 -verify {} -signature REPORT.sig REPORT",
                out.display()
            );
        }
        AuditCommand::Report { format, out, days } => {
            let now = now_ms();
            // Before `init` there is no signing key: the report still renders (it says
            // there are no keys) but cannot be signed.
            let signable = match signer.publish_key(now).await {
                Ok(_) => true,
                Err(checkpoint::CheckpointError::Hsm(crate::hsm::HsmError::KeyMissing(_))) => false,
                Err(e) => return Err(e.into()),
            };
            if signable {
                // A chain the signer refuses still gets its report: the report says why.
                match signer.checkpoint(now).await {
                    Ok(_) => {}
                    Err(
                        e @ (checkpoint::CheckpointError::Refused(_)
                        | checkpoint::CheckpointError::Sink(_)),
                    ) => eprintln!("warning: {e}"),
                    Err(e) => return Err(e.into()),
                }
            }
            let data = report::collect(vault, now - i64::from(days) * 86_400_000, now).await?;
            let body = report::render(&data, format)?;
            std::fs::write(&out, &body).with_context(|| format!("writing {}", out.display()))?;
            if !signable {
                eprintln!(
                    "warning: the report is not signed: the vault has no audit signing key yet (run `tokenvault init`)"
                );
                println!(
                    "report written to {} ({} findings)",
                    out.display(),
                    data.findings.len()
                );
                return Ok(());
            }
            // The detached signature is DER, the form `openssl dgst -verify` reads.
            let raw = signer.sign(body.clone().into_bytes()).await?;
            let sig = p256::ecdsa::Signature::from_slice(&raw)
                .context("HSM signature")?
                .to_der();
            std::fs::write(sig_path(&out), sig.as_bytes()).context("writing the signature")?;
            println!(
                "report written to {} with signature {} ({} findings)",
                out.display(),
                sig_path(&out).display(),
                data.findings.len()
            );
        }
        AuditCommand::Verify { .. } | AuditCommand::VerifyReport { .. } => {
            unreachable!("handled without the HSM")
        }
    }
    Ok(())
}
