//! Guards on RTMP protocol messages that nginx-rtmp would answer with an `[alert]` line: a
//! stranger must not be able to page the operator. Our handlers go in front of nginx-rtmp's own
//! (postconfiguration runs before it adds them), refuse what it would refuse, with one
//! error-log line of ours, and pass everything else on.

use std::ptr::addr_of;

use crate::ffi::*;
use crate::util::guard;

/// Put our handlers first in nginx-rtmp's event arrays.
///
/// # Safety
/// Configuration time (postconfiguration), `cf` in the rtmp{} block.
pub unsafe fn hook(cf: *mut ngx_conf_t) -> bool {
    // SAFETY: cf->ctx is the rtmp{} block's conf ctx; the core module's main conf holds the
    // event arrays, initialised (empty of nginx-rtmp's own handlers) before postconfiguration.
    unsafe {
        let ctx = (*cf).ctx.cast::<ngx_rtmp_conf_ctx_t>();
        let idx = (*addr_of!(ngx_rtmp_core_module)).ctx_index;
        let cmcf = (*(*ctx).main_conf.add(idx)).cast::<ngx_rtmp_core_main_conf_t>();
        if cmcf.is_null() {
            return false;
        }
        let events = &mut (*cmcf).events[NGX_RTMP_MSG_CHUNK_SIZE as usize];
        let eh = ngx_array_push(events).cast::<ngx_rtmp_handler_pt>();
        if eh.is_null() {
            return false;
        }
        *eh = Some(chunk_size);
        true
    }
}

/// Set Chunk Size: a size nginx-rtmp refuses (over 10 MiB) closes the session with our line
/// instead of its `[alert]`.
unsafe extern "C" fn chunk_size(
    s: *mut ngx_rtmp_session_t,
    _h: *mut ngx_rtmp_header_t,
    inp: *mut ngx_chain_t,
) -> ngx_int_t {
    guard(NGX_ERROR as ngx_int_t, || {
        // SAFETY: nginx-rtmp calls us with a live session and the message's chain.
        unsafe {
            if inp.is_null() || (*inp).buf.is_null() {
                return NGX_OK as ngx_int_t;
            }
            let b = (*inp).buf;
            if (*b).last.offset_from((*b).pos) < 4 {
                // nginx-rtmp ignores it too
                return NGX_OK as ngx_int_t;
            }
            let bytes = std::slice::from_raw_parts((*b).pos, 4);
            let size = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            if size <= NGX_RTMP_MAX_CHUNK_SIZE {
                return NGX_OK as ngx_int_t;
            }
            ngx::ngx_log_error!(
                NGX_LOG_ERR,
                (*(*s).connection).log,
                "mesh: session refused: from {}: chunk size {} too big",
                crate::session::peer(s),
                size
            );
            NGX_ERROR as ngx_int_t
        }
    })
}
