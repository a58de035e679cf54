//! `tokenvault approvals`: what anomaly scoring held or blocked, and the officers'
//! decisions about it. A decision is a signed officer request like a key operation:
//! approving a held reveal or lifting a suspension needs two distinct officers (the one
//! who proposes it and a second), denying needs one.

use anyhow::Context;

use super::request::{self, SignArgs, SweepOptions};
use crate::anomaly::approvals::RevealScope;
use crate::config::Settings;
use crate::keys::rfc3339;
use crate::officers::Operation;
use crate::store::StepUpRow;
use crate::vault::Vault;

#[derive(Debug, clap::Subcommand)]
pub enum ApprovalsCommand {
    /// Held reveal requests, newest first, and the suspended clients.
    List {
        /// Only the requests still waiting for a decision.
        #[arg(long)]
        pending: bool,
        /// At most this many requests.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// One held request: the client, its origin, the score and reasons, the tokens it
    /// asked for (tokens, never values) and what officers decided.
    Show { id: String },
    /// Propose letting the client retry a held request once (header `Tokenvault-Approval`);
    /// a second officer signs it with `tokenvault keys approve`. Without --token or
    /// --count the scope is every token the request asked for.
    Approve {
        id: String,
        /// Approve only these tokens of the request (repeatable).
        #[arg(long = "token", value_name = "TOKEN")]
        tokens: Vec<String>,
        /// Approve up to this many tokens of any kind instead.
        #[arg(long, conflicts_with = "tokens")]
        count: Option<u32>,
        /// How long the client has to retry, from the approval: 90s, 15m, 2h (at most 24h).
        #[arg(long, default_value = "15m", value_parser = parse_duration)]
        valid_for: u32,
        /// Why (a ticket, the business reason): shown to the second officer and audited.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Deny a held request for good (one officer).
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Propose lifting the suspension of a blocked client (two officers).
    Reinstate {
        identity: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        sign: SignArgs,
    },
}

pub async fn run(settings: Settings, cmd: ApprovalsCommand) -> anyhow::Result<()> {
    let vault = Vault::open(settings).await?;
    let result = dispatch(&vault, cmd).await;
    request::seal_and_close(vault, result).await
}

async fn dispatch(vault: &Vault, cmd: ApprovalsCommand) -> anyhow::Result<()> {
    let plain = SweepOptions::default();
    let (op, reason, sign) = match cmd {
        ApprovalsCommand::List { pending, limit } => {
            let rows = vault.store.step_ups(limit).await?;
            for r in rows.iter().filter(|r| !pending || r.state == "pending") {
                println!(
                    "{}  {:<8}  {}  {:<16} from {:<15} score {:>3}  {} tokens  {}",
                    r.id,
                    r.state,
                    rfc3339(r.created_at),
                    r.identity,
                    r.origin,
                    r.score,
                    r.token_count,
                    r.reasons
                );
            }
            for (identity, since, reasons) in vault.store.suspensions().await? {
                println!("suspended  {identity}  since {}  {reasons}", rfc3339(since));
            }
            return Ok(());
        }
        ApprovalsCommand::Show { id } => {
            print!("{}", describe(&held(vault, &id).await?));
            return Ok(());
        }
        ApprovalsCommand::Approve {
            id,
            tokens,
            count,
            valid_for,
            reason,
            sign,
        } => {
            let row = held(vault, &id).await?;
            let scope = match count {
                Some(n) => RevealScope::Count(n),
                None if tokens.is_empty() => RevealScope::Tokens(
                    serde_json::from_str(&row.tokens).context("the held tokens")?,
                ),
                None => RevealScope::Tokens(tokens),
            };
            scope.check_against(&row).map_err(anyhow::Error::msg)?;
            let op = Operation::ApproveReveal {
                held: row.id,
                identity: row.identity,
                scope,
                valid_for_secs: valid_for,
            };
            (op, reason, sign)
        }
        ApprovalsCommand::Deny { id, reason, sign } => {
            let row = held(vault, &id).await?;
            let op = Operation::DenyReveal {
                held: row.id,
                identity: row.identity,
            };
            (op, reason, sign)
        }
        ApprovalsCommand::Reinstate {
            identity,
            reason,
            sign,
        } => {
            let since = vault
                .store
                .suspensions()
                .await?
                .into_iter()
                .find(|(id, _, _)| *id == identity)
                .map(|(_, since, _)| since)
                .with_context(|| format!("client {identity} is not suspended"))?;
            (Operation::Reinstate { identity, since }, reason, sign)
        }
    };
    request::submit(vault, op, Some(&reason), &sign, plain).await
}

async fn held(vault: &Vault, id: &str) -> anyhow::Result<StepUpRow> {
    vault.store.step_up(id).await?.with_context(|| {
        format!(
            "no held request {}: see `tokenvault approvals list`",
            id.chars().take(40).collect::<String>()
        )
    })
}

fn describe(r: &StepUpRow) -> String {
    let mut out = format!(
        "held request {}\n  client   {}\n  origin   {}\n  at       {}\n  score    {} ({})\n  \
         state    {}\n  tokens   {}: {}\n",
        r.id,
        r.identity,
        r.origin,
        rfc3339(r.created_at),
        r.score,
        r.reasons,
        r.state,
        r.token_count,
        r.tokens
    );
    if let Some(d) = &r.decision {
        out.push_str(&format!(
            "  decided  {} by {}: {}\n",
            rfc3339(d.decided_at),
            d.decided_by,
            d.reason
        ));
        let scope = crate::anomaly::approvals::scope_text(r);
        if !scope.is_empty() {
            out.push_str(&format!("  scope    {scope}\n"));
        }
    }
    if let Some(used) = r.used_at {
        out.push_str(&format!("  used     {}\n", rfc3339(used)));
    }
    out
}

/// `90s`, `15m`, `2h` or a number of seconds.
fn parse_duration(s: &str) -> Result<u32, String> {
    let (n, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: u32 = n
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 15m"))?;
    let secs = match unit {
        's' => Some(n),
        'm' => n.checked_mul(60),
        'h' => n.checked_mul(3600),
        _ => None,
    };
    secs.filter(|&v| v > 0)
        .ok_or_else(|| format!("'{s}' is not a duration like 90s, 15m or 2h"))
}
