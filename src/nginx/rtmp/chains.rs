//! The commands a session sends, the handler chains we head (nginx-rtmp's `next_publish`
//! pattern: loaded last, we run first), and the message handlers we put first.

use std::ptr::addr_of;

use parking_lot::RwLock;

use super::Session;
use crate::nginx::ffi::*;
use crate::nginx::util::{cbuf_str, guard};

/// A command of a session (publish or play), kept while the session waits for an answer
/// (nginx-rtmp's structures are plain data: a copy is a whole command).
pub struct Command<C: Kind>(Box<C>);

/// A publish command.
pub type Publish = Command<ngx_rtmp_publish_t>;
/// A play command.
pub type Play = Command<ngx_rtmp_play_t>;

/// What publish and play commands have in common, for one trampoline and one `pass_on`.
pub trait Kind: Sized {
    /// The stream name and query arguments, as nginx-rtmp parsed them.
    fn name_args(&self) -> (&[u8], &[u8]);
    /// The next handler of this command's chain.
    fn next() -> Option<unsafe extern "C" fn(*mut ngx_rtmp_session_t, *mut Self) -> ngx_int_t>;
    /// Our hook for this command.
    fn hook(h: &Hooks, s: Session, cmd: Command<Self>) -> Verdict;
}

/// `Kind` for nginx-rtmp's command structure `$t`, whose chain and hook are `$field`.
macro_rules! kind {
    ($t:ty, $field:ident) => {
        impl Kind for $t {
            fn name_args(&self) -> (&[u8], &[u8]) {
                (&self.name, &self.args)
            }
            fn next() -> Option<unsafe extern "C" fn(*mut ngx_rtmp_session_t, *mut Self) -> ngx_int_t> {
                CHAINS.read().$field
            }
            fn hook(h: &Hooks, s: Session, cmd: Command<Self>) -> Verdict {
                (h.$field)(s, cmd)
            }
        }
    };
}

kind!(ngx_rtmp_publish_t, publish);
kind!(ngx_rtmp_play_t, play);

impl<C: Kind> Command<C> {
    /// The stream name.
    pub fn name(&self) -> String {
        cbuf_str(self.0.name_args().0).into_owned()
    }

    /// The query arguments after the name.
    pub fn args(&self) -> String {
        cbuf_str(self.0.name_args().1).into_owned()
    }

    /// Pass the command down the chain (now, or when the answer it waited for came): true when
    /// nginx-rtmp took it. On false the session is to be closed.
    pub fn pass_on(mut self, s: Session) -> bool {
        // SAFETY: a live session (see the module's comment) and its kept command.
        unsafe { next(s.raw(), &mut *self.0) == OK }
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
        ngx_rtmp_publish = Some(on_command::<ngx_rtmp_publish_t>);
        c.play = ngx_rtmp_play;
        ngx_rtmp_play = Some(on_command::<ngx_rtmp_play_t>);
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

/// The next handler of `v`'s chain.
///
/// # Safety
/// A live session and its command.
unsafe fn next<C: Kind>(s: *mut ngx_rtmp_session_t, v: *mut C) -> ngx_int_t {
    // SAFETY: the chain was linked at configuration time; as the caller guarantees.
    C::next().map_or(OK, |f| unsafe { f(s, v) })
}

/// The head of the publish and play chains: our hook decides, with a copy of the command.
unsafe extern "C" fn on_command<C: Kind>(s: *mut ngx_rtmp_session_t, v: *mut C) -> ngx_int_t {
    guard(ERROR, || {
        // SAFETY: nginx-rtmp calls us with a live session and its command, which we copy
        // (plain data) for the hook.
        unsafe {
            let (Some(sess), Some(h)) = (Session::from_raw(s), hooks()) else { return next(s, v) };
            match C::hook(h, sess, Command(Box::new(std::ptr::read(v)))) {
                Verdict::Next => next(s, v),
                Verdict::Close => ERROR,
                Verdict::Done => OK,
            }
        }
    })
}

unsafe extern "C" fn on_close_stream(
    s: *mut ngx_rtmp_session_t,
    v: *mut ngx_rtmp_close_stream_t,
) -> ngx_int_t {
    guard(ERROR, || {
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
    guard(ERROR, || {
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
