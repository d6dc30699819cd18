//! ngx_rtmp_mesh: an nginx-rtmp module that runs one node of a live-streaming relay mesh.
//!
//! One concern per file, as nginx-rtmp-module does:
//! * [`module`]: the module definition, directives and chain hooks;
//! * [`conf`]: configuration (directives, create/merge, the node snapshot);
//! * [`session`]: publish/play admission at the head of nginx-rtmp's chains;
//! * [`push`]: relay pushes of published streams, and their retries;
//! * [`util`]: FFI helpers (panic guard, pool-owned values).
//!
//! Every decision is made by `mesh_core`, which has no nginx dependency.

mod conf;
mod ffi;
pub mod module;
mod push;
mod session;
mod util;
