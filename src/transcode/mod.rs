//! On-demand transcodes at the edge: one ffmpeg per stream, started by the first viewer,
//! stopped when nobody watches (no HTTP request and no RTMP viewer for the idle time), when the
//! publisher leaves, when the role stops serving viewers, and on reload and quit.
//!
//! Each start of ffmpeg (child.rs) gets a new single-use credential for its own RTMP play
//! (credential.rs); the child's output is read on the event loop and logged redacted; its
//! end-of-file is the child's death. A dead transcode that is still wanted is started again
//! with backoff, up to a cap, then given up with a log line. Its output directory (made from a
//! validated stream id under `mesh_media_root`, 0750) is removed when it ends.
//!
//! Stopping is graceful (stop.rs): SIGTERM, SIGKILL only after a grace period, never at the
//! worker's exit. Event loop only.

mod child;
mod credential;
mod stop;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::ptr::addr_of;

use mesh_core::media::Ladder;
use mesh_core::name::is_valid_id;

pub use credential::take_credential;
pub use stop::exit_all;

use crate::nginx::ffi::*;
use crate::nginx::util::guard;

/// Starts given up after this many consecutive early deaths.
pub const MAX_RESTARTS: u32 = 5;
/// A run longer than this resets the restart count.
const HEALTHY_S: u64 = 30;
const TICK_MS: ngx_msec_t = 1000;
/// A transcode given up is tried again by a viewer after this long.
const RETRY_FAILED_S: u64 = 60;

/// What a transcode needs to know (from the http{} configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    pub ffmpeg: String,
    pub root: PathBuf,
    /// `rtmp://127.0.0.1:1935/app` where ffmpeg plays streams from.
    pub source: String,
    pub ladder: Ladder,
    pub segment_s: f64,
    pub window: u32,
    pub idle_s: u64,
}

/// A transcode's state, as viewers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Running,
    /// Waiting to start again after a death.
    Restarting,
    /// Given up after too many deaths (the reason).
    Failed(String),
}

struct Transcode {
    stream: String,
    dir: PathBuf,
    child: Option<child::Child>,
    state: State,
    restarts: u32,
    started: u64,
    last_wanted: u64,
    stopping: bool,
    /// Signals sent since stopping began.
    signals: u32,
    /// Restart after backoff, or the next signal while stopping.
    ev: Box<ngx_event_t>,
}

#[derive(Default)]
struct Manager {
    settings: Option<Settings>,
    streams: HashMap<String, Box<Transcode>>,
    tick: Option<Box<ngx_event_t>>,
}

thread_local! {
    static MANAGER: RefCell<Manager> = RefCell::new(Manager::default());
}

pub(crate) fn now() -> u64 {
    ngx_time().max(0) as u64
}

/// The event loop's clock in milliseconds (`ngx_current_msec`).
pub(crate) fn now_ms() -> u64 {
    // SAFETY: a plain global nginx updates on the event loop, where we read it.
    unsafe { *std::ptr::addr_of!(ngx_current_msec) as u64 }
}

/// The transcode of `stream` is wanted now (a viewer asked). Starts it when it is not running.
/// Returns its state.
///
/// # Safety
/// Event loop.
pub unsafe fn want(settings: &Settings, stream: &str, node_id: &str) -> State {
    // The cycle's log: a transcode outlives the request that started it.
    // SAFETY: ngx_cycle is the worker's current cycle.
    let log = unsafe { (**addr_of!(ngx_cycle)).log };
    let existing = MANAGER.with_borrow_mut(|m| {
        m.settings.get_or_insert_with(|| settings.clone());
        // A transcode given up is tried again after a while.
        if m.streams
            .get(stream)
            .is_some_and(|t| matches!(t.state, State::Failed(_)) && now() >= t.started + RETRY_FAILED_S)
        {
            m.streams.remove(stream);
        }
        m.streams.get_mut(stream).map(|t| {
            t.last_wanted = now();
            t.state.clone()
        })
    });
    if let Some(s) = existing {
        return s;
    }
    // SAFETY: event loop.
    unsafe { start(settings, stream, node_id, log) }
}

/// Is a transcode of `stream` there (running or restarting)?
pub fn exists(stream: &str) -> bool {
    MANAGER.with_borrow(|m| {
        m.streams.get(stream).is_some_and(|t| !matches!(t.state, State::Failed(_)) && !t.stopping)
    })
}

/// A viewer fetched a file of `stream`.
pub fn touch(stream: &str) {
    MANAGER.with_borrow_mut(|m| {
        if let Some(t) = m.streams.get_mut(stream) {
            t.last_wanted = now();
        }
    })
}

/// # Safety
/// Event loop.
unsafe fn start(settings: &Settings, stream: &str, node_id: &str, log: *mut ngx_log_t) -> State {
    if !is_valid_id(stream) {
        return State::Failed("bad stream name".into());
    }
    let dir = settings.root.join(stream);
    let mut t = Box::new(Transcode {
        stream: stream.to_string(),
        dir,
        child: None,
        state: State::Running,
        restarts: 0,
        started: now(),
        last_wanted: now(),
        stopping: false,
        signals: 0,
        // SAFETY: a zeroed event is an idle nginx event.
        ev: Box::new(unsafe { std::mem::zeroed() }),
    });
    t.ev.log = log;
    t.ev.set_cancelable(1);
    t.ev.handler = Some(on_timer);
    let me: *mut Transcode = &mut *t;
    t.ev.data = me.cast();
    // SAFETY: event loop.
    unsafe { spawn(&mut t, settings, node_id, log) };
    let state = t.state.clone();
    MANAGER.with_borrow_mut(|m| {
        m.streams.insert(stream.to_string(), t);
    });
    // SAFETY: event loop.
    unsafe { ensure_tick(log) };
    state
}

/// Start (or start again) the child of `t`.
///
/// # Safety
/// Event loop; `t` is boxed in the manager (or about to be).
unsafe fn spawn(t: &mut Transcode, s: &Settings, node_id: &str, log: *mut ngx_log_t) {
    if let Err(e) = child::make_dir(&s.root, &t.dir) {
        ngx::ngx_log_error!(
            NGX_LOG_ERR,
            log,
            "mesh: transcode of stream \"{}\": cannot create \"{}\": {}",
            t.stream,
            t.dir.display(),
            e
        );
        t.state = State::Failed(format!("cannot create its directory: {e}"));
        return;
    }
    // SAFETY: event loop; t is boxed.
    match unsafe { child::start(t, s, node_id, log) } {
        Ok(c) => {
            ngx::ngx_log_error!(
                NGX_LOG_NOTICE,
                log,
                "mesh: transcode of stream \"{}\" started (pid {})",
                t.stream,
                c.pid
            );
            t.child = Some(c);
            t.started = now();
            t.state = State::Running;
        }
        Err(e) => {
            ngx::ngx_log_error!(NGX_LOG_ERR, log, "mesh: transcode of stream \"{}\": {}", t.stream, e);
            // SAFETY: event loop.
            unsafe { died(t, log) };
        }
    }
}

/// The child is gone (or never started): restart with backoff while wanted, else clean up.
///
/// # Safety
/// Event loop. May drop the box `t` lives in: `t` is not to be used after.
unsafe fn died(t: &mut Transcode, log: *mut ngx_log_t) {
    if let Some(c) = t.child.take() {
        // SAFETY: event loop.
        unsafe { c.close(&t.stream, log) };
    }
    credential::revoke(&t.stream);
    if t.ev.timer_set() == 1 {
        // SAFETY: our timer.
        unsafe { ngx_del_timer(&mut *t.ev) };
    }
    if t.stopping {
        let stream = t.stream.clone();
        let _ = std::fs::remove_dir_all(&t.dir);
        ngx::ngx_log_error!(NGX_LOG_NOTICE, log, "mesh: transcode of stream \"{}\" ended", stream);
        // Dropping the box: nothing of ours refers to it any more.
        MANAGER.with_borrow_mut(|m| m.streams.remove(&stream));
        return;
    }
    if now().saturating_sub(t.started) >= HEALTHY_S {
        t.restarts = 0;
    }
    t.restarts += 1;
    if t.restarts > MAX_RESTARTS {
        t.state = State::Failed(format!("ffmpeg failed {MAX_RESTARTS} times"));
        let _ = std::fs::remove_dir_all(&t.dir);
        ngx::ngx_log_error!(
            NGX_LOG_ERR,
            log,
            "mesh: transcode of stream \"{}\" given up after {} restarts",
            t.stream,
            MAX_RESTARTS
        );
        return;
    }
    let delay = 250u64 << (t.restarts - 1).min(7);
    t.state = State::Restarting;
    // SAFETY: valid log; our timer.
    unsafe {
        ngx::ngx_log_error!(
            NGX_LOG_WARN,
            log,
            "mesh: transcode of stream \"{}\" died, restart {} of {} in {} ms",
            t.stream,
            t.restarts,
            MAX_RESTARTS,
            delay
        );
        t.ev.set_cancelable(1);
        ngx_add_timer(&mut *t.ev, delay as ngx_msec_t);
    }
}

/// A transcode's timer: restart after backoff, or the next signal to a child being stopped.
unsafe extern "C" fn on_timer(ev: *mut ngx_event_t) {
    guard((), || {
        // SAFETY: ev.data is the boxed Transcode owning this event; the timer is deleted
        // before the box is dropped.
        unsafe {
            let t = &mut *(*ev).data.cast::<Transcode>();
            let log = (*ev).log;
            if t.stopping {
                stop::next_signal(t, log);
                return;
            }
            let Some(settings) = MANAGER.with_borrow(|m| m.settings.clone()) else { return };
            let node_id = crate::conf::current_node().node_id.clone();
            spawn(t, &settings, &node_id, log);
        }
    })
}

/// The once-a-second check for idle transcodes.
///
/// # Safety
/// Event loop.
unsafe fn ensure_tick(log: *mut ngx_log_t) {
    MANAGER.with_borrow_mut(|m| {
        let tick = m.tick.get_or_insert_with(|| {
            // SAFETY: a zeroed event is an idle nginx event.
            let mut ev: Box<ngx_event_t> = Box::new(unsafe { std::mem::zeroed() });
            ev.handler = Some(on_tick);
            ev.log = log;
            ev.set_cancelable(1);
            ev
        });
        if tick.timer_set() == 0 {
            // SAFETY: our timer.
            unsafe { ngx_add_timer(&mut **tick, TICK_MS) };
        }
    });
}

unsafe extern "C" fn on_tick(ev: *mut ngx_event_t) {
    guard((), || {
        // SAFETY: event loop.
        let log = unsafe { (*ev).log };
        // A worker shutting down (reload, quit) serves no new viewers: stop at once rather
        // than when its last RTMP client leaves.
        if crate::nginx::util::exiting() {
            // SAFETY: event loop.
            unsafe { stop::stop_all("worker shutting down", log) };
            return;
        }
        let now = now();
        let idle: Vec<String> = MANAGER.with_borrow(|m| {
            let idle_s = m.settings.as_ref().map_or(30, |s| s.idle_s);
            m.streams
                .values()
                .filter(|t| !t.stopping && now.saturating_sub(t.last_wanted) >= idle_s)
                .filter(|t| crate::registry::rtmp_viewers(&t.stream) == 0)
                .map(|t| t.stream.clone())
                .collect()
        });
        // SAFETY: event loop.
        unsafe {
            for s in idle {
                stop::stop(&s, "idle", log);
            }
            if MANAGER.with_borrow(|m| !m.streams.is_empty()) {
                ngx_add_timer(ev, TICK_MS);
            }
        }
    })
}

/// Stop the transcode of `stream` gracefully (the publisher left).
pub fn stop(stream: &str, why: &str) {
    // SAFETY: event loop, with the cycle's log.
    unsafe { stop::stop(stream, why, ngx::log::ngx_cycle_log().as_ptr()) }
}

/// Stop every transcode (the role serves no viewers).
pub fn stop_all(why: &str) {
    // SAFETY: as above.
    unsafe { stop::stop_all(why, ngx::log::ngx_cycle_log().as_ptr()) }
}

/// Figures for the heartbeat.
pub fn figures() -> Vec<mesh_core::wire::TranscodeStat> {
    MANAGER.with_borrow(|m| {
        m.streams
            .values()
            .map(|t| mesh_core::wire::TranscodeStat {
                stream: t.stream.clone(),
                state: match &t.state {
                    State::Running => "running".into(),
                    State::Restarting => "restarting".into(),
                    State::Failed(_) => "failed".into(),
                },
                restarts: u64::from(t.restarts),
            })
            .collect()
    })
}
