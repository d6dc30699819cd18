//! The edge's HTTP side: HLS and DASH for viewers, from on-demand transcodes.
//!
//! http{} main level: `mesh_media_root`, `mesh_ffmpeg`, `mesh_rendition` (the ABR ladder),
//! `mesh_rtmp_source`, `mesh_segment`, `mesh_window`, `mesh_transcode_idle`,
//! `mesh_manifest_wait`. location: `mesh_media hls | dash;`.
//!
//! An entry manifest request (`<location><stream>/master.m3u8`, `.../manifest.mpd`) checks the
//! viewer token, then: stream not here → a route request (relay role); here but not transcoding
//! → the transcode starts; either way the request is held on an nginx timer (never a blocking
//! wait) until the manifest exists, at most `mesh_manifest_wait`, then a short 404/503/504.
//! Segments and media playlists are served from the transcode's directory with their MIME type
//! and cache policy (sendfile as nginx's static files).

use std::ffi::{c_char, c_void};
use std::mem::offset_of;
use std::os::fd::IntoRawFd;
use std::path::PathBuf;
use std::ptr::{addr_of, addr_of_mut, null_mut};

use mesh_core::args::MeshArgs;
use mesh_core::media::{parse_media_path, parse_rendition, Format, Ladder, MediaError, MediaFile, Rendition};
use mesh_core::name::for_log;
use mesh_core::wire::{Action, AuthRequest};
use ngx::{ngx_conf_log_error, ngx_string};

use crate::auth::{self, Waiter};
use crate::ffi::*;
use crate::transcode::{self, Settings, State};
use crate::util::{exiting, full_name, guard, pool_new, str_bytes, CONF_ERROR, CONF_OK};
use crate::{registry, route, runtime};

const UNSET_MSEC: ngx_msec_t = ngx_msec_t::MAX;
const POLL_MS: ngx_msec_t = 100;

/// http{} main configuration.
pub struct HttpMainConf {
    root: Option<String>,
    ffmpeg: Option<String>,
    source: Option<String>,
    renditions: Vec<Rendition>,
    segment: ngx_msec_t,
    window: ngx_int_t,
    idle: ngx_msec_t,
    wait: ngx_msec_t,
    settings: Option<Settings>,
}

impl Default for HttpMainConf {
    fn default() -> HttpMainConf {
        HttpMainConf {
            root: None,
            ffmpeg: None,
            source: None,
            renditions: Vec::new(),
            segment: UNSET_MSEC,
            window: NGX_CONF_UNSET as ngx_int_t,
            idle: UNSET_MSEC,
            wait: UNSET_MSEC,
            settings: None,
        }
    }
}

/// location configuration.
#[derive(Default)]
pub struct HttpLocConf {
    format: Option<Format>,
    prefix: String,
}

#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_mesh_module: ngx_module_t = ngx_module_t {
    ctx: addr_of!(HTTP_CTX) as *mut c_void,
    commands: addr_of_mut!(HTTP_COMMANDS) as *mut ngx_command_t,
    type_: NGX_HTTP_MODULE as ngx_uint_t,
    ..ngx_module_t::default()
};

static HTTP_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: None,
    postconfiguration: None,
    create_main_conf: Some(create_main_conf),
    init_main_conf: Some(init_main_conf),
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(create_loc_conf),
    merge_loc_conf: None,
};

const MAIN: ngx_uint_t = offset_of!(ngx_http_conf_ctx_t, main_conf) as ngx_uint_t;
const LOC: ngx_uint_t = offset_of!(ngx_http_conf_ctx_t, loc_conf) as ngx_uint_t;
type SetFn = unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char;

const fn cmd(name: ngx_str_t, type_: u32, set: SetFn, conf: ngx_uint_t, offset: usize) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: type_ as ngx_uint_t,
        set: Some(set),
        conf,
        offset: offset as ngx_uint_t,
        post: null_mut(),
    }
}

const M1: u32 = NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1;

static mut HTTP_COMMANDS: [ngx_command_t; 11] = [
    cmd(ngx_string!("mesh_media_root"), M1, set_path, MAIN, 0),
    cmd(ngx_string!("mesh_ffmpeg"), M1, set_path, MAIN, 1),
    cmd(ngx_string!("mesh_rtmp_source"), M1, set_source, MAIN, 0),
    cmd(
        ngx_string!("mesh_rendition"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1 | NGX_CONF_TAKE4,
        set_rendition,
        MAIN,
        0,
    ),
    cmd(ngx_string!("mesh_segment"), M1, ngx_conf_set_msec_slot, MAIN, offset_of!(HttpMainConf, segment)),
    cmd(ngx_string!("mesh_window"), M1, ngx_conf_set_num_slot, MAIN, offset_of!(HttpMainConf, window)),
    cmd(ngx_string!("mesh_transcode_idle"), M1, ngx_conf_set_msec_slot, MAIN, offset_of!(HttpMainConf, idle)),
    cmd(ngx_string!("mesh_manifest_wait"), M1, ngx_conf_set_msec_slot, MAIN, offset_of!(HttpMainConf, wait)),
    cmd(ngx_string!("mesh_media"), NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1, set_media, LOC, 0),
    cmd(ngx_string!("mesh_status"), NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS, crate::status::set_status, LOC, 0),
    ngx_command_t::empty(),
];

/// # Safety
/// `cf` is the configuration being parsed.
unsafe fn arg(cf: *mut ngx_conf_t, i: usize) -> String {
    // SAFETY: the parser holds the directive's arguments.
    unsafe { String::from_utf8_lossy(str_bytes(&(*(*cf).args).as_slice::<ngx_str_t>()[i])).into_owned() }
}

unsafe extern "C" fn create_main_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: the configuration pool outlives the cycle's use of the conf.
    guard(null_mut(), || unsafe { pool_new((*cf).pool, HttpMainConf::default()).cast() })
}

unsafe extern "C" fn create_loc_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: as above.
    guard(null_mut(), || unsafe { pool_new((*cf).pool, HttpLocConf::default()).cast() })
}

/// `mesh_media_root` (offset 0) and `mesh_ffmpeg` (offset 1): a path, relative to the prefix.
unsafe extern "C" fn set_path(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard(CONF_ERROR, || {
        // SAFETY: the parser calls us with our main conf and the directive's argument.
        unsafe {
            let hcf = &mut *conf.cast::<HttpMainConf>();
            let slot = if (*cmd).offset == 0 { &mut hcf.root } else { &mut hcf.ffmpeg };
            if slot.is_some() {
                return c"is duplicate".as_ptr().cast_mut();
            }
            let name = (*(*cf).args).as_slice::<ngx_str_t>()[1];
            // A bare program name is looked up in PATH when ffmpeg starts.
            let is_program = (*cmd).offset == 1 && !str_bytes(&name).contains(&b'/');
            let value = if is_program { Some(arg(cf, 1)) } else { full_name(cf, name, false) };
            let Some(value) = value else { return CONF_ERROR };
            *slot = Some(value);
            CONF_OK
        }
    })
}

unsafe extern "C" fn set_source(
    cf: *mut ngx_conf_t,
    _: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard(CONF_ERROR, || {
        // SAFETY: the parser calls us with our main conf and the directive's argument.
        unsafe {
            let hcf = &mut *conf.cast::<HttpMainConf>();
            if hcf.source.is_some() {
                return c"is duplicate".as_ptr().cast_mut();
            }
            let v = arg(cf, 1);
            if mesh_core::table::parse_node_url(&v).is_err() {
                ngx_conf_log_error!(
                    NGX_LOG_EMERG,
                    cf,
                    "invalid value \"{}\" in \"mesh_rtmp_source\" directive, it must be rtmp://host[:port]/app",
                    for_log(&v)
                );
                return CONF_ERROR;
            }
            hcf.source = Some(v);
            CONF_OK
        }
    })
}

unsafe extern "C" fn set_rendition(
    cf: *mut ngx_conf_t,
    _: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard(CONF_ERROR, || {
        // SAFETY: the parser calls us with our main conf and the directive's arguments.
        unsafe {
            let hcf = &mut *conf.cast::<HttpMainConf>();
            let n = (*(*cf).args).nelts;
            let args: Vec<String> = (1..n).map(|i| arg(cf, i)).collect();
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            match parse_rendition(&refs) {
                Ok(r) => {
                    hcf.renditions.push(r);
                    CONF_OK
                }
                Err(e) => {
                    ngx_conf_log_error!(NGX_LOG_EMERG, cf, "invalid \"mesh_rendition\" directive: {}", e);
                    CONF_ERROR
                }
            }
        }
    })
}

unsafe extern "C" fn set_media(cf: *mut ngx_conf_t, _: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    guard(CONF_ERROR, || {
        // SAFETY: the parser calls us with our loc conf; the core module's loc conf of this
        // location is in the same context.
        unsafe {
            let lcf = &mut *conf.cast::<HttpLocConf>();
            if lcf.format.is_some() {
                return c"is duplicate".as_ptr().cast_mut();
            }
            let v = arg(cf, 1);
            lcf.format = match v.as_str() {
                "hls" => Some(Format::Hls),
                "dash" => Some(Format::Dash),
                _ => {
                    ngx_conf_log_error!(
                        NGX_LOG_EMERG,
                        cf,
                        "invalid value \"{}\" in \"mesh_media\" directive, it must be \"hls\" or \"dash\"",
                        for_log(&v)
                    );
                    return CONF_ERROR;
                }
            };
            let ctx = (*cf).ctx.cast::<ngx_http_conf_ctx_t>();
            let clcf = (*(*ctx).loc_conf.add((*addr_of!(ngx_http_core_module)).ctx_index))
                .cast::<ngx_http_core_loc_conf_t>();
            lcf.prefix = String::from_utf8_lossy(str_bytes(&(*clcf).name)).into_owned();
            if !lcf.prefix.ends_with('/') {
                lcf.prefix.push('/');
            }
            (*clcf).handler = Some(media_handler);
            CONF_OK
        }
    })
}

unsafe extern "C" fn init_main_conf(cf: *mut ngx_conf_t, conf: *mut c_void) -> *mut c_char {
    guard(CONF_ERROR, || {
        // SAFETY: nginx passes back our main conf.
        unsafe {
            let hcf = &mut *conf.cast::<HttpMainConf>();
            let root = match hcf.root.clone() {
                Some(r) => r,
                None => match full_name(cf, ngx_string!("mesh_media"), false) {
                    Some(r) => r,
                    None => return CONF_ERROR,
                },
            };
            let ladder = if hcf.renditions.is_empty() {
                Ladder::source_only()
            } else {
                match Ladder::new(hcf.renditions.clone()) {
                    Ok(l) => l,
                    Err(e) => {
                        ngx_conf_log_error!(NGX_LOG_EMERG, cf, "invalid \"mesh_rendition\" ladder: {}", e);
                        return CONF_ERROR;
                    }
                }
            };
            let msec = |v: ngx_msec_t, d: ngx_msec_t| if v == UNSET_MSEC { d } else { v };
            let window =
                if hcf.window == NGX_CONF_UNSET as ngx_int_t { 6 } else { hcf.window.clamp(2, 100) as u32 };
            hcf.settings = Some(Settings {
                ffmpeg: hcf.ffmpeg.clone().unwrap_or_else(|| "/usr/bin/ffmpeg".into()),
                root: PathBuf::from(root),
                source: hcf.source.clone().unwrap_or_else(|| "rtmp://127.0.0.1:1935/live".into()),
                ladder,
                segment_s: msec(hcf.segment, 2000) as f64 / 1000.0,
                window,
                idle_s: (msec(hcf.idle, 30_000) / 1000).max(1) as u64,
            });
            hcf.wait = msec(hcf.wait, 20_000);
            CONF_OK
        }
    })
}

/// What a held manifest request is waiting for, and what it will get.
enum Step {
    Serve(PathBuf),
    Wait,
    Fail(u32, String),
}

/// A manifest request held on a timer (in the request's pool: dropped with it).
struct Hold {
    r: *mut ngx_http_request_t,
    stream: String,
    file: MediaFile,
    credential: Option<String>,
    deadline: ngx_msec_t,
    ev: ngx_event_t,
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.ev.timer_set() == 1 {
            // SAFETY: our timer, deleted before its memory goes.
            unsafe { ngx_del_timer(&mut self.ev) };
        }
    }
}

/// The transcode settings of the http{} block a request belongs to.
///
/// # Safety
/// `r` is a live request.
pub unsafe fn settings<'a>(r: *mut ngx_http_request_t) -> Option<&'a Settings> {
    // SAFETY: as the caller guarantees.
    unsafe { confs(r).0.settings.as_ref() }
}

/// # Safety
/// `r` is a live request of a location with `mesh_media`.
unsafe fn confs<'a>(r: *mut ngx_http_request_t) -> (&'a HttpMainConf, &'a HttpLocConf) {
    // SAFETY: our module's slots in the request's conf arrays.
    unsafe {
        let idx = (*addr_of!(ngx_http_mesh_module)).ctx_index;
        (
            &*(*(*r).main_conf.add(idx)).cast::<HttpMainConf>(),
            &*(*(*r).loc_conf.add(idx)).cast::<HttpLocConf>(),
        )
    }
}

unsafe extern "C" fn media_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || {
        // SAFETY: nginx calls us with a live request in its content phase.
        unsafe {
            let method = (*r).method as u32;
            if method & (NGX_HTTP_GET | NGX_HTTP_HEAD) == 0 {
                return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
            }
            let rc = ngx_http_discard_request_body(r);
            if rc != NGX_OK as ngx_int_t {
                return rc;
            }
            let (hcf, lcf) = confs(r);
            let (Some(settings), Some(format)) = (&hcf.settings, lcf.format) else {
                return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
            };
            let uri = String::from_utf8_lossy(str_bytes(&(*r).uri)).into_owned();
            let (stream, file) = match parse_media_path(&lcf.prefix, &uri, format) {
                Ok((s, f)) => (s.to_string(), f),
                Err(e) => return text(r, NGX_HTTP_NOT_FOUND, &e.to_string()),
            };
            let path = settings.root.join(&stream).join(&file.name);
            if !file.entry {
                // Playlists and segments: only from a running transcode; they keep it wanted.
                if !transcode::exists(&stream) {
                    return text(r, NGX_HTTP_NOT_FOUND, &MediaError::UnknownFile.to_string());
                }
                transcode::touch(&stream);
                return serve(r, &path, &file, settings.segment_s);
            }
            let args = String::from_utf8_lossy(str_bytes(&(*r).args)).into_owned();
            let credential = MeshArgs::parse(&args).token.map(str::to_string);
            let hold = Hold {
                r,
                stream,
                file,
                credential,
                deadline: ngx_current_msec + hcf.wait,
                ev: std::mem::zeroed(),
            };
            match step(&hold, true) {
                Step::Serve(p) => serve(r, &p, &hold.file, settings.segment_s),
                Step::Fail(status, why) => text(r, status, &why),
                Step::Wait => {
                    let h = pool_new((*r).pool, hold);
                    if h.is_null() {
                        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
                    }
                    (*h).ev.handler = Some(on_hold);
                    (*h).ev.data = h.cast();
                    (*h).ev.log = (*(*r).connection).log;
                    ngx_add_timer(&mut (*h).ev, POLL_MS);
                    let main = (*r).main;
                    (*main).set_count((*main).count() + 1);
                    NGX_DONE as ngx_int_t
                }
            }
        }
    })
}

/// One look at a manifest request's conditions: token, role, stream here, transcode, file.
///
/// # Safety
/// `h.r` is live.
unsafe fn step(h: &Hold, first: bool) -> Step {
    // SAFETY: live request.
    unsafe {
        let r = h.r;
        let (hcf, _) = confs(r);
        let Some(settings) = &hcf.settings else {
            return Step::Fail(NGX_HTTP_INTERNAL_SERVER_ERROR, "no settings".into());
        };
        // A worker shutting down starts nothing and holds nobody: nginx waits for held
        // requests before it exits.
        if exiting() {
            return Step::Fail(NGX_HTTP_SERVICE_UNAVAILABLE, "node shutting down".into());
        }
        let node = runtime::current_node();
        if !node.role.serves_viewers() {
            return Step::Fail(NGX_HTTP_NOT_FOUND, format!("streams are not served by a {} node", node.role));
        }
        // The viewer's token (or, with a master and no secret, the auth endpoint).
        match node.table.checks_viewer_tokens() {
            true => {
                let Some(token) = &h.credential else {
                    return Step::Fail(NGX_HTTP_FORBIDDEN, "no token".into());
                };
                if let Err(e) = node.table.verify_viewer(&h.stream, token, crate::session::now()) {
                    return Step::Fail(NGX_HTTP_FORBIDDEN, mesh_core::admission::refusal(e).as_str().into());
                }
            }
            false if runtime::has_master() => {
                let question = auth::Question::new(Action::Play, &h.stream, h.credential.as_deref());
                match auth::cached(&question, crate::session::now()) {
                    Some(a) if a.allow => {}
                    Some(a) => return Step::Fail(NGX_HTTP_FORBIDDEN, format!("auth: {}", a.reason)),
                    None => {
                        if first {
                            let addr = String::from_utf8_lossy(str_bytes(&(*(*r).connection).addr_text))
                                .into_owned();
                            let req = AuthRequest {
                                node_id: node.node_id.clone(),
                                action: Action::Play,
                                stream: h.stream.clone(),
                                key: None,
                                token: h.credential.clone(),
                                addr,
                            };
                            let _ = auth::ask(Waiter::Cache, req);
                        }
                        return Step::Wait;
                    }
                }
            }
            false => {}
        }
        if !registry::has_publisher(&h.stream) {
            route::wanted(&node, &h.stream);
            return Step::Wait;
        }
        match transcode::want(settings, &h.stream, &node.node_id) {
            State::Failed(why) => {
                Step::Fail(NGX_HTTP_SERVICE_UNAVAILABLE, format!("transcoder unavailable: {why}"))
            }
            _ => {
                let path = settings.root.join(&h.stream).join(&h.file.name);
                if entry_ready(&path) {
                    Step::Serve(path)
                } else {
                    Step::Wait
                }
            }
        }
    }
}

/// Is an entry manifest there, with everything it points a player at first? ffmpeg writes
/// `master.m3u8` before the media playlists and the MPD before every init segment: serving the
/// entry earlier sends the player to a 404.
fn entry_ready(path: &std::path::Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else { return false };
    let dir = path.parent().unwrap_or(path);
    let exists = |name: &str| dir.join(name).is_file();
    if path.extension().is_some_and(|e| e == "m3u8") {
        // media playlists: the URI lines, and the URI="…" of EXT-X-MEDIA
        let uris = text.lines().filter_map(|l| {
            let l = l.trim();
            match l.strip_prefix('#') {
                None if !l.is_empty() => Some(l.to_string()),
                None => None,
                Some(tag) => {
                    tag.split_once("URI=\"").and_then(|(_, r)| r.split_once('"')).map(|(u, _)| u.to_string())
                }
            }
        });
        uris.into_iter().all(|u| exists(&u))
    } else {
        // one init segment per representation
        let reps = text.matches("<Representation ").count();
        reps > 0 && (0..reps).all(|i| exists(&format!("init-{i}.m4s")))
    }
}

unsafe extern "C" fn on_hold(ev: *mut ngx_event_t) {
    guard((), || {
        // SAFETY: ev.data is the Hold in the request's pool; the request is alive while we
        // hold its count.
        unsafe {
            let h = &mut *(*ev).data.cast::<Hold>();
            let r = h.r;
            let rc = match step(h, false) {
                Step::Serve(p) => {
                    let (hcf, _) = confs(r);
                    let seg = hcf.settings.as_ref().map_or(2.0, |s| s.segment_s);
                    serve(r, &p, &h.file, seg)
                }
                Step::Fail(status, why) => text(r, status, &why),
                Step::Wait if ngx_current_msec >= h.deadline => {
                    if registry::has_publisher(&h.stream) {
                        text(r, NGX_HTTP_GATEWAY_TIME_OUT, "manifest not ready")
                    } else {
                        text(r, NGX_HTTP_NOT_FOUND, "stream not live here")
                    }
                }
                Step::Wait => {
                    ngx_add_timer(ev, POLL_MS);
                    return;
                }
            };
            // The request (and this Hold with it) may be gone after this.
            ngx_http_finalize_request(r, rc);
        }
    })
}

/// A short text response: the status and one line saying why.
///
/// # Safety
/// `r` is live.
unsafe fn text(r: *mut ngx_http_request_t, status: u32, why: &str) -> ngx_int_t {
    // SAFETY: as the caller guarantees.
    unsafe { respond(r, status, "text/plain", &format!("{why}\n"), "no-store") }
}

/// A response with a body made here.
///
/// # Safety
/// `r` is live.
pub unsafe fn respond(
    r: *mut ngx_http_request_t,
    status: u32,
    mime: &'static str,
    body: &str,
    cache: &str,
) -> ngx_int_t {
    // SAFETY: live request; the body is copied into its pool.
    unsafe {
        (*r).headers_out.status = status as ngx_uint_t;
        (*r).headers_out.content_length_n = body.len() as off_t;
        set_content_type(r, mime);
        set_header(r, "Cache-Control", cache);
        let rc = ngx_http_send_header(r);
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || (*r).header_only() == 1 {
            return rc;
        }
        let b = ngx_create_temp_buf((*r).pool, body.len().max(1));
        if b.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        std::ptr::copy_nonoverlapping(body.as_ptr(), (*b).last, body.len());
        (*b).last = (*b).last.add(body.len());
        (*b).set_last_buf(if (*r).main == r { 1 } else { 0 });
        (*b).set_last_in_chain(1);
        let mut out = ngx_chain_t { buf: b, next: null_mut() };
        ngx_http_output_filter(r, &mut out)
    }
}

/// # Safety
/// `r` is live.
unsafe fn set_content_type(r: *mut ngx_http_request_t, mime: &'static str) {
    // SAFETY: a static string outlives the request.
    unsafe {
        (*r).headers_out.content_type_len = mime.len();
        (*r).headers_out.content_type = ngx_str_t { len: mime.len(), data: mime.as_ptr().cast_mut() };
        (*r).headers_out.content_type_lowcase = null_mut();
    }
}

/// # Safety
/// `r` is live.
unsafe fn set_header(r: *mut ngx_http_request_t, name: &str, value: &str) {
    // SAFETY: live request; strings copied into its pool.
    unsafe {
        let h = ngx_list_push(&mut (*r).headers_out.headers).cast::<ngx_table_elt_t>();
        if h.is_null() {
            return;
        }
        let pool = (*r).pool;
        (*h).hash = 1;
        (*h).key = ngx_str_t::from_bytes(pool, name.as_bytes()).unwrap_or(ngx_str_t::empty());
        (*h).value = ngx_str_t::from_bytes(pool, value.as_bytes()).unwrap_or(ngx_str_t::empty());
        (*h).lowcase_key = null_mut();
    }
}

/// Serve a media file with its type and cache policy, from disk as nginx's static files are.
///
/// # Safety
/// `r` is live.
unsafe fn serve(
    r: *mut ngx_http_request_t,
    path: &std::path::Path,
    file: &MediaFile,
    segment_s: f64,
) -> ngx_int_t {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        // SAFETY: live request.
        Err(_) => return unsafe { text(r, NGX_HTTP_NOT_FOUND, "no such media file") },
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    // SAFETY: live request; the descriptor is handed to a pool cleanup that closes it.
    unsafe {
        let pool = (*r).pool;
        let cln = ngx_pool_cleanup_add(pool, std::mem::size_of::<ngx_pool_cleanup_file_t>());
        if cln.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        let fd = f.into_raw_fd();
        let name =
            ngx_str_t::from_bytes(pool, path.as_os_str().as_encoded_bytes()).unwrap_or(ngx_str_t::empty());
        let cf = (*cln).data.cast::<ngx_pool_cleanup_file_t>();
        (*cf).fd = fd;
        (*cf).name = name.data;
        (*cf).log = (*(*r).connection).log;
        (*cln).handler = Some(ngx_pool_cleanup_file);

        (*r).headers_out.status = NGX_HTTP_OK as ngx_uint_t;
        (*r).headers_out.content_length_n = len as off_t;
        set_content_type(r, file.mime);
        set_header(r, "Cache-Control", &file.cache_control(segment_s));
        set_header(r, "Access-Control-Allow-Origin", "*");
        let rc = ngx_http_send_header(r);
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || (*r).header_only() == 1 {
            return rc;
        }
        let b = ngx_pcalloc(pool, std::mem::size_of::<ngx_buf_t>()).cast::<ngx_buf_t>();
        let nf = ngx_pcalloc(pool, std::mem::size_of::<ngx_file_t>()).cast::<ngx_file_t>();
        if b.is_null() || nf.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        (*nf).fd = fd;
        (*nf).name = name;
        (*nf).log = (*(*r).connection).log;
        (*b).file = nf;
        (*b).file_pos = 0;
        (*b).file_last = len as off_t;
        (*b).set_in_file(if len > 0 { 1 } else { 0 });
        (*b).set_last_buf(if (*r).main == r { 1 } else { 0 });
        (*b).set_last_in_chain(1);
        let mut out = ngx_chain_t { buf: b, next: null_mut() };
        ngx_http_output_filter(r, &mut out)
    }
}
