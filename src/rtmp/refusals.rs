//! The one error-log line of every refused or dropped session — who (address), what (action,
//! application, stream) and why, never the key or token — and the counters `mesh_status`
//! reports, by action and reason.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use mesh_core::admission::Reason;
use mesh_core::auth::AskError;
use mesh_core::name::for_log;
use mesh_core::status::RefusalCount;
use mesh_core::wire::Action;

use crate::nginx::ffi::NGX_LOG_ERR;
use crate::nginx::rtmp::Session;

thread_local! {
    /// `(action, reason)` → sessions refused or dropped.
    static REFUSALS: RefCell<BTreeMap<(&'static str, String), u64>> = Default::default();
}

/// Why a session is refused or dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// A rule of the table or the node, or the master's word.
    Decided(Reason),
    /// The master could not be asked (too many questions wait, no master).
    NotAsked(AskError),
    /// Another publish or play on a connection already admitted.
    Already,
    /// A publish again less than a second after the last.
    TooSoon,
}

impl Why {
    /// The counter's label: the reason without its detail (`auth`, not the master's words).
    fn label(&self) -> String {
        match self {
            Why::Decided(Reason::Auth(_)) => "auth".into(),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Decided(r) => r.fmt(f),
            Why::NotAsked(e) => e.fmt(f),
            Why::Already => f.write_str("already admitted on this connection"),
            Why::TooSoon => f.write_str("publishing again too soon"),
        }
    }
}

/// The word for an action in log lines and counters.
pub fn action_str(a: Action) -> &'static str {
    match a {
        Action::Publish => "publish",
        Action::Play => "play",
    }
}

/// A session refused: its line, counted.
pub fn refused(s: Session, action: Action, stream: &str, why: &Why) {
    log(s, action, "refused", stream, why, "");
}

/// An admitted session closed because the node no longer allows it (`when`: what changed,
/// for the log line): its line, counted.
pub fn dropped(s: Session, action: Action, stream: &str, why: &Why, when: &str) {
    log(s, action, "dropped", stream, why, when);
}

fn log(s: Session, action: Action, verb: &str, stream: &str, why: &Why, when: &str) {
    let action = action_str(action);
    count(action, why.label());
    let when = if when.is_empty() { String::new() } else { format!(" ({when})") };
    ngx::ngx_log_error!(
        NGX_LOG_ERR,
        s.log(),
        "mesh: {} {}: app \"{}\", stream \"{}\", from {}: {}{}",
        action,
        verb,
        for_log(&s.app()),
        for_log(stream),
        s.peer(),
        why,
        when
    );
}

/// Count a refusal under its reason's label.
fn count(action: &'static str, reason: String) {
    let _ = REFUSALS.try_with(|r| *r.borrow_mut().entry((action, reason)).or_insert(0) += 1);
}

/// The refusal counters.
pub fn refusals() -> Vec<RefusalCount> {
    REFUSALS.with_borrow(|r| {
        r.iter()
            .map(|((a, w), n)| RefusalCount { action: a.to_string(), reason: w.clone(), count: *n })
            .collect()
    })
}
