//! Guards on RTMP protocol messages that nginx-rtmp would answer with an `[alert]` line: a
//! stranger must not be able to page the operator. Our handlers go in front of nginx-rtmp's own
//! (postconfiguration runs before it adds them), refuse what it would refuse, with one
//! error-log line of ours, and pass everything else on.

use crate::nginx::ffi::*;
use crate::nginx::rtmp::Session;

/// Set Chunk Size: a size nginx-rtmp refuses (over 10 MiB) closes the session with our line
/// instead of its `[alert]`. False: close.
pub fn chunk_size(s: Session, body: &[u8]) -> bool {
    let Some(size) = body.first_chunk::<4>().map(|b| u32::from_be_bytes(*b)) else {
        // nginx-rtmp ignores it too
        return true;
    };
    if size <= NGX_RTMP_MAX_CHUNK_SIZE {
        return true;
    }
    ngx::ngx_log_error!(
        NGX_LOG_ERR,
        s.log(),
        "mesh: session refused: from {}: chunk size {} too big",
        s.peer(),
        size
    );
    false
}
