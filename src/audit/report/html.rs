//! The report as one self-contained HTML file: summary first, findings highlighted,
//! charts drawn as inline SVG, print-friendly. No scripts, no external resources.
//!
//! Built with maud: every value put into the page goes through its escaping (`&`, `<`,
//! `>`, `"`), in text and in attributes alike, so no field — a certificate identity, a
//! reason, a label from the HSM or the config — can add an element or an attribute.
//! The only unescaped text is the constant style sheet.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::{
    ClientAccess, HISTORY_COLUMNS, HistoryEntry, KEY_COLUMNS, KeyEntry, Report, access, anomalies,
};

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn table(
    header: &[&str],
    rows: impl IntoIterator<Item = Vec<String>>,
    classes: &[String],
) -> Markup {
    let rows: Vec<Vec<String>> = rows.into_iter().collect();
    html! {
        table {
            thead { tr { @for h in header { th { (h) } } } }
            tbody {
                @for (i, row) in rows.iter().enumerate() {
                    tr class=(classes.get(i).map(String::as_str).unwrap_or("")) {
                        @for cell in row { td { (cell) } }
                    }
                }
                @if rows.is_empty() {
                    tr { td colspan=(header.len()) class="empty" { "none in this period" } }
                }
            }
        }
    }
}

/// An SVG chart in a figure with its caption.
fn figure(title: &str, (w, h): (f64, f64), body: Markup) -> Markup {
    html! {
        figure {
            svg xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {w} {h}")) width=(w)
                height=(h) role="img" aria-label=(title) { (body) }
            figcaption { (title) }
        }
    }
}

/// Horizontal bars: (label, value, text) with an optional 100 % marker.
fn hbars(
    title: &str,
    bars: &[(String, f64, String)],
    max: f64,
    marker: Option<(f64, &str)>,
) -> Markup {
    let (w, row, left) = (640.0, 22.0, 170.0);
    let h = 30.0 + row * bars.len().max(1) as f64;
    let scale = (w - left - 60.0) / max.max(1e-9);
    let body = html! {
        @for (i, (label, value, note)) in bars.iter().enumerate() {
            @let y = 10.0 + row * i as f64;
            @let bw = (value * scale).max(1.0);
            @let color = if marker.is_some_and(|(m, _)| *value >= m) { "#c0392b" } else { "#2c7fb8" };
            text x=(left - 6.0) y=(y + 13.0) text-anchor="end" font-size="12" { (label) }
            rect x=(left) y=(y) width=(format!("{bw:.1}")) height=(row - 6.0) fill=(color) {}
            text x=(format!("{:.1}", left + bw + 4.0)) y=(y + 13.0) font-size="11" { (note) }
        }
        @if let Some((m, label)) = marker {
            @let x = format!("{:.1}", left + m * scale);
            line x1=(x) y1="4" x2=(x) y2=(format!("{:.1}", h - 14.0)) stroke="#333" stroke-dasharray="4 3" {}
            text x=(x) y=(format!("{:.1}", h - 2.0)) font-size="11" text-anchor="middle" { (label) }
        }
    };
    figure(title, (w, h), body)
}

/// Vertical bars per day.
fn vbars(title: &str, days: &[(String, i64)]) -> Markup {
    let (w, h, bottom) = (640.0, 200.0, 30.0);
    let max = days.iter().map(|d| d.1).max().unwrap_or(0).max(1) as f64;
    let n = days.len().max(1) as f64;
    let bw = ((w - 40.0) / n).min(40.0);
    let body = html! {
        @if days.is_empty() {
            text x=(w / 2.0) y=(h / 2.0) text-anchor="middle" font-size="13" { "no detokenizations in this period" }
        }
        @for (i, (day, count)) in days.iter().enumerate() {
            @let bh = (*count as f64 / max) * (h - bottom - 20.0);
            @let x = 20.0 + bw * i as f64;
            @let y = h - bottom - bh;
            rect x=(format!("{x:.1}")) y=(format!("{y:.1}")) width=(format!("{:.1}", (bw - 4.0).max(1.0)))
                height=(format!("{bh:.1}")) fill="#2c7fb8" { title { (day) ": " (count) } }
            text x=(format!("{:.1}", x + bw / 2.0)) y=(format!("{:.1}", y - 3.0)) font-size="10" text-anchor="middle" { (count) }
            @if days.len() <= 14 || i % (days.len() / 10 + 1) == 0 {
                text x=(format!("{:.1}", x + bw / 2.0)) y=(format!("{:.1}", h - 12.0)) font-size="10" text-anchor="middle" {
                    (day.get(5..).unwrap_or(day))
                }
            }
        }
    };
    figure(title, (w, h), body)
}

const STYLE: &str = "
body{font:14px/1.45 -apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif;color:#1d2733;margin:0 auto;max-width:1100px;padding:28px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;border-bottom:2px solid #dfe6ee;padding-bottom:4px;margin-top:34px}
.meta{color:#5b6b7b}.cards{display:flex;flex-wrap:wrap;gap:12px;margin:18px 0}
.card{flex:1 1 150px;border:1px solid #dfe6ee;border-radius:8px;padding:10px 14px;background:#f8fafc}
.card b{display:block;font-size:22px}.card.bad{background:#fdecea;border-color:#f5c6c0}.card.good{background:#eaf7ee;border-color:#bfe5cb}
table{border-collapse:collapse;width:100%;margin:8px 0 4px;font-size:12.5px}th,td{border:1px solid #dfe6ee;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#eef3f8}tr.overdue td,tr.bad td{background:#fdecea}tr.destroyed td{color:#7b8794}td.empty{color:#7b8794;font-style:italic}
ul.findings{padding-left:0;list-style:none}ul.findings li{padding:6px 10px;margin:4px 0;border-left:5px solid;border-radius:3px}
li.high{border-color:#c0392b;background:#fdecea}li.medium{border-color:#e67e22;background:#fef5e7}li.info{border-color:#2c7fb8;background:#eaf2fa}
figure{margin:10px 0}figcaption{color:#5b6b7b;font-size:12px}.ok{color:#1e8449;font-weight:600}.broken{color:#c0392b;font-weight:600}
@media print{body{padding:0;max-width:none}h2{break-after:avoid}table,figure{break-inside:avoid}}
";

fn card(label: &str, value: impl maud::Render, class: &str) -> Markup {
    html! { div class=(format!("card {class}")) { b { (value) } (label) } }
}

fn good_or_bad(good: bool) -> &'static str {
    if good { "good" } else { "bad" }
}

fn ok_or_broken(ok: bool) -> &'static str {
    if ok { "ok" } else { "broken" }
}

fn summary(r: &Report) -> Markup {
    let s = &r.summary;
    html! {
        h2 { "Summary" }
        div.cards {
            (card("findings", s.findings, good_or_bad(s.findings == 0)))
            (card("audit chain", if s.chain_intact { "intact" } else { "BROKEN" }, good_or_bad(s.chain_intact)))
            (card("data keys", s.data_keys, ""))
            (card("active keys", s.active_keys, ""))
            (card("overdue keys", s.overdue_keys, good_or_bad(s.overdue_keys == 0)))
            (card("destroyed keys", s.destroyed_keys, ""))
            (card("protected records", s.records, ""))
            (card("values revealed", s.revealed_total, ""))
            (card("denied requests", s.denied_total, ""))
        }
        h2 { "Findings" }
        @if r.findings.is_empty() {
            p.ok { "No findings." }
        } @else {
            ul.findings {
                @for f in &r.findings {
                    li class=(f.severity) {
                        b { (f.severity) } " — " (f.title) " " span.meta { "(PCI DSS " (f.requirement) ")" }
                    }
                }
            }
        }
    }
}

fn keys(r: &Report) -> Markup {
    let classes: Vec<String> = r
        .keys
        .iter()
        .map(|k| match (k.overdue, k.state.as_str()) {
            (true, _) => "overdue".into(),
            (false, "destroyed") => "destroyed".into(),
            _ => String::new(),
        })
        .collect();
    let age_bars: Vec<(String, f64, String)> = r
        .keys
        .iter()
        .filter(|k| k.state == "active" || k.state == "decrypt-only")
        .map(|k| {
            let ratio = k.age_days as f64 / k.cryptoperiod_days.max(1) as f64;
            (
                k.id.clone(),
                ratio,
                format!("{} of {} days", k.age_days, k.cryptoperiod_days),
            )
        })
        .collect();
    let max_ratio = age_bars.iter().map(|b| b.1).fold(1.2_f64, f64::max);
    let rec_bars: Vec<(String, f64, String)> = r
        .keys
        .iter()
        .filter(|k| k.state != "destroyed")
        .map(|k| (k.id.clone(), k.records as f64, k.records.to_string()))
        .collect();
    let max_rec = rec_bars.iter().map(|b| b.1).fold(1.0_f64, f64::max);
    html! {
        h2 { "Key inventory (PCI DSS 3.6.1.1)" }
        (table(&KEY_COLUMNS, r.keys.iter().map(KeyEntry::cells), &classes))
        (hbars(
            "Key age against cryptoperiod (dashed line: end of cryptoperiod)",
            &age_bars,
            max_ratio,
            Some((1.0, "cryptoperiod end")),
        ))
        (hbars("Records protected per key version", &rec_bars, max_rec, None))
    }
}

fn hsm(r: &Report) -> Markup {
    let kek_classes: Vec<String> = r
        .keks
        .iter()
        .map(|k| {
            if k.state != "destroyed" && !k.in_hsm {
                "bad".into()
            } else {
                String::new()
            }
        })
        .collect();
    let rows = r.keks.iter().map(|k| {
        let e = k.evidence.as_ref();
        let flag =
            |g: fn(&crate::hsm::KeyEvidence) -> bool| e.map_or("-".into(), |e| g(e).to_string());
        vec![
            k.label.clone(),
            k.state.clone(),
            k.created_at.clone(),
            k.wraps_data_keys.to_string(),
            yes(k.in_hsm).into(),
            flag(|e| e.sensitive),
            flag(|e| e.extractable),
            flag(|e| e.never_extractable),
            flag(|e| e.local),
            e.map_or("-".into(), |e| {
                format!(
                    "wrap={} unwrap={} encrypt={} decrypt={}",
                    e.wrap, e.unwrap, e.encrypt, e.decrypt
                )
            }),
        ]
    });
    let header = [
        "KEK",
        "state",
        "created",
        "wraps data keys",
        "in HSM",
        "CKA_SENSITIVE",
        "CKA_EXTRACTABLE",
        "CKA_NEVER_EXTRACTABLE",
        "CKA_LOCAL",
        "usage",
    ];
    let rc = &r.reconciliation;
    let objects = rc
        .hsm_objects
        .iter()
        .map(|l| vec![l.clone(), yes(!rc.orphans_in_hsm.contains(l)).into()])
        .chain(
            rc.missing_in_hsm
                .iter()
                .map(|l| vec![l.clone(), "yes — but MISSING from the HSM".into()]),
        );
    html! {
        h2 { "Key-encryption keys and HSM evidence (PCI DSS 3.5, 3.6.1.2)" }
        @if let Some(t) = &r.hsm.token {
            p { "HSM token " b { (t.label) } ": " (t.manufacturer) " " (t.model) ", serial " (t.serial) ", firmware " (t.firmware) "." }
        }
        @if let Some(e) = &r.hsm.error {
            p.broken { "The HSM could not be read: " (e) }
        }
        (table(&header, rows, &kek_classes))
        @if let Some(e) = &r.hsm.signing_key {
            p {
                "Audit signing key " b { (e.label) } " (EC P-256): sensitive=" (e.sensitive)
                ", extractable=" (e.extractable) ", never extractable=" (e.never_extractable)
                ", local=" (e.local) ", sign=" (e.sign) "."
            }
        }
        h2 { "Reconciliation: database ↔ HSM" }
        p {
            (rc.hsm_objects.len()) " objects of this vault in the HSM; "
            span class=(ok_or_broken(rc.missing_in_hsm.is_empty())) { (rc.missing_in_hsm.len()) " missing" } ", "
            span class=(ok_or_broken(rc.orphans_in_hsm.is_empty())) { (rc.orphans_in_hsm.len()) " orphaned" }
            " (expected: 0 and 0)."
        }
        (table(&["HSM object", "recorded in the database"], objects, &[]))
    }
}

fn activity(r: &Report) -> Markup {
    let access_classes: Vec<String> = r
        .access
        .iter()
        .map(|a| {
            if a.denied > 0 {
                "bad".into()
            } else {
                String::new()
            }
        })
        .collect();
    let days: Vec<(String, i64)> = r
        .daily_detokenize
        .iter()
        .map(|d| (d.day.clone(), d.count))
        .collect();
    let c = &r.chain;
    html! {
        h2 { "Rotation, retirement and destruction history (PCI DSS 3.6.4–3.7)" }
        (table(&HISTORY_COLUMNS, r.history.iter().map(HistoryEntry::cells), &[]))
        h2 { "Access to cleartext (PCI DSS 10.2.1)" }
        (table(&access::columns(), r.access.iter().map(ClientAccess::cells), &access_classes))
        (vbars("Detokenize volume per day (UTC)", &days))
        h2 { "Audit trail integrity (PCI DSS 10.3, 10.5)" }
        @if c.intact {
            p.ok {
                "Intact: " (c.events) " events in one hash chain, " (c.checkpoints)
                " HSM-signed checkpoints verified (" (c.unsigned_tail)
                " events after the newest checkpoint; " (format!("{:.0}", c.events_per_second)) " events/s)."
            }
        } @else {
            p.broken {
                "BROKEN at sequence " (c.first_bad_seq.unwrap_or(0)) ": " (c.problem.as_deref().unwrap_or(""))
            }
        }
    }
}

fn anomalies(r: &Report) -> Markup {
    let a = &r.anomalies;
    let classes: Vec<String> = a
        .clients
        .iter()
        .map(|c| {
            if c.suspended || c.blocks > 0 {
                "bad".into()
            } else {
                String::new()
            }
        })
        .collect();
    let bars: Vec<(String, f64, String)> = a
        .clients
        .iter()
        .map(|c| {
            let note = format!(
                "{} alerts · {} step-ups · {} blocks",
                c.alerts, c.step_ups, c.blocks
            );
            (c.client.clone(), c.flagged() as f64, note)
        })
        .collect();
    let max = bars.iter().map(|b| b.1).fold(1.0_f64, f64::max);
    html! {
        h2 { "Reveal anomalies, step-ups and blocks (PCI DSS 10.4.1, 10.7, 12.10.5)" }
        p.meta {
            "Every reveal is scored against its client's own baseline: an alert is allowed and "
            "recorded; a step-up is refused until two officers approve it; a block suspends the "
            "client until two officers reinstate it."
        }
        (table(&anomalies::CLIENT_COLUMNS, a.clients.iter().map(anomalies::ClientAnomalies::cells), &classes))
        (hbars("Unusual reveals per client (alerts, step-ups and blocks)", &bars, max, None))
        h3 { "Held reveal requests and the officers' decisions" }
        (table(&anomalies::HELD_COLUMNS, a.held.iter().map(anomalies::HeldEntry::cells), &[]))
        h3 { "What each baseline has learned" }
        (table(&anomalies::BASELINE_COLUMNS, a.baselines.iter().map(anomalies::BaselineEntry::cells), &[]))
    }
}

fn transport_and_mapping(r: &Report) -> Markup {
    html! {
        h2 { "Transport security" }
        p { "Protocols: " (r.tls.protocols.join(", ")) ". Client certificates: " (r.tls.client_certificates) "." }
        (table(&["cipher suite"], r.tls.cipher_suites.iter().map(|s| vec![s.clone()]), &[]))
        h2 { "What each section evidences" }
        (table(
            &["section", "PCI DSS v4.0 requirement", "evidence"],
            r.pci_mapping.iter().map(|p| vec![p.section.into(), p.requirement.into(), p.evidence.into()]),
            &[],
        ))
        p.meta {
            "This file is signed by the vault's HSM-held audit key: verify with "
            code { "openssl dgst -sha256 -verify audit-public.pem -signature FILE.sig FILE" }
            " or " code { "tokenvault audit verify-report" } "."
        }
    }
}

pub fn render(r: &Report) -> String {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (r.title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { (r.title) }
                p.meta {
                    "Generated " (r.generated_at) " · period " (r.period_from) " to " (r.period_to)
                    " · tokenvault " (r.vault_version)
                }
                p class=(if r.environment == "production" { "meta" } else { "broken" }) {
                    (super::environment_line(r.environment))
                }
                (summary(r))
                (keys(r))
                (hsm(r))
                (activity(r))
                (anomalies(r))
                (transport_and_mapping(r))
            }
        }
    };
    let mut out = page.into_string();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{HOSTILE, report};
    use super::*;

    #[test]
    fn hostile_text_in_any_field_is_escaped_and_never_becomes_an_element_or_attribute() {
        let page = render(&report());
        for h in HOSTILE {
            let escaped = h
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;");
            assert!(page.contains(&escaped), "{h:?} is not escaped:\n{page}");
        }
        assert!(page.contains("&lt;script&gt;alert('x')&lt;/script&gt;"));
        for element in ["<script", "<img", "<svg onload", "<!-- c", "<?p"] {
            assert!(!page.contains(element), "{element} in\n{page}");
        }
        // The four charts are the only SVG elements.
        assert_eq!(page.matches("<svg").count(), 4);
    }
}
