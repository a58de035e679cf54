//! Tokenization and the encrypt API: the services behind the HTTP handlers. They check
//! permissions where the answer depends on stored data (a token's type), seal and open
//! values under the keyring's data keys, and write the audit event with the change.

mod encrypt;
pub mod format;
mod rewrap;
pub mod values;

pub use encrypt::CryptoService;
pub use rewrap::{RewrapOptions, RewrapReport};
pub use values::{Value, ValueError};

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::audit::writer::{TokenInsert, Write, Writer, Written};
use crate::audit::{AuditEvent, AuditLog, Outcome};
use crate::config::{Limits, TokenFormat, TypeSettings, Validator};
use crate::crypto::{Aad, Fingerprinter};
use crate::hsm::HsmError;
use crate::keys::{KeyError, KeyManager, KeyVersion};
use crate::policy::Principal;
use crate::store::{Store, StoreError, TokenRow};

/// Everything a service call can answer besides success. `api::error` maps each to a
/// status and a stable code; none carries a submitted value.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidValue(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("no such token")]
    NotFound,
    #[error("{0}")]
    KeyDestroyed(String),
    #[error("the stored record failed its integrity check")]
    Integrity,
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        ServiceError::Unavailable(e.to_string())
    }
}

impl From<KeyError> for ServiceError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Destroyed(..) | KeyError::Retired(..) => {
                ServiceError::KeyDestroyed(e.to_string())
            }
            KeyError::Hsm(HsmError::UnwrapFailed) | KeyError::KcvMismatch(..) => {
                ServiceError::Integrity
            }
            KeyError::Hsm(ref h) if h.is_unavailable() => ServiceError::Unavailable(e.to_string()),
            KeyError::Store(_) | KeyError::NotInitialized(_) | KeyError::KekMissing(_) => {
                ServiceError::Unavailable(e.to_string())
            }
            other => ServiceError::Internal(other.to_string()),
        }
    }
}

impl From<ValueError> for ServiceError {
    fn from(e: ValueError) -> Self {
        ServiceError::InvalidValue(e.0.to_owned())
    }
}

impl ServiceError {
    /// The stable code recorded as the reason of a failed audit event.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::InvalidRequest(_) => "invalid_request",
            ServiceError::InvalidValue(_) => "invalid_value",
            ServiceError::Forbidden(_) => "forbidden",
            ServiceError::NotFound => "not_found",
            ServiceError::KeyDestroyed(_) => "key_destroyed",
            ServiceError::Integrity => "integrity_error",
            ServiceError::Unavailable(_) => "unavailable",
            ServiceError::Internal(_) => "internal",
        }
    }
}

/// A tokenize request, after JSON parsing.
#[derive(Debug)]
pub struct TokenizeInput {
    pub token_type: String,
    pub value: RawValue,
    pub format: Option<TokenFormat>,
    pub metadata: Option<serde_json::Value>,
    pub ttl_seconds: Option<u64>,
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
    pub fingerprint: String,
    pub expires_at: Option<i64>,
}

#[derive(Debug)]
pub struct Detokenized {
    pub token: String,
    pub token_type: String,
    pub value: Value,
    pub metadata: Option<serde_json::Value>,
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

const MAX_TTL_SECONDS: u64 = 10 * 366 * 86_400;
const MAX_REASON_LEN: usize = 200;

/// The two keyed fingerprints of a type: one to find a value's token in the database,
/// one to hand to clients. Separate HKDF labels keep them unrelated.
#[derive(Clone)]
struct TypeFingerprints {
    lookup: Fingerprinter,
    public: Fingerprinter,
}

pub struct TokenService {
    writer: Writer,
    keys: Arc<KeyManager>,
    store: Store,
    audit: AuditLog,
    types: BTreeMap<String, TypeSettings>,
    limits: Limits,
}

/// Checks the caller-supplied reason: short, and never a place to put a card number.
pub fn check_reason(reason: Option<&str>) -> Result<Option<String>, ServiceError> {
    let Some(r) = reason else { return Ok(None) };
    if r.len() > MAX_REASON_LEN || r.chars().any(char::is_control) {
        return Err(ServiceError::InvalidRequest(format!(
            "reason must be at most {MAX_REASON_LEN} printable characters"
        )));
    }
    let mut run = 0;
    for b in r.bytes() {
        run = if b.is_ascii_digit() { run + 1 } else { 0 };
        if run >= 12 {
            return Err(ServiceError::InvalidRequest(
                "reason must not contain long digit runs".into(),
            ));
        }
    }
    Ok(Some(r.to_owned()))
}

impl TokenService {
    pub fn new(
        keys: Arc<KeyManager>,
        store: Store,
        writer: Writer,
        types: BTreeMap<String, TypeSettings>,
        limits: Limits,
    ) -> Self {
        Self {
            writer,
            audit: AuditLog::new(store.clone()),
            keys,
            store,
            types,
            limits,
        }
    }

    /// The type's fingerprinters under every usable fingerprint key, the active first.
    async fn fingerprinters(
        &self,
        token_type: &str,
    ) -> Result<Vec<(KeyVersion, TypeFingerprints)>, ServiceError> {
        let keys = self.keys.fingerprint_keys().await?;
        Ok(keys
            .into_iter()
            .map(|(version, key)| {
                let f = TypeFingerprints {
                    lookup: key.derived(&lookup_label(token_type)),
                    public: key.derived(&format!("public/type/{token_type}")),
                };
                (version, f)
            })
            .collect())
    }

    /// Records a read-side or failed event (group-committed; returns once durable).
    async fn record(&self, event: AuditEvent, now: i64) -> Result<(), ServiceError> {
        self.writer
            .submit(Write::Event { event, at: now })
            .await
            .map(drop)
            .map_err(|e| ServiceError::Unavailable(format!("audit trail unavailable: {e}")))
    }

    fn event(&self, who: &Principal, action: &str, outcome: Outcome) -> AuditEvent {
        AuditEvent::new(&who.identity, action, outcome).origin(&who.origin)
    }

    /// Audits a failed call (if the audit itself fails, that failure wins) and returns it.
    async fn fail<T>(
        &self,
        who: &Principal,
        action: &str,
        resource: Option<&str>,
        err: ServiceError,
        now: i64,
    ) -> Result<T, ServiceError> {
        let outcome = match err {
            ServiceError::Forbidden(_) => Outcome::Denied,
            _ => Outcome::Failure,
        };
        let mut event = self
            .event(who, action, outcome)
            .reason(Some(err.code().to_owned()));
        if let Some(r) = resource {
            event = event.resource(r);
        }
        self.record(event, now).await?;
        Err(err)
    }

    /// Tokenizes one value. Deterministic types return the existing token for a value.
    pub async fn tokenize(
        &self,
        who: &Principal,
        input: TokenizeInput,
        now: i64,
    ) -> Result<Tokenized, ServiceError> {
        match self.tokenize_inner(who, input, now).await {
            Ok(t) => Ok(t),
            Err(e @ ServiceError::Unavailable(_)) => Err(e),
            Err(e) => self.fail(who, "tokenize", None, e, now).await,
        }
    }

    async fn tokenize_inner(
        &self,
        who: &Principal,
        input: TokenizeInput,
        now: i64,
    ) -> Result<Tokenized, ServiceError> {
        let type_name = input.token_type.as_str();
        if !who.may(&format!("tokenize:{type_name}")) {
            return Err(ServiceError::Forbidden(format!(
                "not allowed to tokenize type `{type_name}`"
            )));
        }
        let Some(ty) = self.types.get(type_name) else {
            return Err(ServiceError::InvalidRequest(format!(
                "unknown token type `{type_name}`"
            )));
        };
        let value = values::validate(ty.validator, &input.value.0, self.limits.max_value_bytes)?;
        let format = input.format.unwrap_or(ty.format);
        if ty.deterministic && format != ty.format {
            return Err(ServiceError::InvalidRequest(format!(
                "type `{type_name}` is deterministic and always uses format {}",
                serde_json::to_string(&ty.format).unwrap_or_default()
            )));
        }
        let digits_only = matches!(ty.validator, Validator::Pan | Validator::Ssn);
        if !format::fits(format, digits_only, value.as_str().len()) {
            return Err(ServiceError::InvalidRequest(format!(
                "format not applicable to type `{type_name}`"
            )));
        }
        let metadata = match input.metadata {
            None | Some(serde_json::Value::Null) => None,
            Some(m @ serde_json::Value::Object(_)) => {
                let s = m.to_string();
                if s.len() > self.limits.max_metadata_bytes {
                    return Err(ServiceError::InvalidRequest(
                        "metadata is larger than the configured maximum".into(),
                    ));
                }
                Some(s)
            }
            Some(_) => {
                return Err(ServiceError::InvalidRequest(
                    "metadata must be a JSON object".into(),
                ));
            }
        };
        let expires_at = match input.ttl_seconds {
            None => None,
            Some(t) if (1..=MAX_TTL_SECONDS).contains(&t) => {
                Some(now + i64::try_from(t * 1000).unwrap_or(i64::MAX))
            }
            Some(_) => {
                return Err(ServiceError::InvalidRequest(
                    "ttl_seconds must be from 1 to ten years".into(),
                ));
            }
        };
        let fps = self.fingerprinters(type_name).await?;
        let (fp_version, active_fp) = fps
            .first()
            .ok_or_else(|| ServiceError::Unavailable("no fingerprint key".into()))?;
        let bytes = value.as_str().as_bytes();
        let public_fp = URL_SAFE_NO_PAD.encode(active_fp.public.fingerprint(bytes));
        let lookup_fp = ty
            .deterministic
            .then(|| active_fp.lookup.fingerprint(bytes));
        let masked = values::mask(ty.validator, &value);
        let done = |row_token: String, expires_at| Tokenized {
            token: row_token,
            token_type: type_name.to_owned(),
            masked: masked.clone(),
            fingerprint: public_fp.clone(),
            expires_at,
        };

        if ty.deterministic {
            // A value tokenized under the active fingerprint key is found by the writer
            // (its insert conflicts and the existing token wins). During re-indexing a
            // row may still carry a fingerprint made by an older key: look those up here.
            for (_, f) in fps.iter().skip(1) {
                let fp = f.lookup.fingerprint(bytes);
                if let Some(row) = self
                    .store
                    .token_by_fingerprint(None, type_name, &fp)
                    .await?
                    && !is_expired(&row, now)
                {
                    let event = self
                        .event(who, "tokenize", Outcome::Success)
                        .resource(&row.token);
                    self.record(event, now).await?;
                    return Ok(done(row.token, row.expires_at));
                }
            }
        }

        let (version, key) = self.keys.seal_key(&ty.keyring, 1, now).await?;
        for _ in 0..16 {
            let token = format::generate(format, value.as_str());
            let sealed = key.seal(
                &Aad::token(&ty.keyring, version.get(), &token),
                value.as_str().as_bytes(),
            );
            let row = TokenInsert {
                token,
                token_type: type_name.to_owned(),
                keyring: ty.keyring.clone(),
                key_version: i64::from(version.get()),
                ciphertext: sealed,
                fingerprint: lookup_fp.map(|f| f.to_vec()),
                fingerprint_version: lookup_fp.map(|_| i64::from(fp_version.get())),
                masked: masked.clone(),
                metadata: metadata.clone(),
                created_at: now,
                expires_at,
            };
            let event = self.event(who, "tokenize", Outcome::Success);
            match self
                .writer
                .submit(Write::InsertToken { row, event })
                .await?
            {
                Written::Token { token, expires_at } => return Ok(done(token, expires_at)),
                // A random token collided with an existing one: draw again.
                _ => continue,
            }
        }
        Err(ServiceError::Unavailable(
            "could not draw an unused token; the format's token space is crowded".into(),
        ))
    }

    /// Looks up a token the caller may use for `action`; unknown, expired and forbidden
    /// tokens all answer `NotFound`, so a caller learns nothing about tokens it may not use.
    async fn visible(
        &self,
        who: &Principal,
        action: &str,
        token: &str,
        now: i64,
    ) -> Result<TokenRow, ServiceError> {
        let row = if format::plausible_token(token) {
            self.store.token(token).await?
        } else {
            None
        };
        let resource = format::plausible_token(token).then_some(token);
        match row {
            Some(row) if !is_expired(&row, now) => {
                if who.may(&format!("{action}:{}", row.token_type)) {
                    Ok(row)
                } else {
                    let event = self
                        .event(who, action, Outcome::Denied)
                        .resource(token)
                        .reason(Some("forbidden".into()));
                    self.record(event, now).await?;
                    Err(ServiceError::NotFound)
                }
            }
            _ => {
                self.fail(who, action, resource, ServiceError::NotFound, now)
                    .await
            }
        }
    }

    pub async fn detokenize(
        &self,
        who: &Principal,
        token: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<Detokenized, ServiceError> {
        let reason = match check_reason(reason) {
            Ok(r) => r,
            Err(e) => return self.fail(who, "detokenize", None, e, now).await,
        };
        let row = self.visible(who, "detokenize", token, now).await?;
        let opened = async {
            let version = KeyVersion::from_db(row.key_version)
                .ok_or_else(|| ServiceError::Internal("stored key version out of range".into()))?;
            let key = self.keys.key(&row.keyring, version).await?;
            let plain = key
                .open(
                    &Aad::token(&row.keyring, version.get(), &row.token),
                    &row.ciphertext,
                )
                .map_err(|_| ServiceError::Integrity)?;
            Value::from_stored(plain).ok_or(ServiceError::Integrity)
        }
        .await;
        let value = match opened {
            Ok(v) => v,
            Err(e @ ServiceError::Unavailable(_)) => return Err(e),
            Err(e) => return self.fail(who, "detokenize", Some(token), e, now).await,
        };
        let event = self
            .event(who, "detokenize", Outcome::Success)
            .resource(token)
            .reason(reason);
        self.record(event, now).await?;
        Ok(Detokenized {
            token: row.token,
            token_type: row.token_type,
            value,
            metadata: parse_metadata(row.metadata.as_deref()),
        })
    }

    /// Metadata and masked value of a token; never the value.
    pub async fn info(
        &self,
        who: &Principal,
        token: &str,
        now: i64,
    ) -> Result<TokenInfo, ServiceError> {
        let row = self.visible(who, "read", token, now).await?;
        self.record(
            self.event(who, "read", Outcome::Success).resource(token),
            now,
        )
        .await?;
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
    pub async fn delete(&self, who: &Principal, token: &str, now: i64) -> Result<(), ServiceError> {
        let row = self.visible(who, "delete", token, now).await?;
        let event = self.event(who, "delete", Outcome::Success).resource(token);
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
            _ => return Err(ServiceError::NotFound),
        }
        Ok(())
    }
}

/// The HKDF label of the lookup fingerprint of a type.
pub fn lookup_label(token_type: &str) -> String {
    format!("lookup/type/{token_type}")
}

fn is_expired(row: &TokenRow, now: i64) -> bool {
    row.expires_at.is_some_and(|e| e <= now)
}

fn parse_metadata(m: Option<&str>) -> Option<serde_json::Value> {
    m.and_then(|s| serde_json::from_str(s).ok())
}
