//! Letting an admitted session in: its registry entry, the command passed down the chain, and
//! for a publish its pushes; a viewer of a stream not here asks for a route.

use std::sync::Arc;

use mesh_core::admission::Admitted;
use mesh_core::node::Node;

use super::ctx;
use super::waiting::PendingCmd;
use crate::conf::{self, MainConf};
use crate::nginx::rtmp::{Play, Publish, Session, Verdict};
use crate::nginx::util::now_ms;
use crate::push::Pushes;
use crate::registry::{self, Entry};
use crate::route;

/// The node snapshot a session is decided against.
pub fn node_of(s: Session) -> Arc<Node> {
    // SAFETY: MainConf is our rtmp main conf type.
    unsafe { s.main_conf::<MainConf>() }.map_or_else(conf::current_node, MainConf::node)
}

/// Passed on (Done) or refused down the chain (Close).
pub fn done(passed: bool) -> Verdict {
    if passed {
        Verdict::Done
    } else {
        Verdict::Close
    }
}

/// Let an admitted command in (true: nginx-rtmp took it).
pub fn admit(s: Session, cmd: PendingCmd, node: &Node, a: Admitted) -> bool {
    match cmd {
        PendingCmd::Publish(v) => admit_publish(s, v, node, a),
        PendingCmd::Play(v) => admit_play(s, v, node, a),
    }
}

/// Let a publish in: register it, pass it down the chain, start its pushes. True when
/// nginx-rtmp took it.
fn admit_publish(s: Session, cmd: Publish, node: &Node, a: Admitted) -> bool {
    let stream = a.stream.clone();
    let source = a.source().map(str::to_string);
    let copy = a.is_copy();
    if copy {
        ngx::ngx_log_error!(
            crate::nginx::ffi::NGX_LOG_NOTICE,
            s.log(),
            "mesh: stream \"{}\" copied from the worker it is published on",
            stream
        );
    } else {
        ngx::ngx_log_error!(
            crate::nginx::ffi::NGX_LOG_NOTICE,
            s.log(),
            "mesh: publish accepted: stream \"{}\" from {} ({})",
            stream,
            source.as_deref().unwrap_or("broadcaster"),
            s.peer()
        );
    }
    if !register(s, a, true) {
        return false;
    }
    let passed = cmd.pass_on(s);
    // A second publisher of a live stream is told "already publishing" by the live module and
    // left connected: it is no publisher of ours, and must not push.
    if !passed || !s.is_live_publisher() {
        ctx::with(s, |c| c.unregister());
        return passed;
    }
    // Pushes leave from the worker the stream is published on, never from its copies.
    let plan = if copy { Vec::new() } else { node.plan_pushes(&stream, source.as_deref()) };
    if !plan.is_empty() {
        let pushes = Pushes::start(s, &stream, &plan);
        ctx::with(s, |c| c.pushes = pushes);
    }
    route::published(&stream);
    passed
}

/// Let a viewer in: register it, ask for a route when the stream is not here, pass it on.
fn admit_play(s: Session, cmd: Play, node: &Node, a: Admitted) -> bool {
    let stream = a.stream.clone();
    if !register(s, a, false) {
        return false;
    }
    route::wanted(node, &stream);
    cmd.pass_on(s)
}

/// The session's registry entry (replacing any), and for a publish when it was passed on.
fn register(s: Session, a: Admitted, publish: bool) -> bool {
    let entry = Entry::new(s, a);
    ctx::with_made(s, |c| {
        c.unregister();
        c.reg = Some(registry::add(entry));
        if publish {
            c.published_at = Some(now_ms());
        }
    })
    .is_some()
}
