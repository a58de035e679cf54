//! The object lock: SoftHSM2 corrupts its token when objects are created or destroyed
//! concurrently, by threads or by processes.

use std::path::Path;

use super::{Hsm, HsmError};

/// Held while token objects change; the file lock is released when the file closes.
pub(super) struct ObjectLock<'a> {
    _guard: std::sync::MutexGuard<'a, ()>,
    _file: Option<std::fs::File>,
}

impl Hsm {
    /// Serializes calls that create, destroy or rewrite token objects: across threads
    /// with a mutex, across processes with an exclusive lock on `hsm.lock_file`.
    /// SoftHSM2's file store corrupts its token under concurrent writers; network HSMs
    /// do not need the file (set `hsm.lock_file = ""` there).
    pub(super) fn object_lock(&self) -> Result<ObjectLock<'_>, HsmError> {
        let guard = self
            .module
            .create_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Ok(ObjectLock {
            _guard: guard,
            _file: lock_objects_file(self.lock_file.as_deref())?,
        })
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
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(err)?;
    f.lock().map_err(err)?;
    Ok(Some(f))
}
