//! A viewer asking a relay node for a stream it does not have makes the node ask the master to
//! route the stream here: one request per stream (not per viewer), again at most every
//! [`AGAIN_S`] while the stream stays away. The viewer waits (nginx-rtmp keeps idle streams)
//! and plays when the push arrives.

use std::cell::RefCell;
use std::collections::HashMap;

use mesh_agent::agent::Call;
use mesh_agent::client::CallError;
use mesh_core::node::Node;
use mesh_core::wire::{RouteReply, RouteRequest, RouteStatus};
use mesh_core::Role;

use crate::{registry, runtime, session};

/// Seconds before a stream still missing is asked for again.
pub const AGAIN_S: u64 = 10;

thread_local! {
    /// Stream → when it was last asked for (unix s).
    static ASKED: RefCell<HashMap<String, u64>> = RefCell::new(HashMap::new());
}

/// A viewer wants `stream` here.
pub fn wanted(node: &Node, stream: &str) {
    if node.role != Role::Relay || !runtime::has_master() || registry::has_publisher(stream) {
        return;
    }
    let now = session::now();
    let ask = ASKED.with_borrow_mut(|a| match a.get(stream) {
        Some(t) if now < t + AGAIN_S => false,
        _ => {
            a.insert(stream.to_string(), now);
            true
        }
    });
    if ask {
        let _ =
            runtime::call(Call::Route(RouteRequest { node_id: node.node_id.clone(), stream: stream.into() }));
    }
}

/// `stream` is published here now: a later absence asks again at once.
pub fn published(stream: &str) {
    let _ = ASKED.try_with(|a| a.borrow_mut().remove(stream));
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
