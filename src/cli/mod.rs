//! The command line. Exit codes: 0 success, 1 the operation failed, 2 usage error.

mod approvals;
mod audit;
mod dev_certs;
mod files;
mod import;
mod import_vault;
mod init;
mod keys;
mod mask;
mod mask_io;
mod officer;
mod request;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Settings;

#[derive(Debug, Parser)]
#[command(
    name = "tokenvault",
    version,
    about = "HSM-backed key management and tokenization vault"
)]
pub struct Cli {
    /// TOML configuration file (else TOKENVAULT_CONFIG, else the development defaults, which
    /// `serve` uses only with TOKENVAULT_DEV_MODE=true).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTPS API.
    Serve,
    /// Find or create the KEK, fingerprint key, audit signing key and first data keys
    /// (idempotent); the first run registers the officers.
    Init(init::InitArgs),
    /// Key inventory and lifecycle.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Write development TLS certificates (CA, server, clients app, tokenizer, auditor).
    DevCerts(dev_certs::DevCertsArgs),
    /// Print the OpenAPI 3 document of the HTTP API, for this configuration.
    Openapi,
    /// Audit trail verification, checkpoints and the PCI key audit report.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Officer keys, signing requests, and the officer registry.
    #[command(subcommand)]
    Officer(officer::OfficerCommand),
    /// Reveal requests held by anomaly scoring, suspended clients, and the officers'
    /// decisions about them (approve, deny, reinstate).
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// Tokenize a CSV or JSON-lines file (or stdin) in bulk for a client, writing
    /// `id,token,error` to an output file; resumable after a kill.
    Import(import::ImportArgs),
    /// Write a masked copy of a CSV or JSON-lines file or a database table for test
    /// environments: mapped columns replaced consistently by synthetic values of their
    /// kind, keyed by the vault; resumable after a kill.
    Mask(mask::MaskArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::DevCerts(args) => return dev_certs::run(args),
        Command::Officer(cmd) if cmd.is_offline() => return officer::run_offline(cmd),
        _ => {}
    }
    let settings = Settings::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => {
            settings.refuse_development_clients()?;
            crate::api::serve(settings).await
        }
        // The document states the configured types, keyrings and limits.
        Command::Openapi => {
            println!("{}", crate::api::openapi_json(&settings)?);
            Ok(())
        }
        Command::Init(args) => init::run(settings, args).await,
        Command::Keys(cmd) => keys::run(settings, cmd).await,
        Command::Audit(cmd) => audit::run(settings, cmd).await,
        Command::Officer(cmd) => officer::run(settings, cmd).await,
        Command::Approvals(cmd) => approvals::run(settings, cmd).await,
        Command::Import(args) => {
            let vault = crate::vault::Vault::open(settings).await?;
            let result = import::run(&vault, args).await;
            request::seal_and_close(vault, result).await
        }
        Command::Mask(args) => {
            let vault = crate::vault::Vault::open(settings).await?;
            let result = mask::run(&vault, args).await;
            request::seal_and_close(vault, result).await
        }
        Command::DevCerts(_) => {
            unreachable!("handled above")
        }
    }
}
