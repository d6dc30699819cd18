//! nginx-rtmp as the layers above see it: a [`Session`] handle instead of a session pointer,
//! the commands a session sends ([`Publish`], [`Play`]), the handler chains we head
//! (nginx-rtmp's `next_publish` pattern), and relay pushes.
//!
//! A [`Session`] is made only here, from a session nginx-rtmp hands to one of our handlers, and
//! is kept only by what leaves with the session: our per-session context (dropped with the
//! connection's pool) removes every record that holds one. So a `Session` in hand is a live
//! session, on the event loop; it never crosses to another thread (it is neither `Send` nor
//! `Sync`).

use std::ffi::c_void;
use std::marker::PhantomData;
use std::ptr::{addr_of, addr_of_mut, NonNull};
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;

use super::ffi::*;
use super::util::{cbuf_str, pool_new, str_bytes};

/// A live RTMP session (see the module's comment for why it stays live).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Session {
    s: NonNull<ngx_rtmp_session_t>,
    /// Not Send, not Sync: event loop only.
    _loop: PhantomData<*mut ()>,
}

/// The rtmp ctx index of the module that keeps per-session contexts (set at configuration).
static CTX_INDEX: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Record the module's rtmp ctx index (its slot in main_conf/app_conf/ctx arrays).
pub fn set_ctx_index(i: usize) {
    CTX_INDEX.store(i, Ordering::Relaxed);
}

/// The module's rtmp ctx index.
pub fn ctx_index() -> usize {
    CTX_INDEX.load(Ordering::Relaxed)
}

impl Session {
    /// # Safety
    /// `s` is a live session handed to us by nginx-rtmp, on the event loop.
    pub(super) unsafe fn from_raw(s: *mut ngx_rtmp_session_t) -> Option<Session> {
        NonNull::new(s).map(|s| Session { s, _loop: PhantomData })
    }

    fn raw(self) -> *mut ngx_rtmp_session_t {
        self.s.as_ptr()
    }

    /// The session's connection.
    fn conn(self) -> *mut ngx_connection_t {
        // SAFETY: a live session has its connection.
        unsafe { (*self.raw()).connection }
    }

    /// The connection's log.
    pub fn log(self) -> *mut ngx_log_t {
        // SAFETY: a live connection has its log.
        unsafe { (*self.conn()).log }
    }

    /// The connection's pool (strings handed to nginx for the session's life go there).
    pub fn pool(self) -> *mut ngx_pool_t {
        // SAFETY: a live connection has its pool.
        unsafe { (*self.conn()).pool }
    }

    /// The client's address as text.
    pub fn peer(self) -> String {
        // SAFETY: addr_text is set for every accepted connection (and empty for relays).
        unsafe { String::from_utf8_lossy(str_bytes(&(*self.conn()).addr_text)).into_owned() }
    }

    /// The application the client connected to.
    pub fn app(self) -> String {
        // SAFETY: the session's app string lives in its pool.
        unsafe { String::from_utf8_lossy(str_bytes(&(*self.raw()).app)).into_owned() }
    }

    /// One of nginx-rtmp's relay sessions (a push's local side, a pull)?
    pub fn is_relay(self) -> bool {
        // SAFETY: live session.
        unsafe { (*self.raw()).relay() == 1 }
    }

    /// Finalized already (its close posted)?
    pub fn is_closing(self) -> bool {
        // SAFETY: live connection.
        unsafe { (*self.conn()).destroyed() == 1 }
    }

    /// Close the session (nginx-rtmp posts the close; the session stays valid until then).
    pub fn finalize(self) {
        // SAFETY: live session, on the event loop.
        unsafe { ngx_rtmp_finalize_session(self.raw()) }
    }

    /// Bytes received and sent so far (wrapping counters).
    pub fn bytes(self) -> (u32, u32) {
        // SAFETY: live session.
        unsafe { ((*self.raw()).in_bytes, (*self.raw()).out_bytes) }
    }

    /// Does the session come from this machine (IPv4 loopback, ::1, or IPv4-mapped loopback)?
    pub fn is_loopback(self) -> bool {
        // SAFETY: the connection's sockaddr is of the family it says.
        unsafe {
            let sa = (*self.conn()).sockaddr;
            if sa.is_null() {
                return false;
            }
            match (*sa).sa_family as u32 {
                AF_INET => u32::from_be((*sa.cast::<sockaddr_in>()).sin_addr.s_addr) >> 24 == 127,
                AF_INET6 => {
                    let a =
                        std::net::Ipv6Addr::from((*sa.cast::<sockaddr_in6>()).sin6_addr.__in6_u.__u6_addr8);
                    a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
                }
                _ => false,
            }
        }
    }

    /// Did nginx-rtmp's live module take this session as its stream's publisher?
    pub fn is_live_publisher(self) -> bool {
        // SAFETY: the live module's ctx slot holds null or its ngx_rtmp_live_ctx_t.
        unsafe {
            let idx = (*addr_of!(ngx_rtmp_live_module)).ctx_index;
            let ctx = (*(*self.raw()).ctx.add(idx)).cast::<ngx_rtmp_live_ctx_t>();
            !ctx.is_null() && !(*ctx).stream.is_null() && (*ctx).publishing() == 1
        }
    }

    /// Our main conf for this session.
    ///
    /// # Safety
    /// `T` is the type of the module's rtmp main conf.
    pub unsafe fn main_conf<'a, T>(self) -> Option<&'a T> {
        // SAFETY: the rtmp core fills s->main_conf with every rtmp module's main conf, ours of
        // type T as the caller says; it lives as long as the cycle.
        unsafe { (*(*self.raw()).main_conf.add(ctx_index())).cast::<T>().as_ref() }
    }

    /// Our application conf (None before `connect` chose an application).
    ///
    /// # Safety
    /// `T` is the type of the module's rtmp app conf.
    pub unsafe fn app_conf<'a, T>(self) -> Option<&'a T> {
        // SAFETY: app_conf is null until connect, then the application's conf array.
        unsafe {
            let app = (*self.raw()).app_conf;
            if app.is_null() {
                return None;
            }
            (*app.add(ctx_index())).cast::<T>().as_ref()
        }
    }

    /// Our per-session context, if made.
    ///
    /// # Safety
    /// `T` is the one type the module keeps in its ctx slot; no other reference to it is
    /// alive (event loop: callers take it, use it and let it go).
    pub unsafe fn ctx<'a, T>(self) -> Option<&'a mut T> {
        // SAFETY: s->ctx has a slot per rtmp module; ours holds null or our T.
        unsafe { (*(*self.raw()).ctx.add(ctx_index())).cast::<T>().as_mut() }
    }

    /// Our per-session context, made on first use in the connection's pool (dropped with it).
    ///
    /// # Safety
    /// As [`Session::ctx`].
    pub unsafe fn ctx_or_default<'a, T: Default>(self) -> Option<&'a mut T> {
        // SAFETY: as in ctx; pool_new drops the value when the connection's pool goes.
        unsafe {
            if let Some(c) = self.ctx::<T>() {
                return Some(c);
            }
            let p = pool_new(self.pool(), T::default());
            *(*self.raw()).ctx.add(ctx_index()) = p.cast();
            p.as_mut()
        }
    }

    /// Start a relay push of `name` to `target` (both in the session's pool or longer-lived).
    pub fn relay_push(self, name: &mut ngx_str_t, target: &mut ngx_rtmp_relay_target_t) {
        // SAFETY: live publishing session; nginx-rtmp copies what it keeps of the target.
        unsafe { ngx_rtmp_relay_push(self.raw(), name, target) };
    }

    /// The relay pushes of this session tagged `tag`: each one's `data` and its session, if
    /// connected.
    pub fn relay_pushes(self, tag: *mut c_void) -> Vec<(usize, Option<Session>)> {
        let mut out = Vec::new();
        // SAFETY: the relay module's ctx for this session lists its pushes in `play`; each
        // entry stays valid while linked, and its session is live while set.
        unsafe {
            let idx = (*addr_of_mut!(ngx_rtmp_relay_module)).ctx_index;
            let rctx = (*(*self.raw()).ctx.add(idx)).cast::<ngx_rtmp_relay_ctx_t>();
            if rctx.is_null() {
                return out;
            }
            let mut p = (*rctx).play;
            while !p.is_null() {
                if (*p).tag == tag {
                    out.push(((*p).data as usize, Session::from_raw((*p).session)));
                }
                p = (*p).next;
            }
        }
        out
    }
}

/// A publish command, kept while the session waits for an answer (nginx-rtmp's structure is
/// plain data: a copy is a whole command).
pub struct Publish(Box<ngx_rtmp_publish_t>);

/// A play command, kept the same way.
pub struct Play(Box<ngx_rtmp_play_t>);

impl Publish {
    /// The stream name.
    pub fn name(&self) -> String {
        cbuf_str(&self.0.name).into_owned()
    }
    /// The query arguments after the name.
    pub fn args(&self) -> String {
        cbuf_str(&self.0.args).into_owned()
    }
}

impl Play {
    /// The stream name.
    pub fn name(&self) -> String {
        cbuf_str(&self.0.name).into_owned()
    }
    /// The query arguments after the name.
    pub fn args(&self) -> String {
        cbuf_str(&self.0.args).into_owned()
    }
}

/// The handlers we put at the head of nginx-rtmp's chains, in safe terms: each gets the session
/// and (a copy of) its command, and answers a [`Verdict`]: pass the command down the chain,
/// close, or done (passed on by the hook itself with [`Publish::pass_on`], now or after a
/// wait).
pub struct Hooks {
    pub publish: fn(Session, Publish) -> Verdict,
    pub play: fn(Session, Play) -> Verdict,
    pub close_stream: fn(Session),
}

/// A hook's answer for a command.
pub enum Verdict {
    /// Pass the command down the chain (not ours to decide).
    Next,
    /// Refuse: nginx-rtmp closes the session.
    Close,
    /// Handled: passed on by the hook, or kept while the session waits.
    Done,
}

struct Chains {
    publish: ngx_rtmp_publish_pt,
    play: ngx_rtmp_play_pt,
    close_stream: ngx_rtmp_close_stream_pt,
    hooks: Option<&'static Hooks>,
}

/// The next handlers in nginx-rtmp's chains (set at each configuration, read on the event loop).
static CHAINS: RwLock<Chains> =
    RwLock::new(Chains { publish: None, play: None, close_stream: None, hooks: None });

/// Link `hooks` in front of nginx-rtmp's publish, play and close_stream chains.
///
/// # Safety
/// Configuration time (postconfiguration), single-threaded: the chain heads are nginx-rtmp's
/// globals, which every module links itself into there. Loaded last, we run first.
pub unsafe fn hook_chains(hooks: &'static Hooks) {
    // SAFETY: as the caller guarantees.
    unsafe {
        let mut c = CHAINS.write();
        c.publish = ngx_rtmp_publish;
        ngx_rtmp_publish = Some(on_publish);
        c.play = ngx_rtmp_play;
        ngx_rtmp_play = Some(on_play);
        c.close_stream = ngx_rtmp_close_stream;
        ngx_rtmp_close_stream = Some(on_close_stream);
        c.hooks = Some(hooks);
    }
}

const OK: ngx_int_t = NGX_OK as ngx_int_t;
const ERROR: ngx_int_t = NGX_ERROR as ngx_int_t;

fn hooks() -> Option<&'static Hooks> {
    CHAINS.read().hooks
}

/// # Safety
/// A live session and its publish command.
unsafe fn next_publish(s: *mut ngx_rtmp_session_t, v: *mut ngx_rtmp_publish_t) -> ngx_int_t {
    let next = CHAINS.read().publish;
    // SAFETY: the chain was linked at configuration time; as the caller guarantees.
    next.map_or(OK, |f| unsafe { f(s, v) })
}

/// # Safety
/// A live session and its play command.
unsafe fn next_play(s: *mut ngx_rtmp_session_t, v: *mut ngx_rtmp_play_t) -> ngx_int_t {
    let next = CHAINS.read().play;
    // SAFETY: as above.
    next.map_or(OK, |f| unsafe { f(s, v) })
}

/// Run a hook's verdict: pass the command on (`next`), close, or hold.
fn run(verdict: Verdict, next: impl FnOnce() -> ngx_int_t) -> ngx_int_t {
    match verdict {
        Verdict::Next => next(),
        Verdict::Close => ERROR,
        Verdict::Done => OK,
    }
}

unsafe extern "C" fn on_publish(s: *mut ngx_rtmp_session_t, v: *mut ngx_rtmp_publish_t) -> ngx_int_t {
    super::util::guard(ERROR, || {
        // SAFETY: nginx-rtmp calls us with a live session and its publish command, which we
        // copy (plain data) for the hook.
        unsafe {
            let (Some(sess), Some(h)) = (Session::from_raw(s), hooks()) else { return next_publish(s, v) };
            let verdict = (h.publish)(sess, Publish(Box::new(std::ptr::read(v))));
            run(verdict, || next_publish(s, v))
        }
    })
}

unsafe extern "C" fn on_play(s: *mut ngx_rtmp_session_t, v: *mut ngx_rtmp_play_t) -> ngx_int_t {
    super::util::guard(ERROR, || {
        // SAFETY: as in on_publish.
        unsafe {
            let (Some(sess), Some(h)) = (Session::from_raw(s), hooks()) else { return next_play(s, v) };
            let verdict = (h.play)(sess, Play(Box::new(std::ptr::read(v))));
            run(verdict, || next_play(s, v))
        }
    })
}

unsafe extern "C" fn on_close_stream(
    s: *mut ngx_rtmp_session_t,
    v: *mut ngx_rtmp_close_stream_t,
) -> ngx_int_t {
    super::util::guard(ERROR, || {
        // SAFETY: nginx-rtmp calls us with a live session.
        unsafe {
            if let (Some(sess), Some(h)) = (Session::from_raw(s), hooks()) {
                (h.close_stream)(sess);
            }
            let next = CHAINS.read().close_stream;
            next.map_or(OK, |f| f(s, v))
        }
    })
}

impl Publish {
    /// Pass the publish down the chain (now, or when the answer it waited for came): true when
    /// nginx-rtmp took it. On false the session is to be closed.
    pub fn pass_on(mut self, s: Session) -> bool {
        // SAFETY: a live session (see the module's comment) and its kept command.
        unsafe { next_publish(s.raw(), &mut *self.0) == OK }
    }
}

impl Play {
    /// Pass the play down the chain, as [`Publish::pass_on`].
    pub fn pass_on(mut self, s: Session) -> bool {
        // SAFETY: as in Publish::pass_on.
        unsafe { next_play(s.raw(), &mut *self.0) == OK }
    }
}

/// A handler for one RTMP message type, put first in nginx-rtmp's event array: it gets the
/// session and the message's first buffer's bytes, and says whether to go on.
pub type MessageHook = fn(Session, &[u8]) -> bool;

static MESSAGE_HOOKS: RwLock<Vec<(u32, MessageHook)>> = RwLock::new(Vec::new());

/// Put `hook` first for messages of type `msg` (e.g. `NGX_RTMP_MSG_CHUNK_SIZE`).
///
/// # Safety
/// Configuration time (postconfiguration), `cf` in the rtmp{} block.
pub unsafe fn hook_message(cf: *mut ngx_conf_t, msg: u32, hook: MessageHook) -> bool {
    // SAFETY: cf->ctx is the rtmp{} block's conf ctx; the core module's main conf holds the
    // event arrays, initialised (empty of nginx-rtmp's own handlers) before postconfiguration.
    unsafe {
        let ctx = (*cf).ctx.cast::<ngx_rtmp_conf_ctx_t>();
        let idx = (*addr_of!(ngx_rtmp_core_module)).ctx_index;
        let cmcf = (*(*ctx).main_conf.add(idx)).cast::<ngx_rtmp_core_main_conf_t>();
        if cmcf.is_null() || msg as usize >= (*cmcf).events.len() {
            return false;
        }
        let events = &mut (*cmcf).events[msg as usize];
        let eh = ngx_array_push(events).cast::<ngx_rtmp_handler_pt>();
        if eh.is_null() {
            return false;
        }
        *eh = Some(on_message);
        let mut hooks = MESSAGE_HOOKS.write();
        hooks.retain(|(m, _)| *m != msg);
        hooks.push((msg, hook));
        true
    }
}

unsafe extern "C" fn on_message(
    s: *mut ngx_rtmp_session_t,
    h: *mut ngx_rtmp_header_t,
    inp: *mut ngx_chain_t,
) -> ngx_int_t {
    super::util::guard(ERROR, || {
        // SAFETY: nginx-rtmp calls us with a live session, the message's header and chain.
        unsafe {
            let Some(sess) = Session::from_raw(s) else { return OK };
            let msg = u32::from((*h).type_);
            let Some(hook) = MESSAGE_HOOKS.read().iter().find(|(m, _)| *m == msg).map(|(_, f)| *f) else {
                return OK;
            };
            let bytes: &[u8] = if inp.is_null() || (*inp).buf.is_null() {
                &[]
            } else {
                let b = (*inp).buf;
                let len = (*b).last.offset_from((*b).pos).max(0) as usize;
                std::slice::from_raw_parts((*b).pos, len)
            };
            if hook(sess, bytes) {
                OK
            } else {
                ERROR
            }
        }
    })
}
