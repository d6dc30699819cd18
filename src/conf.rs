//! Configuration: the `mesh_*` directives, create/merge, and the node state they produce.
//!
//! rtmp{} main level: `mesh_node_id`, `mesh_role`, `mesh_table_file`, and the master's:
//! `mesh_master`, `mesh_master_key` | `mesh_master_key_file`, `mesh_master_path`,
//! `mesh_rtmp_url`, `mesh_http_url`, `mesh_heartbeat_interval`, `mesh_poll_wait`,
//! `mesh_master_timeout`, and the caps on questions waiting for it: `mesh_auth_pending_max`,
//! `mesh_auth_pending_per_addr`.
//! application level (inherited): `mesh on|off`.

use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mesh_agent::client::Paths;
use mesh_agent::load::{make_node, os_error, read_table};
use mesh_core::name::{for_log, is_valid_id};
use mesh_core::node::Node;
use mesh_core::{Role, Table};
use ngx::ngx_conf_log_error;
use parking_lot::RwLock;

use crate::directive::{self, arg, args, DUPLICATE};
use crate::ffi::*;
use crate::util::{full_name, guard, pool_new, str_bytes, CONF_ERROR, CONF_OK};

/// rtmp{} main configuration. Lives in the configuration pool (dropped with it).
pub struct MainConf {
    pub node_id: Option<String>,
    pub role: Option<Role>,
    pub table_file: Option<String>,
    table: Option<Table>,
    /// `http(s)://host[:port][/prefix]`, no trailing slash.
    pub master: Option<String>,
    pub master_key: Option<Vec<u8>>,
    pub paths: [Option<String>; 5],
    pub rtmp_url: Option<String>,
    pub http_url: Option<String>,
    pub heartbeat_interval: ngx_msec_t,
    pub poll_wait: ngx_msec_t,
    pub master_timeout: ngx_msec_t,
    /// Auth questions of unknown credentials that may wait per worker, and per client address.
    pub auth_pending_max: ngx_int_t,
    pub auth_pending_per_addr: ngx_int_t,
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
            master_key: None,
            paths: Default::default(),
            rtmp_url: None,
            http_url: None,
            heartbeat_interval: UNSET_MSEC,
            poll_wait: UNSET_MSEC,
            master_timeout: UNSET_MSEC,
            auth_pending_max: NGX_CONF_UNSET as ngx_int_t,
            auth_pending_per_addr: NGX_CONF_UNSET as ngx_int_t,
            node: RwLock::new(None),
            since: AtomicU64::new(0),
        }
    }
}

/// Endpoint names of `mesh_master_path`, in the order of `MainConf::paths`.
pub const ENDPOINTS: [&str; 5] = ["announce", "heartbeat", "streams", "auth", "route"];

const UNSET_MSEC: ngx_msec_t = ngx_msec_t::MAX;

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
unsafe fn main_conf<'a>(conf: *mut c_void) -> &'a mut MainConf {
    // SAFETY: nginx passes back the pointer create_main_conf returned.
    unsafe { &mut *conf.cast::<MainConf>() }
}

/// [`directive::set_once`] into a field of our main conf.
///
/// # Safety
/// Called from a directive handler with its `cf` and our main conf.
unsafe fn set_once<T>(
    cf: *mut ngx_conf_t,
    conf: *mut c_void,
    slot: fn(&mut MainConf) -> &mut Option<T>,
    check: impl FnOnce(&str) -> Result<T, String>,
) -> *mut c_char {
    // SAFETY: as the caller guarantees.
    unsafe { directive::set_once(cf, slot(main_conf(conf)), check) }
}

pub unsafe extern "C" fn set_node_id(
    cf: *mut ngx_conf_t,
    _: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: the parser calls us with our main conf.
    guard(CONF_ERROR, || unsafe {
        set_once(
            cf,
            conf,
            |m| &mut m.node_id,
            |v| match is_valid_id(v) {
                true => Ok(v.to_string()),
                false => Err("it must be 1-128 characters of A-Z a-z 0-9 _ -".into()),
            },
        )
    })
}

pub unsafe extern "C" fn set_role(
    cf: *mut ngx_conf_t,
    _: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: the parser calls us with our main conf.
    guard(CONF_ERROR, || unsafe {
        set_once(
            cf,
            conf,
            |m| &mut m.role,
            |v| {
                v.parse::<Role>()
                    .map_err(|()| "it must be \"ingest\", \"root_relay\", \"relay\" or \"standalone\"".into())
            },
        )
    })
}

pub unsafe extern "C" fn set_table_file(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard(CONF_ERROR, || {
        // SAFETY: called by the parser with our main conf and the directive's arguments.
        let mcf = unsafe { main_conf(conf) };
        if mcf.table_file.is_some() {
            return DUPLICATE;
        }
        // SAFETY: args(cf)[1] is the parser's string.
        let Some(path) = (unsafe { full_name(cf, args(cf)[1], true) }) else { return CONF_ERROR };
        // Configuration time, not the event loop: reading the file here is fine.
        match read_table(std::path::Path::new(&path)) {
            Ok(t) => {
                mcf.table = Some(t);
                mcf.table_file = Some(path);
                CONF_OK
            }
            Err(e) => {
                ngx_conf_log_error!(NGX_LOG_EMERG, cf, "mesh_table_file \"{}\": {}", path, e);
                CONF_ERROR
            }
        }
    })
}

pub unsafe extern "C" fn set_master(
    cf: *mut ngx_conf_t,
    _: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: the parser calls us with our main conf.
    guard(CONF_ERROR, || unsafe {
        set_once(cf, conf, |m| &mut m.master, |v| check_http_url(v).map_err(String::from))
    })
}

/// `http(s)://host[:port][/prefix]` without query or fragment; returns it without a trailing
/// slash.
fn check_http_url(url: &str) -> Result<String, &'static str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("it must start with \"http://\" or \"https://\"")?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("it has no host");
    }
    if rest.bytes().any(|b| !b.is_ascii_graphic() || b == b'?' || b == b'#') {
        return Err("it must not have a query, a fragment or spaces");
    }
    Ok(url.trim_end_matches('/').to_string())
}

pub unsafe extern "C" fn set_master_key(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard(CONF_ERROR, || {
        // SAFETY: called by the parser with our main conf, its command and arguments.
        let (mcf, value, name) = unsafe {
            (main_conf(conf), arg(cf, 1), String::from_utf8_lossy(str_bytes(&(*cmd).name)).into_owned())
        };
        if mcf.master_key.is_some() {
            return DUPLICATE;
        }
        let key = if name == "mesh_master_key_file" {
            // SAFETY: args(cf)[1] is the parser's string.
            let Some(path) = (unsafe { full_name(cf, args(cf)[1], true) }) else { return CONF_ERROR };
            match std::fs::read(&path) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
                Err(e) => {
                    ngx_conf_log_error!(
                        NGX_LOG_EMERG,
                        cf,
                        "mesh_master_key_file \"{}\": {}",
                        path,
                        os_error("open", e)
                    );
                    return CONF_ERROR;
                }
            }
        } else {
            value
        };
        if key.is_empty() {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "empty master key in \"{}\" directive", name);
            return CONF_ERROR;
        }
        mcf.master_key = Some(key.into_bytes());
        CONF_OK
    })
}

pub unsafe extern "C" fn set_master_path(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard(CONF_ERROR, || {
        // SAFETY: called by the parser with our main conf and the directive's arguments.
        let (mcf, name, path) = unsafe { (main_conf(conf), arg(cf, 1), arg(cf, 2)) };
        let Some(i) = ENDPOINTS.iter().position(|e| *e == name) else {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "invalid endpoint \"{}\" in \"mesh_master_path\" directive, it must be \"announce\", \"heartbeat\", \"streams\", \"auth\" or \"route\"",
                for_log(&name)
            );
            return CONF_ERROR;
        };
        if mcf.paths[i].is_some() {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "\"mesh_master_path\" directive \"{}\" is duplicate",
                name
            );
            return CONF_ERROR;
        }
        if !path.starts_with('/') || path.bytes().any(|b| !b.is_ascii_graphic() || b == b'?' || b == b'#') {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "invalid path \"{}\" in \"mesh_master_path\" directive, it must start with \"/\" and have no query",
                for_log(&path)
            );
            return CONF_ERROR;
        }
        mcf.paths[i] = Some(path);
        CONF_OK
    })
}

pub unsafe extern "C" fn set_public_url(
    cf: *mut ngx_conf_t,
    _: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: the parser calls us with our main conf and the directive's arguments.
    guard(CONF_ERROR, || unsafe {
        let url = |schemes: &'static [&'static str]| {
            move |v: &str| {
                let ok = schemes.iter().any(|p| v.strip_prefix(p).is_some_and(|r| !r.is_empty()))
                    && v.bytes().all(|b| b.is_ascii_graphic());
                ok.then(|| v.to_string()).ok_or_else(|| format!("it must be a {} URL", schemes.join(" or ")))
            }
        };
        if arg(cf, 0) == "mesh_rtmp_url" {
            set_once(cf, conf, |m| &mut m.rtmp_url, url(&["rtmp://"]))
        } else {
            set_once(cf, conf, |m| &mut m.http_url, url(&["http://", "https://"]))
        }
    })
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
        let msec = |v: &mut ngx_msec_t, d: ngx_msec_t| {
            if *v == UNSET_MSEC {
                *v = d;
            }
        };
        msec(&mut mcf.heartbeat_interval, 10_000);
        msec(&mut mcf.poll_wait, 25_000);
        msec(&mut mcf.master_timeout, 5_000);
        let num = |v: &mut ngx_int_t, d: usize| {
            if *v == NGX_CONF_UNSET as ngx_int_t {
                *v = d as ngx_int_t;
            }
        };
        num(&mut mcf.auth_pending_max, crate::auth::DEFAULT_PENDING_MAX);
        num(&mut mcf.auth_pending_per_addr, crate::auth::DEFAULT_PENDING_PER_ADDR);
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

/// The configuration (cycle) already warned about a verbose error log.
static WARNED_CYCLE: std::sync::atomic::AtomicPtr<ngx_cycle_t> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// `mesh on` with an error log at `info` or `debug`: nginx-rtmp logs every publish's and
/// play's arguments there (stream keys, viewer tokens). Warned once per configuration.
///
/// # Safety
/// `cf` is the configuration being parsed.
unsafe fn warn_verbose_log(cf: *mut ngx_conf_t) {
    // SAFETY: the cycle being configured and its error logs (those declared so far).
    unsafe {
        warn_verbose_logs(
            cf,
            &(*(*cf).cycle).new_log,
            "\"mesh on\"",
            "publish and play arguments (stream keys, viewer tokens) are logged at this level",
        )
    }
}

/// The same for the error logs in the list at `log` (an HTTP location's, which a media
/// request logs to: nginx writes the request line, with its `token=`, at `info` and `debug`).
///
/// # Safety
/// `cf` is the configuration being parsed; `log` a list of its error logs.
pub unsafe fn warn_verbose_logs(cf: *mut ngx_conf_t, mut log: *const ngx_log_t, what: &str, why: &str) {
    // SAFETY: as the caller guarantees.
    unsafe {
        let cycle = (*cf).cycle;
        let mut level = 0;
        while !log.is_null() {
            if !(*log).file.is_null() {
                level = level.max((*log).log_level);
            }
            log = (*log).next;
        }
        if level < NGX_LOG_INFO as ngx_uint_t || WARNED_CYCLE.swap(cycle, Ordering::Relaxed) == cycle {
            return;
        }
        let name = if level >= NGX_LOG_DEBUG as ngx_uint_t { "debug" } else { "info" };
        ngx_conf_log_error!(
            NGX_LOG_WARN,
            cf,
            "{} with error log level \"{}\": {}, use \"notice\" or above",
            what,
            name,
            why
        );
    }
}
