//! The PCI key audit report: what an assessor needs to see, gathered from the database
//! and read live from the HSM, rendered as HTML (one self-contained file), Markdown or
//! JSON, and signed by the HSM key (detached signature).

mod access;
pub(crate) mod anomalies;
#[cfg(test)]
mod fixture;
mod html;
mod markdown;

pub use access::ClientAccess;
pub use anomalies::AnomalySection;

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Action, verify};
use crate::hsm::{KeyEvidence, KeyRole, TokenEvidence};
use crate::keys::{FINGERPRINT_KEYRING, rfc3339};
use crate::vault::Vault;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Html,
    Json,
    Md,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub title: String,
    pub generated_at: String,
    pub period_from: String,
    pub period_to: String,
    pub vault_version: String,
    /// `production` or `nonproduction` (the vault's recorded environment).
    pub environment: &'static str,
    pub summary: Summary,
    pub findings: Vec<Finding>,
    pub hsm: HsmSection,
    pub keys: Vec<KeyEntry>,
    pub keks: Vec<KekEntry>,
    pub reconciliation: Reconciliation,
    pub history: Vec<HistoryEntry>,
    pub access: Vec<ClientAccess>,
    pub anomalies: AnomalySection,
    pub daily_detokenize: Vec<DayCount>,
    pub chain: ChainStatus,
    pub tls: TlsInfo,
    pub pci_mapping: Vec<PciRow>,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub data_keys: usize,
    pub active_keys: usize,
    pub overdue_keys: usize,
    pub destroyed_keys: usize,
    pub records: i64,
    pub detokenize_total: i64,
    /// Values revealed in clear by every revealing action (detokenize, decrypt, …).
    pub revealed_total: i64,
    pub denied_total: i64,
    pub chain_intact: bool,
    pub findings: usize,
}

#[derive(Debug, Serialize)]
pub struct Finding {
    /// `high`, `medium` or `info`.
    pub severity: &'static str,
    pub title: String,
    pub requirement: &'static str,
}

#[derive(Debug, Serialize)]
pub struct HsmSection {
    pub token: Option<TokenEvidence>,
    pub signing_key: Option<KeyEvidence>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct KeyEntry {
    pub id: String,
    pub purpose: String,
    pub algorithm: String,
    pub strength_bits: u32,
    pub location: String,
    pub created_at: String,
    pub activated_at: Option<String>,
    pub cryptoperiod_ends_at: String,
    pub cryptoperiod_days: i64,
    pub age_days: i64,
    pub state: String,
    pub overdue: bool,
    pub usage_count: i64,
    pub records: i64,
    pub kcv: String,
}

#[derive(Debug, Serialize)]
pub struct KekEntry {
    pub label: String,
    pub state: String,
    pub created_at: String,
    pub location: String,
    pub wraps_data_keys: usize,
    pub in_hsm: bool,
    pub evidence: Option<KeyEvidence>,
}

#[derive(Debug, Serialize)]
pub struct Reconciliation {
    pub hsm_objects: Vec<String>,
    pub missing_in_hsm: Vec<String>,
    pub orphans_in_hsm: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct HistoryEntry {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub outcome: String,
    pub resource: String,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct DayCount {
    pub day: String,
    pub count: i64,
}

#[derive(Debug, Serialize)]
pub struct ChainStatus {
    /// Which key checked the checkpoint signatures: `hsm` unless the HSM had none.
    pub key_source: verify::KeySource,
    pub intact: bool,
    pub events: i64,
    pub checkpoints: usize,
    pub unsigned_tail: i64,
    pub first_bad_seq: Option<i64>,
    pub problem: Option<String>,
    pub events_per_second: f64,
}

#[derive(Debug, Serialize)]
pub struct TlsInfo {
    pub protocols: Vec<&'static str>,
    pub cipher_suites: Vec<String>,
    pub client_certificates: String,
}

#[derive(Debug, Serialize)]
pub struct PciRow {
    pub section: &'static str,
    pub requirement: &'static str,
    pub evidence: &'static str,
}

const DAY_MS: i64 = 86_400_000;

/// Columns of the key inventory table, shared by the HTML and Markdown renderings.
pub(super) const KEY_COLUMNS: [&str; 12] = [
    "key",
    "purpose",
    "algorithm",
    "bits",
    "where it lives",
    "created",
    "activated",
    "cryptoperiod end",
    "state",
    "usage",
    "records",
    "KCV",
];
pub(super) const HISTORY_COLUMNS: [&str; 6] = [
    "time",
    "who",
    "action",
    "outcome",
    "key / request",
    "reason",
];

impl KeyEntry {
    pub(super) fn cells(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.purpose.clone(),
            self.algorithm.clone(),
            self.strength_bits.to_string(),
            self.location.clone(),
            self.created_at.clone(),
            self.activated_at.clone().unwrap_or_default(),
            self.cryptoperiod_ends_at.clone(),
            if self.overdue {
                format!("{} (OVERDUE)", self.state)
            } else {
                self.state.clone()
            },
            self.usage_count.to_string(),
            self.records.to_string(),
            self.kcv.clone(),
        ]
    }
}

impl HistoryEntry {
    pub(super) fn cells(&self) -> Vec<String> {
        [
            &self.at,
            &self.actor,
            &self.action,
            &self.outcome,
            &self.resource,
            &self.reason,
        ]
        .map(String::clone)
        .to_vec()
    }
}

fn purpose(keyring: &str) -> String {
    match keyring {
        FINGERPRINT_KEYRING => {
            "keyed fingerprints (deterministic tokens, duplicate detection)".into()
        }
        "pan" => "card numbers (PAN) at rest".into(),
        "pii" => "personal data at rest and the encrypt API".into(),
        other => format!("data of keyring `{other}`"),
    }
}

/// What the report's header says of a vault's environment.
pub(super) fn environment_line(environment: &str) -> &'static str {
    if environment == crate::nonprod::Environment::Nonproduction.as_str() {
        "NON-PRODUCTION vault: it holds no real data (it refuses values that could be \
         real). This report is not evidence about cardholder data."
    } else {
        "Environment: production."
    }
}

/// Gathers the report for events in [from, to).
pub async fn collect(vault: &Vault, from: i64, to: i64) -> anyhow::Result<Report> {
    let store = &vault.store;
    let hsm = vault.keys.hsm().clone();
    let labels = vault.keys.labels().clone();
    let inventory = vault.keys.inventory(to).await?;

    // Live evidence from the HSM, off the async threads.
    let kek_labels: Vec<String> = inventory.keks.iter().map(|k| k.label.clone()).collect();
    let transit_labels: Vec<String> = inventory
        .signing_keys
        .iter()
        .map(|k| k.hsm_label.clone())
        .collect();
    let signing_label = labels.audit_signing();
    let prefix = format!("{}-", labels.prefix());
    let live = tokio::task::spawn_blocking(move || {
        let token = hsm.token_evidence();
        let signing = hsm.signing_key_evidence(&signing_label);
        let signing_public = hsm.signing_public_key(&signing_label);
        let keks: BTreeMap<String, KeyEvidence> = kek_labels
            .iter()
            .filter_map(|l| hsm.kek_evidence(l).ok().map(|e| (l.clone(), e)))
            .collect();
        let transit: Vec<KeyEvidence> = transit_labels
            .iter()
            .filter_map(|l| hsm.signing_key_evidence(l).ok())
            .collect();
        let objects = hsm.labels_with_prefix(&prefix);
        (token, signing, signing_public, keks, transit, objects)
    })
    .await?;
    let (token, signing, signing_public, kek_evidence, transit_evidence, objects) = live;
    let token = token.ok();
    let hsm_error = objects.as_ref().err().map(|e| e.to_string());
    let objects = objects.unwrap_or_default();
    let where_token = token.as_ref().map_or_else(
        || "HSM (token unreadable)".to_owned(),
        |t| {
            format!(
                "HSM token '{}' ({} {}, serial {})",
                t.label, t.manufacturer, t.model, t.serial
            )
        },
    );

    let mut findings = Vec::new();
    let keys: Vec<KeyEntry> = inventory
        .keys
        .iter()
        .map(|k| {
            let cryptoperiod_days = vault
                .settings
                .keyrings
                .get(&k.keyring)
                .map_or(365, |s| i64::from(s.cryptoperiod_days));
            let overdue = k.state == "active" && k.cryptoperiod_ended;
            if overdue {
                findings.push(Finding {
                    severity: "high",
                    title: format!(
                        "{} v{} is past its cryptoperiod and still active",
                        k.keyring, k.version
                    ),
                    requirement: "3.6.4",
                });
            }
            if let Some(d) = &k.destruction
                && !d.starts_with("unrecoverable")
            {
                findings.push(Finding {
                    severity: "medium",
                    title: format!(
                        "{} v{} is destroyed in the database but recoverable from backups until \
                         KEK '{}' is destroyed",
                        k.keyring, k.version, k.kek_label
                    ),
                    requirement: "3.7.5",
                });
            }
            KeyEntry {
                id: format!("{}/v{}", k.keyring, k.version),
                purpose: purpose(&k.keyring),
                algorithm: k.algorithm.clone(),
                strength_bits: 256,
                location: if let Some(d) = &k.destruction {
                    format!("destroyed — {d}")
                } else {
                    format!(
                        "database, wrapped by KEK '{}' ({})",
                        k.kek_label, k.wrap_mechanism
                    )
                },
                created_at: k.created_at.clone(),
                activated_at: k.activated_at.clone(),
                cryptoperiod_ends_at: k.cryptoperiod_ends_at.clone(),
                cryptoperiod_days,
                age_days: k.age_days,
                state: k.state.clone(),
                overdue,
                usage_count: k.usage_count,
                records: k.records,
                kcv: k.kcv.clone(),
            }
        })
        .collect();

    let mut wraps: BTreeMap<&str, usize> = BTreeMap::new();
    for k in &inventory.keys {
        if k.state != "destroyed" {
            *wraps.entry(k.kek_label.as_str()).or_default() += 1;
        }
    }
    let keks: Vec<KekEntry> = inventory
        .keks
        .iter()
        .map(|k| {
            let evidence = kek_evidence.get(&k.label).cloned();
            // The policy `serve` enforces, not a copy of it.
            if let Some(e) = &evidence
                && crate::hsm::policy::check(KeyRole::Kek, e).is_err()
            {
                findings.push(Finding {
                    severity: "high",
                    title: format!("KEK '{}' does not meet the key policy in the HSM", k.label),
                    requirement: "3.5.1",
                });
            }
            KekEntry {
                label: k.label.clone(),
                state: k.state.clone(),
                created_at: k.created_at.clone(),
                location: where_token.clone(),
                wraps_data_keys: wraps.get(k.label.as_str()).copied().unwrap_or(0),
                in_hsm: objects.contains(&k.label),
                evidence,
            }
        })
        .collect();

    // Reconciliation: what the database expects in the HSM against what is there.
    let mut expected: Vec<String> = inventory
        .keks
        .iter()
        .filter(|k| k.state != "destroyed")
        .map(|k| k.label.clone())
        .collect();
    expected.push(labels.audit_signing());
    // Transit signing key pairs: recorded in the database, held to their own policy.
    expected.extend(inventory.signing_keys.iter().map(|k| k.hsm_label.clone()));
    for (k, e) in inventory.signing_keys.iter().filter_map(|k| {
        transit_evidence
            .iter()
            .find(|e| e.label == k.hsm_label)
            .map(|e| (k, e))
    }) {
        let algorithm = crate::hsm::SignAlgorithm::parse(&k.algorithm);
        if let Some(a) = algorithm
            && crate::hsm::policy::check(KeyRole::SigningPrivate(a), e).is_err()
        {
            findings.push(Finding {
                severity: "high",
                title: format!(
                    "signing key {} v{} ('{}') does not meet the key policy in the HSM",
                    k.name, k.version, k.hsm_label
                ),
                requirement: "3.5.1",
            });
        }
    }
    let missing: Vec<String> = expected
        .iter()
        .filter(|l| !objects.contains(l))
        .cloned()
        .collect();
    let orphans: Vec<String> = objects
        .iter()
        .filter(|l| !expected.contains(l))
        .cloned()
        .collect();
    for m in &missing {
        findings.push(Finding {
            severity: "high",
            title: format!("key '{m}' is recorded but missing from the HSM"),
            requirement: "3.6.1.1",
        });
    }
    for o in &orphans {
        findings.push(Finding {
            severity: "medium",
            title: format!("HSM object '{o}' is not recorded in the database"),
            requirement: "3.6.1.1",
        });
    }

    let history = store
        .lifecycle_events(&key_management_actions(), from, to)
        .await?
        .into_iter()
        .map(|e| HistoryEntry {
            at: rfc3339(e.at),
            actor: e.actor,
            action: e.action,
            outcome: e.outcome,
            resource: e.resource.unwrap_or_default(),
            reason: e.reason.unwrap_or_default(),
        })
        .collect();

    let counts = store.audit_counts(from, to).await?;
    let anomalies = anomalies::collect(store, &counts, (from, to)).await?;
    let pending = anomalies
        .held
        .iter()
        .filter(|h| h.state == "pending")
        .count();
    if pending > 0 {
        findings.push(Finding {
            severity: "medium",
            title: format!("{pending} reveal requests held by anomaly scoring await a decision"),
            requirement: "10.7.2",
        });
    }
    for c in anomalies.clients.iter().filter(|c| c.suspended) {
        findings.push(Finding {
            severity: "medium",
            title: format!("client {} is suspended by anomaly scoring", c.client),
            requirement: "10.7.2",
        });
    }
    let access = access::tally(counts);
    let denied_total: i64 = access.iter().map(|a| a.denied).sum();
    if denied_total > 0 {
        findings.push(Finding {
            severity: "info",
            title: format!("{denied_total} denied requests in the period (see Access)"),
            requirement: "10.2.1",
        });
    }

    let daily = store
        .daily_counts(Action::Detokenize.as_str(), from, to)
        .await?;
    let daily_detokenize = daily
        .into_iter()
        .map(|(day, count)| DayCount {
            day: rfc3339(day * DAY_MS)[..10].to_owned(),
            count,
        })
        .collect();

    // The signatures are checked with the key read from the HSM, never the database's
    // copy, which a database writer could replace along with every checkpoint.
    let hsm_key = signing_public
        .ok()
        .and_then(|sec1| super::checkpoint::verifying_key(&sec1).ok())
        .map(|k| (k, verify::KeySource::Hsm));
    let keys_for_verify = verify::trusted_keys(store, hsm_key).await?;
    let v = verify::verify(store, &keys_for_verify, &[]).await?;
    if let Some(why) = &v.key_problem {
        findings.push(Finding {
            severity: "high",
            title: why.clone(),
            requirement: "10.3.4",
        });
    }
    if let Some((seq, why)) = &v.first_bad {
        findings.push(Finding {
            severity: "high",
            title: format!("audit chain broken at {seq}: {why}"),
            requirement: "10.3.4",
        });
    }
    let chain = ChainStatus {
        key_source: v.key_source,
        intact: v.ok(),
        events: v.events,
        checkpoints: v.checkpoints,
        unsigned_tail: v.unsigned_tail,
        first_bad_seq: v.first_bad.as_ref().map(|f| f.0),
        problem: v
            .first_bad
            .as_ref()
            .map(|f| f.1.clone())
            .or_else(|| v.key_problem.clone()),
        events_per_second: v.events_per_second(),
    };

    if inventory.keys.is_empty() {
        findings.push(Finding {
            severity: "medium",
            title: "no keys yet: run `tokenvault init`".into(),
            requirement: "3.6.1",
        });
    }
    findings.sort_by_key(|f| match f.severity {
        "high" => 0,
        "medium" => 1,
        _ => 2,
    });
    let tls = TlsInfo {
        protocols: vec!["TLSv1.3"],
        cipher_suites: rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .map(|s| format!("{:?}", s.suite()))
            .collect(),
        client_certificates: format!(
            "required; issued by the CA in {}",
            vault.settings.server.client_ca.display()
        ),
    };
    let records = keys.iter().map(|k| k.records).sum();
    let summary = Summary {
        data_keys: keys.len(),
        active_keys: keys.iter().filter(|k| k.state == "active").count(),
        overdue_keys: keys.iter().filter(|k| k.overdue).count(),
        destroyed_keys: keys.iter().filter(|k| k.state == "destroyed").count(),
        records,
        detokenize_total: access
            .iter()
            .filter_map(|a| a.revealed.get(Action::Detokenize.as_str()))
            .sum(),
        revealed_total: access.iter().map(ClientAccess::revealed_total).sum(),
        denied_total,
        chain_intact: chain.intact,
        findings: findings.iter().filter(|f| f.severity != "info").count(),
    };
    Ok(Report {
        title: "tokenvault PCI key audit report".into(),
        generated_at: rfc3339(to),
        period_from: rfc3339(from),
        period_to: rfc3339(to),
        vault_version: env!("CARGO_PKG_VERSION").into(),
        environment: vault.settings.environment.as_str(),
        summary,
        findings,
        hsm: HsmSection {
            token,
            signing_key: signing.ok(),
            error: hsm_error,
        },
        keys,
        keks,
        reconciliation: Reconciliation {
            hsm_objects: objects,
            missing_in_hsm: missing,
            orphans_in_hsm: orphans,
        },
        history,
        access,
        anomalies,
        daily_detokenize,
        chain,
        tls,
        pci_mapping: pci_mapping(),
    })
}

fn pci_mapping() -> Vec<PciRow> {
    let row = |section, requirement, evidence| PciRow {
        section,
        requirement,
        evidence,
    };
    vec![
        row(
            "HSM evidence, KEKs",
            "3.5.1 / 3.6.1.2",
            "KEK generated in and held by the HSM: sensitive, never extractable, local",
        ),
        row(
            "Key inventory",
            "3.6.1.1",
            "every key with purpose, algorithm, strength, location, dates and state",
        ),
        row(
            "Key inventory: cryptoperiods",
            "3.6.4",
            "cryptoperiod end per version; overdue keys are findings",
        ),
        row(
            "Lifecycle history",
            "3.6.5 / 3.7.4 / 3.7.5",
            "rotation, retirement and destruction with actors and reasons",
        ),
        row(
            "Reveal anomalies, step-ups and blocks",
            "10.4.1 / 10.7.2 / 12.10.5",
            "unusual reveals per client, held requests with the two officers who approved or \
             the one who denied each, their use, suspensions, and each client's baseline",
        ),
        row(
            "Lifecycle history: approvals",
            "3.6.1.2 / 3.7.6",
            "destruction and forced retirement approved by a second officer",
        ),
        row(
            "Reconciliation",
            "3.6.1.1",
            "database and HSM agree on every key; orphans and missing keys listed",
        ),
        row(
            "Access",
            "10.2.1 / 10.2.1.1 / 10.2.1.2",
            "detokenize and decrypt per client; denied attempts",
        ),
        row(
            "Audit chain",
            "10.3.2 / 10.3.4 / 10.5.1",
            "hash chain and HSM-signed checkpoints verified; tampering named by sequence",
        ),
        row(
            "TLS",
            "4.2.1",
            "TLS 1.3 only, mutual authentication with client certificates",
        ),
    ]
}

/// Renders the report.
pub fn render(report: &Report, format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(report)?,
        Format::Md => markdown::render(report),
        Format::Html => html::render(report),
    })
}

/// The stored names of the actions the lifecycle history shows.
fn key_management_actions() -> Vec<&'static str> {
    Action::ALL
        .into_iter()
        .filter(|a| a.is_key_management())
        .map(Action::as_str)
        .collect()
}
