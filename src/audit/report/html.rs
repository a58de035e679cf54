//! The report as one self-contained HTML file: summary first, findings highlighted,
//! charts drawn as inline SVG, print-friendly. No scripts, no external resources.

use std::fmt::Write;

use super::{ClientAccess, HISTORY_COLUMNS, HistoryEntry, KEY_COLUMNS, KeyEntry, Report, access};

/// HTML-escapes text.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn table(
    out: &mut String,
    header: &[&str],
    rows: impl IntoIterator<Item = Vec<String>>,
    classes: &[String],
) {
    out.push_str("<table><thead><tr>");
    for h in header {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    let mut any = false;
    for (i, row) in rows.into_iter().enumerate() {
        any = true;
        let class = classes.get(i).map(String::as_str).unwrap_or("");
        let _ = write!(out, "<tr class=\"{class}\">");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", esc(&cell));
        }
        out.push_str("</tr>");
    }
    if !any {
        let _ = write!(
            out,
            "<tr><td colspan=\"{}\" class=\"empty\">none in this period</td></tr>",
            header.len()
        );
    }
    out.push_str("</tbody></table>");
}

/// Horizontal bars: (label, value, max) with an optional 100 % marker.
fn hbars(
    title: &str,
    bars: &[(String, f64, String)],
    max: f64,
    marker: Option<(f64, &str)>,
) -> String {
    let (w, row, left) = (640.0, 22.0, 170.0);
    let h = 30.0 + row * bars.len().max(1) as f64;
    let scale = (w - left - 60.0) / max.max(1e-9);
    let mut s = format!(
        "<figure><svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\">",
        esc(title)
    );
    for (i, (label, value, text)) in bars.iter().enumerate() {
        let y = 10.0 + row * i as f64;
        let bw = (value * scale).max(1.0);
        let color = if marker.is_some_and(|(m, _)| *value >= m) {
            "#c0392b"
        } else {
            "#2c7fb8"
        };
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"12\">{}</text>\
             <rect x=\"{left}\" y=\"{y}\" width=\"{bw:.1}\" height=\"{}\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{}\" font-size=\"11\">{}</text>",
            left - 6.0,
            y + 13.0,
            esc(label),
            row - 6.0,
            left + bw + 4.0,
            y + 13.0,
            esc(text)
        );
    }
    if let Some((m, label)) = marker {
        let x = left + m * scale;
        let _ = write!(
            s,
            "<line x1=\"{x:.1}\" y1=\"4\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#333\" stroke-dasharray=\"4 3\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
            h - 14.0,
            h - 2.0,
            esc(label)
        );
    }
    let _ = write!(s, "</svg><figcaption>{}</figcaption></figure>", esc(title));
    s
}

/// Vertical bars per day.
fn vbars(title: &str, days: &[(String, i64)]) -> String {
    let (w, h, bottom) = (640.0, 200.0, 30.0);
    let max = days.iter().map(|d| d.1).max().unwrap_or(0).max(1) as f64;
    let n = days.len().max(1) as f64;
    let bw = ((w - 40.0) / n).min(40.0);
    let mut s = format!(
        "<figure><svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\">",
        esc(title)
    );
    if days.is_empty() {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"13\">no detokenizations in this period</text>",
            w / 2.0,
            h / 2.0
        );
    }
    for (i, (day, count)) in days.iter().enumerate() {
        let bh = (*count as f64 / max) * (h - bottom - 20.0);
        let x = 20.0 + bw * i as f64;
        let y = h - bottom - bh;
        let _ = write!(
            s,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"#2c7fb8\"><title>{}: {count}</title></rect>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{count}</text>",
            (bw - 4.0).max(1.0),
            esc(day),
            x + bw / 2.0,
            y - 3.0
        );
        if days.len() <= 14 || i % (days.len() / 10 + 1) == 0 {
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
                x + bw / 2.0,
                h - 12.0,
                esc(&day[5..])
            );
        }
    }
    let _ = write!(s, "</svg><figcaption>{}</figcaption></figure>", esc(title));
    s
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

pub fn render(r: &Report) -> String {
    let mut o = String::with_capacity(64 * 1024);
    let _ = write!(
        o,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>",
        esc(&r.title)
    );
    let _ = write!(
        o,
        "<h1>{}</h1><p class=\"meta\">Generated {} · period {} to {} · tokenvault {}</p>",
        esc(&r.title),
        esc(&r.generated_at),
        esc(&r.period_from),
        esc(&r.period_to),
        esc(&r.vault_version)
    );

    // Summary
    let s = &r.summary;
    o.push_str("<h2>Summary</h2><div class=\"cards\">");
    let card = |o: &mut String, label: &str, value: String, class: &str| {
        let _ = write!(
            o,
            "<div class=\"card {class}\"><b>{}</b>{}</div>",
            esc(&value),
            esc(label)
        );
    };
    card(
        &mut o,
        "findings",
        s.findings.to_string(),
        if s.findings > 0 { "bad" } else { "good" },
    );
    card(
        &mut o,
        "audit chain",
        if s.chain_intact {
            "intact".into()
        } else {
            "BROKEN".into()
        },
        if s.chain_intact { "good" } else { "bad" },
    );
    card(&mut o, "data keys", s.data_keys.to_string(), "");
    card(&mut o, "active keys", s.active_keys.to_string(), "");
    card(
        &mut o,
        "overdue keys",
        s.overdue_keys.to_string(),
        if s.overdue_keys > 0 { "bad" } else { "good" },
    );
    card(&mut o, "destroyed keys", s.destroyed_keys.to_string(), "");
    card(&mut o, "protected records", s.records.to_string(), "");
    card(&mut o, "values revealed", s.revealed_total.to_string(), "");
    card(&mut o, "denied requests", s.denied_total.to_string(), "");
    o.push_str("</div>");

    o.push_str("<h2>Findings</h2>");
    if r.findings.is_empty() {
        o.push_str("<p class=\"ok\">No findings.</p>");
    } else {
        o.push_str("<ul class=\"findings\">");
        for f in &r.findings {
            let _ = write!(
                o,
                "<li class=\"{}\"><b>{}</b> — {} <span class=\"meta\">(PCI DSS {})</span></li>",
                f.severity,
                esc(f.severity),
                esc(&f.title),
                f.requirement
            );
        }
        o.push_str("</ul>");
    }

    // Key inventory
    o.push_str("<h2>Key inventory (PCI DSS 3.6.1.1)</h2>");
    let classes: Vec<String> = r
        .keys
        .iter()
        .map(|k| {
            if k.overdue {
                "overdue".into()
            } else if k.state == "destroyed" {
                "destroyed".into()
            } else {
                String::new()
            }
        })
        .collect();
    table(
        &mut o,
        &KEY_COLUMNS,
        r.keys.iter().map(KeyEntry::cells),
        &classes,
    );
    let live: Vec<_> = r
        .keys
        .iter()
        .filter(|k| k.state == "active" || k.state == "decrypt-only")
        .collect();
    let age_bars: Vec<(String, f64, String)> = live
        .iter()
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
    o.push_str(&hbars(
        "Key age against cryptoperiod (dashed line: end of cryptoperiod)",
        &age_bars,
        max_ratio,
        Some((1.0, "cryptoperiod end")),
    ));
    let rec_bars: Vec<(String, f64, String)> = r
        .keys
        .iter()
        .filter(|k| k.state != "destroyed")
        .map(|k| (k.id.clone(), k.records as f64, k.records.to_string()))
        .collect();
    let max_rec = rec_bars.iter().map(|b| b.1).fold(1.0_f64, f64::max);
    o.push_str(&hbars(
        "Records protected per key version",
        &rec_bars,
        max_rec,
        None,
    ));

    // HSM evidence
    o.push_str("<h2>Key-encryption keys and HSM evidence (PCI DSS 3.5, 3.6.1.2)</h2>");
    if let Some(t) = &r.hsm.token {
        let _ = write!(
            o,
            "<p>HSM token <b>{}</b>: {} {}, serial {}, firmware {}.</p>",
            esc(&t.label),
            esc(&t.manufacturer),
            esc(&t.model),
            esc(&t.serial),
            esc(&t.firmware)
        );
    }
    if let Some(e) = &r.hsm.error {
        let _ = write!(
            o,
            "<p class=\"broken\">The HSM could not be read: {}</p>",
            esc(e)
        );
    }
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
    table(
        &mut o,
        &[
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
        ],
        r.keks.iter().map(|k| {
            let e = k.evidence.as_ref();
            vec![
                k.label.clone(),
                k.state.clone(),
                k.created_at.clone(),
                k.wraps_data_keys.to_string(),
                yes(k.in_hsm).into(),
                e.map_or("-".into(), |e| e.sensitive.to_string()),
                e.map_or("-".into(), |e| e.extractable.to_string()),
                e.map_or("-".into(), |e| e.never_extractable.to_string()),
                e.map_or("-".into(), |e| e.local.to_string()),
                e.map_or("-".into(), |e| {
                    format!(
                        "wrap={} unwrap={} encrypt={} decrypt={}",
                        e.wrap, e.unwrap, e.encrypt, e.decrypt
                    )
                }),
            ]
        }),
        &kek_classes,
    );
    if let Some(e) = &r.hsm.signing_key {
        let _ = write!(
            o,
            "<p>Audit signing key <b>{}</b> (EC P-256): sensitive={}, extractable={}, never extractable={}, local={}, sign={}.</p>",
            esc(&e.label),
            e.sensitive,
            e.extractable,
            e.never_extractable,
            e.local,
            e.sign
        );
    }

    o.push_str("<h2>Reconciliation: database ↔ HSM</h2>");
    let rc = &r.reconciliation;
    let _ = write!(
        o,
        "<p>{} objects of this vault in the HSM; <span class=\"{}\">{} missing</span>, <span class=\"{}\">{} orphaned</span> (expected: 0 and 0).</p>",
        rc.hsm_objects.len(),
        if rc.missing_in_hsm.is_empty() {
            "ok"
        } else {
            "broken"
        },
        rc.missing_in_hsm.len(),
        if rc.orphans_in_hsm.is_empty() {
            "ok"
        } else {
            "broken"
        },
        rc.orphans_in_hsm.len()
    );
    table(
        &mut o,
        &["HSM object", "recorded in the database"],
        rc.hsm_objects
            .iter()
            .map(|l| vec![l.clone(), yes(!rc.orphans_in_hsm.contains(l)).into()])
            .chain(
                rc.missing_in_hsm
                    .iter()
                    .map(|l| vec![l.clone(), "yes — but MISSING from the HSM".into()]),
            ),
        &[],
    );

    o.push_str("<h2>Rotation, retirement and destruction history (PCI DSS 3.6.4–3.7)</h2>");
    table(
        &mut o,
        &HISTORY_COLUMNS,
        r.history.iter().map(HistoryEntry::cells),
        &[],
    );

    o.push_str("<h2>Access to cleartext (PCI DSS 10.2.1)</h2>");
    table(
        &mut o,
        &access::columns(),
        r.access.iter().map(ClientAccess::cells),
        &r.access
            .iter()
            .map(|a| {
                if a.denied > 0 {
                    "bad".into()
                } else {
                    String::new()
                }
            })
            .collect::<Vec<_>>(),
    );
    let days: Vec<(String, i64)> = r
        .daily_detokenize
        .iter()
        .map(|d| (d.day.clone(), d.count))
        .collect();
    o.push_str(&vbars("Detokenize volume per day (UTC)", &days));

    o.push_str("<h2>Audit trail integrity (PCI DSS 10.3, 10.5)</h2>");
    let c = &r.chain;
    if c.intact {
        let _ = write!(
            o,
            "<p class=\"ok\">Intact: {} events in one hash chain, {} HSM-signed checkpoints verified ({} events after the newest checkpoint; {:.0} events/s).</p>",
            c.events, c.checkpoints, c.unsigned_tail, c.events_per_second
        );
    } else {
        let _ = write!(
            o,
            "<p class=\"broken\">BROKEN at sequence {}: {}</p>",
            c.first_bad_seq.unwrap_or(0),
            esc(c.problem.as_deref().unwrap_or(""))
        );
    }

    o.push_str("<h2>Transport security</h2>");
    let _ = write!(
        o,
        "<p>Protocols: {}. Client certificates: {}.</p>",
        esc(&r.tls.protocols.join(", ")),
        esc(&r.tls.client_certificates)
    );
    table(
        &mut o,
        &["cipher suite"],
        r.tls.cipher_suites.iter().map(|s| vec![s.clone()]),
        &[],
    );

    o.push_str("<h2>What each section evidences</h2>");
    table(
        &mut o,
        &["section", "PCI DSS v4.0 requirement", "evidence"],
        r.pci_mapping
            .iter()
            .map(|p| vec![p.section.into(), p.requirement.into(), p.evidence.into()]),
        &[],
    );
    o.push_str("<p class=\"meta\">This file is signed by the vault's HSM-held audit key: verify with <code>openssl dgst -sha256 -verify audit-public.pem -signature FILE.sig FILE</code> or <code>tokenvault audit verify-report</code>.</p>");
    o.push_str("</body></html>\n");
    o
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
        // The three charts are the only SVG elements.
        assert_eq!(page.matches("<svg").count(), 3);
    }
}
