//! The module's definition, in one place: the two nginx modules (`ngx_rtmp_mesh_module` for the
//! rtmp{} block, `ngx_http_mesh_module` for http{}), their directive tables and contexts, and
//! the list nginx's loader reads (`ngx_modules!`). What each directive and hook does lives with
//! its concern; the process hooks are [`crate::wiring`]'s.

use std::ffi::{c_char, c_void};
use std::mem::offset_of;
use std::ptr::{addr_of, addr_of_mut, null_mut};

use ngx::ngx_string;

use crate::conf::{self, directives as d, AppConf, MainConf};
use crate::nginx::ffi::*;
use crate::{http, rtmp, status, wiring};

type SetFn = unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char;

const RTMP_MAIN: ngx_uint_t = offset_of!(ngx_rtmp_conf_ctx_t, main_conf) as ngx_uint_t;
const RTMP_APP: ngx_uint_t = offset_of!(ngx_rtmp_conf_ctx_t, app_conf) as ngx_uint_t;
const HTTP_MAIN: ngx_uint_t = offset_of!(ngx_http_conf_ctx_t, main_conf) as ngx_uint_t;
const HTTP_LOC: ngx_uint_t = offset_of!(ngx_http_conf_ctx_t, loc_conf) as ngx_uint_t;

const fn command(name: ngx_str_t, type_: u32, set: SetFn, conf: ngx_uint_t, offset: usize) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: type_ as ngx_uint_t,
        set: Some(set),
        conf,
        offset: offset as ngx_uint_t,
        post: null_mut(),
    }
}

/// An rtmp{} main-level directive.
const fn main(name: ngx_str_t, args: u32, set: SetFn, offset: usize) -> ngx_command_t {
    command(name, NGX_RTMP_MAIN_CONF | args, set, RTMP_MAIN, offset)
}

const T1: u32 = NGX_CONF_TAKE1;

static mut RTMP_COMMANDS: [ngx_command_t; 19] = [
    main(ngx_string!("mesh_master"), T1, d::set_value, 0),
    main(ngx_string!("mesh_master_ca"), T1, d::set_master_ca, 0),
    main(ngx_string!("mesh_master_key"), T1, d::set_master_key, 0),
    main(ngx_string!("mesh_master_key_file"), T1, d::set_master_key, 0),
    main(ngx_string!("mesh_master_path"), NGX_CONF_TAKE2, d::set_master_path, 0),
    main(ngx_string!("mesh_rtmp_url"), T1, d::set_value, 0),
    main(ngx_string!("mesh_http_url"), T1, d::set_value, 0),
    main(
        ngx_string!("mesh_heartbeat_interval"),
        T1,
        ngx_conf_set_msec_slot,
        offset_of!(MainConf, heartbeat_interval),
    ),
    main(ngx_string!("mesh_poll_wait"), T1, ngx_conf_set_msec_slot, offset_of!(MainConf, poll_wait)),
    main(
        ngx_string!("mesh_master_timeout"),
        T1,
        ngx_conf_set_msec_slot,
        offset_of!(MainConf, master_timeout),
    ),
    main(ngx_string!("mesh_push_timeout"), T1, ngx_conf_set_msec_slot, offset_of!(MainConf, push_timeout)),
    main(
        ngx_string!("mesh_auth_pending_max"),
        T1,
        ngx_conf_set_num_slot,
        offset_of!(MainConf, auth_pending_max),
    ),
    main(
        ngx_string!("mesh_auth_pending_per_addr"),
        T1,
        ngx_conf_set_num_slot,
        offset_of!(MainConf, auth_pending_per_addr),
    ),
    main(ngx_string!("mesh_shared_zone"), T1, ngx_conf_set_size_slot, offset_of!(MainConf, zone_size)),
    main(ngx_string!("mesh_node_id"), T1, d::set_value, 0),
    main(ngx_string!("mesh_role"), T1, d::set_value, 0),
    main(ngx_string!("mesh_table_file"), T1, d::set_table_file, 0),
    command(
        ngx_string!("mesh"),
        NGX_RTMP_MAIN_CONF | NGX_RTMP_SRV_CONF | NGX_RTMP_APP_CONF | NGX_CONF_FLAG,
        ngx_conf_set_flag_slot,
        RTMP_APP,
        offset_of!(AppConf, mesh),
    ),
    ngx_command_t::empty(),
];

static RTMP_CTX: ngx_rtmp_module_t = ngx_rtmp_module_t {
    preconfiguration: None,
    postconfiguration: Some(rtmp_postconfiguration),
    create_main_conf: Some(conf::create_main_conf),
    init_main_conf: Some(conf::init_main_conf),
    create_srv_conf: None,
    merge_srv_conf: None,
    create_app_conf: Some(conf::create_app_conf),
    merge_app_conf: Some(conf::merge_app_conf),
};

/// A module object of ours: its context, its directive table, its type.
const fn module(ctx: *const c_void, commands: *mut ngx_command_t, type_: u32) -> ngx_module_t {
    ngx_module_t { ctx: ctx.cast_mut(), commands, type_: type_ as ngx_uint_t, ..ngx_module_t::default() }
}

#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut ngx_rtmp_mesh_module: ngx_module_t = ngx_module_t {
    init_module: Some(wiring::init_module),
    init_process: Some(wiring::init_process),
    exit_process: Some(wiring::exit_process),
    ..module(addr_of!(RTMP_CTX).cast(), addr_of_mut!(RTMP_COMMANDS).cast(), NGX_RTMP_MODULE)
};

const M1: u32 = NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1;

const ANY_LEVEL: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_1MORE;

static mut HTTP_COMMANDS: [ngx_command_t; 14] = [
    command(ngx_string!("mesh_media_root"), M1, http::set_path, HTTP_MAIN, 0),
    command(ngx_string!("mesh_ffmpeg"), M1, http::set_path, HTTP_MAIN, 1),
    command(ngx_string!("mesh_rtmp_source"), M1, http::set_source, HTTP_MAIN, 0),
    command(
        ngx_string!("mesh_rendition"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1 | NGX_CONF_TAKE4,
        http::set_rendition,
        HTTP_MAIN,
        0,
    ),
    command(
        ngx_string!("mesh_segment"),
        M1,
        ngx_conf_set_msec_slot,
        HTTP_MAIN,
        offset_of!(http::HttpMainConf, segment),
    ),
    command(
        ngx_string!("mesh_window"),
        M1,
        ngx_conf_set_num_slot,
        HTTP_MAIN,
        offset_of!(http::HttpMainConf, window),
    ),
    command(
        ngx_string!("mesh_transcode_idle"),
        M1,
        ngx_conf_set_msec_slot,
        HTTP_MAIN,
        offset_of!(http::HttpMainConf, idle),
    ),
    command(
        ngx_string!("mesh_manifest_wait"),
        M1,
        ngx_conf_set_msec_slot,
        HTTP_MAIN,
        offset_of!(http::HttpMainConf, wait),
    ),
    command(
        ngx_string!("mesh_manifest_wait_max"),
        M1,
        ngx_conf_set_num_slot,
        HTTP_MAIN,
        offset_of!(http::HttpMainConf, hold_max_conf),
    ),
    command(
        ngx_string!("mesh_manifest_wait_per_client"),
        M1,
        ngx_conf_set_num_slot,
        HTTP_MAIN,
        offset_of!(http::HttpMainConf, hold_per_client_conf),
    ),
    command(ngx_string!("mesh_allow_origin"), ANY_LEVEL, http::set_allow_origin, HTTP_LOC, 0),
    command(ngx_string!("mesh_media"), NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1, http::set_media, HTTP_LOC, 0),
    command(ngx_string!("mesh_status"), NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS, status::set_status, HTTP_LOC, 0),
    ngx_command_t::empty(),
];

static HTTP_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: None,
    postconfiguration: None,
    create_main_conf: Some(http::create_main_conf),
    init_main_conf: Some(http::init_main_conf),
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(http::create_loc_conf),
    merge_loc_conf: Some(http::merge_loc_conf),
};

#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_mesh_module: ngx_module_t =
    module(addr_of!(HTTP_CTX).cast(), addr_of_mut!(HTTP_COMMANDS).cast(), NGX_HTTP_MODULE);

// ngx's typed access to our http confs (`http::Module::main_conf(r)`, ...).
impl ngx::http::HttpModule for http::Module {
    fn module() -> &'static ngx_module_t {
        // SAFETY: nginx writes the module object only while loading it, before any request.
        unsafe { &*addr_of!(ngx_http_mesh_module) }
    }
}

// SAFETY: the http ctx's constructors make these types, in our slots.
unsafe impl ngx::http::HttpModuleMainConf for http::Module {
    type MainConf = http::HttpMainConf;
}

// SAFETY: as above.
unsafe impl ngx::http::HttpModuleLocationConf for http::Module {
    type LocationConf = http::HttpLocConf;
}

// The module list nginx's dlopen loader reads: what `ngx::ngx_modules!` emits, written out
// because its module count fails for more than one module in ngx 0.5.1.
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

unsafe extern "C" fn rtmp_postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
    crate::nginx::util::guard(NGX_ERROR as ngx_int_t, || {
        // SAFETY: configuration time, single-threaded; ctx_index was set by nginx before the
        // rtmp{} block was parsed.
        unsafe {
            crate::nginx::rtmp::set_ctx_index((*addr_of!(ngx_rtmp_mesh_module)).ctx_index);
            if !rtmp::hook(cf) {
                return NGX_ERROR as ngx_int_t;
            }
        }
        NGX_OK as ngx_int_t
    })
}
