//! `tokenvault init`: idempotent key set-up. The first run registers the officers (at
//! least two, named with `--officer NAME=PUBLIC_KEY`); after that, creating anything
//! (a keyring added to the config, say) is a request one officer signs.

use anyhow::Context;

use super::request::{self, SignArgs, SweepOptions};
use crate::config::Settings;
use crate::officers::{self, Operation, Registry};
use crate::vault::{Vault, now_ms};

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// A first officer, as NAME=PUBLIC_KEY (the key `tokenvault officer keygen` printed on
    /// the officer's own machine). The first init needs at least two; later runs refuse it.
    #[arg(long = "officer", value_name = "NAME=PUBLIC_KEY")]
    officers: Vec<String>,
    #[command(flatten)]
    sign: SignArgs,
}

pub async fn run(settings: Settings, args: InitArgs) -> anyhow::Result<()> {
    let vault = Vault::open(settings).await?;
    let result = init(&vault, &args).await;
    vault.store.close().await;
    result
}

async fn init(vault: &Vault, args: &InitArgs) -> anyhow::Result<()> {
    let now = now_ms();
    let registry = Registry::load(&vault.store).await?;
    if registry.is_empty() {
        let given = parse_officers(&args.officers)?;
        let names = officers::bootstrap(&vault.store, &given, now).await?;
        println!("registered officers: {}", names.join(", "));
        let report = vault.keys.init("bootstrap", now).await?;
        for item in &report.created {
            println!("created {item}");
        }
    } else {
        // Naming the officers again is fine (the same command line stays idempotent);
        // naming anyone else is not: later changes are dual-control requests.
        for (name, key) in parse_officers(&args.officers)? {
            let key = officers::parse_public_key(&key)?;
            if registry.officer_of(key.as_bytes()).map(|(n, _)| n) != Some(name.as_str()) {
                return Err(officers::OfficerError::AlreadyBootstrapped.into());
            }
        }
        let missing = vault.keys.missing().await?;
        if missing.is_empty() {
            println!("tokenvault is initialized; nothing to create.");
        } else {
            println!("to create: {}", missing.join(", "));
            request::submit(
                vault,
                Operation::Init,
                None,
                &args.sign,
                SweepOptions::default(),
            )
            .await?;
        }
    }
    let signer = vault.checkpointer();
    signer.publish_key(now_ms()).await?;
    signer.checkpoint(now_ms()).await?;
    Ok(())
}

fn parse_officers(given: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    given
        .iter()
        .map(|o| {
            o.split_once('=')
                .map(|(n, k)| (n.trim().to_owned(), k.trim().to_owned()))
                .context("--officer takes NAME=PUBLIC_KEY")
        })
        .collect()
}
