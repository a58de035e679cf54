//! The report as Markdown, for review in a repository or a ticket.

use std::fmt::Write;

use super::{ClientAccess, HISTORY_COLUMNS, HistoryEntry, KEY_COLUMNS, KeyEntry, Report, access};

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn table(out: &mut String, header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
    let mut any = false;
    for row in rows {
        any = true;
        let _ = writeln!(
            out,
            "| {} |",
            row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
        );
    }
    if !any {
        let _ = writeln!(
            out,
            "| _none in this period_ |{}",
            " |".repeat(header.len() - 1)
        );
    }
    out.push('\n');
}

pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let s = &r.summary;
    let _ = writeln!(o, "# {}\n", r.title);
    let _ = writeln!(
        o,
        "Generated {} · period {} to {} · tokenvault {}\n",
        r.generated_at, r.period_from, r.period_to, r.vault_version
    );
    let _ = writeln!(o, "## Summary\n");
    let _ = writeln!(
        o,
        "- findings: **{}**\n- audit chain: **{}**\n- data keys: {} ({} active, {} overdue, {} destroyed)\n- protected records: {}\n- values revealed: {} (detokenize: {}); denied requests: {}\n",
        s.findings,
        if s.chain_intact { "intact" } else { "BROKEN" },
        s.data_keys,
        s.active_keys,
        s.overdue_keys,
        s.destroyed_keys,
        s.records,
        s.revealed_total,
        s.detokenize_total,
        s.denied_total
    );
    let _ = writeln!(o, "## Findings\n");
    if r.findings.is_empty() {
        o.push_str("No findings.\n\n");
    }
    for f in &r.findings {
        let _ = writeln!(
            o,
            "- **{}** {} (PCI DSS {})",
            f.severity, f.title, f.requirement
        );
    }
    o.push('\n');
    let _ = writeln!(o, "## Key inventory (PCI DSS 3.6.1.1)\n");
    table(&mut o, &KEY_COLUMNS, r.keys.iter().map(KeyEntry::cells));
    let _ = writeln!(o, "## KEKs and HSM evidence\n");
    if let Some(t) = &r.hsm.token {
        let _ = writeln!(
            o,
            "HSM token `{}`: {} {}, serial {}, firmware {}.\n",
            t.label, t.manufacturer, t.model, t.serial, t.firmware
        );
    }
    table(
        &mut o,
        &[
            "KEK",
            "state",
            "wraps",
            "in HSM",
            "sensitive",
            "extractable",
            "never extractable",
            "local",
        ],
        r.keks.iter().map(|k| {
            let e = k.evidence.as_ref();
            let f = |g: fn(&crate::hsm::KeyEvidence) -> bool| {
                e.map_or("-".into(), |e| g(e).to_string())
            };
            vec![
                k.label.clone(),
                k.state.clone(),
                k.wraps_data_keys.to_string(),
                k.in_hsm.to_string(),
                f(|e| e.sensitive),
                f(|e| e.extractable),
                f(|e| e.never_extractable),
                f(|e| e.local),
            ]
        }),
    );
    let rc = &r.reconciliation;
    let _ = writeln!(
        o,
        "## Reconciliation\n\n{} HSM objects; missing in HSM: {}; orphans in HSM: {}.\n",
        rc.hsm_objects.len(),
        rc.missing_in_hsm.len(),
        rc.orphans_in_hsm.len()
    );
    let _ = writeln!(o, "## Lifecycle history\n");
    table(
        &mut o,
        &HISTORY_COLUMNS,
        r.history.iter().map(HistoryEntry::cells),
    );
    let _ = writeln!(o, "## Access\n");
    table(
        &mut o,
        &access::columns(),
        r.access.iter().map(ClientAccess::cells),
    );
    let c = &r.chain;
    let _ = writeln!(o, "## Audit trail integrity\n");
    if c.intact {
        let _ = writeln!(
            o,
            "Intact: {} events, {} signed checkpoints ({} events after the newest).\n",
            c.events, c.checkpoints, c.unsigned_tail
        );
    } else {
        let _ = writeln!(
            o,
            "**BROKEN** at sequence {}: {}\n",
            c.first_bad_seq.unwrap_or(0),
            c.problem.as_deref().unwrap_or("")
        );
    }
    let _ = writeln!(
        o,
        "## Transport security\n\n{}; client certificates {}. Suites: {}.\n",
        r.tls.protocols.join(", "),
        r.tls.client_certificates,
        r.tls.cipher_suites.join(", ")
    );
    let _ = writeln!(o, "## PCI DSS mapping\n");
    table(
        &mut o,
        &["section", "requirement", "evidence"],
        r.pci_mapping
            .iter()
            .map(|p| vec![p.section.into(), p.requirement.into(), p.evidence.into()]),
    );
    o
}
