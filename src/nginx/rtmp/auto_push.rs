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
    /// The module whose session ctx holds a publisher's auto-push state.
    static mut ngx_rtmp_auto_push_index_module: ngx_module_t;
}

/// ngx_rtmp_auto_push_module.c's private session ctx of a publisher, unchanged since
/// nginx-rtmp 1.0: which worker slots have its copy, and the reconnect event.
#[repr(C)]
struct AutoPushCtx {
    slots: *mut ngx_int_t,
    name: [u8; NGX_RTMP_MAX_NAME as usize],
    args: [u8; NGX_RTMP_MAX_ARGS as usize],
    push_evt: ngx_event_t,
}

/// Make nginx-rtmp copy `s`'s stream to the workers started after it was published.
///
/// nginx-rtmp pushes a stream to the workers alive when it is published and retries only the
/// copies that failed or ended; a worker started later — every worker of a reload's new
/// generation — never gets it, so its players and HLS requests find nothing while the
/// broadcaster stays on an old worker. When a worker slot that has no copy yet is alive (its
/// channel open) and has its socket, this runs nginx-rtmp's own reconnect now. Returns
/// whether it did. Does nothing for copies and for sessions nginx-rtmp does not push.
pub fn reach_new_workers(s: super::Session) -> bool {
    // SAFETY: a live session on the event loop; the index module's ctx slot holds nginx-rtmp's
    // AutoPushCtx for a publisher it pushes (NULL otherwise); `slots` has NGX_MAX_PROCESSES
    // entries; ngx_processes and ngx_process_slot are the worker's own, updated on this loop
    // by nginx's channel handler; the reconnect handler is nginx-rtmp's, run as its timer would.
    unsafe {
        let idx = (*addr_of!(ngx_rtmp_auto_push_index_module)).ctx_index;
        let ctx = (*(*s.raw()).ctx.add(idx)).cast::<AutoPushCtx>();
        if ctx.is_null() || (*ctx).slots.is_null() || (*ctx).push_evt.timer_set() == 1 {
            return false;
        }
        let Some(reconnect) = (*ctx).push_evt.handler else { return false };
        // Read only when a slot lacks its copy (rare: after a reload), not every tick.
        let mut dir = None;
        let procs = &*addr_of!(ngx_processes);
        let me = ngx_process_slot;
        // Every slot: a worker learns of later ones through its channel, not ngx_last_process.
        let missing = (0..NGX_MAX_PROCESSES as usize).any(|n| {
            let p = &procs[n];
            n as ngx_int_t != me
                && p.pid != 0
                && p.pid != NGX_INVALID_PID as ngx_pid_t
                && p.channel[0] != -1
                && *(*ctx).slots.add(n) == 0
                && dir
                    .get_or_insert_with(|| auto_push_socket_dir())
                    .as_ref()
                    .is_some_and(|d| d.join(format!("nginx-rtmp.{n}")).exists())
        });
        if missing {
            reconnect(&mut (*ctx).push_evt);
        }
        missing
    }
}

/// nginx-rtmp's `rtmp_socket_dir`.
///
/// # Safety
/// On the event loop of a configured cycle.
unsafe fn auto_push_socket_dir() -> Option<std::path::PathBuf> {
    // SAFETY: the core module's conf at its index; AutoPushConf's layout (above) is the
    // module's, its socket_dir an nginx string.
    unsafe {
        let cycle = ngx_cycle;
        let idx = (*addr_of!(ngx_rtmp_auto_push_module)).index;
        let conf = (*(*cycle).conf_ctx.add(idx)).cast::<AutoPushConf>();
        if conf.is_null() {
            return None;
        }
        let dir = crate::nginx::util::str_bytes(&(*conf).socket_dir);
        Some(std::path::PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(dir)))
    }
}

/// ngx_rtmp_auto_push_module.c's private conf (`rtmp_auto_push`, `rtmp_socket_dir`), unchanged
/// since nginx-rtmp 1.0.
#[repr(C)]
struct AutoPushConf {
    auto_push: ngx_flag_t,
    socket_dir: ngx_str_t,
    push_reconnect: ngx_msec_t,
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
