//! A viewer asking a relay node for a stream it does not have makes the node ask the master to
//! route the stream here: one request per stream (not per viewer), again only when the last
//! answer no longer stands (routed: 10 s, unknown, denied or failed: 3 s; see
//! [`mesh_core::hold`]) or the question was lost. The state of each stream
//! asked for — pending, routed, unknown, denied, failed, with its time — is kept in a table of
//! bounded size ([`ROUTES_MAX`]; when it is full of questions in flight, nothing more is
//! asked). Held HTTP requests read it: they wait while the question is pending or the stream
//! is routed, and end at once when the master does not know the stream. RTMP viewers wait
//! (nginx-rtmp keeps idle streams) and play when the push arrives.

use std::cell::RefCell;

use mesh_agent::agent::Call;
use mesh_agent::client::CallError;
use mesh_core::hold::{Route, Routes, Want, ROUTES_MAX};
use mesh_core::node::Node;
use mesh_core::wire::{RouteReply, RouteRequest, RouteStatus};
use mesh_core::Role;

use crate::nginx::ffi::*;
use crate::nginx::util::now;
use crate::{link, registry};

thread_local! {
    static ROUTES: RefCell<Routes> = RefCell::new(Routes::new(ROUTES_MAX));
}

/// Where a stream a viewer wants here stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Published here.
    Here,
    /// No master to ask, or not a relay: it comes only if published or pushed here.
    NotRoutable,
    /// Asked, no answer yet; or routed here, the push on its way.
    Coming,
    /// The master does not know it, or will not route it here.
    Unknown,
    Denied,
    /// The question failed, or could not be asked (table full of questions in flight).
    Failed,
}

/// A viewer wants `stream` here: ask the master when due, and say where it stands.
pub fn wanted(node: &Node, stream: &str) -> Standing {
    if registry::has_publisher(stream) {
        return Standing::Here;
    }
    if node.role != Role::Relay || !link::has_master() {
        return Standing::NotRoutable;
    }
    let now = now();
    let want = ROUTES.with_borrow_mut(|r| r.want(stream, now));
    let route = match want {
        Want::Ask => {
            let req = RouteRequest { node_id: node.node_id.clone(), stream: stream.into() };
            if link::call(Call::Route(req)).is_ok() {
                Route::Pending { since: now }
            } else {
                ROUTES.with_borrow_mut(|r| r.not_sent(stream, now));
                Route::Failed { at: now }
            }
        }
        Want::Known(r) => r,
        Want::Full => return Standing::Failed,
    };
    match route {
        Route::Pending { .. } | Route::Routed { .. } => Standing::Coming,
        Route::Unknown { .. } => Standing::Unknown,
        Route::Denied { .. } => Standing::Denied,
        Route::Failed { .. } => Standing::Failed,
    }
}

/// Streams RTMP viewers wait for here with nothing feeding them (their push ended without an
/// unpublish, or its root relay died) ask for a route when due, as a new viewer would: every
/// tick, so a watching viewer brings its stream back without reconnecting. After a new table
/// (`table_changed`), a starved stream the table no longer carries is asked for at once.
pub fn ask_for_starved(node: &Node, table_changed: bool) {
    if node.role != Role::Relay || !link::has_master() {
        return;
    }
    for stream in registry::starved() {
        if table_changed && !node.table.relay.contains_key(&stream) {
            published(&stream);
        }
        let _ = wanted(node, &stream);
    }
}

/// `stream` is published here now: its route is history, a later absence asks again at once.
pub fn published(stream: &str) {
    let _ = ROUTES.try_with(|r| r.borrow_mut().forget(stream));
}

/// The master's answer about `stream` (event loop): recorded for the question in flight (an
/// answer nobody waits for is dropped), and logged.
pub fn on_answer(stream: &str, result: Result<RouteReply, CallError>) {
    let log = ngx::log::ngx_cycle_log().as_ptr();
    let now = now();
    let route = match &result {
        Ok(RouteReply { status: RouteStatus::Routed, .. }) => Route::Routed { at: now },
        Ok(RouteReply { status: RouteStatus::Unknown, .. }) => Route::Unknown { at: now },
        Ok(RouteReply { status: RouteStatus::Denied, .. }) => Route::Denied { at: now },
        Err(_) => Route::Failed { at: now },
    };
    let waited = ROUTES.with_borrow_mut(|r| r.answer(stream, route));
    let (ok, msg) = describe(stream, &result);
    if waited {
        ngx::ngx_log_error!(if ok { NGX_LOG_NOTICE } else { NGX_LOG_WARN }, log, "{}", msg);
    } else {
        ngx::ngx_log_error!(NGX_LOG_DEBUG, log, "{} (nobody waits for it: dropped)", msg);
    }
}

/// The master's answer, for the log.
pub fn describe(stream: &str, result: &Result<RouteReply, CallError>) -> (bool, String) {
    match result {
        Ok(RouteReply { status: RouteStatus::Routed, table_version }) => (
            true,
            format!(
                "mesh: route for stream \"{stream}\": routed{}",
                table_version.map(|v| format!(" (table version {v})")).unwrap_or_default()
            ),
        ),
        Ok(RouteReply { status, .. }) => {
            (false, format!("mesh: route for stream \"{stream}\": {}", format!("{status:?}").to_lowercase()))
        }
        Err(e) => (false, format!("mesh: route for stream \"{stream}\" failed: {e}")),
    }
}
