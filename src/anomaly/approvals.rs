//! Step-up approvals: the scope officers grant to a held reveal request, and whether an
//! approval a client presents (`Tokenvault-Approval: su_…`) holds for its retry.
//!
//! Officers decide through the signed request flow (`tokenvault approvals`, carried out
//! by [`crate::officers::execute`]); the client's retry is checked here and used up in the
//! same transaction as its audit event ([`crate::guard::Guard::screen`]).

use serde::{Deserialize, Serialize};

use crate::store::StepUpRow;

/// The longest window an approval can be given: an approval is for a retry, not a
/// standing grant.
pub const MAX_VALID_FOR_SECS: u32 = 24 * 3600;

/// Most tokens a count-scoped approval can cover.
pub const MAX_COUNT: u32 = 100_000;

/// What officers approve: the tokens of the held request (or some of them), or a number
/// of any tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum RevealScope {
    /// Exactly these tokens (each at most once per retry).
    Tokens(Vec<String>),
    /// Up to this many tokens, whichever.
    Count(u32),
}

impl RevealScope {
    /// How many tokens the retry may reveal at most.
    pub fn count(&self) -> u32 {
        match self {
            RevealScope::Tokens(t) => u32::try_from(t.len()).unwrap_or(u32::MAX),
            RevealScope::Count(n) => *n,
        }
    }

    /// The scope in words, for the officers' summary and the audit trail.
    pub fn describe(&self) -> String {
        match self {
            RevealScope::Tokens(t) => format!("{} named tokens of the held request", t.len()),
            RevealScope::Count(n) => format!("up to {n} tokens of any kind"),
        }
    }

    /// Refuses a scope that does not fit the held request: tokens it did not ask for, no
    /// tokens, or more than [`MAX_COUNT`].
    pub fn check_against(&self, held: &StepUpRow) -> Result<(), String> {
        match self {
            RevealScope::Tokens(t) => {
                let asked: Vec<String> = serde_json::from_str(&held.tokens).unwrap_or_default();
                if t.is_empty() {
                    return Err("an approval names at least one token".into());
                }
                if t.iter().any(|tok| !asked.contains(tok)) {
                    return Err(format!(
                        "the approval names a token held request {} did not ask for",
                        held.id
                    ));
                }
                Ok(())
            }
            RevealScope::Count(n) if *n == 0 || *n > MAX_COUNT => Err(format!(
                "an approval by count covers 1 to {MAX_COUNT} tokens"
            )),
            RevealScope::Count(_) => Ok(()),
        }
    }
}

/// The approved scope of a held request in words (`2 named tokens until …`, `5 tokens
/// of any kind until …`); empty when it was not approved.
pub fn scope_text(held: &StepUpRow) -> String {
    match &held.decision {
        Some(d) if held.state != "denied" => format!(
            "{} {} until {}",
            d.scope_count,
            if d.scope_tokens.is_some() {
                "named tokens"
            } else {
                "tokens of any kind"
            },
            crate::keys::rfc3339(d.valid_until)
        ),
        _ => String::new(),
    }
}

/// Whether the approval of `held` lets `identity` reveal `asked` now; the text says why
/// not (for the client and the audit trail; it never holds a value).
pub fn holds_for(
    held: &StepUpRow,
    identity: &str,
    asked: &[&str],
    now: i64,
) -> Result<(), &'static str> {
    // Another identity's request is reported as unknown: its existence is not the
    // caller's business.
    if held.identity != identity {
        return Err("no approval with this id for this client");
    }
    match held.state.as_str() {
        "approved" => {}
        "pending" => return Err("the held request is not approved (yet)"),
        "denied" => return Err("the held request was denied"),
        "used" => return Err("the approval was already used: it holds for one retry"),
        _ => return Err("the approval is not usable"),
    }
    let Some(d) = &held.decision else {
        return Err("the approval is not usable");
    };
    if now >= d.valid_until {
        return Err("the approval expired");
    }
    if asked.len() as i64 > d.scope_count {
        return Err("the retry asks for more tokens than were approved");
    }
    if let Some(tokens) = &d.scope_tokens {
        let approved: Vec<String> = serde_json::from_str(tokens).unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        for t in asked {
            if t.is_empty() || !approved.iter().any(|a| a == t) || !seen.insert(*t) {
                return Err("the retry asks for a token the approval does not cover");
            }
        }
    }
    Ok(())
}

/// A fresh held request id: `su_` and 32 lowercase hex digits from the OS random
/// source, drawn again when its hex holds a Luhn-valid run of 12 or more digits (the id
/// is stored in the audit trail, where nothing may read as a card number).
pub fn new_held_id() -> String {
    loop {
        let mut raw = [0u8; 16];
        crate::crypto::random_bytes(&mut raw);
        let id = format!("su_{}", hex::encode(raw));
        if !crate::cardscan::contains_pan(&id) {
            return id;
        }
    }
}

/// Whether a header value is shaped like a held request id: `su_` and 32 lowercase hex
/// digits. One that reads as a card number is shaped right but is never one the vault
/// made ([`new_held_id`]): it is refused as unknown and never recorded ([`audited_id`]).
pub fn is_held_id(id: &str) -> bool {
    id.strip_prefix("su_").is_some_and(|h| {
        h.len() == 32
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// What the audit trail records of a presented held request id: the id, unless it reads
/// as a card number (a client's string; no held request has such an id).
pub fn audited_id(id: &str) -> &str {
    if crate::cardscan::contains_pan(id) {
        "su_(an id that reads as a card number)"
    } else {
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Decision;

    fn held(state: &str, scope: Option<&[&str]>, count: i64) -> StepUpRow {
        StepUpRow {
            id: "su_0".into(),
            identity: "app".into(),
            origin: "10.0.0.1".into(),
            created_at: 0,
            score: 60,
            reasons: "novel_tokens".into(),
            tokens: r#"["tok_a","tok_b","tok_c"]"#.into(),
            token_count: 3,
            state: state.into(),
            decision: Some(Decision {
                scope_tokens: scope.map(|s| serde_json::to_string(s).unwrap()),
                scope_count: count,
                valid_until: 1_000,
                decided_by: "officer:a+officer:b".into(),
                decided_at: 0,
                reason: "refund batch".into(),
            }),
            used_at: None,
        }
    }

    #[test]
    fn an_approval_holds_only_for_its_identity_scope_window_and_once() {
        let h = held("approved", Some(&["tok_a", "tok_b"]), 2);
        assert_eq!(holds_for(&h, "app", &["tok_a", "tok_b"], 10), Ok(()));
        assert_eq!(holds_for(&h, "app", &["tok_b"], 10), Ok(()));
        assert!(holds_for(&h, "other", &["tok_a"], 10).is_err());
        assert!(holds_for(&h, "app", &["tok_c"], 10).is_err());
        assert!(holds_for(&h, "app", &["tok_a", "tok_a"], 10).is_err());
        assert!(holds_for(&h, "app", &["tok_a", "tok_b", "tok_c"], 10).is_err());
        assert!(holds_for(&h, "app", &["tok_a"], 1_000).is_err());
        for state in ["pending", "denied", "used"] {
            assert!(holds_for(&held(state, None, 3), "app", &["tok_a"], 10).is_err());
        }
        let any = held("approved", None, 2);
        assert_eq!(holds_for(&any, "app", &["tok_x", "tok_y"], 10), Ok(()));
        assert!(holds_for(&any, "app", &["tok_x", "tok_y", "tok_z"], 10).is_err());
    }

    #[test]
    fn a_scope_fits_its_held_request() {
        let h = held("pending", None, 0);
        assert!(
            RevealScope::Tokens(vec!["tok_a".into()])
                .check_against(&h)
                .is_ok()
        );
        assert!(
            RevealScope::Tokens(vec!["tok_z".into()])
                .check_against(&h)
                .is_err()
        );
        assert!(RevealScope::Tokens(vec![]).check_against(&h).is_err());
        assert!(RevealScope::Count(0).check_against(&h).is_err());
        assert!(RevealScope::Count(MAX_COUNT + 1).check_against(&h).is_err());
        assert!(is_held_id("su_0123456789abcdef0123456789abcdef"));
        assert!(!is_held_id("su_0123456789ABCDEF0123456789abcdef"));
        assert!(!is_held_id("req-0123456789abcdef"));
        let card = "su_4111111111111111abcdefabcdefabcd";
        assert!(is_held_id(card) && !crate::cardscan::contains_pan(audited_id(card)));
        for _ in 0..20_000 {
            let id = new_held_id();
            assert!(
                is_held_id(&id) && !crate::cardscan::contains_pan(&id),
                "{id}"
            );
        }
    }
}
