//! A small pool of PKCS#11 sessions. A session belongs to one caller at a time and goes
//! back to the pool on drop, unless a call on it showed it to be broken or the pool was
//! reset (after an HSM outage) while it was out.

use std::cell::Cell;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use cryptoki::context::Pkcs11;
use cryptoki::session::Session;
use cryptoki::slot::Slot;

use cryptoki::error::Error as CkError;

use super::HsmError;
use super::error::failed;

pub(super) struct SessionPool {
    pkcs11: Pkcs11,
    slot: Mutex<Slot>,
    /// Kept open for the life of the pool: closing the last session logs the process out.
    anchor: Mutex<Option<Session>>,
    idle: Mutex<Vec<Session>>,
    max_idle: usize,
    /// Bumped by `reset`: a session opened before it is closed when it comes back.
    generation: AtomicU64,
}

impl SessionPool {
    pub(super) fn new(pkcs11: Pkcs11, slot: Slot, max_idle: usize) -> Self {
        Self {
            pkcs11,
            slot: Mutex::new(slot),
            anchor: Mutex::new(None),
            idle: Mutex::new(Vec::new()),
            max_idle,
            generation: AtomicU64::new(0),
        }
    }

    pub(super) fn slot(&self) -> Slot {
        *self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes every pooled session and the anchor (the device may already have dropped
    /// them) and makes `slot` the one new sessions open on.
    pub(super) fn reset(&self, slot: Slot) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = slot;
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        drop(idle);
        self.anchor.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// The anchor session, opened on first use.
    pub(super) fn anchor(&self) -> Result<AnchorGuard<'_>, HsmError> {
        let mut anchor = self.anchor.lock().unwrap_or_else(|p| p.into_inner());
        if anchor.is_none() {
            *anchor = Some(
                self.pkcs11
                    .open_rw_session(self.slot())
                    .map_err(failed("C_OpenSession"))?,
            );
        }
        Ok(AnchorGuard(anchor))
    }

    pub(super) fn get(&self) -> Result<PooledSession<'_>, HsmError> {
        let generation = self.generation.load(Ordering::SeqCst);
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let session = match idle {
            Some(s) => s,
            None => self
                .pkcs11
                .open_rw_session(self.slot())
                .map_err(failed("C_OpenSession"))?,
        };
        Ok(PooledSession {
            pool: self,
            session: Some(session),
            broken: Cell::new(false),
            generation,
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
    generation: u64,
}

impl PooledSession<'_> {
    /// Marks the session as not to be reused when `err` says the device is unusable.
    pub(super) fn fail(&self, err: HsmError) -> HsmError {
        if err.is_unavailable() {
            self.broken.set(true);
        }
        err
    }

    /// For `map_err` on a call `op` made on this session: the typed error, with the
    /// session marked broken as `fail` does.
    pub(super) fn failed(&self, op: &'static str) -> impl FnOnce(CkError) -> HsmError + '_ {
        move |err| self.fail(HsmError::pkcs11(op, err))
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
            let current = self.pool.generation.load(Ordering::SeqCst) == self.generation;
            if current && !self.broken.get() && idle.len() < self.pool.max_idle {
                idle.push(s);
            }
        }
    }
}
