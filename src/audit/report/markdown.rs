//! The report as Markdown, for review in a repository or a ticket. Every value is
//! written through [`text`], so whatever a field holds is shown as text.

use std::fmt::Write;

use super::{
    ClientAccess, HISTORY_COLUMNS, HistoryEntry, KEY_COLUMNS, KeyEntry, Report, access, anomalies,
};

/// A field as Markdown text that a CommonMark or GFM renderer shows verbatim, whatever it
/// holds (a certificate identity, a reason, a label from the HSM or the config):
/// - `<`, `>` and `&` as entities, so a renderer that passes HTML through gets none, and
///   no character reference is completed;
/// - every other ASCII punctuation that some rule gives a meaning inside a line behind a
///   backslash (CommonMark allows the escape before any ASCII punctuation): emphasis,
///   code, links and images, autolinks (`:`, `.`, `@`), tables (`|`), strikethrough,
///   math, footnotes, super- and subscript, wiki links; the few kept as they are
///   (`, ; / % ? - ' " ( )`) mean nothing inside a line once the others are escaped
///   (a parenthesis opens a link destination only right after an unescaped `]`);
/// - line breaks, other control characters and bidirectional overrides as spaces, so a
///   value stays in its table row, never starts a line (headings, lists, quotes) and
///   cannot reorder what is shown around it.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 4);
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            ',' | ';' | '/' | '%' | '?' | '-' | '\'' | '"' | '(' | ')' => out.push(c),
            c if c.is_ascii_punctuation() => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() || is_bidi_control(c) => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Characters that reorder the display of the text around them (Unicode bidi controls).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
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
            row.iter().map(|c| text(c)).collect::<Vec<_>>().join(" | ")
        );
    }
    if !any {
        let _ = writeln!(
            out,
            "| (none in this period) |{}",
            " |".repeat(header.len() - 1)
        );
    }
    out.push('\n');
}

pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let s = &r.summary;
    let _ = writeln!(o, "# {}\n", text(&r.title));
    let _ = writeln!(
        o,
        "Generated {} · period {} to {} · tokenvault {}\n",
        text(&r.generated_at),
        text(&r.period_from),
        text(&r.period_to),
        text(&r.vault_version)
    );
    let _ = writeln!(o, "**{}**\n", super::environment_line(r.environment));
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
            text(f.severity),
            text(&f.title),
            text(f.requirement)
        );
    }
    o.push('\n');
    let _ = writeln!(o, "## Key inventory (PCI DSS 3.6.1.1)\n");
    table(&mut o, &KEY_COLUMNS, r.keys.iter().map(KeyEntry::cells));
    let _ = writeln!(o, "## KEKs and HSM evidence\n");
    if let Some(t) = &r.hsm.token {
        let _ = writeln!(
            o,
            "HSM token **{}**: {} {}, serial {}, firmware {}.\n",
            text(&t.label),
            text(&t.manufacturer),
            text(&t.model),
            text(&t.serial),
            text(&t.firmware)
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
    let a = &r.anomalies;
    let _ = writeln!(o, "## Reveal anomalies, step-ups and blocks\n");
    table(
        &mut o,
        &anomalies::CLIENT_COLUMNS,
        a.clients.iter().map(anomalies::ClientAnomalies::cells),
    );
    let _ = writeln!(o, "### Held reveal requests and the officers' decisions\n");
    table(
        &mut o,
        &anomalies::HELD_COLUMNS,
        a.held.iter().map(anomalies::HeldEntry::cells),
    );
    let _ = writeln!(o, "### What each baseline has learned\n");
    table(
        &mut o,
        &anomalies::BASELINE_COLUMNS,
        a.baselines.iter().map(anomalies::BaselineEntry::cells),
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
            text(c.problem.as_deref().unwrap_or(""))
        );
    }
    let _ = writeln!(
        o,
        "## Transport security\n\n{}; client certificates {}. Suites: {}.\n",
        text(&r.tls.protocols.join(", ")),
        text(&r.tls.client_certificates),
        text(&r.tls.cipher_suites.join(", "))
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

#[cfg(test)]
mod tests {
    use super::super::fixture::{HOSTILE, report};
    use super::*;
    use pulldown_cmark::{Options, Parser, html};

    /// The Markdown as a viewer shows it: CommonMark with the GitHub extensions and more,
    /// raw HTML passed through (as GitHub, GitLab and most ticket systems parse it before
    /// their sanitizer, and as many local viewers show it).
    pub(crate) fn as_a_viewer_renders_it(md: &str) -> String {
        let options = Options::ENABLE_TABLES
            | Options::ENABLE_FOOTNOTES
            | Options::ENABLE_STRIKETHROUGH
            | Options::ENABLE_TASKLISTS
            | Options::ENABLE_HEADING_ATTRIBUTES
            | Options::ENABLE_MATH
            | Options::ENABLE_GFM
            | Options::ENABLE_DEFINITION_LIST
            | Options::ENABLE_SUPERSCRIPT
            | Options::ENABLE_SUBSCRIPT
            | Options::ENABLE_WIKILINKS;
        let mut out = String::new();
        html::push_html(&mut out, Parser::new_ext(md, options));
        out
    }

    /// How a renderer writes text it did not interpret.
    fn as_text(s: &str) -> String {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    }

    #[test]
    fn hostile_text_in_any_field_comes_back_as_text_and_never_as_markup_or_a_link() {
        let md = render(&report());
        let page = as_a_viewer_renders_it(&md);
        for h in HOSTILE {
            assert!(
                page.contains(&as_text(h)),
                "{h:?} was interpreted, not shown as text:\n{page}"
            );
        }
        for markup in [
            "<img",
            "<script",
            "<svg",
            "href=",
            "src=\"",
            "<em>",
            "<del>",
            "<code>",
            "<sup",
            "<sub",
            "<h2>heading",
            "class=\"math",
            "<!--",
            "<?p",
        ] {
            assert!(!page.contains(markup), "{markup} in\n{page}");
        }
        assert_eq!(page.matches("<h1>").count(), 1, "{page}");
    }

    #[test]
    fn a_line_break_or_control_character_in_a_field_stays_inside_its_cell() {
        let mut r = report();
        r.access[0].client = "a\nb\r\n# c\u{7}\u{85}| d |\u{202e}e".into();
        let md = render(&r);
        let page = as_a_viewer_renders_it(&md);
        assert!(!page.contains("<h1>c"), "{page}");
        assert!(page.contains("<td>a b  # c  | d | e</td>"), "{page}");
    }
}
