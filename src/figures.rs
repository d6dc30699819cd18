//! The node's figures, whatever the number of its workers: every second each worker writes its
//! own (mesh-core's `WorkerFigures`, as JSON) into its slot of the node's shared zone
//! (`mesh_shared_zone`), and the node's are every fresh slot's merged with this worker's own,
//! taken live. Heartbeats and `mesh_status` report these.

use std::cell::Cell;

use mesh_core::figures::{merge, WorkerFigures};

use crate::nginx::ffi::NGX_LOG_WARN;
use crate::nginx::shm::SlotError;
use crate::{conf, link, registry, rtmp, transcode};

thread_local! {
    /// The zone refused this worker's figures (logged once until it takes them again).
    static REFUSED: Cell<bool> = const { Cell::new(false) };
}

/// This worker's figures now.
pub fn local() -> WorkerFigures {
    let (streams, viewers, mut load) = registry::figures();
    load.connections = crate::nginx::util::connections_in_use();
    WorkerFigures {
        streams,
        viewers,
        load,
        pushes: rtmp::push_status(),
        transcodes: transcode::figures(),
        refusals: rtmp::refusals(),
        links: link::voice_links(),
    }
}

/// Write this worker's figures to its slot (every second); returns them.
pub fn publish() -> WorkerFigures {
    let mine = local();
    let Some(zone) = conf::zone() else { return mine };
    let bytes = serde_json::to_vec(&mine).unwrap_or_default();
    match zone.write(&bytes) {
        Ok(()) => REFUSED.with(|r| r.set(false)),
        Err(e) if !REFUSED.with(|r| r.replace(true)) => {
            let why = match e {
                SlotError::TooLarge { .. } => ": raise \"mesh_shared_zone\"",
                _ => "",
            };
            ngx::ngx_log_error!(
                NGX_LOG_WARN,
                ngx::log::ngx_cycle_log().as_ptr(),
                "mesh: this worker's figures are not in the node's: {}{}",
                e,
                why
            );
        }
        Err(_) => {}
    }
    mine
}

/// The node's figures: this worker's, live, and every other worker's last.
pub fn node() -> WorkerFigures {
    node_with(local())
}

/// The node's figures with this worker's as `mine`.
pub fn node_with(mine: WorkerFigures) -> WorkerFigures {
    let mut all = vec![mine];
    if let Some(zone) = conf::zone() {
        all.extend(zone.read_others().iter().filter_map(|b| serde_json::from_slice(b).ok()));
    }
    merge(all.iter())
}

/// The worker leaves: its slot is free.
pub fn release() {
    if let Some(zone) = conf::zone() {
        zone.release();
    }
}
