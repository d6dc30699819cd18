//! The node's background work, per nginx worker: announce, heartbeat, the table long poll and
//! the calls the event loop asks for (auth, route) — or, with no master, a watch on the table
//! file. Results go to a [`Sink`], which hands them to the event loop.
//!
//! Every failure leaves the node on its last good table, is logged once per change of state
//! (not per retry), and is retried with capped exponential backoff with jitter.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mesh_core::backoff::{Backoff, Jitter};
use mesh_core::node::Node;
use mesh_core::status::LinkStatus;
use mesh_core::wire::{Announce, AuthReply, Capabilities, Heartbeat, RouteReply};
use mesh_core::{Role, Table};
use nix::sys::signal::{SigSet, SigmaskHow};
use parking_lot::{Condvar, Mutex};

use crate::calls::CallQueue;
use crate::client::{CallError, Master};
use crate::load::{make_node, read_table, write_atomic};

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
        }
    }
}

struct Shared {
    cfg: Config,
    /// Each link's state, for `mesh_status`.
    links: Mutex<Vec<LinkStatus>>,
    sink: Arc<dyn Sink>,
    node: Mutex<Arc<Node>>,
    stop: Mutex<bool>,
    wake: Condvar,
    fetch_now: AtomicBool,
    started: Instant,
}

impl Shared {
    /// Sleep up to `d`; false when the agent is stopping.
    fn sleep(&self, d: Duration) -> bool {
        self.sleep_until(d, false)
    }

    /// Sleep up to `d`, or until a fetch is asked for (the poll loop); false when stopping.
    fn sleep_poll(&self, d: Duration) -> bool {
        self.sleep_until(d, true)
    }

    fn sleep_until(&self, d: Duration, wake_on_fetch: bool) -> bool {
        let deadline = Instant::now() + d;
        let mut stop = self.stop.lock();
        while !*stop {
            if wake_on_fetch && self.fetch_now.load(Ordering::Relaxed) {
                return true;
            }
            if self.wake.wait_until(&mut stop, deadline).timed_out() {
                break;
            }
        }
        !*stop
    }

    fn stopping(&self) -> bool {
        *self.stop.lock()
    }

    fn log(&self, level: Level, msg: String) {
        self.sink.send(Event::Log(level, msg));
    }

    fn node(&self) -> Arc<Node> {
        self.node.lock().clone()
    }

    /// Install a new snapshot and hand it to the event loop.
    fn publish(&self, node: Node, change: Change) {
        let node = Arc::new(node);
        *self.node.lock() = node.clone();
        self.sink.send(Event::Node(node, change));
    }

    fn apply_role(&self, role: Option<Role>) {
        let Some(role) = role else { return };
        let current = self.node();
        if current.role != role {
            self.log(Level::Notice, format!("mesh: master sets role \"{role}\" (was \"{}\")", current.role));
            self.publish(current.with_role(role), Change::Role(role));
        }
    }

    fn uptime(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

/// The state of one link to the master, logged only when it changes.
struct Link {
    what: &'static str,
    up: Option<bool>,
    backoff: Backoff,
    jitter: Jitter,
    /// The master's last refusal logged while down: a new reason is logged, a repeat is not.
    refused: Option<String>,
}

impl Link {
    fn new(what: &'static str, cfg: &Config) -> Link {
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        Link {
            what,
            up: None,
            backoff: Backoff::new(cfg.backoff_base, cfg.backoff_cap),
            jitter: Jitter::new(seed),
            refused: None,
        }
    }

    fn ok(&mut self, shared: &Shared) {
        if self.up == Some(false) {
            shared.log(Level::Notice, format!("mesh: master {} is back", self.what));
        }
        self.up = Some(true);
        self.refused = None;
        self.backoff.reset();
        self.report(shared, None, Duration::ZERO);
    }

    /// Publish this link's state for `mesh_status`.
    fn report(&self, shared: &Shared, error: Option<String>, backoff: Duration) {
        let mut links = shared.links.lock();
        let i = match links.iter().position(|l| l.link == self.what) {
            Some(i) => i,
            None => {
                links.push(LinkStatus { link: self.what.into(), ..LinkStatus::default() });
                links.len() - 1
            }
        };
        let l = &mut links[i];
        l.up = self.up;
        l.consecutive_failures = self.backoff.failures();
        l.backoff_ms = backoff.as_millis() as u64;
        match error {
            None => {
                l.last_success_unix =
                    Some(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
            }
            Some(e) => l.last_error = Some(e),
        }
    }

    /// Record a failure; returns the delay before the next try.
    fn fail(&mut self, shared: &Shared, e: &CallError) -> Duration {
        if *e == CallError::Stopped {
            return self.backoff.fail(self.jitter.next_u64());
        }
        let v = shared.node().table.version;
        let msg = format!(
            "mesh: master {} failed: {e}; keeping table version {v}, retrying with backoff",
            self.what
        );
        if let CallError::Refused { reason, .. } = e {
            if self.up == Some(false) && self.refused.as_ref() != Some(reason) {
                shared.log(Level::Error, msg.clone());
            }
            self.refused = Some(reason.clone());
        }
        self.fail_with(shared, msg)
    }

    /// Record a failure described by `msg`, logged when the link goes down (not on every
    /// retry while it stays down); returns the delay before the next try.
    fn fail_with(&mut self, shared: &Shared, msg: String) -> Duration {
        let d = self.backoff.fail(self.jitter.next_u64());
        if self.up != Some(false) {
            shared.log(Level::Error, msg.clone());
        }
        self.up = Some(false);
        self.report(shared, Some(msg.trim_start_matches("mesh: ").to_string()), d);
        d
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
}

impl Agent {
    /// Follow a master: announce, heartbeat, long-poll the table, serve calls.
    pub fn start_master(
        cfg: Config,
        initial: Arc<Node>,
        master: Arc<dyn Master>,
        sink: Arc<dyn Sink>,
    ) -> std::io::Result<Agent> {
        let shared = new_shared(cfg, initial, sink);
        let mut threads = Vec::new();
        let (m, s) = (master.clone(), shared.clone());
        threads.push(spawn("mesh-control", move || control_loop(&*m, &s))?);
        let (m, s) = (master.clone(), shared.clone());
        threads.push(spawn("mesh-poll", move || poll_loop(&*m, &s))?);
        let queue = Arc::new(CallQueue::new(shared.cfg.call_queue));
        // One more thread than `call_threads`, kept for known credentials and re-checks.
        for i in 0..=shared.cfg.call_threads.max(1) {
            let (m, s, q) = (master.clone(), shared.clone(), queue.clone());
            let name = if i == 0 { "mesh-calls-known".to_string() } else { format!("mesh-calls-{i}") };
            threads.push(spawn(&name, move || calls_loop(&*m, &s, &q, i == 0))?);
        }
        let janitor = start_janitor(&mut threads)?;
        Ok(Agent { shared, threads, janitor: Some(janitor), calls: Some(queue), master: Some(master) })
    }

    /// No master: watch the table file and load it again when it changes.
    pub fn start_watch(cfg: Config, initial: Arc<Node>, sink: Arc<dyn Sink>) -> std::io::Result<Agent> {
        let shared = new_shared(cfg, initial, sink);
        let s = shared.clone();
        let mut threads = vec![spawn("mesh-watch", move || watch_loop(&s))?];
        let janitor = start_janitor(&mut threads)?;
        Ok(Agent { shared, threads, janitor: Some(janitor), calls: None, master: None })
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
        self.shared.links.lock().clone()
    }

    /// Whether calls go anywhere (a master is configured).
    pub fn has_master(&self) -> bool {
        self.master.is_some()
    }

    /// Stop every thread: wake the sleepers, interrupt calls in flight, and join the threads
    /// that finish within `within` (a thread stuck in a connect is left to the process exit).
    /// Returns how many threads were joined.
    pub fn stop(mut self, within: Duration) -> usize {
        *self.shared.stop.lock() = true;
        self.shared.wake.notify_all();
        if let Some(m) = &self.master {
            m.shutdown();
        }
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

/// A thread that drops what it is sent, until the sender goes.
fn start_janitor(threads: &mut Vec<JoinHandle<()>>) -> std::io::Result<mpsc::Sender<Arc<Node>>> {
    let (tx, rx) = mpsc::channel::<Arc<Node>>();
    threads.push(spawn("mesh-janitor", move || while rx.recv().is_ok() {})?);
    Ok(tx)
}

fn new_shared(cfg: Config, initial: Arc<Node>, sink: Arc<dyn Sink>) -> Arc<Shared> {
    Arc::new(Shared {
        cfg,
        links: Mutex::new(Vec::new()),
        sink,
        node: Mutex::new(initial),
        stop: Mutex::new(false),
        wake: Condvar::new(),
        fetch_now: AtomicBool::new(false),
        started: Instant::now(),
    })
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

fn announce_payload(s: &Shared) -> Announce {
    let node = s.node();
    Announce {
        node_id: s.cfg.node_id.clone(),
        role: node.role,
        rtmp_url: s.cfg.rtmp_url.clone(),
        http_url: s.cfg.http_url.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        capabilities: s.cfg.capabilities.clone(),
    }
}

fn control_loop(m: &dyn Master, s: &Shared) {
    let mut announce = Link::new("announce", &s.cfg);
    let mut beat = Link::new("heartbeat", &s.cfg);
    let mut interval = s.cfg.heartbeat_interval;
    let mut announced = false;
    let mut poked = 0u64;
    while !s.stopping() {
        if !announced {
            match m.announce(&announce_payload(s)) {
                Ok(r) => {
                    announce.ok(s);
                    announced = true;
                    if let Some(i) = r.heartbeat_interval_s.filter(|i| *i > 0) {
                        interval = Duration::from_secs(i);
                    }
                    s.apply_role(r.role);
                }
                Err(e) => {
                    let d = announce.fail(s, &e);
                    s.sleep(d);
                    continue;
                }
            }
        }
        if !s.sleep(interval) {
            break;
        }
        let mut hb = s.sink.heartbeat();
        hb.uptime_s = s.uptime();
        match m.heartbeat(&hb) {
            Ok(r) => {
                beat.ok(s);
                s.apply_role(r.role);
                // A newer table: fetch at once (once per version, so a failing fetch keeps its
                // backoff).
                if let Some(v) = r.table_version.filter(|v| *v > s.node().table.version && *v > poked) {
                    poked = v;
                    s.fetch_now.store(true, Ordering::Relaxed);
                    s.wake.notify_all();
                }
            }
            Err(e) => {
                // The master may have lost us (a restart): announce again once it answers.
                announced = false;
                let d = beat.fail(s, &e);
                s.sleep(d);
            }
        }
    }
}

fn poll_loop(m: &dyn Master, s: &Shared) {
    let mut link = Link::new("streams", &s.cfg);
    while !s.stopping() {
        s.fetch_now.store(false, Ordering::Relaxed);
        let since = s.node().table.version;
        let failed = match m.streams(since, s.cfg.poll_wait) {
            Ok(None) => {
                link.ok(s);
                None
            }
            Ok(Some(body)) => match Table::parse(&body) {
                Ok(t) => {
                    link.ok(s);
                    if t.version != since || s.node().table != t {
                        install_table(s, t, Some(&body), "master");
                    }
                    None
                }
                // Refused whole; the master would answer again at once: back off.
                Err(e) => Some(link.fail_with(
                    s,
                    format!("mesh: table from master refused: {e}; keeping table version {since}"),
                )),
            },
            Err(e) => Some(link.fail(s, &e)),
        };
        if let Some(d) = failed {
            s.sleep_poll(d);
        }
    }
}

/// Resolve a validated table's hosts, swap it in, and persist it (from a master).
fn install_table(s: &Shared, t: Table, persist: Option<&[u8]>, from: &str) {
    let current = s.node();
    let version = t.version;
    let (node, failed) = make_node(&s.cfg.node_id, current.role, t);
    for (url, e) in failed {
        s.log(Level::Warn, format!("mesh: table version {version}: host of \"{url}\" not resolved ({e}): pushes to it are skipped"));
    }
    s.log(
        Level::Notice,
        format!("mesh: table version {version} from {from} in force (was {})", current.table.version),
    );
    s.publish(node, Change::Table(version));
    if let (Some(path), Some(bytes)) = (&s.cfg.table_file, persist) {
        if let Err(e) = write_atomic(path, bytes) {
            s.log(
                Level::Error,
                format!("mesh: cannot save table version {version} to \"{}\": {e}", path.display()),
            );
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

fn file_stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let md = std::fs::metadata(path).ok()?;
    Some((md.modified().ok()?, md.len()))
}

fn watch_loop(s: &Shared) {
    let Some(path) = s.cfg.table_file.clone() else {
        return;
    };
    let mut seen = file_stamp(&path);
    while s.sleep(s.cfg.watch_interval) {
        let now = file_stamp(&path);
        if now == seen || now.is_none() {
            continue;
        }
        seen = now;
        match read_table(&path) {
            Ok(t) if t == s.node().table => {}
            Ok(t) => install_table(s, t, None, &format!("\"{}\"", path.display())),
            Err(e) => s.log(
                Level::Error,
                format!(
                    "mesh: mesh_table_file \"{}\" refused: {e}; keeping table version {}",
                    path.display(),
                    s.node().table.version
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::wire::{AnnounceReply, AuthRequest, HeartbeatReply, RouteRequest};
    use std::collections::VecDeque;

    /// A master that answers from scripts (this tests the agent's logic; the HTTP side is
    /// tested against real sockets in client.rs, and the whole against a fake master in t/).
    #[derive(Default)]
    struct Scripted {
        announce: Mutex<VecDeque<Result<AnnounceReply, CallError>>>,
        streams: Mutex<VecDeque<Result<Option<Vec<u8>>, CallError>>>,
        stall: AtomicBool,
        down: Mutex<bool>,
        cv: Condvar,
        heartbeats: Mutex<u32>,
    }

    impl Master for Scripted {
        fn announce(&self, _: &Announce) -> Result<AnnounceReply, CallError> {
            self.announce.lock().pop_front().unwrap_or(Ok(AnnounceReply {
                role: None,
                heartbeat_interval_s: None,
                table_refresh_s: None,
            }))
        }
        fn heartbeat(&self, _: &Heartbeat) -> Result<HeartbeatReply, CallError> {
            *self.heartbeats.lock() += 1;
            Ok(HeartbeatReply { table_version: None, role: None })
        }
        fn streams(&self, _: u64, _: Duration) -> Result<Option<Vec<u8>>, CallError> {
            if self.stall.load(Ordering::Relaxed) {
                let mut down = self.down.lock();
                while !*down {
                    self.cv.wait(&mut down);
                }
                return Err(CallError::Stopped);
            }
            let next = self.streams.lock().pop_front();
            next.unwrap_or_else(|| {
                thread::sleep(Duration::from_millis(10));
                Ok(None)
            })
        }
        fn auth(&self, _: &AuthRequest) -> Result<AuthReply, CallError> {
            Ok(AuthReply { allow: true, ttl_s: Some(5), reason: None })
        }
        fn route(&self, _: &RouteRequest) -> Result<RouteReply, CallError> {
            Err(CallError::Timeout)
        }
        fn shutdown(&self) {
            *self.down.lock() = true;
            self.cv.notify_all();
        }
    }

    #[derive(Default)]
    struct Collect(Mutex<Vec<Event>>);

    impl Sink for Collect {
        fn send(&self, ev: Event) {
            self.0.lock().push(ev);
        }
        fn heartbeat(&self) -> Heartbeat {
            Heartbeat::empty("n", Role::Relay)
        }
    }

    impl Collect {
        fn logs(&self) -> Vec<String> {
            self.0
                .lock()
                .iter()
                .filter_map(|e| if let Event::Log(_, m) = e { Some(m.clone()) } else { None })
                .collect()
        }
        fn changes(&self) -> Vec<Change> {
            self.0
                .lock()
                .iter()
                .filter_map(|e| if let Event::Node(_, c) = e { Some(c.clone()) } else { None })
                .collect()
        }
        fn wait_for(&self, f: impl Fn(&Collect) -> bool) -> bool {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if f(self) {
                    return true;
                }
                thread::sleep(Duration::from_millis(10));
            }
            false
        }
    }

    fn cfg() -> Config {
        Config {
            node_id: "edge-1".into(),
            heartbeat_interval: Duration::from_millis(50),
            backoff_base: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(40),
            watch_interval: Duration::from_millis(20),
            ..Config::default()
        }
    }

    fn start(m: Arc<Scripted>, cfg: Config) -> (Agent, Arc<Collect>) {
        let sink = Arc::new(Collect::default());
        let node = Arc::new(Node { node_id: "edge-1".into(), ..Node::standalone() });
        (Agent::start_master(cfg, node, m, sink.clone()).unwrap(), sink)
    }

    #[test]
    fn announce_retries_logs_once_and_applies_the_role() {
        let m = Arc::new(Scripted::default());
        m.announce.lock().extend([
            Err(CallError::Status(500)),
            Err(CallError::Timeout),
            Err(CallError::Status(500)),
        ]);
        m.announce.lock().push_back(Ok(AnnounceReply {
            role: Some(Role::Relay),
            heartbeat_interval_s: None,
            table_refresh_s: None,
        }));
        let (agent, sink) = start(m.clone(), cfg());
        assert!(sink.wait_for(|s| s.changes().contains(&Change::Role(Role::Relay))));
        assert!(sink.wait_for(|_| *m.heartbeats.lock() >= 2), "heartbeats follow the announce");
        assert_eq!(agent.stop(Duration::from_secs(2)), 6, "control, poll, three call threads, janitor");
        let logs = sink.logs();
        // One line when the link went down, one when it came back: not one per retry.
        assert_eq!(logs.iter().filter(|l| l.contains("announce failed")).count(), 1, "{logs:?}");
        assert_eq!(logs.iter().filter(|l| l.contains("announce is back")).count(), 1, "{logs:?}");
    }

    #[test]
    fn tables_are_validated_swapped_and_saved() {
        let dir = std::env::temp_dir().join(format!("mesh-agent-poll-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("table.json");
        let m = Arc::new(Scripted::default());
        m.streams.lock().extend([
            Ok(Some(br#"{"version": 5, "relay": {"../x": []}}"#.to_vec())),
            Ok(Some(br#"{"version": 5, "relay": {"../x": []}}"#.to_vec())),
            Err(CallError::Transport("connection refused".into())),
            Ok(Some(br#"{"version": 6, "role": "relay"}"#.to_vec())),
        ]);
        let (agent, sink) = start(m, Config { table_file: Some(file.clone()), ..cfg() });
        assert!(sink.wait_for(|s| s.changes().contains(&Change::Table(6))));
        agent.stop(Duration::from_secs(2));
        assert_eq!(sink.changes(), vec![Change::Table(6)], "the invalid table never reached the loop");
        let logs = sink.logs();
        assert_eq!(
            logs.iter().filter(|l| l.contains("table from master refused: relay.\"../x\"")).count(),
            1,
            "{logs:?}"
        );
        // The link was already down (refused table): the transport error is no new state.
        assert!(!logs.iter().any(|l| l.contains("master streams failed")), "{logs:?}");
        assert_eq!(logs.iter().filter(|l| l.contains("master streams is back")).count(), 1, "{logs:?}");
        assert_eq!(read_table(&file).unwrap().version, 6, "saved for a restart");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn stop_does_not_wait_for_a_hung_master() {
        let m = Arc::new(Scripted::default());
        m.stall.store(true, Ordering::Relaxed);
        let (agent, _sink) = start(m, Config { heartbeat_interval: Duration::from_secs(60), ..cfg() });
        thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        assert_eq!(agent.stop(Duration::from_secs(2)), 6, "every thread joined");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }

    #[test]
    fn calls_come_back_as_events() {
        let (agent, sink) = start(Arc::new(Scripted::default()), cfg());
        let req = AuthRequest {
            node_id: "edge-1".into(),
            action: mesh_core::wire::Action::Play,
            stream: "s".into(),
            key: None,
            token: None,
            addr: "a".into(),
        };
        assert!(agent.call(Call::Auth { id: 7, req, known: false }).is_ok());
        assert!(agent
            .call(Call::Route(RouteRequest { node_id: "edge-1".into(), stream: "s".into() }))
            .is_ok());
        assert!(sink.wait_for(|s| s
            .0
            .lock()
            .iter()
            .any(|e| matches!(e, Event::Auth { id: 7, result: Ok(r) } if r.allow))));
        assert!(sink.wait_for(|s| s
            .0
            .lock()
            .iter()
            .any(|e| matches!(e, Event::Route { result: Err(CallError::Timeout), .. }))));
        agent.stop(Duration::from_secs(2));
    }

    #[test]
    fn watch_reloads_the_file_and_refuses_bad_edits() {
        let dir = std::env::temp_dir().join(format!("mesh-agent-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("table.json");
        std::fs::write(&file, r#"{"version": 1}"#).unwrap();
        let sink = Arc::new(Collect::default());
        let agent = Agent::start_watch(
            Config { table_file: Some(file.clone()), ..cfg() },
            Arc::new(Node::standalone()),
            sink.clone(),
        )
        .unwrap();
        thread::sleep(Duration::from_millis(60));
        std::fs::write(&file, r#"{"version": 2, "role": "edge"}"#).unwrap();
        assert!(sink
            .wait_for(|s| s.logs().iter().any(|l| l.contains("refused: invalid table: role: unknown role"))));
        std::fs::write(&file, r#"{"version": 3, "viewer_secret": "s"}"#).unwrap();
        assert!(sink.wait_for(|s| s.changes().contains(&Change::Table(3))));
        assert!(!agent.has_master());
        agent.stop(Duration::from_secs(2));
        assert_eq!(sink.changes(), vec![Change::Table(3)]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
