//! `tokenvault import`: bulk tokenization through the one tokenize path, resumable after
//! `kill -9` without a record tokenized twice or lost.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::Row;

use crate::helpers::{TestApp, cli, random_pan, spawn_app};

fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The output's records: (id, token, error).
fn read_output(path: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("id,token,error"));
    lines
        .map(|l| {
            let mut f = l.splitn(3, ',');
            (
                f.next().unwrap().to_owned(),
                f.next().unwrap_or("").to_owned(),
                f.next().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    let mut db = app.db().await;
    sqlx::query(sql)
        .fetch_one(&mut db)
        .await
        .unwrap()
        .try_get::<i64, _>(0)
        .unwrap()
}

/// Every token of the output reveals its input value over the API.
async fn assert_reveals(app: &TestApp, pairs: &[(String, String)]) {
    for chunk in pairs.chunks(50) {
        let tokens: Vec<&str> = chunk.iter().map(|(t, _)| t.as_str()).collect();
        let (status, body) = app
            .post("app", "/v1/detokenize/batch", json!({ "tokens": tokens }))
            .await;
        assert_eq!(status, 200, "{body}");
        for ((_, value), item) in chunk.iter().zip(body["items"].as_array().unwrap()) {
            assert_eq!(item["value"].as_str(), Some(value.as_str()), "{item}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_tokenizes_every_record_once_like_the_api_and_audits_each() {
    let app = spawn_app("import").await;
    let input = app.dir.join("cards.csv");
    let mut f = std::fs::File::create(&input).unwrap();
    writeln!(f, "customer,card,note").unwrap();
    let mut cards = Vec::new();
    for i in 0..2_500 {
        let pan = random_pan();
        writeln!(f, "c{i},{pan},x").unwrap();
        cards.push((format!("c{i}"), pan));
    }
    // The same card again, a value that is no card, and a record without the column.
    writeln!(f, "again,{},x", cards[7].1).unwrap();
    writeln!(f, "bad,4111111111111112,x").unwrap();
    writeln!(f, "short").unwrap();
    drop(f);
    let out = app.dir.join("cards.tokens.csv");
    let o = cli(&app.settings)
        .args([
            "import",
            "--as",
            "app",
            "--type",
            "pan",
            "--id-column",
            "customer",
        ])
        .args(["--value-column", "card", "--batch", "300", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", output_text(&o));
    let text = output_text(&o);
    assert!(
        text.contains("2501 records tokenized as pan (2 failed)"),
        "{text}"
    );
    let rows = read_output(&out);
    assert_eq!(rows.len(), 2_503);
    for ((id, pan), (oid, token, error)) in cards.iter().zip(&rows) {
        assert_eq!(id, oid);
        assert!(error.is_empty(), "{oid}: {error}");
        assert!(
            token.ends_with(&pan[pan.len() - 4..]),
            "a last4 token: {token}"
        );
    }
    // Deterministic: the same card got the same token, and was not stored twice.
    assert_eq!(rows[2_500].1, rows[7].1);
    assert_eq!(
        rows[2_501],
        ("bad".into(), String::new(), "invalid_value".into())
    );
    assert_eq!(
        rows[2_502],
        ("short".into(), String::new(), "invalid_request".into())
    );
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM tokens WHERE token_type = 'pan'").await,
        2_500
    );
    // Nothing of the values in the output or in what the command printed.
    let written = std::fs::read_to_string(&out).unwrap();
    for (_, pan) in cards.iter().take(50) {
        assert!(!written.contains(pan.as_str()) && !text.contains(pan.as_str()));
    }
    let pairs: Vec<(String, String)> = rows
        .iter()
        .zip(&cards)
        .map(|((_, t, _), (_, pan))| (t.clone(), pan.clone()))
        .collect();
    assert_reveals(&app, &pairs).await;
    // One success event per token, the failures audited, the journal gone, and the
    // audit trail verifies.
    let audited = count(
        &app,
        "SELECT COUNT(*) FROM audit_events WHERE action = 'tokenize' AND outcome = 'success' \
         AND actor = 'app'",
    )
    .await;
    assert_eq!(audited, 2_501);
    let failed = count(
        &app,
        "SELECT COUNT(*) FROM audit_events WHERE action = 'tokenize' AND outcome = 'failure'",
    )
    .await;
    assert_eq!(failed, 2);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM import_journal").await, 0);
    assert!(!app.dir.join("cards.tokens.csv.import-state").exists());
    let verify = cli(&app.settings)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", output_text(&verify));
    // A finished output is not overwritten by another run.
    let again = cli(&app.settings)
        .args([
            "import",
            "--as",
            "app",
            "--type",
            "pan",
            "--value-column",
            "card",
            "--input",
        ])
        .arg(&input)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(output_text(&again).contains("belongs to no unfinished import"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_needs_a_client_that_may_tokenize_and_import_the_type() {
    let app = spawn_app("importperm").await;
    let input = app.dir.join("v.csv");
    std::fs::write(&input, "value\nhello\n").unwrap();
    // tokenizer may tokenize but holds no import grant; auditor neither.
    for client in ["tokenizer", "auditor", "nobody"] {
        let o = cli(&app.settings)
            .args(["import", "--as", client, "--type", "text", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(app.dir.join(format!("{client}.csv")))
            .output()
            .unwrap();
        assert!(!o.status.success(), "{client}");
        assert!(output_text(&o).contains("lacks"), "{}", output_text(&o));
    }
    assert_eq!(count(&app, "SELECT COUNT(*) FROM tokens").await, 0);
}

/// Kill -9 in the middle of an import of random tokens (a value imported twice would get
/// a second token, so a duplicate shows as an extra row), then as if the machine had lost
/// the output's unsynced tail too, then resume: every record exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn an_import_killed_mid_run_resumes_without_a_record_twice_or_lost() {
    let app = spawn_app("importkill").await;
    let input = app.dir.join("notes.jsonl");
    let n = 60_000;
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    for i in 0..n {
        writeln!(
            f,
            "{}",
            json!({"ref": i, "value": format!("note number {i} for the file")})
        )
        .unwrap();
    }
    drop(f);
    let out = app.dir.join("notes.out.csv");
    let import = || {
        let mut c = cli(&app.settings);
        c.args([
            "import",
            "--as",
            "app",
            "--type",
            "text",
            "--id-column",
            "ref",
        ])
        .args(["--batch", "500", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&out);
        c
    };
    let mut child = import()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once a good part is out but before the end.
    let started = Instant::now();
    loop {
        let len = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        if len > 200_000 || started.elapsed() > Duration::from_secs(120) {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the import ended before the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Power lost as well: the output falls back to the oldest record the journal still
    // holds (what was synced), with a torn line after it.
    let mut db = app.db().await;
    let first: Option<i64> = sqlx::query("SELECT MIN(first_record) FROM import_journal")
        .fetch_one(&mut db)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    let first = first.expect("the run left journal entries");
    let text = std::fs::read_to_string(&out).unwrap();
    let keep: String = text
        .split_inclusive('\n')
        .take(1 + first as usize)
        .collect();
    std::fs::write(&out, format!("{keep}17,tv_torn")).unwrap();
    let o = import().output().unwrap();
    assert!(o.status.success(), "{}", output_text(&o));
    // Some records were committed but missing from the output: written from the journal.
    let said = output_text(&o);
    let replayed: u64 = said
        .split(" more committed before the stop")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    assert!(replayed > 0, "{said}");
    let rows = read_output(&out);
    assert_eq!(rows.len(), n);
    for (i, (id, token, error)) in rows.iter().enumerate() {
        assert_eq!(id, &i.to_string());
        assert!(error.is_empty() && !token.is_empty(), "{id}: {error}");
    }
    // One stored row and one success event per record: nothing tokenized twice.
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM tokens WHERE token_type = 'text'"
        )
        .await,
        n as i64
    );
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM audit_events WHERE action = 'tokenize' AND outcome = 'success'"
        )
        .await,
        n as i64
    );
    let pairs: Vec<(String, String)> = rows
        .iter()
        .step_by(97)
        .map(|(id, t, _)| (t.clone(), format!("note number {id} for the file")))
        .collect();
    assert_reveals(&app, &pairs).await;
}
