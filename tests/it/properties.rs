//! Issue 8 (part): properties over generated inputs, through the real key hierarchy.

use std::sync::{Arc, OnceLock};

use crate::helpers;
use proptest::prelude::*;
use tokenvault::config::{TokenFormat, Validator};
use tokenvault::guard::Principal;
use tokenvault::tokenize::{CryptoService, RawValue, TokenService, TokenizeInput, format, values};
use tokenvault::vault::{Vault, now_ms};

struct Env {
    rt: tokio::runtime::Runtime,
    tokens: Arc<TokenService>,
    crypto: Arc<CryptoService>,
}

/// One vault (real SoftHSM2 keys, fresh database) shared by the properties.
fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (tokens, crypto) = rt.block_on(async {
            let dir = helpers::test_dir("props");
            let s = helpers::api_settings(&dir, "props");
            let vault = Vault::open(s.clone()).await.unwrap();
            vault.keys.init("test", now_ms()).await.unwrap();
            let services = vault.services();
            (services.tokens, services.crypto)
        });
        Env { rt, tokens, crypto }
    })
}

fn luhn_complete(mut digits: Vec<u8>) -> String {
    for check in b'0'..=b'9' {
        digits.push(check);
        if format::luhn_valid(&digits) {
            break;
        }
        digits.pop();
    }
    String::from_utf8(digits).unwrap()
}

/// Valid card numbers of 12–19 digits.
fn pan() -> impl Strategy<Value = String> {
    (11usize..=18)
        .prop_flat_map(|n| proptest::collection::vec(0u8..10, n))
        .prop_map(|d| {
            let mut digits: Vec<u8> = d.into_iter().map(|x| b'0' + x).collect();
            digits[0] = b'4';
            luhn_complete(digits)
        })
}

fn ssn() -> impl Strategy<Value = String> {
    (1u32..900, 1u32..100, 1u32..10000)
        .prop_filter("not 666", |(a, _, _)| *a != 666)
        .prop_map(|(a, g, s)| format!("{a:03}-{g:02}-{s:04}"))
}

fn email() -> impl Strategy<Value = String> {
    (
        "[a-z][a-z0-9._]{0,20}",
        "[a-z][a-z0-9-]{0,15}",
        "(com|org|example|de)",
    )
        .prop_map(|(l, d, t)| format!("{l}@{d}.{t}"))
}

fn round_trip(ty: &str, value: &str, format: Option<TokenFormat>) -> Result<(), TestCaseError> {
    let e = env();
    let who = Principal::system("proptest");
    e.rt.block_on(async {
        let input = TokenizeInput {
            token_type: ty.to_owned(),
            value: RawValue(zeroize::Zeroizing::new(value.to_owned())),
            format,
            metadata: None,
            ttl_seconds: None,
            given_token: None,
        };
        let t = e
            .tokens
            .tokenize(&who, input, now_ms())
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let d = e
            .tokens
            .detokenize(&who, &t.token, None, now_ms())
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let normalized = values::validate(
            match ty {
                "pan" | "card" => Validator::Pan,
                "ssn" => Validator::Ssn,
                "email" => Validator::Email,
                _ => Validator::None,
            },
            value,
            4096,
        )
        .unwrap();
        prop_assert_eq!(d.value.as_str(), normalized.as_str());
        if t.token.bytes().all(|b| b.is_ascii_digit()) {
            prop_assert!(
                !format::luhn_valid(t.token.as_bytes()),
                "a digit token passes Luhn"
            );
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn every_type_round_trips(p in pan(), s in ssn(), m in email(), t in "\\\\PC{1,64}") {
        round_trip("pan", &p, None)?;
        round_trip("card", &p, Some(TokenFormat::First6Last4))?;
        round_trip("card", &p, Some(TokenFormat::Opaque))?;
        round_trip("ssn", &s, Some(TokenFormat::Last4))?;
        round_trip("email", &m, None)?;
        round_trip("text", &t, None)?;
    }

    #[test]
    fn decrypt_inverts_encrypt_only_with_the_same_context_and_rewrap_keeps_the_plaintext(
        b in proptest::collection::vec(any::<u8>(), 0..512),
        ctx in proptest::collection::vec(any::<u8>(), 0..32),
        other in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        prop_assume!(ctx != other);
        let e = env();
        let who = Principal::system("proptest");
        e.rt.block_on(async {
            let ct = e.crypto.encrypt(&who, "pii", &b, &ctx, now_ms()).await.unwrap();
            let plain = e.crypto.decrypt(&who, &ct, &ctx, now_ms()).await.unwrap();
            prop_assert_eq!(plain.as_slice(), b.as_slice());
            prop_assert!(e.crypto.decrypt(&who, &ct, &other, now_ms()).await.is_err());
            let rewrapped = e.crypto.rewrap(&who, &ct, &ctx, now_ms()).await.unwrap();
            let again = e.crypto.decrypt(&who, &rewrapped, &ctx, now_ms()).await.unwrap();
            prop_assert_eq!(again.as_slice(), b.as_slice());
            Ok(())
        })?;
    }

    #[test]
    fn format_preserving_tokens_never_pass_luhn(p in pan()) {
        for f in [TokenFormat::Last4, TokenFormat::First6Last4] {
            let t = format::generate(f, &p);
            prop_assert_eq!(t.len(), p.len());
            prop_assert!(!format::luhn_valid(t.as_bytes()));
            prop_assert_eq!(&t[t.len() - 4..], &p[p.len() - 4..]);
        }
    }

    // Errors are `ValueError(&'static str)`: by type they cannot quote the input, so the
    // property checked here is that validation and masking never panic on any text.
    #[test]
    fn validators_and_masks_never_panic(s in "\\\\PC{0,40}") {
        for v in [Validator::Pan, Validator::Ssn, Validator::Email, Validator::None] {
            if let Ok(value) = values::validate(v, &s, 4096) {
                let masked = values::mask(v, &value);
                prop_assert!(!masked.is_empty());
            }
        }
        prop_assert!(!format::plausible_token(&s) || s.len() <= format::MAX_TOKEN_LEN);
    }
}
