//! `tokenvault import --vault-transform-export`: a Vault Enterprise user moves tokenized
//! data without re-tokenizing downstream databases. Each exported value is stored under
//! its Vault token, through the one tokenize path.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use crate::helpers::{VaultClient, cli, random_pan, spawn_app};

/// A token as Vault Transform writes them: base58-looking letters and digits.
fn vault_token() -> String {
    let mut b = [0u8; 24];
    tokenvault::crypto::random_bytes(&mut b);
    let alphabet = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    b.iter()
        .map(|x| alphabet[usize::from(*x) % alphabet.len()] as char)
        .chain("Vt".chars())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vault_transform_export_keeps_its_tokens() {
    let app = spawn_app("import-vault").await;
    let records: Vec<(String, String)> = (0..40).map(|_| (vault_token(), random_pan())).collect();
    let line = |token: &str, value: &str, expiry: Option<&str>| {
        let mut v = json!({"token": token, "plaintext": STANDARD.encode(value)});
        if let Some(e) = expiry {
            v["expiration_time"] = json!(e);
        }
        v.to_string()
    };
    let mut text = String::new();
    for (i, (token, pan)) in records.iter().enumerate() {
        let expiry = (i == 0).then_some("2030-01-01T00:00:00Z");
        text += &line(token, pan, expiry);
        text.push('\n');
    }
    let (expired, conflict, short) = (vault_token(), vault_token(), "abc123");
    text += &line(&expired, &random_pan(), Some("2020-01-01T00:00:00Z"));
    text.push('\n');
    // The same card under another token: `pan` is deterministic, one token per value.
    text += &line(&conflict, &records[3].1, None);
    text.push('\n');
    text += &line(short, &random_pan(), None);
    text.push('\n');
    let input = app.dir.join("export.jsonl");
    std::fs::write(&input, &text).unwrap();
    let out = app.dir.join("export.tokens.csv");
    let run = || {
        cli(&app.settings)
            .args([
                "import",
                "--as",
                "app",
                "--type",
                "pan",
                "--vault-transform-export",
            ])
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .output()
            .unwrap()
    };
    let o = run();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{said}");
    assert!(
        said.contains("40 records tokenized as pan (3 failed)"),
        "{said}"
    );
    let output = std::fs::read_to_string(&out).unwrap();
    for (token, _) in &records {
        assert!(output.contains(&format!("{token},{token},")), "{output}");
    }
    for refused in [&expired, &conflict] {
        let row = output
            .lines()
            .find(|l| l.starts_with(refused.as_str()))
            .unwrap();
        assert!(
            row.ends_with("invalid_value") || row.ends_with("invalid_request"),
            "{row}"
        );
    }

    // The Vault tokens reveal their values, natively and through Transform.
    let tokens: Vec<&str> = records.iter().map(|(t, _)| t.as_str()).collect();
    let (status, body) = app
        .post("app", "/v1/detokenize/batch", json!({ "tokens": tokens }))
        .await;
    assert_eq!(status, 200, "{body}");
    for ((_, pan), item) in records.iter().zip(body["items"].as_array().unwrap()) {
        assert_eq!(item["value"].as_str(), Some(pan.as_str()), "{item}");
    }
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    let (status, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transform/decode/pan",
            Some(json!({"value": records[1].0})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["decoded_value"], json!(records[1].1));
    // The expiry came along; the value tokenizes to its Vault token from now on.
    let (_, body) = app
        .get("app", &format!("/v1/tokens/{}", records[0].0))
        .await;
    assert!(
        body["expires_at"]
            .as_str()
            .unwrap()
            .starts_with("2030-01-01"),
        "{body}"
    );
    let (status, body) = app
        .post(
            "app",
            "/v1/tokenize",
            json!({"type": "pan", "value": records[2].1}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token"], json!(records[2].0));
    // A repeated run finds every token already holding its value: nothing twice.
    let _ = std::fs::remove_file(&out);
    let o = run();
    assert!(o.status.success());
    let mut db = app.db().await;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(n, 40, "40 imported; the tokenize above found its token");
}

/// Review of import (finding 5): a token another client imported in its own namespace is
/// not handed to a second client as if it were its own, nor under another type.
#[tokio::test(flavor = "multi_thread")]
async fn an_imported_token_is_never_answered_across_namespaces() {
    let app = crate::helpers::spawn_with("import-vault-ns", |s, _| {
        s.clients.get_mut("tokenizer").unwrap().permissions = ["tokenize:pan", "import:pan"]
            .iter()
            .map(|g| tokenvault::guard::Grant::parse(g).unwrap())
            .collect();
    })
    .await;
    let (token, pan) = (vault_token(), random_pan());
    let input = app.dir.join("one.jsonl");
    std::fs::write(
        &input,
        format!(
            "{}\n",
            json!({"token": token, "plaintext": STANDARD.encode(&pan)})
        ),
    )
    .unwrap();
    let import = |client: &str, out: &str| {
        let o = cli(&app.settings)
            .args([
                "import",
                "--as",
                client,
                "--type",
                "pan",
                "--vault-transform-export",
            ])
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(app.dir.join(out))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(app.dir.join(out)).unwrap()
    };
    let first = import("app", "a.csv");
    assert!(first.contains(&format!("{token},{token},")), "{first}");
    let second = import("tokenizer", "b.csv");
    assert!(
        second.lines().nth(1).unwrap().ends_with("invalid_value"),
        "another namespace's token: {second}"
    );
}

/// Review of import (finding 4): an imported token never holds a card number or the
/// value, and never takes the shape of the vault's own opaque tokens.
#[test]
fn imported_tokens_never_carry_card_numbers() {
    use tokenvault::tokenize::format::importable_token;
    for bad in [
        "4111111111111111A",
        "a4111-1111-1111-1111x",
        "tok_abcdefghijklmnopqr",
        // Any separator between digit groups, and card numbers inside longer runs.
        "ref4111_1111_1111_1111x",
        "ref4111.1111.1111.1111x",
        "ab41111111111111110000cd",
    ] {
        assert!(!importable_token(bad), "{bad}");
    }
    assert!(!tokenvault::tokenize::format::plausible_token(
        "tok_4111_1111_1111_1111"
    ));
    // Format-preserving tokens (digits that fail Luhn) stay tokens.
    assert!(tokenvault::tokenize::format::plausible_token(
        "4111111111111112"
    ));
    assert!(importable_token(
        "Q4tYgFXHxUYfSrVv2Nq6Kdb2jSt1fQpxkC4r85ivpfA"
    ));
}
