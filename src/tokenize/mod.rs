//! Tokenization and the encrypt API: the services behind the HTTP handlers. They check
//! permissions where the answer depends on stored data (a token's type), seal and open
//! values under the keyring's data keys, and write the audit event with the change.

mod encrypt;
pub mod format;
mod issue;
mod rewrap;
pub mod roles;
mod sign;
mod synthetic;
pub mod values;

pub use encrypt::CryptoService;
pub use format::TokenFormat;
pub use issue::JournalSpec;
pub use rewrap::{RewrapOptions, RewrapReport};
pub use sign::{Marshaling, SignOptions, Signature};
pub use values::{Validator, Value, ValueError};

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::anomaly::Sighting;
use crate::audit::writer::{Write, Writer, Written};
use crate::audit::{Action, AuditEvent, AuditLog, Outcome};
use crate::cardscan;
use crate::crypto::{Aad, Fingerprinter};
use crate::error::Error;
use crate::guard::{Guard, Principal, SHARED_NAMESPACE};
use crate::keys::{KeyManager, KeyVersion};
use crate::store::{Store, TokenRow};
use synthetic::Found;

impl From<crate::nonprod::TestDataError> for Error {
    fn from(e: crate::nonprod::TestDataError) -> Self {
        match e {
            crate::nonprod::TestDataError::Invalid(v) => v.into(),
            crate::nonprod::TestDataError::Real(r) => Error::RealValue(r.0),
        }
    }
}

impl From<ValueError> for Error {
    fn from(e: ValueError) -> Self {
        Error::InvalidValue(e.0.to_owned())
    }
}

/// A token type as the config declares it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct TypeSettings {
    pub validator: Validator,
    pub keyring: String,
    #[serde(default = "default_format")]
    pub format: TokenFormat,
    /// Same value, same token (found through the keyed fingerprint).
    #[serde(default)]
    pub deterministic: bool,
    /// The formats a client may ask for; none given: every format that fits the type's
    /// values (the server decides, the client only chooses within it).
    #[serde(default)]
    pub formats: Option<Vec<TokenFormat>>,
    /// Non-production vaults only: a token the vault has no record of (a production token
    /// copied into staging) is answered with a synthetic value of this kind, derived from
    /// the token (see [`crate::nonprod::synth`]).
    #[serde(default)]
    pub synthetic: Option<crate::nonprod::Kind>,
}

impl TypeSettings {
    /// Whether a client may ask for `format` (the type's own format is always allowed).
    pub fn allows(&self, format: TokenFormat) -> bool {
        format == self.format || self.formats.as_ref().is_none_or(|f| f.contains(&format))
    }
}

fn default_format() -> TokenFormat {
    TokenFormat::Opaque
}

/// A tokenize request, after JSON parsing.
#[derive(Debug)]
pub struct TokenizeInput {
    pub token_type: String,
    pub value: RawValue,
    pub format: Option<TokenFormat>,
    pub metadata: Option<serde_json::Value>,
    pub ttl_seconds: Option<u64>,
    /// A token to keep instead of drawing one: only `tokenvault import
    /// --vault-transform-export` sets it (a migration keeps the token strings downstream
    /// databases hold). Never from a request body.
    pub given_token: Option<String>,
}

/// The submitted value before validation. Cleared on drop, never printed.
pub struct RawValue(pub zeroize::Zeroizing<String>);

impl std::fmt::Debug for RawValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

#[derive(Debug, Clone)]
pub struct Tokenized {
    pub token: String,
    pub token_type: String,
    pub masked: String,
    /// Only for a caller granted `fingerprint:<type>`.
    pub fingerprint: Option<String>,
    pub expires_at: Option<i64>,
}

#[derive(Debug)]
pub struct Detokenized {
    pub token: String,
    pub token_type: String,
    pub value: Value,
    pub metadata: Option<serde_json::Value>,
    /// A non-production vault's synthetic answer for a token it has no record of.
    pub synthetic: bool,
}

#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub token: String,
    pub token_type: String,
    pub masked: String,
    pub metadata: Option<serde_json::Value>,
    pub keyring: String,
    pub key_version: i64,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

pub const MAX_TTL_SECONDS: u64 = 10 * 366 * 86_400;
pub const MAX_REASON_LEN: usize = 200;

/// The two keyed fingerprints of a type: one to find a value's token in the database,
/// one to hand to clients. Separate HKDF labels keep them unrelated.
#[derive(Clone)]
struct TypeFingerprints {
    lookup: Fingerprinter,
    public: Fingerprinter,
}

/// Size limits on what a caller stores with a token.
#[derive(Debug, Clone, Copy)]
pub struct ValueLimits {
    pub max_value_bytes: usize,
    pub max_metadata_bytes: usize,
}

/// The one tokenize path: every surface that tokenizes, reveals, reads or deletes a token
/// goes through these methods, which ask the guard first.
pub struct TokenService {
    writer: Writer,
    guard: Arc<Guard>,
    keys: Arc<KeyManager>,
    store: Store,
    audit: AuditLog,
    types: BTreeMap<String, TypeSettings>,
    limits: ValueLimits,
    /// In a non-production vault: what it accepts as test data (`crate::nonprod`).
    test_data: Option<Arc<crate::nonprod::TestData>>,
}

/// Checks the caller-supplied reason: short, and never a place to put a card number.
pub fn check_reason(reason: Option<&str>) -> Result<Option<String>, Error> {
    let Some(r) = reason else { return Ok(None) };
    if r.chars().count() > MAX_REASON_LEN || r.chars().any(char::is_control) {
        return Err(Error::InvalidRequest(format!(
            "reason must be at most {MAX_REASON_LEN} printable characters"
        )));
    }
    // Digits as people write card numbers, with spaces or dashes, count as one run.
    if cardscan::has_digit_run(r, 12) {
        return Err(Error::InvalidRequest(
            "reason must not contain long digit runs (card numbers do not belong here)".into(),
        ));
    }
    Ok(Some(r.to_owned()))
}

impl TokenService {
    pub fn new(
        keys: Arc<KeyManager>,
        store: Store,
        writer: Writer,
        guard: Arc<Guard>,
        types: BTreeMap<String, TypeSettings>,
        limits: ValueLimits,
    ) -> Self {
        Self {
            writer,
            guard,
            audit: AuditLog::new(store.clone()),
            keys,
            store,
            types,
            limits,
            test_data: None,
        }
    }

    /// A non-production vault's service: tokenize accepts only test data.
    pub fn with_test_data(mut self, test_data: Arc<crate::nonprod::TestData>) -> Self {
        self.test_data = Some(test_data);
        self
    }

    /// The type's fingerprinters under every usable fingerprint key, the active first.
    /// Both are per namespace: one client's fingerprints and tokens say nothing about
    /// another namespace's values.
    async fn fingerprinters(
        &self,
        token_type: &str,
        namespace: &str,
    ) -> Result<Vec<(KeyVersion, TypeFingerprints)>, Error> {
        let keys = self.keys.fingerprint_keys().await?;
        Ok(keys
            .into_iter()
            .map(|(version, key)| {
                let f = TypeFingerprints {
                    lookup: key.derived(&lookup_label(token_type, namespace)),
                    public: key.derived(&public_label(token_type, namespace)),
                };
                (version, f)
            })
            .collect())
    }

    fn event(&self, who: &Principal, action: Action, outcome: Outcome) -> AuditEvent {
        AuditEvent::new(&who.identity, action, outcome).origin(&who.origin)
    }

    /// Audits a request another surface refused before it reached this service (a
    /// Transform role that does not resolve), as this service audits its own refusals,
    /// and returns the error (or the audit trail's, if it cannot record it).
    pub async fn refused(&self, who: &Principal, action: Action, err: Error, now: i64) -> Error {
        match self.fail::<()>(who, action, None, err, now).await {
            Err(e) => e,
            Ok(()) => Error::Internal("a refusal was recorded as a success".into()),
        }
    }

    /// Audits a failed call (if the audit itself fails, that failure wins) and returns it.
    /// Refusals by the guard are audited by the guard and never come through here.
    async fn fail<T>(
        &self,
        who: &Principal,
        action: Action,
        resource: Option<&str>,
        err: Error,
        now: i64,
    ) -> Result<T, Error> {
        let mut event = self
            .event(who, action, Outcome::Failure)
            .reason(Some(err.code().as_str().to_owned()));
        if let Some(r) = resource {
            event = event.resource(r);
        }
        self.guard.record(event, now).await?;
        Err(err)
    }

    /// Confirms that `row` holds `value` (of its own type, under its own AAD), comparing in
    /// constant time; anything else is an integrity failure.
    async fn confirm(&self, row: &TokenRow, value: &[u8]) -> Result<(), Error> {
        let version = KeyVersion::from_db(row.key_version).ok_or(Error::Integrity)?;
        let key = self.keys.key(&row.keyring, version).await?;
        let plain = key
            .open(&record_aad(row, version)?, &row.ciphertext)
            .map_err(|_| Error::Integrity)?;
        if bool::from(subtle::ConstantTimeEq::ct_eq(plain.as_slice(), value)) {
            Ok(())
        } else {
            tracing::error!("a fingerprint index entry points at a record of another value");
            Err(Error::Integrity)
        }
    }

    /// Looks up a token the caller may use for `action`; unknown, expired and forbidden
    /// tokens all answer `NotFound`, so a caller learns nothing about tokens it may not use.
    async fn visible(
        &self,
        who: &Principal,
        action: Action,
        (token, only_type): (&str, Option<&str>),
        now: i64,
    ) -> Result<TokenRow, Error> {
        match self.stored(token).await? {
            Some(row) => self.usable(who, action, row, (token, only_type), now).await,
            None => self.unknown(who, action, token, now).await,
        }
    }

    /// The record of a string that could be a token, if the vault holds one.
    async fn stored(&self, token: &str) -> Result<Option<TokenRow>, Error> {
        if format::plausible_token(token) {
            Ok(self.store.token(token).await?)
        } else {
            Ok(None)
        }
    }

    /// A stored record, if the caller may use it for `action` (see [`Self::visible`]).
    async fn usable(
        &self,
        who: &Principal,
        action: Action,
        row: TokenRow,
        (token, only_type): (&str, Option<&str>),
        now: i64,
    ) -> Result<TokenRow, Error> {
        // A surface that works on one type (a Transform role) sees no other.
        if is_expired(&row, now) || only_type.is_some_and(|t| t != row.token_type) {
            return self.unknown(who, action, token, now).await;
        }
        match self
            .guard
            .check(who, action, &row.token_type, Some(token), now)
            .await
        {
            Ok(()) => Ok(row),
            Err(Error::Forbidden(_)) => Err(Error::NotFound),
            Err(e) => Err(e),
        }
    }

    /// Audits and answers a token that is not there for the caller.
    async fn unknown<T>(
        &self,
        who: &Principal,
        action: Action,
        token: &str,
        now: i64,
    ) -> Result<T, Error> {
        let resource = format::plausible_token(token).then_some(token);
        self.fail(who, action, resource, Error::NotFound, now).await
    }

    /// Reveals one token's value; charged to the caller's reveal budget and scored.
    pub async fn detokenize(
        &self,
        who: &Principal,
        token: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<Detokenized, Error> {
        self.guard.charge(who, Action::Detokenize, 1, now).await?;
        let mut one = self.reveal_all(who, &[(token, None)], reason, now).await?;
        one.pop()
            .unwrap_or_else(|| Err(Error::Internal("a reveal gave no result".into())))
    }

    /// Reveals many tokens' values, in order. The whole batch is charged to the reveal
    /// budget and scored first: it is served whole or refused whole. A failure of the
    /// HSM or the audit trail fails the batch closed; other failures are per item.
    pub async fn detokenize_batch(
        &self,
        who: &Principal,
        tokens: &[String],
        reason: Option<&str>,
        now: i64,
    ) -> Result<Vec<Result<Detokenized, Error>>, Error> {
        let tokens: Vec<(&str, Option<&str>)> = tokens.iter().map(|t| (t.as_str(), None)).collect();
        self.detokenize_batch_of(who, &tokens, reason, now).await
    }

    /// [`Self::detokenize_batch`] of tokens each of a given type, when one is given
    /// (another type's token is not found, and nothing of it is revealed).
    pub async fn detokenize_batch_of(
        &self,
        who: &Principal,
        tokens: &[(&str, Option<&str>)],
        reason: Option<&str>,
        now: i64,
    ) -> Result<Vec<Result<Detokenized, Error>>, Error> {
        // One reason for the whole batch: refused whole, as by a single detokenize.
        check_reason(reason)?;
        self.guard
            .charge(who, Action::Detokenize, tokens.len() as u64, now)
            .await?;
        self.reveal_all(who, tokens, reason, now).await
    }

    /// The reveal itself, after the budget was charged: every token is looked up, the
    /// request is scored on what was found ([`Guard::screen`]: an alert, a step-up, a
    /// block), and only then are values opened, each with its audit event.
    async fn reveal_all(
        &self,
        who: &Principal,
        tokens: &[(&str, Option<&str>)],
        reason: Option<&str>,
        now: i64,
    ) -> Result<Vec<Result<Detokenized, Error>>, Error> {
        let mut found = futures_util::future::join_all(
            tokens
                .iter()
                .map(|&(t, only_type)| self.find_for_reveal(who, (t, only_type), reason, now)),
        )
        .await;
        stop_on_outage(&mut found)?;
        // Only strings that could be tokens are scored (and kept with a held request):
        // whatever else a caller sent may be a value.
        let sightings: Vec<Sighting<'_>> = tokens
            .iter()
            .zip(&found)
            .map(|(&(t, _), r)| Sighting {
                token: if format::plausible_token(t) { t } else { "" },
                created_at: r.as_ref().ok().and_then(Found::created_at),
            })
            .collect();
        self.guard.screen(who, &sightings, now).await?;
        let mut results = futures_util::future::join_all(found.into_iter().zip(tokens).map(
            |(found, &(t, _))| async move {
                match found? {
                    Found::Record(row) => self.open_for(who, row, t, reason, now).await,
                    Found::Synthetic(token_type) => {
                        self.synthesize(who, t, &token_type, reason, now).await
                    }
                }
            },
        ))
        .await;
        stop_on_outage(&mut results)?;
        Ok(results)
    }

    /// The record a reveal opens, or (in a non-production vault, for a token it has no
    /// record of) the type whose synthetic value answers it.
    async fn find_for_reveal(
        &self,
        who: &Principal,
        (token, only_type): (&str, Option<&str>),
        reason: Option<&str>,
        now: i64,
    ) -> Result<Found, Error> {
        if let Err(e) = check_reason(reason) {
            return self.fail(who, Action::Detokenize, None, e, now).await;
        }
        let action = Action::Detokenize;
        let row = self.stored(token).await?;
        // A held token the caller could not reveal (expired, another surface's type, a
        // type it may not reveal) answers as an unknown one does: a non-production vault
        // answers both synthetically, so the answer says nothing of what it holds.
        let plain = row.as_ref().is_some_and(|r| {
            !is_expired(r, now)
                && only_type.is_none_or(|t| t == r.token_type)
                && self.guard.decide(who, action, &r.token_type) == crate::guard::Decision::Allow
        });
        match (row, plain) {
            (Some(row), true) => self
                .usable(who, action, row, (token, only_type), now)
                .await
                .map(Found::Record),
            (row, _) => match (self.synthetic_type(who, token, only_type), row) {
                (Some(t), _) => self.synthetic_allowed(who, token, t, now).await,
                (None, Some(row)) => self
                    .usable(who, action, row, (token, only_type), now)
                    .await
                    .map(Found::Record),
                (None, None) => self.unknown(who, action, token, now).await,
            },
        }
    }

    /// Opens a found record's value and records the reveal.
    async fn open_for(
        &self,
        who: &Principal,
        row: TokenRow,
        token: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<Detokenized, Error> {
        let opened = async {
            let version = KeyVersion::from_db(row.key_version)
                .ok_or_else(|| Error::Internal("stored key version out of range".into()))?;
            let key = self.keys.key(&row.keyring, version).await?;
            let plain = key
                .open(&record_aad(&row, version)?, &row.ciphertext)
                .map_err(|_| Error::Integrity)?;
            Value::from_stored(plain).ok_or(Error::Integrity)
        }
        .await;
        let value = match opened {
            Ok(v) => v,
            Err(e @ Error::Unavailable(_)) => return Err(e),
            Err(e) => {
                return self
                    .fail(who, Action::Detokenize, Some(token), e, now)
                    .await;
            }
        };
        let event = self
            .event(who, Action::Detokenize, Outcome::Success)
            .resource(token)
            .reason(check_reason(reason)?);
        self.guard.record(event, now).await?;
        Ok(Detokenized {
            token: row.token,
            token_type: row.token_type,
            value,
            metadata: parse_metadata(row.metadata.as_deref()),
            synthetic: false,
        })
    }

    /// Metadata and masked value of a token; never the value.
    pub async fn info(&self, who: &Principal, token: &str, now: i64) -> Result<TokenInfo, Error> {
        self.info_of(who, token, None, now).await
    }

    /// [`Self::info`] of many tokens, in order (the masked answer of a detokenize batch):
    /// per-item failures, except one of the HSM, the database or the audit trail.
    pub async fn info_many(
        &self,
        who: &Principal,
        tokens: &[String],
        now: i64,
    ) -> Result<Vec<Result<TokenInfo, Error>>, Error> {
        let mut results =
            futures_util::future::join_all(tokens.iter().map(|t| self.info(who, t, now))).await;
        stop_on_outage(&mut results)?;
        Ok(results)
    }

    /// [`Self::info`] of a token of `only_type` (another type's token is not found).
    pub async fn info_of(
        &self,
        who: &Principal,
        token: &str,
        only_type: Option<&str>,
        now: i64,
    ) -> Result<TokenInfo, Error> {
        let row = self
            .visible(who, Action::Read, (token, only_type), now)
            .await?;
        let event = self.event(who, Action::Read, Outcome::Success);
        self.guard.record(event.resource(token), now).await?;
        Ok(TokenInfo {
            metadata: parse_metadata(row.metadata.as_deref()),
            token: row.token,
            token_type: row.token_type,
            masked: row.masked,
            keyring: row.keyring,
            key_version: row.key_version,
            created_at: row.created_at,
            expires_at: row.expires_at,
        })
    }

    /// Deletes a token and with it the only ciphertext of its value.
    pub async fn delete(&self, who: &Principal, token: &str, now: i64) -> Result<(), Error> {
        let row = self
            .visible(who, Action::Delete, (token, None), now)
            .await?;
        let event = self
            .event(who, Action::Delete, Outcome::Success)
            .resource(token);
        match self
            .writer
            .submit(Write::DeleteToken {
                token: row.token,
                event,
                at: now,
            })
            .await?
        {
            Written::Deleted(true) => {}
            _ => return Err(Error::NotFound),
        }
        Ok(())
    }
}

impl TokenService {
    /// Retention: deletes every token whose expiry has passed (in batches, each with its
    /// audit event, which records the count and never a token), then makes the deletions
    /// final in the database files. Returns how many went.
    pub async fn purge_expired(&self, actor: &str, now: i64) -> Result<u64, Error> {
        const BATCH: i64 = 1000;
        let mut total = 0;
        loop {
            let mut atx = self.audit.begin().await?;
            let n = self.store.purge_expired(&mut atx.tx, now, BATCH).await?;
            if n == 0 {
                break;
            }
            let event = AuditEvent::new(actor, Action::TokenPurge, Outcome::Success)
                .reason(Some(format!("{n} expired tokens purged")));
            atx.append(&event, now).await?;
            atx.commit().await?;
            total += n;
            if n < BATCH as u64 {
                break;
            }
        }
        self.store.compact().await?;
        Ok(total)
    }
}

/// Takes a fail-closed error (the HSM, the database or the audit trail; a suspension) out
/// of per-item results: the whole call answers it.
fn stop_on_outage<T>(results: &mut Vec<Result<T, Error>>) -> Result<(), Error> {
    match results
        .iter()
        .position(|r| matches!(r, Err(e) if e.is_unavailable() || matches!(e, Error::Suspended)))
    {
        Some(pos) => match results.swap_remove(pos) {
            Err(e) => Err(e),
            Ok(_) => Ok(()),
        },
        None => Ok(()),
    }
}

/// The HKDF label of the lookup fingerprint of a type.
pub fn lookup_label(token_type: &str, namespace: &str) -> String {
    if namespace == SHARED_NAMESPACE {
        // The label of every value tokenized before namespaces existed.
        format!("lookup/type/{token_type}")
    } else {
        format!("lookup/ns/{namespace}/type/{token_type}")
    }
}

/// The HKDF label of the public fingerprint of a type in a namespace.
fn public_label(token_type: &str, namespace: &str) -> String {
    if namespace == SHARED_NAMESPACE {
        format!("public/type/{token_type}")
    } else {
        format!("public/ns/{namespace}/type/{token_type}")
    }
}

/// The AAD a stored record was sealed with, from its `aad_version`.
fn record_aad(row: &TokenRow, version: KeyVersion) -> Result<Aad, Error> {
    match row.aad_version {
        1 => Ok(Aad::token(&row.keyring, version.get(), &row.token)),
        2 => Ok(Aad::token_record(
            &row.keyring,
            version.get(),
            &row.token,
            &row.token_type,
            row.expires_at,
            row.metadata.as_deref(),
        )),
        _ => Err(Error::Integrity),
    }
}

fn is_expired(row: &TokenRow, now: i64) -> bool {
    row.expires_at.is_some_and(|e| e <= now)
}

fn parse_metadata(m: Option<&str>) -> Option<serde_json::Value> {
    m.and_then(|s| serde_json::from_str(s).ok())
}
