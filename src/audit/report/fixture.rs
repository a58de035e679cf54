//! A report whose every text field holds hostile text, for the renderers' tests: what a
//! client certificate's CN or SAN URI, an officer's reason, a key label or an HSM token
//! label can carry.

use super::{
    ChainStatus, ClientAccess, DayCount, Finding, HistoryEntry, HsmSection, KekEntry, KeyEntry,
    PciRow, Reconciliation, Report, Summary, TlsInfo,
};
use crate::hsm::{KeyEvidence, TokenEvidence};

/// Markup, links, emphasis, entities, table pipes and backslashes. None starts or ends
/// with a space and none holds a control character: each must come back verbatim as
/// text from every rendering.
pub const HOSTILE: [&str; 6] = [
    "<img src=x onerror=alert(1)>",
    "[x](javascript:alert(1))",
    "<script>alert('x')</script>",
    r"back\slash \<b> \[y](javascript:z) `tick` *a* _b_ ~~c~~ **d** &amp; &#60;i&#62; a|b\|c",
    "# heading ![i](https://evil.example/p.png) <https://evil.example/> www.evil.example x@evil.example",
    "\"><svg onload=alert(1)> {{x}} $x$ [^n] ==m== +1 -2 1. > q <!-- c --> <?p?>",
];

fn h(i: usize) -> String {
    HOSTILE[i % HOSTILE.len()].to_owned()
}

fn evidence(label: String) -> KeyEvidence {
    KeyEvidence {
        label,
        class: h(1),
        key_type: h(2),
        sensitive: true,
        extractable: false,
        never_extractable: true,
        always_sensitive: true,
        local: true,
        token: true,
        wrap: true,
        unwrap: true,
        encrypt: false,
        decrypt: false,
        sign: true,
        value_len: Some(32),
        derive: false,
        modifiable: false,
        wrap_with_trusted: true,
    }
}

pub fn report() -> Report {
    let key = |i: usize, state: &str| KeyEntry {
        id: h(i),
        purpose: h(i + 1),
        algorithm: h(i + 2),
        strength_bits: 256,
        location: h(i + 3),
        created_at: h(i + 4),
        activated_at: Some(h(i + 5)),
        cryptoperiod_ends_at: h(i),
        cryptoperiod_days: 365,
        age_days: 400,
        state: state.into(),
        overdue: state == "active",
        usage_count: 7,
        records: 3,
        kcv: h(i + 1),
    };
    let access = (0..HOSTILE.len())
        .map(|i| {
            let mut a = ClientAccess {
                client: h(i),
                ..ClientAccess::default()
            };
            a.denied = 1;
            a
        })
        .collect();
    Report {
        title: h(0),
        generated_at: h(1),
        period_from: h(2),
        period_to: h(3),
        vault_version: h(4),
        environment: "nonproduction",
        summary: Summary {
            data_keys: 2,
            active_keys: 1,
            overdue_keys: 1,
            destroyed_keys: 0,
            records: 6,
            detokenize_total: 0,
            revealed_total: 0,
            denied_total: 6,
            chain_intact: false,
            findings: HOSTILE.len(),
        },
        findings: (0..HOSTILE.len())
            .map(|i| Finding {
                severity: "high",
                title: h(i),
                requirement: "3.6.4",
            })
            .collect(),
        hsm: HsmSection {
            token: Some(TokenEvidence {
                label: h(0),
                manufacturer: h(1),
                model: h(2),
                serial: h(3),
                firmware: h(4),
            }),
            signing_key: Some(evidence(h(5))),
            error: Some(h(1)),
        },
        keys: (0..HOSTILE.len())
            .map(|i| key(i, if i % 2 == 0 { "active" } else { "retired" }))
            .collect(),
        keks: (0..HOSTILE.len())
            .map(|i| KekEntry {
                label: h(i),
                state: h(i + 1),
                created_at: h(i + 2),
                location: h(i + 3),
                wraps_data_keys: 1,
                in_hsm: i % 2 == 0,
                evidence: Some(evidence(h(i))),
            })
            .collect(),
        reconciliation: Reconciliation {
            hsm_objects: (0..HOSTILE.len()).map(h).collect(),
            missing_in_hsm: (0..HOSTILE.len()).map(h).collect(),
            orphans_in_hsm: (0..HOSTILE.len()).map(h).collect(),
        },
        history: (0..HOSTILE.len())
            .map(|i| HistoryEntry {
                at: h(i),
                actor: h(i + 1),
                action: h(i + 2),
                outcome: h(i + 3),
                resource: h(i + 4),
                reason: h(i + 5),
            })
            .collect(),
        access,
        anomalies: anomalies(),
        daily_detokenize: vec![DayCount {
            day: "2026-12-01".into(),
            count: 4,
        }],
        chain: ChainStatus {
            intact: false,
            events: 10,
            checkpoints: 1,
            unsigned_tail: 2,
            first_bad_seq: Some(3),
            problem: Some(h(0)),
            events_per_second: 1.0,
            key_source: crate::audit::verify::KeySource::Hsm,
        },
        tls: TlsInfo {
            protocols: vec!["TLSv1.3"],
            cipher_suites: (0..HOSTILE.len()).map(h).collect(),
            client_certificates: h(5),
        },
        pci_mapping: vec![PciRow {
            section: "s",
            requirement: "r",
            evidence: "e",
        }],
    }
}

fn anomalies() -> super::AnomalySection {
    use super::anomalies::{BaselineEntry, ClientAnomalies, HeldEntry};
    super::AnomalySection {
        clients: (0..HOSTILE.len())
            .map(|i| ClientAnomalies {
                client: h(i),
                alerts: 2,
                step_ups: 1,
                blocks: i as i64 % 2,
                suspended: i % 2 == 1,
                ..ClientAnomalies::default()
            })
            .collect(),
        held: (0..HOSTILE.len())
            .map(|i| HeldEntry {
                id: h(i),
                client: h(i + 1),
                origin: h(i + 2),
                at: h(i + 3),
                score: 60,
                reasons: h(i + 4),
                tokens: 3,
                state: h(i + 5),
                decided_by: h(i + 6),
                decided_at: h(i + 7),
                scope: h(i + 8),
                reason: h(i + 9),
                used_at: h(i + 10),
            })
            .collect(),
        baselines: (0..HOSTILE.len())
            .map(|i| BaselineEntry {
                client: h(i),
                updated_at: h(i + 1),
                profile: crate::anomaly::Profile {
                    learned: 200,
                    first_seen: Some(0),
                    peak_minute: 3,
                    peak_hour: 40,
                    peak_batch: 100,
                    usual_novel_share: 0.3,
                    usual_rising_share: 0.1,
                    usual_not_found_share: 0.02,
                    origins: 2,
                    hours: [1.0 / 24.0; 24],
                },
            })
            .collect(),
    }
}
