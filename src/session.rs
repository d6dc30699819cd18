//! Admission: the publish and play handlers at the head of nginx-rtmp's chains.
//!
//! Decisions are made in-process against the node's snapshot (mesh_core::admission): no I/O on
//! the event loop. With a master, a broadcaster key or a viewer the table cannot decide is
//! asked about in the background (auth.rs) while the session waits. A refusal closes the
//! session and writes one error-log line with who, what and why, never the key or token.

use std::ptr::addr_of;

use mesh_core::args::MeshArgs;
use mesh_core::name::for_log;
use mesh_core::node::Node;
use mesh_core::wire::{Action, AuthRequest};
use mesh_core::{PublishRequest, Refusal, SessionKind};

use mesh_core::handles::Handle;

use crate::auth::{self, Answer, AskError, Question, Waiter};
use crate::ffi::*;
use crate::module::{ctx_index, session_app_conf, session_main_conf};
use crate::push::Pushes;
use crate::registry::{self, Entry, Via};
use crate::util::{cbuf_str, guard, pool_new, str_bytes};
use crate::waiting::{self, PendingCmd, Waiting};
use crate::{route, runtime, transcode};

static mut NEXT_PUBLISH: ngx_rtmp_publish_pt = None;
static mut NEXT_PLAY: ngx_rtmp_play_pt = None;
static mut NEXT_CLOSE_STREAM: ngx_rtmp_close_stream_pt = None;

const NGX_ERROR: ngx_int_t = crate::ffi::NGX_ERROR as ngx_int_t;
const OK: ngx_int_t = NGX_OK as ngx_int_t;

/// Link our handlers in front of nginx-rtmp's publish, play and close_stream chains.
///
/// # Safety
/// Configuration time only (postconfiguration).
pub unsafe fn hook_chains() {
    // SAFETY: single-threaded configuration; the chain heads are nginx-rtmp's globals.
    unsafe {
        NEXT_PUBLISH = ngx_rtmp_publish;
        ngx_rtmp_publish = Some(publish);
        NEXT_PLAY = ngx_rtmp_play;
        ngx_rtmp_play = Some(play);
        NEXT_CLOSE_STREAM = ngx_rtmp_close_stream;
        ngx_rtmp_close_stream = Some(close_stream);
    }
}

/// What we keep per session (in the connection's pool, dropped with it).
#[derive(Default)]
pub struct SessionCtx {
    /// Registry id while admitted.
    pub reg: Option<u64>,
    /// A publish or play waiting for the auth endpoint (its handle in waiting.rs).
    pub pending: Option<Handle>,
    /// Pushes of a published stream, while it is published.
    pub pushes: Option<Box<Pushes>>,
    /// When (ngx_current_msec) a publish on this connection was last passed down the chain.
    pub published_at: Option<ngx_msec_t>,
}

impl SessionCtx {
    /// End a wait for the master, if any: the question is taken back, a late answer dropped.
    fn cancel_pending(&mut self) {
        if let Some(h) = self.pending.take() {
            waiting::cancel(h);
        }
    }
}

impl Drop for SessionCtx {
    fn drop(&mut self) {
        if let Some(id) = self.reg.take() {
            registry::remove(id);
        }
        self.cancel_pending();
    }
}

/// Our ctx of a session, if any.
///
/// # Safety
/// `s` must be a live session.
pub unsafe fn get_ctx<'a>(s: *mut ngx_rtmp_session_t) -> Option<&'a mut SessionCtx> {
    // SAFETY: s->ctx has a slot per rtmp module; ours holds null or our SessionCtx.
    unsafe { (*(*s).ctx.add(ctx_index())).cast::<SessionCtx>().as_mut() }
}

/// Our ctx of a session, made on first use.
///
/// # Safety
/// `s` must be a live session.
unsafe fn ctx_mut<'a>(s: *mut ngx_rtmp_session_t) -> Option<&'a mut SessionCtx> {
    // SAFETY: the connection pool outlives the session's use of the ctx; pool_new drops the
    // value (and so leaves the registry, stops its timer) when the pool goes.
    unsafe {
        if let Some(c) = get_ctx(s) {
            return Some(c);
        }
        let p = pool_new((*(*s).connection).pool, SessionCtx::default());
        *(*s).ctx.add(ctx_index()) = p.cast();
        p.as_mut()
    }
}

/// Peer address for log lines.
///
/// # Safety
/// `s` must be a live session.
pub unsafe fn peer(s: *mut ngx_rtmp_session_t) -> String {
    // SAFETY: addr_text is set for every accepted connection.
    unsafe { String::from_utf8_lossy(str_bytes(&(*(*s).connection).addr_text)).into_owned() }
}

/// # Safety
/// `s` must be a live session.
unsafe fn app(s: *mut ngx_rtmp_session_t) -> String {
    // SAFETY: live session.
    unsafe { String::from_utf8_lossy(str_bytes(&(*s).app)).into_owned() }
}

/// One error-log line for a refused or dropped session: who (address), what (action,
/// application, stream) and why.
///
/// # Safety
/// `s` must be a live session.
pub unsafe fn log_session(s: *mut ngx_rtmp_session_t, action: &str, verb: &str, stream: &str, why: &str) {
    count_refusal(action, why);
    // SAFETY: live session: its app string and connection log are valid.
    unsafe {
        ngx::ngx_log_error!(
            NGX_LOG_ERR,
            (*(*s).connection).log,
            "mesh: {} {}: app \"{}\", stream \"{}\", from {}: {}",
            action,
            verb,
            for_log(&app(s)),
            for_log(stream),
            peer(s),
            why
        );
    }
}

thread_local! {
    /// `(action, reason)` → sessions refused or dropped (for `mesh_status`).
    static REFUSALS: std::cell::RefCell<std::collections::BTreeMap<(String, String), u64>> = Default::default();
}

/// Count a refusal under its reason's label: the words before any detail (`auth: …`, `(table
/// version 4)`).
fn count_refusal(action: &str, why: &str) {
    let reason = why.split([':', '(']).next().unwrap_or(why).trim().to_string();
    let _ = REFUSALS.try_with(|r| *r.borrow_mut().entry((action.to_string(), reason)).or_insert(0) += 1);
}

/// The refusal counters.
pub fn refusals() -> Vec<mesh_core::status::RefusalCount> {
    REFUSALS.with_borrow(|r| {
        r.iter()
            .map(|((a, w), n)| mesh_core::status::RefusalCount {
                action: a.clone(),
                reason: w.clone(),
                count: *n,
            })
            .collect()
    })
}

/// # Safety
/// `s` must be a live session.
unsafe fn log_refusal(s: *mut ngx_rtmp_session_t, action: &str, stream: &str, why: &str) {
    // SAFETY: live session.
    unsafe { log_session(s, action, "refused", stream, why) }
}

/// Is the mesh on for this session's application?
///
/// # Safety
/// `s` must be a live session.
unsafe fn mesh_on(s: *mut ngx_rtmp_session_t) -> bool {
    // SAFETY: live session.
    unsafe { session_app_conf(s).is_some_and(|a| a.mesh == 1) }
}

/// Did the live module take this session as its stream's publisher?
///
/// # Safety
/// `s` must be a live session.
unsafe fn is_live_publisher(s: *mut ngx_rtmp_session_t) -> bool {
    // SAFETY: the live module's ctx slot holds null or its ngx_rtmp_live_ctx_t.
    unsafe {
        let idx = (*addr_of!(ngx_rtmp_live_module)).ctx_index;
        let ctx = (*(*s).ctx.add(idx)).cast::<ngx_rtmp_live_ctx_t>();
        !ctx.is_null() && !(*ctx).stream.is_null() && (*ctx).publishing() == 1
    }
}

/// Does the session come from this machine (our own transcoder)?
///
/// # Safety
/// `s` must be a live session.
unsafe fn is_loopback(s: *mut ngx_rtmp_session_t) -> bool {
    // SAFETY: live session; its sockaddr is set for every accepted connection.
    unsafe {
        let sa = (*(*s).connection).sockaddr;
        match u32::from((*sa).sa_family) {
            AF_INET => (*(sa.cast::<sockaddr_in>())).sin_addr.s_addr.to_ne_bytes()[0] == 127,
            AF_INET6 => {
                (*(sa.cast::<sockaddr_in6>())).sin6_addr.__in6_u.__u6_addr8
                    == std::net::Ipv6Addr::LOCALHOST.octets()
            }
            _ => false,
        }
    }
}

pub fn now() -> u64 {
    ngx_time().max(0) as u64
}

unsafe extern "C" fn publish(s: *mut ngx_rtmp_session_t, v: *mut ngx_rtmp_publish_t) -> ngx_int_t {
    guard(NGX_ERROR, || {
        // SAFETY: nginx-rtmp calls us with a live session and its publish command.
        unsafe {
            if (*s).relay() == 1 || !mesh_on(s) {
                return next_publish(s, v);
            }
            let stream = cbuf_str(&(*v).name).into_owned();
            if already_admitted(s) {
                log_refusal(s, "publish", &stream, ALREADY);
                return NGX_ERROR;
            }
            if too_soon(s) {
                log_refusal(s, "publish", &stream, TOO_SOON);
                return NGX_ERROR;
            }
            replace_pending(s);
            let args = cbuf_str(&(*v).args).into_owned();
            let node = session_main_conf(s).node();
            let decision = node.context(now()).publish(PublishRequest { stream: &stream, args: &args });
            match decision {
                Ok(kind) => admit_publish(s, v, &node, &stream, &args, kind, Via::Table),
                Err(Refusal::UnknownStream | Refusal::WrongKey)
                    if MeshArgs::parse(&args).node.is_none() && runtime::has_master() =>
                {
                    let key = MeshArgs::parse(&args).key.map(str::to_string);
                    ask_master(
                        s,
                        &node,
                        Action::Publish,
                        &stream,
                        &args,
                        key,
                        PendingCmd::Publish(Box::new(std::ptr::read(v))),
                    )
                }
                Err(why) => {
                    log_refusal(s, "publish", &stream, why.as_str());
                    NGX_ERROR
                }
            }
        }
    })
}

unsafe extern "C" fn play(s: *mut ngx_rtmp_session_t, v: *mut ngx_rtmp_play_t) -> ngx_int_t {
    guard(NGX_ERROR, || {
        // SAFETY: nginx-rtmp calls us with a live session and its play command.
        unsafe {
            // Relay sessions (our own pushes' local side, pulls) pass untouched.
            if (*s).relay() == 1 || !mesh_on(s) {
                return next_play(s, v);
            }
            let stream = cbuf_str(&(*v).name).into_owned();
            if already_admitted(s) {
                log_refusal(s, "play", &stream, ALREADY);
                return NGX_ERROR;
            }
            replace_pending(s);
            let args = cbuf_str(&(*v).args).into_owned();
            let node = session_main_conf(s).node();
            // Our own transcoder reads the stream: not a viewer.
            let a = MeshArgs::parse(&args);
            if a.node == Some(node.node_id.as_str())
                && is_loopback(s)
                && a.key.is_some_and(|k| transcode::take_credential(&stream, k))
            {
                return next_play(s, v);
            }
            let decision = node.context(now()).play(PublishRequest { stream: &stream, args: &args });
            match decision {
                // No viewer secret: with a master, the auth endpoint decides.
                Ok(_) if !node.table.checks_viewer_tokens() && runtime::has_master() => {
                    let token = MeshArgs::parse(&args).token.map(str::to_string);
                    ask_master(
                        s,
                        &node,
                        Action::Play,
                        &stream,
                        &args,
                        token,
                        PendingCmd::Play(Box::new(std::ptr::read(v))),
                    )
                }
                Ok(_) => admit_play(s, v, &node, &stream, &args, Via::Table),
                Err(why) => {
                    log_refusal(s, "play", &stream, why.as_str());
                    NGX_ERROR
                }
            }
        }
    })
}

/// Let a publish in: register it, pass it down the chain, start its pushes.
///
/// # Safety
/// `s` and `v` as in the publish handler.
unsafe fn admit_publish(
    s: *mut ngx_rtmp_session_t,
    v: *mut ngx_rtmp_publish_t,
    node: &Node,
    stream: &str,
    args: &str,
    kind: SessionKind,
    via: Via,
) -> ngx_int_t {
    // SAFETY: live session and command, as the caller guarantees.
    unsafe {
        let source = match &kind {
            SessionKind::NodePush { from } => Some(from.clone()),
            _ => None,
        };
        ngx::ngx_log_error!(
            NGX_LOG_NOTICE,
            (*(*s).connection).log,
            "mesh: publish accepted: stream \"{}\" from {} ({})",
            stream,
            source.as_deref().unwrap_or("broadcaster"),
            peer(s)
        );
        let Some(ctx) = ctx_mut(s) else {
            return NGX_ERROR;
        };
        if let Some(old) = ctx.reg.take() {
            registry::remove(old);
        }
        let id = registry::add(Entry::new(s, kind, stream.into(), args.into(), via));
        ctx.reg = Some(id);
        ctx.published_at = Some(ngx_current_msec);
        let rc = next_publish(s, v);
        // A second publisher of a live stream is told "already publishing" by the live
        // module and left connected: it is no publisher of ours, and must not push.
        if rc != OK || !is_live_publisher(s) {
            if let Some(ctx) = get_ctx(s) {
                if let Some(id) = ctx.reg.take() {
                    registry::remove(id);
                }
            }
            return rc;
        }
        let plan = node.plan_pushes(stream, source.as_deref());
        if !plan.is_empty() {
            let pushes = Pushes::start(s, stream, &plan);
            if let Some(ctx) = get_ctx(s) {
                ctx.pushes = pushes;
            }
        }
        route::published(stream);
        rc
    }
}

/// Let a viewer in: register it, ask for a route when the stream is not here, pass it on.
///
/// # Safety
/// `s` and `v` as in the play handler.
unsafe fn admit_play(
    s: *mut ngx_rtmp_session_t,
    v: *mut ngx_rtmp_play_t,
    node: &Node,
    stream: &str,
    args: &str,
    via: Via,
) -> ngx_int_t {
    // SAFETY: live session and command, as the caller guarantees.
    unsafe {
        let Some(ctx) = ctx_mut(s) else {
            return NGX_ERROR;
        };
        if let Some(old) = ctx.reg.take() {
            registry::remove(old);
        }
        ctx.reg = Some(registry::add(Entry::new(s, SessionKind::Viewer, stream.into(), args.into(), via)));
        route::wanted(node, stream);
        next_play(s, v)
    }
}

/// Why a second publish or play on an admitted stream is refused.
const ALREADY: &str = "already admitted on this connection";

/// Why a publish right after another on the same connection is refused.
const TOO_SOON: &str = "publishing again too soon";
/// The least time between two publishes on one connection. Each starts the stream's pushes:
/// a client sending publish and deleteStream in a loop would open connections to the root
/// relays faster than the closed ones go (they close on the next turn of the event loop),
/// until nginx logs `worker_connections are not enough`.
const PUBLISH_AGAIN_MS: ngx_msec_t = 1000;

/// Did this connection publish less than [`PUBLISH_AGAIN_MS`] ago?
///
/// # Safety
/// `s` is live.
unsafe fn too_soon(s: *mut ngx_rtmp_session_t) -> bool {
    // SAFETY: live session; ngx_current_msec is the event loop's clock.
    unsafe {
        get_ctx(s)
            .and_then(|c| c.published_at)
            .is_some_and(|t| ngx_current_msec.wrapping_sub(t) < PUBLISH_AGAIN_MS)
    }
}

/// Is the session admitted already (publishing or playing, not closed since)? nginx-rtmp's
/// live module answers another publish or play on it with "already joined" and keeps the first
/// stream; passing it on would register the new name (a ghost in the heartbeat, the real
/// stream gone from it) and start the pushes again: one more outgoing connection per command,
/// from one valid key. A client that wants another stream closes this one first (closeStream,
/// deleteStream, play2 do).
///
/// # Safety
/// `s` is live.
unsafe fn already_admitted(s: *mut ngx_rtmp_session_t) -> bool {
    // SAFETY: live session.
    unsafe { get_ctx(s).is_some_and(|c| c.reg.is_some()) }
}

/// A new publish or play replaces a command still waiting for the master: the old question
/// is taken back, so its answer can never admit the new one.
///
/// # Safety
/// `s` is live.
unsafe fn replace_pending(s: *mut ngx_rtmp_session_t) {
    // SAFETY: live session.
    if let Some(ctx) = unsafe { get_ctx(s) } {
        ctx.cancel_pending();
    }
}

/// Ask the auth endpoint about a session the table cannot decide: a cached answer applies at
/// once; otherwise the session is suspended with its command kept, under a handle.
///
/// # Safety
/// `s` is live; `cmd` is a copy of its command.
unsafe fn ask_master(
    s: *mut ngx_rtmp_session_t,
    node: &Node,
    action: Action,
    stream: &str,
    args: &str,
    credential: Option<String>,
    mut cmd: PendingCmd,
) -> ngx_int_t {
    // SAFETY: live session; the kept command is ours.
    unsafe {
        let question = Question::new(action, stream, credential.as_deref());
        if let Some(a) = auth::cached(&question, now()) {
            return apply_answer(s, node, stream, args, &mut cmd, &a);
        }
        let Some(ctx) = ctx_mut(s) else {
            return NGX_ERROR;
        };
        let (key, token) = match action {
            Action::Publish => (credential, None),
            Action::Play => (None, credential),
        };
        let req = AuthRequest {
            node_id: node.node_id.clone(),
            action,
            stream: stream.into(),
            key,
            token,
            addr: peer(s),
        };
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
            log_refusal(s, action_str(action), stream, "busy");
            return NGX_ERROR;
        };
        match auth::ask(Waiter::Session(h), req) {
            Ok(call) => {
                waiting::set_call(h, call);
                ctx.pending = Some(h);
                OK
            }
            Err(e) => {
                waiting::cancel(h);
                let why = match e {
                    AskError::Busy => "busy",
                    AskError::Unavailable => "auth endpoint unavailable",
                };
                log_refusal(s, action_str(action), stream, why);
                NGX_ERROR
            }
        }
    }
}

fn action_str(a: Action) -> &'static str {
    match a {
        Action::Publish => "publish",
        Action::Play => "play",
    }
}

/// Apply the master's answer to a waiting command: admit it (with the role rules of the
/// current node) or refuse it.
///
/// # Safety
/// `s` is live and `cmd` its command.
unsafe fn apply_answer(
    s: *mut ngx_rtmp_session_t,
    node: &Node,
    stream: &str,
    args: &str,
    cmd: &mut PendingCmd,
    a: &Answer,
) -> ngx_int_t {
    // SAFETY: live session and its kept command.
    unsafe {
        let what = match cmd {
            PendingCmd::Publish(_) => "publish",
            PendingCmd::Play(_) => "play",
        };
        if !a.allow {
            log_refusal(s, what, stream, &format!("auth: {}", a.reason));
            return NGX_ERROR;
        }
        let via = Via::Auth { until: a.until };
        match cmd {
            PendingCmd::Publish(v) if node.role.takes_broadcasters() => {
                admit_publish(s, &mut **v, node, stream, args, SessionKind::Broadcaster, via)
            }
            PendingCmd::Play(v) if node.role.serves_viewers() => {
                admit_play(s, &mut **v, node, stream, args, via)
            }
            _ => {
                log_refusal(s, what, stream, Refusal::WrongRole.as_str());
                NGX_ERROR
            }
        }
    }
}

/// An auth answer for a suspended session (event loop): resume it or close it. An answer
/// for a session that left, or that now waits on another question, is dropped.
pub fn resume(h: Handle, question: &Question, a: &Answer, log: *mut ngx_log_t) {
    let Some(mut w) = waiting::take(h, question) else {
        ngx::ngx_log_debug!(log, "mesh: auth answer for a session that left, dropped");
        return;
    };
    let s = w.s;
    // SAFETY: an entry leaves the table when its session's ctx is dropped, so `s` is live; a
    // session already finalized (its close posted) is not resumed.
    unsafe {
        if (*(*s).connection).destroyed() == 1 {
            return;
        }
        let Some(ctx) = get_ctx(s) else { return };
        if ctx.pending != Some(h) {
            return;
        }
        ctx.pending = None;
        let node = session_main_conf(s).node();
        if apply_answer(s, &node, &w.stream, &w.args, &mut w.cmd, a) != OK {
            ngx_rtmp_finalize_session(s);
        }
    }
}

unsafe extern "C" fn close_stream(s: *mut ngx_rtmp_session_t, v: *mut ngx_rtmp_close_stream_t) -> ngx_int_t {
    guard(NGX_ERROR, || {
        // SAFETY: nginx-rtmp calls us with a live session.
        unsafe {
            if let Some(ctx) = get_ctx(s) {
                // Stops the push retry timer; nginx-rtmp's relay module closes the pushes.
                ctx.pushes = None;
                if let Some(id) = ctx.reg.take() {
                    let published =
                        registry::with(id, |e| e.is_publisher().then(|| e.stream.clone())).flatten();
                    registry::remove(id);
                    if let Some(stream) = published {
                        transcode::stop(&stream, "publisher left", (*(*s).connection).log);
                    }
                }
                ctx.cancel_pending();
            }
            match *addr_of!(NEXT_CLOSE_STREAM) {
                Some(next) => next(s, v),
                None => OK,
            }
        }
    })
}

/// # Safety
/// As the publish handler.
unsafe fn next_publish(s: *mut ngx_rtmp_session_t, v: *mut ngx_rtmp_publish_t) -> ngx_int_t {
    // SAFETY: the chain was linked at configuration time.
    unsafe {
        match *addr_of!(NEXT_PUBLISH) {
            Some(next) => next(s, v),
            None => OK,
        }
    }
}

/// # Safety
/// As the play handler.
unsafe fn next_play(s: *mut ngx_rtmp_session_t, v: *mut ngx_rtmp_play_t) -> ngx_int_t {
    // SAFETY: the chain was linked at configuration time.
    unsafe {
        match *addr_of!(NEXT_PLAY) {
            Some(next) => next(s, v),
            None => OK,
        }
    }
}
