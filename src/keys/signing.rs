//! Transit signing keys: named, versioned key pairs generated inside the HSM (ECDSA P-256
//! or Ed25519). Each version is a token object pair under its own label; the private half
//! never leaves the HSM, and signing is an HSM call. The database records each version's
//! label, public key and state: the newest version signs, older ones only verify.
//! Verification needs only the public key and runs in the process (RustCrypto's p256 and
//! ed25519-dalek), so checking a signature costs no HSM call.
//!
//! Versions are created by `init` (the first) and by `keys rotate <name>`, like data key
//! versions, each with its `key.create` audit event.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::{KeyError, KeyManager, KeyVersion};
use crate::audit::{Action, AuditEvent, Outcome};
use crate::crypto::random_bytes;
use crate::hsm::SignAlgorithm;
use crate::store::{SigningKeyRow, StoreError};

/// A signing key as the config declares it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct SigningKeySettings {
    pub algorithm: SignAlgorithm,
}

/// One version of a signing key, as the vault uses it. Only public material.
#[derive(Debug, Clone)]
pub struct SigningVersion {
    pub version: KeyVersion,
    pub algorithm: SignAlgorithm,
    /// The label of its key pair in the HSM.
    pub label: String,
    /// SEC1 uncompressed point (ECDSA P-256) or the 32-byte key (Ed25519).
    pub public_key: Vec<u8>,
    pub created_ms: i64,
    pub active: bool,
}

/// The configured signing keys and, per key, its versions as last read. `generation`
/// counts the times the cache was emptied, so a read that started before a rotation never
/// puts its older list back afterwards.
#[derive(Debug, Default)]
pub(super) struct SigningKeys {
    configured: BTreeMap<String, SignAlgorithm>,
    versions: RwLock<HashMap<String, Arc<Vec<SigningVersion>>>>,
    generation: AtomicU64,
}

impl SigningKeys {
    /// Empties the cache (every node does on its key refresh, every 2 s: a version rotated
    /// elsewhere stops signing here by then).
    pub(super) fn forget(&self) {
        let mut versions = self.versions.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        versions.clear();
    }

    /// Drops one key's versions (after this node rotated it, or was asked for a newer one).
    fn forget_key(&self, name: &str) {
        let mut versions = self.versions.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        versions.remove(name);
    }
}

fn version_of(row: &SigningKeyRow) -> Result<SigningVersion, KeyError> {
    Ok(SigningVersion {
        version: KeyVersion::from_db(row.version)
            .ok_or_else(|| StoreError::Corrupt("signing key version".into()))?,
        algorithm: SignAlgorithm::parse(&row.algorithm).ok_or_else(|| {
            StoreError::Corrupt(format!("signing key algorithm `{}`", row.algorithm))
        })?,
        label: row.hsm_label.clone(),
        public_key: row.public_key.clone(),
        created_ms: row.created_at,
        active: row.state == "active",
    })
}

impl KeyManager {
    /// Declares the configured signing keys (none unless this is called).
    pub fn with_signing_keys(mut self, keys: &BTreeMap<String, SigningKeySettings>) -> Self {
        self.signing.configured = keys
            .iter()
            .map(|(name, s)| (name.clone(), s.algorithm))
            .collect();
        self
    }

    /// The algorithm of the configured signing key `name`.
    pub fn signing_algorithm(&self, name: &str) -> Option<SignAlgorithm> {
        self.signing.configured.get(name).copied()
    }

    /// The configured signing keys' names, sorted.
    pub fn signing_key_names(&self) -> Vec<String> {
        self.signing.configured.keys().cloned().collect()
    }

    /// Creates the first version of every configured signing key that has none.
    pub(super) async fn init_signing_keys(
        &self,
        actor: &str,
        now: i64,
        created: &mut Vec<String>,
    ) -> Result<(), KeyError> {
        for (name, algorithm) in &self.signing.configured {
            if self.store.signing_versions(name).await?.is_empty()
                && let Some(v) = self
                    .create_signing_version(name, *algorithm, true, actor, Some("init"), now)
                    .await?
            {
                created.push(format!(
                    "signing key {name} v{v} ({}, in the HSM)",
                    algorithm.as_str()
                ));
            }
        }
        Ok(())
    }

    /// The signing keys `init` would create.
    pub(super) async fn missing_signing_keys(&self) -> Result<Vec<String>, KeyError> {
        let mut missing = Vec::new();
        for name in self.signing.configured.keys() {
            if self.store.signing_versions(name).await?.is_empty() {
                missing.push(format!("the first version of signing key {name}"));
            }
        }
        Ok(missing)
    }

    /// A new signing version of `name`; the one before it verifies only.
    pub(super) async fn rotate_signing(
        &self,
        name: &str,
        actor: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<KeyVersion, KeyError> {
        let algorithm = self
            .signing_algorithm(name)
            .ok_or_else(|| KeyError::UnknownKeyring(name.to_owned()))?;
        self.create_signing_version(name, algorithm, false, actor, reason, now)
            .await?
            .ok_or_else(|| KeyError::Internal("a rotation made no version".into()))
    }

    /// Generates a key pair in the HSM, then records it as the newest version with its
    /// audit event in one transaction. The pair is made before the transaction, so the
    /// audit trail is never held while the HSM works; its label carries random bits, not
    /// the version. If the transaction fails, or (`first_only`) another process made the
    /// first version meanwhile, the pair is destroyed again and no version is returned.
    async fn create_signing_version(
        &self,
        name: &str,
        algorithm: SignAlgorithm,
        first_only: bool,
        actor: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<Option<KeyVersion>, KeyError> {
        let mut nonce = [0u8; 8];
        random_bytes(&mut nonce);
        let label = format!(
            "{}-sign-{name}-{}",
            self.labels.prefix(),
            hex::encode(nonce)
        );
        let l = label.clone();
        let public_key = self
            .hsm_call(move |h| h.generate_signing_pair(&l, algorithm))
            .await?;
        let recorded = self
            .record_signing_version(
                name, algorithm, &label, public_key, first_only, actor, reason, now,
            )
            .await;
        if !matches!(recorded, Ok(Some(_))) {
            let l = label.clone();
            if let Err(e) = self.hsm_call(move |h| h.destroy_objects(&l)).await {
                tracing::error!(label, error = %e, "could not destroy an unrecorded key pair");
            }
        }
        self.signing.forget_key(name);
        recorded
    }

    #[allow(clippy::too_many_arguments)]
    async fn record_signing_version(
        &self,
        name: &str,
        algorithm: SignAlgorithm,
        label: &str,
        public_key: Vec<u8>,
        first_only: bool,
        actor: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<Option<KeyVersion>, KeyError> {
        let mut atx = self.audit.begin().await?;
        let newest = self.store.max_signing_version(&mut atx.tx, name).await?;
        if first_only && newest != 0 {
            return Ok(None);
        }
        let version = newest + 1;
        let v = KeyVersion::from_db(version)
            .ok_or_else(|| KeyError::Internal("version overflow".into()))?;
        self.store
            .insert_active_signing_version(
                &mut atx.tx,
                &SigningKeyRow {
                    name: name.to_owned(),
                    version,
                    algorithm: algorithm.as_str().to_owned(),
                    state: "active".into(),
                    hsm_label: label.to_owned(),
                    public_key,
                    created_at: now,
                    state_changed_at: now,
                },
            )
            .await?;
        let event = AuditEvent::new(actor, Action::KeyCreate, Outcome::Success)
            .resource(format!("{name}/{v}"))
            .reason(reason.map(str::to_owned));
        atx.append(&event, now).await?;
        atx.commit().await?;
        Ok(Some(v))
    }

    /// The versions of the configured signing key `name`, oldest first (from memory; the
    /// database when not read yet or after `refresh`).
    pub async fn signing_versions(&self, name: &str) -> Result<Arc<Vec<SigningVersion>>, KeyError> {
        if self.signing_algorithm(name).is_none() {
            return Err(KeyError::UnknownKeyring(name.to_owned()));
        }
        if let Some(v) = self
            .signing
            .versions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(v.clone());
        }
        let generation = self.signing.generation.load(Ordering::SeqCst);
        let rows = self.store.signing_versions(name).await?;
        if rows.is_empty() {
            return Err(KeyError::NotInitialized(name.to_owned()));
        }
        let versions = Arc::new(rows.iter().map(version_of).collect::<Result<Vec<_>, _>>()?);
        let mut cache = self
            .signing
            .versions
            .write()
            .unwrap_or_else(|p| p.into_inner());
        // Emptied since this read began (a rotation, a refresh): what was read may be old.
        if self.signing.generation.load(Ordering::SeqCst) == generation {
            cache.insert(name.to_owned(), versions.clone());
        }
        Ok(versions)
    }

    /// The version of `name` that signs: the newest (`version`, if given, must be it).
    pub async fn active_signing(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<SigningVersion, KeyError> {
        let versions = self.signing_versions(name).await?;
        let active = versions
            .iter()
            .rfind(|v| v.active)
            .cloned()
            .ok_or_else(|| KeyError::NotInitialized(name.to_owned()))?;
        if version.is_some_and(|v| v != active.version.get()) {
            return Err(KeyError::Lifecycle(
                "key_version: only the signing key's newest version signs".into(),
            ));
        }
        Ok(active)
    }

    /// Signs `message` in the HSM with `key`: ECDSA P-256 gives r ‖ s (over SHA-256 of
    /// the message, or over `message` itself when `prehashed`), Ed25519 its 64 bytes.
    pub async fn sign_with(
        &self,
        key: &SigningVersion,
        message: &[u8],
        prehashed: bool,
    ) -> Result<Vec<u8>, KeyError> {
        self.ensure_hsm_available()?;
        let (label, algorithm, message) = (key.label.clone(), key.algorithm, message.to_vec());
        self.hsm_call(move |h| h.sign_transit(&label, algorithm, &message, prehashed))
            .await
    }

    /// The version `version` of `name` (read again from the database if this node has not
    /// seen it yet: another node may have rotated).
    pub async fn signing_version(
        &self,
        name: &str,
        version: KeyVersion,
    ) -> Result<SigningVersion, KeyError> {
        let known = self.signing_versions(name).await?;
        if let Some(v) = known.iter().find(|v| v.version == version) {
            return Ok(v.clone());
        }
        // Only a version newer than the newest known can have been made since: read this
        // key again for that, never for a version that cannot exist.
        let newest = known.iter().map(|v| v.version).max();
        if newest.is_none_or(|n| version > n) {
            self.signing.forget_key(name);
            if let Some(v) = self
                .signing_versions(name)
                .await?
                .iter()
                .find(|v| v.version == version)
            {
                return Ok(v.clone());
            }
        }
        Err(KeyError::UnknownVersion(name.to_owned(), version))
    }
}

/// One signing key version in the key inventory: never anything secret.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SigningKeyInfo {
    pub name: String,
    pub version: u32,
    /// `ecdsa-p256` or `ed25519`.
    pub algorithm: String,
    /// `active` (signs) or `verify_only`.
    pub state: String,
    pub created_at: String,
    #[serde(skip)]
    pub created_ms: i64,
    /// As Vault shows it: PEM (SubjectPublicKeyInfo) for ECDSA, base64 for Ed25519.
    pub public_key: String,
    /// The label of the key pair in the HSM.
    pub hsm_label: String,
}

/// A public key as Vault's key description shows it.
pub fn public_key_text(algorithm: SignAlgorithm, key: &[u8]) -> String {
    use base64::Engine;
    use p256::pkcs8::{EncodePublicKey, LineEnding};
    match algorithm {
        SignAlgorithm::EcdsaP256 => p256::PublicKey::from_sec1_bytes(key)
            .ok()
            .and_then(|k| k.to_public_key_pem(LineEnding::LF).ok())
            .unwrap_or_default(),
        SignAlgorithm::Ed25519 => base64::engine::general_purpose::STANDARD.encode(key),
    }
}

impl KeyManager {
    pub(super) async fn signing_inventory(&self) -> Result<Vec<SigningKeyInfo>, KeyError> {
        self.store
            .all_signing_versions()
            .await?
            .iter()
            .map(|row| {
                let v = version_of(row)?;
                Ok(SigningKeyInfo {
                    name: row.name.clone(),
                    version: v.version.get(),
                    algorithm: v.algorithm.as_str().to_owned(),
                    state: row.state.clone(),
                    created_at: super::rfc3339(row.created_at),
                    created_ms: row.created_at,
                    public_key: public_key_text(v.algorithm, &v.public_key),
                    hsm_label: v.label,
                })
            })
            .collect()
    }
}
