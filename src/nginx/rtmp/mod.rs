//! nginx-rtmp as the layers above see it: a [`Session`] handle instead of a session pointer
//! (here, with relay pushes), and in [`chains`] the commands a session sends ([`Publish`],
//! [`Play`]), the handler chains we head (nginx-rtmp's `next_publish` pattern) and the message
//! handlers we put first.
//!
//! A [`Session`] is made only here, from a session nginx-rtmp hands to one of our handlers, and
//! is kept only by what leaves with the session: our per-session context (dropped with the
//! connection's pool) removes every record that holds one. So a `Session` in hand is a live
//! session, on the event loop; it never crosses to another thread (it is neither `Send` nor
//! `Sync`).

pub mod auto_push;
mod chains;

pub use chains::{hook_chains, hook_message, Hooks, Play, Publish, Verdict};

use std::ffi::c_void;
use std::marker::PhantomData;
use std::ptr::{addr_of, addr_of_mut, NonNull};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::ffi::*;
use super::util::{pool_new, str_bytes};

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
    pub(in crate::nginx) unsafe fn from_raw(s: *mut ngx_rtmp_session_t) -> Option<Session> {
        NonNull::new(s).map(|s| Session { s, _loop: PhantomData })
    }

    pub(in crate::nginx) fn raw(self) -> *mut ngx_rtmp_session_t {
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

    /// Another worker's copy of a stream (nginx-rtmp's `rtmp_auto_push`: it arrives over the
    /// workers' unix sockets)?
    ///
    /// nginx-rtmp flags every session of a unix-socket connection as auto-pushed; an operator's
    /// own `listen unix:` would let any client through as a copy. So the connection must also
    /// have come in on nginx-rtmp's own worker socket (whose listening it names
    /// "worker_socket").
    pub fn is_auto_pushed(self) -> bool {
        // SAFETY: live session; its connection's listening is set for accepted connections.
        unsafe {
            if (*self.raw()).auto_pushed() != 1 {
                return false;
            }
            let ls = (*self.conn()).listening;
            !ls.is_null() && super::util::str_bytes(&(*ls).addr_text) == b"worker_socket"
        }
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

    /// Send the peer an RTMP ping request (user control 6), which it answers with a ping
    /// response: a session that only sends hears from its peer so. Call only once the session
    /// has received an RTMP message (past the handshake).
    pub fn ping(self) {
        // SAFETY: live session, on the event loop; nginx-rtmp builds the message in its own
        // buffers and queues it (a full queue drops it).
        unsafe { ngx_rtmp_send_ping_request(self.raw(), super::util::now_ms() as u32) };
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

    /// Our per-session context, if made. Shared: `T` gives its own interior mutability (a
    /// `RefCell`), so a hook that runs again while a caller holds it cannot make two `&mut`.
    ///
    /// # Safety
    /// `T` is the one type the module keeps in its ctx slot.
    pub unsafe fn ctx<'a, T>(self) -> Option<&'a T> {
        // SAFETY: s->ctx has a slot per rtmp module; ours holds null or our T, which lives in
        // the connection's pool, as long as the session.
        unsafe { (*(*self.raw()).ctx.add(ctx_index())).cast::<T>().as_ref() }
    }

    /// Our per-session context, made on first use in the connection's pool (dropped with it).
    ///
    /// # Safety
    /// As [`Session::ctx`].
    pub unsafe fn ctx_or_default<'a, T: Default>(self) -> Option<&'a T> {
        // SAFETY: as in ctx; pool_new drops the value when the connection's pool goes.
        unsafe {
            if let Some(c) = self.ctx::<T>() {
                return Some(c);
            }
            let p = pool_new(self.pool(), T::default());
            *(*self.raw()).ctx.add(ctx_index()) = p.cast();
            p.as_ref()
        }
    }

    /// A relay target for `url` (`rtmp://ip:port/app/stream?…`, its host already an address:
    /// nothing here resolves), tagged as ours with `id`, parsed into the session's pool. None
    /// for an address nginx does not parse, or an exhausted pool.
    pub fn relay_target(self, url: &str, id: usize) -> Option<RelayTarget> {
        // SAFETY: the pool is the live session's; ngx_parse_url keeps pointers into it, which
        // outlive the target (it lives in the session's context, dropped before the pool).
        unsafe {
            let pool = self.pool();
            let u = super::util::pool_str(pool, url.trim_start_matches("rtmp://").as_bytes())?;
            let mut target: ngx_rtmp_relay_target_t = std::mem::zeroed();
            target.url.url = u;
            target.url.default_port = 1935;
            target.url.set_uri_part(1);
            target.url.set_no_resolve(1);
            if ngx_parse_url(pool, &mut target.url) != NGX_OK as ngx_int_t || target.url.naddrs == 0 {
                return None;
            }
            target.tag = relay_tag();
            target.data = id as *mut c_void;
            Some(RelayTarget(target))
        }
    }

    /// A stream name for relay pushes, in the session's pool.
    pub fn relay_name(self, stream: &str) -> Option<RelayName> {
        // SAFETY: the session's pool outlives the publish (and so its pushes).
        unsafe { super::util::pool_str(self.pool(), stream.as_bytes()) }.map(RelayName)
    }

    /// Start a relay push of `name` to `target`.
    pub fn relay_push(self, name: &mut RelayName, target: &mut RelayTarget) {
        // SAFETY: live publishing session; nginx-rtmp copies what it keeps of the target.
        unsafe { ngx_rtmp_relay_push(self.raw(), &mut name.0, &mut target.0) };
    }

    /// Our relay pushes of this session: each one's id and its session, if connected.
    pub fn relay_pushes(self) -> Vec<(usize, Option<Session>)> {
        let tag = relay_tag();
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

/// A parsed relay target of ours (see [`Session::relay_target`]).
pub struct RelayTarget(ngx_rtmp_relay_target_t);

/// A stream name for relay pushes, in a session's pool.
pub struct RelayName(ngx_str_t);

/// The tag of our relay pushes: an address unique to this module (this static's).
static TAG: u8 = 0;

fn relay_tag() -> *mut c_void {
    addr_of!(TAG).cast_mut().cast()
}

extern "C" {
    /// nginx-rtmp's core module (not declared in its headers).
    static mut ngx_rtmp_module: ngx_module_t;
}

/// Our rtmp main conf in a cycle (None without an rtmp{} block).
///
/// # Safety
/// `cycle` is the current cycle, or one whose rtmp{} block is parsed; `T` is our main conf type.
pub unsafe fn cycle_main_conf<'a, T>(cycle: *mut ngx_cycle_t) -> Option<&'a T> {
    // SAFETY: conf_ctx has a slot per module; rtmp's holds its ngx_rtmp_conf_ctx_t, whose
    // main_conf array has our slot at our ctx_index.
    unsafe {
        let idx = (*addr_of!(ngx_rtmp_module)).index;
        let ctx = (*(*cycle).conf_ctx.add(idx)).cast::<ngx_rtmp_conf_ctx_t>();
        if ctx.is_null() {
            return None;
        }
        (*(*ctx).main_conf.add(ctx_index())).cast::<T>().as_ref()
    }
}
