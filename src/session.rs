//! Sessions of the Vault-compatible API: `auth/cert/login` turns a verified client
//! certificate into a short-lived token that Vault clients send as `X-Vault-Token`.
//!
//! Design (written down because Vault's own tokens work differently):
//! - A token is 32 random bytes (`hvs.` + base64url, so secret scanners that know Vault
//!   tokens also find leaked ones). The vault stores only its SHA-256: a database reader
//!   learns no usable token, and 256 random bits need no keyed digest. No signing or MAC
//!   key exists at all, so none can leak from config.
//! - A token is bound to the certificate that logged in (RFC 8705): the session records
//!   the SHA-256 thumbprint of its DER, and a token shown on a connection with any other
//!   certificate — another client, or the same identity with a re-issued certificate — is
//!   refused with 403 and audited. The caller's identity still comes only from the
//!   certificate of the connection; the token adds proof, never grants: a session row
//!   forged by a database writer cannot lend one identity's permissions to another.
//! - Sessions live `vault_api.token_ttl_secs` (per identity: `vault_token_ttl_secs`),
//!   are renewable by that TTL up to `vault_api.token_max_ttl_secs` after login, and are
//!   revocable. Every node reads the same rows: a revocation holds at once on the node
//!   that made it, and on the others within [`CACHE_FOR`] (each node keeps the sessions
//!   it read for that long, so a request needs no database read).
//! - Only configured clients may log in. Logins, renewals, revocations and refused
//!   tokens are audited (`auth.login`, `auth.renew`, `auth.revoke`, `auth.refused`) with
//!   the session's accessor, never the token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::audit::writer::{SessionChange, Write, Writer, Written};
use crate::audit::{Action, AuditEvent, Outcome};
use crate::error::Error;
use crate::guard::{Guard, Principal};
use crate::store::{SessionRow, Store};

/// `[vault_api]`: the Vault-compatible routes under `/v1/` and their sessions.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaultApiSettings {
    /// Whether `/v1/auth/…`, `/v1/sys/…` and the two mounts answer.
    pub enabled: bool,
    /// The mount of the Transit engine (`/v1/<mount>/encrypt/<key>`).
    pub transit_mount: String,
    /// The mount of the Transform engine.
    pub transform_mount: String,
    /// How long a session token lives after login or a renewal.
    pub token_ttl_secs: u64,
    /// No renewal takes a session past this long after its login.
    pub token_max_ttl_secs: u64,
    /// Live sessions one identity may hold at once; a login past it is refused (429).
    pub max_sessions_per_identity: u64,
    /// A key rotated over the API (`transit/keys/:name/rotate`) is not rotated again over
    /// it sooner than this: a loop cannot pile up versions or fill the HSM with key pairs.
    pub min_rotation_interval_secs: u64,
    /// Transform roles and tokenization transformations (default: one of each per type).
    pub transform: crate::tokenize::roles::TransformSettings,
}

impl Default for VaultApiSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            transit_mount: "transit".into(),
            transform_mount: "transform".into(),
            token_ttl_secs: 15 * 60,
            token_max_ttl_secs: 8 * 3600,
            max_sessions_per_identity: 1000,
            min_rotation_interval_secs: 60,
            transform: crate::tokenize::roles::TransformSettings::default(),
        }
    }
}

/// First path segments of the native API, `auth` and `sys`: no mount may take one.
const RESERVED: &[&str] = &[
    "auth",
    "sys",
    "tokenize",
    "detokenize",
    "tokens",
    "encrypt",
    "decrypt",
    "rewrap",
    "keys",
    "health",
    "metrics",
    "openapi.json",
];

/// Why a configured mount name cannot be used.
fn check_mount(name: &str) -> Result<(), String> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        return Err(format!(
            "vault_api mount `{name}`: lowercase letters, digits, - and _, starting with a letter"
        ));
    }
    if RESERVED.contains(&name) {
        return Err(format!(
            "vault_api mount `{name}` is a path of the native API or of Vault's auth and sys"
        ));
    }
    Ok(())
}

impl VaultApiSettings {
    /// Refuses mounts that would shadow other routes, and lifetimes that make no sense.
    pub fn validate(&self) -> Result<(), String> {
        check_mount(&self.transit_mount)?;
        check_mount(&self.transform_mount)?;
        if self.transit_mount == self.transform_mount {
            return Err("vault_api: the transit and transform mounts must differ".into());
        }
        if self.token_ttl_secs == 0 || self.token_max_ttl_secs < self.token_ttl_secs {
            return Err(
                "vault_api: token_ttl_secs must be at least 1 and at most token_max_ttl_secs"
                    .into(),
            );
        }
        if self.max_sessions_per_identity == 0 {
            return Err(
                "vault_api: max_sessions_per_identity must be at least 1 (with 0 no client \
                 could log in; set vault_api.enabled = false to turn the API off)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The token prefix; clients treat tokens as opaque.
const PREFIX: &str = "hvs.";

/// Audit reasons of refused tokens (stable: tests and reports read them).
pub const REASON_UNKNOWN: &str = "token_unknown";
pub const REASON_ENDED: &str = "token_ended";
pub const REASON_OTHER_CERTIFICATE: &str = "certificate_mismatch";
pub const REASON_MISSING: &str = "token_missing";
pub const REASON_SESSION_LIMIT: &str = "session_limit";

/// What Vault answers for every missing, bad or foreign token (clients match on it).
pub const PERMISSION_DENIED: &str = "permission denied";

/// A freshly issued session: the token, shown once, and its record.
pub struct Issued {
    pub token: SecretString,
    pub session: SessionRow,
}

/// SHA-256 of a token: the only form in which the vault keeps it.
pub fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// SHA-256 of a certificate's DER (RFC 8705 `x5t#S256`).
pub fn thumbprint(cert_der: &[u8]) -> [u8; 32] {
    Sha256::digest(cert_der).into()
}

fn random_b64(n: usize) -> String {
    let mut buf = zeroize::Zeroizing::new(vec![0u8; n]);
    crate::crypto::random_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(&*buf)
}

/// How long a node answers from a session it read, before it reads it again.
pub const CACHE_FOR: Duration = Duration::from_secs(1);
/// Most sessions a node keeps read; past it the cache starts over.
const CACHE_MAX: usize = 10_000;

pub struct SessionService {
    store: Store,
    writer: Writer,
    guard: Arc<Guard>,
    settings: VaultApiSettings,
    cache: SessionCache,
}

fn live(s: &SessionRow, now: i64) -> bool {
    s.revoked_at.is_none() && s.expires_at > now
}

/// Live sessions this node read in the last [`CACHE_FOR`], by token digest, and the ones
/// it revoked lately (so a request that read one just before cannot bring it back).
#[derive(Default)]
struct SessionCache {
    live: Mutex<HashMap<Vec<u8>, (SessionRow, Instant)>>,
    ended: Mutex<HashMap<Vec<u8>, Instant>>,
}

/// How long a revocation is remembered against late readers (well past any read).
const ENDED_FOR: Duration = Duration::from_secs(10);

impl SessionCache {
    /// A live session read less than [`CACHE_FOR`] ago.
    fn get(&self, digest: &[u8], now: i64) -> Option<SessionRow> {
        if self.ended_lately(digest) {
            return None;
        }
        let live_map = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        live_map
            .get(digest)
            .filter(|(s, at)| at.elapsed() < CACHE_FOR && live(s, now))
            .map(|(s, _)| s.clone())
    }

    /// Keeps a session just read (if live), or forgets it.
    fn keep(&self, digest: &[u8], session: Option<&SessionRow>, now: i64) {
        let mut live_map = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match session.filter(|s| live(s, now) && !self.ended_lately(digest)) {
            Some(s) => {
                if live_map.len() >= CACHE_MAX {
                    live_map.clear();
                }
                live_map.insert(digest.to_vec(), (s.clone(), Instant::now()));
            }
            None => {
                live_map.remove(digest);
            }
        }
    }

    /// Forgets a session this node revoked, and keeps it from coming back.
    fn end(&self, digest: &[u8]) {
        {
            let mut ended = self
                .ended
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            ended.retain(|_, at| at.elapsed() < ENDED_FOR);
            if ended.len() >= CACHE_MAX {
                ended.clear();
            }
            ended.insert(digest.to_vec(), Instant::now());
        }
        let mut live_map = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        live_map.remove(digest);
    }

    fn ended_lately(&self, digest: &[u8]) -> bool {
        let ended = self
            .ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ended.get(digest).is_some_and(|at| at.elapsed() < ENDED_FOR)
    }
}

impl SessionService {
    pub fn new(
        store: Store,
        writer: Writer,
        guard: Arc<Guard>,
        settings: VaultApiSettings,
    ) -> Self {
        Self {
            store,
            writer,
            guard,
            settings,
            cache: SessionCache::default(),
        }
    }

    pub fn settings(&self) -> &VaultApiSettings {
        &self.settings
    }

    /// The TTL of `identity`'s sessions, in milliseconds.
    fn ttl_ms(&self, identity: &str) -> i64 {
        let secs = self
            .guard
            .client_policy(identity)
            .and_then(|p| p.vault_token_ttl_secs)
            .unwrap_or(self.settings.token_ttl_secs)
            .min(self.settings.token_max_ttl_secs);
        i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    async fn write(
        &self,
        change: SessionChange,
        event: AuditEvent,
        now: i64,
    ) -> Result<bool, Error> {
        match self
            .writer
            .submit(Write::Session {
                change,
                event,
                at: now,
            })
            .await
        {
            Ok(Written::Applied(applied)) => Ok(applied),
            Ok(other) => Err(Error::Internal(format!(
                "a session write answered {other:?}"
            ))),
            Err(e) => Err(Error::Unavailable(format!("audit trail unavailable: {e}"))),
        }
    }

    /// Issues a session to the certificate `thumbprint` of a configured client.
    pub async fn login(
        &self,
        who: &Principal,
        thumbprint: &[u8; 32],
        now: i64,
    ) -> Result<Issued, Error> {
        if self.guard.client_policy(&who.identity).is_none() {
            let event = AuditEvent::new(&who.identity, Action::AuthLogin, Outcome::Denied)
                .origin(&who.origin)
                .reason(Some("not_a_client".into()));
            self.guard.record(event, now).await?;
            return Err(Error::Forbidden(PERMISSION_DENIED.into()));
        }
        // A soft cap (concurrent logins may pass it by a few): a client looping logins
        // cannot grow the session table without bound.
        let held = self.store.live_sessions(&who.identity, now).await?;
        if held >= self.settings.max_sessions_per_identity {
            let event = AuditEvent::new(&who.identity, Action::AuthLogin, Outcome::Denied)
                .origin(&who.origin)
                .reason(Some(REASON_SESSION_LIMIT.into()));
            self.guard.record(event, now).await?;
            return Err(Error::RateLimited {
                message: "this identity holds as many live sessions as it may \
                          (vault_api.max_sessions_per_identity): revoke one or let one end"
                    .into(),
                retry_after: Duration::from_secs(60),
            });
        }
        let token = format!("{PREFIX}{}", random_b64(32));
        let ttl_ms = self.ttl_ms(&who.identity);
        let max_ms = i64::try_from(self.settings.token_max_ttl_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        let session = SessionRow {
            token_digest: digest(&token),
            accessor: random_b64(18),
            identity: who.identity.clone(),
            thumbprint: thumbprint.to_vec(),
            issued_at: now,
            ttl_ms,
            expires_at: now.saturating_add(ttl_ms),
            max_expires_at: now.saturating_add(max_ms),
            revoked_at: None,
        };
        let event = AuditEvent::new(&who.identity, Action::AuthLogin, Outcome::Success)
            .origin(&who.origin)
            .resource(format!("session/{}", session.accessor));
        self.write(SessionChange::Issue(session.clone()), event, now)
            .await?;
        Ok(Issued {
            token: SecretString::from(token),
            session,
        })
    }

    /// The live session `token` names, if it was issued to the certificate of this
    /// connection; anything else is refused (audited) as Vault refuses: 403
    /// "permission denied".
    pub async fn authenticate(
        &self,
        who: &Principal,
        token: &str,
        thumbprint: &[u8; 32],
        now: i64,
    ) -> Result<SessionRow, Error> {
        let key = digest(token);
        let found = match self.cache.get(&key, now) {
            Some(s) => Some(s),
            None => {
                let read = self.store.session(&key).await?;
                self.cache.keep(&key, read.as_ref(), now);
                read
            }
        };
        let refusal = match &found {
            None => Some(REASON_UNKNOWN),
            Some(s) if !live(s, now) => Some(REASON_ENDED),
            // Constant time: the thumbprint is not secret, but a comparison that stops at
            // the first difference is a habit we do not keep.
            Some(s) if !bool::from(s.thumbprint.as_slice().ct_eq(thumbprint.as_slice())) => {
                Some(REASON_OTHER_CERTIFICATE)
            }
            Some(s) if s.identity != who.identity => Some(REASON_OTHER_CERTIFICATE),
            Some(_) => None,
        };
        match (refusal, found) {
            (None, Some(session)) => Ok(session),
            (reason, found) => Err(self
                .refuse(who, reason.unwrap_or(REASON_UNKNOWN), found.as_ref(), now)
                .await),
        }
    }

    /// Audits a refused request (no token, or one that does not hold) and answers what
    /// Vault answers: 403 "permission denied" (or 503 if the refusal cannot be recorded).
    pub async fn refuse(
        &self,
        who: &Principal,
        reason: &'static str,
        session: Option<&SessionRow>,
        now: i64,
    ) -> Error {
        let mut event = AuditEvent::new(&who.identity, Action::AuthRefused, Outcome::Denied)
            .origin(&who.origin)
            .reason(Some(reason.to_owned()));
        if let Some(s) = session {
            event = event.resource(format!("session/{}", s.accessor));
        }
        match self.guard.record(event, now).await {
            Ok(()) => Error::Forbidden(PERMISSION_DENIED.into()),
            Err(e) => e,
        }
    }

    /// Extends a live session by `increment` (at most its TTL; default its TTL), never
    /// past its hard end. Returns the renewed session.
    pub async fn renew(
        &self,
        who: &Principal,
        session: &SessionRow,
        increment_ms: Option<i64>,
        now: i64,
    ) -> Result<SessionRow, Error> {
        let grant = increment_ms
            .filter(|i| *i > 0)
            .map_or(session.ttl_ms, |i| i.min(session.ttl_ms));
        let expires_at = now
            .saturating_add(grant)
            .min(session.max_expires_at)
            .max(session.expires_at);
        let event = AuditEvent::new(&who.identity, Action::AuthRenew, Outcome::Success)
            .origin(&who.origin)
            .resource(format!("session/{}", session.accessor));
        let change = SessionChange::Renew {
            digest: session.token_digest.clone(),
            expires_at,
        };
        if !self.write(change, event, now).await? {
            self.cache.end(&session.token_digest);
            return Err(Error::Forbidden(PERMISSION_DENIED.into()));
        }
        let renewed = SessionRow {
            expires_at,
            ..session.clone()
        };
        self.cache.keep(&renewed.token_digest, Some(&renewed), now);
        Ok(renewed)
    }

    /// Ends a session at once, on every node.
    pub async fn revoke(
        &self,
        who: &Principal,
        session: &SessionRow,
        now: i64,
    ) -> Result<(), Error> {
        let event = AuditEvent::new(&who.identity, Action::AuthRevoke, Outcome::Success)
            .origin(&who.origin)
            .resource(format!("session/{}", session.accessor));
        let change = SessionChange::Revoke {
            digest: session.token_digest.clone(),
        };
        self.cache.end(&session.token_digest);
        let result = self.write(change, event, now).await.map(drop);
        self.cache.end(&session.token_digest);
        result
    }

    /// Deletes sessions whose hard end passed a day ago (their rows serve no lookup).
    pub async fn purge(&self, now: i64) -> Result<u64, Error> {
        Ok(self.store.purge_sessions(now - 86_400_000).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_cannot_shadow_native_routes_or_hold_odd_characters() {
        assert!(check_mount("transit").is_ok());
        assert!(check_mount("transit-eu_2").is_ok());
        for bad in [
            "keys", "sys", "auth", "encrypt", "Transit", "", "a/b", "1x", "a.b",
        ] {
            assert!(check_mount(bad).is_err(), "{bad}");
        }
        let same = VaultApiSettings {
            transform_mount: "transit".into(),
            ..VaultApiSettings::default()
        };
        assert!(same.validate().is_err());
        assert!(VaultApiSettings::default().validate().is_ok());
        // No session could ever log in: a typo, refused at start.
        let none = VaultApiSettings {
            max_sessions_per_identity: 0,
            ..VaultApiSettings::default()
        };
        assert!(none.validate().is_err());
    }

    fn row(digest: &[u8]) -> SessionRow {
        SessionRow {
            token_digest: digest.to_vec(),
            accessor: "a".into(),
            identity: "app".into(),
            thumbprint: vec![1; 32],
            issued_at: 0,
            ttl_ms: 1000,
            expires_at: 10_000,
            max_expires_at: 20_000,
            revoked_at: None,
        }
    }

    /// Review of issue 16 (finding 2): a request that read a session before this node
    /// revoked it, and stores what it read after, must not bring it back.
    #[test]
    fn a_session_this_node_revoked_is_not_cached_again_by_a_late_reader() {
        let cache = SessionCache::default();
        let d = [7u8; 32];
        let read_before_revocation = row(&d);
        cache.keep(&d, Some(&read_before_revocation), 5_000);
        assert!(cache.get(&d, 5_000).is_some());
        cache.end(&d);
        cache.keep(&d, Some(&read_before_revocation), 5_000);
        assert!(
            cache.get(&d, 5_000).is_none(),
            "a revoked session came back"
        );
        // Another session is unaffected, and an ended one is never served.
        let e = [8u8; 32];
        cache.keep(&e, Some(&row(&e)), 5_000);
        assert!(cache.get(&e, 5_000).is_some());
        assert!(cache.get(&e, 10_000).is_none());
    }

    #[test]
    fn tokens_are_random_prefixed_and_stored_only_as_a_digest() {
        let a = format!("{PREFIX}{}", random_b64(32));
        let b = format!("{PREFIX}{}", random_b64(32));
        assert_ne!(a, b);
        assert!(a.starts_with("hvs.") && a.len() == 4 + 43, "{a}");
        assert_eq!(digest(&a).len(), 32);
        assert_ne!(digest(&a), digest(&b));
        assert_ne!(digest(&a), a.as_bytes());
    }
}
