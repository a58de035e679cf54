//! Wiring shared by `serve` and the CLI: settings → HSM + database + key manager.

use std::sync::Arc;

use crate::config::Settings;
use crate::hsm::{Hsm, HsmError, Pin};
use crate::keys::{KeyLabels, KeyManager};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Hsm(#[from] HsmError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The opened vault: what every command works on.
#[derive(Debug, Clone)]
pub struct Vault {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub keys: Arc<KeyManager>,
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
    /// The HSM-backed signer of audit checkpoints and reports.
    pub fn checkpointer(&self) -> crate::audit::checkpoint::Checkpointer {
        crate::audit::checkpoint::Checkpointer::new(
            self.store.clone(),
            self.keys.hsm().clone(),
            self.keys.labels().audit_signing(),
        )
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
        let keys = KeyManager::new(
            Arc::new(hsm),
            store.clone(),
            KeyLabels::new(&settings.hsm.label_prefix),
            settings.keyrings.clone(),
        )
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
