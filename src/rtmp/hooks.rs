//! The publish, play and closeStream hooks at the head of nginx-rtmp's chains: the checks
//! before any decision, the decision, and what it says (let in, refuse, or ask the master).
//!
//! Decisions are made in-process against the node's snapshot (mesh-core): no I/O on the event
//! loop. With a master, a broadcaster key or a viewer the table cannot decide is asked about in
//! the background ([`super::ask`]) while the session waits. A refusal closes the session and
//! writes one error-log line ([`super::refusals`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use mesh_core::admission::{Outcome, Request};
use mesh_core::wire::Action;

use super::admit::{admit, done, node_of};
use super::ask::suspend;
use super::ctx;
use super::refusals::{refused, Why};
use super::waiting::PendingCmd;
use crate::conf::AppConf;
use crate::nginx::event::{after, Task};
use crate::nginx::rtmp::{Play, Publish, Session, Verdict};
use crate::nginx::util::{now, now_ms};
use crate::registry;
use crate::{auth, transcode};

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

pub fn publish(s: Session, cmd: Publish) -> Verdict {
    command(s, PendingCmd::Publish(cmd))
}

pub fn play(s: Session, cmd: Play) -> Verdict {
    command(s, PendingCmd::Play(cmd))
}

/// A publish or play: the checks before any decision, the decision, and what it says.
fn command(s: Session, cmd: PendingCmd) -> Verdict {
    if !mesh_on(s) {
        return Verdict::Next;
    }
    let action = cmd.action();
    let (stream, args, peer) = (cmd.name(), cmd.args(), s.peer());
    let mut req = Request::rtmp(action, &stream, &args, &peer);
    // Relay sessions (our own pushes' local side, pulls) pass untouched.
    req.relay = s.is_relay();
    req.auto_pushed = s.is_auto_pushed();
    if !req.relay {
        if let Err(why) = fresh(s, action == Action::Publish) {
            refused(s, action, &stream, &why);
            return Verdict::Close;
        }
    }
    req.loopback = s.is_loopback();
    let node = node_of(s);
    // Our own transcoder reads the stream (with its single-use credential): not a viewer.
    req.own_transcoder =
        req.transcoder_key(&node.node_id).is_some_and(|k| transcode::take_credential(&stream, k));
    match auth::decide(&req, &node, now()) {
        Outcome::Pass => Verdict::Next,
        Outcome::Admit(a) => done(admit(s, cmd, &node, a)),
        Outcome::Refuse(why) => {
            refused(s, action, &stream, &Why::Decided(why));
            Verdict::Close
        }
        Outcome::Ask(ask) => suspend(s, cmd, ask),
    }
}

/// Checks before any decision: one stream per connection — nginx-rtmp's live module answers
/// another publish or play on an admitted session with "already joined" and keeps the first
/// stream; passing it on would register the new name and start the pushes again (a client
/// that wants another stream closes this one first: closeStream, deleteStream, play2 do) —
/// and a publish at most every [`PUBLISH_AGAIN_MS`]. A command still waiting for the master is
/// replaced: its question is taken back, so its answer can never admit the new one.
fn fresh(s: Session, publish: bool) -> Result<(), Why> {
    ctx::with(s, |c| {
        if c.reg.is_some() {
            return Err(Why::Already);
        }
        if publish && c.published_at.is_some_and(|t| now_ms().wrapping_sub(t) < PUBLISH_AGAIN_MS) {
            return Err(Why::TooSoon);
        }
        c.cancel_pending();
        Ok(())
    })
    .unwrap_or(Ok(()))
}

pub fn close_stream(s: Session) {
    // Stops the push retries; nginx-rtmp's relay module closes the pushes.
    let published = ctx::with(s, |c| {
        c.pushes = None;
        let published = c.reg.and_then(|id| {
            registry::with(id, |e| e.is_publisher().then(|| (e.stream().to_string(), e.source().is_some())))
        });
        c.unregister();
        c.cancel_pending();
        published.flatten()
    })
    .flatten();
    match published {
        // A node's push ended: its feed may be moving (another root relay, a new hop key). The
        // transcode rides through a short gap, as RTMP viewers do, and stops only if nothing
        // publishes the stream again here within FEED_GRACE.
        Some((stream, true)) => {
            let again = stream.clone();
            let task = after(FEED_GRACE, move || {
                LEFT.with_borrow_mut(|l| l.remove(&again));
                if !registry::has_publisher(&again) {
                    transcode::stop(&again, "publisher left");
                }
            });
            LEFT.with_borrow_mut(|l| l.insert(stream, task));
        }
        Some((stream, false)) => transcode::stop(&stream, "publisher left"),
        None => {}
    }
}

/// How long the transcode of a stream whose node push ended waits for a feed again.
const FEED_GRACE: Duration = Duration::from_secs(5);

thread_local! {
    /// Streams whose node push ended: the stop of their transcode, pending (one per stream).
    static LEFT: RefCell<HashMap<String, Task<()>>> = RefCell::new(HashMap::new());
}
