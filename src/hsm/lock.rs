//! The object lock: SoftHSM2 corrupts its token when objects are created or destroyed
//! concurrently, by threads or by processes. Every write goes through `with_object_lock`.

use std::path::Path;

use super::{Hsm, HsmError};

impl Hsm {
    /// Runs `f` under the object lock: across threads with the module's mutex, across
    /// processes with an exclusive lock on `hsm.lock_file`.
    ///
    /// **The rule:** every call that creates, destroys or rewrites an object in the token
    /// runs inside `f`: generating the KEK and the signing key pair, the transient data
    /// keys that `generate_data_key`, `unwrap_data_key` and `rewrap_data_key` create and
    /// destroy, `destroy_objects`, and login (SoftHSM2 rewrites its token file in place
    /// at login). SoftHSM2's file store corrupts its token under concurrent writers
    /// (orphaned half-created objects, see HSM-NOTES); network HSMs do not need the file
    /// (set `hsm.lock_file = ""` there). Tests that write through a raw session take the
    /// same file lock.
    ///
    /// Reads stay outside: `find` (and so `kek_handle` before a write), `probe`, the
    /// evidence readers, `sign`, `random` and `labels_with_prefix` create and destroy
    /// nothing, and only concurrent writers were seen to corrupt the token. Keeping them
    /// out means the health probe and audit signing never queue behind key generation.
    ///
    /// `Hsm::open` is the one exception: it loads the module and reads the token under
    /// the file lock alone (`lock_objects_file`), because the mutex lives in the module
    /// it is loading; its login then comes through here.
    ///
    /// The lock is not reentrant: `f` must not call another method that takes it.
    pub(super) fn with_object_lock<T>(
        &self,
        f: impl FnOnce() -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        // The mutex first: threads of this process queue on it, so at most one of them
        // waits on (and holds) the file lock. Both are released when `f` returns.
        let _threads = self
            .module
            .create_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let _processes = lock_objects_file(self.lock_file.as_deref())?;
        f()
    }
}

/// The exclusive lock on `hsm.lock_file` (none when it is not configured); released
/// when the returned file closes.
pub(super) fn lock_objects_file(path: Option<&Path>) -> Result<Option<std::fs::File>, HsmError> {
    let Some(path) = path else { return Ok(None) };
    let err = |source: std::io::Error| HsmError::LockFile {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    // Private from creation, like every file the vault creates.
    let f = crate::secret_file::private_options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(err)?;
    f.lock().map_err(err)?;
    Ok(Some(f))
}
