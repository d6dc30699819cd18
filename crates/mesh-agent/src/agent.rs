//! The node's background work, per nginx worker: the calls the event loop asks for (auth,
//! route) and, in the one process that speaks for the node (its voice, [`crate::voice`]),
//! announce, heartbeat and the table long poll; every other process follows the table file the
//! voice writes. With no master, a watch on the table file. Results go to a [`Sink`], which
//! hands them to the event loop.
//!
//! Every failure leaves the node on its last good table, is logged once per change of state
//! (not per retry), and is retried with capped exponential backoff with jitter.
//!
//! The threads: `mesh-control` ([`crate::control`]: the voice lock, then announce, heartbeat,
//! resync), `mesh-poll` ([`crate::poll`]: the table long poll), `mesh-watch` (the table file,
//! while this process does not speak for the node), the call threads
//! ([`crate::calls`]) and a janitor. Every change of the node state goes through one writer
//! ([`crate::state`]).

use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mesh_core::node::Node;
use mesh_core::status::LinkStatus;
use mesh_core::wire::{AuthReply, Capabilities, Heartbeat, RouteReply};
use mesh_core::Role;
use nix::sys::signal::{SigSet, SigmaskHow};

use crate::calls::CallQueue;
use crate::client::{CallError, Master};
use crate::poll::watch_loop;
use crate::shared::Shared;
use crate::voice::{voice_loop, voice_poll};

/// Log levels the event loop maps to nginx's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warn,
    Notice,
}

/// Why the node snapshot changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new table (its version), from the master or the table file.
    Table(u64),
    /// The master set the role.
    Role(Role),
}

/// What the background side hands to the event loop.
#[derive(Debug)]
pub enum Event {
    Node(Arc<Node>, Change),
    Auth { id: u64, result: Result<AuthReply, CallError> },
    Route { stream: String, result: Result<RouteReply, CallError> },
    Log(Level, String),
}

/// The event loop's side, as the threads see it.
pub trait Sink: Send + Sync + 'static {
    /// Queue an event for the event loop and wake it.
    fn send(&self, ev: Event);
    /// The live figures for a heartbeat (a snapshot the event loop keeps up to date).
    fn heartbeat(&self) -> Heartbeat;
}

pub use crate::calls::{Call, Refused};

#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: String,
    pub rtmp_url: String,
    pub http_url: String,
    pub heartbeat_interval: Duration,
    pub poll_wait: Duration,
    /// With a master: where the last good table is written. Without: the file watched.
    pub table_file: Option<PathBuf>,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub capabilities: Capabilities,
    /// How often the table file is checked for changes (no master).
    pub watch_interval: Duration,
    /// Threads serving auth and route calls.
    pub call_threads: usize,
    /// Calls that may wait for a thread; more are refused at once.
    pub call_queue: usize,
    /// How long a table the master's heartbeat answer announces may take to come by the long
    /// poll before the poll is taken for stale and the table fetched at once.
    pub resync_grace: Duration,
    /// The voice lock ([`crate::voice`]): a voice speaks only while holding it, following the
    /// table file until then. None: a voice speaks at once (the node's only process).
    pub voice_lock: Option<PathBuf>,
    /// This process's generation: its nginx master process (the workers of one share its
    /// shared zone, and so their figures; see [`crate::generations`]).
    pub generation: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            node_id: "standalone".into(),
            rtmp_url: String::new(),
            http_url: String::new(),
            heartbeat_interval: Duration::from_secs(10),
            poll_wait: Duration::from_secs(25),
            table_file: None,
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(30),
            capabilities: Capabilities { transcode: false, hls: false, dash: false },
            watch_interval: Duration::from_secs(1),
            call_threads: 2,
            call_queue: 1024,
            resync_grace: Duration::from_millis(500),
            voice_lock: None,
            generation: std::os::unix::process::parent_id(),
        }
    }
}

/// The running background side. Dropping it without [`Agent::stop`] leaves threads running.
pub struct Agent {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// Old snapshots, dropped off the event loop (a 100k-stream table takes ~0.2 s to free).
    janitor: Option<mpsc::Sender<Arc<Node>>>,
    calls: Option<Arc<CallQueue>>,
    master: Option<Arc<dyn Master>>,
    /// The voice's own link to the master, when it has one of its own (interrupted when it
    /// resigns, the calls' link staying up).
    voice: Option<Arc<dyn Master>>,
}

/// How a process may speak for the node.
pub struct Voice {
    /// Announce, heartbeat and the long poll go through this (its own link, so that stepping
    /// down interrupts a long poll without the calls in flight).
    pub master: Arc<dyn Master>,
}

impl Agent {
    /// Follow a master as the node's only process: announce, heartbeat, long-poll the table,
    /// serve calls.
    pub fn start_master(
        cfg: Config,
        initial: Arc<Node>,
        master: Arc<dyn Master>,
        sink: Arc<dyn Sink>,
    ) -> std::io::Result<Agent> {
        let voice = Voice { master: master.clone() };
        Agent::start_node(cfg, initial, master, Some(voice), sink)
    }

    /// Follow a master: serve calls through `master`; speak for the node as `voice` says (None:
    /// never, follow the table file the voice writes).
    pub fn start_node(
        cfg: Config,
        initial: Arc<Node>,
        master: Arc<dyn Master>,
        voice: Option<Voice>,
        sink: Arc<dyn Sink>,
    ) -> std::io::Result<Agent> {
        let shared = Shared::new(cfg, initial, sink);
        let mut threads = Vec::new();
        let follows = voice.is_none() || shared.cfg.voice_lock.is_some();
        let mut own = None;
        if let Some(Voice { master: vm }) = voice {
            let (m, s) = (vm.clone(), shared.clone());
            threads.push(spawn("mesh-control", move || voice_loop(&*m, &s))?);
            let (m, s) = (vm.clone(), shared.clone());
            threads.push(spawn("mesh-poll", move || voice_poll(&*m, &s))?);
            own = (!same(&vm, &master)).then_some(vm);
        }
        if follows && shared.cfg.table_file.is_some() {
            let s = shared.clone();
            threads.push(spawn("mesh-watch", move || watch_loop(&s))?);
        }
        let queue = Arc::new(CallQueue::new(shared.cfg.call_queue));
        // One more thread than `call_threads`, kept for known credentials and re-checks.
        for i in 0..=shared.cfg.call_threads.max(1) {
            let (m, s, q) = (master.clone(), shared.clone(), queue.clone());
            let name = if i == 0 { "mesh-calls-known".to_string() } else { format!("mesh-calls-{i}") };
            threads.push(spawn(&name, move || calls_loop(&*m, &s, &q, i == 0))?);
        }
        let janitor = start_janitor(&mut threads)?;
        Ok(Agent {
            shared,
            threads,
            janitor: Some(janitor),
            calls: Some(queue),
            master: Some(master),
            voice: own,
        })
    }

    /// No master: watch the table file and load it again when it changes.
    pub fn start_watch(cfg: Config, initial: Arc<Node>, sink: Arc<dyn Sink>) -> std::io::Result<Agent> {
        let shared = Shared::new(cfg, initial, sink);
        let s = shared.clone();
        let mut threads = vec![spawn("mesh-watch", move || watch_loop(&s))?];
        let janitor = start_janitor(&mut threads)?;
        Ok(Agent { shared, threads, janitor: Some(janitor), calls: None, master: None, voice: None })
    }

    /// Stop speaking for the node, for good (the worker starts exiting): announce, heartbeat
    /// and the long poll end, the voice lock is released for the next generation's voice; the
    /// table file is followed and calls served until [`Agent::stop`]. Returns whether this
    /// agent was speaking.
    pub fn resign(&self) -> bool {
        let was = self.shared.resign();
        if let Some(v) = &self.voice {
            v.shutdown();
        }
        was
    }

    /// Whether this agent speaks for the node now.
    /// A heartbeat now rather than at the next interval, when this agent speaks for the node
    /// (the data plane saw a failure the master should hear of at once). Asking often is
    /// harmless: heartbeats go at most every 250 ms.
    pub fn beat_now(&self) {
        self.shared.ask_beat();
    }

    pub fn is_voice(&self) -> bool {
        self.shared.speaking()
    }

    /// Free a snapshot the event loop no longer uses, on a background thread.
    pub fn dispose(&self, old: Arc<Node>) {
        if let Some(j) = &self.janitor {
            let _ = j.send(old);
        }
    }

    /// Queue a call: refused when there is no master to call or the queue is full.
    pub fn call(&self, c: Call) -> Result<(), Refused> {
        self.calls.as_ref().ok_or(Refused::NoMaster)?.push(c)
    }

    /// Take back a queued auth call whose asker left: it is never sent. (One already sent is
    /// answered; the event loop drops that answer.)
    pub fn cancel(&self, id: u64) -> bool {
        self.calls.as_ref().is_some_and(|q| q.cancel(id))
    }

    /// The state of each link to the master (empty without one).
    pub fn links(&self) -> Vec<LinkStatus> {
        self.shared.links()
    }

    /// Whether calls go anywhere (a master is configured).
    pub fn has_master(&self) -> bool {
        self.master.is_some()
    }

    /// Stop every thread: wake the sleepers, interrupt calls in flight, and join the threads
    /// that finish within `within` (a thread stuck in a connect is left to the process exit).
    /// Returns how many threads were joined.
    pub fn stop(mut self, within: Duration) -> usize {
        self.shared.stop();
        for m in self.master.iter().chain(&self.voice) {
            m.shutdown();
        }
        self.shared.resign();
        if let Some(q) = self.calls.take() {
            q.close();
        }
        self.janitor = None;
        let deadline = Instant::now() + within;
        let mut joined = 0;
        for t in self.threads.drain(..) {
            while !t.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
                joined += 1;
            }
        }
        joined
    }
}

/// Whether two links are the same object.
fn same(a: &Arc<dyn Master>, b: &Arc<dyn Master>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// A thread that drops what it is sent, until the sender goes.
fn start_janitor(threads: &mut Vec<JoinHandle<()>>) -> std::io::Result<mpsc::Sender<Arc<Node>>> {
    let (tx, rx) = mpsc::channel::<Arc<Node>>();
    threads.push(spawn("mesh-janitor", move || while rx.recv().is_ok() {})?);
    Ok(tx)
}

/// Start a thread with every signal blocked, as nginx's own thread pools do: nginx's signal
/// handlers (SIGCHLD reaping, reload, quit) must run on the event loop's thread, never here.
fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    let _blocked = BlockSignals::new();
    thread::Builder::new().name(name.into()).spawn(move || {
        // A panic ends this thread only; it never reaches nginx.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    })
}

/// Blocks every signal in the calling thread while alive (a new thread inherits the mask),
/// and restores the previous mask on drop.
struct BlockSignals(Option<SigSet>);

impl BlockSignals {
    fn new() -> BlockSignals {
        BlockSignals(SigSet::all().thread_swap_mask(SigmaskHow::SIG_SETMASK).ok())
    }
}

impl Drop for BlockSignals {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = old.thread_set_mask();
        }
    }
}

fn calls_loop(m: &dyn Master, s: &Shared, q: &CallQueue, known_only: bool) {
    while !s.stopping() && !q.is_closed() {
        let Some(call) = q.pop(Duration::from_millis(200), known_only) else { continue };
        match call {
            Call::Auth { id, req, .. } => s.sink.send(Event::Auth { id, result: m.auth(&req) }),
            Call::Route(req) => {
                let stream = req.stream.clone();
                s.sink.send(Event::Route { stream, result: m.route(&req) });
            }
        }
    }
}

#[cfg(test)]
mod tests;
