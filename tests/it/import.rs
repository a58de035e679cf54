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
    // A second import on the same output while the first runs is refused.
    let second = import().output().unwrap();
    assert!(!second.status.success());
    assert!(
        output_text(&second).contains("another run is writing this output"),
        "{}",
        output_text(&second)
    );
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
    // And a database writer swapped two tokens of that journal entry: the resumed run
    // must not hand them out (each is confirmed against its record's value).
    let (batch, records): (i64, String) = {
        let row = sqlx::query("SELECT batch, records FROM import_journal WHERE first_record = $1")
            .bind(first)
            .fetch_one(&mut db)
            .await
            .unwrap();
        (row.try_get(0).unwrap(), row.try_get(1).unwrap())
    };
    let mut lines: Vec<&str> = records.split('\n').collect();
    lines.swap(0, 1);
    sqlx::query("UPDATE import_journal SET records = $1 WHERE batch = $2")
        .bind(lines.join("\n"))
        .bind(batch)
        .execute(&mut db)
        .await
        .unwrap();
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
        if i == first as usize || i == first as usize + 1 {
            assert_eq!(
                (token.as_str(), error.as_str()),
                ("", "integrity_error"),
                "{id}"
            );
        } else {
            assert!(error.is_empty() && !token.is_empty(), "{id}: {error}");
        }
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
        .filter(|(_, t, _)| !t.is_empty())
        .step_by(97)
        .map(|(id, t, _)| (t.clone(), format!("note number {id} for the file")))
        .collect();
    assert_reveals(&app, &pairs).await;
}

/// Pentest of issue 15 (finding 2): a state file and an output someone else planted (a link
/// to another file, or made-up records) must not make an import resume into them.
#[tokio::test(flavor = "multi_thread")]
async fn an_import_never_resumes_into_a_planted_output() {
    let app = spawn_app("importplant").await;
    let input = app.dir.join("v.csv");
    std::fs::write(&input, "value\nalpha\nbeta\ngamma\n").unwrap();
    let import = |out: &Path| {
        cli(&app.settings)
            .args(["import", "--as", "app", "--type", "text", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(out)
            .output()
            .unwrap()
    };
    let state = |out: &Path| {
        let mut name = out.file_name().unwrap().to_os_string();
        name.push(".import-state");
        out.with_file_name(name)
    };
    let planted = json!({
        "run": "00112233445566778899aabbccddeeff", "client": "app", "token_type": "text",
        "input": input, "input_format": "csv", "value_column": "value", "id_column": null,
    })
    .to_string();
    let private = |p: &Path, text: &str| {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(p)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    // A link to a file the operator may write: left as it was.
    let victim = app.dir.join("victim.bin");
    std::fs::write(&victim, b"\x00\x01binary without a newline").unwrap();
    let linked = app.dir.join("linked.csv");
    std::os::unix::fs::symlink(&victim, &linked).unwrap();
    private(&state(&linked), &planted);
    let o = import(&linked);
    assert!(!o.status.success(), "{}", output_text(&o));
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"\x00\x01binary without a newline"
    );
    // Made-up records under a made-up run: refused, not skipped over.
    let forged = app.dir.join("forged.csv");
    private(&forged, "id,token,error\n1,tok_fake,\n2,tok_fake2,\n");
    private(&state(&forged), &planted);
    let o = import(&forged);
    assert!(!o.status.success(), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("no journal of its run"),
        "{}",
        output_text(&o)
    );
    // A state file others may read or write is not trusted either.
    let loose = app.dir.join("loose.csv");
    private(&loose, "id,token,error\n");
    std::fs::write(state(&loose), &planted).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(state(&loose), std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = import(&loose);
    assert!(!o.status.success(), "{}", output_text(&o));
    assert_eq!(count(&app, "SELECT COUNT(*) FROM tokens").await, 0);
}
