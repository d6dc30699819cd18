//! Sessions the table cannot decide, asked about at the master's auth endpoint in
//! nginx-rtmp's netcall manner: the session is suspended under a handle ([`super::waiting`]),
//! the question goes out ([`crate::auth`]), and the answer resumes or closes the session — or,
//! when the session left or asked something else since, finds nothing and is dropped.
//!
//! Sessions admitted by the endpoint are asked about again when its answer runs out
//! ([`ask_again`], every second); the second word keeps or drops them ([`recheck_answer`]).

use mesh_core::admission::{Ask, Outcome, Verdict as Recheck};
use mesh_core::auth::{Answer, AskError, Question, Waiter};
use mesh_core::handles::Handle;
use mesh_core::node::Node;

use super::admit::{admit, node_of};
use super::ctx;
use super::refusals::{refused, Why};
use super::table::drop_session;
use super::waiting::{self, PendingCmd, Waiting};
use crate::auth;
use crate::nginx::rtmp::{Session, Verdict};
use crate::nginx::util::now;
use crate::registry;

/// Suspend a session the master is to decide, its command kept, under a handle, and ask.
pub fn suspend(s: Session, cmd: PendingCmd, ask: Ask) -> Verdict {
    let action = ask.request.action;
    let stream = ask.request.stream.clone();
    if ctx::with_made(s, |_| ()).is_none() {
        return Verdict::Close;
    }
    let req = ask.request.clone();
    // The entry first (its handle is the waiter), then the question.
    let w = Waiting { s, cmd, ask, call: Handle::from_u64(u64::MAX) };
    let Some(h) = waiting::suspend(w) else {
        refused(s, action, &stream, &Why::NotAsked(AskError::Busy));
        return Verdict::Close;
    };
    match auth::ask(Waiter::Session(h), &req) {
        Ok(call) => {
            waiting::set_call(h, call);
            ctx::with(s, |c| c.pending = Some(h));
            Verdict::Done
        }
        Err(e) => {
            waiting::cancel(h);
            refused(s, action, &stream, &Why::NotAsked(e));
            Verdict::Close
        }
    }
}

/// An auth answer for a suspended session (event loop): resume it or close it. An answer
/// for a session that left, or that now waits on another question, is dropped.
pub fn resume(h: Handle, question: &Question, a: &Answer) {
    let Some(w) = waiting::take(h, question) else {
        ngx::ngx_log_debug!(
            ngx::log::ngx_cycle_log().as_ptr(),
            "mesh: auth answer for a session that left, dropped"
        );
        return;
    };
    let s = w.s;
    // An entry leaves the table when its session's ctx is dropped, so `s` is live; a session
    // already finalized (its close posted) is not resumed.
    if s.is_closing() {
        return;
    }
    let waits = ctx::with(s, |c| {
        let mine = c.pending == Some(h);
        if mine {
            c.pending = None;
        }
        mine
    });
    if waits != Some(true) {
        return;
    }
    // The role rules of the node now (it may have changed while the question was out).
    let node = node_of(s);
    let passed = match w.ask.answered(node.role, a) {
        Outcome::Admit(adm) => admit(s, w.cmd, &node, adm),
        Outcome::Refuse(why) => {
            refused(s, w.ask.request.action, &w.ask.request.stream, &Why::Decided(why));
            false
        }
        Outcome::Pass | Outcome::Ask(_) => false,
    };
    if !passed {
        s.finalize();
    }
}

/// The auth endpoint's second word on a session it had admitted.
pub fn recheck_answer(rid: u64, q: &Question, a: &Answer) {
    let now = now();
    let gone = registry::with(rid, |e| {
        e.recheck.take()?;
        match e.admitted.on_answer(q, a, now)? {
            Recheck::Keep => None,
            Recheck::Drop(why) => Some((e.s, e.is_publisher(), e.stream().to_string(), why)),
        }
    });
    if let Some(Some((s, publisher, stream, why))) = gone {
        drop_session(rid, s, publisher, &stream, &Why::Decided(why), "");
    }
}

/// Sessions admitted by the auth endpoint whose answer ran out are asked about again.
pub fn ask_again(node: &Node) {
    let now = now();
    let due = registry::sweep(|e| {
        (e.admitted.due(now) && e.recheck.is_none()).then(|| e.admitted.ask(&node.node_id, &e.s.peer()))
    });
    for (rid, _, ask) in due {
        let Some(ask) = ask else { continue };
        if let Ok(h) = auth::ask(Waiter::Recheck(rid), &ask.request) {
            registry::with(rid, |e| e.recheck = Some(h));
        }
    }
}
