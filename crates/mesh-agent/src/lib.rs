//! The background side of a mesh node: everything that may block (DNS, files, HTTP to the
//! master) and so must never run on nginx's event loop. No nginx dependency: the module's glue
//! runs these on its own threads and takes the results back to the event loop.
//!
//! * [`proc`]: child processes (ffmpeg): no shell, PR_SET_PDEATHSIG, death seen through a pipe.
//! * [`resolve`]: target host names → addresses, when a table is loaded.
//! * [`agent`]: the background threads (announce, heartbeat, long poll, calls, file watch).
//! * [`calls`]: the bounded, cancellable queue of auth and route calls.
//! * [`client`]: the master behind a trait, and its signed HTTP implementation.
//! * [`tls`]: the CA a node verifies its master against (`mesh_master_ca`).
//! * [`load`]: read, validate and resolve a table into a node snapshot; write one atomically.
//! * [`voice`]: one process speaks for the node (the voice lock); the others follow its file.
//!
//! Inside the agent: `control` (announce, heartbeat, resync), `poll` (long poll, file watch),
//! `state` (the node state's one writer), `link` (each link's state and backoff), `shared`.

pub mod agent;
pub mod calls;
pub mod client;
mod control;
mod generations;
mod link;
pub mod load;
mod poll;
pub mod proc;
pub mod resolve;
mod shared;
mod state;
#[cfg(test)]
mod testing;
pub mod tls;
pub mod voice;
