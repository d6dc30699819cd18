//! `mesh_status`: what the node does, as JSON or (with `?format=prometheus`) Prometheus text.
//!
//! Private by default: it answers loopback clients only, unless nginx's own `allow` names the
//! client ([`crate::nginx::access::local_or_allowed`] says how).

use mesh_core::status::{AuthStatus, HeldStatus, Status, StreamStatus, TableStatus, TranscodeStatus};

use crate::http::{settings, HttpLocConf};
use crate::nginx::access;
use crate::nginx::directive::{directive, DUPLICATE};
use crate::nginx::ffi::*;
use crate::nginx::http::{request, RequestExt};
use crate::nginx::util::{guard, CONF_ERROR, CONF_OK};
use crate::{conf, figures, link, rtmp};
use ngx::core::Status as Rc;
use ngx::http::{HTTPStatus, Request};
use ngx::http::{HttpModuleLocationConf, NgxHttpCoreModule};

directive! {
    /// `mesh_status`: this location answers with the node's status.
    pub fn set_status(cf, _lcf: &mut HttpLocConf) {
        let Some(clcf) = NgxHttpCoreModule::location_conf_mut(&*cf) else { return CONF_ERROR };
        if clcf.handler.is_some() {
            return DUPLICATE;
        }
        clcf.handler = Some(handler);
        access::find_module((*cf).cycle);
        CONF_OK
    }
}

/// Everything `mesh_status` reports, from the live state (event loop).
fn collect(renditions: Vec<String>) -> Status {
    let node = crate::conf::current_node();
    // The node's, from every worker.
    let f = figures::node();
    Status {
        node_id: node.node_id.clone(),
        role: node.role.to_string(),
        table: {
            let (apply_us_last, apply_us_max) = conf::apply_us();
            TableStatus { version: node.table.version, age_s: conf::node_age(), apply_us_last, apply_us_max }
        },
        // The voice's links, whichever worker answers.
        master: link::links().map(|_| f.links.clone()),
        streams: f
            .streams
            .into_iter()
            .map(|s| StreamStatus {
                stream: s.stream,
                source: s.source,
                viewers: s.viewers,
                in_kbps: s.in_kbps,
            })
            .collect(),
        pushes: f.pushes,
        transcodes: f
            .transcodes
            .into_iter()
            .map(|t| TranscodeStatus {
                stream: t.stream,
                state: t.state,
                restarts: t.restarts,
                renditions: renditions.clone(),
            })
            .collect(),
        refusals: f.refusals,
        auth: {
            let (pending, unknown) = crate::auth::pending();
            AuthStatus {
                pending: pending as u64,
                pending_unknown: unknown as u64,
                suspended: rtmp::suspended() as u64,
            }
        },
        held: {
            let f = crate::http::hold_figures();
            HeldStatus {
                now: f.held,
                total: f.held_total,
                busy_worker: f.busy_worker,
                busy_client: f.busy_client,
                client_closed: f.client_closed,
            }
        },
    }
}

unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || {
        // SAFETY: nginx calls us with a live request in its content phase.
        handle(unsafe { request(r) }).0
    })
}

fn handle(r: &mut Request) -> Rc {
    if !access::local_or_allowed(r) {
        ngx::ngx_log_error!(
            NGX_LOG_ERR,
            r.log(),
            "access forbidden by mesh_status: loopback only unless an \"allow\" rule names the client"
        );
        return HTTPStatus::FORBIDDEN.into();
    }
    if !r.is_get_or_head() {
        return HTTPStatus::NOT_ALLOWED.into();
    }
    let rc = r.discard_request_body();
    if rc != Rc::NGX_OK {
        return rc;
    }
    let renditions = settings(r)
        .map(|s| s.ladder.renditions().iter().map(|x| x.name.clone()).collect())
        .unwrap_or_default();
    let status = collect(renditions);
    if r.query().split('&').any(|a| a == "format=prometheus") {
        r.respond(HTTPStatus::OK, "text/plain; version=0.0.4", &status.prometheus(), "no-store")
    } else {
        let mut body = serde_json::to_string_pretty(&status).unwrap_or_default();
        body.push('\n');
        r.respond(HTTPStatus::OK, "application/json", &body, "no-store")
    }
}
