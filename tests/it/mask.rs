//! Issue 18: `tokenvault mask` makes a masked copy of production-shaped data. A generated
//! two-table data set of 10^5 rows (customers in a CSV file, payments in a database
//! table) is masked in two runs with one key: joins on the masked columns still hold,
//! every masked value passes its format checks and is never real, unmapped columns are
//! untouched, and no input value is anywhere in what the runs wrote (searched byte-wise).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use tokenvault::nonprod::TestData;
use tokenvault::tokenize::Validator;

use crate::helpers::{self, cli};

const CUSTOMERS: usize = 20_000;
const PAYMENTS: usize = 80_000;

/// A word no shipped list holds (so a needle never matches a synthetic name).
fn made_up_word(rng: &mut impl FnMut() -> u32) -> String {
    const SYL: [&str; 12] = [
        "zor", "vak", "quel", "lix", "brum", "tesh", "ond", "yav", "kriv", "ul", "phen", "daz",
    ];
    let mut w: String = (0..3).map(|_| SYL[rng() as usize % SYL.len()]).collect();
    w[..1].make_ascii_uppercase();
    w
}

struct Customer {
    name: String,
    email: String,
    ssn: String,
    address: String,
    card: String,
}

fn dataset() -> Vec<Customer> {
    let mut seed = 0x9e37_79b9u32;
    let mut rng = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    (0..CUSTOMERS)
        .map(|i| {
            let (first, last) = (made_up_word(&mut rng), made_up_word(&mut rng));
            Customer {
                email: format!(
                    "{}.{}{i}@corp-mail.io",
                    first.to_lowercase(),
                    last.to_lowercase()
                ),
                name: format!("{first} {last}"),
                // Areas 100–665: issued ranges, never the masked ones.
                ssn: format!(
                    "{:03}-{:02}-{:04}",
                    100 + rng() % 566,
                    10 + rng() % 90,
                    1000 + rng() % 9000
                ),
                address: format!(
                    "{} {} Blvd, Unit {}",
                    1 + rng() % 9000,
                    made_up_word(&mut rng),
                    i
                ),
                card: helpers::random_pan(),
            }
        })
        .collect()
}

fn spaced(card: &str) -> String {
    card.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(" ")
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// Writes the payments table into a database of the test's backend; returns its URL.
async fn payments_table(dir: &Path, tag: &str, people: &[Customer]) -> String {
    let url = match helpers::postgres() {
        Some(admin) => helpers::fresh_postgres_database(&admin, &format!("{tag}-source")),
        None => format!("sqlite://{}?mode=rwc", dir.join("payments.db").display()),
    };
    sqlx::any::install_default_drivers();
    let mut db = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE payments (payment_id BIGINT PRIMARY KEY, customer_email TEXT, \
         card_number TEXT, amount_cents BIGINT, memo TEXT)",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let mut sql = String::new();
    for chunk in (0..PAYMENTS).collect::<Vec<_>>().chunks(2000) {
        sql.clear();
        sql.push_str("INSERT INTO payments VALUES ");
        for (k, &p) in chunk.iter().enumerate() {
            let c = &people[(p * 7919) % CUSTOMERS];
            // A quarter of the rows write the card with spaces; some e-mails in capitals.
            let card = if p.is_multiple_of(4) {
                spaced(&c.card)
            } else {
                c.card.clone()
            };
            let email = if p.is_multiple_of(5) {
                c.email.to_uppercase()
            } else {
                c.email.clone()
            };
            let memo = if p.is_multiple_of(10) {
                "NULL".to_owned()
            } else {
                format!("'order {p}'")
            };
            if k > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "({p}, '{email}', '{card}', {}, {memo})",
                p * 3 + 1
            ));
        }
        sqlx::query(&sql).execute(&mut db).await.unwrap();
    }
    url
}

fn mask(settings: &tokenvault::config::Settings, args: &[&str]) -> String {
    let o = cli(settings).arg("mask").args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn a_masked_copy_of_two_tables_keeps_joins_and_formats_and_holds_no_input_value() {
    let app = helpers::spawn_app("mask").await;
    let dir = app.dir.clone();
    let people = dataset();
    let customers = dir.join("customers.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&customers).unwrap());
    writeln!(f, "customer_id,name,email,ssn,address,card_number,segment").unwrap();
    for (i, c) in people.iter().enumerate() {
        writeln!(
            f,
            "{i},{},{},{},\"{}\",{},seg-{}",
            c.name,
            c.email,
            c.ssn,
            c.address,
            c.card,
            i % 7
        )
        .unwrap();
    }
    drop(f);
    let url = payments_table(&dir, &app.settings.hsm.label_prefix, &people).await;

    let out_customers = dir.join("customers.masked.csv");
    let out_payments = dir.join("payments.masked.jsonl");
    let mut logs = mask(
        &app.settings,
        &[
            "--columns",
            "name=name,email=email,ssn=ssn,address=address,card_number=pan",
            "--input",
            customers.to_str().unwrap(),
            "--output",
            out_customers.to_str().unwrap(),
            "--quiet",
        ],
    );
    logs += &mask(
        &app.settings,
        &[
            "--columns",
            "customer_email=email,card_number=pan",
            "--from-url",
            &url,
            "--table",
            "payments",
            "--order-by",
            "payment_id",
            "--output",
            out_payments.to_str().unwrap(),
            "--quiet",
        ],
    );
    assert!(logs.contains(&format!("masked {CUSTOMERS} rows")), "{logs}");
    assert!(logs.contains(&format!("masked {PAYMENTS} rows")), "{logs}");

    // The masked customers: formats, and unmapped columns untouched.
    let test_data = TestData::default();
    let valid = |v: Validator, s: &str| test_data.validate_value(v, s, 256).is_ok();
    let mut reader = csv::Reader::from_path(&out_customers).unwrap();
    let mut by_email = HashMap::new();
    let mut by_card: HashMap<String, Vec<usize>> = HashMap::new();
    let mut n = 0;
    for (i, row) in reader.records().enumerate() {
        let row = row.unwrap();
        assert_eq!(&row[0], i.to_string());
        assert_eq!(&row[6], format!("seg-{}", i % 7));
        let (name, email, ssn, address, card) = (&row[1], &row[2], &row[3], &row[4], &row[5]);
        assert_eq!(name.split(' ').count(), 2, "{name}");
        assert!(valid(Validator::Email, email), "{email}");
        assert!(valid(Validator::Ssn, ssn) && ssn.len() == 11, "{ssn}");
        assert!(address.split(' ').count() >= 3 && address.as_bytes()[0].is_ascii_digit());
        assert!(valid(Validator::Pan, card) && card.len() == 16, "{card}");
        assert!(
            by_email.insert(email.to_owned(), i).is_none(),
            "two customers, one e-mail"
        );
        by_card.entry(card.to_owned()).or_default().push(i);
        n += 1;
    }
    assert_eq!(n, CUSTOMERS);

    // The masked payments join their customers as the originals did.
    let text = std::fs::read_to_string(&out_payments).unwrap();
    let mut extra_card_matches = 0;
    let mut rows = 0;
    for line in text.lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let p: usize = row["payment_id"].as_str().unwrap().parse().unwrap();
        let owner = (p * 7919) % CUSTOMERS;
        assert_eq!(
            row["amount_cents"].as_str(),
            Some((p * 3 + 1).to_string().as_str())
        );
        match p % 10 {
            0 => assert!(row["memo"].is_null()),
            _ => assert_eq!(row["memo"].as_str(), Some(format!("order {p}").as_str())),
        }
        let email = row["customer_email"].as_str().unwrap();
        assert_eq!(
            by_email.get(email),
            Some(&owner),
            "payment {p}: the e-mail join broke"
        );
        let card = row["card_number"].as_str().unwrap();
        assert_eq!(
            card.contains(' '),
            p.is_multiple_of(4),
            "the separators are kept: {card}"
        );
        let owners = by_card.get(&digits(card)).expect("the card join broke");
        assert!(owners.contains(&owner), "payment {p}: the card join broke");
        extra_card_matches += owners.len() - 1;
        rows += 1;
    }
    assert_eq!(rows, PAYMENTS);
    // Test cards live in a smaller space than real ones: a rare collision may join two
    // customers (docs/non-production.md), never lose a join.
    assert!(
        extra_card_matches <= PAYMENTS / 1000,
        "{extra_card_matches}"
    );

    // No input value anywhere the runs wrote: the outputs, what they printed, and the
    // directory beside the outputs (no state file left behind). (An SSN's nine digits
    // without dashes are not searched: they turn up by chance inside random card numbers.)
    let mut needles: Vec<String> = Vec::new();
    for c in &people {
        needles.extend([
            c.name.clone(),
            c.email.clone(),
            c.email.to_uppercase(),
            c.ssn.clone(),
        ]);
        needles.extend([c.address.clone(), c.card.clone(), spaced(&c.card)]);
    }
    let search = aho_corasick::AhoCorasick::new(&needles).unwrap();
    for path in [&out_customers, &out_payments] {
        let bytes = std::fs::read(path).unwrap();
        if let Some(m) = search.find(&bytes) {
            panic!(
                "input value {} in {}",
                m.pattern().as_usize(),
                path.display()
            );
        }
    }
    assert!(search.find(logs.as_bytes()).is_none());
    let left: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("mask-state"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        helpers::count_events(&app.settings, "data.mask", "success").await,
        2
    );

    // The same key masks alike in another run; another key does not.
    let again = dir.join("customers.again.csv");
    let other = dir.join("customers.other.csv");
    let columns = "name=name,email=email,ssn=ssn,address=address,card_number=pan";
    let input = customers.to_str().unwrap();
    mask(
        &app.settings,
        &[
            "--columns",
            columns,
            "--input",
            input,
            "--output",
            again.to_str().unwrap(),
            "--quiet",
        ],
    );
    mask(
        &app.settings,
        &[
            "--columns",
            columns,
            "--input",
            input,
            "--output",
            other.to_str().unwrap(),
            "--quiet",
            "--key",
            "other",
        ],
    );
    let first = std::fs::read(&out_customers).unwrap();
    assert_eq!(std::fs::read(&again).unwrap(), first);
    assert_ne!(std::fs::read(&other).unwrap(), first);
}

/// Killed with `kill -9` mid-run, a mask run resumes where its last checkpoint stood and
/// writes the same copy an uninterrupted run writes.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_mask_run_resumes_to_the_same_copy() {
    let app = helpers::spawn_app("mask-resume").await;
    let input = app.dir.join("people.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    let people = dataset();
    for i in 0..60_000 {
        let c = &people[i % CUSTOMERS];
        let line = serde_json::json!({"id": i, "card": c.card, "email": c.email, "tier": "gold"});
        writeln!(f, "{line}").unwrap();
    }
    drop(f);
    let input = input.to_str().unwrap().to_owned();
    let whole = app.dir.join("whole.jsonl");
    let columns = "card=pan,email=email";
    mask(
        &app.settings,
        &[
            "--columns",
            columns,
            "--input",
            &input,
            "--output",
            whole.to_str().unwrap(),
            "--quiet",
        ],
    );

    let killed = app.dir.join("killed.jsonl");
    let state = app.dir.join("killed.jsonl.mask-state");
    let mut child = cli(&app.settings)
        .args([
            "mask",
            "--columns",
            columns,
            "--input",
            &input,
            "--quiet",
            "--sync-every-ms",
            "1",
        ])
        .arg("--output")
        .arg(&killed)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Until a checkpoint past the first 512 KiB of input is recorded, then kill -9.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let read_so_far = || {
        let text = std::fs::read_to_string(&state).unwrap_or_default();
        text.lines()
            .skip(1)
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|c| c["input"]["bytes"].as_u64())
            .last()
            .unwrap_or(0)
    };
    loop {
        if read_so_far() > 512 * 1024 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint recorded"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(state.exists());
    // From the review of the mask change: the killed run is on record, naming its input
    // and output, though it never finished.
    let reasons = |action: &'static str| {
        let settings = app.settings.clone();
        async move {
            let mut db = helpers::connect(&settings).await;
            sqlx::query_scalar::<_, String>(
                "SELECT reason FROM audit_events WHERE action = $1 ORDER BY seq",
            )
            .bind(action)
            .fetch_all(&mut db)
            .await
            .unwrap()
        }
    };
    let killed_name = killed.display().to_string();
    let started = reasons("data.mask.start").await;
    assert!(
        started
            .iter()
            .any(|r| r.contains(&killed_name) && r.contains(&input)),
        "{started:?}"
    );
    assert!(
        !reasons("data.mask")
            .await
            .iter()
            .any(|r| r.contains(&killed_name)),
        "the killed run was recorded as finished"
    );
    // Another argument is refused; the same ones resume.
    let o = cli(&app.settings)
        .args([
            "mask",
            "--columns",
            "card=pan",
            "--input",
            &input,
            "--quiet",
        ])
        .arg("--output")
        .arg(&killed)
        .output()
        .unwrap();
    assert!(!o.status.success());
    // From the review of the mask change: an input regenerated at the same path (same
    // length, other rows) is refused, not resumed mid-way into a copy of two data sets.
    // The second review: also one row changed half-way to where the run stood (neither
    // in its first nor in its last 64 KiB).
    let original = std::fs::read(&input).unwrap();
    let text = String::from_utf8(original.clone()).unwrap();
    let half = usize::try_from(read_so_far() / 2).unwrap();
    let row = half + text[half..].find("\"gold\"").unwrap();
    let one_row = format!("{}\"gild\"{}", &text[..row], &text[row + 6..]);
    for regenerated in [text.replace("\"gold\"", "\"gild\""), one_row] {
        assert_eq!(regenerated.len(), original.len());
        std::fs::write(&input, regenerated).unwrap();
        let o = cli(&app.settings)
            .args(["mask", "--columns", columns, "--input", &input, "--quiet"])
            .arg("--output")
            .arg(&killed)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "a changed input was resumed: {said}");
        assert!(said.contains("changed"), "{said}");
    }
    // The same rows again resume.
    std::fs::write(&input, &original).unwrap();
    mask(
        &app.settings,
        &[
            "--columns",
            columns,
            "--input",
            &input,
            "--output",
            killed.to_str().unwrap(),
            "--quiet",
        ],
    );
    assert_eq!(
        std::fs::read(&killed).unwrap(),
        std::fs::read(&whole).unwrap()
    );
    assert!(!state.exists());
    let finished = reasons("data.mask").await;
    assert!(
        finished.iter().any(|r| r.contains(&killed_name)),
        "{finished:?}"
    );
}

/// From the review of the mask change: input the run cannot mask whole is refused, never
/// copied with a real value left in an unmasked place.
#[tokio::test(flavor = "multi_thread")]
async fn mask_refuses_input_it_cannot_mask_whole() {
    let app = helpers::spawn_app("mask-refuse").await;
    let ssn = "078-05-1120";
    let card = helpers::random_pan();
    let cases: [(&str, String, &str); 6] = [
        // An unquoted comma in a name shifts the SSN into the unmapped `notes` column.
        (
            "ragged.csv",
            format!("name,ssn,notes\nRoe, Jane,{ssn},vip\n"),
            "name=name,ssn=ssn",
        ),
        // Two columns of one name: only the first would be masked.
        ("twice.csv", format!("ssn,ssn\n{ssn},{ssn}\n"), "ssn=ssn"),
        // A row without the mapped key, and a row whose mapped value is nested.
        (
            "missing.jsonl",
            format!("{{\"card\":\"{card}\"}}\n{{\"card_number\":\"{card}\"}}\n"),
            "card=pan",
        ),
        (
            "nested.jsonl",
            format!("{{\"ssn\":[\"{ssn}\"]}}\n"),
            "ssn=ssn",
        ),
        (
            "object.jsonl",
            format!("{{\"card\":{{\"pan\":\"{card}\"}}}}\n"),
            "card=pan",
        ),
        // The second review: a number with a fraction or an exponent has lost what the
        // value was (78051120.0 is not the SSN 078-05-1120 as written).
        (
            "float.jsonl",
            "{\"ssn\":78051120.0}\n".to_owned(),
            "ssn=ssn",
        ),
    ];
    for (name, text, columns) in cases {
        let input = app.dir.join(name);
        std::fs::write(&input, &text).unwrap();
        let out = app.dir.join(format!(
            "{name}.out{}",
            if name.ends_with(".jsonl") {
                ".jsonl"
            } else {
                ""
            }
        ));
        let o = cli(&app.settings)
            .args(["mask", "--columns", columns, "--quiet", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .output()
            .unwrap();
        let written = std::fs::read_to_string(&out).unwrap_or_default();
        let said = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "{name}: masked and wrote {written}");
        for value in [ssn, card.as_str()] {
            assert!(
                !written.contains(value) && !said.contains(value),
                "{name}: {written} {said}"
            );
        }
    }

    // A table whose column name would smuggle SQL into the copy's query.
    let url = format!("sqlite://{}?mode=rwc", app.dir.join("hostile.db").display());
    sqlx::any::install_default_drivers();
    let mut db = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE t (\"notes\"\" AS TEXT), CAST(\"\"card_number\" TEXT, card_number TEXT)",
    )
    .execute(&mut db)
    .await
    .unwrap();
    sqlx::query("INSERT INTO t VALUES ('x', $1)")
        .bind(&card)
        .execute(&mut db)
        .await
        .unwrap();
    let out = app.dir.join("hostile.out.csv");
    let o = cli(&app.settings)
        .args([
            "mask",
            "--columns",
            "card_number=pan",
            "--quiet",
            "--from-url",
            &url,
        ])
        .args(["--table", "t", "--order-by", "card_number", "--output"])
        .arg(&out)
        .output()
        .unwrap();
    let written = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(!o.status.success(), "masked and wrote {written}");
    assert!(!written.contains(&card), "{written}");
}

/// The second review: an input path that names a pipe (`/dev/stdin`, `<(zcat dump.gz)`)
/// is read like standard input, not seeked for a resume digest.
#[tokio::test(flavor = "multi_thread")]
async fn mask_reads_an_input_path_that_is_a_pipe() {
    let app = helpers::spawn_app("mask-pipe").await;
    let out = app.dir.join("piped.csv");
    let mut child = cli(&app.settings)
        .args([
            "mask",
            "--columns",
            "card=pan",
            "--quiet",
            "--input",
            "/dev/stdin",
        ])
        .arg("--output")
        .arg(&out)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "card,tier").unwrap();
    for _ in 0..500 {
        writeln!(stdin, "{},gold", helpers::random_pan()).unwrap();
    }
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 501);
}
