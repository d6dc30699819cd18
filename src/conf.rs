//! Configuration: the `mesh_*` directives, create/merge, and the node state they produce.
//!
//! rtmp{} main level: `mesh_node_id`, `mesh_role`, `mesh_table_file`.
//! application level (inherited): `mesh on|off`.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use mesh_agent::load::{make_node, read_table};
use mesh_core::name::{for_log, is_valid_id};
use mesh_core::node::Node;
use mesh_core::{Role, Table};
use ngx::ngx_conf_log_error;
use parking_lot::RwLock;

use crate::ffi::*;
use crate::util::{guard, pool_new, str_bytes, CONF_ERROR, CONF_OK};

/// rtmp{} main configuration. Lives in the configuration pool (dropped with it).
#[derive(Default)]
pub struct MainConf {
    pub node_id: Option<String>,
    pub role: Option<Role>,
    pub table_file: Option<String>,
    table: Option<Table>,
    /// The node state the hot path reads: one read lock and an `Arc` clone per decision.
    node: RwLock<Option<Arc<Node>>>,
}

impl MainConf {
    /// The current node snapshot.
    pub fn node(&self) -> Arc<Node> {
        self.node
            .read()
            .clone()
            .unwrap_or_else(|| Arc::new(Node::standalone()))
    }
}

/// Application configuration (plain C layout: set by nginx's flag slot).
#[repr(C)]
pub struct AppConf {
    pub mesh: ngx_flag_t,
}

const UNSET: ngx_flag_t = -1;

/// The directive's arguments (`value[0]` is the directive's name).
///
/// # Safety
/// `cf` must be the configuration being parsed.
unsafe fn args<'a>(cf: *mut ngx_conf_t) -> &'a [ngx_str_t] {
    // SAFETY: cf->args is an array of ngx_str_t filled by the parser for this directive.
    unsafe { (*(*cf).args).as_slice() }
}

/// Text of argument `i`, lossily decoded.
///
/// # Safety
/// `cf` must be the configuration being parsed, with at least `i + 1` arguments.
unsafe fn arg(cf: *mut ngx_conf_t, i: usize) -> String {
    // SAFETY: the parser holds the argument strings for the directive's duration.
    unsafe { String::from_utf8_lossy(str_bytes(&args(cf)[i])).into_owned() }
}

/// # Safety
/// `conf` is the MainConf created by [`create_main_conf`].
unsafe fn main_conf<'a>(conf: *mut c_void) -> &'a mut MainConf {
    // SAFETY: nginx passes back the pointer create_main_conf returned.
    unsafe { &mut *conf.cast::<MainConf>() }
}

pub unsafe extern "C" fn set_node_id(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard(CONF_ERROR, || {
        // SAFETY: called by the parser with our main conf and the directive's arguments.
        let (mcf, value) = unsafe { (main_conf(conf), arg(cf, 1)) };
        if mcf.node_id.is_some() {
            return c"is duplicate".as_ptr().cast_mut();
        }
        if !is_valid_id(&value) {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "invalid value \"{}\" in \"mesh_node_id\" directive, it must be 1-128 characters of A-Z a-z 0-9 _ -",
                for_log(&value)
            );
            return CONF_ERROR;
        }
        mcf.node_id = Some(value);
        CONF_OK
    })
}

pub unsafe extern "C" fn set_role(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard(CONF_ERROR, || {
        // SAFETY: called by the parser with our main conf and the directive's arguments.
        let (mcf, value) = unsafe { (main_conf(conf), arg(cf, 1)) };
        if mcf.role.is_some() {
            return c"is duplicate".as_ptr().cast_mut();
        }
        match value.parse::<Role>() {
            Ok(r) => {
                mcf.role = Some(r);
                CONF_OK
            }
            Err(()) => {
                ngx_conf_log_error!(
                    NGX_LOG_EMERG,
                    cf,
                    "invalid value \"{}\" in \"mesh_role\" directive, it must be \"ingest\", \"root_relay\", \"relay\" or \"standalone\"",
                    for_log(&value)
                );
                CONF_ERROR
            }
        }
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
            return c"is duplicate".as_ptr().cast_mut();
        }
        // SAFETY: args(cf)[1] is the parser's string; ngx_conf_full_name rewrites it in place
        // into the cycle's pool, relative to the configuration prefix.
        let path = unsafe {
            let mut name = args(cf)[1];
            if ngx_conf_full_name((*cf).cycle, &mut name, 1) != NGX_OK as ngx_int_t {
                return CONF_ERROR;
            }
            String::from_utf8_lossy(str_bytes(&name)).into_owned()
        };
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

pub unsafe extern "C" fn create_main_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: cf->pool is the configuration pool, alive as long as the cycle.
    guard(std::ptr::null_mut(), || unsafe {
        pool_new((*cf).pool, MainConf::default()).cast()
    })
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
                ngx_conf_log_error!(
                    NGX_LOG_EMERG,
                    cf,
                    "\"mesh_node_id\" is required for role \"{}\"",
                    r
                );
                return CONF_ERROR;
            }
        };
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
        *mcf.node.write() = Some(Arc::new(node));
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
    _cf: *mut ngx_conf_t,
    parent: *mut c_void,
    child: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes two AppConf from create_app_conf.
    let (prev, conf) = unsafe { (&*parent.cast::<AppConf>(), &mut *child.cast::<AppConf>()) };
    if conf.mesh == UNSET {
        conf.mesh = if prev.mesh == UNSET { 0 } else { prev.mesh };
    }
    CONF_OK
}
