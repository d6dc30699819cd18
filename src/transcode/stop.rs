//! Stopping transcodes gracefully: SIGTERM (once the child is STARTUP_MS old: before, ffmpeg
//! may not handle it yet, and dies of it), a second one after TERM_AGAIN_MS (ffmpeg only
//! interrupts a blocking read on its second signal), SIGKILL only after GRACE_MS more, and
//! never at the worker's exit.
//!
//! nginx reaps every child with `waitpid(-1)` and logs an alert for one killed by a signal. A
//! stopping transcode's timer is not cancelable, so a worker that quits waits for its
//! children (up to the grace period); what a worker leaves at its exit gets SIGTERM, a short
//! wait, then dies of `PR_SET_PDEATHSIG` once the worker is gone, reaped by init, unseen by
//! nginx.

use std::time::Duration;

use mesh_agent::proc::{self, SIGKILL, SIGTERM};

use super::{credential, died, Transcode, MANAGER};
use crate::nginx::event::Timer;
use crate::nginx::ffi::{ngx_msec_t, NGX_LOG_NOTICE, NGX_LOG_WARN};
use crate::nginx::util::now_ms;

/// A child this young may not handle SIGTERM yet (ffmpeg installs its handler once it has
/// started): its first SIGTERM waits until it is this old.
const STARTUP_MS: u64 = 1000;
/// The second SIGTERM after the first.
const TERM_AGAIN_MS: ngx_msec_t = 300;
/// SIGKILL when the child is still there this long after the second SIGTERM.
pub const GRACE_MS: ngx_msec_t = 5000;
/// At worker exit, how long to wait for children to end after their SIGTERM.
const EXIT_WAIT: Duration = Duration::from_millis(400);

/// Stop the transcode of `stream` gracefully (the publisher left, idle, ...): SIGTERM, again,
/// then SIGKILL if it lingers. One without a child (restarting, given up) ends at once.
pub fn stop(stream: &str, why: &str) {
    let childless = MANAGER.with_borrow_mut(|m| {
        let (id, t) = m.of_mut(stream)?;
        if t.stopping {
            return None;
        }
        t.stopping = true;
        log!(NGX_LOG_NOTICE, "mesh: transcode of stream \"{}\" stopping: {}", t.stream, why);
        // A pending restart is off.
        t.backoff = None;
        let Some(c) = t.child.as_ref() else { return Some(id) };
        t.signals = 0;
        let age = now_ms().saturating_sub(c.started_ms);
        // Not cancelable: a worker that quits waits for it, that is for the child's end,
        // bounded by the grace period.
        let timer = t.stopper.get_or_insert_with(|| Timer::new(on_timer, id, false));
        if age < STARTUP_MS {
            timer.arm((STARTUP_MS - age) as ngx_msec_t);
        } else {
            next_signal(t);
        }
        None
    });
    if let Some(id) = childless {
        died(id);
    }
}

/// Stop every transcode (the role serves no viewers, the worker shuts down).
pub fn stop_all(why: &str) {
    let streams: Vec<String> = MANAGER.with_borrow(|m| m.ids.keys().cloned().collect());
    for s in streams {
        stop(&s, why);
    }
}

/// The stop timer of transcode `id`: its next signal.
fn on_timer(id: u64) {
    MANAGER.with_borrow_mut(|m| {
        if let Some(t) = m.get_mut(id) {
            next_signal(t);
        }
    })
}

/// The next step of stopping `t`'s child: SIGTERM, SIGTERM again, then SIGKILL (or, in a
/// worker that exits, nothing: the child dies with it). Arms its stop timer for the step after.
fn next_signal(t: &mut Transcode) {
    let Some(pid) = t.child.as_ref().map(|c| c.pid) else { return };
    t.signals += 1;
    let next = match t.signals {
        1 => {
            proc::signal(pid, SIGTERM);
            Some(TERM_AGAIN_MS)
        }
        2 => {
            proc::signal(pid, SIGTERM);
            Some(GRACE_MS)
        }
        _ if crate::nginx::util::exiting() => {
            // No SIGKILL of ours (nginx would report it): the child dies with the worker
            // (PR_SET_PDEATHSIG), which no longer waits for it.
            log!(
                NGX_LOG_WARN,
                "mesh: transcode of stream \"{}\" (pid {}) did not stop on SIGTERM within {} ms, left to end with the worker",
                t.stream,
                pid,
                GRACE_MS
            );
            None
        }
        _ => {
            log!(
                NGX_LOG_WARN,
                "mesh: transcode of stream \"{}\" (pid {}) did not stop on SIGTERM within {} ms, killing it",
                t.stream,
                pid,
                GRACE_MS
            );
            proc::signal(pid, SIGKILL);
            None
        }
    };
    if let (Some(ms), Some(timer)) = (next, t.stopper.as_mut()) {
        timer.arm(ms);
    }
}

/// Worker exit: SIGTERM every child not signalled yet, wait a little for those to end, and
/// remove the directories (nothing will watch them). No SIGKILL: what is left dies with the
/// worker (PR_SET_PDEATHSIG), reaped by init, so nginx reports no killed child. The worker's
/// claims are released last.
pub fn exit_all() {
    let Ok((tick, mut streams)) = MANAGER.try_with(|m| {
        let mut m = m.borrow_mut();
        m.ids.clear();
        (m.tick.take(), m.all.drain().map(|(_, t)| t).collect::<Vec<_>>())
    }) else {
        return;
    };
    drop(tick);
    for t in &mut streams {
        t.backoff = None;
        t.stopper = None;
        // A child too young to handle SIGTERM is left to die with the worker.
        if let (Some(c), 0) = (&t.child, t.signals) {
            if now_ms().saturating_sub(c.started_ms) >= STARTUP_MS {
                proc::signal(c.pid, SIGTERM);
                t.signals = 1;
            }
        }
    }
    let outputs: Vec<_> = streams
        .iter()
        .filter(|t| t.signals > 0)
        .filter_map(|t| t.child.as_ref().map(|c| c.output()))
        .collect();
    proc::wait_for_eof(&outputs, EXIT_WAIT);
    drop(outputs);
    for t in &mut streams {
        // (Closing its pipe now: nginx reports any connection still open when the worker exits.)
        if let Some(c) = t.child.take() {
            c.close(&t.stream);
        }
        credential::revoke(&t.stream);
        t.clean_up();
    }
    // Its claims go with it: a worker of the next generation starts the transcodes anew (any
    // child still here dies with this process at once, PR_SET_PDEATHSIG).
    super::claim::release_all();
}
