//! The encrypt API: seal caller bytes under a keyring's active key, bound to the
//! keyring, version and the caller's optional context; open them; re-seal them under
//! the active version without the plaintext leaving the vault.

use std::collections::BTreeMap;
use std::sync::Arc;

use zeroize::Zeroizing;

use super::ServiceError;
use crate::audit::writer::{Write, Writer};
use crate::audit::{AuditEvent, Outcome};
use crate::config::KeyringSettings;
use crate::crypto::{Aad, Ciphertext};
use crate::keys::{KeyError, KeyManager, KeyringName};
use crate::policy::Principal;

pub struct CryptoService {
    keys: Arc<KeyManager>,
    writer: Writer,
    keyrings: BTreeMap<String, KeyringSettings>,
}

impl CryptoService {
    pub fn new(
        keys: Arc<KeyManager>,
        writer: Writer,
        keyrings: BTreeMap<String, KeyringSettings>,
    ) -> Self {
        Self {
            keys,
            writer,
            keyrings,
        }
    }

    async fn record(&self, event: AuditEvent, now: i64) -> Result<(), ServiceError> {
        self.writer
            .submit(Write::Event { event, at: now })
            .await
            .map(drop)
            .map_err(|e| ServiceError::Unavailable(format!("audit trail unavailable: {e}")))
    }

    async fn deny<T>(
        &self,
        who: &Principal,
        action: &str,
        keyring: &str,
        now: i64,
    ) -> Result<T, ServiceError> {
        let event = AuditEvent::new(&who.identity, action, Outcome::Denied)
            .origin(&who.origin)
            .resource(keyring)
            .reason(Some("forbidden".into()));
        self.record(event, now).await?;
        Err(ServiceError::Forbidden(format!(
            "not allowed to {action} with keyring `{keyring}`"
        )))
    }

    fn known(&self, keyring: &str) -> Result<(), ServiceError> {
        if self.keyrings.contains_key(keyring) {
            Ok(())
        } else {
            Err(ServiceError::InvalidRequest(format!(
                "unknown keyring `{keyring}`"
            )))
        }
    }

    pub async fn encrypt(
        &self,
        who: &Principal,
        keyring: &str,
        plaintext: &[u8],
        context: &[u8],
        now: i64,
    ) -> Result<String, ServiceError> {
        if !who.may(&format!("encrypt:{keyring}")) {
            return self.deny(who, "encrypt", keyring, now).await;
        }
        self.known(keyring)?;
        let name =
            KeyringName::parse(keyring).map_err(|e| ServiceError::InvalidRequest(e.into()))?;
        let (version, key) = self.keys.seal_key(keyring, 1, now).await?;
        let sealed = key.seal(&Aad::encrypt(keyring, version.get(), context), plaintext);
        let event = AuditEvent::new(&who.identity, "encrypt", Outcome::Success)
            .origin(&who.origin)
            .resource(format!("{keyring}/{version}"));
        self.record(event, now).await?;
        Ok(Ciphertext {
            keyring: name,
            version,
            sealed,
        }
        .to_string())
    }

    fn parse(ciphertext: &str) -> Result<Ciphertext, ServiceError> {
        ciphertext
            .parse()
            .map_err(|e: crate::crypto::CiphertextError| {
                ServiceError::InvalidRequest(e.to_string())
            })
    }

    async fn open(
        &self,
        ct: &Ciphertext,
        context: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ServiceError> {
        let key = match self.keys.key(ct.keyring.as_str(), ct.version).await {
            Err(KeyError::UnknownVersion(..)) => {
                return Err(ServiceError::InvalidValue(
                    "the ciphertext names a key version that does not exist".into(),
                ));
            }
            other => other?,
        };
        key.open(
            &Aad::encrypt(ct.keyring.as_str(), ct.version.get(), context),
            &ct.sealed,
        )
        .map_err(|_| {
            ServiceError::InvalidValue(
                "the ciphertext does not open under its keyring and this context".into(),
            )
        })
    }

    pub async fn decrypt(
        &self,
        who: &Principal,
        ciphertext: &str,
        context: &[u8],
        now: i64,
    ) -> Result<Zeroizing<Vec<u8>>, ServiceError> {
        let ct = Self::parse(ciphertext)?;
        let keyring = ct.keyring.as_str();
        if !who.may(&format!("decrypt:{keyring}")) {
            return self.deny(who, "decrypt", keyring, now).await;
        }
        self.known(keyring)?;
        let resource = format!("{keyring}/{}", ct.version);
        let outcome = self.open(&ct, context).await;
        let event = AuditEvent::new(
            &who.identity,
            "decrypt",
            if outcome.is_ok() {
                Outcome::Success
            } else {
                Outcome::Failure
            },
        )
        .origin(&who.origin)
        .resource(resource)
        .reason(outcome.as_ref().err().map(|e| e.code().to_owned()));
        self.record(event, now).await?;
        outcome
    }

    /// Re-seals under the active version; the plaintext never leaves this function.
    pub async fn rewrap(
        &self,
        who: &Principal,
        ciphertext: &str,
        context: &[u8],
        now: i64,
    ) -> Result<String, ServiceError> {
        let ct = Self::parse(ciphertext)?;
        let keyring = ct.keyring.as_str();
        if !who.may(&format!("encrypt:{keyring}")) {
            return self.deny(who, "rewrap", keyring, now).await;
        }
        self.known(keyring)?;
        let plain = self.open(&ct, context).await?;
        let (version, key) = self.keys.seal_key(keyring, 1, now).await?;
        let sealed = key.seal(&Aad::encrypt(keyring, version.get(), context), &plain);
        let event = AuditEvent::new(&who.identity, "rewrap", Outcome::Success)
            .origin(&who.origin)
            .resource(format!("{keyring}/{}->{version}", ct.version));
        self.record(event, now).await?;
        Ok(Ciphertext {
            keyring: ct.keyring,
            version,
            sealed,
        }
        .to_string())
    }
}
