//! The Vault-compatible Transform engine (issue 16): tokenization through roles over the
//! one tokenize, reveal and read paths, as a Vault Enterprise client calls it.

use serde_json::{Value, json};

use super::helpers::*;

async fn encode(c: &VaultClient, app: &TestApp, role: &str, body: Value) -> (u16, Value) {
    let (status, body, _) = c
        .call(
            app,
            "POST",
            &format!("/v1/transform/encode/{role}"),
            Some(body),
        )
        .await;
    (status, body)
}

#[tokio::test]
async fn encode_and_decode_go_through_the_one_tokenize_and_reveal_paths() {
    let app = spawn_vault("transform-round").await;
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    let pan = random_pan();
    // Without configuration, each token type is a role of its own name.
    let (status, body) = encode(
        &c,
        &app,
        "pan",
        json!({"value": pan, "metadata": "order=7,shop=a"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = body["data"]["encoded_value"].as_str().unwrap().to_owned();
    assert_ne!(token, pan);
    // `pan` is deterministic: the same value gets the same token.
    let (_, again) = encode(&c, &app, "pan", json!({"value": pan})).await;
    assert_eq!(again["data"]["encoded_value"], token);
    let (status, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transform/decode/pan",
            Some(json!({"value": token})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["decoded_value"], pan);
    // A role narrows to its type: the same token is not found through another role.
    let (status, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transform/decode/ssn",
            Some(json!({"value": token})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(!body.to_string().contains(&pan));
    let (_, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transform/validate/pan",
            Some(json!({"value": token})),
        )
        .await;
    assert_eq!(body["data"]["valid"], true, "{body}");
    let (_, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transform/validate/pan",
            Some(json!({"value": "tok_AAAAAAAAAAAAAAAAAAAAAAAA"})),
        )
        .await;
    assert_eq!(body["data"]["valid"], false, "{body}");
    let (status, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transform/metadata/pan",
            Some(json!({"value": token})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["metadata"], json!({"order": "7", "shop": "a"}));

    // Batches: references echoed; a value the type refuses fails alone, never echoed.
    let bad = "4111111111111112";
    let (status, body) = encode(
        &c,
        &app,
        "pan",
        json!({"batch_input": [
            {"value": random_pan(), "reference": "one"},
            {"value": bad, "reference": "two"},
        ]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let results = body["data"]["batch_results"].as_array().unwrap();
    assert!(results[0]["encoded_value"].is_string());
    assert_eq!(results[1]["reference"], "two");
    assert!(results[1]["error"].is_string());
    assert!(
        !body.to_string().contains(bad),
        "a refused value was echoed"
    );
    let tokens: Vec<Value> = vec![json!({"value": results[0]["encoded_value"], "reference": "x"})];
    let (status, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transform/decode/pan",
            Some(json!({"batch_input": tokens})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["batch_results"][0]["reference"], "x");

    // Permissions are the type's: the tokenizer may encode but reveals nothing.
    let mut t = VaultClient::of("tokenizer");
    t.login(&app).await;
    let (status, _) = encode(&t, &app, "pan", json!({"value": random_pan()})).await;
    assert_eq!(status, 200);
    let (status, body, _) = t
        .call(
            &app,
            "POST",
            "/v1/transform/decode/pan",
            Some(json!({"value": token})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(!body.to_string().contains(&pan));
    let reveals = events(&app, "detokenize").await;
    assert_eq!(
        reveals.iter().filter(|e| e.1 == "success").count(),
        2,
        "{reveals:?}"
    );
    assert!(reveals.iter().any(|e| e.1 == "denied"), "{reveals:?}");
}

#[tokio::test]
async fn configured_roles_and_transformations_are_readable_and_narrow_requests() {
    use tokenvault::tokenize::roles::{RoleSettings, TransformationSettings};
    let app = spawn_with("transform-roles", |s, _| {
        let t = &mut s.vault_api.transform;
        t.transformations.insert(
            "cards".into(),
            TransformationSettings {
                token_type: "card".into(),
                allowed_roles: vec!["payments".into()],
            },
        );
        t.roles.insert(
            "payments".into(),
            RoleSettings {
                transformations: vec!["cards".into()],
            },
        );
    })
    .await;
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    let (status, body, _) = c.call(&app, "LIST", "/v1/transform/role", None).await;
    assert_eq!(
        (status, body["data"]["keys"].clone()),
        (200, json!(["payments"])),
        "{body}"
    );
    let (_, body, _) = c
        .call(&app, "GET", "/v1/transform/role/payments", None)
        .await;
    assert_eq!(body["data"]["transformations"], json!(["cards"]));
    let (_, body, _) = c
        .call(
            &app,
            "GET",
            "/v1/transform/transformations/tokenization/cards",
            None,
        )
        .await;
    assert_eq!(body["data"]["token_type"], "card", "{body}");
    let (status, _, _) = c
        .call(&app, "GET", "/v1/transform/transformation?list=true", None)
        .await;
    assert_eq!(status, 200);
    let (status, body) = encode(&c, &app, "payments", json!({"value": random_pan()})).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["data"]["encoded_value"]
            .as_str()
            .unwrap()
            .starts_with("tok_"),
        "{body}"
    );
    // Configured roles replace the per-type defaults; changes over the API are refused.
    let (status, _) = encode(&c, &app, "pan", json!({"value": random_pan()})).await;
    assert_eq!(status, 400);
    let (status, _, _) = c
        .call(
            &app,
            "POST",
            "/v1/transform/role/payments",
            Some(json!({"transformations": ["x"]})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = encode(
        &c,
        &app,
        "payments",
        json!({"value": random_pan(), "tweak": "AAAAAAAAAA=="}),
    )
    .await;
    assert_eq!(status, 400, "FPE tweaks are refused");
    let (status, _, _) = c
        .call(
            &app,
            "POST",
            "/v1/transform/tokenized/payments",
            Some(json!({"value": random_pan()})),
        )
        .await;
    assert_eq!(status, 400);
    let (_, body, _) = c.call(&app, "GET", "/v1/sys/mounts", None).await;
    assert_eq!(body["data"]["transform/"]["type"], "transform");
}

/// A role with a card and an SSN transformation, for the batch tests below.
fn mixed_role(s: &mut tokenvault::config::Settings) {
    use tokenvault::tokenize::roles::{RoleSettings, TransformationSettings};
    let t = &mut s.vault_api.transform;
    for (name, token_type) in [("p", "card"), ("s", "ssn")] {
        t.transformations.insert(
            name.into(),
            TransformationSettings {
                token_type: token_type.into(),
                allowed_roles: Vec::new(),
            },
        );
    }
    t.roles.insert(
        "mixed".into(),
        RoleSettings {
            transformations: vec!["p".into(), "s".into()],
        },
    );
}

async fn encoded(c: &VaultClient, app: &TestApp, transformation: &str, value: &str) -> String {
    let body = json!({"value": value, "transformation": transformation});
    let (status, body) = encode(c, app, "mixed", body).await;
    assert_eq!(status, 200, "{body}");
    body["data"]["encoded_value"].as_str().unwrap().to_owned()
}

/// Review of the Transform layer (finding 1): a decode batch whose items are of several
/// types is charged to the reveal budget as a whole, before anything is revealed.
#[tokio::test]
async fn a_decode_batch_over_several_types_is_charged_whole() {
    let app = spawn_with("transform-budget", |s, _| {
        mixed_role(s);
        s.clients.get_mut("app").unwrap().detokenize_per_hour = Some(3);
    })
    .await;
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    let mut items = Vec::new();
    for (t, v) in [
        ("p", random_pan()),
        ("p", random_pan()),
        ("s", "234-56-7891".into()),
        ("s", "345-67-8912".into()),
    ] {
        items.push(json!({"value": encoded(&c, &app, t, &v).await, "transformation": t}));
    }
    let (status, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transform/decode/mixed",
            Some(json!({"batch_input": items})),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    let reveals = events(&app, "detokenize").await;
    assert!(!reveals.iter().any(|e| e.1 == "success"), "{reveals:?}");
    let (status, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transform/decode/mixed",
            Some(json!({"batch_input": items[1..]})),
        )
        .await;
    assert_eq!(
        status, 200,
        "the budget is untouched by the refused batch: {body}"
    );
}

/// Review of the Transform layer (finding 2): a decode batch with a bad item answers 200
/// with per-item errors, so no revealed value travels in an error answer (which clients
/// and proxies log).
#[tokio::test]
async fn a_decode_batch_never_puts_values_in_an_error_answer() {
    let app = spawn_vault("transform-partial").await;
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    let pan = random_pan();
    let (_, body) = encode(&c, &app, "pan", json!({"value": pan})).await;
    let token = body["data"]["encoded_value"].clone();
    let batch =
        json!({"batch_input": [{"value": token}, {"value": "tok_AAAAAAAAAAAAAAAAAAAAAAAA"}]});
    let (status, body, _) = c
        .call(&app, "POST", "/v1/transform/decode/pan", Some(batch))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["batch_results"][0]["decoded_value"], pan);
    assert!(
        body["data"]["batch_results"][1]["error"].is_string(),
        "{body}"
    );
}

/// Review of the Transform layer (finding 3): an encode with an item of a type the caller
/// may not tokenize is refused before anything is stored.
#[tokio::test]
async fn an_encode_with_a_forbidden_item_stores_nothing() {
    let app = spawn_with("transform-forbidden", |s, _| {
        mixed_role(s);
        s.clients.get_mut("tokenizer").unwrap().permissions =
            vec![tokenvault::guard::Grant::parse("tokenize:card").unwrap()];
    })
    .await;
    let mut t = VaultClient::of("tokenizer");
    t.login(&app).await;
    let batch = json!({"batch_input": [
        {"value": random_pan(), "transformation": "p"},
        {"value": "234-56-7891", "transformation": "s"},
    ]});
    let (status, body) = encode(&t, &app, "mixed", batch).await;
    assert_eq!(status, 403, "{body}");
    let stored = events(&app, "tokenize").await;
    assert!(!stored.iter().any(|e| e.1 == "success"), "{stored:?}");
    let mut db = app.db().await;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

/// Review of the Transform layer (finding 4): a negative ttl is refused, not read as
/// "never expires".
#[tokio::test]
async fn a_negative_ttl_is_refused() {
    let app = spawn_vault("transform-ttl").await;
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    for ttl in [json!(-60), json!("-60")] {
        let (status, body) =
            encode(&c, &app, "pan", json!({"value": random_pan(), "ttl": ttl})).await;
        assert_eq!(status, 400, "ttl {ttl}: {body}");
    }
    let (status, body) = encode(&c, &app, "pan", json!({"value": random_pan(), "ttl": "1h"})).await;
    assert_eq!(status, 200, "{body}");
}

/// Review of the Transform layer (finding 5): a decode, validate or metadata request its
/// role refuses (unknown role, transformation or a tweak) is audited like any refusal.
#[tokio::test]
async fn refusals_by_the_role_are_audited() {
    let app = spawn_vault("transform-refusals").await;
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    let body = json!({"value": "tok_AAAAAAAAAAAAAAAAAAAAAAAA"});
    for path in [
        "/v1/transform/decode/nosuch",
        "/v1/transform/validate/nosuch",
        "/v1/transform/metadata/nosuch",
    ] {
        let (status, _, _) = c.call(&app, "POST", path, Some(body.clone())).await;
        assert_eq!(status, 400, "{path}");
    }
    let reveals = events(&app, "detokenize").await;
    assert_eq!(
        reveals,
        [(
            String::from("detokenize"),
            String::from("failure"),
            Some(String::from("invalid_request"))
        )]
    );
    let reads = events(&app, "read").await;
    assert_eq!(reads.len(), 2, "{reads:?}");
    assert!(reads.iter().all(|e| e.1 == "failure"), "{reads:?}");
}

/// `tokenized`: whether a value already has a token, through the one tokenize path's
/// lookup: nothing stored, `lookup:<type>` needed, deterministic types only, a miss
/// charged to the new-value budget like a tokenize of an unseen value, every answer
/// audited.
#[tokio::test]
async fn tokenized_says_whether_a_value_has_a_token_and_stores_nothing() {
    let app = spawn_with("transform-tokenized", |s, _| {
        s.limits.new_values_per_hour = 4;
        s.clients.get_mut("tokenizer").unwrap().permissions = ["tokenize:*", "lookup:*"]
            .iter()
            .map(|g| tokenvault::guard::Grant::parse(g).unwrap())
            .collect();
    })
    .await;
    let mut c = VaultClient::of("tokenizer");
    c.login(&app).await;
    let lookup = |body: Value| {
        let c = &c;
        let app = &app;
        async move {
            let (status, body, _) = c
                .call(app, "POST", "/v1/transform/tokenized/pan", Some(body))
                .await;
            (status, body)
        }
    };
    let (known, unknown) = (random_pan(), random_pan());

    let (status, body) = lookup(json!({"value": known})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["tokenized"], false);
    assert_eq!(count_tokens(&app).await, 0, "a lookup stores nothing");
    let (status, body) = encode(&c, &app, "pan", json!({"value": known})).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = lookup(json!({"value": known, "transformation": "pan"})).await;
    assert_eq!(body["data"]["tokenized"], true);
    let (status, body) = lookup(json!({"batch_input": [
        {"value": known, "reference": 1},
        {"value": unknown, "reference": 2},
        {"value": "4111 1111 1111 1112", "reference": 3},
    ]}))
    .await;
    assert_eq!(status, 200, "{body}");
    let results = body["data"]["batch_results"].as_array().unwrap();
    assert_eq!(results[0]["tokenized"], true);
    assert_eq!(results[1]["tokenized"], false);
    assert!(results[2]["error"].is_string(), "{body}");
    assert!(
        !body.to_string().contains(&unknown),
        "a value is never echoed"
    );
    assert_eq!(count_tokens(&app).await, 1);

    // Misses spend the budget of new values as new tokens do (3 of 4 so far: two lookups
    // that found nothing and one new token); hits give their unit back. Once it is spent,
    // every lookup is refused, as every tokenize is.
    let (status, body) = lookup(json!({"value": known})).await;
    assert_eq!(
        (status, &body["data"]["tokenized"]),
        (200, &json!(true)),
        "{body}"
    );
    let (status, body) = lookup(json!({"value": random_pan()})).await;
    assert_eq!(
        (status, &body["data"]["tokenized"]),
        (200, &json!(false)),
        "{body}"
    );
    let (status, body) = lookup(json!({"value": random_pan()})).await;
    assert_eq!(status, 429, "{body}");
    let (status, _) = lookup(json!({"value": known})).await;
    assert_eq!(status, 429);

    // A random type cannot be looked up, and a client without tokenize: may not ask.
    let (status, body, _) = c
        .call(
            &app,
            "POST",
            "/v1/transform/tokenized/card",
            Some(json!({"value": known})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let mut auditor = VaultClient::of("auditor");
    auditor.login(&app).await;
    let (status, _, _) = auditor
        .call(
            &app,
            "POST",
            "/v1/transform/tokenized/pan",
            Some(json!({"value": known})),
        )
        .await;
    assert_eq!(status, 403);

    let trail = events(&app, "token.lookup").await;
    let count = |outcome: &str, reason: &str| {
        trail
            .iter()
            .filter(|(_, o, r)| o == outcome && r.as_deref() == Some(reason))
            .count()
    };
    assert_eq!(count("success", "found"), 3, "{trail:?}");
    assert_eq!(count("success", "not_found"), 3, "{trail:?}");
    assert_eq!(count("denied", "forbidden"), 1, "{trail:?}");
}

async fn count_tokens(app: &TestApp) -> i64 {
    let mut db = app.db().await;
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM tokens")
        .fetch_one(&mut db)
        .await
        .unwrap()
}

/// Review of tokenized (finding 1): `import:<type>` lifts the budget of values a client
/// stores, not of the guesses it tests: lookups that find nothing are charged to every
/// client.
#[tokio::test]
async fn lookups_are_charged_even_to_a_client_that_may_import() {
    let app = spawn_with("transform-lookup-import", |s, _| {
        s.limits.new_values_per_hour = 2;
    })
    .await;
    let mut c = VaultClient::of("app");
    c.login(&app).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (status, _, _) = c
            .call(
                &app,
                "POST",
                "/v1/transform/tokenized/pan",
                Some(json!({"value": random_pan()})),
            )
            .await;
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 200, 429]);
}

/// Review of tokenized (finding 2): a lookup is a grant of its own (`lookup:<type>`, not
/// implied by `tokenize:`), and never answers in a namespace shared with other clients,
/// where it would tell one client what its peers hold.
#[tokio::test]
async fn lookups_need_their_own_grant_and_a_namespace_of_ones_own() {
    let app = spawn_with("transform-lookup-grant", |s, _| {
        s.clients.get_mut("app").unwrap().namespace = Some("shop".into());
        s.clients.get_mut("auditor").unwrap().namespace = Some("shop".into());
    })
    .await;
    let ask = |who: &'static str| {
        let app = &app;
        async move {
            let mut c = VaultClient::of(who);
            c.login(app).await;
            let (status, body, _) = c
                .call(
                    app,
                    "POST",
                    "/v1/transform/tokenized/pan",
                    Some(json!({"value": random_pan()})),
                )
                .await;
            (status, body)
        }
    };
    let (status, body) = ask("tokenizer").await;
    assert_eq!(status, 403, "tokenize: alone gives no lookups: {body}");
    let (status, body) = ask("app").await;
    assert_eq!(status, 403, "a shared namespace: {body}");
}
