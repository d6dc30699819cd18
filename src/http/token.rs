//! The viewer token of an HTTP media request: one function, [`check`], decides whether a token
//! is good for a stream now, for every request (manifests, playlists, segments), in-process.
//! With the table's `viewer_secret` it verifies the token; with a master and no secret it reads
//! the master's cached answer (which only an entry request asks for); with neither, the node
//! serves everyone, as its RTMP side does.

use mesh_core::node::Node;
use mesh_core::wire::{Action, AuthRequest};

use crate::auth::{self, Question, Waiter};

/// A cached allow this close to its end is asked about again, so that playback outlives it.
const REFRESH_S: u64 = 20;

/// What [`check`] says of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Good now; with a master, its answer holds until this unix second.
    Good { until: Option<u64> },
    /// None was given (401).
    Missing,
    /// Bad, expired, for another stream, or denied by the master (403), and why.
    Refused(String),
    /// With a master: no answer for this token yet.
    Unknown,
}

/// Is `token` (decoded from the query) good for `stream` at `now`?
pub fn check(node: &Node, stream: &str, token: Option<&str>, now: u64) -> Check {
    let token = token.filter(|t| !t.is_empty());
    if node.table.checks_viewer_tokens() {
        let Some(token) = token else { return Check::Missing };
        return match node.table.verify_viewer(stream, token, now) {
            Ok(()) => Check::Good { until: None },
            Err(e) => Check::Refused(mesh_core::admission::refusal(e).as_str().to_string()),
        };
    }
    if !crate::link::has_master() {
        return Check::Good { until: None };
    }
    match auth::cached(&Question::new(Action::Play, stream, token), now) {
        Some(a) if a.allow => Check::Good { until: Some(a.until) },
        Some(_) if token.is_none() => Check::Missing,
        Some(a) => Check::Refused(format!("auth: {}", a.reason)),
        None => Check::Unknown,
    }
}

/// Ask the master about `token` for `stream` (one question in flight per token): for a request
/// that found no answer, or a playing viewer whose allow ends soon.
pub fn ask(node: &Node, stream: &str, token: Option<&str>, addr: String) {
    let req = AuthRequest {
        node_id: node.node_id.clone(),
        action: Action::Play,
        stream: stream.to_string(),
        key: None,
        token: token.filter(|t| !t.is_empty()).map(str::to_string),
        addr,
    };
    let _ = auth::ask(Waiter::Cache, req);
}

/// After a good check of a media request: ask again when the master's allow is about to end.
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
