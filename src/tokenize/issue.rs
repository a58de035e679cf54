//! The one tokenize path. A single tokenize, a batch over HTTP and `tokenvault import`
//! all come here with a list of items, which goes through the same steps in bulk:
//!
//! 1. each item is checked on its own — its type's name, the caller's permission, the
//!    value, format, metadata and expiry — and a refused item is audited as today;
//! 2. deterministic values are charged to the new-value budget, then looked up with one
//!    multi-row query per type and fingerprint version; a hit is confirmed by opening
//!    its record;
//! 3. the new values are sealed under one key reservation per keyring and handed to the
//!    writer as ONE write: one multi-row insert, the audit events of every item and (for
//!    an import) the journal entry commit in one transaction.
//!
//! A failure of the HSM, the database or the audit trail fails the whole call closed.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{
    TokenService, TokenizeInput, Tokenized, TypeFingerprints, TypeSettings, format, is_expired,
    values,
};
use crate::audit::writer::{TokenInsert, Write, Written};
use crate::audit::{Action, AuditEvent, Outcome, Verb};
use crate::cardscan;
use crate::crypto::Aad;
use crate::error::Error;
use crate::guard::{Principal, SHARED_NAMESPACE};
use crate::keys::KeyVersion;
use crate::names::TypeName;
use crate::store::{ImportJournal, TokenRow};

use super::MAX_TTL_SECONDS;
use super::format::TokenFormat;
use super::values::Value;

/// Where an import's batch stands, to be committed with it (see [`ImportJournal`]).
#[derive(Debug, Clone)]
pub struct JournalSpec {
    pub run: String,
    pub batch: i64,
    pub first_record: i64,
    pub prune_before: i64,
}

/// One item after every check: what it will store or look up.
struct Prepared {
    type_name: String,
    keyring: String,
    deterministic: bool,
    format: TokenFormat,
    value: Value,
    metadata: Option<String>,
    expires_at: Option<i64>,
    masked: String,
    public_fp: Option<String>,
    /// The lookup fingerprints under every usable fingerprint key, the active first
    /// (deterministic types only).
    lookup: Vec<[u8; 32]>,
    fp_version: KeyVersion,
    /// The fingerprint namespace stored with a deterministic row.
    fp_namespace: Option<String>,
    /// An imported record's own token, kept instead of drawing one.
    given_token: Option<String>,
}

impl Prepared {
    fn answer(&self, token: String, expires_at: Option<i64>) -> Tokenized {
        Tokenized {
            token,
            token_type: self.type_name.clone(),
            masked: self.masked.clone(),
            fingerprint: self.public_fp.clone(),
            expires_at,
        }
    }
}

/// The state of one item through the steps.
enum Item {
    Done(Result<Tokenized, Error>),
    Pending(Box<Prepared>),
}

impl TokenService {
    /// Tokenizes one value. Deterministic types return the existing token for a value.
    pub async fn tokenize(
        &self,
        who: &Principal,
        input: TokenizeInput,
        now: i64,
    ) -> Result<Tokenized, Error> {
        let mut out = self.tokenize_many(who, vec![Ok(input)], now, None).await?;
        out.pop()
            .unwrap_or_else(|| Err(Error::Internal("a tokenize gave no answer".into())))
    }

    /// Tokenizes many values, answering each in order. An `Err` item is one the caller's
    /// surface could not parse: it is audited as a failure like any refused item.
    /// `journal`: an import's batch, committed with its tokens.
    pub async fn tokenize_many(
        &self,
        who: &Principal,
        items: Vec<Result<TokenizeInput, Error>>,
        now: i64,
        journal: Option<JournalSpec>,
    ) -> Result<Vec<Result<Tokenized, Error>>, Error> {
        let fps = self.fingerprinters_of(who, &items).await?;
        // Step 1: the checks of each item. Items are independent futures so that refusals
        // (each audited) share group commits instead of waiting one after another.
        let checked = futures_util::future::join_all(
            items
                .into_iter()
                .map(|item| self.check_item(who, Action::Tokenize, item, &fps, now)),
        )
        .await;
        let mut state = Vec::with_capacity(checked.len());
        for c in checked {
            match c {
                Err(e @ Error::Unavailable(_)) => return Err(e),
                Err(e) => state.push(Item::Done(Err(e))),
                Ok(p) => state.push(Item::Pending(Box::new(p))),
            }
        }
        // Step 2: deterministic values already held answer with their token.
        let hits = self
            .find_existing(who, &mut state, Action::Tokenize, now)
            .await?;
        // Step 3: the rest are sealed and written, with every success event.
        self.issue(who, &mut state, hits, now, journal).await?;
        Ok(state
            .into_iter()
            .map(|s| match s {
                Item::Done(r) => r,
                Item::Pending(_) => Err(Error::Internal("an item was left unanswered".into())),
            })
            .collect())
    }

    /// Whether each value already has a token in the caller's namespace (Transform's
    /// `tokenized`), storing nothing. Only deterministic types answer (a random type's
    /// value has no way to be found). Needs `tokenize:<type>`; a lookup that finds nothing
    /// is charged to the new-value budget as a tokenize of an unseen value would be, so
    /// probing costs what tokenizing costs. Each answer is audited (`token.lookup`, with
    /// `found` or `not_found`).
    pub async fn lookup_many(
        &self,
        who: &Principal,
        items: Vec<Result<TokenizeInput, Error>>,
        now: i64,
    ) -> Result<Vec<Result<bool, Error>>, Error> {
        let action = Action::TokenLookup;
        // In a namespace shared with other clients, a lookup would tell one client what
        // its peers tokenized (what tokenize itself never shows there).
        if !who.namespace_is_private {
            let e = Error::Forbidden(
                "lookups answer only in a namespace of the client's own (this client shares \
                 its namespace)"
                    .into(),
            );
            return self.fail(who, action, None, e, now).await;
        }
        let fps = self.fingerprinters_of(who, &items).await?;
        let mut state = Vec::with_capacity(items.len());
        for item in items {
            match self.check_item(who, action, item, &fps, now).await {
                Err(e @ Error::Unavailable(_)) => return Err(e),
                Err(e) => state.push(Item::Done(Err(e))),
                Ok(p) if !p.deterministic => {
                    let e = Error::InvalidRequest(
                        "only a deterministic type's values can be looked up".into(),
                    );
                    state.push(Item::Done(self.fail(who, action, None, e, now).await));
                }
                Ok(p) => state.push(Item::Pending(Box::new(p))),
            }
        }
        let mut events = self.find_existing(who, &mut state, action, now).await?;
        let answers = state
            .into_iter()
            .map(|s| match s {
                Item::Done(r) => r.map(|_| true),
                Item::Pending(_) => {
                    let miss = self
                        .event(who, action, Outcome::Success)
                        .reason(Some("not_found".to_owned()));
                    events.push((miss, now));
                    Ok(false)
                }
            })
            .collect();
        self.guard.record_all(events).await?;
        Ok(answers)
    }

    /// The fingerprinters of every configured type `items` name, derived once per call.
    async fn fingerprinters_of(
        &self,
        who: &Principal,
        items: &[Result<TokenizeInput, Error>],
    ) -> Result<HashMap<String, Vec<(KeyVersion, TypeFingerprints)>>, Error> {
        let mut fps = HashMap::new();
        for input in items.iter().flatten() {
            if self.types.contains_key(&input.token_type) && !fps.contains_key(&input.token_type) {
                let f = self
                    .fingerprinters(&input.token_type, &who.namespace)
                    .await?;
                fps.insert(input.token_type.clone(), f);
            }
        }
        Ok(fps)
    }

    /// Step 1 for one item: name, permission, value; a refusal is audited.
    async fn check_item(
        &self,
        who: &Principal,
        action: Action,
        item: Result<TokenizeInput, Error>,
        fps: &HashMap<String, Vec<(KeyVersion, TypeFingerprints)>>,
        now: i64,
    ) -> Result<Prepared, Error> {
        let input = match item {
            Ok(i) => i,
            Err(e) => return self.fail(who, action, None, e, now).await,
        };
        // The name first: nothing a caller sends is used (permission, lookup, audit)
        // before it is known to be a name.
        let type_name = match TypeName::parse(&input.token_type) {
            Ok(n) => n,
            Err(why) => {
                let e = Error::InvalidRequest(format!("`type`: {why}"));
                return self.fail(who, action, None, e, now).await;
            }
        };
        self.guard
            .check(who, action, type_name.as_str(), None, now)
            .await?;
        match self.prepare(who, type_name.as_str(), input, fps, now) {
            Ok(p) => Ok(p),
            Err(e @ Error::Unavailable(_)) => Err(e),
            Err(e) => self.fail(who, action, None, e, now).await,
        }
    }

    /// Validates one item against its type and computes what it stores.
    fn prepare(
        &self,
        who: &Principal,
        type_name: &str,
        input: TokenizeInput,
        fps: &HashMap<String, Vec<(KeyVersion, TypeFingerprints)>>,
        now: i64,
    ) -> Result<Prepared, Error> {
        let Some(ty) = self.types.get(type_name) else {
            return Err(Error::InvalidRequest(
                "unknown token type (the configured types are in the vault's config)".into(),
            ));
        };
        let max = self.limits.max_value_bytes;
        let value = match &self.test_data {
            None => values::validate(ty.validator, &input.value.0, max)?,
            Some(t) => t.validate_value(ty.validator, &input.value.0, max)?,
        };
        let format = check_format(ty, input.format, value.as_str().len())?;
        let metadata = self.check_metadata(input.metadata)?;
        let expires_at = match input.ttl_seconds {
            None => None,
            Some(t) if (1..=MAX_TTL_SECONDS).contains(&t) => {
                Some(now + i64::try_from(t * 1000).unwrap_or(i64::MAX))
            }
            Some(_) => {
                return Err(Error::InvalidRequest(
                    "ttl_seconds must be from 1 to ten years".into(),
                ));
            }
        };
        if let Some(t) = &input.given_token
            && (!format::importable_token(t) || overlaps(t, value.as_str()))
        {
            return Err(Error::InvalidValue(
                "the record's token is not shaped like a token (16–128 letters, digits and \
                 -_.+/=, at least one letter, never the value)"
                    .into(),
            ));
        }
        let keys = fps
            .get(type_name)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| Error::Unavailable("no fingerprint key".into()))?;
        let (fp_version, active) = &keys[0];
        let bytes = value.as_str().as_bytes();
        // The public fingerprint only to a client granted it: with it, a dictionary of
        // SSNs or e-mails could be tested offline against stored fingerprints.
        let public_fp = who
            .may(Verb::Fingerprint, type_name)
            .then(|| URL_SAFE_NO_PAD.encode(active.public.fingerprint(bytes)));
        let lookup = if ty.deterministic {
            keys.iter()
                .map(|(_, f)| f.lookup.fingerprint(bytes))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Prepared {
            type_name: type_name.to_owned(),
            keyring: ty.keyring.clone(),
            deterministic: ty.deterministic,
            format,
            masked: values::mask(ty.validator, &value),
            value,
            metadata,
            expires_at,
            public_fp,
            lookup,
            fp_version: *fp_version,
            fp_namespace: (ty.deterministic && who.namespace != SHARED_NAMESPACE)
                .then(|| who.namespace.clone()),
            given_token: input.given_token,
        })
    }

    /// Metadata as stored: a JSON object, bounded, and never a place for card data.
    fn check_metadata(&self, metadata: Option<serde_json::Value>) -> Result<Option<String>, Error> {
        match metadata {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(m @ serde_json::Value::Object(_)) => {
                let s = m.to_string();
                // Checks of the content that no schema can state answer 422, like a
                // value that fails its validator (the OpenAPI contract: a request that
                // matches the document is never a 400).
                if s.len() > self.limits.max_metadata_bytes {
                    return Err(Error::InvalidValue(
                        "metadata is larger than the configured maximum".into(),
                    ));
                }
                // Metadata is stored in clear: it must not become a place for card data.
                if cardscan::contains_pan(&s) {
                    return Err(Error::InvalidValue(
                        "metadata must not hold card numbers".into(),
                    ));
                }
                Ok(Some(s))
            }
            Some(_) => Err(Error::InvalidRequest(
                "metadata must be a JSON object".into(),
            )),
        }
    }

    /// Step 2: charges each deterministic value to the new-value budget (given back on a
    /// hit), then finds the values the namespace already holds — one query per type and
    /// fingerprint version — and answers them after opening their record. Returns the
    /// success events of the hits, to commit with the rest.
    async fn find_existing(
        &self,
        who: &Principal,
        state: &mut [Item],
        action: Action,
        now: i64,
    ) -> Result<Vec<(AuditEvent, i64)>, Error> {
        // One unit of the budget of new values is reserved before the lookup, and given
        // back on a hit: once the budget is spent every answer is refused, hits too.
        let probe = action == Action::TokenLookup;
        let charges = futures_util::future::join_all(state.iter().map(|s| async move {
            match s {
                Item::Pending(p) if p.deterministic && probe => {
                    Some(self.guard.charge_probe(who, now).await)
                }
                Item::Pending(p) if p.deterministic => {
                    Some(self.guard.charge_new_value(who, &p.type_name, now).await)
                }
                _ => None,
            }
        }))
        .await;
        for (s, charge) in state.iter_mut().zip(charges) {
            match charge {
                Some(Err(e @ Error::Unavailable(_))) => return Err(e),
                Some(Err(e)) => *s = Item::Done(Err(e)),
                _ => {}
            }
        }
        // Every fingerprint wanted, per type.
        let mut wanted: HashMap<&str, Vec<&[u8]>> = HashMap::new();
        for s in state.iter() {
            if let Item::Pending(p) = s {
                for fp in &p.lookup {
                    wanted.entry(&p.type_name).or_default().push(fp.as_slice());
                }
            }
        }
        let mut found: HashMap<(String, Vec<u8>), TokenRow> = HashMap::new();
        for (type_name, list) in wanted {
            for (fp, row) in self
                .store
                .tokens_by_fingerprints(None, type_name, &list)
                .await?
            {
                found.insert((type_name.to_owned(), fp), row);
            }
        }
        let mut events = Vec::new();
        for s in state.iter_mut() {
            let Item::Pending(p) = s else { continue };
            // Under the active fingerprint key or, during re-indexing, an older one.
            let hit = p.lookup.iter().find_map(|fp| {
                found
                    .get(&(p.type_name.clone(), fp.to_vec()))
                    .filter(|row| !is_expired(row, now))
            });
            let Some(row) = hit else { continue };
            if probe {
                self.guard.refund_probe(who, now);
            } else {
                self.guard.refund_new_value(who, &p.type_name, now);
            }
            if p.given_token.as_ref().is_some_and(|g| *g != row.token) {
                let e = another_token();
                *s = Item::Done(self.fail(who, action, None, e, now).await);
                continue;
            }
            match self.confirm(row, p.value.as_str().as_bytes()).await {
                Ok(()) => {}
                Err(e @ Error::Unavailable(_)) => return Err(e),
                Err(e) => {
                    let r = self.fail(who, action, None, e, now).await;
                    *s = Item::Done(r);
                    continue;
                }
            }
            let mut event = self
                .event(who, action, Outcome::Success)
                .resource(&row.token);
            if action == Action::TokenLookup {
                event = event.reason(Some("found".to_owned()));
            }
            events.push((event, now));
            // An existing value's expiry may have been set by another client of a
            // shared namespace: it is shown only in a namespace of one.
            let expiry = row.expires_at.filter(|_| who.namespace_is_private);
            *s = Item::Done(Ok(p.answer(row.token.clone(), expiry)));
        }
        Ok(events)
    }

    /// Step 3: seals the new values and writes them with every event of the call (and the
    /// import journal) in one transaction; a random token that collided is drawn again.
    async fn issue(
        &self,
        who: &Principal,
        state: &mut [Item],
        mut events: Vec<(AuditEvent, i64)>,
        now: i64,
        journal: Option<JournalSpec>,
    ) -> Result<(), Error> {
        // One reservation of key uses per keyring for all its new values.
        let mut per_keyring: HashMap<String, u64> = HashMap::new();
        for s in state.iter() {
            if let Item::Pending(p) = s {
                *per_keyring.entry(p.keyring.clone()).or_default() += 1;
            }
        }
        let mut keys = HashMap::new();
        for (keyring, uses) in per_keyring {
            let key = self.keys.seal_key(&keyring, uses, now).await?;
            keys.insert(keyring, key);
        }
        for round in 0..16 {
            let mut rows = Vec::new();
            let mut slots = Vec::new();
            for (i, s) in state.iter().enumerate() {
                let Item::Pending(p) = s else { continue };
                let (version, key) = &keys[&p.keyring];
                let token = match &p.given_token {
                    Some(t) => t.clone(),
                    None => format::generate(p.format, p.value.as_str()),
                };
                let aad = Aad::token_record(
                    &p.keyring,
                    version.get(),
                    &token,
                    &p.type_name,
                    p.expires_at,
                    p.metadata.as_deref(),
                );
                let lookup = p.lookup.first().filter(|_| p.deterministic);
                let row = TokenInsert {
                    ciphertext: key.seal(&aad, p.value.as_str().as_bytes()),
                    token,
                    token_type: p.type_name.clone(),
                    keyring: p.keyring.clone(),
                    key_version: i64::from(version.get()),
                    fingerprint: lookup.map(|f| f.to_vec()),
                    fingerprint_version: lookup.map(|_| i64::from(p.fp_version.get())),
                    masked: p.masked.clone(),
                    metadata: p.metadata.clone(),
                    created_at: now,
                    expires_at: p.expires_at,
                    aad_version: 2,
                    fingerprint_namespace: p.fp_namespace.clone(),
                };
                rows.push((row, self.event(who, Action::Tokenize, Outcome::Success)));
                slots.push(i);
            }
            if rows.is_empty() && events.is_empty() && (round > 0 || journal.is_none()) {
                return Ok(());
            }
            let journal = journal.as_ref().map(|j| ImportJournal {
                run: j.run.clone(),
                batch: j.batch,
                first_record: j.first_record,
                records: state.iter().map(journal_record).collect(),
                slots: slots.clone(),
                prune_before: j.prune_before,
            });
            let drawn: Vec<String> = rows.iter().map(|(r, _)| r.token.clone()).collect();
            let written = self
                .writer
                .submit(Write::InsertTokens {
                    rows,
                    events: std::mem::take(&mut events),
                    journal,
                })
                .await?;
            let Written::Tokens(outcomes) = written else {
                return Err(Error::Internal("the writer answered another write".into()));
            };
            for ((i, drawn), outcome) in slots.into_iter().zip(drawn).zip(outcomes) {
                let Item::Pending(p) = &state[i] else {
                    continue;
                };
                let answer = match outcome {
                    // Another row answered for this fingerprint: it is handed out only if
                    // it really holds this value (the index is outside the AAD, so a
                    // database writer could have moved it).
                    // An imported token is kept or the record refused: never another.
                    Written::Token { ref token, .. }
                        if p.given_token.is_some() && *token != drawn =>
                    {
                        self.fail(who, Action::Tokenize, None, another_token(), now)
                            .await
                    }
                    Written::Token { token, expires_at } if token != drawn => {
                        match self
                            .confirm_token(&token, p.value.as_str().as_bytes())
                            .await
                        {
                            Ok(()) => Ok(
                                p.answer(token, expires_at.filter(|_| who.namespace_is_private))
                            ),
                            Err(e @ Error::Unavailable(_)) => return Err(e),
                            Err(e) => self.fail(who, Action::Tokenize, None, e, now).await,
                        }
                    }
                    Written::Token { token, expires_at } => Ok(p.answer(token, expires_at)),
                    // An imported token that exists already: the same record imported
                    // before (a run repeated) is answered as it is; another is refused.
                    _ if p.given_token.is_some() => match self.holds_import(&drawn, p, now).await {
                        Ok(Some(expires_at)) => {
                            Ok(p.answer(drawn, expires_at.filter(|_| who.namespace_is_private)))
                        }
                        Err(e @ Error::Unavailable(_)) => return Err(e),
                        Ok(None) | Err(_) => {
                            let e = Error::InvalidValue(
                                "the record's token exists for another record".into(),
                            );
                            self.fail(who, Action::Tokenize, None, e, now).await
                        }
                    },
                    // A random token collided with an existing one: draw again.
                    _ => continue,
                };
                state[i] = Item::Done(answer);
            }
            if !state.iter().any(|s| matches!(s, Item::Pending(_))) {
                return Ok(());
            }
        }
        Err(Error::Unavailable(
            "could not draw an unused token; the format's token space is crowded".into(),
        ))
    }

    /// Whether the stored `token` is this imported record as a run before stored it: the
    /// same type, the same namespace, unexpired, holding the same value. Answers its
    /// expiry if so.
    async fn holds_import(
        &self,
        token: &str,
        p: &Prepared,
        now: i64,
    ) -> Result<Option<Option<i64>>, Error> {
        let Some(row) = self.store.token(token).await? else {
            return Ok(None);
        };
        if row.token_type != p.type_name
            || row.fingerprint_namespace != p.fp_namespace
            || is_expired(&row, now)
        {
            return Ok(None);
        }
        match self.confirm(&row, p.value.as_str().as_bytes()).await {
            Ok(()) => Ok(Some(row.expires_at)),
            Err(e @ Error::Unavailable(_)) => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// Confirms that the stored token `token` holds `value` (an import's resume checks the
    /// tokens its journal holds with it before writing them out).
    pub(crate) async fn confirm_token(&self, token: &str, value: &[u8]) -> Result<(), Error> {
        let row = self.store.token(token).await?.ok_or(Error::Integrity)?;
        self.confirm(&row, value).await
    }
}

/// What the import journal says of an item: its token, `!code`, or empty while pending.
fn journal_record(s: &Item) -> String {
    match s {
        Item::Done(Ok(t)) => t.token.clone(),
        Item::Done(Err(e)) => format!("!{}", e.code().as_str()),
        Item::Pending(_) => String::new(),
    }
}

/// The format an item gets: the type's unless the caller asked for another it allows.
fn check_format(
    ty: &TypeSettings,
    asked: Option<TokenFormat>,
    value_len: usize,
) -> Result<TokenFormat, Error> {
    let format = asked.unwrap_or(ty.format);
    if ty.deterministic && format != ty.format {
        return Err(Error::InvalidRequest(format!(
            "this type is deterministic and always uses format {}",
            serde_json::to_string(&ty.format).unwrap_or_default()
        )));
    }
    if !ty.allows(format) {
        return Err(Error::InvalidRequest(
            "this format is not allowed for this type by the vault's config".into(),
        ));
    }
    let digits_only = matches!(
        ty.validator,
        values::Validator::Pan | values::Validator::Ssn
    );
    if !format::fits(format, digits_only, value_len) {
        return Err(Error::InvalidRequest(
            "format not applicable to this type and value length".into(),
        ));
    }
    Ok(format)
}

/// An imported record whose value already has a different token (a deterministic type
/// holds one token per value).
fn another_token() -> Error {
    Error::InvalidValue("the value already has another token in this namespace".into())
}

/// Whether an imported token and its value contain one another (letter case aside): a
/// token must never carry its value.
fn overlaps(token: &str, value: &str) -> bool {
    // Letters and digits only: separators (`123-45-6789`) must not hide the value.
    let core = |s: &str| -> String {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let (t, v) = (core(token), core(value));
    !v.is_empty() && !t.is_empty() && (t.contains(&v) || v.contains(&t))
}
