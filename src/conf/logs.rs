//! `mesh on`, or a `mesh_media` location, with an error log at `info` or `debug`: nginx logs
//! what carries keys and tokens at those levels. Warned once per configuration.

use std::sync::atomic::{AtomicPtr, Ordering};

use ngx::ngx_conf_log_error;

use crate::nginx::ffi::*;
use crate::nginx::util::max_log_level;

/// The configuration (cycle) already warned about a verbose error log.
static WARNED_CYCLE: AtomicPtr<ngx_cycle_t> = AtomicPtr::new(std::ptr::null_mut());

/// `mesh on` with an error log at `info` or `debug`: nginx-rtmp logs every publish's and
/// play's arguments there (stream keys, viewer tokens). Warned once per configuration.
///
/// # Safety
/// `cf` is the configuration being parsed.
pub(super) unsafe fn warn_verbose_log(cf: *mut ngx_conf_t) {
    // SAFETY: the cycle being configured and its error logs (those declared so far).
    unsafe {
        warn_verbose_logs(
            cf,
            &(*(*cf).cycle).new_log,
            "\"mesh on\"",
            "publish and play arguments (stream keys, viewer tokens) are logged at this level",
        )
    }
}

/// The same for the error logs in the list at `log` (an HTTP location's, which a media
/// request logs to: nginx writes the request line, with its `token=`, at `info` and `debug`).
///
/// # Safety
/// `cf` is the configuration being parsed; `log` a list of its error logs.
pub unsafe fn warn_verbose_logs(cf: *mut ngx_conf_t, log: *const ngx_log_t, what: &str, why: &str) {
    // SAFETY: as the caller guarantees.
    unsafe {
        let cycle = (*cf).cycle;
        let level = max_log_level(log);
        if level < NGX_LOG_INFO as ngx_uint_t || WARNED_CYCLE.swap(cycle, Ordering::Relaxed) == cycle {
            return;
        }
        let name = if level >= NGX_LOG_DEBUG as ngx_uint_t { "debug" } else { "info" };
        ngx_conf_log_error!(
            NGX_LOG_WARN,
            cf,
            "{} with error log level \"{}\": {}, use \"notice\" or above",
            what,
            name,
            why
        );
    }
}
