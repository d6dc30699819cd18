//! Small helpers of the nginx glue: panics kept off the FFI boundary, Rust values in nginx
//! pools, and string conversions.

use std::ffi::{c_char, c_void};
use std::mem;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use super::ffi::*;

/// Run `f`, turning a panic into `fallback`. Every `extern "C"` entry of the module goes
/// through this: a panic must never unwind into nginx. The panic message itself reaches the
/// error log through stderr (nginx points stderr there).
pub fn guard<R>(fallback: R, f: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// `NGX_CONF_ERROR` as a directive/handler return value.
pub const CONF_ERROR: *mut c_char = usize::MAX as *mut c_char;
/// `NGX_CONF_OK`.
pub const CONF_OK: *mut c_char = ptr::null_mut();

/// Move `value` into memory owned by `pool`; it is dropped when the pool is destroyed.
/// Returns null when the pool is out of memory. (Not ngx's `Pool::allocate`: in ngx 0.5.1 it
/// writes the value through the null pointer an exhausted pool returns.)
///
/// # Safety
/// `pool` must be a live nginx pool.
pub unsafe fn pool_new<T>(pool: *mut ngx_pool_t, value: T) -> *mut T {
    // SAFETY: as the caller guarantees.
    unsafe { pool_put(pool, value) }.unwrap_or(ptr::null_mut())
}

/// [`pool_new`], giving the value back when the pool is out of memory.
///
/// # Safety
/// `pool` must be a live nginx pool.
pub unsafe fn pool_put<T>(pool: *mut ngx_pool_t, value: T) -> Result<*mut T, T> {
    // ngx_palloc aligns to NGX_ALIGNMENT (sizeof(unsigned long)).
    assert!(mem::align_of::<T>() <= mem::size_of::<usize>(), "over-aligned pool type");
    unsafe extern "C" fn drop_value<T>(data: *mut c_void) {
        // SAFETY: `data` is the T written by pool_put, dropped exactly once by the pool.
        guard((), || unsafe { ptr::drop_in_place(data.cast::<T>()) })
    }
    // SAFETY: the caller gives a live pool; the cleanup's data block is sized for T.
    unsafe {
        let cln = ngx_pool_cleanup_add(pool, mem::size_of::<T>());
        if cln.is_null() {
            return Err(value);
        }
        let p = (*cln).data.cast::<T>();
        ptr::write(p, value);
        (*cln).handler = Some(drop_value::<T>);
        Ok(p)
    }
}

/// The bytes of an `ngx_str_t`.
///
/// # Safety
/// `s` must point to `len` readable bytes (or be empty) for the returned lifetime.
pub unsafe fn str_bytes<'a>(s: &ngx_str_t) -> &'a [u8] {
    if s.len == 0 || s.data.is_null() {
        &[]
    } else {
        // SAFETY: the caller guarantees data/len describe readable memory.
        unsafe { std::slice::from_raw_parts(s.data, s.len) }
    }
}

/// A NUL-terminated fixed buffer (nginx-rtmp's `name[]`, `args[]`) as text, lossily.
pub fn cbuf_str(buf: &[u8]) -> std::borrow::Cow<'_, str> {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end])
}

/// Copy `bytes` into `pool` as an `ngx_str_t`.
///
/// # Safety
/// `pool` must be a live nginx pool.
pub unsafe fn pool_str(pool: *mut ngx_pool_t, bytes: &[u8]) -> Option<ngx_str_t> {
    // SAFETY: pool is live; from_bytes copies into it.
    unsafe { ngx_str_t::from_bytes(pool, bytes) }
}

/// A configuration path made absolute: relative to the configuration directory
/// (`conf_prefix`) or to the prefix, as nginx's own directives do. None on allocation failure.
///
/// # Safety
/// `cf` is the configuration being parsed; `name` points into its memory.
pub unsafe fn full_name(cf: *mut ngx_conf_t, mut name: ngx_str_t, conf_prefix: bool) -> Option<String> {
    // SAFETY: ngx_conf_full_name rewrites `name` into the cycle's pool.
    unsafe {
        if ngx_conf_full_name((*cf).cycle, &mut name, ngx_uint_t::from(conf_prefix)) != NGX_OK as ngx_int_t {
            return None;
        }
        Some(String::from_utf8_lossy(str_bytes(&name)).into_owned())
    }
}

/// Read everything a non-blocking descriptor of ours has now (a wake-up or death pipe);
/// true when it reached end-of-file (the writer is gone).
pub fn drain(fd: std::os::fd::RawFd) -> bool {
    use std::io::Read;
    // SAFETY: borrowing a descriptor an nginx connection owns; ManuallyDrop keeps it open.
    let mut f =
        std::mem::ManuallyDrop::new(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    let mut buf = [0u8; 512];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
}

/// Is this worker shutting down (graceful quit, reload)? Read on the event loop.
pub fn exiting() -> bool {
    // SAFETY: a plain global that nginx writes on the event loop, where we read it.
    unsafe { *std::ptr::addr_of!(ngx_exiting) != 0 || *std::ptr::addr_of!(ngx_terminate) != 0 }
}

/// The event loop's clock, unix seconds (`ngx_time()`).
pub fn now() -> u64 {
    ngx_time().max(0) as u64
}

/// The event loop's clock in milliseconds (`ngx_current_msec`).
pub fn now_ms() -> u64 {
    // SAFETY: a plain global nginx updates on the event loop, where we read it.
    unsafe { *std::ptr::addr_of!(ngx_current_msec) as u64 }
}

/// Is this a worker process (or nginx running as one process)? nginx's cache manager and
/// loader run every module's init_process too.
pub fn is_worker() -> bool {
    // SAFETY: a plain global nginx sets at process start.
    let p = unsafe { *std::ptr::addr_of!(ngx_process) } as u32;
    p == NGX_PROCESS_WORKER || p == NGX_PROCESS_SINGLE
}

/// This worker's number in its generation (`ngx_worker`: 0 to `worker_processes` - 1; 0 for
/// nginx running as one process).
pub fn worker_index() -> usize {
    // SAFETY: a plain global nginx sets at process start.
    unsafe { *std::ptr::addr_of!(ngx_worker) }
}

/// Connections of this worker in use now.
pub fn connections_in_use() -> u64 {
    // SAFETY: ngx_cycle is the worker's current cycle, read on the event loop.
    unsafe {
        let c = *std::ptr::addr_of!(ngx_cycle);
        if c.is_null() {
            0
        } else {
            ((*c).connection_n - (*c).free_connection_n) as u64
        }
    }
}

/// `worker_processes` of a configured cycle.
///
/// # Safety
/// `cycle` is configured (its core module's conf is set).
pub unsafe fn worker_processes(cycle: *mut ngx_cycle_t) -> Option<ngx_int_t> {
    // SAFETY: conf_ctx has the core module's conf at its index.
    unsafe {
        let ccf =
            (*(*cycle).conf_ctx.add((*std::ptr::addr_of!(ngx_core_module)).index)).cast::<ngx_core_conf_t>();
        ccf.as_ref().map(|c| c.worker_processes)
    }
}

/// The most verbose level of the error logs in the list at `log` (those with a file).
///
/// # Safety
/// `log` is null or a list of live error logs.
pub unsafe fn max_log_level(mut log: *const ngx_log_t) -> ngx_uint_t {
    let mut level = 0;
    // SAFETY: as the caller guarantees.
    unsafe {
        while let Some(l) = log.as_ref() {
            if !l.file.is_null() {
                level = level.max(l.log_level);
            }
            log = l.next;
        }
    }
    level
}
