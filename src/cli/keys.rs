//! `tokenvault keys …`: the key inventory and the lifecycle commands for security
//! officers. They work on the same database and HSM as a running `serve`, which picks
//! up new versions within seconds.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::config::Settings;
use crate::keys::{Inventory, KeyVersion};
use crate::officers::{self, OfficerKey, Officers, Operation};
use crate::tokenize::RewrapOptions;
use crate::vault::{Vault, now_ms};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List every key: keyring, version, state, algorithm, dates, usage, records, KCV, KEK.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make a new active data key version; older versions stay decrypt-only.
    Rotate {
        keyring: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Generate a new KEK in the HSM and re-wrap every data key under it.
    RotateKek {
        #[arg(long)]
        reason: Option<String>,
    },
    /// Re-encrypt every record of a keyring under its active version (resumable).
    /// For the `fingerprint` keyring: re-compute fingerprints under the active key.
    Rewrap {
        keyring: String,
        /// Records per transaction.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// At most this many records per second (leave room for live traffic).
        #[arg(long)]
        rate: Option<u32>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Retire a decrypt-only version (no records may remain, unless --force under dual control).
    Retire {
        keyring: String,
        version: KeyVersion,
        #[arg(long)]
        reason: Option<String>,
        /// Retire although records remain: submits a request a second officer must approve.
        #[arg(long, requires_all = ["officer", "key"])]
        force: bool,
        #[command(flatten)]
        officer: OfficerArgs,
    },
    /// Crypto-shred a retired version: submits a request a second officer must approve.
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
        officer: OfficerArgs,
    },
    /// Destroy a retired KEK in the HSM: submits a request a second officer must approve.
    DestroyKek {
        label: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        officer: OfficerArgs,
    },
    /// Approve another officer's request, which then runs.
    Approve {
        id: String,
        #[command(flatten)]
        officer: OfficerArgs,
    },
    /// List officer requests and their state.
    Requests,
}

#[derive(Debug, clap::Args)]
pub struct OfficerArgs {
    /// Your officer name, as registered under [officers].
    #[arg(long)]
    officer: Option<String>,
    /// Your officer key file (made by `tokenvault officer keygen`).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Hours until an unapproved request expires.
    #[arg(long, default_value_t = 24)]
    expires_in_hours: u32,
}

impl OfficerArgs {
    fn load(&self) -> anyhow::Result<(&str, OfficerKey)> {
        let name = self
            .officer
            .as_deref()
            .context("--officer NAME is required for this command")?;
        let path = self
            .key
            .as_deref()
            .context("--key FILE is required for this command")?;
        Ok((name, OfficerKey::load(path)?))
    }
}

/// Who runs an undelegated command: the OS user.
fn cli_actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

pub async fn run(settings: Settings, cmd: KeysCommand) -> anyhow::Result<()> {
    let vault = Vault::open(settings).await?;
    let result = dispatch(&vault, cmd).await;
    // Seal what the officer just did under a signed checkpoint right away.
    let sealed = vault.checkpointer().checkpoint(now_ms()).await;
    vault.store.close().await;
    result?;
    sealed?;
    Ok(())
}

async fn dispatch(vault: &Vault, cmd: KeysCommand) -> anyhow::Result<()> {
    let officers = Officers::from_config(&vault.settings.officers)?;
    let keys = &vault.keys;
    match cmd {
        KeysCommand::List { json } => {
            let inv = keys.inventory(now_ms()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&inv)?);
            } else {
                print!("{}", table(&inv));
            }
        }
        KeysCommand::Rotate { keyring, reason } => {
            let v = keys
                .rotate(&keyring, &cli_actor(), reason.as_deref(), now_ms())
                .await?;
            println!("{keyring} v{v} is now active; older versions decrypt only.");
            println!("Run `tokenvault keys rewrap {keyring}` to move existing records to v{v}.");
        }
        KeysCommand::RotateKek { reason } => {
            let r = keys
                .rotate_kek(&cli_actor(), reason.as_deref(), now_ms())
                .await?;
            println!(
                "KEK {} is active; {} data keys re-wrapped; {} is retired.",
                r.new, r.rewrapped, r.old
            );
        }
        KeysCommand::Rewrap {
            keyring,
            batch,
            rate,
            quiet,
        } => rewrap(vault, &keyring, batch, rate, quiet).await?,
        KeysCommand::Retire {
            keyring,
            version,
            reason,
            force,
            officer,
        } => {
            if force {
                keys.check_retire(&keyring, version, true).await?;
                let op = Operation::ForceRetire {
                    keyring,
                    version: version.get(),
                };
                submit(vault, &officers, &officer, op, reason.as_deref()).await?;
            } else {
                keys.retire(
                    &keyring,
                    version,
                    false,
                    &cli_actor(),
                    reason.as_deref(),
                    now_ms(),
                )
                .await?;
                println!("{keyring} v{version} is retired.");
            }
        }
        KeysCommand::Destroy {
            keyring,
            version,
            with_kek,
            reason,
            officer,
        } => {
            keys.check_destroy(&keyring, version).await?;
            let op = if with_kek {
                Operation::DestroyWithKek {
                    keyring,
                    version: version.get(),
                }
            } else {
                Operation::Destroy {
                    keyring,
                    version: version.get(),
                }
            };
            submit(vault, &officers, &officer, op, reason.as_deref()).await?;
        }
        KeysCommand::DestroyKek {
            label,
            reason,
            officer,
        } => {
            keys.check_destroy_kek(&label).await?;
            submit(
                vault,
                &officers,
                &officer,
                Operation::DestroyKek { label },
                reason.as_deref(),
            )
            .await?;
        }
        KeysCommand::Approve { id, officer } => {
            let (name, key) = officer.load()?;
            let (row, op) =
                officers::approve(&vault.store, &officers, &id, name, &key, now_ms()).await?;
            let actor = format!("officer:{}+officer:{name}", row.requester);
            let reason = row.reason.as_deref();
            let now = now_ms();
            let outcome = officers::execute(keys, &op, &actor, reason, now).await;
            officers::finish(&vault.store, &id, outcome.is_ok(), now_ms()).await?;
            outcome?;
            println!(
                "approved and done: {op} (requested by {}, approved by {name})",
                row.requester
            );
        }
        KeysCommand::Requests => {
            for r in vault.store.requests().await? {
                println!(
                    "{}  {:<12}  {:<9}  {}  requested by {}{}",
                    r.id,
                    r.operation,
                    r.state,
                    r.params,
                    r.requester,
                    r.approver
                        .map(|a| format!(", approved by {a}"))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

async fn submit(
    vault: &Vault,
    officers: &Officers,
    args: &OfficerArgs,
    op: Operation,
    reason: Option<&str>,
) -> anyhow::Result<()> {
    let (name, key) = args.load()?;
    let ttl = i64::from(args.expires_in_hours) * 3_600_000;
    let row = officers::submit(
        &vault.store,
        officers,
        name,
        &key,
        &op,
        reason,
        ttl,
        now_ms(),
    )
    .await?;
    println!("request {} submitted: {op}", row.id);
    println!("A second officer approves it with:");
    println!(
        "  tokenvault keys approve {} --officer <name> --key <their key file>",
        row.id
    );
    Ok(())
}

async fn rewrap(
    vault: &Vault,
    keyring: &str,
    batch: usize,
    rate: Option<u32>,
    quiet: bool,
) -> anyhow::Result<()> {
    let service = vault.services().tokens;
    // Expired records are deleted, never re-sealed under the new key.
    let purged = service.purge_expired(&cli_actor(), now_ms()).await?;
    if purged > 0 {
        eprintln!("{purged} expired tokens purged before the sweep");
    }
    let bar = if quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} records  {per_sec}  ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let report = service
        .rewrap(
            keyring,
            RewrapOptions { batch, rate },
            &cli_actor(),
            now_ms,
            |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            },
        )
        .await?;
    bar.finish_and_clear();
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
    out
}
