//! Review L12: the assessor's report shows hostile certificate identities as text, in
//! Markdown as a viewer renders it and in HTML.

use serde_json::json;

use crate::helpers::{self, cli};

/// What a certificate from the client CA can carry in its CN.
const IDENTITIES: [&str; 3] = [
    "<img src=x onerror=alert(1)>",
    "[x](javascript:alert(1))",
    r"back\slash `tick` *em* <script>alert(1)</script> a|b",
];

#[tokio::test(flavor = "multi_thread")]
async fn hostile_certificate_identities_are_shown_as_text_in_the_markdown_and_html_reports() {
    let app = helpers::spawn_app("hostile-ids").await;
    for name in IDENTITIES {
        let cert = helpers::pki().ca.client(name).unwrap();
        let status = helpers::http_client(Some(&cert))
            .post(app.url("/v1/tokenize"))
            .json(&json!({"type": "card", "value": "4111111111111111"}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 403, "{name} has no client entry");
    }

    let report = |format: &str| {
        let out = app.dir.join(format!("report.{format}"));
        let o = cli(&app.settings)
            .args(["audit", "report", "--format", format, "--out"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(out).unwrap()
    };

    // Markdown, rendered as GitHub-flavoured CommonMark with raw HTML passed through.
    let md = report("md");
    let mut page = String::new();
    let options = pulldown_cmark::Options::ENABLE_TABLES
        | pulldown_cmark::Options::ENABLE_STRIKETHROUGH
        | pulldown_cmark::Options::ENABLE_GFM;
    pulldown_cmark::html::push_html(&mut page, pulldown_cmark::Parser::new_ext(&md, options));
    let shown = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    for name in IDENTITIES {
        assert!(
            page.contains(&format!("<td>{}</td>", shown(name))),
            "{name} is not one cell of text:\n{md}\n{page}"
        );
    }
    for markup in ["<img", "<script", "href=", "<code>", "<em>"] {
        assert!(!page.contains(markup), "{markup} in\n{page}");
    }

    // HTML: every identity escaped, in a cell of its own.
    let html = report("html");
    for name in IDENTITIES {
        let escaped = shown(name).replace('"', "&quot;");
        assert!(html.contains(&format!("<td>{escaped}</td>")), "{name}");
    }
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains("<img") && !html.contains("<script"));
}
