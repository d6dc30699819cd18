//! Configuration: the `mesh_*` directives, create/merge, and the node state they produce.
//!
//! rtmp{} main level: `mesh_node_id`, `mesh_role`, `mesh_table_file`, and the master's:
//! `mesh_master`, `mesh_master_ca`, `mesh_master_key` | `mesh_master_key_file`, `mesh_master_path`,
//! `mesh_rtmp_url`, `mesh_http_url`, `mesh_heartbeat_interval`, `mesh_poll_wait`,
//! `mesh_master_timeout`, and the caps on questions waiting for it: `mesh_auth_pending_max`,
//! `mesh_auth_pending_per_addr`; `mesh_push_timeout` (a push that hears nothing is stalled).
//! application level (inherited): `mesh on|off`.
//!
//! The directives' handlers are in [`directives`]; here: the confs, their create/init/merge,
//! and the node snapshot the hot path reads ([`current_node`]).

pub mod directives;
mod logs;

use logs::warn_verbose_log;
pub use logs::warn_verbose_logs;

use std::ffi::{c_char, c_void};
use std::ptr::addr_of;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mesh_agent::client::Paths;
use mesh_agent::load::make_node;
use mesh_core::node::Node;
use mesh_core::{Role, Table};
use ngx::ngx_conf_log_error;
use parking_lot::RwLock;

use crate::nginx::ffi::*;
use crate::nginx::util::{guard, pool_new, worker_processes, CONF_ERROR, CONF_OK};

/// `mesh_shared_zone`'s default: 1,024 transcode claims and 64 slots of about 60 KiB (about 550
/// streams' figures a worker).
pub const DEFAULT_ZONE_SIZE: usize = 4 << 20;
/// The least zone: slots of 8 KiB.
const MIN_ZONE_SIZE: usize = 640 << 10;
/// The zone's name (nginx's shared memory namespace).
const ZONE_NAME: &str = "ngx_rtmp_mesh";

/// `mesh_push_timeout`: a push that hears nothing from its target for this long is stalled.
pub const DEFAULT_PUSH_TIMEOUT_MS: ngx_msec_t = 2_000;

/// `mesh_auth_pending_max`: auth questions about unknown credentials waiting per worker.
pub const DEFAULT_PENDING_MAX: usize = 256;
/// `mesh_auth_pending_per_addr`: the same per client address (IPv6 by /64).
pub const DEFAULT_PENDING_PER_ADDR: usize = 8;

/// rtmp{} main configuration. Lives in the configuration pool (dropped with it).
pub struct MainConf {
    pub node_id: Option<String>,
    pub role: Option<Role>,
    pub table_file: Option<String>,
    pub(crate) table: Option<Table>,
    /// `http(s)://host[:port][/prefix]`, no trailing slash.
    pub master: Option<String>,
    /// Where `mesh_master` is (`<file>:<line>`), for nginx -t's word about it.
    pub master_at: String,
    pub master_key: Option<Vec<u8>>,
    /// `mesh_master_ca`: the CA an https master is verified against (read at configuration).
    pub master_ca: Option<mesh_agent::tls::MasterCa>,
    pub paths: [Option<String>; 5],
    pub rtmp_url: Option<String>,
    pub http_url: Option<String>,
    pub heartbeat_interval: ngx_msec_t,
    pub poll_wait: ngx_msec_t,
    pub master_timeout: ngx_msec_t,
    /// `mesh_push_timeout` (0: never stalled).
    pub push_timeout: ngx_msec_t,
    /// Auth questions of unknown credentials that may wait per worker, and per client address.
    pub auth_pending_max: ngx_int_t,
    pub auth_pending_per_addr: ngx_int_t,
    /// `mesh_shared_zone`: the size of the zone where every worker leaves its figures.
    pub zone_size: usize,
    /// That zone (made by init_main_conf).
    zone: Option<crate::nginx::shm::Zone>,
    /// The node state the hot path reads: one read lock and an `Arc` clone per decision.
    node: RwLock<Option<Arc<Node>>>,
    /// When the node state came into force (unix s).
    since: AtomicU64,
}

impl Default for MainConf {
    fn default() -> MainConf {
        MainConf {
            node_id: None,
            role: None,
            table_file: None,
            table: None,
            master: None,
            master_at: String::new(),
            master_key: None,
            master_ca: None,
            paths: Default::default(),
            rtmp_url: None,
            http_url: None,
            heartbeat_interval: UNSET_MSEC,
            poll_wait: UNSET_MSEC,
            master_timeout: UNSET_MSEC,
            push_timeout: UNSET_MSEC,
            auth_pending_max: NGX_CONF_UNSET as ngx_int_t,
            auth_pending_per_addr: NGX_CONF_UNSET as ngx_int_t,
            zone_size: UNSET_SIZE,
            zone: None,
            node: RwLock::new(None),
            since: AtomicU64::new(0),
        }
    }
}

/// Endpoint names of `mesh_master_path`, in the order of `MainConf::paths`.
pub const ENDPOINTS: [&str; 5] = ["announce", "heartbeat", "streams", "auth", "route"];

const UNSET_MSEC: ngx_msec_t = ngx_msec_t::MAX;
/// nginx's `NGX_CONF_UNSET_SIZE` (a cast bindgen does not carry).
const UNSET_SIZE: usize = usize::MAX;

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl MainConf {
    /// The current node snapshot.
    pub fn node(&self) -> Arc<Node> {
        self.node.read().clone().unwrap_or_else(|| Arc::new(Node::standalone()))
    }

    /// Swap in a new snapshot (event loop only); returns the old one, for the caller to free
    /// off the event loop.
    #[must_use]
    pub fn set_node(&self, node: Arc<Node>) -> Option<Arc<Node>> {
        self.since.store(unix_now(), Ordering::Relaxed);
        self.node.write().replace(node)
    }

    /// Seconds since the snapshot came into force.
    pub fn node_age(&self) -> u64 {
        unix_now().saturating_sub(self.since.load(Ordering::Relaxed))
    }

    /// The master's endpoint paths, defaults filled in.
    pub fn master_paths(&self) -> Paths {
        let d = Paths::default();
        let pick = |i: usize, def: String| self.paths[i].clone().unwrap_or(def);
        Paths {
            announce: pick(0, d.announce),
            heartbeat: pick(1, d.heartbeat),
            streams: pick(2, d.streams),
            auth: pick(3, d.auth),
            route: pick(4, d.route),
        }
    }
}

/// Application configuration (plain C layout: set by nginx's flag slot).
#[repr(C)]
pub struct AppConf {
    pub mesh: ngx_flag_t,
}

const UNSET: ngx_flag_t = -1;

/// # Safety
/// `conf` is the MainConf created by [`create_main_conf`].
pub(crate) unsafe fn main_conf<'a>(conf: *mut c_void) -> &'a mut MainConf {
    // SAFETY: nginx passes back the pointer create_main_conf returned.
    unsafe { &mut *conf.cast::<MainConf>() }
}

/// Our rtmp main conf in a cycle (None without an rtmp{} block).
///
/// # Safety
/// `cycle` is the current cycle, or one whose rtmp{} block is parsed.
pub unsafe fn cycle_main_conf<'a>(cycle: *mut ngx_cycle_t) -> Option<&'a MainConf> {
    // SAFETY: as the caller guarantees; MainConf is our main conf type.
    unsafe { crate::nginx::rtmp::cycle_main_conf::<MainConf>(cycle) }
}

/// `f` of the worker's current main conf, if there is an rtmp{} block.
fn with_current<R>(f: impl FnOnce(&MainConf) -> R) -> Option<R> {
    // SAFETY: ngx_cycle is the worker's current cycle, read on the event loop; its rtmp main
    // conf lives as long as the cycle, which outlives this call.
    unsafe {
        let cycle = *addr_of!(ngx_cycle);
        if cycle.is_null() {
            return None;
        }
        cycle_main_conf(cycle).map(f)
    }
}

/// The node's current snapshot.
pub fn current_node() -> Arc<Node> {
    with_current(MainConf::node).unwrap_or_else(|| Arc::new(Node::standalone()))
}

/// Swap in a new snapshot (event loop); returns the old one, to be freed off the event loop.
pub fn set_current_node(node: Arc<Node>) -> Option<Arc<Node>> {
    with_current(|m| m.set_node(node)).flatten()
}

/// The node's shared zone (see [`crate::figures`]).
pub fn zone() -> Option<crate::nginx::shm::Zone> {
    with_current(|m| m.zone).flatten()
}

/// Seconds since the node's snapshot came into force.
pub fn node_age() -> u64 {
    with_current(MainConf::node_age).unwrap_or(0)
}

thread_local! {
    /// Event-loop time of the last table or role change, and the longest, in microseconds.
    static APPLY_US: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// A table or role change took `us` microseconds of the event loop.
pub fn record_apply(us: u64) {
    APPLY_US.with(|a| a.set((us, a.get().1.max(us))));
}

/// Event-loop microseconds taken by the last table or role change, and the most so far.
pub fn apply_us() -> (u64, u64) {
    APPLY_US.with(std::cell::Cell::get)
}

/// What the node thinks of a configuration: refused (several workers under a master need the
/// table file: all but the one speaking for the node follow it), or a warning to log.
pub enum Check {
    Fine,
    /// Runs, but not as the operator likely means.
    Warn(String),
    Refuse(String),
}

/// Check a configured cycle (init_module).
///
/// # Safety
/// `cycle` is configured (init_module).
pub unsafe fn check_cycle(cycle: *mut ngx_cycle_t) -> Check {
    // SAFETY: as the caller guarantees.
    let (mcf, workers, auto_push) = unsafe {
        (cycle_main_conf(cycle), worker_processes(cycle), crate::nginx::rtmp::auto_push::enabled(cycle))
    };
    match (mcf, workers) {
        (Some(m), Some(n)) if m.master.is_some() && m.table_file.is_none() && n > 1 => Check::Refuse(format!(
            "\"mesh_master\" with \"worker_processes {n}\" needs \"mesh_table_file\" (one worker speaks for the node, the others follow the table file it writes) in {}",
            m.master_at
        )),
        (Some(_), Some(n)) if 2 * n as usize > crate::nginx::shm::SLOTS => Check::Warn(format!(
            "\"worker_processes {n}\": the node's figures hold {} worker processes, and a reload runs two generations at once",
            crate::nginx::shm::SLOTS
        )),
        (Some(_), Some(n)) if n > 1 && !auto_push => Check::Warn(format!(
            "\"worker_processes {n}\" without \"rtmp_auto_push on\": a stream is seen only by the worker it is published into"
        )),
        _ => Check::Fine,
    }
}

pub unsafe extern "C" fn create_main_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: cf->pool is the configuration pool, alive as long as the cycle.
    guard(std::ptr::null_mut(), || unsafe { pool_new((*cf).pool, MainConf::default()).cast() })
}

/// Settle the node: the table's `role` wins over `mesh_role` (it is the master's word), the
/// default is `standalone`; every role but standalone needs `mesh_node_id`.
pub unsafe extern "C" fn init_main_conf(cf: *mut ngx_conf_t, conf: *mut c_void) -> *mut c_char {
    guard(CONF_ERROR, || {
        // SAFETY: nginx passes back our main conf.
        let mcf = unsafe { main_conf(conf) };
        let table = mcf.table.take().unwrap_or_default();
        let role = match (table.role, mcf.role) {
            (Some(t), Some(d)) if t != d => {
                ngx_conf_log_error!(
                    NGX_LOG_WARN,
                    cf,
                    "mesh_table_file \"{}\" sets role \"{}\", which overrides \"mesh_role {}\"",
                    mcf.table_file.as_deref().unwrap_or(""),
                    t,
                    d
                );
                t
            }
            (t, d) => t.or(d).unwrap_or(Role::Standalone),
        };
        let node_id = match (&mcf.node_id, role) {
            (Some(id), _) => id.clone(),
            (None, Role::Standalone) => "standalone".to_string(),
            (None, r) => {
                ngx_conf_log_error!(NGX_LOG_EMERG, cf, "\"mesh_node_id\" is required for role \"{}\"", r);
                return CONF_ERROR;
            }
        };
        if mcf.master.is_some() && mcf.master_key.is_none() {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "\"mesh_master\" needs \"mesh_master_key\" or \"mesh_master_key_file\""
            );
            return CONF_ERROR;
        }
        // SAFETY: the configuration being parsed.
        if !unsafe { directives::check_master_tls(cf, mcf) } {
            return CONF_ERROR;
        }
        let msec = |v: &mut ngx_msec_t, d: ngx_msec_t| {
            if *v == UNSET_MSEC {
                *v = d;
            }
        };
        msec(&mut mcf.heartbeat_interval, 10_000);
        msec(&mut mcf.poll_wait, 25_000);
        msec(&mut mcf.master_timeout, 5_000);
        msec(&mut mcf.push_timeout, DEFAULT_PUSH_TIMEOUT_MS);
        let num = |v: &mut ngx_int_t, d: usize| {
            if *v == NGX_CONF_UNSET as ngx_int_t {
                *v = d as ngx_int_t;
            }
        };
        num(&mut mcf.auth_pending_max, DEFAULT_PENDING_MAX);
        num(&mut mcf.auth_pending_per_addr, DEFAULT_PENDING_PER_ADDR);
        if mcf.zone_size == UNSET_SIZE {
            mcf.zone_size = DEFAULT_ZONE_SIZE;
        }
        if mcf.zone_size < MIN_ZONE_SIZE {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "\"mesh_shared_zone\" of {} bytes is too small, it must be at least {}k",
                mcf.zone_size,
                MIN_ZONE_SIZE / 1024
            );
            return CONF_ERROR;
        }
        // SAFETY: the configuration being parsed.
        mcf.zone = unsafe { crate::nginx::shm::Zone::add(cf, ZONE_NAME, mcf.zone_size) };
        if mcf.zone.is_none() {
            return CONF_ERROR;
        }
        let (node, failed) = make_node(&node_id, role, table);
        for (url, e) in failed {
            ngx_conf_log_error!(
                NGX_LOG_WARN,
                cf,
                "mesh_table_file \"{}\": host of \"{}\" not resolved ({}): pushes to it are skipped",
                mcf.table_file.as_deref().unwrap_or(""),
                url,
                e
            );
        }
        // Configuration time: freeing a previous snapshot here blocks no event loop.
        drop(mcf.set_node(Arc::new(node)));
        CONF_OK
    })
}

pub unsafe extern "C" fn create_app_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: plain C struct in the configuration pool.
    unsafe {
        let acf = ngx_pcalloc((*cf).pool, std::mem::size_of::<AppConf>()).cast::<AppConf>();
        if !acf.is_null() {
            (*acf).mesh = UNSET;
        }
        acf.cast()
    }
}

pub unsafe extern "C" fn merge_app_conf(
    cf: *mut ngx_conf_t,
    parent: *mut c_void,
    child: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes two AppConf from create_app_conf.
    let (prev, conf) = unsafe { (&*parent.cast::<AppConf>(), &mut *child.cast::<AppConf>()) };
    if conf.mesh == UNSET {
        conf.mesh = if prev.mesh == UNSET { 0 } else { prev.mesh };
    }
    if conf.mesh == 1 {
        // SAFETY: the configuration being parsed.
        unsafe { warn_verbose_log(cf) };
    }
    CONF_OK
}
