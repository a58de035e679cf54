//! `tokenvault init`: idempotent key set-up.

use crate::config::Settings;
use crate::vault::{Vault, now_ms};

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let vault = Vault::open(settings).await?;
    let report = vault.keys.init("cli:init", now_ms()).await?;
    let signer = vault.checkpointer();
    signer.publish_key(now_ms()).await?;
    signer.checkpoint(now_ms()).await?;
    if report.created.is_empty() {
        println!("tokenvault is initialized; nothing to create.");
    } else {
        for item in &report.created {
            println!("created {item}");
        }
    }
    vault.store.close().await;
    Ok(())
}
