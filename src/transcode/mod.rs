//! On-demand transcodes at the edge: one ffmpeg per stream, started by the first viewer,
//! stopped when nobody watches (no HTTP request and no RTMP viewer for the idle time), when the
//! publisher leaves, when the role stops serving viewers, and on reload and quit.
//!
//! The child's death is seen through its stdout pipe, registered as an nginx read event
//! (mesh_agent::proc); a dead transcode that is still wanted is started again with backoff, up
//! to a cap, then given up with a log line. Its output directory (made from a validated stream
//! id under `mesh_media_root`) is removed when it ends. Event loop only.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::IntoRawFd;
use std::path::PathBuf;
use std::ptr::addr_of;

use mesh_agent::proc::{self, SIGKILL, SIGTERM};
use mesh_core::media::{ffmpeg_argv, Job, Ladder};
use mesh_core::name::is_valid_id;

use crate::ffi::*;
use crate::util::{drain, guard};

/// Starts given up after this many consecutive early deaths.
pub const MAX_RESTARTS: u32 = 5;
/// A run longer than this resets the restart count.
const HEALTHY_S: u64 = 30;
/// A second SIGTERM after the first: ffmpeg only interrupts a blocking read (an input gone
/// quiet) on its second signal.
const TERM_AGAIN_MS: ngx_msec_t = 300;
/// SIGKILL when the child is still there after that.
const KILL_AFTER_MS: ngx_msec_t = 3000;
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
    pid: Option<u32>,
    conn: *mut ngx_connection_t,
    state: State,
    restarts: u32,
    started: u64,
    last_wanted: u64,
    stopping: bool,
    /// Signals sent since stopping began.
    signals: u32,
    /// Restart after backoff, or SIGKILL after SIGTERM.
    ev: Box<ngx_event_t>,
}

#[derive(Default)]
struct Manager {
    settings: Option<Settings>,
    streams: HashMap<String, Box<Transcode>>,
    tick: Option<Box<ngx_event_t>>,
    /// Key the transcoder's own RTMP play presents (`node=<self>&key=<this>`).
    key: String,
}

thread_local! {
    static MANAGER: RefCell<Manager> = RefCell::new(Manager::default());
}

fn now() -> u64 {
    ngx_time().max(0) as u64
}

/// The key our own ffmpeg plays with; random per worker.
pub fn internal_key() -> String {
    MANAGER.with_borrow_mut(|m| {
        if m.key.is_empty() {
            let mut b = [0u8; 16];
            if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
                let _ = std::io::Read::read_exact(&mut f, &mut b);
            }
            m.key = b.iter().map(|x| format!("{x:02x}")).collect();
        }
        m.key.clone()
    })
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
        pid: None,
        conn: std::ptr::null_mut(),
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
    let _ = std::fs::remove_dir_all(&t.dir);
    if let Err(e) = std::fs::create_dir_all(&t.dir) {
        // SAFETY: valid log.
        unsafe {
            log_error(
                log,
                &format!(
                    "mesh: transcode of stream \"{}\": cannot create \"{}\": {e}",
                    t.stream,
                    t.dir.display()
                ),
            )
        };
        t.state = State::Failed(format!("cannot create its directory: {e}"));
        return;
    }
    let input =
        format!("{}/{}?node={node_id}&key={}", s.source.trim_end_matches('/'), t.stream, internal_key());
    let out_dir = t.dir.to_string_lossy().into_owned();
    let audio = true;
    let argv = ffmpeg_argv(&Job {
        ffmpeg: &s.ffmpeg,
        input: &input,
        out_dir: &out_dir,
        ladder: &s.ladder,
        segment_s: s.segment_s,
        window: s.window,
        audio,
    });
    match proc::spawn(&argv) {
        Ok(child) => {
            // SAFETY: the read end becomes an nginx connection, which owns it from here on.
            unsafe {
                let fd = child.death.into_raw_fd();
                let c = ngx_get_connection(fd, log);
                if c.is_null() {
                    proc::signal(child.pid, SIGKILL);
                    t.state = State::Failed("no free connection".into());
                    return;
                }
                (*c).data = (t as *mut Transcode).cast();
                (*(*c).read).handler = Some(on_death);
                (*(*c).read).log = log;
                if ngx_handle_read_event((*c).read, 0) != NGX_OK as ngx_int_t {
                    ngx_close_connection(c);
                    proc::signal(child.pid, SIGKILL);
                    t.state = State::Failed("cannot watch the child".into());
                    return;
                }
                t.conn = c;
                ngx::ngx_log_error!(
                    NGX_LOG_NOTICE,
                    log,
                    "mesh: transcode of stream \"{}\" started (pid {})",
                    t.stream,
                    child.pid
                );
            }
            t.pid = Some(child.pid);
            t.started = now();
            t.state = State::Running;
        }
        Err(e) => {
            // SAFETY: valid log.
            unsafe {
                log_error(
                    log,
                    &format!("mesh: transcode of stream \"{}\": cannot run \"{}\": {e}", t.stream, s.ffmpeg),
                )
            };
            // SAFETY: event loop.
            unsafe { died(t, log) };
        }
    }
}

/// # Safety
/// Valid log.
unsafe fn log_error(log: *mut ngx_log_t, msg: &str) {
    ngx::ngx_log_error!(NGX_LOG_ERR, log, "{}", msg);
}

/// The child is gone (or never started): restart with backoff while wanted, else clean up.
///
/// # Safety
/// Event loop.
unsafe fn died(t: &mut Transcode, log: *mut ngx_log_t) {
    t.pid = None;
    if !t.conn.is_null() {
        // SAFETY: our connection.
        unsafe { ngx_close_connection(t.conn) };
        t.conn = std::ptr::null_mut();
    }
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
        // SAFETY: valid log.
        unsafe {
            log_error(
                log,
                &format!(
                    "mesh: transcode of stream \"{}\" given up after {} restarts",
                    t.stream, MAX_RESTARTS
                ),
            )
        };
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
        ngx_add_timer(&mut *t.ev, delay as ngx_msec_t);
    }
}

/// The death pipe is readable: drain it; end-of-file means the child is gone.
unsafe extern "C" fn on_death(ev: *mut ngx_event_t) {
    guard((), || {
        // SAFETY: the event's connection is a transcode's death pipe; its data the Transcode.
        unsafe {
            let c = (*ev).data.cast::<ngx_connection_t>();
            let t = &mut *(*c).data.cast::<Transcode>();
            if drain((*c).fd) {
                died(t, (*ev).log);
                return;
            }
            if ngx_handle_read_event(ev, 0) != NGX_OK as ngx_int_t {
                ngx::ngx_log_error!(NGX_LOG_ALERT, (*ev).log, "mesh: cannot watch a transcode");
            }
        }
    })
}

/// A transcode's timer: restart after backoff, or SIGKILL a child that ignored SIGTERM.
unsafe extern "C" fn on_timer(ev: *mut ngx_event_t) {
    guard((), || {
        // SAFETY: ev.data is the boxed Transcode owning this event; the timer is deleted
        // before the box is dropped.
        unsafe {
            let t = &mut *(*ev).data.cast::<Transcode>();
            if t.stopping {
                if let Some(pid) = t.pid {
                    t.signals += 1;
                    if t.signals == 2 {
                        proc::signal(pid, SIGTERM);
                        ngx_add_timer(ev, KILL_AFTER_MS);
                    } else {
                        proc::signal(pid, SIGKILL);
                    }
                }
                return;
            }
            let Some(settings) = MANAGER.with_borrow(|m| m.settings.clone()) else { return };
            let node_id = crate::runtime::node_id();
            spawn(t, &settings, &node_id, (*ev).log);
        }
    })
}

/// Stop the transcode of `stream`: SIGTERM, then SIGKILL if it lingers.
///
/// # Safety
/// Event loop.
pub unsafe fn stop(stream: &str, why: &str, log: *mut ngx_log_t) {
    let t = MANAGER.with_borrow_mut(|m| m.streams.get_mut(stream).map(|t| &mut **t as *mut Transcode));
    let Some(t) = t else { return };
    // SAFETY: boxed in the manager until `died` removes it.
    unsafe {
        let t = &mut *t;
        if t.stopping {
            return;
        }
        t.stopping = true;
        ngx::ngx_log_error!(
            NGX_LOG_NOTICE,
            log,
            "mesh: transcode of stream \"{}\" stopping: {}",
            t.stream,
            why
        );
        if t.ev.timer_set() == 1 {
            ngx_del_timer(&mut *t.ev);
        }
        match t.pid {
            Some(pid) => {
                proc::signal(pid, SIGTERM);
                t.signals = 1;
                ngx_add_timer(&mut *t.ev, TERM_AGAIN_MS);
            }
            None => died(t, log),
        }
    }
}

/// Stop every transcode (role change, exit).
///
/// # Safety
/// Event loop.
pub unsafe fn stop_all(why: &str, log: *mut ngx_log_t) {
    let streams: Vec<String> = MANAGER.with_borrow(|m| m.streams.keys().cloned().collect());
    for s in streams {
        // SAFETY: event loop.
        unsafe { stop(&s, why, log) };
    }
}

/// Worker exit: kill every child now and remove the directories (nothing will watch them).
pub fn exit_all() {
    let _ = MANAGER.try_with(|m| {
        let mut m = m.borrow_mut();
        for (_, mut t) in m.streams.drain() {
            if t.ev.timer_set() == 1 {
                // SAFETY: our timer, on the event loop.
                unsafe { ngx_del_timer(&mut *t.ev) };
            }
            if let Some(pid) = t.pid {
                proc::signal(pid, SIGKILL);
            }
            if !t.conn.is_null() {
                // SAFETY: our connection (the child's stdout pipe), on the event loop; nginx
                // reports any connection still open when the worker exits.
                unsafe { ngx_close_connection(t.conn) };
                t.conn = std::ptr::null_mut();
            }
            let _ = std::fs::remove_dir_all(&t.dir);
        }
        if let Some(mut tick) = m.tick.take() {
            if tick.timer_set() == 1 {
                // SAFETY: our timer, on the event loop.
                unsafe { ngx_del_timer(&mut *tick) };
            }
        }
    });
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
            let log = (*ev).log;
            // A worker shutting down (reload, quit) serves no new viewers: stop at once rather
            // than when its last RTMP client leaves.
            if crate::util::exiting() {
                stop_all("worker shutting down", log);
                return;
            }
            for s in idle {
                stop(&s, "idle", log);
            }
            let any = MANAGER.with_borrow(|m| !m.streams.is_empty());
            if any && !crate::util::exiting() {
                ngx_add_timer(ev, TICK_MS);
            }
        }
    })
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
