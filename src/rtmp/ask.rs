//! Sessions the table cannot decide, asked about at the master's auth endpoint in
//! nginx-rtmp's netcall manner: the session is suspended under a handle ([`super::waiting`]),
//! the question goes out ([`crate::auth`]), and the answer resumes or closes the session — or,
//! when the session left or asked something else since, finds nothing and is dropped.
//!
//! Sessions admitted by the endpoint are asked about again when its answer runs out
//! ([`ask_again`], every second); the second word keeps or drops them ([`recheck_answer`]).

use mesh_core::handles::Handle;
use mesh_core::node::Node;
use mesh_core::wire::{Action, AuthRequest};
use mesh_core::{Refusal, SessionKind};

use super::admit::{admit_play, admit_publish, done, node_of};
use super::ctx;
use super::refusals::refused;
use super::table::drop_session;
use super::waiting::{self, PendingCmd, Waiting};
use crate::auth::{self, Answer, AskError, Question, Waiter};
use crate::nginx::rtmp::{Session, Verdict};
use crate::nginx::util::now;
use crate::registry::{self, Via};

/// Ask the auth endpoint about a session the table cannot decide: a cached answer applies at
/// once; otherwise the session is suspended with its command kept, under a handle.
pub fn ask_master(
    s: Session,
    node: &Node,
    action: Action,
    stream: &str,
    args: &str,
    credential: Option<String>,
    cmd: PendingCmd,
) -> Verdict {
    let question = Question::new(action, stream, credential.as_deref());
    if let Some(a) = auth::cached(&question, now()) {
        return done(apply_answer(s, node, stream, args, cmd, &a));
    }
    if ctx::with_made(s, |_| ()).is_none() {
        return Verdict::Close;
    }
    let req = request(node, action, stream, credential, s.peer());
    // The entry first (its handle is the waiter), then the question.
    let w = Waiting {
        s,
        cmd,
        stream: stream.into(),
        args: args.into(),
        question,
        call: Handle::from_u64(u64::MAX),
    };
    let Some(h) = waiting::suspend(w) else {
        refused(s, action, stream, "busy");
        return Verdict::Close;
    };
    match auth::ask(Waiter::Session(h), req) {
        Ok(call) => {
            waiting::set_call(h, call);
            ctx::with(s, |c| c.pending = Some(h));
            Verdict::Done
        }
        Err(e) => {
            waiting::cancel(h);
            let why = match e {
                AskError::Busy => "busy",
                AskError::Unavailable => "auth endpoint unavailable",
            };
            refused(s, action, stream, why);
            Verdict::Close
        }
    }
}

/// The auth request about `stream` for `action` with `credential` (a publisher's key, a
/// viewer's token).
fn request(
    node: &Node,
    action: Action,
    stream: &str,
    credential: Option<String>,
    addr: String,
) -> AuthRequest {
    let (key, token) = match action {
        Action::Publish => (credential, None),
        Action::Play => (None, credential),
    };
    AuthRequest { node_id: node.node_id.clone(), action, stream: stream.into(), key, token, addr }
}

/// Apply the master's answer to a waiting command: admit it (with the role rules of the
/// current node) or refuse it. True when passed on.
fn apply_answer(s: Session, node: &Node, stream: &str, args: &str, cmd: PendingCmd, a: &Answer) -> bool {
    let action = match cmd {
        PendingCmd::Publish(_) => Action::Publish,
        PendingCmd::Play(_) => Action::Play,
    };
    if !a.allow {
        refused(s, action, stream, &format!("auth: {}", a.reason));
        return false;
    }
    let via = Via::Auth { until: a.until };
    match cmd {
        PendingCmd::Publish(v) if node.role.takes_broadcasters() => {
            admit_publish(s, v, node, stream, args, SessionKind::Broadcaster, via)
        }
        PendingCmd::Play(v) if node.role.serves_viewers() => admit_play(s, v, node, stream, args, via),
        _ => {
            refused(s, action, stream, Refusal::WrongRole.as_str());
            false
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
    let node = node_of(s);
    if !apply_answer(s, &node, &w.stream, &w.args, w.cmd, a) {
        s.finalize();
    }
}

/// The auth endpoint's second word on a session it had admitted.
pub fn recheck_answer(rid: u64, q: &Question, a: &Answer) {
    let failed = a.reason.starts_with("auth endpoint failed");
    let gone = registry::with(rid, |e| {
        if e.recheck.take().is_none() || registry::question(e) != *q {
            // Not the question this session waits on: nothing to apply.
            return None;
        }
        if a.allow {
            e.via = Via::Auth { until: a.until };
            None
        } else if failed {
            // Unreachable is no deny: keep the session, ask again later.
            e.via = Via::Auth { until: now() + 30 };
            None
        } else {
            Some((e.s, e.is_publisher(), e.stream.clone()))
        }
    });
    if let Some(Some((s, publisher, stream))) = gone {
        drop_session(rid, s, publisher, &stream, &format!("auth: {}", a.reason));
    }
}

/// Sessions admitted by the auth endpoint whose answer ran out are asked about again.
pub fn ask_again(node: &Node) {
    let now = now();
    let due = registry::sweep(|e| match e.via {
        Via::Auth { until } if until <= now && e.recheck.is_none() => {
            Some((registry::credential(e), e.stream.clone()))
        }
        _ => None,
    });
    for (rid, s, item) in due {
        let Some(((action, credential), stream)) = item else {
            continue;
        };
        let req = request(node, action, &stream, credential, s.peer());
        if let Ok(h) = auth::ask(Waiter::Recheck(rid), req) {
            registry::with(rid, |e| e.recheck = Some(h));
        }
    }
}
