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

use std::ptr::addr_of;
use std::time::Duration;

use mesh_agent::proc::{self, SIGKILL, SIGTERM};

use super::{credential, died, Transcode, MANAGER};
use crate::nginx::ffi::*;

/// A child this young may not handle SIGTERM yet (ffmpeg installs its handler once it has
/// started): its first SIGTERM waits until it is this old.
const STARTUP_MS: u64 = 1000;
/// The second SIGTERM after the first.
const TERM_AGAIN_MS: ngx_msec_t = 300;
/// SIGKILL when the child is still there this long after the second SIGTERM.
pub const GRACE_MS: ngx_msec_t = 5000;
/// At worker exit, how long to wait for children to end after their SIGTERM.
const EXIT_WAIT: Duration = Duration::from_millis(400);

/// The next step of stopping `t`'s child: SIGTERM, SIGTERM again, then SIGKILL (or, in a
/// worker that exits, nothing: the child dies with it). Arms `t`'s timer for the step after.
///
/// # Safety
/// Event loop; `t` is boxed in the manager.
pub(super) unsafe fn next_signal(t: &mut Transcode, log: *mut ngx_log_t) {
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
            ngx::ngx_log_error!(
                NGX_LOG_WARN,
                log,
                "mesh: transcode of stream \"{}\" (pid {}) did not stop on SIGTERM within {} ms, left to end with the worker",
                t.stream,
                pid,
                GRACE_MS
            );
            None
        }
        _ => {
            ngx::ngx_log_error!(
                NGX_LOG_WARN,
                log,
                "mesh: transcode of stream \"{}\" (pid {}) did not stop on SIGTERM within {} ms, killing it",
                t.stream,
                pid,
                GRACE_MS
            );
            proc::signal(pid, SIGKILL);
            None
        }
    };
    if let Some(ms) = next {
        // SAFETY: our timer, on the event loop. Not cancelable: a worker that quits waits
        // for it, that is for the child's end, bounded by the grace period.
        unsafe {
            t.ev.set_cancelable(0);
            ngx_add_timer(&mut *t.ev, ms);
        }
    }
}

/// Stop the transcode of `stream`: SIGTERM, again, then SIGKILL if it lingers.
///
/// # Safety
/// Event loop.
pub unsafe fn stop(stream: &str, why: &str, log: *mut ngx_log_t) {
    let t = MANAGER.with_borrow_mut(|m| m.streams.get_mut(stream).map(|t| &mut **t as *mut Transcode));
    let Some(t) = t else { return };
    // SAFETY: boxed in the manager until `died` removes it.
    unsafe {
        let t = &mut *t;
        if t.stopping {
            return;
        }
        t.stopping = true;
        ngx::ngx_log_error!(
            NGX_LOG_NOTICE,
            log,
            "mesh: transcode of stream \"{}\" stopping: {}",
            t.stream,
            why
        );
        if t.ev.timer_set() == 1 {
            ngx_del_timer(&mut *t.ev);
        }
        let Some(c) = t.child.as_ref() else { return died(t, log) };
        t.signals = 0;
        let age = super::now_ms().saturating_sub(c.started_ms);
        if age < STARTUP_MS {
            t.ev.set_cancelable(0);
            ngx_add_timer(&mut *t.ev, (STARTUP_MS - age) as ngx_msec_t);
        } else {
            next_signal(t, log);
        }
    }
}

/// Stop every transcode (role change, exit).
///
/// # Safety
/// Event loop.
pub unsafe fn stop_all(why: &str, log: *mut ngx_log_t) {
    let streams: Vec<String> = MANAGER.with_borrow(|m| m.streams.keys().cloned().collect());
    for s in streams {
        // SAFETY: event loop.
        unsafe { stop(&s, why, log) };
    }
}

/// Worker exit: SIGTERM every child not signalled yet, wait a little for those to end, and
/// remove the directories (nothing will watch them). No SIGKILL: what is left dies with the
/// worker (PR_SET_PDEATHSIG), reaped by init, so nginx reports no killed child.
pub fn exit_all() {
    // SAFETY: ngx_cycle is the worker's current cycle.
    let log = unsafe { (**addr_of!(ngx_cycle)).log };
    let Ok(mut streams) = MANAGER.try_with(|m| {
        let mut m = m.borrow_mut();
        if let Some(mut tick) = m.tick.take() {
            if tick.timer_set() == 1 {
                // SAFETY: our timer, on the event loop.
                unsafe { ngx_del_timer(&mut *tick) };
            }
        }
        m.streams.drain().map(|(_, t)| t).collect::<Vec<_>>()
    }) else {
        return;
    };
    for t in &mut streams {
        if t.ev.timer_set() == 1 {
            // SAFETY: our timer, on the event loop.
            unsafe { ngx_del_timer(&mut *t.ev) };
        }
        // A child too young to handle SIGTERM is left to die with the worker.
        if let (Some(c), 0) = (&t.child, t.signals) {
            if super::now_ms().saturating_sub(c.started_ms) >= STARTUP_MS {
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
        if let Some(c) = t.child.take() {
            // SAFETY: on the event loop; nginx reports any connection still open when the
            // worker exits.
            unsafe { c.close(&t.stream, log) };
        }
        credential::revoke(&t.stream);
        let _ = std::fs::remove_dir_all(&t.dir);
    }
}
