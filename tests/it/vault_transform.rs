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
