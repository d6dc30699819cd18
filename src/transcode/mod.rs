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
//! One per stream per node too (claim.rs): the worker that starts a transcode holds the
//! stream's claim in the node's shared zone; the other workers serve its files, keep it wanted
//! and wait for a stopping one to end before starting their own.
//!
//! Stopping is graceful (stop.rs): SIGTERM, SIGKILL only after a grace period, never at the
//! worker's exit. Event loop only.
//!
//! Ownership: the manager owns every transcode, under an id never used again. What runs later —
//! the output pipe's reads, the restart backoff, the stop sequence's timer, the idle check —
//! holds only that id, finds its transcode through the manager, and ends its borrow before a
//! transcode is removed. Nothing holds a pointer into the manager.

/// Log to the cycle's log (a transcode outlives the request that started it):
/// `log!(NGX_LOG_ERR, "format", args)`.
macro_rules! log {
    ($level:expr, $($arg:tt)+) => {
        ngx::ngx_log_error!($level, ngx::log::ngx_cycle_log().as_ptr(), $($arg)+)
    };
}

mod child;
mod claim;
mod credential;
mod idle;
mod state;
mod stop;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use mesh_core::claims::Phase;
use mesh_core::media::Ladder;
use mesh_core::name::is_valid_id;

pub use credential::take_credential;
pub use state::{Failure, State};
pub use stop::{exit_all, stop, stop_all};

use crate::nginx::event::{after, every, Task, Timer};
use crate::nginx::ffi::{NGX_LOG_ERR, NGX_LOG_NOTICE, NGX_LOG_WARN};
use crate::nginx::util::now;

/// Starts given up after this many consecutive early deaths.
pub const MAX_RESTARTS: u32 = 5;
/// A run longer than this resets the restart count.
const HEALTHY_S: u64 = 30;
/// How often idle transcodes are looked for.
const TICK: Duration = Duration::from_secs(1);
/// A transcode given up is tried again by a viewer after this long.
pub(crate) const RETRY_FAILED_S: u64 = 60;

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
    /// The restart after a death (dropped: canceled).
    backoff: Option<Task<()>>,
    /// The stop sequence's next step (not cancelable: a quitting worker waits for it).
    stopper: Option<Timer>,
    /// Its claim's generation (None: no shared zone).
    generation: Option<u64>,
    /// Its claim was taken over: its directory is the new owner's.
    lost: bool,
    /// The directory's lock (child.rs), given back when the transcode goes, after its directory.
    _lock: Option<mesh_agent::proc::Lock>,
}

impl Transcode {
    /// Its phase as the other workers see it.
    fn phase(&self) -> Phase {
        match self.state {
            _ if self.stopping => Phase::Stopping,
            State::Running => Phase::Running,
            State::Restarting => Phase::Restarting,
            State::Failed(_) => Phase::Failed,
        }
    }

    /// It ended: its directory goes (unless it is another owner's now), then its claim.
    fn clean_up(&self) {
        if !self.lost {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[derive(Default)]
struct Manager {
    settings: Option<Settings>,
    /// Every transcode of this worker, by id.
    all: HashMap<u64, Transcode>,
    /// The id of each stream's transcode.
    ids: HashMap<String, u64>,
    last_id: u64,
    /// The idle check, while there are transcodes.
    tick: Option<Task<()>>,
}

impl Manager {
    fn get_mut(&mut self, id: u64) -> Option<&mut Transcode> {
        self.all.get_mut(&id)
    }

    fn of(&self, stream: &str) -> Option<&Transcode> {
        self.ids.get(stream).and_then(|id| self.all.get(id))
    }

    fn of_mut(&mut self, stream: &str) -> Option<(u64, &mut Transcode)> {
        let id = *self.ids.get(stream)?;
        self.all.get_mut(&id).map(|t| (id, t))
    }

    fn insert(&mut self, t: Transcode) -> u64 {
        self.last_id += 1;
        let id = self.last_id;
        self.ids.insert(t.stream.clone(), id);
        self.all.insert(id, t);
        id
    }

    /// Take the transcode out, to be dropped once the manager is no longer borrowed.
    fn remove(&mut self, id: u64) -> Option<Transcode> {
        let t = self.all.remove(&id)?;
        self.ids.remove(&t.stream);
        Some(t)
    }
}

thread_local! {
    static MANAGER: RefCell<Manager> = RefCell::new(Manager::default());
}

/// The transcode of `stream` is wanted now (a viewer asked). Starts it when it is not running.
/// Returns its state.
pub fn want(settings: &Settings, stream: &str, node_id: &str) -> State {
    let (state, retired) = MANAGER.with_borrow_mut(|m| {
        m.settings.get_or_insert_with(|| settings.clone());
        let Some((id, t)) = m.of_mut(stream) else { return (None, None) };
        // A transcode given up is tried again after a while.
        if matches!(t.state, State::Failed(_)) && now() >= t.started + RETRY_FAILED_S {
            return (None, m.remove(id));
        }
        t.last_wanted = now();
        (Some(t.state), None)
    });
    drop(retired);
    if let Some(s) = state {
        return s;
    }
    if !is_valid_id(stream) {
        return State::Failed(Failure::BadName);
    }
    match claim::decide(stream) {
        claim::Decision::Start(generation) => start(settings, stream, node_id, generation),
        claim::Decision::Elsewhere(s) => s,
    }
}

/// Is a transcode of `stream` there (running or restarting), in this worker or another?
pub fn exists(stream: &str) -> bool {
    let local =
        MANAGER.with_borrow(|m| m.of(stream).map(|t| !matches!(t.state, State::Failed(_)) && !t.stopping));
    local.unwrap_or_else(|| claim::elsewhere(stream))
}

/// A viewer fetched a file of `stream`.
pub fn touch(stream: &str) {
    MANAGER.with_borrow_mut(|m| {
        if let Some((_, t)) = m.of_mut(stream) {
            t.last_wanted = now();
        }
    })
}

/// Figures for the heartbeat.
pub fn figures() -> Vec<mesh_core::wire::TranscodeStat> {
    MANAGER.with_borrow(|m| {
        m.all
            .values()
            .map(|t| mesh_core::wire::TranscodeStat {
                stream: t.stream.clone(),
                state: t.state.name().into(),
                restarts: u64::from(t.restarts),
            })
            .collect()
    })
}

/// A new transcode of `stream` (its claim of `generation` taken), and its first run.
fn start(settings: &Settings, stream: &str, node_id: &str, generation: Option<u64>) -> State {
    let lock = match child::lock(&settings.root, stream) {
        Ok(Some(l)) => Some(l),
        Ok(None) => {
            // Another process's ffmpeg still writes (or its directory is still being removed):
            // wait for it, and leave the claim to whoever asks next.
            if let Some(g) = generation {
                claim::release(stream, g);
            }
            claim::waiting(stream);
            return State::Restarting;
        }
        Err(e) => {
            log!(NGX_LOG_WARN, "mesh: transcode of stream \"{}\": cannot lock its directory: {}", stream, e);
            None
        }
    };
    let id = MANAGER.with_borrow_mut(|m| {
        if m.tick.is_none() {
            m.tick = Some(every(TICK, idle::tick));
        }
        m.insert(Transcode {
            stream: stream.to_string(),
            dir: settings.root.join(stream),
            child: None,
            state: State::Running,
            restarts: 0,
            started: now(),
            last_wanted: now(),
            stopping: false,
            signals: 0,
            backoff: None,
            stopper: None,
            generation,
            lost: false,
            _lock: lock,
        })
    });
    run(id, settings, node_id);
    // (Only stopping removes a transcode.)
    MANAGER.with_borrow(|m| m.all.get(&id).map_or(State::Restarting, |t| t.state))
}

/// Start (or start again) the child of transcode `id`.
fn run(id: u64, s: &Settings, node_id: &str) {
    let failed = MANAGER.with_borrow_mut(|m| {
        let Some(t) = m.get_mut(id) else { return false };
        if let Err(e) = child::make_dir(&s.root, &t.dir) {
            log!(
                NGX_LOG_ERR,
                "mesh: transcode of stream \"{}\": cannot create \"{}\": {}",
                t.stream,
                t.dir.display(),
                e
            );
            t.state = State::Failed(Failure::Dir(e.kind()));
            return false;
        }
        match child::start(id, &t.stream, &t.dir, s, node_id, t.generation, on_output) {
            Ok(c) => {
                log!(NGX_LOG_NOTICE, "mesh: transcode of stream \"{}\" started (pid {})", t.stream, c.pid);
                t.child = Some(c);
                t.started = now();
                t.state = State::Running;
                false
            }
            Err(e) => {
                log!(NGX_LOG_ERR, "mesh: transcode of stream \"{}\": {}", t.stream, e);
                true
            }
        }
    });
    if failed {
        died(id);
    }
}

/// The backoff of transcode `id` is over: start it again.
fn restart(id: u64) {
    let Some(settings) = MANAGER.with_borrow(|m| m.settings.clone()) else { return };
    let node_id = crate::conf::current_node().node_id.clone();
    run(id, &settings, &node_id);
}

/// The output pipe of transcode `id` is readable: log its lines; end-of-file means the child
/// is gone.
fn on_output(id: u64) {
    let gone = MANAGER.with_borrow_mut(|m| {
        let Some(t) = m.get_mut(id) else { return false };
        t.child.as_mut().is_some_and(|c| c.read(&t.stream))
    });
    if gone {
        died(id);
    }
}

/// The child of transcode `id` is gone (or never started): restart with backoff while wanted,
/// else end it.
fn died(id: u64) {
    let ended = MANAGER.with_borrow_mut(|m| {
        let t = m.get_mut(id)?;
        if let Some(c) = t.child.take() {
            c.close(&t.stream);
        }
        credential::revoke(&t.stream);
        // (From inside the backoff itself when a restart failed: dropping it is allowed.)
        t.backoff = None;
        if t.stopping {
            t.clean_up();
            if let (Some(g), false) = (t.generation, t.lost) {
                claim::release(&t.stream, g);
            }
            log!(NGX_LOG_NOTICE, "mesh: transcode of stream \"{}\" ended", t.stream);
            return m.remove(id);
        }
        if now().saturating_sub(t.started) >= HEALTHY_S {
            t.restarts = 0;
        }
        t.restarts += 1;
        if t.restarts > MAX_RESTARTS {
            t.state = State::Failed(Failure::GaveUp);
            t.clean_up();
            log!(
                NGX_LOG_ERR,
                "mesh: transcode of stream \"{}\" given up after {} restarts",
                t.stream,
                MAX_RESTARTS
            );
            return None;
        }
        let delay = 250u64 << (t.restarts - 1).min(7);
        t.state = State::Restarting;
        log!(
            NGX_LOG_WARN,
            "mesh: transcode of stream \"{}\" died, restart {} of {} in {} ms",
            t.stream,
            t.restarts,
            MAX_RESTARTS,
            delay
        );
        t.backoff = Some(after(Duration::from_millis(delay), move || restart(id)));
        None
    });
    // Its pipe, timers and tasks go now, the manager no longer borrowed.
    drop(ended);
}
