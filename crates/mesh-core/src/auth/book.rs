//! The book of auth questions out and answers kept, in nginx-rtmp's netcall manner: the glue
//! sends the call to a background thread, the asker waits, and the answer comes back on the
//! event loop to [`Book::on_answer`].
//!
//! Nothing that waits is a pointer. Each asker's wait is a [`Handle`] into the book, and names
//! its asker by an opaque handle too ([`Waiter`]). At most one call per question (action,
//! stream, credential) is out: later askers of the same question wait for the same answer. An
//! asker that leaves is [`Book::cancel`]led; a call nobody waits for any more is taken back
//! (never sent, if still queued; answered and dropped, if sent).
//!
//! Strangers can make us ask: at most `mesh_auth_pending_max` askers about credentials the
//! master never allowed wait per worker, `mesh_auth_pending_per_addr` per client address; past
//! that the caller refuses with `busy`. Credentials the master allowed (and has not denied
//! since), and re-checks of admitted sessions, have their own room and lane. Answers are cached
//! for their `ttl_s` (bounded in size, like everything here; denials are dropped first).

use std::collections::HashMap;
use std::fmt::Display;

use super::{
    Answer, AskError, Question, Waiter, Word, CACHE_MAX, DEFAULT_PENDING_MAX, DEFAULT_PENDING_PER_ADDR,
    DEFAULT_TTL_S, FAILED_SHOWN_S, KNOWN_MAX, MAX_TTL_S,
};
use crate::handles::{Handle, Handles};
use crate::hold::Holds;
use crate::wire::{AuthReply, AuthRequest};

/// One asker's wait for an answer (the question is its call's).
pub(super) struct Outstanding {
    waiter: Waiter,
    addr: String,
    known: bool,
    /// The call whose answer this asker waits for (its own, or the one it joined).
    call: u64,
}

/// One call to the master, and everyone waiting for its answer.
pub(super) struct Call {
    question: Question,
    known: bool,
    askers: Vec<Handle>,
}

/// What the glue must send: the call `id` with the request asked, on the agent's known lane
/// when `known`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Send {
    pub id: u64,
    pub known: bool,
}

/// An asker's wait, and the call to send if it is the first to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asking {
    /// The asker's wait, until answered or cancelled.
    pub handle: Handle,
    /// Some when no call for this question is out yet: the glue sends it (and
    /// [`Book::not_sent`] when it cannot).
    pub send: Option<Send>,
}

/// An answer for everyone who waited for it, with the question it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    pub waiters: Vec<Waiter>,
    pub question: Question,
    pub answer: Answer,
}

/// The questions and answers of one worker.
pub struct Book {
    /// One entry per asker; bounded by the caps below for strangers, by the sessions of this
    /// worker for the rest (each is a suspended session or an admitted one being re-checked).
    pub(super) askers: Handles<Outstanding>,
    /// Calls queued or in flight (at most one per question), by call id.
    pub(super) calls: HashMap<u64, Call>,
    pub(super) by_question: HashMap<Question, u64>,
    /// Calls of known credentials and re-checks queued or in flight.
    pub(super) known_calls: usize,
    /// Askers about unknown credentials, in all and per client address (the caps).
    pub(super) strangers: Holds,
    pub(super) cache: HashMap<Question, Answer>,
    /// Credentials the master allowed, with when (unix s).
    pub(super) allowed: HashMap<Question, u64>,
}

impl Default for Book {
    fn default() -> Book {
        Book::new(DEFAULT_PENDING_MAX, DEFAULT_PENDING_PER_ADDR)
    }
}

impl Book {
    /// A book with caps on strangers' askers: `pending_max` per worker, `per_addr_max` per
    /// client address (at least 1 each).
    pub fn new(pending_max: usize, per_addr_max: usize) -> Book {
        Book {
            askers: Handles::new(usize::MAX),
            calls: HashMap::new(),
            by_question: HashMap::new(),
            known_calls: 0,
            strangers: Holds::new(pending_max.max(1), per_addr_max.max(1)),
            cache: HashMap::new(),
            allowed: HashMap::new(),
        }
    }

    /// Set the caps (worker start, from `mesh_auth_pending_max` and `mesh_auth_pending_per_addr`).
    pub fn set_limits(&mut self, pending_max: usize, per_addr_max: usize) {
        self.strangers.set_caps(pending_max.max(1), per_addr_max.max(1));
    }

    /// Askers waiting now (for `mesh_status`): all, and those of unknown credentials.
    pub fn pending(&self) -> (usize, usize) {
        (self.askers.len(), self.strangers.held())
    }

    /// A cached answer to exactly this question, still valid at `now`.
    pub fn cached(&self, q: &Question, now: u64) -> Option<Answer> {
        self.cache.get(q).filter(|a| a.until > now).cloned()
    }

    /// `waiter` asks the master `req`. At most one call per question is out: a second asker of
    /// the same question waits for the same answer (a thousand sessions with one token cost one
    /// call). HTTP requests ([`Waiter::Cache`]) of a question already out add nothing: their
    /// handle names nothing, and nobody cancels it.
    pub fn ask(&mut self, waiter: Waiter, req: &AuthRequest) -> Result<Asking, AskError> {
        let question = Question::of(req);
        let inflight = self.by_question.get(&question).copied();
        if let (Waiter::Cache, Some(_)) = (waiter, inflight) {
            return Ok(Asking { handle: Handle::from_u64(u64::MAX), send: None });
        }
        let known = matches!(waiter, Waiter::Recheck(_)) || self.allowed.contains_key(&question);
        if known && inflight.is_none() && self.known_calls >= KNOWN_MAX {
            return Err(AskError::Busy);
        }
        // Counted per client (an IPv6 client by its /64: `Holds` keys it).
        if !known {
            self.strangers.admit(&req.addr).map_err(|_| AskError::Busy)?;
        }
        let o = Outstanding { waiter, addr: req.addr.clone(), known, call: 0 };
        let h = match self.askers.insert(o) {
            Ok(h) => h,
            Err(o) => {
                self.release(&o);
                return Err(AskError::Busy);
            }
        };
        let (id, send) = match inflight {
            Some(id) => (id, None),
            None => {
                let id = h.to_u64();
                self.calls.insert(id, Call { question: question.clone(), known, askers: Vec::new() });
                self.by_question.insert(question, id);
                if known {
                    self.known_calls += 1;
                }
                (id, Some(Send { id, known }))
            }
        };
        if let Some(c) = self.calls.get_mut(&id) {
            c.askers.push(h);
        }
        if let Some(o) = self.askers.get_mut(h) {
            o.call = id;
        }
        Ok(Asking { handle: h, send })
    }

    /// The asker `h` leaves (its session ended or sent another command): its wait ends. Some(call
    /// id) when nobody else waits for that call: the glue takes it back (never sent, if still
    /// queued; its answer, if one comes, is dropped here).
    pub fn cancel(&mut self, h: Handle) -> Option<u64> {
        let o = self.askers.remove(h)?;
        self.release(&o);
        let c = self.calls.get_mut(&o.call)?;
        c.askers.retain(|x| *x != h);
        if !c.askers.is_empty() {
            return None;
        }
        self.end_call(o.call).map(|_| o.call)
    }

    /// The call of [`Asking::send`] could not be sent: the asker's wait ends (nothing to take
    /// back). The caller refuses the asker.
    pub fn not_sent(&mut self, h: Handle) {
        let _ = self.cancel(h);
    }

    /// An answer arrived (event loop): cache it and hand it to everyone waiting for it, with the
    /// question it answers. None for a call nobody waits for any more (the caller drops it).
    pub fn on_answer<E: Display>(
        &mut self,
        id: u64,
        result: Result<AuthReply, E>,
        now: u64,
    ) -> Option<Answered> {
        let call = self.end_call(id)?;
        let mut waiters = Vec::with_capacity(call.askers.len());
        for h in call.askers {
            if let Some(o) = self.askers.remove(h) {
                self.release(&o);
                waiters.push(o.waiter);
            }
        }
        let answer = match result {
            Ok(r) => {
                let ttl = r.ttl_s.unwrap_or(DEFAULT_TTL_S).min(MAX_TTL_S);
                let a = Answer {
                    word: if r.allow { Word::Allow } else { Word::Deny },
                    reason: r.reason.unwrap_or_else(|| if r.allow { "allowed" } else { "denied" }.into()),
                    until: now.saturating_add(ttl),
                };
                self.cache_answer(&call.question, &a, now);
                a
            }
            // Not cached for sessions: the next one asks again. HTTP requests, which read only
            // the cache, see the failure for a moment instead of waiting out their hold.
            Err(e) => {
                let a =
                    Answer { word: Word::Failed, reason: format!("auth endpoint failed: {e}"), until: now };
                if waiters.contains(&Waiter::Cache) && self.cache.len() < CACHE_MAX {
                    let shown = Answer { until: now.saturating_add(FAILED_SHOWN_S), ..a.clone() };
                    self.cache.insert(call.question.clone(), shown);
                }
                a
            }
        };
        Some(Answered { waiters, question: call.question, answer })
    }

    fn release(&mut self, o: &Outstanding) {
        if !o.known {
            self.strangers.release(&o.addr);
        }
    }

    /// The call `id` is answered or taken back: nobody waits for it any more.
    fn end_call(&mut self, id: u64) -> Option<Call> {
        let c = self.calls.remove(&id)?;
        if self.by_question.get(&c.question) == Some(&id) {
            self.by_question.remove(&c.question);
        }
        if c.known {
            self.known_calls -= 1;
        }
        Some(c)
    }

    /// Keep an answer; when full, expired answers go first, then denials (a stranger's junk
    /// keys never push out the answers of known ones).
    fn cache_answer(&mut self, q: &Question, a: &Answer, now: u64) {
        if self.cache.len() >= CACHE_MAX {
            self.cache.retain(|_, a| a.until > now);
        }
        if self.cache.len() >= CACHE_MAX {
            self.cache.retain(|_, a| a.allows());
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
        if !a.allows() {
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

    /// Answers cached now (tests, figures).
    pub fn cached_len(&self) -> usize {
        self.cache.len()
    }

    /// Calls out now: queued or in flight.
    pub fn calls_out(&self) -> usize {
        self.calls.len()
    }
}
