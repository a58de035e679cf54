//! The HSM user PIN: redacted when printed, zeroized on drop, compared only by digest.

use std::fmt;
use std::path::Path;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::HsmError;

/// The HSM user PIN. Never printed, never serialized.
pub struct Pin(SecretString);

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin([REDACTED])")
    }
}

impl Pin {
    pub fn new(pin: SecretString) -> Self {
        Pin(pin)
    }

    /// Reads a PIN file, refusing one that group or others may read.
    pub fn from_file(path: &Path) -> Result<Self, HsmError> {
        let err = |reason: String| HsmError::PinFile {
            path: path.to_owned(),
            reason,
        };
        let text = crate::secret_file::read_private_file(path).map_err(err)?;
        let pin = text.trim();
        if pin.is_empty() {
            return Err(err("the file is empty".into()));
        }
        Ok(Pin(SecretString::from(pin)))
    }

    /// The PIN itself, for `C_Login` only.
    pub(super) fn secret(&self) -> &SecretString {
        &self.0
    }

    pub(super) fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.expose_secret().as_bytes()).into()
    }
}
