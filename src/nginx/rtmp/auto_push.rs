//! nginx-rtmp's `rtmp_auto_push` relays each stream published into a worker to every other
//! worker, over one unix socket per worker. It makes that socket in its `init_process` and
//! counts on nginx to put it in the event loop afterwards — which nginx does only when
//! nginx-rtmp is built in: as a dynamic module (Debian's `libnginx-mod-rtmp`, ours), its
//! `init_process` runs after the event module's, so the socket is listened on but never
//! accepted from, and a stream is seen only by the worker it was published into.
//!
//! [`watch_worker_socket`] (our `init_process`, which runs after nginx-rtmp's) does for that
//! socket what nginx's `ngx_event_process_init` does for every listening socket.

use std::ptr::{addr_of, null_mut};

use crate::nginx::ffi::*;

/// nginx's `NGX_READ_EVENT` with epoll (`EPOLLIN|EPOLLRDHUP`), a macro bindgen does not see.
const READ_EVENT: ngx_int_t = (EPOLL_EVENTS_EPOLLIN | EPOLL_EVENTS_EPOLLRDHUP) as ngx_int_t;
const _: () = assert!(NGX_HAVE_EPOLL == 1, "the auto-push socket is watched the epoll way");

/// Put nginx-rtmp's auto-push socket of this worker in the event loop, if it made one that is
/// not watched. Returns whether it did; an error says what nginx refused.
///
/// # Safety
/// Worker start (init_process), on the event loop, after nginx-rtmp's init_process.
pub unsafe fn watch_worker_socket(cycle: *mut ngx_cycle_t) -> Result<bool, &'static str> {
    // SAFETY: as the caller guarantees: the cycle's listening array and the connections of
    // the ones nginx set up are live; a listening nginx-rtmp appended after the event module
    // ran has a copy of another's connection pointer (it copies the whole structure), or none.
    unsafe {
        let all = (*cycle).listening.as_slice_mut::<ngx_listening_t>();
        let conns: Vec<*mut ngx_connection_t> = all.iter().map(|ls| ls.connection).collect();
        for (i, ls) in all.iter_mut().enumerate() {
            if !is_unix(ls) {
                continue;
            }
            // Copied from another listening (nginx-rtmp copies the first rtmp one whole).
            let copied = ls.connection.is_null()
                || conns.iter().enumerate().any(|(j, c)| j != i && *c == ls.connection);
            // nginx-rtmp's own handler (an external symbol: one address).
            let rtmp = ls.handler.is_some_and(|h| {
                std::ptr::fn_addr_eq(h, ngx_rtmp_init_connection as unsafe extern "C" fn(_))
            });
            if ls.fd == -1 || !rtmp || !copied {
                continue;
            }
            let c = ngx_get_connection(ls.fd, (*cycle).log);
            if c.is_null() {
                return Err("no free connection for the auto-push socket");
            }
            (*c).type_ = ls.type_;
            (*c).log = &mut ls.log;
            (*c).listening = ls;
            ls.connection = c;
            let rev = (*c).read;
            (*rev).log = (*c).log;
            (*rev).set_accept(1);
            (*rev).handler = Some(ngx_event_accept);
            let Some(add) = (*addr_of!(ngx_event_actions)).add else {
                return Err("no event module");
            };
            if add(rev, READ_EVENT, 0) != NGX_OK as ngx_int_t {
                ls.connection = null_mut();
                ngx_free_connection(c);
                return Err("cannot watch the auto-push socket");
            }
            return Ok(true);
        }
        Ok(false)
    }
}

/// A unix-socket listening?
///
/// # Safety
/// `ls` is a live listening of the cycle.
unsafe fn is_unix(ls: &ngx_listening_t) -> bool {
    // SAFETY: a listening's sockaddr is of the family it says.
    unsafe { !ls.sockaddr.is_null() && (*ls.sockaddr).sa_family as u32 == AF_UNIX }
}

extern "C" {
    /// nginx-rtmp's auto-push module (not declared in its headers).
    static mut ngx_rtmp_auto_push_module: ngx_module_t;
}

/// The first field of ngx_rtmp_auto_push_module.c's private conf (`rtmp_auto_push`), unchanged
/// since nginx-rtmp 1.0.
#[repr(C)]
struct AutoPushConf {
    auto_push: ngx_flag_t,
}

/// Is `rtmp_auto_push on` in this cycle?
///
/// # Safety
/// `cycle` is configured.
pub unsafe fn enabled(cycle: *mut ngx_cycle_t) -> bool {
    // SAFETY: a core module's conf is at its index in conf_ctx; its first field is the flag.
    unsafe {
        let idx = (*addr_of!(ngx_rtmp_auto_push_module)).index;
        let conf = (*(*cycle).conf_ctx.add(idx)).cast::<AutoPushConf>();
        !conf.is_null() && (*conf).auto_push == 1
    }
}
