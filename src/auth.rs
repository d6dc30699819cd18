//! Asking the master's auth endpoint without blocking the event loop, in nginx-rtmp's netcall
//! manner: the worker's question book ([`mesh_core::auth::Book`]: askers under handles, one
//! call per question, the caps on strangers, the answer cache) and the calls it says to send
//! or take back, through the master link.
//!
//! [`decide`] is the one admission decision of RTMP sessions and HTTP requests alike
//! (mesh-core's, with this worker's book when a master is configured).

use std::cell::RefCell;

use mesh_agent::agent::{Call, Refused};
use mesh_agent::client::CallError;
use mesh_core::admission::{self, Outcome, Request};
use mesh_core::auth::{Answered, AskError, Book, Waiter};
use mesh_core::handles::Handle;
use mesh_core::node::Node;
use mesh_core::wire::{AuthReply, AuthRequest};

use crate::link;

thread_local! {
    static BOOK: RefCell<Book> = RefCell::new(Book::default());
}

/// Set the caps (worker start, from `mesh_auth_pending_max` and `mesh_auth_pending_per_addr`).
pub fn set_limits(pending_max: usize, per_addr_max: usize) {
    BOOK.with_borrow_mut(|b| b.set_limits(pending_max, per_addr_max));
}

/// Questions waiting now (for `mesh_status`): all, and those of unknown credentials.
pub fn pending() -> (usize, usize) {
    BOOK.with_borrow(Book::pending)
}

/// The admission decision for `req` at `now` (see [`mesh_core::admission::decide`]): the
/// master's cached answers apply when a master is configured.
pub fn decide(req: &Request<'_>, node: &Node, now: u64) -> Outcome {
    if link::has_master() {
        BOOK.with_borrow(|b| admission::decide(req, node, Some(b), now))
    } else {
        admission::decide(req, node, None, now)
    }
}

/// Ask the master `req` for `waiter`; the handle names the asker's wait until it is answered
/// or cancelled. A second asker of the same question waits for the same call.
pub fn ask(waiter: Waiter, req: &AuthRequest) -> Result<Handle, AskError> {
    let asking = BOOK.with_borrow_mut(|b| b.ask(waiter, req))?;
    let Some(send) = asking.send else { return Ok(asking.handle) };
    match link::call(Call::Auth { id: send.id, req: req.clone(), known: send.known }) {
        Ok(()) => Ok(asking.handle),
        Err(e) => {
            BOOK.with_borrow_mut(|b| b.not_sent(asking.handle));
            Err(match e {
                Refused::Full => AskError::Busy,
                Refused::NoMaster => AskError::Unavailable,
            })
        }
    }
}

/// The asker left: its wait ends, and a question nobody else waits for is taken back (never
/// sent, if still queued; its answer, if one comes, is dropped).
pub fn cancel(h: Handle) {
    // try_with: a session's ctx may be dropped while the thread's locals are torn down.
    let id = BOOK.try_with(|b| b.borrow_mut().cancel(h)).ok().flatten();
    if let Some(id) = id {
        link::cancel_call(id);
    }
}

/// An answer arrived (event loop): cached, and handed to everyone waiting for it. None for a
/// call nobody waits for any more (the caller drops it).
pub fn on_answer(id: u64, result: Result<AuthReply, CallError>, now: u64) -> Option<Answered> {
    BOOK.with_borrow_mut(|b| b.on_answer(id, result, now))
}
