//! `mesh_status`: what the node does, as JSON or (with `?format=prometheus`) Prometheus text.
//! Access is restricted with nginx's usual `allow` / `deny` in the same location.

use std::ffi::{c_char, c_void};

use mesh_core::status::{AuthStatus, PushStatus, Status, StreamStatus, TableStatus, TranscodeStatus};

use crate::ffi::*;
use crate::http::{respond, settings};
use crate::session::get_ctx;
use crate::util::{guard, str_bytes, CONF_ERROR, CONF_OK};
use crate::{registry, runtime, session, transcode};

pub unsafe extern "C" fn set_status(
    cf: *mut ngx_conf_t,
    _: *mut ngx_command_t,
    _: *mut c_void,
) -> *mut c_char {
    guard(CONF_ERROR, || {
        // SAFETY: the core module's loc conf of this location is in the parser's context.
        unsafe {
            let ctx = (*cf).ctx.cast::<ngx_http_conf_ctx_t>();
            let idx = (*std::ptr::addr_of!(ngx_http_core_module)).ctx_index;
            let clcf = (*(*ctx).loc_conf.add(idx)).cast::<ngx_http_core_loc_conf_t>();
            if (*clcf).handler.is_some() {
                return c"is duplicate".as_ptr().cast_mut();
            }
            (*clcf).handler = Some(handler);
            CONF_OK
        }
    })
}

/// Everything `mesh_status` reports, from the live state (event loop).
fn collect(renditions: Vec<String>) -> Status {
    let node = runtime::current_node();
    let (streams, _) = registry::figures();
    let mut pushes: Vec<PushStatus> = Vec::new();
    for (s, _) in registry::publishers() {
        // SAFETY: registered sessions are live.
        if let Some(p) = unsafe { get_ctx(s) }.and_then(|c| c.pushes.as_ref()) {
            pushes.extend(p.status());
        }
    }
    Status {
        node_id: node.node_id.clone(),
        role: node.role.to_string(),
        table: {
            let (apply_us_last, apply_us_max) = runtime::apply_us();
            TableStatus {
                version: node.table.version,
                age_s: runtime::node_age(),
                apply_us_last,
                apply_us_max,
            }
        },
        master: runtime::master_links(),
        streams: streams
            .into_iter()
            .map(|s| StreamStatus {
                stream: s.stream,
                source: s.source,
                viewers: s.viewers,
                in_kbps: s.in_kbps,
            })
            .collect(),
        pushes,
        transcodes: transcode::figures()
            .into_iter()
            .map(|t| TranscodeStatus {
                stream: t.stream,
                state: t.state,
                restarts: t.restarts,
                renditions: renditions.clone(),
            })
            .collect(),
        refusals: session::refusals(),
        auth: {
            let (pending, unknown) = crate::auth::pending();
            AuthStatus {
                pending: pending as u64,
                pending_unknown: unknown as u64,
                suspended: crate::waiting::len() as u64,
            }
        },
    }
}

unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || {
        // SAFETY: nginx calls us with a live request in its content phase.
        unsafe {
            if (*r).method as u32 & (NGX_HTTP_GET | NGX_HTTP_HEAD) == 0 {
                return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
            }
            let rc = ngx_http_discard_request_body(r);
            if rc != NGX_OK as ngx_int_t {
                return rc;
            }
            let renditions = settings(r)
                .map(|s| s.ladder.renditions().iter().map(|x| x.name.clone()).collect())
                .unwrap_or_default();
            let status = collect(renditions);
            let args = String::from_utf8_lossy(str_bytes(&(*r).args)).into_owned();
            if args.split('&').any(|a| a == "format=prometheus") {
                respond(r, NGX_HTTP_OK, "text/plain; version=0.0.4", &status.prometheus(), "no-store")
            } else {
                let mut body = serde_json::to_string_pretty(&status).unwrap_or_default();
                body.push('\n');
                respond(r, NGX_HTTP_OK, "application/json", &body, "no-store")
            }
        }
    })
}
