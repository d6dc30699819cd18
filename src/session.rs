//! Admission: the publish and play handlers at the head of nginx-rtmp's chains.
//!
//! Decisions are made in-process against the node's table snapshot (mesh_core::admission):
//! no I/O on the event loop. A refusal closes the session and writes one error-log line with
//! who, what and why, never the key or token.

use std::ptr::addr_of;

use mesh_core::admission::{Context, PublishRequest};
use mesh_core::name::for_log;
use mesh_core::{Refusal, SessionKind};

use crate::ffi::*;
use crate::module::{ctx_index, session_app_conf, session_main_conf};
use crate::push::Pushes;
use crate::util::{cbuf_str, guard, pool_new, str_bytes};

static mut NEXT_PUBLISH: ngx_rtmp_publish_pt = None;
static mut NEXT_PLAY: ngx_rtmp_play_pt = None;
static mut NEXT_CLOSE_STREAM: ngx_rtmp_close_stream_pt = None;

const NGX_ERROR: ngx_int_t = crate::ffi::NGX_ERROR as ngx_int_t;

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
pub struct SessionCtx {
    /// Pushes of a published stream, while it is published.
    pub pushes: Option<Box<Pushes>>,
}

/// Our ctx of a session, if any.
///
/// # Safety
/// `s` must be a live session.
pub unsafe fn get_ctx<'a>(s: *mut ngx_rtmp_session_t) -> Option<&'a mut SessionCtx> {
    // SAFETY: s->ctx has a slot per rtmp module; ours holds null or our SessionCtx.
    unsafe { (*(*s).ctx.add(ctx_index())).cast::<SessionCtx>().as_mut() }
}

/// # Safety
/// `s` must be a live session.
unsafe fn set_ctx(s: *mut ngx_rtmp_session_t, ctx: SessionCtx) -> Option<&'static mut SessionCtx> {
    // SAFETY: the connection pool outlives the session's use of the ctx; pool_new drops the
    // value (and so stops its timer) when the pool goes.
    unsafe {
        if let Some(old) = get_ctx(s) {
            *old = ctx;
            return Some(old);
        }
        let p = pool_new((*(*s).connection).pool, ctx);
        *(*s).ctx.add(ctx_index()) = p.cast();
        p.as_mut()
    }
}

/// Peer address for log lines.
///
/// # Safety
/// `s` must be a live session.
unsafe fn peer(s: *mut ngx_rtmp_session_t) -> String {
    // SAFETY: addr_text is set for every accepted connection.
    unsafe { String::from_utf8_lossy(str_bytes(&(*(*s).connection).addr_text)).into_owned() }
}

/// # Safety
/// `s` must be a live session.
unsafe fn log_refusal(s: *mut ngx_rtmp_session_t, what: &str, stream: &str, why: Refusal) {
    // SAFETY: live session: its app string and connection log are valid.
    unsafe {
        let app = String::from_utf8_lossy(str_bytes(&(*s).app));
        ngx::ngx_log_error!(
            NGX_LOG_ERR,
            (*(*s).connection).log,
            "mesh: {} refused: app \"{}\", stream \"{}\", from {}: {}",
            what,
            for_log(&app),
            for_log(stream),
            peer(s),
            why
        );
    }
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

/// Is the mesh on for this session's application?
///
/// # Safety
/// `s` must be a live session.
unsafe fn mesh_on(s: *mut ngx_rtmp_session_t) -> bool {
    // SAFETY: live session.
    unsafe { session_app_conf(s).is_some_and(|a| a.mesh == 1) }
}

fn now() -> u64 {
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
            let args = cbuf_str(&(*v).args).into_owned();
            let node = session_main_conf(s).node();
            let ctx = Context {
                table: &node.table,
                role: node.role,
                node_id: &node.node_id,
                now: now(),
            };
            let source = match ctx.publish(PublishRequest {
                stream: &stream,
                args: &args,
            }) {
                Ok(SessionKind::NodePush { from }) => Some(from),
                Ok(_) => None,
                Err(why) => {
                    log_refusal(s, "publish", &stream, why);
                    return NGX_ERROR;
                }
            };
            ngx::ngx_log_error!(
                NGX_LOG_NOTICE,
                (*(*s).connection).log,
                "mesh: publish accepted: stream \"{}\" from {} ({})",
                stream,
                source.as_deref().unwrap_or("broadcaster"),
                peer(s)
            );
            let rc = next_publish(s, v);
            // A second publisher of a live stream is told "already publishing" by the live
            // module and left connected: it must not push.
            if rc == NGX_OK as ngx_int_t && is_live_publisher(s) {
                let plan = node.plan_pushes(&stream, source.as_deref());
                if !plan.is_empty() {
                    let pushes = Pushes::start(s, &stream, &plan);
                    if set_ctx(s, SessionCtx { pushes }).is_none() {
                        return NGX_ERROR;
                    }
                }
            }
            rc
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
            let args = cbuf_str(&(*v).args).into_owned();
            let node = session_main_conf(s).node();
            let ctx = Context {
                table: &node.table,
                role: node.role,
                node_id: &node.node_id,
                now: now(),
            };
            match ctx.play(PublishRequest {
                stream: &stream,
                args: &args,
            }) {
                Ok(_) => next_play(s, v),
                Err(why) => {
                    log_refusal(s, "play", &stream, why);
                    NGX_ERROR
                }
            }
        }
    })
}

unsafe extern "C" fn close_stream(
    s: *mut ngx_rtmp_session_t,
    v: *mut ngx_rtmp_close_stream_t,
) -> ngx_int_t {
    guard(NGX_ERROR, || {
        // SAFETY: nginx-rtmp calls us with a live session.
        unsafe {
            if let Some(ctx) = get_ctx(s) {
                // Stops the push retry timer; nginx-rtmp's relay module closes the pushes.
                ctx.pushes = None;
            }
            match *addr_of!(NEXT_CLOSE_STREAM) {
                Some(next) => next(s, v),
                None => NGX_OK as ngx_int_t,
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
            None => NGX_OK as ngx_int_t,
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
            None => NGX_OK as ngx_int_t,
        }
    }
}
