//! Sessions suspended in publish or play while the master is asked about them.
//!
//! The one place a suspended session's handle is kept: an entry here lives exactly as long as
//! the session's wait. The session's ctx holds the entry's handle and removes it when the
//! session ends or sends another publish or play (ctx drop, close_stream, a replaced command);
//! removing it cancels the question. An answer reaches the session only through its handle,
//! and only when it answers the exact question the entry waits on.

use std::cell::RefCell;

use mesh_core::handles::{Handle, Handles};

use mesh_core::admission::Ask;
use mesh_core::auth::Question;
use mesh_core::wire::Action;

use crate::auth;
use crate::nginx::rtmp::{Play, Publish, Session};

/// A command kept while the auth endpoint is asked.
pub enum PendingCmd {
    Publish(Publish),
    Play(Play),
}

impl PendingCmd {
    pub fn action(&self) -> Action {
        match self {
            PendingCmd::Publish(_) => Action::Publish,
            PendingCmd::Play(_) => Action::Play,
        }
    }

    pub fn name(&self) -> String {
        match self {
            PendingCmd::Publish(c) => c.name(),
            PendingCmd::Play(c) => c.name(),
        }
    }

    pub fn args(&self) -> String {
        match self {
            PendingCmd::Publish(c) => c.args(),
            PendingCmd::Play(c) => c.args(),
        }
    }
}

pub struct Waiting {
    pub s: Session,
    pub cmd: PendingCmd,
    /// What was asked (the answer applies to exactly this question).
    pub ask: Ask,
    /// The question's handle in auth.rs.
    pub call: Handle,
}

thread_local! {
    /// Bounded by the auth caps (every entry has a question), and by worker_connections.
    static WAITING: RefCell<Handles<Waiting>> = RefCell::new(Handles::new(usize::MAX));
}

/// Keep a suspended session; its handle goes in the session's ctx. None only when the table
/// cannot grow (the caller refuses the session).
pub fn suspend(w: Waiting) -> Option<Handle> {
    WAITING.with_borrow_mut(|t| t.insert(w).ok())
}

/// The question asked for the entry `h`.
pub fn set_call(h: Handle, call: Handle) {
    WAITING.with_borrow_mut(|t| {
        if let Some(w) = t.get_mut(h) {
            w.call = call;
        }
    })
}

/// The wait ends without an answer (the session left or sent another command): forget the
/// session and take its question back.
pub fn cancel(h: Handle) {
    let w = WAITING.try_with(|t| t.borrow_mut().remove(h)).ok().flatten();
    if let Some(w) = w {
        auth::cancel(w.call);
    }
}

/// The session waiting on `h` for exactly `question`, taken out of the table: None when it
/// left (a late answer) or waits for another question.
pub fn take(h: Handle, question: &Question) -> Option<Waiting> {
    WAITING.with_borrow_mut(|t| {
        if t.get(h).is_some_and(|w| w.ask.question == *question) {
            t.remove(h)
        } else {
            None
        }
    })
}

/// Sessions suspended now.
pub fn len() -> usize {
    WAITING.with_borrow(Handles::len)
}
