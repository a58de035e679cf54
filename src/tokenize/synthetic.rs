//! A non-production vault's answer for a token it has no record of (a production token
//! copied into staging): a synthetic value derived from the token under the vault's key
//! hierarchy, so the same token always answers the same value, marked `synthetic`, and
//! never real ([`crate::nonprod::synth`]). Nothing stored is opened.
//!
//! The token does not say its type, so the type is the one the surface names (a Transform
//! role's), or else the only type with `synthetic` set that the caller may reveal (a
//! digit-only token, which only the format-preserving card formats issue, only a `pan`
//! one). When that leaves no type or more than one, the answer is `not_found`, as for any
//! unknown token. A token the vault holds but the caller could not reveal (expired, of
//! another type than the surface's, or of a type the caller may not reveal) answers as an
//! unknown token does, synthetically where one fits: otherwise the difference between a
//! synthetic answer and `not_found` would tell a caller which tokens the vault holds. A
//! token the caller may reveal answers its own value. The synthetic values change when
//! the fingerprint key is rotated.

use super::*;
use crate::guard::Decision;
use crate::nonprod::synth::{self, Draw, Kind};

/// What a reveal found.
pub(super) enum Found {
    /// A stored record the caller may reveal.
    Record(TokenRow),
    /// No record: the type whose synthetic value answers the token.
    Synthetic(String),
}

impl Found {
    /// The record's creation time, for anomaly scoring (a synthetic answer found nothing).
    pub(super) fn created_at(&self) -> Option<i64> {
        match self {
            Found::Record(row) => Some(row.created_at),
            Found::Synthetic(_) => None,
        }
    }
}

/// HKDF label of the key that derives a type's synthetic values from its tokens.
fn label(token_type: &str) -> String {
    format!("nonprod/synthetic/{token_type}")
}

impl TokenService {
    /// The type an unknown token is answered for, if this is a non-production vault and
    /// exactly one type fits (see the module documentation).
    pub(super) fn synthetic_type(
        &self,
        who: &Principal,
        token: &str,
        only_type: Option<&str>,
    ) -> Option<String> {
        self.test_data.as_ref()?;
        if !format::plausible_token(token) {
            return None;
        }
        let digits = token.bytes().all(|b| b.is_ascii_digit());
        let mut fitting = self.types.iter().filter(|(name, t)| {
            t.synthetic.is_some_and(|k| !digits || k == Kind::Pan)
                && only_type.is_none_or(|o| o == name.as_str())
                && self.guard.decide(who, Action::Detokenize, name) == Decision::Allow
        });
        let (name, _) = fitting.next()?;
        fitting.next().is_none().then(|| name.clone())
    }

    /// The guard's word on a synthetic answer (a suspended caller is refused, as for any
    /// reveal).
    pub(super) async fn synthetic_allowed(
        &self,
        who: &Principal,
        token: &str,
        token_type: String,
        now: i64,
    ) -> Result<Found, Error> {
        self.guard
            .check(who, Action::Detokenize, &token_type, Some(token), now)
            .await?;
        Ok(Found::Synthetic(token_type))
    }

    /// The synthetic value of `token` as a `token_type`, recorded as
    /// `detokenize.synthetic`.
    pub(super) async fn synthesize(
        &self,
        who: &Principal,
        token: &str,
        token_type: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<Detokenized, Error> {
        let (Some(test_data), Some(kind)) = (
            self.test_data.as_ref(),
            self.types.get(token_type).and_then(|t| t.synthetic),
        ) else {
            return Err(Error::Internal(
                "a synthetic answer for a type without one".into(),
            ));
        };
        let keys = self.keys.fingerprint_keys().await?;
        let (_, key) = keys
            .first()
            .ok_or_else(|| Error::Unavailable("no fingerprint key".into()))?;
        let seed = key
            .derived(&label(token_type))
            .fingerprint(token.as_bytes());
        let mut draw = Draw::new(seed);
        let prefixes = &test_data.test_card_prefixes;
        let value = match kind {
            // A format-preserving token keeps its length and last four digits.
            Kind::Pan if token.bytes().all(|b| b.is_ascii_digit()) => {
                synth::pan(&mut draw, prefixes, token, true)
            }
            kind => synth::generate(kind, &mut draw, prefixes, ""),
        };
        let value = Value::from_stored(zeroize::Zeroizing::new(value.into_bytes()))
            .ok_or_else(|| Error::Internal("a synthetic value is not UTF-8".into()))?;
        let event = self
            .event(who, Action::DetokenizeSynthetic, Outcome::Success)
            .resource(token)
            .reason(check_reason(reason)?);
        self.guard.record(event, now).await?;
        Ok(Detokenized {
            token: token.to_owned(),
            token_type: token_type.to_owned(),
            value,
            metadata: None,
            synthetic: true,
        })
    }
}
