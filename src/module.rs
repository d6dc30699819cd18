//! The module's definition: directives, rtmp module context, and the handler chains it heads.

use std::ffi::{c_char, c_void};
use std::mem::offset_of;
use std::ptr::{addr_of, addr_of_mut, null_mut};

use ngx::ngx_string;

use crate::conf::{self, AppConf, MainConf};
use crate::ffi::*;
use crate::session;

const MAIN_CONF_OFFSET: ngx_uint_t = offset_of!(ngx_rtmp_conf_ctx_t, main_conf) as ngx_uint_t;
const APP_CONF_OFFSET: ngx_uint_t = offset_of!(ngx_rtmp_conf_ctx_t, app_conf) as ngx_uint_t;
const MAIN_TAKE1: ngx_uint_t = (NGX_RTMP_MAIN_CONF | NGX_CONF_TAKE1) as ngx_uint_t;

const MAIN_TAKE2: ngx_uint_t = (NGX_RTMP_MAIN_CONF | NGX_CONF_TAKE2) as ngx_uint_t;

/// A main-level directive taking one argument, handled by `set`.
const fn main1(name: ngx_str_t, set: SetFn, offset: usize) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: MAIN_TAKE1,
        set: Some(set),
        conf: MAIN_CONF_OFFSET,
        offset: offset as ngx_uint_t,
        post: null_mut(),
    }
}

type SetFn = unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char;

static mut COMMANDS: [ngx_command_t; 16] = [
    main1(ngx_string!("mesh_master"), conf::set_master, 0),
    main1(ngx_string!("mesh_master_key"), conf::set_master_key, 0),
    main1(ngx_string!("mesh_master_key_file"), conf::set_master_key, 0),
    ngx_command_t {
        name: ngx_string!("mesh_master_path"),
        type_: MAIN_TAKE2,
        set: Some(conf::set_master_path),
        conf: MAIN_CONF_OFFSET,
        offset: 0,
        post: null_mut(),
    },
    main1(ngx_string!("mesh_rtmp_url"), conf::set_public_url, 0),
    main1(ngx_string!("mesh_http_url"), conf::set_public_url, 0),
    main1(
        ngx_string!("mesh_heartbeat_interval"),
        ngx_conf_set_msec_slot,
        offset_of!(MainConf, heartbeat_interval),
    ),
    main1(ngx_string!("mesh_poll_wait"), ngx_conf_set_msec_slot, offset_of!(MainConf, poll_wait)),
    main1(ngx_string!("mesh_master_timeout"), ngx_conf_set_msec_slot, offset_of!(MainConf, master_timeout)),
    main1(
        ngx_string!("mesh_auth_pending_max"),
        ngx_conf_set_num_slot,
        offset_of!(MainConf, auth_pending_max),
    ),
    main1(
        ngx_string!("mesh_auth_pending_per_addr"),
        ngx_conf_set_num_slot,
        offset_of!(MainConf, auth_pending_per_addr),
    ),
    main1(ngx_string!("mesh_node_id"), conf::set_node_id, 0),
    main1(ngx_string!("mesh_role"), conf::set_role, 0),
    main1(ngx_string!("mesh_table_file"), conf::set_table_file, 0),
    ngx_command_t {
        name: ngx_string!("mesh"),
        type_: (NGX_RTMP_MAIN_CONF | NGX_RTMP_SRV_CONF | NGX_RTMP_APP_CONF | NGX_CONF_FLAG) as ngx_uint_t,
        set: Some(ngx_conf_set_flag_slot),
        conf: APP_CONF_OFFSET,
        offset: offset_of!(AppConf, mesh) as ngx_uint_t,
        post: null_mut(),
    },
    ngx_command_t::empty(),
];

static MODULE_CTX: ngx_rtmp_module_t = ngx_rtmp_module_t {
    preconfiguration: None,
    postconfiguration: Some(postconfiguration),
    create_main_conf: Some(conf::create_main_conf),
    init_main_conf: Some(conf::init_main_conf),
    create_srv_conf: None,
    merge_srv_conf: None,
    create_app_conf: Some(conf::create_app_conf),
    merge_app_conf: Some(conf::merge_app_conf),
};

#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut ngx_rtmp_mesh_module: ngx_module_t = ngx_module_t {
    ctx: addr_of!(MODULE_CTX) as *mut c_void,
    commands: addr_of_mut!(COMMANDS) as *mut ngx_command_t,
    type_: NGX_RTMP_MODULE as ngx_uint_t,
    init_module: Some(crate::runtime::init_module),
    init_process: Some(crate::runtime::init_process),
    exit_process: Some(crate::runtime::exit_process),
    ..ngx_module_t::default()
};

use crate::http::ngx_http_mesh_module;

// The module list nginx's dlopen loader reads (what ngx::ngx_modules! emits, for two modules).
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut ngx_modules: [*const ngx_module_t; 3] =
    [addr_of!(ngx_rtmp_mesh_module), addr_of!(ngx_http_mesh_module), std::ptr::null()];

#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut ngx_module_names: [*const c_char; 3] =
    [c"ngx_rtmp_mesh_module".as_ptr(), c"ngx_http_mesh_module".as_ptr(), std::ptr::null()];

#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut ngx_module_order: [*const c_char; 1] = [std::ptr::null()];

/// Our rtmp ctx index (slot in main_conf/app_conf/ctx arrays).
pub fn ctx_index() -> usize {
    // SAFETY: ctx_index is written once by nginx at configuration time, before any session.
    unsafe { (*addr_of!(ngx_rtmp_mesh_module)).ctx_index }
}

/// The module's address, used as the tag of our relay pushes.
pub fn module_ptr() -> *mut c_void {
    addr_of_mut!(ngx_rtmp_mesh_module).cast()
}

/// Our main conf for a session.
///
/// # Safety
/// `s` must be a live session whose configuration includes this module.
pub unsafe fn session_main_conf<'a>(s: *mut ngx_rtmp_session_t) -> &'a MainConf {
    // SAFETY: the rtmp core fills s->main_conf with every rtmp module's main conf.
    unsafe { &*(*(*s).main_conf.add(ctx_index())).cast::<MainConf>() }
}

/// Our app conf for a session (None before `connect` chose an application).
///
/// # Safety
/// `s` must be a live session.
pub unsafe fn session_app_conf<'a>(s: *mut ngx_rtmp_session_t) -> Option<&'a AppConf> {
    // SAFETY: app_conf is null until connect, then the application's conf array.
    unsafe {
        let app = (*s).app_conf;
        if app.is_null() {
            return None;
        }
        (*app.add(ctx_index())).cast::<AppConf>().as_ref()
    }
}

unsafe extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: configuration time, single-threaded: nginx-rtmp's handler chains are plain
    // globals that every module links itself into here ("next_publish" pattern). Loaded last,
    // we run first.
    unsafe { session::hook_chains() };
    // SAFETY: as above; cf is the rtmp{} block's.
    if !unsafe { crate::protocol::hook(cf) } {
        return NGX_ERROR as ngx_int_t;
    }
    NGX_OK as ngx_int_t
}
