//! Pushes of a published stream to the targets the table gives this node's role.
//!
//! Each push is an nginx-rtmp relay push (`ngx_rtmp_relay_push`), tagged with our module and a
//! per-target id, so that a timer can see which pushes are alive and start the missing ones
//! again: a target that is down is retried every [`RETRY_MS`] without touching the source.
//! When the table changes, [`Pushes::reconcile`] starts new targets and closes removed ones.
//! URLs arrive with their hosts already resolved (mesh_agent, at table load): nothing here
//! waits for DNS.

use std::ffi::c_void;
use std::ptr::addr_of_mut;

use mesh_core::node::PlannedPush;
use mesh_core::wire::PushStat;

use crate::ffi::*;
use crate::module::module_ptr;
use crate::util::{guard, pool_str};

/// Interval between checks for pushes to start again.
pub const RETRY_MS: ngx_msec_t = 3000;

struct PushTarget {
    id: usize,
    node_id: String,
    url: String,
    target: ngx_rtmp_relay_target_t,
    /// Last seen state, to log changes only.
    up: bool,
    /// Times the push was started again.
    reconnects: u64,
}

/// The pushes of one published stream. Boxed: the timer event keeps its address for the life
/// of the publish.
pub struct Pushes {
    s: *mut ngx_rtmp_session_t,
    stream: String,
    name: ngx_str_t,
    targets: Vec<PushTarget>,
    next_id: usize,
    ev: ngx_event_t,
}

impl Pushes {
    /// Start pushing `stream` (published on session `s`) as `plan` says.
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
            let name = pool_str((*(*s).connection).pool, stream.as_bytes())?;
            let mut p = Box::new(Pushes {
                s,
                stream: stream.to_string(),
                name,
                targets: Vec::new(),
                next_id: 0,
                ev: std::mem::zeroed(),
            });
            let me: *mut Pushes = &mut *p;
            p.ev.handler = Some(retry);
            p.ev.data = me.cast();
            p.ev.log = (*(*s).connection).log;
            p.ev.set_cancelable(1);
            p.reconcile(plan);
            ngx_add_timer(&mut p.ev, RETRY_MS);
            Some(p)
        }
    }

    /// Make the running pushes match `plan`: close the ones it no longer has (or whose URL
    /// changed), start the new ones, leave the rest alone.
    pub fn reconcile(&mut self, plan: &[PlannedPush]) {
        let keep =
            |t: &PushTarget| plan.iter().any(|p| p.node_id == t.node_id && p.url.as_deref() == Some(&t.url));
        let (stay, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.targets).into_iter().partition(keep);
        self.targets = stay;
        for t in gone {
            self.close(t.id);
            // SAFETY: live session log.
            unsafe { log_state(self.s, &self.stream, &t.node_id, "stopped: no longer in the table") };
        }
        for p in plan {
            if self.targets.iter().any(|t| t.node_id == p.node_id) {
                continue;
            }
            let Some(url) = &p.url else {
                // SAFETY: live session log.
                unsafe {
                    log_error(
                        self.s,
                        &self.stream,
                        &p.node_id,
                        "skipped: its host did not resolve when the table was loaded",
                    )
                };
                continue;
            };
            // SAFETY: live publishing session.
            match unsafe { self.target(&p.node_id, url) } {
                Some(mut t) => {
                    // SAFETY: live publishing session; name and target live as long as `self`.
                    unsafe { ngx_rtmp_relay_push(self.s, &mut self.name, &mut t.target) };
                    self.targets.push(t);
                }
                // SAFETY: live session log.
                None => unsafe { log_error(self.s, &self.stream, &p.node_id, "skipped: invalid address") },
            }
        }
    }

    /// A relay target for `url` (`rtmp://ip:port/app/stream?node=&key=`), parsed into the
    /// connection's pool.
    ///
    /// # Safety
    /// `self.s` is live.
    unsafe fn target(&mut self, node_id: &str, url: &str) -> Option<PushTarget> {
        // SAFETY: the pool is the live session's; ngx_parse_url keeps pointers into it.
        unsafe {
            let pool = (*(*self.s).connection).pool;
            let u = pool_str(pool, url.trim_start_matches("rtmp://").as_bytes())?;
            let mut target: ngx_rtmp_relay_target_t = std::mem::zeroed();
            target.url.url = u;
            target.url.default_port = 1935;
            target.url.set_uri_part(1);
            target.url.set_no_resolve(1);
            if ngx_parse_url(pool, &mut target.url) != NGX_OK as ngx_int_t || target.url.naddrs == 0 {
                return None;
            }
            self.next_id += 1;
            target.tag = module_ptr();
            target.data = self.next_id as *mut c_void;
            Some(PushTarget {
                id: self.next_id,
                node_id: node_id.to_string(),
                url: url.to_string(),
                target,
                up: true,
                reconnects: 0,
            })
        }
    }

    /// Close the live push with id `id`, if any.
    fn close(&self, id: usize) {
        // SAFETY: the relay ctx's `play` list holds live push contexts; finalizing a session
        // only posts its close.
        unsafe {
            for (data, session) in self.live() {
                if data as usize == id && !session.is_null() {
                    ngx_rtmp_finalize_session(session);
                }
            }
        }
    }

    /// Push again to every target that has no live push now, then check again later.
    /// A change of a target's state is logged once, not every retry.
    fn push_missing(&mut self) {
        let alive: Vec<usize> = self.live().into_iter().map(|(d, _)| d as usize).collect();
        let s = self.s;
        for t in self.targets.iter_mut() {
            if alive.contains(&t.id) {
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
            t.reconnects += 1;
            // SAFETY: live publishing session; the target and name live as long as `self`.
            unsafe { ngx_rtmp_relay_push(s, &mut self.name, &mut t.target) };
        }
        // SAFETY: our event, on the event loop.
        unsafe { ngx_add_timer(&mut self.ev, RETRY_MS) };
    }

    /// `(data, session)` of every live push of ours on this session.
    fn live(&self) -> Vec<(*mut c_void, *mut ngx_rtmp_session_t)> {
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
                    out.push(((*p).data, (*p).session));
                }
                p = (*p).next;
            }
        }
        out
    }

    /// The state of each push, for `mesh_status`.
    pub fn status(&self) -> Vec<mesh_core::status::PushStatus> {
        self.targets
            .iter()
            .map(|t| mesh_core::status::PushStatus {
                stream: self.stream.clone(),
                target: t.node_id.clone(),
                state: if t.up { "connected" } else { "retrying" }.into(),
                reconnects: t.reconnects,
            })
            .collect()
    }

    /// The state of each push, for the heartbeat.
    pub fn figures(&self) -> Vec<PushStat> {
        self.targets
            .iter()
            .map(|t| PushStat {
                stream: self.stream.clone(),
                to: t.node_id.clone(),
                state: if t.up { "connected" } else { "retrying" }.into(),
            })
            .collect()
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

/// # Safety
/// `s` must be a live session.
unsafe fn log_error(s: *mut ngx_rtmp_session_t, stream: &str, node: &str, what: &str) {
    // SAFETY: live session log.
    unsafe {
        ngx::ngx_log_error!(
            NGX_LOG_ERR,
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
