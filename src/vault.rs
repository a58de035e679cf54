//! Wiring shared by `serve` and the CLI: settings → HSM + database + key manager, and
//! the services over them, built in one place.

use std::sync::Arc;

use crate::audit::writer::Writer;
use crate::audit::{Action, AuditEvent, Outcome};
use crate::config::Settings;
use crate::error::Error;
use crate::guard::{Guard, Principal, RateLimit};
use crate::hsm::{Hsm, HsmError, Pin};
use crate::keys::{Inventory, KeyLabels, KeyManager};
use crate::session::SessionService;
use crate::store::{Store, StoreError};
use crate::tokenize::{CryptoService, TokenService, ValueLimits};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Hsm(#[from] HsmError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The config says one environment and the database was made for the other.
    #[error(
        "this database belongs to a {recorded} vault but the config says environment = \"{configured}\": refusing to open it (a staging config pointed at production data, or the reverse)"
    )]
    Environment {
        configured: &'static str,
        recorded: String,
    },
}

/// The opened vault: what every command works on.
#[derive(Debug, Clone)]
pub struct Vault {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub keys: Arc<KeyManager>,
}

/// The services every surface (API, CLI, tests) works through: one writer, one guard,
/// one tokenize path, one encrypt path. Cheap to clone.
#[derive(Clone)]
pub struct Services {
    /// Group-committing writer of every write and audit event of this process.
    pub writer: Writer,
    pub guard: Arc<Guard>,
    keys: Arc<KeyManager>,
    pub tokens: Arc<TokenService>,
    pub crypto: Arc<CryptoService>,
    /// Sessions of the Vault-compatible API.
    pub sessions: Arc<SessionService>,
}

impl Services {
    /// The key inventory for a client (`keys:read`): never key material.
    pub async fn key_inventory(&self, who: &Principal, now: i64) -> Result<Inventory, Error> {
        self.guard
            .check(who, Action::KeysList, "read", None, now)
            .await?;
        // Read first, then audit what happened: a success event for an inventory that
        // was never served would be a false record.
        let result = self.keys.inventory(now).await.map_err(Error::from);
        let event = match &result {
            Ok(_) => AuditEvent::new(&who.identity, Action::KeysList, Outcome::Success),
            Err(e) => AuditEvent::new(&who.identity, Action::KeysList, Outcome::Failure)
                .reason(Some(e.code().as_str().to_owned())),
        };
        self.guard.record(event.origin(&who.origin), now).await?;
        result
    }
}

/// The PIN from `TOKENVAULT_HSM__PIN` or the PIN file.
pub fn pin(settings: &Settings) -> Result<Pin, HsmError> {
    match (&settings.hsm.pin, &settings.hsm.pin_file) {
        (Some(pin), _) => Ok(Pin::new(pin.clone())),
        (None, Some(file)) => Pin::from_file(file),
        (None, None) => Err(HsmError::NoPin),
    }
}

impl Vault {
    /// Builds the services. Starts the group-commit writer on the current tokio runtime,
    /// so call it once per process and share the result.
    pub fn services(&self) -> Services {
        let s = &self.settings;
        let writer = Writer::spawn(self.store.clone());
        let unknown_rate = RateLimit {
            per_second: Some(s.limits.unknown_rate_per_second),
            burst: Some(s.limits.unknown_burst),
        };
        let clients = s.clients.iter().map(|(id, c)| (id, c.anomaly.as_ref()));
        let scorer = crate::anomaly::Scorer::new(
            &s.anomaly,
            &crate::anomaly::AnomalySettings::overrides(clients),
            self.store.clone(),
        );
        tokio::spawn(crate::anomaly::flush_every(
            Arc::downgrade(&scorer),
            std::time::Duration::from_secs(s.anomaly.flush_secs.max(1)),
            now_ms,
        ));
        let alerts = crate::anomaly::webhook::Alerts::start(
            s.anomaly.webhook.as_ref(),
            writer.clone(),
            now_ms,
        );
        let guard = Arc::new(Guard::new(
            &s.clients,
            unknown_rate,
            s.limits.new_values_per_hour,
            (scorer, alerts),
            writer.clone(),
        ));
        let tokens = TokenService::new(
            self.keys.clone(),
            self.store.clone(),
            writer.clone(),
            guard.clone(),
            s.types.clone(),
            ValueLimits {
                max_value_bytes: s.limits.max_value_bytes,
                max_metadata_bytes: s.limits.max_metadata_bytes,
            },
        );
        let crypto = CryptoService::new(self.keys.clone(), guard.clone());
        let (tokens, crypto) = match s.environment {
            crate::nonprod::Environment::Production => (tokens, crypto),
            crate::nonprod::Environment::Nonproduction => {
                let test_data = Arc::new(s.nonproduction.clone());
                (
                    tokens.with_test_data(test_data.clone()),
                    crypto.with_test_data(test_data),
                )
            }
        };
        let sessions = SessionService::new(
            self.store.clone(),
            writer.clone(),
            guard.clone(),
            s.vault_api.clone(),
        );
        Services {
            writer,
            guard,
            keys: self.keys.clone(),
            tokens: Arc::new(tokens),
            crypto: Arc::new(crypto),
            sessions: Arc::new(sessions),
        }
    }

    /// The HSM-backed signer of audit checkpoints and reports.
    pub fn checkpointer(&self) -> crate::audit::checkpoint::Checkpointer {
        crate::audit::checkpoint::Checkpointer::new(
            self.store.clone(),
            self.keys.hsm().clone(),
            self.keys.labels().audit_signing(),
        )
        .with_environment(self.settings.environment.as_str())
        .with_sinks(crate::audit::sink::CheckpointSinks::from_settings(
            &self.settings.audit,
        ))
    }

    pub async fn open(settings: Settings) -> Result<Self, OpenError> {
        let pin = pin(&settings)?;
        let h = settings.hsm.clone();
        let hsm = tokio::task::spawn_blocking(move || {
            let lock = Some(h.lock_file.as_path()).filter(|p| !p.as_os_str().is_empty());
            Hsm::open(
                &h.module,
                &h.token_label,
                pin,
                h.wrap_mechanism,
                h.sessions,
                lock,
            )
        })
        .await
        .map_err(|e| HsmError::TaskFailed(e.to_string()))??;
        let store =
            Store::connect(&settings.database.url, settings.database.max_connections).await?;
        // The first open records the environment; every later one must match it. A
        // database that already holds an audit trail but no environment was made before
        // environments were recorded: it is a production vault's, whatever opens it.
        let configured = settings.environment.as_str();
        let claim = if store.audit_tip().await?.0 > 0 {
            crate::nonprod::Environment::Production.as_str()
        } else {
            configured
        };
        // The row is unsigned: the HSM keeps the environment too, in a data object a
        // database writer cannot touch (labelled outside `<prefix>-`, where the key report
        // counts key objects), compared at every open and checked first, so a refused open
        // writes nothing. It is made at the first open from the best evidence there is:
        // the newest signed checkpoint's environment, else the row (a vault from before
        // the object existed), else the claim.
        let signed = store.latest_checkpoint().await?.and_then(|c| c.environment);
        let row = store.meta("environment").await?;
        let seed = signed.clone().or(row).unwrap_or_else(|| claim.to_owned());
        let anchor = format!("{}.environment", settings.hsm.label_prefix);
        let held = hsm.claim_data(&anchor, seed.as_bytes())?;
        if held != configured.as_bytes() {
            return Err(OpenError::Environment {
                configured,
                recorded: String::from_utf8_lossy(&held).into_owned(),
            });
        }
        let recorded = store.claim_meta("environment", claim).await?;
        if recorded != configured {
            return Err(OpenError::Environment {
                configured,
                recorded,
            });
        }
        // The newest checkpoint signs the environment: a row flipped by a database writer
        // disagrees with it (and a checkpoint rewritten to match breaks its signature: no
        // further checkpoint is signed and `audit verify` fails).
        if let Some(signed) = signed
            && signed != configured
        {
            return Err(OpenError::Environment {
                configured,
                recorded: signed,
            });
        }
        let keys = KeyManager::new(
            Arc::new(hsm),
            store.clone(),
            KeyLabels::new(&settings.hsm.label_prefix),
            settings.keyrings.clone(),
        )
        .with_signing_keys(&settings.signing_keys)
        .with_call_timeout(std::time::Duration::from_millis(
            settings.hsm.call_timeout_ms,
        ));
        Ok(Self {
            settings: Arc::new(settings),
            store,
            keys: Arc::new(keys),
        })
    }
}

/// Unix time in milliseconds: the clock is read only at the edges.
pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
