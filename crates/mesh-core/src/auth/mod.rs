//! The master's auth endpoint as the node sees it: what is asked ([`Question`], one
//! [`request`] builder), what comes back ([`Answer`]), and the book of questions out and
//! answers kept ([`Book`]).
//!
//! Pure: the glue keeps one [`Book`] per worker (a thread-local) and does what its methods
//! return (send a call, take one back); it never calls out itself.

mod book;
#[cfg(test)]
mod tests;

use std::fmt;

use crate::handles::Handle;
use crate::token::key_sha256;
use crate::wire::{Action, AuthRequest};

pub use book::{Answered, Asking, Book, Send};

/// Default cache time when the master gives none.
pub const DEFAULT_TTL_S: u64 = 60;
/// The longest an answer is trusted, whatever the master says.
pub const MAX_TTL_S: u64 = 3600;
/// Cached answers, and credentials remembered as allowed before.
pub const CACHE_MAX: usize = 4096;
/// Calls about known credentials and re-checks out at once (the agent's known lane holds as
/// many): distinct questions, since askers of one question share its call.
pub const KNOWN_MAX: usize = 1024;
/// How long HTTP requests see a failed question before asking again.
pub const FAILED_SHOWN_S: u64 = 2;
/// Default `mesh_auth_pending_max`: askers about unknown credentials per worker.
pub const DEFAULT_PENDING_MAX: usize = 256;
/// Default `mesh_auth_pending_per_addr`: askers about unknown credentials per client address.
pub const DEFAULT_PENDING_PER_ADDR: usize = 8;

/// The one auth request builder: `credential` is the key of a publish, the token of a play,
/// sent as given (the master tells "no key" from an empty one).
pub fn request(
    node_id: &str,
    action: Action,
    stream: &str,
    credential: Option<&str>,
    addr: &str,
) -> AuthRequest {
    let credential = credential.map(str::to_string);
    let (key, token) = match action {
        Action::Publish => (credential, None),
        Action::Play => (None, credential),
    };
    AuthRequest {
        node_id: node_id.to_string(),
        action,
        stream: stream.to_string(),
        key,
        token,
        addr: addr.to_string(),
    }
}

/// What exactly was asked: an answer applies to this and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Question {
    pub action: Action,
    pub stream: String,
    /// sha256 of the key or token (never kept in clear).
    credential: [u8; 32],
}

impl Question {
    pub fn new(action: Action, stream: &str, credential: Option<&str>) -> Question {
        Question { action, stream: stream.to_string(), credential: key_sha256(credential.unwrap_or("")) }
    }

    /// The question a request asks.
    pub fn of(req: &AuthRequest) -> Question {
        Question::new(req.action, &req.stream, req.key.as_deref().or(req.token.as_deref()))
    }
}

/// What the master's word was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Word {
    Allow,
    Deny,
    /// No word: the call failed (master unreachable, timeout, bad reply). No deny.
    Failed,
}

/// The master's word on one credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub word: Word,
    /// The master's reason (`allowed` / `denied` when it gave none), or why the call failed
    /// (`auth endpoint failed: …`).
    pub reason: String,
    /// Unix seconds until which it holds.
    pub until: u64,
}

impl Answer {
    pub fn allows(&self) -> bool {
        self.word == Word::Allow
    }

    pub fn failed(&self) -> bool {
        self.word == Word::Failed
    }
}

/// Who waits for an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiter {
    /// A session suspended in publish or play (its handle in the glue's table of waits).
    Session(Handle),
    /// A registered session whose earlier admission ran out (registry id).
    Recheck(u64),
    /// Nobody: an HTTP request polls the cache for the answer.
    Cache,
}

/// Why a question was not asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AskError {
    /// Too many questions wait (for this worker or this address): refuse with `busy`.
    Busy,
    /// No master to ask.
    Unavailable,
}

impl fmt::Display for AskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AskError::Busy => "busy",
            AskError::Unavailable => "auth endpoint unavailable",
        })
    }
}
