//! Keyrings of versioned data keys: creation in the HSM, the in-process cache of
//! unwrapped keys (so the steady state makes no HSM call), and the key inventory.
//!
//! Time is always a parameter (`now`, Unix milliseconds); only the edges read the clock.

mod health;
mod lifecycle;
mod signing;

pub use crate::names::{FINGERPRINT_KEYRING, KeyState, KeyVersion, KeyringName};
pub use health::HsmStatus;
pub use lifecycle::KekRotation;
pub use signing::{SigningKeyInfo, SigningKeySettings, SigningVersion};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::audit::{Action, AuditEvent, AuditLog, Outcome};
use crate::crypto::{self, CryptoError, DataKey, FingerprintKey};
use crate::hsm::{Hsm, HsmError, WrapMechanism};
use crate::store::{DataKeyRow, NewDataKey, Store, StoreError};

/// A keyring's rotation policy, as the config declares it.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default)]
pub struct KeyringSettings {
    /// How long a data key version may encrypt before it is rotated.
    pub cryptoperiod_days: u32,
    /// Encryptions per data key version before it is rotated: far below the 2^32 limit
    /// of AES-GCM with random 96-bit nonces.
    pub usage_limit: u64,
    /// Every encryption, decryption and rewrap names a context (Vault's `derived` keys):
    /// one that names none is refused. The context is bound into the ciphertext as
    /// associated data, so only the same context opens it (a per-context key by binding,
    /// not by a second key). Turning it on makes ciphertexts sealed without a context
    /// unreadable until it is turned off again.
    pub derived: bool,
    /// Encryptions through the encrypt API and Transit are deterministic (Vault's
    /// convergent keys): the same plaintext under the same context gives the same
    /// ciphertext (AES-256-GCM-SIV, revealing only that equality). Needs `derived`.
    pub convergent: bool,
}

impl Default for KeyringSettings {
    fn default() -> Self {
        Self {
            cryptoperiod_days: 365,
            usage_limit: 1 << 30,
            derived: false,
            convergent: false,
        }
    }
}

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unknown keyring `{0}`")]
    UnknownKeyring(String),
    #[error("keyring `{0}` has no version {1}")]
    UnknownVersion(String, KeyVersion),
    #[error("keyring `{0}` has no active key — run `tokenvault init`")]
    NotInitialized(String),
    #[error("key {0} v{1} was destroyed: the data it protected is crypto-shredded")]
    Destroyed(String, KeyVersion),
    #[error("key {0} v{1} is retired and may no longer be used")]
    Retired(String, KeyVersion),
    #[error(
        "the active KEK '{0}' recorded in the database is not in the HSM token — \
         the token is not the one this database was made with"
    )]
    KekMissing(String),
    #[error("key {0} v{1} unwrapped to a value whose check value differs from the stored KCV")]
    KcvMismatch(String, KeyVersion),
    #[error(transparent)]
    Hsm(#[from] HsmError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("{0}")]
    Lifecycle(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for KeyError {
    fn from(e: sqlx::Error) -> Self {
        KeyError::Store(e.into())
    }
}

/// Labels of the objects this vault keeps in the HSM.
#[derive(Debug, Clone)]
pub struct KeyLabels {
    prefix: String,
}

impl KeyLabels {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub fn kek(&self, n: usize) -> String {
        format!("{}-kek-{n}", self.prefix)
    }

    pub fn audit_signing(&self) -> String {
        format!("{}-audit-signing", self.prefix)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// One row of the key inventory (`keys list`, `GET /v1/keys`). Never key material.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyInfo {
    pub keyring: String,
    pub version: u32,
    pub state: String,
    pub algorithm: String,
    pub created_at: String,
    /// `created_at` in Unix milliseconds (for the Vault-compatible key description).
    #[serde(skip)]
    pub created_ms: i64,
    pub age_days: i64,
    pub activated_at: Option<String>,
    pub cryptoperiod_ends_at: String,
    /// Whether the cryptoperiod has ended (the version is overdue for rotation if active).
    pub cryptoperiod_ended: bool,
    pub state_reason: Option<String>,
    pub usage_count: i64,
    pub records: i64,
    pub kcv: String,
    pub kek_label: String,
    pub wrap_mechanism: String,
    /// For a destroyed version: what its destruction does and does not yet cover.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destruction: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KekInfo {
    pub label: String,
    pub state: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Inventory {
    pub hsm_token: String,
    pub keks: Vec<KekInfo>,
    pub audit_signing_key: String,
    pub keys: Vec<KeyInfo>,
    /// Transit signing key versions (key pairs in the HSM): public keys only.
    pub signing_keys: Vec<SigningKeyInfo>,
}

/// What `init` did.
#[derive(Debug, Default)]
pub struct InitReport {
    pub created: Vec<String>,
}

/// The usable fingerprint keys by version, the active one first.
pub type FingerprintKeys = Vec<(KeyVersion, Arc<FingerprintKey>)>;

pub struct KeyManager {
    hsm: Arc<Hsm>,
    store: Store,
    audit: AuditLog,
    labels: KeyLabels,
    keyrings: BTreeMap<String, KeyringSettings>,
    cache: RwLock<HashMap<(String, KeyVersion), Arc<DataKey>>>,
    active: RwLock<HashMap<String, KeyVersion>>,
    fingerprints: RwLock<BTreeMap<KeyVersion, Arc<FingerprintKey>>>,
    /// The usable fingerprint keys, active first; rebuilt after `refresh`.
    fingerprint_list: RwLock<Option<FingerprintKeys>>,
    /// Encryptions already reserved in the database and not yet used, per keyring.
    reservations: tokio::sync::Mutex<HashMap<String, lifecycle::Reservation>>,
    /// Whether the HSM answers; while it does not, no key is handed out.
    health: health::Health,
    /// An HSM call slower than this fails (and marks the HSM down).
    call_timeout: Duration,
    /// Transit signing keys: configured names and their versions as last read.
    signing: signing::SigningKeys,
}

impl std::fmt::Debug for KeyManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyManager")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

/// Unix milliseconds as RFC 3339 UTC.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

impl KeyManager {
    pub fn new(
        hsm: Arc<Hsm>,
        store: Store,
        labels: KeyLabels,
        keyrings: BTreeMap<String, KeyringSettings>,
    ) -> Self {
        Self {
            audit: AuditLog::new(store.clone()),
            hsm,
            store,
            labels,
            keyrings,
            cache: RwLock::default(),
            active: RwLock::default(),
            fingerprints: RwLock::default(),
            fingerprint_list: RwLock::default(),
            reservations: tokio::sync::Mutex::default(),
            health: health::Health::default(),
            call_timeout: Duration::from_secs(3),
            signing: signing::SigningKeys::default(),
        }
    }

    /// Sets how long an HSM call may take before it counts as an HSM failure.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    pub fn hsm(&self) -> &Arc<Hsm> {
        &self.hsm
    }

    pub fn labels(&self) -> &KeyLabels {
        &self.labels
    }

    /// Runs a blocking HSM call off the async threads. A device error, or no answer
    /// within the call timeout, marks the HSM down (see `health`); a call that timed out
    /// finishes on its blocking thread and its result is dropped.
    async fn hsm_call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Hsm) -> Result<T, HsmError> + Send + 'static,
    ) -> Result<T, KeyError> {
        let hsm = self.hsm.clone();
        let call = tokio::task::spawn_blocking(move || f(&hsm));
        let result = match tokio::time::timeout(self.call_timeout, call).await {
            Ok(joined) => {
                joined.map_err(|e| KeyError::Internal(format!("HSM task failed: {e}")))?
            }
            Err(_) => Err(HsmError::Unavailable(format!(
                "no answer within {} ms",
                self.call_timeout.as_millis()
            ))),
        };
        result.map_err(|e| {
            if e.is_unavailable() {
                self.mark_hsm_down(&e.to_string());
            }
            KeyError::from(e)
        })
    }

    /// Drops every cached data key and fingerprint key (they zeroize when the last
    /// request using one finishes); they come back only through the HSM.
    fn forget_keys(&self) {
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.fingerprints
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        *self
            .fingerprint_list
            .write()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Idempotent: finds or creates the KEK, the audit signing key and a first data key
    /// for every configured keyring and the fingerprint keyring.
    pub async fn init(&self, actor: &str, now: i64) -> Result<InitReport, KeyError> {
        let mut report = InitReport::default();
        let kek = match self.store.active_kek().await? {
            Some(row) => {
                let label = row.label.clone();
                let found = self.hsm_call(move |h| h.check_kek(&label)).await;
                match found {
                    Err(KeyError::Hsm(HsmError::KeyMissing(_))) => {
                        return Err(KeyError::KekMissing(row.label));
                    }
                    other => other?,
                }
                row.label
            }
            None => {
                let label = self.labels.kek(self.store.keks().await?.len() + 1);
                let l = label.clone();
                if self.hsm_call(move |h| h.ensure_kek(&l)).await? {
                    report.created.push(format!("KEK {label} (in the HSM)"));
                }
                let mut atx = self.audit.begin().await?;
                self.store.insert_kek(&mut atx.tx, &label, now).await?;
                let event =
                    AuditEvent::new(actor, Action::KekCreate, Outcome::Success).resource(&label);
                atx.append(&event, now).await?;
                atx.commit().await?;
                label
            }
        };
        let signing = self.labels.audit_signing();
        let s = signing.clone();
        if self.hsm_call(move |h| h.ensure_signing_key(&s)).await? {
            report.created.push(format!(
                "audit signing key {signing} (EC P-256, in the HSM)"
            ));
        }
        let names: Vec<String> = self
            .keyrings
            .keys()
            .cloned()
            .chain([FINGERPRINT_KEYRING.to_owned()])
            .collect();
        for keyring in names {
            if self.store.active_data_key(&keyring).await?.is_none() {
                let v = self
                    .create_version(&keyring, &kek, None, actor, Some("init"), now)
                    .await?;
                report.created.push(format!("data key {keyring} v{v}"));
            }
        }
        self.init_signing_keys(actor, now, &mut report.created)
            .await?;
        Ok(report)
    }

    /// What [`KeyManager::init`] would create, without creating anything.
    pub async fn missing(&self) -> Result<Vec<String>, KeyError> {
        let mut missing = Vec::new();
        if self.store.active_kek().await?.is_none() {
            missing.push("the KEK".to_owned());
        }
        let signing = self.labels.audit_signing();
        let s = signing.clone();
        match self.hsm_call(move |h| h.signing_public_key(&s)).await {
            Ok(_) => {}
            Err(KeyError::Hsm(HsmError::KeyMissing(_))) => {
                missing.push(format!("the audit signing key {signing}"));
            }
            Err(e) => return Err(e),
        }
        for keyring in self
            .keyrings
            .keys()
            .cloned()
            .chain([FINGERPRINT_KEYRING.to_owned()])
        {
            if self.store.active_data_key(&keyring).await?.is_none() {
                missing.push(format!("the first data key of {keyring}"));
            }
        }
        missing.extend(self.missing_signing_keys().await?);
        Ok(missing)
    }

    /// Generates a new data key in the HSM and makes it the keyring's active version.
    /// With `replaces`, nothing happens unless that version is still the active one
    /// (another process may have rotated first); the active version is returned.
    ///
    /// The key is wrapped under `kek_label`, and inserted only if that is still the active
    /// KEK inside the inserting transaction; if a KEK rotation committed meanwhile, the key
    /// is made again under the new KEK (the rotation's own check covers the other order).
    pub(crate) async fn create_version(
        &self,
        keyring: &str,
        kek_label: &str,
        replaces: Option<KeyVersion>,
        actor: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<KeyVersion, KeyError> {
        let mut kek_label = kek_label.to_owned();
        let mut attempts = 0;
        let (mut atx, wrapped, value) = loop {
            let kek = kek_label.clone();
            let (wrapped, value) = self.hsm_call(move |h| h.generate_data_key(&kek)).await?;
            let mut atx = self.audit.begin().await?;
            match self.store.active_kek_in(&mut atx.tx).await? {
                Some(active) if active == kek_label => break (atx, wrapped, value),
                Some(active) if attempts < 3 => {
                    attempts += 1;
                    drop(atx);
                    kek_label = active;
                }
                _ => {
                    return Err(KeyError::Lifecycle(format!(
                        "the KEK changed while {keyring} got a new data key; try again"
                    )));
                }
            }
        };
        let kek_label = kek_label.as_str();
        let kcv = hex::encode(crypto::kcv(&value));
        let mechanism = self.hsm.wrap_mechanism().to_string();
        if let Some(expected) = replaces {
            let current = self.store.active_version_in(&mut atx.tx, keyring).await?;
            if current != Some(i64::from(expected.get())) {
                drop(atx);
                self.refresh().await?;
                return Ok(self.active(keyring).await?.0);
            }
        }
        let version = self.store.max_version(&mut atx.tx, keyring).await? + 1;
        let v = KeyVersion::from_db(version)
            .ok_or_else(|| KeyError::Internal("version overflow".into()))?;
        self.store
            .insert_active_data_key(
                &mut atx.tx,
                &NewDataKey {
                    keyring,
                    version,
                    wrapped_key: &wrapped,
                    wrap_mechanism: &mechanism,
                    kek_label,
                    kcv: &kcv,
                    now,
                    cryptoperiod_ends_at: now + self.settings(keyring).0,
                },
            )
            .await?;
        let event = AuditEvent::new(actor, Action::KeyCreate, Outcome::Success)
            .resource(format!("{keyring}/{v}"))
            .reason(reason.map(str::to_owned));
        atx.append(&event, now).await?;
        atx.commit().await?;
        self.remember(keyring, v, value)?;
        self.active
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(keyring.to_owned(), v);
        if keyring == FINGERPRINT_KEYRING {
            *self
                .fingerprint_list
                .write()
                .unwrap_or_else(|p| p.into_inner()) = None;
        }
        Ok(v)
    }

    fn remember(
        &self,
        keyring: &str,
        v: KeyVersion,
        value: Zeroizing<Vec<u8>>,
    ) -> Result<(), KeyError> {
        if keyring == FINGERPRINT_KEYRING {
            let fk = FingerprintKey::from_bytes(value)?;
            self.fingerprints
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(v, Arc::new(fk));
        } else {
            let dk = DataKey::from_bytes(value)?;
            self.cache
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert((keyring.to_owned(), v), Arc::new(dk));
        }
        Ok(())
    }

    /// Unwraps a stored data key through the HSM and checks it against its KCV.
    async fn unwrap(&self, row: &DataKeyRow) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let v = KeyVersion::from_db(row.version)
            .ok_or_else(|| StoreError::Corrupt("key version".into()))?;
        match KeyState::parse(&row.state) {
            Some(KeyState::Destroyed) => return Err(KeyError::Destroyed(row.keyring.clone(), v)),
            Some(KeyState::Retired) => return Err(KeyError::Retired(row.keyring.clone(), v)),
            Some(_) => {}
            None => return Err(StoreError::Corrupt(format!("key state `{}`", row.state)).into()),
        }
        let wrapped = row
            .wrapped_key
            .clone()
            .ok_or_else(|| KeyError::Destroyed(row.keyring.clone(), v))?;
        let mechanism =
            WrapMechanism::from_stored(&row.wrap_mechanism).map_err(StoreError::Corrupt)?;
        let kek = row.kek_label.clone();
        let value = self
            .hsm_call(move |h| h.unwrap_data_key(&kek, mechanism, &wrapped))
            .await?;
        let expected = hex::decode(&row.kcv).unwrap_or_default();
        if !bool::from(crypto::kcv(&value).as_slice().ct_eq(&expected)) {
            return Err(KeyError::KcvMismatch(row.keyring.clone(), v));
        }
        Ok(value)
    }

    /// The data key `keyring` v`version`, from the cache or unwrapped once through the HSM.
    pub async fn key(&self, keyring: &str, version: KeyVersion) -> Result<Arc<DataKey>, KeyError> {
        self.ensure_hsm_available()?;
        let cache_key = (keyring.to_owned(), version);
        if let Some(k) = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&cache_key)
        {
            return Ok(k.clone());
        }
        let row = self
            .store
            .data_key(keyring, i64::from(version.get()))
            .await?
            .ok_or_else(|| KeyError::UnknownVersion(keyring.to_owned(), version))?;
        let value = self.unwrap(&row).await?;
        self.remember(keyring, version, value)?;
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&cache_key)
            .cloned()
            .ok_or_else(|| KeyError::Internal("key cache".into()))
    }

    /// The active version of `keyring` and its key.
    pub async fn active(&self, keyring: &str) -> Result<(KeyVersion, Arc<DataKey>), KeyError> {
        let (version, _) = self.active_version(keyring).await?;
        Ok((version, self.key(keyring, version).await?))
    }

    /// The active version of `keyring` (from memory; the database on first use).
    async fn active_version(&self, keyring: &str) -> Result<(KeyVersion, ()), KeyError> {
        let known = self
            .active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(keyring)
            .copied();
        let version = match known {
            Some(v) => v,
            None => {
                let row = self
                    .store
                    .active_data_key(keyring)
                    .await?
                    .ok_or_else(|| KeyError::NotInitialized(keyring.to_owned()))?;
                let v = KeyVersion::from_db(row.version)
                    .ok_or_else(|| StoreError::Corrupt("key version".into()))?;
                self.active
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(keyring.to_owned(), v);
                v
            }
        };
        Ok((version, ()))
    }

    /// The usable fingerprint keys, the active one first: lookups try each, so a value
    /// finds its token while the fingerprints are re-indexed to a new key.
    pub async fn fingerprint_keys(
        &self,
    ) -> Result<Vec<(KeyVersion, Arc<FingerprintKey>)>, KeyError> {
        self.ensure_hsm_available()?;
        if let Some(list) = self
            .fingerprint_list
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Ok(list.clone());
        }
        let (active, _) = self.active_version(FINGERPRINT_KEYRING).await?;
        let mut rows: Vec<DataKeyRow> = self
            .store
            .data_keys()
            .await?
            .into_iter()
            .filter(|r| {
                r.keyring == FINGERPRINT_KEYRING
                    && (r.state == "active" || r.state == "decrypt-only")
            })
            .collect();
        let active = i64::from(active.get());
        rows.sort_by_key(|r| (r.version != active, std::cmp::Reverse(r.version)));
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let Some(v) = KeyVersion::from_db(row.version) else {
                continue;
            };
            let known = self
                .fingerprints
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&v)
                .cloned();
            let key = match known {
                Some(k) => k,
                None => {
                    let value = self.unwrap(&row).await?;
                    self.remember(FINGERPRINT_KEYRING, v, value)?;
                    self.fingerprints
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&v)
                        .cloned()
                        .ok_or_else(|| KeyError::Internal("fingerprint cache".into()))?
                }
            };
            out.push((v, key));
        }
        *self
            .fingerprint_list
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(out.clone());
        Ok(out)
    }

    /// Checks the active KEK against the key policy, then loads every active key so the
    /// first requests make no HSM call. `serve` refuses to start when this fails.
    pub async fn warm(&self) -> Result<(), KeyError> {
        let kek = self
            .store
            .active_kek()
            .await?
            .ok_or_else(|| KeyError::NotInitialized("(KEK)".into()))?;
        let label = kek.label.clone();
        match self.hsm_call(move |h| h.check_kek(&label)).await {
            Err(KeyError::Hsm(HsmError::KeyMissing(_))) => {
                return Err(KeyError::KekMissing(kek.label));
            }
            other => other?,
        }
        for keyring in self.keyrings.keys() {
            self.active(keyring).await?;
        }
        self.fingerprint_keys().await?;
        Ok(())
    }

    /// Re-reads key states (another process may have rotated, retired or destroyed):
    /// updates the active versions and drops cached keys that may no longer be used.
    pub async fn refresh(&self) -> Result<(), KeyError> {
        let mut fresh = HashMap::new();
        let mut unusable = Vec::new();
        for row in self.store.data_keys().await? {
            let Some(v) = KeyVersion::from_db(row.version) else {
                continue;
            };
            match KeyState::parse(&row.state) {
                Some(KeyState::Active) => {
                    fresh.insert(row.keyring, v);
                }
                Some(KeyState::DecryptOnly) => {}
                _ => unusable.push((row.keyring, v)),
            }
        }
        {
            let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
            for k in &unusable {
                cache.remove(k);
            }
        }
        {
            let mut fps = self.fingerprints.write().unwrap_or_else(|p| p.into_inner());
            for (ring, v) in &unusable {
                if ring == FINGERPRINT_KEYRING {
                    fps.remove(v);
                }
            }
        }
        let mut active = self.active.write().unwrap_or_else(|p| p.into_inner());
        if active.get(FINGERPRINT_KEYRING) != fresh.get(FINGERPRINT_KEYRING) || !unusable.is_empty()
        {
            *self
                .fingerprint_list
                .write()
                .unwrap_or_else(|p| p.into_inner()) = None;
        }
        *active = fresh;
        self.signing.forget();
        Ok(())
    }

    /// The key inventory. Reads the database only; never key material.
    pub async fn inventory(&self, now: i64) -> Result<Inventory, KeyError> {
        let kek_rows = self.store.keks().await?;
        let records: HashMap<(String, i64), i64> = self
            .store
            .records_per_key()
            .await?
            .into_iter()
            .map(|(k, v, n)| ((k, v), n))
            .collect();
        let keys = self
            .store
            .data_keys()
            .await?
            .into_iter()
            .map(|r| KeyInfo {
                records: records
                    .get(&(r.keyring.clone(), r.version))
                    .copied()
                    .unwrap_or(0),
                version: u32::try_from(r.version).unwrap_or(0),
                state: r.state.clone(),
                algorithm: if r.keyring == FINGERPRINT_KEYRING {
                    "HMAC-SHA-256 (HKDF subkeys)".into()
                } else {
                    r.algorithm
                },
                created_at: rfc3339(r.created_at),
                created_ms: r.created_at,
                age_days: (now - r.created_at).max(0) / DAY_MS,
                activated_at: r.activated_at.map(rfc3339),
                cryptoperiod_ends_at: rfc3339(r.cryptoperiod_ends_at),
                cryptoperiod_ended: now >= r.cryptoperiod_ends_at,
                state_reason: r.state_reason,
                usage_count: r.usage_count,
                destruction: (r.state == "destroyed").then(|| {
                    let live = keks_that_may_hold(&kek_rows, r.created_at, r.state_changed_at)
                        .filter(|k| k.state != "destroyed")
                        .map(|k| k.label.as_str())
                        .collect::<Vec<_>>();
                    destruction(&r.keyring, r.version, &live)
                }),
                kcv: r.kcv,
                kek_label: r.kek_label,
                // Shown as what was really used (an old KWP label means PAD was sent).
                wrap_mechanism: WrapMechanism::from_stored(&r.wrap_mechanism)
                    .map_or(r.wrap_mechanism, |m| m.to_string()),
                keyring: r.keyring,
            })
            .collect();
        let keks = self
            .store
            .keks()
            .await?
            .into_iter()
            .map(|k| KekInfo {
                label: k.label,
                state: k.state,
                created_at: rfc3339(k.created_at),
            })
            .collect();
        Ok(Inventory {
            hsm_token: self.hsm.token_label().to_owned(),
            keks,
            audit_signing_key: self.labels.audit_signing(),
            keys,
            signing_keys: self.signing_inventory().await?,
        })
    }
}

/// The KEKs that may have wrapped a data key at some time between its creation and its
/// destruction (`destroyed_at`): a database backup from then holds it wrapped by one of
/// them.
pub fn keks_that_may_hold(
    keks: &[crate::store::KekRow],
    created_at: i64,
    destroyed_at: i64,
) -> impl Iterator<Item = &crate::store::KekRow> {
    keks.iter().filter(move |k| {
        k.created_at <= destroyed_at && k.retired_at.is_none_or(|r| r >= created_at)
    })
}

/// What destroying a data key version achieved: the wrapped key is gone from the database,
/// but a backup taken before still holds it, wrapped by a KEK of its lifetime. Only when
/// every such KEK (`live` lists those not destroyed) is destroyed too is the version
/// unrecoverable everywhere (HSM backups of those KEKs aside).
fn destruction(keyring: &str, version: i64, live: &[&str]) -> String {
    if live.is_empty() {
        "unrecoverable: the wrapped key is erased and every KEK that wrapped it during its \
         life is destroyed (HSM backups of those KEKs excepted)"
            .into()
    } else {
        format!(
            "erased from the database, but recoverable from database backups taken before \
             its destruction for as long as KEK {} exists; to end that: tokenvault keys \
             rotate-kek, then keys destroy-kek for each (or request keys destroy {keyring} \
             {version} --with-kek next time)",
            live.join(", ")
        )
    }
}
