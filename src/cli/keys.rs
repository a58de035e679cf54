//! `tokenvault keys …`: the key inventory and the lifecycle commands for security
//! officers. They work on the same database and HSM as a running `serve`, which picks
//! up new versions within seconds.

use std::path::PathBuf;

use clap::Subcommand;

use super::request::{self, DEFAULT_SWEEP_BATCH, SignArgs, SweepOptions};
use crate::config::Settings;
use crate::keys::{Inventory, KeyVersion};
use crate::officers::{self, OfficerKey, Operation, RequestDocument};
use crate::vault::{Vault, now_ms};

/// Every command that changes keys is a request registered officers sign (`--key` here,
/// or `tokenvault officer sign` elsewhere then `keys approve --signature`): one signature
/// for rotation, rewrap and retirement, two distinct officers for what cannot be undone.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List every key: keyring, version, state, algorithm, dates, usage, records, KCV, KEK.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make a new active data key version; older versions stay decrypt-only (one officer).
    Rotate {
        keyring: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Generate a new KEK in the HSM and re-wrap every data key under it (one officer).
    RotateKek {
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Re-encrypt every record of a keyring under its active version (resumable; one
    /// officer). For the `fingerprint` keyring: re-compute fingerprints under the active key.
    Rewrap {
        keyring: String,
        /// Records per transaction.
        #[arg(long, default_value_t = DEFAULT_SWEEP_BATCH)]
        batch: usize,
        /// At most this many records per second (leave room for live traffic).
        #[arg(long)]
        rate: Option<u32>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Retire a decrypt-only version that protects no records (one officer); with --force,
    /// although records remain (two officers).
    Retire {
        keyring: String,
        version: KeyVersion,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Crypto-shred a retired version (two officers).
    Destroy {
        keyring: String,
        version: KeyVersion,
        /// Also rotate the KEK and destroy the one that wrapped this version, so that no
        /// database backup can bring it back (one request, one approval).
        #[arg(long)]
        with_kek: bool,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Destroy a retired KEK in the HSM (two officers).
    DestroyKek {
        label: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Add an officer's signature to a request; the operation runs once enough distinct
    /// officers signed. No private key is needed here: pass the signature file that
    /// `tokenvault officer sign` made where the officer's key lives.
    Approve {
        id: String,
        /// A signature file from `tokenvault officer sign` (repeatable).
        #[arg(long, value_name = "FILE")]
        signature: Vec<PathBuf>,
        /// Or sign here with an officer key file (shows the operation first).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// Print a request's document (canonical JSON): the file `officer sign` reads.
    Request { id: String },
    /// List officer requests, their state and who signed.
    Requests,
}

pub async fn run(settings: Settings, cmd: KeysCommand) -> anyhow::Result<()> {
    let vault = Vault::open(settings).await?;
    let result = dispatch(&vault, cmd).await;
    request::seal_and_close(vault, result).await
}

async fn dispatch(vault: &Vault, cmd: KeysCommand) -> anyhow::Result<()> {
    let keys = &vault.keys;
    let plain = SweepOptions::default();
    match cmd {
        KeysCommand::List { json } => {
            let inv = keys.inventory(now_ms()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&inv)?);
            } else {
                print!("{}", table(&inv));
            }
        }
        KeysCommand::Rotate {
            keyring,
            reason,
            sign,
        } => {
            if keys.signing_algorithm(&keyring).is_none() {
                keys.check_keyring(&keyring)?;
            }
            let op = Operation::Rotate { keyring };
            request::submit(vault, op, reason.as_deref(), &sign, plain).await?;
        }
        KeysCommand::RotateKek { reason, sign } => {
            request::submit(vault, Operation::RotateKek, reason.as_deref(), &sign, plain).await?;
        }
        KeysCommand::Rewrap {
            keyring,
            batch,
            rate,
            quiet,
            sign,
        } => {
            keys.check_keyring(&keyring)?;
            let sweep = SweepOptions { batch, rate, quiet };
            request::submit(vault, Operation::Rewrap { keyring }, None, &sign, sweep).await?;
        }
        KeysCommand::Retire {
            keyring,
            version,
            reason,
            force,
            sign,
        } => {
            keys.check_retire(&keyring, version, force).await?;
            let version = version.get();
            let op = if force {
                Operation::ForceRetire { keyring, version }
            } else {
                Operation::Retire { keyring, version }
            };
            request::submit(vault, op, reason.as_deref(), &sign, plain).await?;
        }
        KeysCommand::Destroy {
            keyring,
            version,
            with_kek,
            reason,
            sign,
        } => {
            keys.check_destroy(&keyring, version).await?;
            let version = version.get();
            let op = if with_kek {
                Operation::DestroyWithKek { keyring, version }
            } else {
                Operation::Destroy { keyring, version }
            };
            request::submit(vault, op, reason.as_deref(), &sign, plain).await?;
        }
        KeysCommand::DestroyKek {
            label,
            reason,
            sign,
        } => {
            keys.check_destroy_kek(&label).await?;
            let op = Operation::DestroyKek { label };
            request::submit(vault, op, reason.as_deref(), &sign, plain).await?;
        }
        KeysCommand::Approve { id, signature, key } => {
            if signature.is_empty() && key.is_none() {
                anyhow::bail!(
                    "give the officer's --signature FILE (from `tokenvault officer sign`) or --key FILE"
                );
            }
            let mut sigs = signature
                .iter()
                .map(|p| request::read_signature(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if let Some(key) = key {
                let key = OfficerKey::load(&key)?;
                let doc = stored_document(vault, &id).await?;
                println!("signing request {}: {}", doc.id, doc.summary);
                sigs.push(key.sign(&doc));
            }
            for sig in &sigs {
                if sig.request_id != id {
                    anyhow::bail!(
                        "a signature file is for request {}, not {id}",
                        sig.request_id.chars().take(64).collect::<String>()
                    );
                }
                request::sign_and_run(vault, sig, plain).await?;
            }
        }
        KeysCommand::Request { id } => {
            println!("{}", stored_document(vault, &id).await?.canonical());
        }
        KeysCommand::Requests => {
            let registry = officers::Registry::load(&vault.store).await?;
            for r in vault.store.requests().await? {
                let signed = officers::pending_signers(&vault.store, &registry, &r).await?;
                let doc = RequestDocument::parse(&r.document)?;
                println!(
                    "{}  {:<16}  {:<9}  signed {}/{}{}  {}",
                    r.id,
                    r.operation,
                    r.state,
                    signed.len(),
                    r.required,
                    if signed.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", signed.join(", "))
                    },
                    doc.operation
                );
            }
        }
    }
    Ok(())
}

async fn stored_document(vault: &Vault, id: &str) -> anyhow::Result<RequestDocument> {
    let row = vault
        .store
        .request(id)
        .await?
        .ok_or_else(|| officers::OfficerError::NoRequest(id.chars().take(64).collect()))?;
    Ok(RequestDocument::parse(&row.document)?)
}

fn table(inv: &Inventory) -> String {
    let mut out = format!("HSM token: {}\n", inv.hsm_token);
    for k in &inv.keks {
        out.push_str(&format!(
            "KEK: {} ({}, created {})\n",
            k.label, k.state, k.created_at
        ));
    }
    out.push_str(&format!(
        "Audit signing key: {} (EC P-256)\n\n",
        inv.audit_signing_key
    ));
    let header = [
        "KEYRING",
        "VERSION",
        "STATE",
        "ALGORITHM",
        "CREATED",
        "AGE(d)",
        "CRYPTOPERIOD END",
        "USAGE",
        "RECORDS",
        "KCV",
        "KEK",
    ];
    let rows: Vec<Vec<String>> = inv
        .keys
        .iter()
        .map(|k| {
            vec![
                k.keyring.clone(),
                k.version.to_string(),
                k.state.clone(),
                k.algorithm.clone(),
                k.created_at.clone(),
                k.age_days.to_string(),
                k.cryptoperiod_ends_at.clone(),
                k.usage_count.to_string(),
                k.records.to_string(),
                k.kcv.clone(),
                k.kek_label.clone(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let mut l = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        l.truncate(l.trim_end().len());
        l.push('\n');
        l
    };
    out.push_str(&line(header.to_vec()));
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    // Destruction evidence, under the table: what each destroyed version's erasure covers.
    for k in &inv.keys {
        if let Some(d) = &k.destruction {
            out.push_str(&format!("\n{} v{} destroyed: {d}\n", k.keyring, k.version));
        }
    }
    // Transit signing keys: key pairs in the HSM, so no KEK, KCV or usage count.
    if !inv.signing_keys.is_empty() {
        out.push_str("\nSigning keys (key pairs in the HSM):\n");
        for k in &inv.signing_keys {
            out.push_str(&format!(
                "{} v{}  {}  {}  created {}  {}\n",
                k.name, k.version, k.state, k.algorithm, k.created_at, k.hsm_label
            ));
        }
    }
    out
}
