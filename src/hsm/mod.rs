//! The only module that speaks PKCS#11. It loads the module, finds the token by label,
//! logs in, keeps a pool of sessions and offers the few operations the vault needs:
//! KEK and audit key creation, wrap/unwrap of data keys, random bytes, ECDSA signatures
//! and attribute evidence.
//!
//! Every method here blocks: async callers run them in `spawn_blocking`.
//!
//! One file per concern, the way cryptoki splits its session module: this file holds the
//! `Hsm` itself (open, login, reconnect) and the per-process module registry; `lock` the
//! object lock every write goes through; `objects` finding, creating and destroying
//! token objects; `wrap` data keys; `sign` the audit signing key; `evidence` and `policy`
//! what a key must look like and what it does look like.

mod error;
mod evidence;
mod lock;
mod mechanism;
mod objects;
mod pin;
pub mod policy;
mod session;
mod sign;
mod wrap;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::ObjectHandle;
use cryptoki::session::UserType;
use cryptoki::slot::Slot;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub use error::HsmError;
use error::failed;
pub use evidence::{KeyEvidence, TokenEvidence};
use lock::lock_objects_file;
pub use mechanism::WrapMechanism;
pub use pin::Pin;
pub use policy::{KeyRole, SignAlgorithm};
use session::SessionPool;

/// Counts a call into the HSM (`tokenvault_hsm_calls_total`): the steady state makes none.
fn count(op: &'static str) {
    metrics::counter!("tokenvault_hsm_calls_total", "op" => op).increment(1);
}

/// A PKCS#11 module loaded once per process. `C_Initialize` and login are per process,
/// so every `Hsm` on the same module shares this.
struct Module {
    pkcs11: Pkcs11,
    /// SoftHSM2 corrupts its token when objects are created or destroyed concurrently.
    create_lock: Mutex<()>,
    /// Digest of the PIN each slot was logged in with, so a second login in the same
    /// process with another PIN is refused instead of silently accepted.
    logins: Mutex<HashMap<u64, [u8; 32]>>,
}

fn module(path: &Path) -> Result<Arc<Module>, HsmError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();
    let mut modules = MODULES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(m) = modules.get(path) {
        return Ok(m.clone());
    }
    let load_err = |reason: String| HsmError::ModuleLoad {
        path: path.to_owned(),
        reason,
    };
    if !path.exists() {
        return Err(load_err("no such file".into()));
    }
    let pkcs11 = Pkcs11::new(path).map_err(|e| load_err(e.to_string()))?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(load_err(e.to_string())),
    }
    let m = Arc::new(Module {
        pkcs11,
        create_lock: Mutex::new(()),
        logins: Mutex::new(HashMap::new()),
    });
    modules.insert(path.to_owned(), m.clone());
    Ok(m)
}

/// An open, logged-in HSM token.
pub struct Hsm {
    module: Arc<Module>,
    token_label: String,
    /// Kept (redacted, zeroized on drop) to log in again after the HSM drops the login.
    pin: Pin,
    pool: SessionPool,
    wrap: WrapMechanism,
    handles: Mutex<HashMap<String, ObjectHandle>>,
    lock_file: Option<PathBuf>,
}

impl fmt::Debug for Hsm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hsm")
            .field("token", &self.token_label)
            .field("wrap", &self.wrap)
            .finish()
    }
}

impl Hsm {
    /// Loads `module_path`, finds the token labelled `token_label` and logs in.
    pub fn open(
        module_path: &Path,
        token_label: &str,
        pin: Pin,
        wrap: WrapMechanism,
        sessions: usize,
        lock_file: Option<&Path>,
    ) -> Result<Self, HsmError> {
        // SoftHSM2 rewrites its token file in place at login: loading the module and
        // reading the token while another process logs in can see half a file, so both
        // happen under the cross-process lock (alone: the mutex `with_object_lock` takes
        // first lives in the module being loaded).
        let (module, slot) = {
            let _file = lock_objects_file(lock_file)?;
            let module = module(module_path)?;
            let slot = find_slot(&module.pkcs11, token_label)?;
            (module, slot)
        };
        let pool = SessionPool::new(module.pkcs11.clone(), slot, sessions);
        let hsm = Hsm {
            module,
            token_label: token_label.to_owned(),
            pin,
            pool,
            wrap,
            handles: Mutex::new(HashMap::new()),
            lock_file: lock_file.map(Path::to_path_buf),
        };
        hsm.with_object_lock(|| hsm.login())?;
        tracing::debug!(token = token_label, "HSM session open");
        Ok(hsm)
    }

    /// Starts over after an outage (a device error, a restart that dropped every session
    /// and the login, a removed and re-inserted token): closes every session, finds the
    /// token again by label (its slot may have changed), logs in again and forgets every
    /// object handle, so keys are found afresh.
    pub fn reconnect(&self) -> Result<(), HsmError> {
        self.with_object_lock(|| {
            let slot = find_slot(&self.module.pkcs11, &self.token_label)?;
            self.pool.reset(slot);
            self.handles
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            self.login()
        })
    }

    fn login(&self) -> Result<(), HsmError> {
        let mut logins = self.module.logins.lock().unwrap_or_else(|p| p.into_inner());
        let digest = self.pin.digest();
        let slot = self.pool.slot().id();
        let session = self.pool.anchor()?;
        let result = session.login(UserType::User, Some(self.pin.secret()));
        match result {
            Ok(()) => {
                logins.insert(slot, digest);
                Ok(())
            }
            // Login is per process: the slot is already logged in. Accept only the same PIN.
            Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => match logins.get(&slot) {
                Some(known) if bool::from(known.ct_eq(&digest)) => Ok(()),
                _ => Err(HsmError::PinIncorrect),
            },
            Err(CkError::Pkcs11(
                RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
                _,
            )) => Err(HsmError::PinIncorrect),
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(HsmError::PinLocked),
            Err(e) => Err(HsmError::pkcs11("C_Login", e)),
        }
    }

    pub fn token_label(&self) -> &str {
        &self.token_label
    }

    pub fn wrap_mechanism(&self) -> WrapMechanism {
        self.wrap
    }

    /// Random bytes from the HSM's generator.
    pub fn random(&self, len: usize) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        count("random");
        let session = self.pool.get()?;
        let mut buf = Zeroizing::new(vec![0u8; len]);
        session
            .generate_random_slice(&mut buf)
            .map_err(session.failed("C_GenerateRandom"))?;
        Ok(buf)
    }
}

/// The slot holding the token labelled `label`, skipping tokens that cannot even describe
/// themselves (a damaged token elsewhere must not stop us from finding ours).
fn find_slot(pkcs11: &Pkcs11, label: &str) -> Result<Slot, HsmError> {
    pkcs11
        .get_slots_with_token()
        .map_err(failed("C_GetSlotList"))?
        .into_iter()
        .find(|slot| {
            pkcs11
                .get_token_info(*slot)
                .is_ok_and(|info| info.label().trim_end() == label)
        })
        .ok_or_else(|| HsmError::TokenNotFound(label.to_owned()))
}
