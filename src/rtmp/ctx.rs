//! What we keep per RTMP session, in its connection's pool (dropped with it): its registry
//! entry while admitted, its wait for the master, its pushes, and when it last published.

use std::cell::RefCell;

use mesh_core::handles::Handle;

use super::waiting;
use crate::nginx::rtmp::Session;
use crate::push::Pushes;
use crate::registry;

#[derive(Default)]
pub struct SessionCtx {
    /// Registry id while admitted.
    pub reg: Option<u64>,
    /// A publish or play waiting for the auth endpoint (its handle in waiting.rs).
    pub pending: Option<Handle>,
    /// Pushes of a published stream, while it is published.
    pub pushes: Option<Pushes>,
    /// When (ms, the event loop's clock) a publish on this connection was last passed on.
    pub published_at: Option<u64>,
}

impl SessionCtx {
    /// End a wait for the master, if any: the question is taken back, a late answer dropped.
    pub fn cancel_pending(&mut self) {
        if let Some(h) = self.pending.take() {
            waiting::cancel(h);
        }
    }

    /// Leave the registry, if admitted.
    pub fn unregister(&mut self) {
        if let Some(id) = self.reg.take() {
            registry::remove(id);
        }
    }
}

impl Drop for SessionCtx {
    fn drop(&mut self) {
        self.unregister();
        self.cancel_pending();
    }
}

/// What the session's ctx slot holds: a `RefCell`, so that a second borrow (a hook run again
/// by nginx-rtmp while `f` holds the context) is refused instead of making two `&mut`.
type Slot = RefCell<SessionCtx>;

/// `f` of our context of a session, if made. `f` must not call into nginx-rtmp (which may run
/// our hooks, which take the context again): take what it needs and act after. (If it does,
/// the inner call finds no context: None.)
pub fn with<R>(s: Session, f: impl FnOnce(&mut SessionCtx) -> R) -> Option<R> {
    // SAFETY: Slot is the one type we keep in our ctx slot.
    let slot = unsafe { s.ctx::<Slot>() }?;
    let mut c = slot.try_borrow_mut().ok()?;
    Some(f(&mut c))
}

/// The same, the context made on first use (None only when the pool is out of memory).
pub fn with_made<R>(s: Session, f: impl FnOnce(&mut SessionCtx) -> R) -> Option<R> {
    // SAFETY: as in with.
    let slot = unsafe { s.ctx_or_default::<Slot>() }?;
    let mut c = slot.try_borrow_mut().ok()?;
    Some(f(&mut c))
}
