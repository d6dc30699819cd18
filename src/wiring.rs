//! Wiring: what starts and stops with a worker, and where each answer from the background
//! threads goes. The one place that knows every concern; none of them knows it.
//!
//! * a worker starts ([`init_process`]): the link to the master or the table file, and a task
//!   that every second refreshes the heartbeat's figures and asks again about sessions whose
//!   admission ran out (and, once the worker is exiting, makes it stop speaking for the node);
//! * an event comes back ([`on_wake`]): a log line, a new table or role (applied to the node's
//!   snapshot, the admitted sessions and the transcodes), an auth answer (to each asker, by its
//!   handle), a route answer;
//! * the worker exits ([`exit_process`]): transcodes stopped, the task dropped, the threads
//!   joined.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use mesh_agent::agent::{Change, Event, Level};
use mesh_core::figures::WorkerFigures;
use mesh_core::node::Node;
use mesh_core::wire::Heartbeat;

use mesh_core::auth::Waiter;

use crate::auth;
use crate::conf::{self, cycle_main_conf};
use crate::nginx::event::{every, Task};
use crate::nginx::ffi::*;
use crate::nginx::util::{guard, now};
use crate::{figures, link, registry, route, rtmp, transcode};

const TICK: Duration = Duration::from_secs(1);

thread_local! {
    static TICK_TASK: RefCell<Option<Task<()>>> = const { RefCell::new(None) };
}

/// Refuse configurations the node cannot serve (see [`conf::check_cycle`]).
pub unsafe extern "C" fn init_module(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    guard(NGX_ERROR as ngx_int_t, || {
        // SAFETY: nginx calls us with the configured cycle, and its log.
        let (check, log) = unsafe { (conf::check_cycle(cycle), (*cycle).log) };
        match check {
            conf::Check::Fine => NGX_OK as ngx_int_t,
            conf::Check::Warn(e) => {
                ngx::ngx_log_error!(NGX_LOG_WARN, log, "{}", e);
                NGX_OK as ngx_int_t
            }
            conf::Check::Refuse(e) => {
                ngx::ngx_log_error!(NGX_LOG_EMERG, log, "{}", e);
                NGX_ERROR as ngx_int_t
            }
        }
    })
}

pub unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    guard(NGX_OK as ngx_int_t, || {
        // The cache manager and loader run init_process too: they are no node.
        if !crate::nginx::util::is_worker() {
            return NGX_OK as ngx_int_t;
        }
        // SAFETY: worker start, on the event loop, with the worker's cycle.
        let (mcf, log) = unsafe { (cycle_main_conf(cycle), (*cycle).log) };
        // SAFETY: as above; ours runs after nginx-rtmp's init_process.
        if let Err(e) = unsafe { crate::nginx::rtmp::auto_push::watch_worker_socket(cycle) } {
            ngx::ngx_log_error!(NGX_LOG_ALERT, log, "mesh: rtmp_auto_push: {}", e);
        }
        let Some(mcf) = mcf else { return NGX_OK as ngx_int_t };
        // Every worker: its figures into the node's zone, rates, admissions that ran out.
        TICK_TASK.with_borrow_mut(|t| *t = Some(every(TICK, tick)));
        if mcf.master.is_none() && mcf.table_file.is_none() {
            return NGX_OK as ngx_int_t;
        }
        auth::set_limits(mcf.auth_pending_max.max(1) as usize, mcf.auth_pending_per_addr.max(1) as usize);
        crate::push::on_down(beat_now);
        if let Err(e) = link::start(mcf, heartbeat(&mcf.node(), figures::node()), on_wake) {
            ngx::ngx_log_error!(NGX_LOG_ALERT, log, "mesh: cannot start the background threads: {}", e);
        }
        NGX_OK as ngx_int_t
    })
}

pub unsafe extern "C" fn exit_process(cycle: *mut ngx_cycle_t) {
    guard((), || {
        if !crate::nginx::util::is_worker() {
            return;
        }
        transcode::exit_all();
        TICK_TASK.with_borrow_mut(Option::take);
        figures::release();
        if let Some(threads) = link::stop() {
            // SAFETY: the cycle's log.
            let log = unsafe { (*cycle).log };
            ngx::ngx_log_error!(NGX_LOG_NOTICE, log, "mesh: background threads stopped ({} joined)", threads);
        }
    })
}

/// The background threads queued events: hand each to its concern.
fn on_wake() {
    while let Some(ev) = link::next_event() {
        dispatch(ev);
    }
}

fn dispatch(ev: Event) {
    let log = ngx::log::ngx_cycle_log().as_ptr();
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
            apply_node(node, &change);
            conf::record_apply(t0.elapsed().as_micros() as u64);
        }
        Event::Auth { id, result } => match auth::on_answer(id, result, now()) {
            None => {
                ngx::ngx_log_debug!(log, "mesh: auth answer nobody waits for, dropped");
            }
            Some(answered) => {
                let (q, a) = (&answered.question, &answered.answer);
                for w in answered.waiters {
                    match w {
                        Waiter::Session(h) => rtmp::ask::resume(h, q, a),
                        Waiter::Recheck(rid) => rtmp::ask::recheck_answer(rid, q, a),
                        Waiter::Cache => {}
                    }
                }
            }
        },
        Event::Route { stream, result } => route::on_answer(&stream, result),
    }
}

/// A new table or role: swap the snapshot, stop transcodes a role without viewers does not
/// run, check every admitted session again.
fn apply_node(node: Arc<Node>, change: &Change) {
    if let Some(old) = conf::set_current_node(node.clone()) {
        // Freeing a large table takes long: never on the event loop.
        link::dispose(old);
    }
    if !node.role.serves_viewers() {
        transcode::stop_all(&format!("role {}", node.role));
    }
    let why_now = match change {
        Change::Table(v) => format!("table version {v}"),
        Change::Role(r) => format!("role {r}"),
    };
    rtmp::table::apply(&node, &why_now);
    route::ask_for_starved(&node, matches!(change, Change::Table(_)));
}

/// Every second: rates, this worker's figures into the node's, heartbeat figures, and
/// admissions that ran out. A worker that started exiting no longer speaks for the node.
fn tick() {
    if crate::nginx::util::exiting() && link::resign() {
        ngx::ngx_log_error!(
            NGX_LOG_NOTICE,
            ngx::log::ngx_cycle_log().as_ptr(),
            "mesh: worker exiting: it no longer speaks for the node"
        );
    }
    registry::tick_rates(TICK.as_secs());
    let mine = figures::publish();
    let node = conf::current_node();
    if link::is_running() {
        link::set_figures(heartbeat(&node, figures::node_with(mine)));
    }
    rtmp::ask::ask_again(&node);
    route::ask_for_starved(&node, false);
    // Workers started after a stream was published (a reload's) get their copy of it too.
    for (s, _) in registry::publishers() {
        crate::nginx::rtmp::auto_push::reach_new_workers(s);
    }
}

/// A push went down: a heartbeat now, with the figures as they are now (its push
/// `retrying`), so the master can re-place within that round trip.
fn beat_now() {
    link::beat_now(heartbeat(&conf::current_node(), figures::node()));
}

/// Heartbeat figures: the node's (`f`), from every worker.
fn heartbeat(node: &Node, f: WorkerFigures) -> Heartbeat {
    Heartbeat {
        node_id: node.node_id.clone(),
        role: node.role,
        table_version: node.table.version,
        uptime_s: 0,
        pushes: f.push_stats(),
        streams: f.streams,
        transcodes: f.transcodes,
        load: f.load,
    }
}
