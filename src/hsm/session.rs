//! A small pool of PKCS#11 sessions. A session belongs to one caller at a time and goes
//! back to the pool on drop, unless a call on it showed it to be broken.

use std::cell::Cell;
use std::ops::Deref;
use std::sync::{Mutex, MutexGuard};

use cryptoki::context::Pkcs11;
use cryptoki::session::Session;
use cryptoki::slot::Slot;

use super::{HsmError, device};

pub(super) struct SessionPool {
    pkcs11: Pkcs11,
    slot: Slot,
    /// Kept open for the life of the pool: closing the last session logs the process out.
    anchor: Mutex<Option<Session>>,
    idle: Mutex<Vec<Session>>,
    max_idle: usize,
}

impl SessionPool {
    pub(super) fn new(pkcs11: Pkcs11, slot: Slot, max_idle: usize) -> Self {
        Self {
            pkcs11,
            slot,
            anchor: Mutex::new(None),
            idle: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    /// The anchor session, opened on first use.
    pub(super) fn anchor(&self) -> Result<AnchorGuard<'_>, HsmError> {
        let mut anchor = self.anchor.lock().unwrap_or_else(|p| p.into_inner());
        if anchor.is_none() {
            *anchor = Some(self.pkcs11.open_rw_session(self.slot).map_err(device)?);
        }
        Ok(AnchorGuard(anchor))
    }

    pub(super) fn get(&self) -> Result<PooledSession<'_>, HsmError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let session = match idle {
            Some(s) => s,
            None => self.pkcs11.open_rw_session(self.slot).map_err(device)?,
        };
        Ok(PooledSession {
            pool: self,
            session: Some(session),
            broken: Cell::new(false),
        })
    }
}

pub(super) struct AnchorGuard<'a>(MutexGuard<'a, Option<Session>>);

impl Deref for AnchorGuard<'_> {
    type Target = Session;
    fn deref(&self) -> &Session {
        // Invariant: `SessionPool::anchor` fills the option before building the guard.
        self.0.as_ref().expect("anchor session is open")
    }
}

pub(super) struct PooledSession<'a> {
    pool: &'a SessionPool,
    session: Option<Session>,
    broken: Cell<bool>,
}

impl PooledSession<'_> {
    /// Marks the session as not to be reused when `err` says the device is unusable.
    pub(super) fn fail(&self, err: HsmError) -> HsmError {
        if err.is_unavailable() {
            self.broken.set(true);
        }
        err
    }
}

impl Deref for PooledSession<'_> {
    type Target = Session;
    fn deref(&self) -> &Session {
        // Invariant: the option is only emptied in `drop`.
        self.session
            .as_ref()
            .expect("pooled session present until drop")
    }
}

impl Drop for PooledSession<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
            if !self.broken.get() && idle.len() < self.pool.max_idle {
                idle.push(s);
            }
        }
    }
}
