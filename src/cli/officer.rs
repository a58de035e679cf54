//! `tokenvault officer …`: officer keys, signing requests where the key lives, and the
//! officer registry (changes to it are dual-control requests like destroy).

use std::path::PathBuf;

use anyhow::Context;

use super::request::{self, SignArgs, SweepOptions};
use crate::config::Settings;
use crate::officers::{self, OfficerKey, Operation, Registry, RequestDocument};
use crate::vault::Vault;

#[derive(Debug, clap::Subcommand)]
pub enum OfficerCommand {
    /// Write a new private key file (0600) and print the public key to register.
    Keygen {
        /// Where to write the private key; it must not exist yet.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a request file with your key, on your own machine: needs no database, HSM or
    /// config. Shows the exact operation first; the signature covers exactly that text.
    Sign {
        /// The request document (from `tokenvault keys request <id>` or `--request-out`).
        request: PathBuf,
        /// Your officer key file.
        #[arg(long)]
        key: PathBuf,
        /// Where to write the signature (else standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List the registered officers.
    List,
    /// Register a new officer (two officers must sign).
    Add {
        name: String,
        /// The new officer's public key, as `officer keygen` printed it.
        public_key: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Remove an officer; at least two must remain (two officers must sign).
    Remove {
        name: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Replace an officer's key, e.g. after a loss (two officers must sign).
    Rekey {
        name: String,
        public_key: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        sign: SignArgs,
    },
}

impl OfficerCommand {
    /// Whether the command runs without the vault (no config, database or HSM).
    pub fn is_offline(&self) -> bool {
        matches!(
            self,
            OfficerCommand::Keygen { .. } | OfficerCommand::Sign { .. }
        )
    }
}

/// The commands that need no vault.
pub fn run_offline(cmd: &OfficerCommand) -> anyhow::Result<()> {
    match cmd {
        OfficerCommand::Keygen { out } => {
            let public = OfficerKey::generate(out)?;
            println!(
                "private key written to {} (keep it to yourself)",
                out.display()
            );
            println!("public key (give it to whoever registers you): {public}");
            Ok(())
        }
        OfficerCommand::Sign { request, key, out } => {
            let text = std::fs::read_to_string(request)
                .with_context(|| format!("cannot read {}", request.display()))?;
            let doc = RequestDocument::parse(&text)?;
            let key = OfficerKey::load(key)?;
            eprintln!("Request {} asks for:", doc.id);
            eprintln!("  {}", doc.summary);
            if let Some(reason) = &doc.reason {
                eprintln!("  reason given: {reason}");
            }
            eprintln!(
                "  needs {} officer signature(s); expires at {} (ms since epoch)",
                doc.signatures_required, doc.expires_at
            );
            let sig = serde_json::to_string(&key.sign(&doc))?;
            match out {
                Some(path) => {
                    std::fs::write(path, format!("{sig}\n"))
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!("signature written to {}", path.display());
                }
                None => println!("{sig}"),
            }
            Ok(())
        }
        _ => unreachable!("only offline commands are run here"),
    }
}

pub async fn run(settings: Settings, cmd: OfficerCommand) -> anyhow::Result<()> {
    let vault = Vault::open(settings).await?;
    let result = dispatch(&vault, cmd).await;
    request::seal_and_close(vault, result).await
}

async fn dispatch(vault: &Vault, cmd: OfficerCommand) -> anyhow::Result<()> {
    let plain = SweepOptions::default();
    let (op, reason, sign) = match cmd {
        OfficerCommand::List => {
            for name in Registry::load(&vault.store).await?.names() {
                println!("{name}");
            }
            return Ok(());
        }
        OfficerCommand::Add {
            name,
            public_key,
            reason,
            sign,
        } => {
            officers::check_name(&name)?;
            officers::parse_public_key(&public_key)?;
            (Operation::AddOfficer { name, public_key }, reason, sign)
        }
        OfficerCommand::Remove { name, reason, sign } => {
            (Operation::RemoveOfficer { name }, reason, sign)
        }
        OfficerCommand::Rekey {
            name,
            public_key,
            reason,
            sign,
        } => {
            officers::parse_public_key(&public_key)?;
            (Operation::RekeyOfficer { name, public_key }, reason, sign)
        }
        OfficerCommand::Keygen { .. } | OfficerCommand::Sign { .. } => {
            unreachable!("offline commands are run without the vault")
        }
    };
    request::submit(vault, op, reason.as_deref(), &sign, plain).await
}
