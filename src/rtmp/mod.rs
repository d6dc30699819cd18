//! The RTMP side of a node: who may publish and play, and what an admitted session starts.
//!
//! * [`hooks`]: the publish, play and closeStream hooks at the head of nginx-rtmp's chains;
//! * [`admit`]: an admitted session let in (registered, passed on, its pushes started);
//! * [`ask`]: sessions the table cannot decide wait for the master (netcall-style), and
//!   admitted ones whose answer ran out are asked about again;
//! * [`waiting`]: the suspended sessions, under handles;
//! * [`ctx`]: what we keep per session;
//! * [`refusals`]: the one log line and counter of every refusal;
//! * [`table`]: a new table or role applied to the sessions admitted before it;
//! * [`protocol`]: guards on protocol messages nginx-rtmp would answer with an `[alert]`.
//!
//! Every decision is mesh-core's; these files translate nginx-rtmp to and from it.

mod admit;
pub mod ask;
mod ctx;
mod hooks;
mod protocol;
mod refusals;
pub mod table;
mod waiting;

use crate::nginx::ffi::ngx_conf_t;
use crate::nginx::rtmp::{hook_chains, hook_message, Hooks};

pub use refusals::refusals;
pub use table::push_status;
pub use waiting::len as suspended;

static HOOKS: Hooks = Hooks { publish: hooks::publish, play: hooks::play, close_stream: hooks::close_stream };

/// Put our hooks in nginx-rtmp's chains and message handlers.
///
/// # Safety
/// Configuration time (postconfiguration), `cf` in the rtmp{} block.
pub unsafe fn hook(cf: *mut ngx_conf_t) -> bool {
    // SAFETY: as the caller guarantees.
    unsafe {
        hook_chains(&HOOKS);
        hook_message(cf, crate::nginx::ffi::NGX_RTMP_MSG_CHUNK_SIZE, protocol::chunk_size)
    }
}
