//! Admission: the publish, play and closeStream hooks at the head of nginx-rtmp's chains.
//!
//! Decisions are made in-process against the node's snapshot (mesh-core): no I/O on the event
//! loop. With a master, a broadcaster key or a viewer the table cannot decide is asked about in
//! the background ([`super::ask`]) while the session waits. A refusal closes the session and
//! writes one error-log line ([`super::refusals`]).

use std::sync::Arc;

use mesh_core::args::MeshArgs;
use mesh_core::node::Node;
use mesh_core::wire::Action;
use mesh_core::{PublishRequest, Refusal, SessionKind};

use super::ask::ask_master;
use super::ctx;
use super::refusals::refused;
use super::waiting::PendingCmd;
use crate::conf::{self, AppConf, MainConf};
use crate::nginx::rtmp::{Play, Publish, Session, Verdict};
use crate::nginx::util::{now, now_ms};
use crate::push::Pushes;
use crate::registry::{self, Entry, Via};
use crate::{link, route, transcode};

/// Why a second publish or play on an admitted stream is refused.
const ALREADY: &str = "already admitted on this connection";

/// Why a publish right after another on the same connection is refused.
const TOO_SOON: &str = "publishing again too soon";
/// The least time between two publishes on one connection. Each starts the stream's pushes:
/// a client sending publish and deleteStream in a loop would open connections to the root
/// relays faster than the closed ones go (they close on the next turn of the event loop),
/// until nginx logs `worker_connections are not enough`.
const PUBLISH_AGAIN_MS: u64 = 1000;

/// Is the mesh on for this session's application?
fn mesh_on(s: Session) -> bool {
    // SAFETY: AppConf is our rtmp app conf type.
    unsafe { s.app_conf::<AppConf>() }.is_some_and(|a| a.mesh == 1)
}

/// The node snapshot a session is decided against.
pub fn node_of(s: Session) -> Arc<Node> {
    // SAFETY: MainConf is our rtmp main conf type.
    unsafe { s.main_conf::<MainConf>() }.map_or_else(conf::current_node, MainConf::node)
}

pub fn publish(s: Session, cmd: Publish) -> Verdict {
    if s.is_relay() || !mesh_on(s) {
        return Verdict::Next;
    }
    let stream = cmd.name();
    if let Err(why) = fresh(s, true) {
        refused(s, Action::Publish, &stream, why);
        return Verdict::Close;
    }
    let args = cmd.args();
    let node = node_of(s);
    let decision = node.context(now()).publish(PublishRequest { stream: &stream, args: &args });
    match decision {
        Ok(kind) => done(admit_publish(s, cmd, &node, &stream, &args, kind, Via::Table)),
        Err(Refusal::UnknownStream | Refusal::WrongKey)
            if MeshArgs::parse(&args).node.is_none() && link::has_master() =>
        {
            let key = MeshArgs::parse(&args).key.map(str::to_string);
            ask_master(s, &node, Action::Publish, &stream, &args, key, PendingCmd::Publish(cmd))
        }
        Err(why) => {
            refused(s, Action::Publish, &stream, why.as_str());
            Verdict::Close
        }
    }
}

pub fn play(s: Session, cmd: Play) -> Verdict {
    // Relay sessions (our own pushes' local side, pulls) pass untouched.
    if s.is_relay() || !mesh_on(s) {
        return Verdict::Next;
    }
    let stream = cmd.name();
    if let Err(why) = fresh(s, false) {
        refused(s, Action::Play, &stream, why);
        return Verdict::Close;
    }
    let args = cmd.args();
    let node = node_of(s);
    // Our own transcoder reads the stream: not a viewer.
    let a = MeshArgs::parse(&args);
    if a.node == Some(node.node_id.as_str())
        && s.is_loopback()
        && a.key.is_some_and(|k| transcode::take_credential(&stream, k))
    {
        return Verdict::Next;
    }
    let decision = node.context(now()).play(PublishRequest { stream: &stream, args: &args });
    match decision {
        // No viewer secret: with a master, the auth endpoint decides.
        Ok(_) if !node.table.checks_viewer_tokens() && link::has_master() => {
            let token = a.token.map(str::to_string);
            ask_master(s, &node, Action::Play, &stream, &args, token, PendingCmd::Play(cmd))
        }
        Ok(_) => done(admit_play(s, cmd, &node, &stream, &args, Via::Table)),
        Err(why) => {
            refused(s, Action::Play, &stream, why.as_str());
            Verdict::Close
        }
    }
}

/// Passed on (Done) or refused down the chain (Close).
pub fn done(passed: bool) -> Verdict {
    if passed {
        Verdict::Done
    } else {
        Verdict::Close
    }
}

/// Checks before any decision: one stream per connection — nginx-rtmp's live module answers
/// another publish or play on an admitted session with "already joined" and keeps the first
/// stream; passing it on would register the new name and start the pushes again (a client
/// that wants another stream closes this one first: closeStream, deleteStream, play2 do) —
/// and a publish at most every [`PUBLISH_AGAIN_MS`]. A command still waiting for the master is
/// replaced: its question is taken back, so its answer can never admit the new one.
fn fresh(s: Session, publish: bool) -> Result<(), &'static str> {
    ctx::with(s, |c| {
        if c.reg.is_some() {
            return Err(ALREADY);
        }
        if publish && c.published_at.is_some_and(|t| now_ms().wrapping_sub(t) < PUBLISH_AGAIN_MS) {
            return Err(TOO_SOON);
        }
        c.cancel_pending();
        Ok(())
    })
    .unwrap_or(Ok(()))
}

/// Let a publish in: register it, pass it down the chain, start its pushes. True when
/// nginx-rtmp took it.
pub fn admit_publish(
    s: Session,
    cmd: Publish,
    node: &Node,
    stream: &str,
    args: &str,
    kind: SessionKind,
    via: Via,
) -> bool {
    let source = match &kind {
        SessionKind::NodePush { from } => Some(from.clone()),
        _ => None,
    };
    ngx::ngx_log_error!(
        crate::nginx::ffi::NGX_LOG_NOTICE,
        s.log(),
        "mesh: publish accepted: stream \"{}\" from {} ({})",
        stream,
        source.as_deref().unwrap_or("broadcaster"),
        s.peer()
    );
    let entry = Entry::new(s, kind, stream.into(), args.into(), via);
    if ctx::with_made(s, |c| {
        c.unregister();
        c.reg = Some(registry::add(entry));
        c.published_at = Some(now_ms());
    })
    .is_none()
    {
        return false;
    }
    let passed = cmd.pass_on(s);
    // A second publisher of a live stream is told "already publishing" by the live module and
    // left connected: it is no publisher of ours, and must not push.
    if !passed || !s.is_live_publisher() {
        ctx::with(s, |c| c.unregister());
        return passed;
    }
    let plan = node.plan_pushes(stream, source.as_deref());
    if !plan.is_empty() {
        let pushes = Pushes::start(s, stream, &plan);
        ctx::with(s, |c| c.pushes = pushes);
    }
    route::published(stream);
    passed
}

/// Let a viewer in: register it, ask for a route when the stream is not here, pass it on.
pub fn admit_play(s: Session, cmd: Play, node: &Node, stream: &str, args: &str, via: Via) -> bool {
    let entry = Entry::new(s, SessionKind::Viewer, stream.into(), args.into(), via);
    if ctx::with_made(s, |c| {
        c.unregister();
        c.reg = Some(registry::add(entry));
    })
    .is_none()
    {
        return false;
    }
    route::wanted(node, stream);
    cmd.pass_on(s)
}

pub fn close_stream(s: Session) {
    // Stops the push retries; nginx-rtmp's relay module closes the pushes.
    let published = ctx::with(s, |c| {
        c.pushes = None;
        let published =
            c.reg.and_then(|id| registry::with(id, |e| e.is_publisher().then(|| e.stream.clone())));
        c.unregister();
        c.cancel_pending();
        published.flatten()
    })
    .flatten();
    if let Some(stream) = published {
        transcode::stop(&stream, "publisher left");
    }
}
