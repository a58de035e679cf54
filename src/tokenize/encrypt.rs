//! The encrypt API: seal caller bytes under a keyring's active key, bound to the
//! keyring, version and the caller's optional context; open them; re-seal them under
//! the active version without the plaintext leaving the vault.

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::audit::{Action, AuditEvent, Outcome};
use crate::crypto::{Aad, Ciphertext};
use crate::error::Error;
use crate::guard::{Guard, Principal};
use crate::keys::{KeyError, KeyManager, KeyVersion, KeyringName};

/// The one encrypt path: every surface that encrypts, decrypts or rewraps goes through
/// these methods, which ask the guard first.
pub struct CryptoService {
    pub(super) keys: Arc<KeyManager>,
    pub(super) guard: Arc<Guard>,
    /// Set in a non-production vault: plaintext holding a live card number is refused.
    test_data: Option<Arc<crate::nonprod::TestData>>,
}

impl CryptoService {
    pub fn new(keys: Arc<KeyManager>, guard: Arc<Guard>) -> Self {
        Self {
            keys,
            guard,
            test_data: None,
        }
    }

    /// A non-production vault's encrypt path: refuses plaintext that holds a card number
    /// outside the test prefixes ([`crate::nonprod::TestData::check_plaintext`]).
    pub fn with_test_data(mut self, test_data: Arc<crate::nonprod::TestData>) -> Self {
        self.test_data = Some(test_data);
        self
    }

    fn known(&self, keyring: &str) -> Result<(), Error> {
        if self.keys.has_keyring(keyring) {
            Ok(())
        } else {
            Err(Error::InvalidRequest(
                "unknown keyring (the configured keyrings are in the vault's config)".into(),
            ))
        }
    }

    /// A convergent ciphertext is a keyed deterministic function of its plaintext, like an
    /// HMAC digest: whoever may make one can test guesses against stored ones. Making one
    /// (encrypt, rewrap) needs the grant of deterministic outputs, `hmac:<keyring>`, too;
    /// a refusal is audited as that missing grant.
    async fn convergent_allowed(
        &self,
        who: &Principal,
        keyring: &str,
        now: i64,
    ) -> Result<(), Error> {
        if self.keys.is_convergent(keyring) && !who.may(crate::audit::Verb::Hmac, keyring) {
            self.guard
                .check(who, Action::Hmac, keyring, Some(keyring), now)
                .await?;
        }
        Ok(())
    }

    /// A derived keyring's operations each name a context.
    fn context_given(&self, keyring: &str, context: &[u8]) -> Result<(), Error> {
        if context.is_empty() && self.keys.is_derived(keyring) {
            return Err(Error::InvalidRequest(
                "this keyring is derived: every encryption, decryption and rewrap names a \
                 context"
                    .into(),
            ));
        }
        Ok(())
    }

    async fn succeeded(
        &self,
        who: &Principal,
        action: Action,
        resource: String,
        now: i64,
    ) -> Result<(), Error> {
        let event = AuditEvent::new(&who.identity, action, Outcome::Success)
            .origin(&who.origin)
            .resource(resource);
        self.guard.record(event, now).await
    }

    pub async fn encrypt(
        &self,
        who: &Principal,
        keyring: &str,
        plaintext: &[u8],
        context: &[u8],
        now: i64,
    ) -> Result<String, Error> {
        self.seal(who, keyring, plaintext, context, now)
            .await
            .map(|ct| ct.to_string())
    }

    /// [`Self::encrypt`], answering the parsed ciphertext (other surfaces render it in
    /// their own envelope).
    pub async fn seal(
        &self,
        who: &Principal,
        keyring: &str,
        plaintext: &[u8],
        context: &[u8],
        now: i64,
    ) -> Result<Ciphertext, Error> {
        self.seal_version(who, keyring, None, plaintext, context, now)
            .await
    }

    /// [`Self::seal`] that first requires `version`, when given, to be the active one
    /// (checked after the permission, so a caller without it learns nothing of it).
    pub async fn seal_version(
        &self,
        who: &Principal,
        keyring: &str,
        version: Option<u32>,
        plaintext: &[u8],
        context: &[u8],
        now: i64,
    ) -> Result<Ciphertext, Error> {
        // The name first: nothing a caller sends is used (permission, audit) unchecked.
        let name = KeyringName::parse(keyring)
            .map_err(|why| Error::InvalidRequest(format!("`keyring`: {why}")))?;
        let keyring = name.as_str();
        self.guard
            .check(who, Action::Encrypt, keyring, Some(keyring), now)
            .await?;
        self.known(keyring)?;
        self.convergent_allowed(who, keyring, now).await?;
        self.context_given(keyring, context)?;
        if let Some(test_data) = &self.test_data {
            test_data
                .check_plaintext(plaintext)
                .map_err(|why| Error::RealValue(why.0))?;
        }
        if let Some(want) = version {
            let (active, _) = self.keys.active(keyring).await?;
            if active.get() != want {
                return Err(Error::InvalidRequest(
                    "key_version: only the keyring's active version encrypts".into(),
                ));
            }
        }
        let (version, key) = self.keys.seal_key(keyring, 1, now).await?;
        let aad = Aad::encrypt(keyring, version.get(), context);
        let sealed = if self.keys.is_convergent(keyring) {
            key.seal_convergent(&aad, plaintext)
        } else {
            key.seal(&aad, plaintext)
        };
        self.succeeded(who, Action::Encrypt, format!("{keyring}/{version}"), now)
            .await?;
        Ok(Ciphertext {
            keyring: name,
            version,
            sealed,
        })
    }

    /// A keyed digest (HMAC-SHA-256 under the key's HMAC subkey) of `data` with the
    /// keyring's active version (`version`, if given, must be it); needs `hmac:<keyring>`.
    pub async fn hmac(
        &self,
        who: &Principal,
        keyring: &KeyringName,
        version: Option<u32>,
        data: &[u8],
        now: i64,
    ) -> Result<(KeyVersion, [u8; 32]), Error> {
        let name = keyring.as_str();
        self.guard
            .check(who, Action::Hmac, name, Some(name), now)
            .await?;
        self.known(name)?;
        // New digests, like new ciphertexts, come only from the active version.
        let (active, key) = self.keys.active(name).await?;
        if version.is_some_and(|v| v != active.get()) {
            return Err(Error::InvalidRequest(
                "key_version: only the keyring's active version makes new digests".into(),
            ));
        }
        let version = active;
        let mac = key.mac(data);
        self.succeeded(who, Action::Hmac, format!("{name}/{version}"), now)
            .await?;
        Ok((version, mac))
    }

    /// Whether `mac` is the keyed digest of `data` under `version`, compared in constant
    /// time; audited with its answer.
    pub async fn hmac_verify(
        &self,
        who: &Principal,
        keyring: &KeyringName,
        version: KeyVersion,
        data: &[u8],
        mac: &[u8],
        now: i64,
    ) -> Result<bool, Error> {
        let name = keyring.as_str();
        self.guard
            .check(who, Action::HmacVerify, name, Some(name), now)
            .await?;
        self.known(name)?;
        let key = self.mac_key(name, version).await?;
        let valid = bool::from(subtle::ConstantTimeEq::ct_eq(&key.mac(data)[..], mac));
        let event = AuditEvent::new(&who.identity, Action::HmacVerify, Outcome::Success)
            .origin(&who.origin)
            .resource(format!("{name}/{version}"))
            .reason(Some(if valid { "valid" } else { "invalid" }.to_owned()));
        self.guard.record(event, now).await?;
        Ok(valid)
    }

    async fn mac_key(
        &self,
        keyring: &str,
        version: KeyVersion,
    ) -> Result<Arc<crate::crypto::DataKey>, Error> {
        match self.keys.key(keyring, version).await {
            Err(KeyError::UnknownVersion(..)) => {
                Err(Error::InvalidValue("the key version does not exist".into()))
            }
            other => Ok(other?),
        }
    }

    fn parse(ciphertext: &str) -> Result<Ciphertext, Error> {
        ciphertext
            .parse()
            .map_err(|e: crate::crypto::CiphertextError| Error::InvalidRequest(e.to_string()))
    }

    async fn open(&self, ct: &Ciphertext, context: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.context_given(ct.keyring.as_str(), context)?;
        let key = match self.keys.key(ct.keyring.as_str(), ct.version).await {
            Err(KeyError::UnknownVersion(..)) => {
                return Err(Error::InvalidValue(
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
            Error::InvalidValue(
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
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.open_for(who, &Self::parse(ciphertext)?, context, now)
            .await
    }

    /// [`Self::decrypt`] of a parsed ciphertext.
    pub async fn open_for(
        &self,
        who: &Principal,
        ct: &Ciphertext,
        context: &[u8],
        now: i64,
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let mut one = self
            .open_batch(who, &ct.keyring, &[(ct, context)], now)
            .await?;
        one.pop()
            .unwrap_or_else(|| Err(Error::Internal("a decrypt gave no outcome".into())))
    }

    /// Decrypts many ciphertexts of one keyring: one permission check, the reveal budget
    /// charged for all of them before any opens (a batch past it reveals nothing), one
    /// audit event per item committed together, and only then the plaintexts. An item
    /// that does not open fails alone; an outage fails the whole call.
    pub async fn open_batch(
        &self,
        who: &Principal,
        keyring: &KeyringName,
        items: &[(&Ciphertext, &[u8])],
        now: i64,
    ) -> Result<Vec<Result<Zeroizing<Vec<u8>>, Error>>, Error> {
        let name = keyring.as_str();
        self.guard
            .check(who, Action::Decrypt, name, Some(name), now)
            .await?;
        let count = u64::try_from(items.len()).unwrap_or(u64::MAX);
        self.guard.charge(who, Action::Decrypt, count, now).await?;
        self.known(name)?;
        let mut outcomes = Vec::with_capacity(items.len());
        let mut events = Vec::with_capacity(items.len());
        for (ct, context) in items {
            let outcome = if ct.keyring == *keyring {
                self.open(ct, context).await
            } else {
                Err(Error::InvalidValue(
                    "the ciphertext does not open under its keyring and this context".into(),
                ))
            };
            if let Err(Error::Unavailable(detail)) = &outcome {
                return Err(Error::Unavailable(detail.clone()));
            }
            let event = AuditEvent::new(
                &who.identity,
                Action::Decrypt,
                if outcome.is_ok() {
                    Outcome::Success
                } else {
                    Outcome::Failure
                },
            )
            .origin(&who.origin)
            .resource(format!("{name}/{}", ct.version))
            .reason(outcome.as_ref().err().map(|e| e.code().as_str().to_owned()));
            events.push((event, now));
            outcomes.push(outcome);
        }
        self.guard.record_all(events).await?;
        Ok(outcomes)
    }

    /// Re-seals under the active version; the plaintext never leaves this function.
    pub async fn rewrap(
        &self,
        who: &Principal,
        ciphertext: &str,
        context: &[u8],
        now: i64,
    ) -> Result<String, Error> {
        self.reseal(who, Self::parse(ciphertext)?, context, now)
            .await
            .map(|ct| ct.to_string())
    }

    /// [`Self::rewrap`] of a parsed ciphertext.
    pub async fn reseal(
        &self,
        who: &Principal,
        ct: Ciphertext,
        context: &[u8],
        now: i64,
    ) -> Result<Ciphertext, Error> {
        let keyring = ct.keyring.as_str();
        self.guard
            .check(who, Action::Rewrap, keyring, Some(keyring), now)
            .await?;
        self.known(keyring)?;
        self.convergent_allowed(who, keyring, now).await?;
        let plain = match self.open(&ct, context).await {
            Ok(p) => p,
            Err(e @ Error::Unavailable(_)) => return Err(e),
            // A failed open is audited: without it, rewrap would be a silent oracle for
            // guessing the context of a ciphertext.
            Err(e) => {
                let event = AuditEvent::new(&who.identity, Action::Rewrap, Outcome::Failure)
                    .origin(&who.origin)
                    .resource(format!("{keyring}/{}", ct.version))
                    .reason(Some(e.code().as_str().to_owned()));
                self.guard.record(event, now).await?;
                return Err(e);
            }
        };
        let (version, key) = self.keys.seal_key(keyring, 1, now).await?;
        let aad = Aad::encrypt(keyring, version.get(), context);
        let sealed = if self.keys.is_convergent(keyring) {
            key.seal_convergent(&aad, &plain)
        } else {
            key.seal(&aad, &plain)
        };
        let resource = format!("{keyring}/{}->{version}", ct.version);
        self.succeeded(who, Action::Rewrap, resource, now).await?;
        Ok(Ciphertext {
            keyring: ct.keyring,
            version,
            sealed,
        })
    }
}
