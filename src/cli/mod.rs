//! The command line. Exit codes: 0 success, 1 the operation failed, 2 usage error.

mod audit;
mod dev_certs;
mod init;
mod keys;
mod officer;

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
    /// Find or create the KEK, fingerprint key, audit signing key and first data keys (idempotent).
    Init,
    /// Key inventory and lifecycle.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Write development TLS certificates (CA, server, clients app, tokenizer, auditor).
    DevCerts(dev_certs::DevCertsArgs),
    /// Print the OpenAPI 3 document of the HTTP API.
    Openapi,
    /// Audit trail verification, checkpoints and the PCI key audit report.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Security officer tools (dual-control keys).
    #[command(subcommand)]
    Officer(officer::OfficerCommand),
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::DevCerts(args) => return dev_certs::run(args),
        Command::Openapi => {
            println!("{}", crate::api::openapi_json()?);
            return Ok(());
        }
        Command::Officer(cmd) => return officer::run(cmd),
        _ => {}
    }
    let settings = Settings::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => {
            settings.refuse_development_clients()?;
            crate::api::serve(settings).await
        }
        Command::Init => init::run(settings).await,
        Command::Keys(cmd) => keys::run(settings, cmd).await,
        Command::Audit(cmd) => audit::run(settings, cmd).await,
        Command::DevCerts(_) | Command::Openapi | Command::Officer(_) => {
            unreachable!("handled above")
        }
    }
}
