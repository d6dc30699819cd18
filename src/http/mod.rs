//! The edge's HTTP side: HLS and DASH for viewers, from on-demand transcodes.
//!
//! http{} main level: `mesh_media_root`, `mesh_ffmpeg`, `mesh_rendition` (the ABR ladder),
//! `mesh_rtmp_source`, `mesh_segment`, `mesh_window`, `mesh_transcode_idle`,
//! `mesh_manifest_wait`, `mesh_manifest_wait_max`, `mesh_manifest_wait_per_client`.
//! http, server or location: `mesh_allow_origin`. location: `mesh_media hls | dash;`.
//!
//! * [`media`]: the handler (a token on every request);
//! * [`token`]: the one check of a viewer token; [`verified`]: the tokens it verified, remembered;
//! * [`hold`]: entry-manifest requests held until the manifest exists, bounded;
//! * [`playlist`]: media playlists rewritten once per version, for every viewer's token;
//! * [`serve`]: manifests from a stream's directory (no symlinks); segments by nginx's static
//!   module, which `mesh_media` sets up to serve the location from `mesh_media_root`;
//! * [`refusal`]: why a request gets no media, as the viewer is told;
//! * [`cors`]: the `mesh_allow_origin` directive and its headers.
//!
//! Our confs are reached through ngx's typed accessors ([`Module`]'s `HttpModuleMainConf` and
//! `HttpModuleLocationConf`, implemented where the module object lives, `crate::module`).

mod cors;
mod hold;
mod media;
mod playlist;
mod refusal;
mod serve;
mod token;
mod verified;

use std::ffi::{c_char, c_void};
use std::path::PathBuf;
use std::ptr::null_mut;

use mesh_core::hold::{DEFAULT_HOLD_MAX, DEFAULT_HOLD_PER_CLIENT};
use mesh_core::media::{parse_rendition, Format, Ladder, Rendition};
use ngx::http::{
    HttpModuleLocationConf, HttpModuleMainConf, Merge, MergeConfigError, NgxHttpCoreModule, Request,
};
use ngx::{ngx_conf_log_error, ngx_string};

use crate::nginx::directive::{arg, args, directive, set_once, DUPLICATE};
use crate::nginx::ffi::*;
use crate::nginx::util::{full_name, guard, pool_new, str_bytes, CONF_ERROR, CONF_OK};
use crate::transcode::Settings;

pub use cors::set_allow_origin;
pub use hold::figures as hold_figures;

const UNSET_MSEC: ngx_msec_t = ngx_msec_t::MAX;

/// ngx_http_mesh_module as ngx's HTTP module traits see it: the typed way to our confs of a
/// request or of the configuration being read.
pub struct Module;

/// http{} main configuration.
pub struct HttpMainConf {
    root: Option<String>,
    ffmpeg: Option<String>,
    source: Option<String>,
    renditions: Vec<Rendition>,
    pub segment: ngx_msec_t,
    pub window: ngx_int_t,
    pub idle: ngx_msec_t,
    pub wait: ngx_msec_t,
    pub hold_max_conf: ngx_int_t,
    pub hold_per_client_conf: ngx_int_t,
    hold_max: usize,
    hold_per_client: usize,
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
            hold_max_conf: NGX_CONF_UNSET as ngx_int_t,
            hold_per_client_conf: NGX_CONF_UNSET as ngx_int_t,
            hold_max: DEFAULT_HOLD_MAX,
            hold_per_client: DEFAULT_HOLD_PER_CLIENT,
            settings: None,
        }
    }
}

/// location configuration.
#[derive(Default)]
pub struct HttpLocConf {
    format: Option<Format>,
    prefix: String,
    /// `mesh_allow_origin` (None: unset here, inherited).
    origins: Option<Vec<String>>,
}

impl Merge for HttpLocConf {
    fn merge(&mut self, prev: &HttpLocConf) -> Result<(), MergeConfigError> {
        if self.origins.is_none() {
            self.origins.clone_from(&prev.origins);
        }
        Ok(())
    }
}

// The conf constructors and the location merge stay hand-written: ngx 0.5.1's default
// `HttpModule::create_*_conf` allocate with `Pool::allocate`, which writes through the null
// pointer an exhausted pool returns (we use `pool_new`), and `merge_loc_conf` needs the
// configuration (`cf`, which `Merge::merge` is not given) to warn about verbose logs and to
// hand the location to the static module.

pub unsafe extern "C" fn create_main_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: the configuration pool outlives the cycle's use of the conf.
    guard(null_mut(), || unsafe { pool_new((*cf).pool, HttpMainConf::default()).cast() })
}

pub unsafe extern "C" fn create_loc_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: as above.
    guard(null_mut(), || unsafe { pool_new((*cf).pool, HttpLocConf::default()).cast() })
}

directive! {
    /// `mesh_media_root` (offset 0) and `mesh_ffmpeg` (offset 1): a path, relative to the prefix.
    pub fn set_path(cf, cmd, hcf: &mut HttpMainConf) {
        let slot = if (*cmd).offset == 0 { &mut hcf.root } else { &mut hcf.ffmpeg };
        if slot.is_some() {
            return DUPLICATE;
        }
        let name = args(cf)[1];
        // A bare program name is looked up in PATH when ffmpeg starts.
        let is_program = (*cmd).offset == 1 && !str_bytes(&name).contains(&b'/');
        let value = if is_program { Some(arg(cf, 1)) } else { full_name(cf, name, false) };
        let Some(value) = value else { return CONF_ERROR };
        *slot = Some(value);
        CONF_OK
    }
}

directive! {
    pub fn set_source(cf, hcf: &mut HttpMainConf) {
        set_once(cf, &mut hcf.source, |v| match mesh_core::table::parse_node_url(v) {
            Ok(_) => Ok(v.to_string()),
            Err(_) => Err("it must be rtmp://host[:port]/app".into()),
        })
    }
}

directive! {
    pub fn set_rendition(cf, hcf: &mut HttpMainConf) {
        let words: Vec<String> = (1..args(cf).len()).map(|i| arg(cf, i)).collect();
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
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
}

directive! {
    pub fn set_media(cf, lcf: &mut HttpLocConf) {
        let set = set_once(cf, &mut lcf.format, |v| match v {
            "hls" => Ok(Format::Hls),
            "dash" => Ok(Format::Dash),
            _ => Err("it must be \"hls\" or \"dash\"".into()),
        });
        if set != CONF_OK {
            return set;
        }
        let Some(clcf) = NgxHttpCoreModule::location_conf_mut(&*cf) else { return CONF_ERROR };
        // Its files are served by prefix (see `merge_loc_conf`): a regex has none.
        if !clcf.regex.is_null() || clcf.named() == 1 {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "\"mesh_media\" cannot be used in a regex or named location"
            );
            return CONF_ERROR;
        }
        lcf.prefix = String::from_utf8_lossy(str_bytes(&clcf.name)).into_owned();
        if !lcf.prefix.ends_with('/') {
            lcf.prefix.push('/');
        }
        clcf.handler = Some(media::media_handler);
        CONF_OK
    }
}

pub unsafe extern "C" fn merge_loc_conf(
    cf: *mut ngx_conf_t,
    parent: *mut c_void,
    child: *mut c_void,
) -> *mut c_char {
    guard(CONF_ERROR, || {
        // SAFETY: nginx passes our loc confs of a parent and a child; while a location merges,
        // the context's loc_conf is that location's, and the core module (merged before us)
        // has given it its error logs and its root; our main conf is initialised.
        unsafe {
            let (p, c) = (&*parent.cast::<HttpLocConf>(), &mut *child.cast::<HttpLocConf>());
            if c.merge(p).is_err() {
                return CONF_ERROR;
            }
            if c.format.is_none() {
                return CONF_OK;
            }
            if let Some(clcf) = NgxHttpCoreModule::location_conf(&*cf) {
                crate::conf::warn_verbose_logs(
                    cf,
                    clcf.error_log,
                    "\"mesh_media\"",
                    "request lines (viewer tokens) are logged at this level",
                );
            }
            let root = Module::main_conf(&*cf).and_then(|m| m.settings.as_ref()).map(|s| &s.root);
            let Some(root) = root.and_then(|r| r.to_str()) else { return CONF_ERROR };
            if !crate::nginx::http::serve_from(cf, root) {
                ngx_conf_log_error!(
                    NGX_LOG_EMERG,
                    cf,
                    "\"mesh_media\" cannot be used in a regex or named location"
                );
                return CONF_ERROR;
            }
            CONF_OK
        }
    })
}

pub unsafe extern "C" fn init_main_conf(cf: *mut ngx_conf_t, conf: *mut c_void) -> *mut c_char {
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
            let num =
                |v: ngx_int_t, d: usize| if v == NGX_CONF_UNSET as ngx_int_t { d } else { v.max(0) as usize };
            hcf.hold_max = num(hcf.hold_max_conf, DEFAULT_HOLD_MAX);
            hcf.hold_per_client = num(hcf.hold_per_client_conf, DEFAULT_HOLD_PER_CLIENT);
            CONF_OK
        }
    })
}

/// The transcode settings of the http{} block a request belongs to.
///
/// # Safety
/// `r` is a live request.
pub fn settings(r: &Request) -> Option<&'static Settings> {
    Module::main_conf(r)?.settings.as_ref()
}
