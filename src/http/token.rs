//! The viewer token of an HTTP media request: [`check`] says whether a token is good for a
//! stream now, for every request (manifests, playlists, segments), in-process — mesh-core's one
//! admission decision, as for RTMP plays: with the table's viewer keys it verifies the token;
//! with a master and no keys it reads the master's cached answer (which only an entry request
//! asks for); with neither, the node serves everyone, as its RTMP side does. A token the keys
//! verified is remembered for its lifetime under the same table ([`super::verified`]).

use std::sync::Arc;

use mesh_core::admission::{Outcome, Reason, Refusal, Request, Via, REFRESH_S};
use mesh_core::auth::Waiter;
use mesh_core::node::Node;

use super::verified;
use crate::auth;

/// What [`check`] says of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Good now; with a master, its answer holds until this unix second.
    Good { until: Option<u64> },
    /// None was given (401).
    Missing,
    /// Bad, expired, for another stream, or denied by the master (403), and why.
    Refused(String),
    /// The node's role serves no viewers (404).
    NotServed,
    /// With a master: no answer for this token yet.
    Unknown,
}

/// Is `token` (decoded from the query) good for `stream` at `now`?
pub fn check(node: &Arc<Node>, stream: &str, token: Option<&str>, now: u64) -> Check {
    // Only the table's own verdicts are remembered: a master's answers have their own cache.
    let keyed = token.filter(|t| !t.is_empty() && node.table.checks_viewer_tokens());
    if keyed.is_some_and(|t| verified::holds(node, stream, t, now)) {
        return Check::Good { until: None };
    }
    match auth::decide(&Request::http(stream, token, ""), node, now) {
        Outcome::Admit(a) => {
            if let (Some(t), Via::Table) = (keyed, a.via) {
                verified::remember(node, stream, t, now);
            }
            Check::Good { until: a.via.until() }
        }
        Outcome::Refuse(Reason::Rule(Refusal::NoToken)) => Check::Missing,
        Outcome::Refuse(Reason::Rule(Refusal::WrongRole)) => Check::NotServed,
        Outcome::Refuse(why) => Check::Refused(why.to_string()),
        Outcome::Ask(_) => Check::Unknown,
        // Only relay sessions and our own transcoder pass undecided: never an HTTP request.
        Outcome::Pass => Check::Refused(Refusal::BadToken.to_string()),
    }
}

/// Ask the master about `token` for `stream` (one question in flight per token): for a request
/// that found no answer, or a playing viewer whose allow ends soon.
pub fn ask(node: &Node, stream: &str, token: Option<&str>, addr: String) {
    let ask = Request::http(stream, token, &addr).ask(&node.node_id);
    let _ = auth::ask(Waiter::Cache, &ask.request);
}

/// After a good check of a media request: ask again when the master's allow is about to end,
/// so that playback outlives it.
pub fn refresh(
    node: &Node,
    stream: &str,
    token: Option<&str>,
    check: &Check,
    now: u64,
    addr: impl FnOnce() -> String,
) {
    if let Check::Good { until: Some(until) } = check {
        if *until <= now + REFRESH_S {
            ask(node, stream, token, addr());
        }
    }
}
