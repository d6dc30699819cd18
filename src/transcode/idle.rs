//! The once-a-second check of a worker's transcodes: each claim refreshed (a claim taken over
//! stops its transcode), idle ones stopped (no request for the idle time in this worker nor,
//! by the claim, in any other), ones given up let go after a while.

use super::{claim, stop, State, MANAGER, RETRY_FAILED_S};
use crate::nginx::ffi::NGX_LOG_WARN;
use crate::nginx::util::now;

/// The once-a-second check: claims refreshed, idle transcodes (no request in any worker)
/// stopped; it ends itself when there are none.
pub fn tick() {
    claim::prune();
    // A worker shutting down (reload, quit) serves no new viewers: stop at once rather than
    // when its last RTMP client leaves. (The claims are still refreshed while the children end,
    // so that no other worker starts one before.)
    if crate::nginx::util::exiting() {
        stop::stop_all("worker shutting down");
    }
    let (now, now_ms) = (now(), crate::nginx::util::now_ms());
    let mut lost = Vec::new();
    let mut idle = Vec::new();
    MANAGER.with_borrow_mut(|m| {
        let idle_s = m.settings.as_ref().map_or(30, |s| s.idle_s);
        for t in m.all.values_mut().filter(|t| !t.lost) {
            // When a viewer last asked in another worker (ms), or never.
            let mut elsewhere = None;
            if let Some(g) = t.generation {
                match claim::beat(&t.stream, g, t.phase()) {
                    Some(None) => {
                        t.lost = true;
                        lost.push(t.stream.clone());
                        continue;
                    }
                    Some(Some(ms)) => elsewhere = Some(ms),
                    None => {}
                }
            }
            let idle_here = now.saturating_sub(t.last_wanted) >= idle_s;
            let idle_there = elsewhere.is_none_or(|ms| now_ms.saturating_sub(ms) >= idle_s * 1000);
            // A transcode given up is let go after a while, so a viewer in any worker tries again.
            let retry = matches!(t.state, State::Failed(_)) && now >= t.started + RETRY_FAILED_S;
            if !t.stopping && ((idle_here && idle_there) || retry) {
                idle.push(t.stream.clone());
            }
        }
    });
    for s in lost {
        log!(NGX_LOG_WARN, "mesh: transcode of stream \"{}\": its claim was taken over, stopping", s);
        stop::stop(&s, "claim taken over");
    }
    for s in idle.into_iter().filter(|s| crate::registry::rtmp_viewers(s) == 0) {
        stop::stop(&s, "idle");
    }
    if MANAGER.with_borrow(|m| m.all.is_empty()) {
        end_tick();
    }
}

/// Drop the idle check (from inside itself: allowed), the manager no longer borrowed after.
fn end_tick() {
    let tick = MANAGER.with_borrow_mut(|m| m.tick.take());
    drop(tick);
}
