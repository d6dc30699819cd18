//! Pushes of a published stream to the targets the table gives this node's role.
//!
//! Each push is an nginx-rtmp relay push (`ngx_rtmp_relay_push`), tagged with our module and
//! the target, so that a timer can see which pushes are alive and start the missing ones
//! again: a target that is down is retried every [`RETRY_MS`] without touching the source.
//! URLs arrive with their hosts already resolved (mesh_agent, at table load):
//! nothing here waits for DNS.

use std::ffi::c_void;
use std::ptr::addr_of_mut;

use mesh_core::node::PlannedPush;

use crate::ffi::*;
use crate::module::module_ptr;
use crate::util::{guard, pool_str};

/// Interval between checks for pushes to start again.
pub const RETRY_MS: ngx_msec_t = 3000;

struct PushTarget {
    node_id: String,
    target: ngx_rtmp_relay_target_t,
    /// Last seen state, to log changes only.
    up: bool,
}

/// The pushes of one published stream. Boxed: the timer event and the targets keep their
/// addresses for the life of the publish.
pub struct Pushes {
    s: *mut ngx_rtmp_session_t,
    stream: String,
    name: ngx_str_t,
    targets: Vec<PushTarget>,
    ev: ngx_event_t,
}

impl Pushes {
    /// Start pushing `stream` (published on session `s`) to `targets`.
    ///
    /// # Safety
    /// `s` must be the live publishing session; the returned value must be dropped before
    /// its connection pool is destroyed (it lives in the session's ctx, which is).
    pub unsafe fn start(
        s: *mut ngx_rtmp_session_t,
        stream: &str,
        plan: &[PlannedPush],
    ) -> Option<Box<Pushes>> {
        // SAFETY: live session; every string handed to nginx is copied into the connection
        // pool, which outlives the publish.
        unsafe {
            let pool = (*(*s).connection).pool;
            let log = (*(*s).connection).log;
            let name = pool_str(pool, stream.as_bytes())?;
            let mut list = Vec::with_capacity(plan.len());
            for t in plan {
                let Some(url) = &t.url else {
                    ngx::ngx_log_error!(
                        NGX_LOG_ERR,
                        log,
                        "mesh: push of stream \"{}\" to node \"{}\" skipped: its host did not resolve when the table was loaded",
                        stream,
                        t.node_id
                    );
                    continue;
                };
                let Some(u) = pool_str(pool, url.trim_start_matches("rtmp://").as_bytes()) else {
                    continue;
                };
                let mut target: ngx_rtmp_relay_target_t = std::mem::zeroed();
                target.url.url = u;
                target.url.default_port = 1935;
                target.url.set_uri_part(1);
                target.url.set_no_resolve(1);
                if ngx_parse_url(pool, &mut target.url) != NGX_OK as ngx_int_t
                    || target.url.naddrs == 0
                {
                    ngx::ngx_log_error!(
                        NGX_LOG_ERR,
                        log,
                        "mesh: push of stream \"{}\" to node \"{}\" skipped: invalid address",
                        stream,
                        t.node_id
                    );
                    continue;
                }
                list.push(PushTarget {
                    node_id: t.node_id.clone(),
                    target,
                    up: true,
                });
            }
            if list.is_empty() {
                return None;
            }
            let mut p = Box::new(Pushes {
                s,
                stream: stream.to_string(),
                name,
                targets: list,
                ev: std::mem::zeroed(),
            });
            let me: *mut Pushes = &mut *p;
            for t in p.targets.iter_mut() {
                t.target.tag = module_ptr();
                t.target.data = (t as *mut PushTarget).cast();
            }
            p.ev.handler = Some(retry);
            p.ev.data = me.cast();
            p.ev.log = log;
            p.ev.set_cancelable(1);
            for t in p.targets.iter_mut() {
                ngx_rtmp_relay_push(s, &mut p.name, &mut t.target);
            }
            ngx_add_timer(&mut p.ev, RETRY_MS);
            Some(p)
        }
    }

    /// Push again to every target that has no live push now, then check again later.
    /// A change of a target's state is logged once, not every retry.
    fn push_missing(&mut self) {
        let alive = self.alive();
        let s = self.s;
        for t in self.targets.iter_mut() {
            let key = (t as *mut PushTarget).cast::<c_void>();
            if alive.contains(&key) {
                if !t.up {
                    t.up = true;
                    // SAFETY: live session log.
                    unsafe { log_state(s, &self.stream, &t.node_id, "is connected again") };
                }
                continue;
            }
            if t.up {
                t.up = false;
                // SAFETY: live session log.
                unsafe { log_state(s, &self.stream, &t.node_id, "is down, retrying") };
            }
            // SAFETY: live publishing session; the target and name live as long as `self`.
            unsafe { ngx_rtmp_relay_push(s, &mut self.name, &mut t.target) };
        }
        // SAFETY: our event, on the event loop.
        unsafe { ngx_add_timer(&mut self.ev, RETRY_MS) };
    }

    /// The `data` of every live push of ours on this session.
    fn alive(&self) -> Vec<*mut c_void> {
        let mut out = Vec::new();
        // SAFETY: the relay module's ctx for this session lists its pushes in `play`; each
        // entry stays valid while linked.
        unsafe {
            let idx = (*addr_of_mut!(ngx_rtmp_relay_module)).ctx_index;
            let rctx = (*(*self.s).ctx.add(idx)).cast::<ngx_rtmp_relay_ctx_t>();
            if rctx.is_null() {
                return out;
            }
            let mut p = (*rctx).play;
            while !p.is_null() {
                if (*p).tag == module_ptr() {
                    out.push((*p).data);
                }
                p = (*p).next;
            }
        }
        out
    }
}

/// # Safety
/// `s` must be a live session.
unsafe fn log_state(s: *mut ngx_rtmp_session_t, stream: &str, node: &str, what: &str) {
    // SAFETY: live session log.
    unsafe {
        ngx::ngx_log_error!(
            NGX_LOG_WARN,
            (*(*s).connection).log,
            "mesh: push of stream \"{}\" to node \"{}\" {}",
            stream,
            node,
            what
        );
    }
}

impl Drop for Pushes {
    fn drop(&mut self) {
        if self.ev.timer_set() == 1 {
            // SAFETY: our timer, deleted on the event loop before the event's memory goes.
            unsafe { ngx_del_timer(&mut self.ev) };
        }
    }
}

unsafe extern "C" fn retry(ev: *mut ngx_event_t) {
    guard((), || {
        // SAFETY: ev.data is the Pushes that owns this event; the timer is deleted before
        // that Pushes is dropped, so it is alive here.
        let p = unsafe { &mut *(*ev).data.cast::<Pushes>() };
        p.push_missing();
    })
}
