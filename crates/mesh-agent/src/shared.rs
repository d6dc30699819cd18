//! What the agent's threads share: the configuration, the node state (its one writer, in
//! [`crate::state`]), each link's status, the sink to the event loop, and the stop and wake-up
//! signals.

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_core::node::Node;
use mesh_core::status::LinkStatus;
use nix::fcntl::Flock;
use parking_lot::{Condvar, Mutex};

use crate::agent::{Config, Event, Level, Sink};
use crate::link::Link;
use crate::state::NodeState;

/// The node learned from a signed heartbeat answer that the master holds a newer table for it
/// (a higher version, or one of another master epoch), and the long poll did not bring it
/// within [`Config::resync_grace`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Behind {
    pub version: u64,
    pub epoch: Option<String>,
    pub since_unix: u64,
}

pub(crate) struct Shared {
    pub cfg: Config,
    pub sink: Arc<dyn Sink>,
    pub state: NodeState,
    /// The streams link: the long poll's, and the resync fetches' when one brings a table.
    pub streams: Mutex<Link>,
    /// Each link's state, for `mesh_status`.
    links: Mutex<Vec<LinkStatus>>,
    behind: Mutex<Option<Behind>>,
    /// The master's epoch, as its last signed announce or heartbeat answer said.
    master_epoch: Mutex<Option<String>>,
    /// Whether this agent speaks for the node now (announce, heartbeat, long poll): the voice
    /// holds the voice lock (or needs none), and has not resigned. Changed under `stop`.
    speaking: AtomicBool,
    /// The voice stepped down for good (its worker is exiting).
    resigned: AtomicBool,
    /// The voice lock while held; saves of the table file happen under it, so none is written
    /// once the voice resigned.
    pub voice_lock: Mutex<Option<Flock<File>>>,
    stop: Mutex<bool>,
    wake: Condvar,
    fetch_now: AtomicBool,
    /// The event loop asked for a heartbeat now (a push went down): the voice's sleep ends.
    beat_now: AtomicBool,
    /// The master grants this node no role yet (docs/protocol.md, "Roles"): no long poll.
    pub awaiting: AtomicBool,
    started: Instant,
}

impl Shared {
    pub(crate) fn new(cfg: Config, initial: Arc<Node>, sink: Arc<dyn Sink>) -> Arc<Shared> {
        Arc::new(Shared {
            streams: Mutex::new(Link::new("streams", &cfg)),
            cfg,
            sink,
            state: NodeState::new(initial),
            links: Mutex::new(Vec::new()),
            behind: Mutex::new(None),
            master_epoch: Mutex::new(None),
            speaking: AtomicBool::new(false),
            resigned: AtomicBool::new(false),
            voice_lock: Mutex::new(None),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            fetch_now: AtomicBool::new(false),
            beat_now: AtomicBool::new(false),
            awaiting: AtomicBool::new(false),
            started: Instant::now(),
        })
    }

    /// Sleep up to `d`; false when the agent is stopping.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        self.sleep_until(d, false, false)
    }

    /// The voice's sleep: up to `d`; false when the agent stops or the voice steps down.
    pub(crate) fn sleep_voice(&self, d: Duration) -> bool {
        self.sleep_until(d, false, true)
    }

    /// The voice's sleep before a heartbeat: up to `d`, or until one is asked for now
    /// ([`Shared::ask_beat`]); false when the agent stops or the voice steps down.
    pub(crate) fn sleep_beat(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut stop = self.stop.lock();
        let done = |stop: bool| stop || !self.speaking.load(Ordering::Relaxed);
        while !done(*stop) {
            if self.beat_now.swap(false, Ordering::Relaxed) {
                return true;
            }
            if self.wake.wait_until(&mut stop, deadline).timed_out() {
                break;
            }
        }
        !done(*stop)
    }

    /// A heartbeat now, rather than at the next interval (the voice's sleep before it ends).
    pub(crate) fn ask_beat(&self) {
        let _stop = self.stop.lock();
        self.beat_now.store(true, Ordering::Relaxed);
        self.wake.notify_all();
    }

    /// Sleep up to `d`, or until a fetch is asked for (the poll loop, a voice's); false when
    /// stopping or no longer the voice.
    pub(crate) fn sleep_poll(&self, d: Duration) -> bool {
        self.sleep_until(d, true, true)
    }

    fn sleep_until(&self, d: Duration, wake_on_fetch: bool, voice: bool) -> bool {
        let deadline = Instant::now() + d;
        let mut stop = self.stop.lock();
        let done = |stop: bool| stop || (voice && !self.speaking.load(Ordering::Relaxed));
        while !done(*stop) {
            if wake_on_fetch && self.fetch_now.load(Ordering::Relaxed) {
                return true;
            }
            if self.wake.wait_until(&mut stop, deadline).timed_out() {
                break;
            }
        }
        !done(*stop)
    }

    /// Whether this agent speaks for the node now.
    pub(crate) fn speaking(&self) -> bool {
        self.speaking.load(Ordering::Relaxed) && !self.stopping()
    }

    pub(crate) fn resigned(&self) -> bool {
        self.resigned.load(Ordering::Relaxed)
    }

    /// Start speaking for the node (the voice lock is held, or none is needed); false when the
    /// voice resigned meanwhile.
    pub(crate) fn start_speaking(&self) -> bool {
        let _stop = self.stop.lock();
        if self.resigned() {
            return false;
        }
        self.speaking.store(true, Ordering::Relaxed);
        self.wake.notify_all();
        true
    }

    /// Step down for good: the voice's loops end, the lock is released (after a save in
    /// progress). Returns whether this agent was speaking.
    pub(crate) fn resign(&self) -> bool {
        let was = {
            let _stop = self.stop.lock();
            self.resigned.store(true, Ordering::Relaxed);
            let was = self.speaking.swap(false, Ordering::Relaxed);
            self.wake.notify_all();
            was
        };
        *self.voice_lock.lock() = None;
        was
    }

    /// Wait up to `d` until this agent speaks; whether it does.
    pub(crate) fn wait_speaking(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut stop = self.stop.lock();
        while !*stop && !self.resigned() && !self.speaking.load(Ordering::Relaxed) {
            if self.wake.wait_until(&mut stop, deadline).timed_out() {
                break;
            }
        }
        self.speaking.load(Ordering::Relaxed) && !*stop
    }

    /// Ask the poll loop to poll now (it may be waiting out a backoff).
    pub(crate) fn poke_poll(&self) {
        let _stop = self.stop.lock();
        self.fetch_now.store(true, Ordering::Relaxed);
        self.wake.notify_all();
    }

    /// The poll loop starts a poll: what asked for it is served.
    pub(crate) fn take_poke(&self) {
        self.fetch_now.store(false, Ordering::Relaxed);
    }

    pub(crate) fn stopping(&self) -> bool {
        *self.stop.lock()
    }

    pub(crate) fn stop(&self) {
        *self.stop.lock() = true;
        self.wake.notify_all();
    }

    pub(crate) fn log(&self, level: Level, msg: String) {
        self.sink.send(Event::Log(level, msg));
    }

    pub(crate) fn uptime(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Change the status of link `what` (made on first use).
    pub(crate) fn link_status(&self, what: &str, f: impl FnOnce(&mut LinkStatus)) {
        let mut links = self.links.lock();
        let i = match links.iter().position(|l| l.link == what) {
            Some(i) => i,
            None => {
                links.push(LinkStatus { link: what.into(), ..LinkStatus::default() });
                links.len() - 1
            }
        };
        f(&mut links[i]);
    }

    pub(crate) fn set_behind(&self, b: Option<Behind>) {
        *self.behind.lock() = b;
    }

    pub(crate) fn behind(&self) -> Option<Behind> {
        self.behind.lock().clone()
    }

    /// A signed answer named the master's epoch.
    pub(crate) fn set_master_epoch(&self, e: Option<String>) {
        if e.is_some() {
            *self.master_epoch.lock() = e;
        }
    }

    pub(crate) fn master_epoch(&self) -> Option<String> {
        self.master_epoch.lock().clone()
    }

    /// The `since` of a table request: the version in force, or 0 when the master is known to
    /// be of another epoch than the table in force (its versions count anew).
    pub(crate) fn since(&self) -> u64 {
        match self.master_epoch() {
            Some(e) if self.state.epoch().as_deref() != Some(e.as_str()) => 0,
            _ => self.state.version(),
        }
    }

    /// Each link's state; the `streams` link says whether the node is behind the master (as
    /// of now: a table that came meanwhile ends it).
    pub(crate) fn links(&self) -> Vec<LinkStatus> {
        let behind = self.behind().filter(|b| !self.state.has(b.epoch.as_deref(), b.version));
        if behind.is_some() {
            self.link_status("streams", |_| {});
        }
        let mut links = self.links.lock().clone();
        for l in links.iter_mut().filter(|l| l.link == "streams") {
            l.behind_version = behind.as_ref().map(|b| b.version);
            l.behind_since_unix = behind.as_ref().map(|b| b.since_unix);
        }
        links
    }
}
