//! `tokenvault keys …`: the key inventory (lifecycle commands follow).

use clap::Subcommand;

use crate::config::Settings;
use crate::vault::Vault;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List every key: keyring, version, state, algorithm, dates, records, KCV, KEK.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(settings: Settings, cmd: KeysCommand) -> anyhow::Result<()> {
    let vault = Vault::open(settings).await?;
    match cmd {
        KeysCommand::List { json } => {
            let inv = vault.keys.inventory().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&inv)?);
            } else {
                print!("{}", table(&inv));
            }
        }
    }
    vault.store.close().await;
    Ok(())
}

fn table(inv: &crate::keys::Inventory) -> String {
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
        "CRYPTOPERIOD END",
        "RECORDS",
        "KCV",
        "KEK",
    ];
    let rows: Vec<[String; 9]> = inv
        .keys
        .iter()
        .map(|k| {
            [
                k.keyring.clone(),
                k.version.to_string(),
                k.state.clone(),
                k.algorithm.clone(),
                k.created_at.clone(),
                k.cryptoperiod_ends_at.clone(),
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
    out
}
