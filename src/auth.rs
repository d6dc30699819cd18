//! Asking the master's auth endpoint without blocking the event loop, in nginx-rtmp's netcall
//! manner: the session waits (its publish or play command is kept), the question goes to a
//! background thread, and the answer resumes or refuses the session on the event loop. A
//! session that leaves meanwhile is forgotten: its answer finds no waiter and is dropped.
//! Answers are cached for their `ttl_s`.

use std::cell::RefCell;
use std::collections::HashMap;

use mesh_agent::agent::Call;
use mesh_agent::client::CallError;
use mesh_core::token::key_sha256;
use mesh_core::wire::{Action, AuthReply, AuthRequest};

use crate::ffi::*;

/// Default cache time when the master gives none.
const DEFAULT_TTL_S: u64 = 60;

/// The master's word on one credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub allow: bool,
    pub reason: String,
    /// Unix seconds until which it holds.
    pub until: u64,
}

/// Who waits for an answer.
#[derive(Debug, Clone, Copy)]
pub enum Waiter {
    /// A session suspended in publish or play.
    Session(*mut ngx_rtmp_session_t),
    /// A registered session whose earlier admission ran out (registry id).
    Recheck(u64),
    /// Nobody: an HTTP request polls the cache for the answer.
    Cache,
}

type Key = (Action, String, [u8; 32]);

#[derive(Default)]
struct State {
    next: u64,
    waiting: HashMap<u64, (Waiter, Key)>,
    cache: HashMap<Key, Answer>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn key(action: Action, stream: &str, credential: Option<&str>) -> Key {
    (action, stream.to_string(), key_sha256(credential.unwrap_or("")))
}

/// A cached answer still valid at `now`.
pub fn cached(action: Action, stream: &str, credential: Option<&str>, now: u64) -> Option<Answer> {
    let k = key(action, stream, credential);
    STATE.with_borrow(|st| st.cache.get(&k).filter(|a| a.until > now).cloned())
}

/// Ask the master; returns the waiter's id, or None when the question could not be queued.
pub fn ask(waiter: Waiter, req: AuthRequest) -> Option<u64> {
    let credential = req.key.clone().or_else(|| req.token.clone());
    let k = key(req.action, &req.stream, credential.as_deref());
    // HTTP requests poll the cache: one question in flight per credential is enough.
    if matches!(waiter, Waiter::Cache) {
        let asked =
            STATE.with_borrow(|st| st.waiting.iter().find(|(_, (_, wk))| *wk == k).map(|(id, _)| *id));
        if asked.is_some() {
            return asked;
        }
    }
    let id = STATE.with_borrow_mut(|st| {
        st.next += 1;
        st.waiting.insert(st.next, (waiter, k));
        st.next
    });
    if crate::runtime::call(Call::Auth { id, req }) {
        Some(id)
    } else {
        forget(id);
        None
    }
}

/// The waiter left (its session closed): its answer will be dropped.
pub fn forget(id: u64) {
    let _ = STATE.try_with(|st| st.borrow_mut().waiting.remove(&id));
}

/// An answer arrived (event loop): cache it and hand it to its waiter, if still there.
pub fn on_answer(id: u64, result: Result<AuthReply, CallError>, now: u64) -> Option<(Waiter, Answer)> {
    let (waiter, k) = STATE.with_borrow_mut(|st| st.waiting.remove(&id))?;
    let answer = match result {
        Ok(r) => {
            let a = Answer {
                allow: r.allow,
                reason: r.reason.unwrap_or_else(|| if r.allow { "allowed" } else { "denied" }.into()),
                until: now + r.ttl_s.unwrap_or(DEFAULT_TTL_S),
            };
            STATE.with_borrow_mut(|st| {
                st.cache.retain(|_, a| a.until > now);
                st.cache.insert(k, a.clone());
            });
            a
        }
        // Not cached: the next session asks again.
        Err(e) => Answer { allow: false, reason: format!("auth endpoint failed: {e}"), until: now },
    };
    Some((waiter, answer))
}
