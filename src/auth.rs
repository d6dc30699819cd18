//! Asking the master's auth endpoint without blocking the event loop, in nginx-rtmp's netcall
//! manner: the question goes to a background thread, the asker waits, and the answer comes
//! back on the event loop.
//!
//! Nothing that waits is a pointer. Each outstanding question is a [`Handle`] into this
//! worker's table of questions, and names its asker by a handle too (a suspended session in
//! `waiting.rs`, an admitted session's registry id, or nobody for HTTP requests that read the
//! cache). An asker that leaves [`cancel`]s its question: one still queued is taken back and
//! never sent; one already sent is answered, finds nothing here, and is dropped.
//!
//! Strangers can make us ask: at most `mesh_auth_pending_max` questions of credentials the
//! master never allowed wait per worker, `mesh_auth_pending_per_addr` per client address; past
//! that the caller refuses with `busy`. Credentials the master allowed before, and re-checks of
//! admitted sessions, have their own room and go first in the queue. Answers are cached for
//! their `ttl_s` (bounded in size, like everything here).

use std::cell::RefCell;
use std::collections::HashMap;

use mesh_agent::agent::{Call, Refused};
use mesh_agent::client::CallError;
use mesh_core::handles::{Handle, Handles};
use mesh_core::token::key_sha256;
use mesh_core::wire::{Action, AuthReply, AuthRequest};

/// Default cache time when the master gives none.
const DEFAULT_TTL_S: u64 = 60;
/// The longest an answer is trusted, whatever the master says.
const MAX_TTL_S: u64 = 3600;
/// Cached answers, and credentials remembered as allowed before.
const CACHE_MAX: usize = 4096;
/// Room for questions of known credentials and re-checks, beyond the strangers' cap.
const KNOWN_MAX: usize = 1024;

/// How long HTTP requests see a failed question before asking again.
const FAILED_SHOWN_S: u64 = 2;

pub const DEFAULT_PENDING_MAX: usize = 256;
pub const DEFAULT_PENDING_PER_ADDR: usize = 8;

/// The master's word on one credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub allow: bool,
    pub reason: String,
    /// Unix seconds until which it holds.
    pub until: u64,
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

    fn of(req: &AuthRequest) -> Question {
        Question::new(req.action, &req.stream, req.key.as_deref().or(req.token.as_deref()))
    }
}

/// Who waits for an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiter {
    /// A session suspended in publish or play (its handle in `waiting.rs`).
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

struct Outstanding {
    question: Question,
    waiter: Waiter,
    addr: String,
    known: bool,
}

struct State {
    calls: Handles<Outstanding>,
    /// Questions of unknown credentials waiting, in all and per address.
    strangers: usize,
    per_addr: HashMap<String, usize>,
    pending_max: usize,
    per_addr_max: usize,
    cache: HashMap<Question, Answer>,
    /// Credentials the master allowed, with when (unix s).
    allowed: HashMap<Question, u64>,
}

impl Default for State {
    fn default() -> State {
        State {
            calls: Handles::new(DEFAULT_PENDING_MAX + KNOWN_MAX),
            strangers: 0,
            per_addr: HashMap::new(),
            pending_max: DEFAULT_PENDING_MAX,
            per_addr_max: DEFAULT_PENDING_PER_ADDR,
            cache: HashMap::new(),
            allowed: HashMap::new(),
        }
    }
}

impl State {
    fn release(&mut self, o: &Outstanding) {
        if o.known {
            return;
        }
        self.strangers = self.strangers.saturating_sub(1);
        if let Some(n) = self.per_addr.get_mut(&o.addr) {
            *n -= 1;
            if *n == 0 {
                self.per_addr.remove(&o.addr);
            }
        }
    }
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Set the caps (worker start, from `mesh_auth_pending_max` and `mesh_auth_pending_per_addr`).
pub fn set_limits(pending_max: usize, per_addr_max: usize) {
    STATE.with_borrow_mut(|st| {
        st.pending_max = pending_max.max(1);
        st.per_addr_max = per_addr_max.max(1);
        st.calls.set_cap(st.pending_max + KNOWN_MAX);
    })
}

/// Questions waiting now (for `mesh_status`): all, and those of unknown credentials.
pub fn pending() -> (usize, usize) {
    STATE.with_borrow(|st| (st.calls.len(), st.strangers))
}

/// A cached answer to exactly this question, still valid at `now`.
pub fn cached(q: &Question, now: u64) -> Option<Answer> {
    STATE.with_borrow(|st| st.cache.get(q).filter(|a| a.until > now).cloned())
}

/// Ask the master about `req` for `waiter`; the handle names the question until it is
/// answered or cancelled.
pub fn ask(waiter: Waiter, req: AuthRequest) -> Result<Handle, AskError> {
    let question = Question::of(&req);
    let addr = req.addr.clone();
    let (h, known, asked) = STATE.with_borrow_mut(|st| {
        // HTTP requests poll the cache: one question in flight per credential is enough.
        if waiter == Waiter::Cache {
            let asked = st.calls.iter().find(|(_, o)| o.waiter == Waiter::Cache && o.question == question);
            if let Some((h, o)) = asked {
                return Ok((h, o.known, true));
            }
        }
        let known = matches!(waiter, Waiter::Recheck(_)) || st.allowed.contains_key(&question);
        if !known
            && (st.strangers >= st.pending_max
                || st.per_addr.get(&addr).copied().unwrap_or(0) >= st.per_addr_max)
        {
            return Err(AskError::Busy);
        }
        let o = Outstanding { question, waiter, addr: addr.clone(), known };
        let h = st.calls.insert(o).map_err(|_| AskError::Busy)?;
        if !known {
            st.strangers += 1;
            *st.per_addr.entry(addr).or_insert(0) += 1;
        }
        Ok((h, known, false))
    })?;
    if asked {
        return Ok(h);
    }
    match crate::runtime::call(Call::Auth { id: h.to_u64(), req, known }) {
        Ok(()) => Ok(h),
        Err(e) => {
            forget(h);
            Err(match e {
                Refused::Full => AskError::Busy,
                Refused::NoMaster => AskError::Unavailable,
            })
        }
    }
}

fn forget(h: Handle) -> bool {
    STATE
        .try_with(|st| {
            let mut st = st.borrow_mut();
            match st.calls.remove(h) {
                Some(o) => {
                    st.release(&o);
                    true
                }
                None => false,
            }
        })
        .unwrap_or(false)
}

/// The asker left: its question is taken back (never sent, if still queued) and its answer,
/// if one comes, is dropped.
pub fn cancel(h: Handle) {
    if forget(h) {
        crate::runtime::cancel_call(h.to_u64());
    }
}

/// An answer arrived (event loop): cache it and hand it to its waiter, with the question it
/// answers. None for a question nobody waits for any more (the caller drops it).
pub fn on_answer(
    id: u64,
    result: Result<AuthReply, CallError>,
    now: u64,
) -> Option<(Waiter, Question, Answer)> {
    STATE.with_borrow_mut(|st| {
        let o = st.calls.remove(Handle::from_u64(id))?;
        st.release(&o);
        let answer = match result {
            Ok(r) => {
                let ttl = r.ttl_s.unwrap_or(DEFAULT_TTL_S).min(MAX_TTL_S);
                let a = Answer {
                    allow: r.allow,
                    reason: r.reason.unwrap_or_else(|| if r.allow { "allowed" } else { "denied" }.into()),
                    until: now.saturating_add(ttl),
                };
                if st.cache.len() >= CACHE_MAX {
                    st.cache.retain(|_, a| a.until > now);
                    if st.cache.len() >= CACHE_MAX {
                        st.cache.clear();
                    }
                }
                st.cache.insert(o.question.clone(), a.clone());
                if a.allow {
                    if st.allowed.len() >= CACHE_MAX {
                        // Forget the half allowed longest ago.
                        let mut when: Vec<u64> = st.allowed.values().copied().collect();
                        when.sort_unstable();
                        let cut = when[when.len() / 2];
                        st.allowed.retain(|_, t| *t > cut);
                    }
                    st.allowed.insert(o.question.clone(), now);
                }
                a
            }
            // Not cached for sessions: the next one asks again. HTTP requests, which read only
            // the cache, see the failure for a moment instead of waiting out their hold.
            Err(e) => {
                let a = Answer { allow: false, reason: format!("auth endpoint failed: {e}"), until: now };
                if o.waiter == Waiter::Cache {
                    let shown = Answer { until: now.saturating_add(FAILED_SHOWN_S), ..a.clone() };
                    if st.cache.len() < CACHE_MAX {
                        st.cache.insert(o.question.clone(), shown);
                    }
                }
                a
            }
        };
        Some((o.waiter, o.question, answer))
    })
}
