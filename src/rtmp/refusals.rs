//! The one error-log line of every refused or dropped session — who (address), what (action,
//! application, stream) and why, never the key or token — and the counters `mesh_status`
//! reports, by action and reason.

use std::cell::RefCell;
use std::collections::BTreeMap;

use mesh_core::name::for_log;
use mesh_core::status::RefusalCount;
use mesh_core::wire::Action;

use crate::nginx::ffi::NGX_LOG_ERR;
use crate::nginx::rtmp::Session;

thread_local! {
    /// `(action, reason)` → sessions refused or dropped.
    static REFUSALS: RefCell<BTreeMap<(&'static str, String), u64>> = Default::default();
}

/// The word for an action in log lines and counters.
pub fn action_str(a: Action) -> &'static str {
    match a {
        Action::Publish => "publish",
        Action::Play => "play",
    }
}

/// A session refused: its line, counted.
pub fn refused(s: Session, action: Action, stream: &str, why: &str) {
    log(s, action, "refused", stream, why);
}

/// An admitted session closed because the node no longer allows it: its line, counted.
pub fn dropped(s: Session, action: Action, stream: &str, why: &str) {
    log(s, action, "dropped", stream, why);
}

fn log(s: Session, action: Action, verb: &str, stream: &str, why: &str) {
    let action = action_str(action);
    count(action, why);
    ngx::ngx_log_error!(
        NGX_LOG_ERR,
        s.log(),
        "mesh: {} {}: app \"{}\", stream \"{}\", from {}: {}",
        action,
        verb,
        for_log(&s.app()),
        for_log(stream),
        s.peer(),
        why
    );
}

/// Count a refusal under its reason's label: the words before any detail (`auth: …`, `(table
/// version 4)`).
fn count(action: &'static str, why: &str) {
    let reason = why.split([':', '(']).next().unwrap_or(why).trim().to_string();
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
