//! A new table or role applied to the sessions admitted before it: each is checked again,
//! in-process, and dropped when the new state refuses it; publishers' pushes are made to match.
//! Sessions the new state allows see nothing.

use mesh_core::node::Node;
use mesh_core::status::PushStatus;
use mesh_core::wire::Action;

use super::ctx;
use super::refusals::{dropped, Why};
use crate::nginx::rtmp::Session;
use crate::nginx::util::now;
use crate::push::Pushes;
use crate::registry;
use mesh_core::admission::Verdict;

/// Check every admitted session against `node` (`why_now` says what changed, for the log).
pub fn apply(node: &Node, why_now: &str) {
    let now = now();
    let verdicts = registry::sweep(|e| {
        (
            e.admitted.recheck(node, now),
            e.stream().to_string(),
            e.source().map(str::to_string),
            e.is_publisher(),
            e.admitted.is_copy(),
        )
    });
    for (id, s, (verdict, stream, source, publisher, copy)) in verdicts {
        match verdict {
            Verdict::Drop(why) => drop_session(id, s, publisher, &stream, &Why::Decided(why), why_now),
            // A copy (rtmp_auto_push) pushes nothing: the worker it is published into does.
            Verdict::Keep if publisher && !copy => {
                let plan = node.plan_pushes(&stream, source.as_deref());
                let start = ctx::with(s, |c| match &mut c.pushes {
                    Some(p) => {
                        p.reconcile(&plan);
                        false
                    }
                    None => !plan.is_empty(),
                });
                if start == Some(true) {
                    let pushes = Pushes::start(s, &stream, &plan);
                    ctx::with(s, |c| c.pushes = pushes);
                }
            }
            Verdict::Keep => {}
        }
    }
}

/// Close an admitted session the node no longer allows, with its log line.
pub fn drop_session(id: u64, s: Session, publisher: bool, stream: &str, why: &Why, when: &str) {
    dropped(s, if publisher { Action::Publish } else { Action::Play }, stream, why, when);
    ctx::with(s, |c| c.reg = None);
    registry::remove(id);
    s.finalize();
}

/// The state of every push of this worker (for the node's figures).
pub fn push_status() -> Vec<PushStatus> {
    let mut out = Vec::new();
    for (s, _) in registry::publishers() {
        ctx::with(s, |c| out.extend(c.pushes.as_ref().map(Pushes::status).unwrap_or_default()));
    }
    out
}
