//! Per-worker runtime: the background agent (started in init_process, stopped in
//! exit_process) and the way its results come back to the event loop — a socket pair of our
//! own whose read end is an nginx read event. Threads queue an event and write a byte; the
//! event loop drains the queue. (Never `ngx_notify`: thread pools own its one slot.)
//!
//! A one-second timer keeps the heartbeat figures current and asks the auth endpoint again
//! about sessions whose admission ran out.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::ptr::addr_of;
use std::sync::Arc;
use std::time::Duration;

use mesh_agent::agent::{self, Agent, Call, Change, Event, Level, Refused, Sink};
use mesh_agent::client::{HttpConfig, HttpMaster};
use mesh_core::node::Node;
use mesh_core::wire::{Action, AuthRequest, Capabilities, Heartbeat};
use parking_lot::Mutex;

use crate::auth::{self, Waiter};
use crate::conf::MainConf;
use crate::ffi::*;
use crate::module::ctx_index;
use crate::push::Pushes;
use crate::registry::{self, Verdict, Via};
use crate::route;
use crate::session::{self, get_ctx};
use crate::util::{drain, guard};

const TICK_MS: ngx_msec_t = 1000;

/// The threads' side of the event loop.
struct GlueSink {
    queue: Mutex<VecDeque<Event>>,
    wake: UnixStream,
    figures: Mutex<Heartbeat>,
}

impl Sink for GlueSink {
    fn send(&self, ev: Event) {
        self.queue.lock().push_back(ev);
        // Non-blocking: a full socket already holds a wake-up.
        let _ = (&self.wake).write(&[1]);
    }

    fn heartbeat(&self) -> Heartbeat {
        self.figures.lock().clone()
    }
}

struct Runtime {
    agent: Option<Agent>,
    sink: Arc<GlueSink>,
    conn: *mut ngx_connection_t,
    tick: Box<ngx_event_t>,
    mcf: *const MainConf,
    log: *mut ngx_log_t,
}

thread_local! {
    static RT: RefCell<Option<Runtime>> = const { RefCell::new(None) };
}

/// Does this worker follow a master (so the auth and route endpoints can be asked)?
pub fn has_master() -> bool {
    RT.with_borrow(|r| r.as_ref().and_then(|r| r.agent.as_ref()).is_some_and(Agent::has_master))
}

/// The node's current snapshot (for the HTTP side, which has no rtmp session to ask).
pub fn current_node() -> Arc<Node> {
    // SAFETY: ngx_cycle is the worker's current cycle, its rtmp main conf alive with it.
    unsafe {
        let cycle = *addr_of!(ngx_cycle);
        if cycle.is_null() {
            return Arc::new(Node::standalone());
        }
        cycle_main_conf(cycle).map_or_else(|| Arc::new(Node::standalone()), MainConf::node)
    }
}

thread_local! {
    /// Event-loop time of the last table or role change, and the longest, in microseconds.
    static APPLY_US: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// Event-loop microseconds taken by the last table or role change, and the most so far.
pub fn apply_us() -> (u64, u64) {
    APPLY_US.with(std::cell::Cell::get)
}

/// Seconds since the node's snapshot came into force.
pub fn node_age() -> u64 {
    // SAFETY: as in current_node.
    unsafe {
        let cycle = *addr_of!(ngx_cycle);
        if cycle.is_null() {
            return 0;
        }
        cycle_main_conf(cycle).map_or(0, MainConf::node_age)
    }
}

/// The state of each link to the master; None without one.
pub fn master_links() -> Option<Vec<mesh_core::status::LinkStatus>> {
    RT.with_borrow(|r| r.as_ref().and_then(|r| r.agent.as_ref()).filter(|a| a.has_master()).map(Agent::links))
}

/// This node's id.
pub fn node_id() -> String {
    current_node().node_id.clone()
}

/// Queue a call to the master: refused without one, or when the queue is full.
pub fn call(c: Call) -> Result<(), Refused> {
    RT.with_borrow(|r| match r.as_ref().and_then(|r| r.agent.as_ref()) {
        Some(a) => a.call(c),
        None => Err(Refused::NoMaster),
    })
}

/// Take back a queued auth call whose asker left.
pub fn cancel_call(id: u64) {
    let _ = RT.try_with(|r| {
        if let Some(a) = r.borrow().as_ref().and_then(|r| r.agent.as_ref()) {
            a.cancel(id);
        }
    });
}

extern "C" {
    /// nginx-rtmp's core module (not declared in its headers).
    static mut ngx_rtmp_module: ngx_module_t;
}

/// Our rtmp main conf in a cycle (None without an rtmp{} block).
///
/// # Safety
/// `cycle` is the current cycle.
pub unsafe fn cycle_main_conf<'a>(cycle: *mut ngx_cycle_t) -> Option<&'a MainConf> {
    // SAFETY: conf_ctx has a slot per module; rtmp's holds its ngx_rtmp_conf_ctx_t, whose
    // main_conf array has our slot at our ctx_index.
    unsafe {
        let idx = (*addr_of!(ngx_rtmp_module)).index;
        let ctx = (*(*cycle).conf_ctx.add(idx)).cast::<ngx_rtmp_conf_ctx_t>();
        if ctx.is_null() {
            return None;
        }
        (*(*ctx).main_conf.add(ctx_index())).cast::<MainConf>().as_ref()
    }
}

/// Refuse configurations the runtime cannot serve: a master needs one worker (each worker
/// would announce itself as the node, with a part of its figures).
pub unsafe extern "C" fn init_module(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    guard(NGX_ERROR as ngx_int_t, || {
        // SAFETY: configuration is complete; the core module's conf is set.
        unsafe {
            let Some(mcf) = cycle_main_conf(cycle) else {
                return NGX_OK as ngx_int_t;
            };
            let ccf = (*(*cycle).conf_ctx.add((*addr_of!(ngx_core_module)).index)).cast::<ngx_core_conf_t>();
            if mcf.master.is_some() && !ccf.is_null() && (*ccf).worker_processes > 1 {
                ngx::ngx_log_error!(
                    NGX_LOG_EMERG,
                    (*cycle).log,
                    "\"mesh_master\" needs \"worker_processes 1\" (found {}): the node announces itself and its figures from one worker",
                    (*ccf).worker_processes
                );
                return NGX_ERROR as ngx_int_t;
            }
            NGX_OK as ngx_int_t
        }
    })
}

pub unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    guard(NGX_OK as ngx_int_t, || {
        // SAFETY: worker start, on the event loop thread.
        unsafe {
            let Some(mcf) = cycle_main_conf(cycle) else {
                return NGX_OK as ngx_int_t;
            };
            if mcf.master.is_none() && mcf.table_file.is_none() {
                return NGX_OK as ngx_int_t;
            }
            if let Err(e) = start(cycle, mcf) {
                ngx::ngx_log_error!(
                    NGX_LOG_ALERT,
                    (*cycle).log,
                    "mesh: cannot start the background threads: {}",
                    e
                );
            }
            NGX_OK as ngx_int_t
        }
    })
}

/// # Safety
/// Worker start, on the event loop.
unsafe fn start(cycle: *mut ngx_cycle_t, mcf: &MainConf) -> Result<(), String> {
    let (rx, tx) = UnixStream::pair().map_err(|e| e.to_string())?;
    rx.set_nonblocking(true).map_err(|e| e.to_string())?;
    tx.set_nonblocking(true).map_err(|e| e.to_string())?;
    let node = mcf.node();
    auth::set_limits(mcf.auth_pending_max.max(1) as usize, mcf.auth_pending_per_addr.max(1) as usize);
    let sink = Arc::new(GlueSink {
        queue: Mutex::new(VecDeque::new()),
        wake: tx,
        figures: Mutex::new(figures(&node)),
    });
    let cfg = agent::Config {
        node_id: node.node_id.clone(),
        rtmp_url: mcf.rtmp_url.clone().unwrap_or_default(),
        http_url: mcf.http_url.clone().unwrap_or_default(),
        heartbeat_interval: Duration::from_millis(mcf.heartbeat_interval as u64),
        poll_wait: Duration::from_millis(mcf.poll_wait as u64),
        table_file: mcf.table_file.clone().map(Into::into),
        capabilities: Capabilities { transcode: false, hls: false, dash: false },
        ..agent::Config::default()
    };
    // SAFETY: the read end becomes an nginx connection, which owns the fd from here on.
    let conn = unsafe {
        let fd = rx.into_raw_fd();
        let c = ngx_get_connection(fd, (*cycle).log);
        if c.is_null() {
            libc_close(fd);
            return Err("no free connection for the wake-up socket".into());
        }
        (*(*c).read).handler = Some(on_wake);
        (*(*c).read).log = (*cycle).log;
        if ngx_handle_read_event((*c).read, 0) != NGX_OK as ngx_int_t {
            ngx_close_connection(c);
            return Err("cannot watch the wake-up socket".into());
        }
        c
    };
    let agent = match &mcf.master {
        Some(base) => {
            let http = HttpMaster::new(HttpConfig {
                base: base.clone(),
                key: mcf.master_key.clone().unwrap_or_default(),
                node_id: node.node_id.clone(),
                paths: mcf.master_paths(),
                timeout: Duration::from_millis(mcf.master_timeout as u64),
                max_body: mesh_core::table::MAX_TABLE_BYTES,
            });
            Agent::start_master(cfg, node, Arc::new(http), sink.clone())
        }
        None => Agent::start_watch(cfg, node, sink.clone()),
    };
    let agent = match agent {
        Ok(a) => a,
        Err(e) => {
            // SAFETY: the connection made above.
            unsafe { ngx_close_connection(conn) };
            return Err(e.to_string());
        }
    };
    // SAFETY: a zeroed event is nginx's idle event; ours lives in the runtime's box.
    let mut tick: Box<ngx_event_t> = Box::new(unsafe { std::mem::zeroed() });
    tick.handler = Some(on_tick);
    // SAFETY: the cycle's log outlives the worker's event loop.
    tick.log = unsafe { (*cycle).log };
    tick.set_cancelable(1);
    // SAFETY: our timer, on the event loop.
    unsafe { ngx_add_timer(&mut *tick, TICK_MS) };
    // SAFETY: as above.
    let log = unsafe { (*cycle).log };
    RT.with_borrow_mut(|r| *r = Some(Runtime { agent: Some(agent), sink, conn, tick, mcf, log }));
    Ok(())
}

fn libc_close(fd: i32) {
    // SAFETY: closing a descriptor we own and nobody else holds.
    drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
}

pub unsafe extern "C" fn exit_process(_cycle: *mut ngx_cycle_t) {
    guard((), || {
        crate::transcode::exit_all();
        let Some(mut rt) = RT.with_borrow_mut(Option::take) else {
            return;
        };
        let threads = if let Some(a) = rt.agent.take() { a.stop(Duration::from_secs(1)) } else { 0 };
        // SAFETY: worker exit, on the event loop: our timer and our connection.
        unsafe {
            if rt.tick.timer_set() == 1 {
                ngx_del_timer(&mut *rt.tick);
            }
            ngx_close_connection(rt.conn);
            ngx::ngx_log_error!(
                NGX_LOG_NOTICE,
                rt.log,
                "mesh: background threads stopped ({} joined)",
                threads
            );
        }
    })
}

/// The wake-up socket is readable: drain it and handle every queued event.
unsafe extern "C" fn on_wake(ev: *mut ngx_event_t) {
    guard((), || {
        let Some((sink, mcf, log)) = RT.with_borrow(|r| r.as_ref().map(|r| (r.sink.clone(), r.mcf, r.log)))
        else {
            return;
        };
        // SAFETY: the event's connection is our wake-up socket.
        unsafe {
            let c = (*ev).data.cast::<ngx_connection_t>();
            drain((*c).fd);
            if ngx_handle_read_event(ev, 0) != NGX_OK as ngx_int_t {
                ngx::ngx_log_error!(NGX_LOG_ALERT, log, "mesh: cannot watch the wake-up socket");
            }
        }
        loop {
            let Some(ev) = sink.queue.lock().pop_front() else {
                break;
            };
            // SAFETY: the main conf lives as long as the cycle, the runtime no longer.
            unsafe { handle(&*mcf, log, ev) };
        }
    })
}

/// # Safety
/// Event loop; `log` is the cycle's.
unsafe fn handle(mcf: &MainConf, log: *mut ngx_log_t, ev: Event) {
    // SAFETY: as the caller guarantees.
    unsafe {
        match ev {
            Event::Log(level, msg) => {
                let level = match level {
                    Level::Error => NGX_LOG_ERR,
                    Level::Warn => NGX_LOG_WARN,
                    Level::Notice => NGX_LOG_NOTICE,
                };
                ngx::ngx_log_error!(level, log, "{}", msg);
            }
            Event::Node(node, change) => {
                let t0 = std::time::Instant::now();
                apply_node(mcf, node, &change, log);
                let us = t0.elapsed().as_micros() as u64;
                APPLY_US.with(|a| a.set((us, a.get().1.max(us))));
            }
            Event::Auth { id, result } => match auth::on_answer(id, result, session::now()) {
                None => {
                    ngx::ngx_log_debug!(log, "mesh: auth answer nobody waits for, dropped");
                }
                Some((waiters, q, a)) => {
                    for w in waiters {
                        match w {
                            Waiter::Session(h) => session::resume(h, &q, &a, log),
                            Waiter::Recheck(rid) => recheck_answer(rid, &q, &a),
                            Waiter::Cache => {}
                        }
                    }
                }
            },
            Event::Route { stream, result } => route::on_answer(&stream, result, log),
        }
    }
}

/// A new table or role: swap the snapshot, then check every admitted session again and make
/// the pushes match. Sessions the new state allows see nothing.
///
/// # Safety
/// Event loop.
unsafe fn apply_node(mcf: &MainConf, node: Arc<Node>, change: &Change, log: *mut ngx_log_t) {
    if let Some(old) = mcf.set_node(node.clone()) {
        // Freeing a large table takes long: never on the event loop.
        RT.with_borrow(|r| match r.as_ref().and_then(|r| r.agent.as_ref()) {
            Some(a) => a.dispose(old),
            None => drop(old),
        });
    }
    if !node.role.serves_viewers() {
        // SAFETY: event loop.
        unsafe { crate::transcode::stop_all(&format!("role {}", node.role), log) };
    }
    let now = session::now();
    let why_now = match change {
        Change::Table(v) => format!("table version {v}"),
        Change::Role(r) => format!("role {r}"),
    };
    let verdicts = registry::sweep(|e| {
        (registry::recheck(e, &node, now), e.stream.clone(), e.source().map(str::to_string), e.is_publisher())
    });
    for (id, s, (verdict, stream, source, publisher)) in verdicts {
        // SAFETY: registered sessions are live.
        unsafe {
            match verdict {
                Verdict::Drop(why) => drop_session(id, s, publisher, &stream, &format!("{why} ({why_now})")),
                Verdict::Keep if publisher => {
                    let plan = node.plan_pushes(&stream, source.as_deref());
                    let Some(ctx) = get_ctx(s) else { continue };
                    match &mut ctx.pushes {
                        Some(p) => p.reconcile(&plan),
                        None if !plan.is_empty() => ctx.pushes = Pushes::start(s, &stream, &plan),
                        None => {}
                    }
                }
                Verdict::Keep => {}
            }
        }
    }
}

/// Close an admitted session the node no longer allows, with its log line.
///
/// # Safety
/// `s` is live.
unsafe fn drop_session(id: u64, s: *mut ngx_rtmp_session_t, publisher: bool, stream: &str, why: &str) {
    // SAFETY: live session.
    unsafe {
        session::log_session(s, if publisher { "publish" } else { "play" }, "dropped", stream, why);
        if let Some(ctx) = get_ctx(s) {
            ctx.reg = None;
        }
        registry::remove(id);
        ngx_rtmp_finalize_session(s);
    }
}

/// The auth endpoint's second word on a session it had admitted.
fn recheck_answer(rid: u64, q: &auth::Question, a: &auth::Answer) {
    let failed = a.reason.starts_with("auth endpoint failed");
    let gone = registry::with(rid, |e| {
        if e.recheck.take().is_none() || registry::question(e) != *q {
            // Not the question this session waits on: nothing to apply.
            return None;
        }
        if a.allow {
            e.via = Via::Auth { until: a.until };
            None
        } else if failed {
            // Unreachable is no deny: keep the session, ask again later.
            e.via = Via::Auth { until: session::now() + 30 };
            None
        } else {
            Some((e.s, e.is_publisher(), e.stream.clone()))
        }
    });
    if let Some(Some((s, publisher, stream))) = gone {
        // SAFETY: registered sessions are live.
        unsafe { drop_session(rid, s, publisher, &stream, &format!("auth: {}", a.reason)) };
    }
}

/// Every second: rates, heartbeat figures, and admissions that ran out.
unsafe extern "C" fn on_tick(ev: *mut ngx_event_t) {
    guard((), || {
        let Some((sink, mcf)) = RT.with_borrow(|r| r.as_ref().map(|r| (r.sink.clone(), r.mcf))) else {
            return;
        };
        // SAFETY: event loop; registered sessions are live; the main conf outlives the runtime.
        unsafe {
            registry::tick_rates(TICK_MS as u64 / 1000);
            let node = (*mcf).node();
            *sink.figures.lock() = figures(&node);
            ask_again(&node);
            if !crate::util::exiting() {
                ngx_add_timer(ev, TICK_MS);
            }
        }
    })
}

/// Heartbeat figures from the live sessions.
fn figures(node: &Node) -> Heartbeat {
    let (streams, mut load) = registry::figures();
    let mut pushes = Vec::new();
    for (s, _) in registry::publishers() {
        // SAFETY: registered sessions are live.
        if let Some(p) = unsafe { get_ctx(s) }.and_then(|c| c.pushes.as_ref()) {
            pushes.extend(p.figures());
        }
    }
    // SAFETY: ngx_cycle is the worker's current cycle.
    load.connections = unsafe {
        let c = *addr_of!(ngx_cycle);
        if c.is_null() {
            0
        } else {
            ((*c).connection_n - (*c).free_connection_n) as u64
        }
    };
    Heartbeat {
        node_id: node.node_id.clone(),
        role: node.role,
        table_version: node.table.version,
        uptime_s: 0,
        streams,
        pushes,
        transcodes: crate::transcode::figures(),
        load,
    }
}

/// Sessions admitted by the auth endpoint whose answer ran out are asked about again.
fn ask_again(node: &Node) {
    let now = session::now();
    let due = registry::sweep(|e| match e.via {
        Via::Auth { until } if until <= now && e.recheck.is_none() => {
            Some((registry::credential(e), e.stream.clone()))
        }
        _ => None,
    });
    for (rid, s, item) in due {
        let Some(((action, credential), stream)) = item else {
            continue;
        };
        let (key, token) = match action {
            Action::Play => (None, credential),
            Action::Publish => (credential, None),
        };
        // SAFETY: registered sessions are live.
        let addr = unsafe { session::peer(s) };
        let req = AuthRequest { node_id: node.node_id.clone(), action, stream, key, token, addr };
        if let Ok(h) = auth::ask(Waiter::Recheck(rid), req) {
            registry::with(rid, |e| e.recheck = Some(h));
        }
    }
}
