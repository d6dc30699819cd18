//! Stopping transcodes gracefully: SIGTERM, a second one after TERM_AGAIN_MS (ffmpeg only
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
use crate::ffi::*;

/// The second SIGTERM after the first.
const TERM_AGAIN_MS: ngx_msec_t = 300;
/// SIGKILL when the child is still there this long after the second SIGTERM.
pub const GRACE_MS: ngx_msec_t = 5000;
/// At worker exit, how long to wait for children to end after their SIGTERM.
const EXIT_WAIT: Duration = Duration::from_millis(400);

/// The stop timer of `t` fired: the second SIGTERM, or the end of the grace period.
///
/// # Safety
/// Event loop; `ev` is `t`'s timer.
pub(super) unsafe fn next_signal(t: &mut Transcode, ev: *mut ngx_event_t) {
    // SAFETY: the caller's event.
    let log = unsafe { (*ev).log };
    let Some(pid) = t.child.as_ref().map(|c| c.pid) else { return };
    t.signals += 1;
    if t.signals == 2 {
        proc::signal(pid, SIGTERM);
        // SAFETY: our timer, on the event loop.
        unsafe { ngx_add_timer(ev, GRACE_MS) };
    } else if crate::util::exiting() {
        // No SIGKILL of ours (nginx would report it): the child dies with the
        // worker (PR_SET_PDEATHSIG), which no longer waits for it.
        ngx::ngx_log_error!(
                NGX_LOG_WARN,
                log,
                "mesh: transcode of stream \"{}\" (pid {}) did not stop on SIGTERM within {} ms, left to end with the worker",
                t.stream,
                pid,
                GRACE_MS
            );
    } else {
        ngx::ngx_log_error!(
            NGX_LOG_WARN,
            log,
            "mesh: transcode of stream \"{}\" (pid {}) did not stop on SIGTERM within {} ms, killing it",
            t.stream,
            pid,
            GRACE_MS
        );
        proc::signal(pid, SIGKILL);
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
        match t.child.as_ref().map(|c| c.pid) {
            Some(pid) => {
                proc::signal(pid, SIGTERM);
                t.signals = 1;
                // A worker that quits waits for this timer: for the child's end, bounded by
                // the grace period.
                t.ev.set_cancelable(0);
                ngx_add_timer(&mut *t.ev, TERM_AGAIN_MS);
            }
            None => died(t, log),
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

/// Worker exit: SIGTERM every child not signalled yet, wait a little for them to end, and
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
        if let (Some(c), 0) = (&t.child, t.signals) {
            proc::signal(c.pid, SIGTERM);
            t.signals = 1;
        }
    }
    let outputs: Vec<_> = streams.iter().filter_map(|t| t.child.as_ref().map(|c| c.output())).collect();
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
