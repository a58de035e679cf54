//! `tokenvault officer keygen`: an officer's Ed25519 key pair for dual control.

use std::path::PathBuf;

use crate::officers::OfficerKey;

#[derive(Debug, clap::Subcommand)]
pub enum OfficerCommand {
    /// Write a new private key file (0600) and print the public key to register.
    Keygen {
        /// Where to write the private key; it must not exist yet.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(cmd: &OfficerCommand) -> anyhow::Result<()> {
    match cmd {
        OfficerCommand::Keygen { out } => {
            let public = OfficerKey::generate(out)?;
            println!(
                "private key written to {} (keep it to yourself)",
                out.display()
            );
            println!("register it in the config:");
            println!("  [officers.<your name>]");
            println!("  public_key = \"{public}\"");
        }
    }
    Ok(())
}
