//! The node's link to its master (or to its table file): mesh-agent's background threads,
//! started when a worker starts and stopped when it exits, and the way their results come back
//! to the event loop — a queue of events and a wake-up socket ([`crate::nginx::event::Wake`]).
//!
//! One voice per node: only worker 0 of a generation may speak for the node (announce,
//! heartbeat, the table long poll), and only while it holds the voice lock beside the table
//! file (`<mesh_table_file>.voice`: at a reload or an upgrade, the other generation's worker 0
//! holds it until it starts exiting). Every other worker follows the table file the voice
//! writes, and makes its own auth and route calls.
//!
//! This module only carries: calls go out through [`call`], events come back through
//! [`next_event`], read by the wiring, which hands each to its concern. It knows nothing of
//! sessions or requests.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use mesh_agent::agent::{self, Agent, Call, Event, Refused, Sink, Voice};
use mesh_agent::client::{HttpConfig, HttpMaster};
use mesh_core::node::Node;
use mesh_core::status::LinkStatus;
use mesh_core::wire::{Capabilities, Heartbeat};
use parking_lot::Mutex;

use crate::conf::MainConf;
use crate::nginx::event::{Wake, Waker};

/// The threads' side of the event loop.
struct Queue {
    events: Mutex<VecDeque<Event>>,
    waker: Waker,
    figures: Mutex<Heartbeat>,
}

impl Sink for Queue {
    fn send(&self, ev: Event) {
        self.events.lock().push_back(ev);
        self.waker.wake();
    }

    fn heartbeat(&self) -> Heartbeat {
        self.figures.lock().clone()
    }
}

struct Link {
    agent: Agent,
    queue: Arc<Queue>,
    wake: Wake,
    /// The wiring's handler of queued events.
    on_wake: fn(),
}

thread_local! {
    static LINK: RefCell<Option<Link>> = const { RefCell::new(None) };
}

/// Start the link of this worker: to the master when `mesh_master` is set, else a watch of the
/// table file. `on_wake` runs on the event loop whenever events are queued.
pub fn start(mcf: &MainConf, figures: Heartbeat, on_wake: fn()) -> Result<(), String> {
    let (wake, waker) = Wake::new(woken, 0).map_err(|e| e.to_string())?;
    let node = mcf.node();
    let queue = Arc::new(Queue { events: Mutex::new(VecDeque::new()), waker, figures: Mutex::new(figures) });
    let cfg = agent::Config {
        node_id: node.node_id.clone(),
        rtmp_url: mcf.rtmp_url.clone().unwrap_or_default(),
        http_url: mcf.http_url.clone().unwrap_or_default(),
        heartbeat_interval: Duration::from_millis(mcf.heartbeat_interval as u64),
        poll_wait: Duration::from_millis(mcf.poll_wait as u64),
        table_file: mcf.table_file.clone().map(Into::into),
        voice_lock: mcf.master.as_ref().and(mcf.table_file.as_ref()).map(|f| voice_lock(f).into()),
        capabilities: Capabilities { transcode: false, hls: false, dash: false },
        ..agent::Config::default()
    };
    let agent = match &mcf.master {
        Some(base) => {
            let http = || {
                Arc::new(HttpMaster::new(HttpConfig {
                    base: base.clone(),
                    key: mcf.master_key.clone().unwrap_or_default(),
                    node_id: node.node_id.clone(),
                    paths: mcf.master_paths(),
                    timeout: Duration::from_millis(mcf.master_timeout as u64),
                    max_body: mesh_core::table::MAX_TABLE_BYTES,
                    ca: mcf.master_ca.clone(),
                }))
            };
            // Worker 0 may speak for the node, under the voice lock when there is a table file
            // to put it beside (without one the node has one worker: nginx -t says so).
            let voice = (crate::nginx::util::worker_index() == 0).then(|| Voice { master: http() });
            Agent::start_node(cfg, node.clone(), http(), voice, queue.clone())
        }
        None => Agent::start_watch(cfg, node, queue.clone()),
    }
    .map_err(|e| e.to_string())?;
    LINK.with_borrow_mut(|l| *l = Some(Link { agent, queue, wake, on_wake }));
    Ok(())
}

/// The voice lock of a node whose table file is `table_file`.
pub fn voice_lock(table_file: &str) -> String {
    format!("{table_file}.voice")
}

/// This worker starts exiting: if it speaks for the node, it stops (the next generation's
/// worker 0 takes over) and follows the table file until it exits. Returns whether it spoke.
pub fn resign() -> bool {
    LINK.with_borrow(|l| l.as_ref().is_some_and(|l| l.agent.resign()))
}

/// The wake-up socket is readable: drain it, then let the wiring take the queued events.
fn woken(_: u64) {
    let on_wake = LINK.with_borrow(|l| {
        l.as_ref().map(|l| {
            if !l.wake.drain() {
                ngx::ngx_log_error!(
                    crate::nginx::ffi::NGX_LOG_ALERT,
                    ngx::log::ngx_cycle_log().as_ptr(),
                    "mesh: cannot watch the wake-up socket"
                );
            }
            l.on_wake
        })
    });
    if let Some(f) = on_wake {
        f();
    }
}

/// Stop the threads (worker exit); returns how many were joined. The wake-up socket closes.
pub fn stop() -> Option<usize> {
    let link = LINK.with_borrow_mut(Option::take)?;
    Some(link.agent.stop(Duration::from_secs(1)))
}

/// The next event the threads queued, if any (event loop).
pub fn next_event() -> Option<Event> {
    LINK.with_borrow(|l| l.as_ref().and_then(|l| l.queue.events.lock().pop_front()))
}

/// The figures the next heartbeat reports.
pub fn set_figures(hb: Heartbeat) {
    LINK.with_borrow(|l| {
        if let Some(l) = l {
            *l.queue.figures.lock() = hb;
        }
    })
}

/// A heartbeat now with figures `hb`, if this worker speaks for the node (a push went down:
/// the master hears of it within a round trip, not at the next interval).
pub fn beat_now(hb: Heartbeat) {
    LINK.with_borrow(|l| {
        if let Some(l) = l {
            *l.queue.figures.lock() = hb;
            l.agent.beat_now();
        }
    })
}

/// Is the link running in this worker (to a master or a table file)?
pub fn is_running() -> bool {
    LINK.with_borrow(Option::is_some)
}

/// Does this worker follow a master (so the auth and route endpoints can be asked)?
pub fn has_master() -> bool {
    LINK.with_borrow(|l| l.as_ref().is_some_and(|l| l.agent.has_master()))
}

/// The state of each link to the master; None without one.
pub fn links() -> Option<Vec<LinkStatus>> {
    LINK.with_borrow(|l| l.as_ref().filter(|l| l.agent.has_master()).map(|l| l.agent.links()))
}

/// The links to the master while this worker speaks for the node (else empty): the node's,
/// for every worker's `mesh_status` (through the shared zone).
pub fn voice_links() -> Vec<LinkStatus> {
    LINK.with_borrow(|l| {
        l.as_ref().filter(|l| l.agent.is_voice()).map(|l| l.agent.links()).unwrap_or_default()
    })
}

/// Queue a call to the master: refused without one, or when the queue is full.
pub fn call(c: Call) -> Result<(), Refused> {
    LINK.with_borrow(|l| match l {
        Some(l) => l.agent.call(c),
        None => Err(Refused::NoMaster),
    })
}

/// Take back a queued call whose asker left.
pub fn cancel_call(id: u64) {
    let _ = LINK.try_with(|l| {
        if let Some(l) = l.borrow().as_ref() {
            l.agent.cancel(id);
        }
    });
}

/// Free an old node snapshot off the event loop (a large table takes long to free).
pub fn dispose(old: Arc<Node>) {
    LINK.with_borrow(|l| match l {
        Some(l) => l.agent.dispose(old),
        None => drop(old),
    })
}
