//! Asking the master's auth endpoint without blocking the event loop, in nginx-rtmp's netcall
//! manner: the question goes to a background thread, the asker waits, and the answer comes
//! back on the event loop.
//!
//! Nothing that waits is a pointer. Each asker's wait is a [`Handle`] into this worker's table,
//! and names its asker by a handle too (a suspended session in `waiting.rs`, an admitted
//! session's registry id, or nobody for HTTP requests that read the cache). At most one call
//! per question (action, stream, credential) is out: later askers of the same question wait
//! for the same answer. An asker that leaves [`cancel`]s its wait; a call nobody waits for any
//! more is taken back (never sent, if still queued; answered and dropped, if sent).
//!
//! Strangers can make us ask: at most `mesh_auth_pending_max` askers about credentials the
//! master never allowed wait per worker, `mesh_auth_pending_per_addr` per client address; past
//! that the caller refuses with `busy`. Credentials the master allowed (and has not denied
//! since), and re-checks of admitted sessions, have their own room and lane. Answers are cached
//! for their `ttl_s` (bounded in size, like everything here; denials are dropped first).

use std::cell::RefCell;
use std::collections::HashMap;

use mesh_agent::agent::{Call, Refused};
use mesh_agent::client::CallError;
use mesh_core::handles::{Handle, Handles};
use mesh_core::hold::Holds;
use mesh_core::token::key_sha256;
use mesh_core::wire::{Action, AuthReply, AuthRequest};

/// Default cache time when the master gives none.
const DEFAULT_TTL_S: u64 = 60;
/// The longest an answer is trusted, whatever the master says.
const MAX_TTL_S: u64 = 3600;
/// Cached answers, and credentials remembered as allowed before.
const CACHE_MAX: usize = 4096;
/// Calls about known credentials and re-checks out at once (the agent's known lane holds as
/// many): distinct questions, since askers of one question share its call.
const KNOWN_MAX: usize = 1024;

/// How long HTTP requests see a failed question before asking again.
const FAILED_SHOWN_S: u64 = 2;

use crate::conf::{DEFAULT_PENDING_MAX, DEFAULT_PENDING_PER_ADDR};

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

/// One asker's wait for an answer (the question is its call's).
struct Outstanding {
    waiter: Waiter,
    addr: String,
    known: bool,
    /// The call whose answer this asker waits for (its own, or the one it joined).
    call: u64,
}

/// One call to the master, and everyone waiting for its answer.
struct Asked {
    question: Question,
    known: bool,
    askers: Vec<Handle>,
}

struct State {
    /// One entry per asker; bounded by the caps below for strangers, by the sessions of this
    /// worker for the rest (each is a suspended session or an admitted one being re-checked).
    calls: Handles<Outstanding>,
    /// Calls queued or in flight (at most one per question), by call id.
    asked: HashMap<u64, Asked>,
    by_question: HashMap<Question, u64>,
    /// Calls of known credentials and re-checks queued or in flight.
    known_calls: usize,
    /// Askers about unknown credentials, in all and per client address (the caps).
    strangers: Holds,
    cache: HashMap<Question, Answer>,
    /// Credentials the master allowed, with when (unix s).
    allowed: HashMap<Question, u64>,
}

impl Default for State {
    fn default() -> State {
        State {
            calls: Handles::new(usize::MAX),
            asked: HashMap::new(),
            by_question: HashMap::new(),
            known_calls: 0,
            strangers: Holds::new(DEFAULT_PENDING_MAX, DEFAULT_PENDING_PER_ADDR),
            cache: HashMap::new(),
            allowed: HashMap::new(),
        }
    }
}

impl State {
    fn release(&mut self, o: &Outstanding) {
        if !o.known {
            self.strangers.release(&o.addr);
        }
    }

    /// The call `id` is answered or taken back: nobody waits for it any more.
    fn end_call(&mut self, id: u64) -> Option<Asked> {
        let a = self.asked.remove(&id)?;
        if self.by_question.get(&a.question) == Some(&id) {
            self.by_question.remove(&a.question);
        }
        if a.known {
            self.known_calls -= 1;
        }
        Some(a)
    }

    /// Keep an answer; when full, expired answers go first, then denials (a stranger's junk
    /// keys never push out the answers of known ones).
    fn cache_answer(&mut self, q: &Question, a: &Answer, now: u64) {
        if self.cache.len() >= CACHE_MAX {
            self.cache.retain(|_, a| a.until > now);
        }
        if self.cache.len() >= CACHE_MAX {
            self.cache.retain(|_, a| a.allow);
        }
        if self.cache.len() >= CACHE_MAX {
            // Still full of allows: forget the half closest to their end, never all of them
            // (those asked about again soonest anyway).
            let mut ends: Vec<(u64, Question)> =
                self.cache.iter().map(|(q, a)| (a.until, q.clone())).collect();
            ends.sort_unstable_by_key(|(until, _)| *until);
            for (_, q) in ends.into_iter().take(CACHE_MAX / 2) {
                self.cache.remove(&q);
            }
        }
        self.cache.insert(q.clone(), a.clone());
        if !a.allow {
            // Denied now: no longer a known credential (a revoked key or an expired token
            // gets no room beyond the strangers' caps).
            self.allowed.remove(q);
            return;
        }
        if self.allowed.len() >= CACHE_MAX {
            // Forget the half allowed longest ago (and no more than that when many were
            // allowed in the same second).
            let mut when: Vec<(u64, Question)> = self.allowed.drain().map(|(q, t)| (t, q)).collect();
            when.sort_unstable_by_key(|(t, _)| std::cmp::Reverse(*t));
            when.truncate(CACHE_MAX / 2);
            self.allowed = when.into_iter().map(|(t, q)| (q, t)).collect();
        }
        self.allowed.insert(q.clone(), now);
    }
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Set the caps (worker start, from `mesh_auth_pending_max` and `mesh_auth_pending_per_addr`).
pub fn set_limits(pending_max: usize, per_addr_max: usize) {
    STATE.with_borrow_mut(|st| {
        st.strangers.set_caps(pending_max.max(1), per_addr_max.max(1));
    })
}

/// Questions waiting now (for `mesh_status`): all, and those of unknown credentials.
pub fn pending() -> (usize, usize) {
    STATE.with_borrow(|st| (st.calls.len(), st.strangers.held()))
}

/// A cached answer to exactly this question, still valid at `now`.
pub fn cached(q: &Question, now: u64) -> Option<Answer> {
    STATE.with_borrow(|st| st.cache.get(q).filter(|a| a.until > now).cloned())
}

/// Ask the master about `req` for `waiter`; the handle names the asker's wait until it is
/// answered or cancelled. At most one call per question is out: a second asker of the same
/// question waits for the same answer (a thousand sessions with one token cost one call).
pub fn ask(waiter: Waiter, req: AuthRequest) -> Result<Handle, AskError> {
    let question = Question::of(&req);
    // Counted per client (an IPv6 client by its /64: `Holds` keys it).
    let addr = req.addr.clone();
    let (h, send) = STATE.with_borrow_mut(|st| {
        let inflight = st.by_question.get(&question).copied();
        // HTTP requests poll the cache: the question asked once is enough (and no second
        // call is queued for it). Nobody cancels a Cache wait: a handle that names nothing.
        if let (Waiter::Cache, Some(_)) = (waiter, inflight) {
            return Ok((Handle::from_u64(u64::MAX), None));
        }
        let known = matches!(waiter, Waiter::Recheck(_)) || st.allowed.contains_key(&question);
        if known && inflight.is_none() && st.known_calls >= KNOWN_MAX {
            return Err(AskError::Busy);
        }
        if !known {
            st.strangers.admit(&addr).map_err(|_| AskError::Busy)?;
        }
        let o = Outstanding { waiter, addr, known, call: 0 };
        let h = match st.calls.insert(o) {
            Ok(h) => h,
            Err(o) => {
                st.release(&o);
                return Err(AskError::Busy);
            }
        };
        let (id, send) = match inflight {
            Some(id) => (id, None),
            None => {
                let id = h.to_u64();
                st.asked.insert(id, Asked { question: question.clone(), known, askers: Vec::new() });
                st.by_question.insert(question, id);
                if known {
                    st.known_calls += 1;
                }
                (id, Some((id, known)))
            }
        };
        if let Some(a) = st.asked.get_mut(&id) {
            a.askers.push(h);
        }
        if let Some(o) = st.calls.get_mut(h) {
            o.call = id;
        }
        Ok((h, send))
    })?;
    let Some((id, known)) = send else { return Ok(h) };
    match crate::link::call(Call::Auth { id, req, known }) {
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

/// The asker `h` leaves; Some(call id) when nobody waits for that call any more.
fn forget(h: Handle) -> Option<u64> {
    STATE
        .try_with(|st| {
            let mut st = st.borrow_mut();
            let o = st.calls.remove(h)?;
            st.release(&o);
            let a = st.asked.get_mut(&o.call)?;
            a.askers.retain(|x| *x != h);
            if !a.askers.is_empty() {
                return None;
            }
            st.end_call(o.call).map(|_| o.call)
        })
        .ok()
        .flatten()
}

/// The asker left: its wait ends, and a question nobody else waits for is taken back (never
/// sent, if still queued; its answer, if one comes, is dropped).
pub fn cancel(h: Handle) {
    if let Some(id) = forget(h) {
        crate::link::cancel_call(id);
    }
}

/// An answer arrived (event loop): cache it and hand it to everyone waiting for it, with the
/// question it answers. None for a call nobody waits for any more (the caller drops it).
pub fn on_answer(
    id: u64,
    result: Result<AuthReply, CallError>,
    now: u64,
) -> Option<(Vec<Waiter>, Question, Answer)> {
    STATE.with_borrow_mut(|st| {
        let asked = st.end_call(id)?;
        let mut waiters = Vec::with_capacity(asked.askers.len());
        for h in asked.askers {
            if let Some(o) = st.calls.remove(h) {
                st.release(&o);
                waiters.push(o.waiter);
            }
        }
        let answer = match result {
            Ok(r) => {
                let ttl = r.ttl_s.unwrap_or(DEFAULT_TTL_S).min(MAX_TTL_S);
                let a = Answer {
                    allow: r.allow,
                    reason: r.reason.unwrap_or_else(|| if r.allow { "allowed" } else { "denied" }.into()),
                    until: now.saturating_add(ttl),
                };
                st.cache_answer(&asked.question, &a, now);
                a
            }
            // Not cached for sessions: the next one asks again. HTTP requests, which read only
            // the cache, see the failure for a moment instead of waiting out their hold.
            Err(e) => {
                let a = Answer { allow: false, reason: format!("auth endpoint failed: {e}"), until: now };
                if waiters.contains(&Waiter::Cache) && st.cache.len() < CACHE_MAX {
                    let shown = Answer { until: now.saturating_add(FAILED_SHOWN_S), ..a.clone() };
                    st.cache.insert(asked.question.clone(), shown);
                }
                a
            }
        };
        Some((waiters, asked.question, answer))
    })
}
